"""Counters and gauges with names and labels: one mechanism for every part of the daemon.

A *group* is a small slotted object whose attributes are the counters of one thing (a
cluster, a member, the notify relay, the Redis sharing).  The hot path increments them as
plain attributes (`counters.commands += 1`): no dictionary is built and no lookup by name
happens per command.  Each group class carries the description of its fields (name, kind,
help text), so a reader (the admin socket, the metrics endpoint) can list every value of
every group without code per counter.

`LabelledCounter` splits one counter by a label whose values are only known at run time
(the command letter, the reply code); it holds at most `max_keys` distinct values so a
hostile client cannot make it grow without bound.  `Histogram` counts observations into
fixed buckets (bisect: O(log buckets) per observation, buckets are a dozen).

`Registry` keeps groups by their labels, so a member rebuilt by a reload (new control
address) continues the counts of the member of the same name: counters stay monotonic for
the life of the process, as Prometheus expects.
"""
from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass
from enum import Enum
from typing import Callable, ClassVar, Iterator, Mapping, Sequence, TypeVar


PREFIX = 'rtp_cluster'


class Kind(Enum):
    COUNTER = 'counter'     # only ever goes up
    GAUGE = 'gauge'         # a level: goes up and down


@dataclass(frozen=True)
class Field:
    """One counter of a group; `metric` overrides the exported name ('' = not exported)."""

    name: str
    help: str
    kind: Kind = Kind.COUNTER
    metric: str | None = None

    def metric_name(self, subsystem: str) -> str:
        """`rtp_cluster_[subsystem_]name`, counters with the `_total` suffix."""
        if self.metric is not None:
            return self.metric
        base = '_'.join(part for part in (PREFIX, subsystem, self.name) if part)
        return base + '_total' if self.kind is Kind.COUNTER else base


class CounterGroup:
    """Base of the classes `counter_group` builds; the fields are the slots."""

    __slots__ = ('labels',)
    subsystem: ClassVar[str] = ''
    fields: ClassVar[tuple[Field, ...]] = ()

    def __init__(self, labels: Mapping[str, str] | None = None) -> None:
        self.labels: dict[str, str] = dict(labels or {})
        for field in self.fields:
            setattr(self, field.name, 0)

    def as_dict(self) -> dict[str, int | float]:
        """Every field in declaration order (the order the admin socket prints them in)."""
        return {field.name: getattr(self, field.name) for field in self.fields}

    def items(self) -> Iterator[tuple[Field, int | float]]:
        for field in self.fields:
            yield field, getattr(self, field.name)

    def __repr__(self) -> str:
        values = ', '.join('%s=%s' % item for item in self.as_dict().items())
        return '<%s %s %s>' % (type(self).__name__, self.labels, values)


def counter_group(class_name: str, subsystem: str, *fields: Field) -> type[CounterGroup]:
    """A new group class: one slot per field, all starting at 0."""
    names = [field.name for field in fields]
    if len(set(names)) != len(names):
        raise ValueError('%s: duplicate field names' % class_name)
    for name in names:
        if not name.isidentifier() or name.startswith('_') or name in ('labels', 'fields'):
            raise ValueError('%s: bad field name %r' % (class_name, name))
    namespace = {'__slots__': tuple(names), 'subsystem': subsystem, 'fields': tuple(fields),
                 '__module__': __name__}
    return type(class_name, (CounterGroup,), namespace)


OTHER = 'other'     # the key of every value past LabelledCounter.max_keys


class LabelledCounter:
    """One counter split by a run-time label value; at most `max_keys` values, then `other`."""

    __slots__ = ('name', 'label', 'help', 'values', 'max_keys')

    def __init__(self, name: str, label: str, help: str, max_keys: int = 64) -> None:
        self.name = name
        self.label = label
        self.help = help
        self.values: dict[str, int] = {}
        self.max_keys = max_keys

    def inc(self, key: str) -> None:
        values = self.values
        if key in values:
            values[key] += 1
        elif len(values) < self.max_keys:
            values[key] = 1
        else:
            values[OTHER] = values.get(OTHER, 0) + 1

    def total(self) -> int:
        return sum(self.values.values())


# Seconds: from a fast loopback member (0.1 ms) to the member timeout (1.5 s).
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                   0.25, 0.5, 1.0, 2.5)


class Histogram:
    """Observations in fixed buckets: `counts[i]` holds those <= `bounds[i]`, the last +Inf."""

    __slots__ = ('bounds', 'counts', 'sum', 'count')

    def __init__(self, bounds: Sequence[float] = LATENCY_BUCKETS) -> None:
        if list(bounds) != sorted(set(bounds)) or not bounds:
            raise ValueError('histogram bounds must be increasing and not empty')
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations <= bound) pairs ending with (inf, count)."""
        pairs = []
        running = 0
        for bound, count in zip(self.bounds + (float('inf'),), self.counts):
            running += count
            pairs.append((bound, running))
        return pairs


G = TypeVar('G', bound=CounterGroup)
T = TypeVar('T')
LabelKey = tuple[tuple[str, str], ...]


class Registry:
    """Groups (and labelled counters, histograms) by class and labels, created on first use."""

    def __init__(self) -> None:
        self._groups: dict[tuple[type, LabelKey], CounterGroup] = {}
        self._extras: dict[tuple[str, LabelKey], object] = {}

    def group(self, cls: type[G], **labels: str) -> G:
        key = (cls, _label_key(labels))
        found = self._groups.get(key)
        if found is None:
            found = self._groups[key] = cls(labels)
        return found        # type: ignore[return-value]

    def groups(self, cls: type[G]) -> Iterator[G]:
        for (kind, _), group in self._groups.items():
            if kind is cls:
                yield group     # type: ignore[misc]

    def histogram(self, name: str, bounds: Sequence[float] = LATENCY_BUCKETS,
                  **labels: str) -> Histogram:
        return self.get(name, lambda: Histogram(bounds), **labels)

    def get(self, name: str, make: Callable[[], T], **labels: str) -> T:
        """Any other counting object (a histogram, CommandStats) by name and labels."""
        key = (name, _label_key(labels))
        found = self._extras.get(key)
        if found is None:
            found = self._extras[key] = make()
        return found        # type: ignore[return-value]


def _label_key(labels: Mapping[str, str]) -> LabelKey:
    return tuple(sorted(labels.items()))




INVALID = 'invalid'     # the command label of text that did not parse as a command


class CommandStats:
    """One cluster's commands by letter (count and duration) and replies by result.

    `observe` runs once per answered command: a dict get, a bisect and two additions.
    """

    __slots__ = ('durations', 'replies', 'bounds', 'max_keys')

    def __init__(self, bounds: Sequence[float] = LATENCY_BUCKETS, max_keys: int = 64) -> None:
        self.durations: dict[str, Histogram] = {}
        self.replies = LabelledCounter('rtp_cluster_replies_total', 'result',
                                       'Replies sent to clients, by result (ok or the E-code).',
                                       max_keys)
        self.bounds = tuple(bounds)
        self.max_keys = max_keys

    def observe(self, letter: str, seconds: float, reply: str) -> None:
        # Histogram.observe and reply_result inlined: this runs for every command
        histogram = self.durations.get(letter) or self._histogram_for(letter)
        histogram.counts[bisect_left(histogram.bounds, seconds)] += 1
        histogram.sum += seconds
        histogram.count += 1
        result = 'ok' if reply[:1] not in _ERROR_START else reply.split(None, 1)[0][:8]
        values = self.replies.values
        if result in values:
            values[result] += 1
        else:
            self.replies.inc(result)

    def _histogram_for(self, letter: str) -> Histogram:
        if len(self.durations) >= self.max_keys:
            letter = OTHER
        return self.durations.setdefault(letter, Histogram(self.bounds))

    def commands(self) -> dict[str, int]:
        return {letter: histogram.count for letter, histogram in self.durations.items()}


_ERROR_START = frozenset(('E', 'e'))


def reply_result(reply: str) -> str:
    """`ok`, or the E-code of an error reply (`E8`)."""
    if reply[:1] not in _ERROR_START:
        return 'ok'
    return reply.split(None, 1)[0][:8]


__all__ = ['Kind', 'Field', 'CounterGroup', 'counter_group', 'LabelledCounter', 'Histogram',
           'Registry', 'CommandStats', 'reply_result', 'LATENCY_BUCKETS', 'OTHER', 'INVALID']
