"""Counters that never go backwards while the cluster runs.

A member's counters (`sessions created`, `packets received`, `nsess_created`, …) only grow
while its RTPproxy process lives.  The cluster reports their sum over its members, so a
member that goes offline, is removed or restarts would make the sum drop, and monitoring
that computes rates from it would see negative rates.  `MonotonicTotals` remembers the last
reading of one member per counter name and carries it over when the member restarts (a
reading lower than the previous one); `RetiredTotals` keeps what removed members had
counted.
"""
from __future__ import annotations

from typing import Iterable

Number = int | float


class MonotonicTotals:
    """Running totals of one source whose counters may restart from zero."""

    __slots__ = ('_carried', '_last')

    def __init__(self) -> None:
        self._carried: dict[str, Number] = {}
        self._last: dict[str, Number] = {}

    def update(self, name: str, value: Number) -> None:
        last = self._last.get(name)
        if last is not None and value < last:
            # the source restarted: what it counted before still happened
            self._carried[name] = self._carried.get(name, 0) + last
        self._last[name] = value

    def total(self, name: str) -> Number:
        """Everything counted under `name` since we first saw the source (0 if never read)."""
        return self._carried.get(name, 0) + self._last.get(name, 0)

    def names(self) -> Iterable[str]:
        return self._last.keys()

    def take_over(self, previous: 'MonotonicTotals') -> None:
        """Continue the history of `previous` (the same member under a new client object)."""
        mine = dict(self._last)
        self._carried = dict(previous._carried)
        self._last = dict(previous._last)
        for name, value in mine.items():
            self.update(name, value)


class RetiredTotals:
    """What members that were removed had counted, per counter name."""

    __slots__ = ('_totals',)

    def __init__(self) -> None:
        self._totals: dict[str, Number] = {}

    def retire(self, totals: MonotonicTotals) -> None:
        for name in totals.names():
            self._totals[name] = self._totals.get(name, 0) + totals.total(name)

    def total(self, name: str) -> Number:
        return self._totals.get(name, 0)
