"""Prometheus metrics: collectors that read the running state when /metrics is scraped.

Nothing is pushed into prometheus_client on the control path: the counters live in the
daemon's own counter groups (core/counters.py) and these collectors turn them into metric
families at scrape time, so a command costs the same with or without the HTTP listener.
Groups export every field they declare, under the name the field gives, so a counter
added to a group is exported without code here.

A scrape reads the state on the reactor (`MetricsPage.collect`, plain numbers copied into
metric families) and formats the text in a thread (`MetricsPage.render`): formatting is
most of the work (about 0.1 s for 100 members on a busy machine), and on the reactor it
would hold up every command for that long.
"""
from __future__ import annotations

from typing import Any, Iterable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                    HistogramMetricFamily, Metric)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.utils import floatToGoString

from .. import __version__
from ..core.counters import CounterGroup, Histogram, Kind
from ..core.member import ACTIVE, DRAINING, SUSPENDED
from .gc_pauses import GC_PAUSES, GCPauses

MEMBER_STATUSES = (ACTIVE, SUSPENDED, DRAINING)
CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8'
# Formatting costs ~20 µs a sample: up to this many are formatted on the reactor, more in a
# thread (the handover to and from a thread costs about as much as formatting a few hundred)
INLINE_SAMPLES = 300


def build_registry(runtime: Any) -> CollectorRegistry:
    """A registry of our collector plus the library's process, platform and GC metrics."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RuntimeCollector(runtime))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)


class MetricsPage:
    """/metrics in two steps: `collect` on the reactor, `render` in any thread."""

    def __init__(self, runtime: Any) -> None:
        self.collector = RuntimeCollector(runtime)
        self.library = CollectorRegistry(auto_describe=False)      # process, platform, GC
        ProcessCollector(registry=self.library)
        PlatformCollector(registry=self.library)
        GCCollector(registry=self.library)

    def collect(self) -> list[Metric]:
        return list(self.collector.collect())

    def render(self, families: list[Metric]) -> bytes:
        return generate_latest(_Collected(families + list(self.library.collect())))


def sample_count(families: Iterable[Metric]) -> int:
    return sum(len(family.samples) for family in families)


class _Collected:
    """What generate_latest needs of a registry: the families, already collected."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


class RuntimeCollector:
    """Reads clusters, members, notify relays and the Redis sharing at each scrape (and the
    garbage collector's pauses, once their recorder is installed)."""

    def __init__(self, runtime: Any, gc_pauses: GCPauses = GC_PAUSES) -> None:
        self.runtime = runtime
        self.gc_pauses = gc_pauses

    def describe(self) -> list[Metric]:
        return []       # families depend on the configuration: not described up front

    def collect(self) -> Iterator[Metric]:
        runtime = self.runtime
        clusters = list(runtime.clusters.values())
        yield _info()
        yield from _member_families(runtime, clusters)
        yield from group_families([c.counters for c in clusters])
        yield from group_families([m.counters for c in clusters for m in c.members.values()])
        yield from _command_families(runtime, clusters)
        yield from group_families(runtime.control_counters(c.name) for c in clusters)
        yield _sessions(clusters)
        yield from group_families([relay.counters for relay in runtime.relays.values()])
        if runtime.sharing is not None:
            yield from _redis_families(runtime.sharing)
        if self.gc_pauses.installed:
            yield from gc_pause_families(self.gc_pauses)


def _info() -> Metric:
    family = GaugeMetricFamily('rtp_cluster_info', 'Version of the running rtp_cluster.',
                               labels=['version'])
    family.add_metric([__version__], 1)
    return family


def group_families(groups: Iterable[CounterGroup]) -> Iterator[Metric]:
    """One family per exported field of the groups (all of one class and label names)."""
    groups = list(groups)
    if not groups:
        return
    first = groups[0]
    label_names = list(first.labels)
    for field in first.fields:
        name = field.metric_name(first.subsystem)
        if not name:
            continue
        make = CounterMetricFamily if field.kind is Kind.COUNTER else GaugeMetricFamily
        family = make(name, field.help, labels=label_names)
        for group in groups:
            family.add_metric([group.labels[label] for label in label_names],
                              getattr(group, field.name))
        yield family


def _member_families(runtime: Any, clusters: list) -> Iterator[Metric]:
    labels = ['cluster', 'member']
    up = GaugeMetricFamily('rtp_cluster_member_up', 'The member answers (health state online).',
                           labels=labels)
    status = GaugeMetricFamily('rtp_cluster_member_status', 'Administrative status (1 for the '
                               'current one).', labels=labels + ['status'])
    sessions = GaugeMetricFamily('rtp_cluster_member_sessions',
                                 'Sessions this instance has bound to the member.', labels=labels)
    active = GaugeMetricFamily('rtp_cluster_member_active_sessions',
                               'Active sessions the member reported at its last heartbeat.',
                               labels=labels)
    capacity = GaugeMetricFamily('rtp_cluster_member_capacity', 'Configured capacity.',
                                 labels=labels)
    weight = GaugeMetricFamily('rtp_cluster_member_weight', 'Configured weight.', labels=labels)
    utilization = GaugeMetricFamily('rtp_cluster_member_utilization_ratio',
                                    'Estimated share of the capacity in use.', labels=labels)
    rtt = HistogramMetricFamily('rtp_cluster_member_rtt_seconds',
                                'Round trip of commands to the member.', labels=labels)
    for cluster in clusters:
        for member in cluster.members.values():
            values = [cluster.name, member.name]
            up.add_metric(values, 1 if member.online else 0)
            for name in MEMBER_STATUSES:
                status.add_metric(values + [name], 1 if member.status == name else 0)
            sessions.add_metric(values, cluster.store.count(member.name))
            reported = member.active_sessions
            if reported is not None:
                active.add_metric(values, reported)
            capacity.add_metric(values, member.capacity)
            weight.add_metric(values, member.weight)
            utilization.add_metric(values, member.utilisation())
            add_histogram(rtt, values, runtime.rtt_histogram(cluster.name, member.name))
    return iter((up, status, sessions, active, capacity, weight, utilization, rtt))


def _command_families(runtime: Any, clusters: list) -> Iterator[Metric]:
    commands = CounterMetricFamily('rtp_cluster_commands', 'Control commands answered, by '
                                   'command letter.', labels=['cluster', 'command'])
    replies = CounterMetricFamily('rtp_cluster_replies', 'Replies sent to clients, by result '
                                  '(ok or the E-code).', labels=['cluster', 'result'])
    durations = HistogramMetricFamily('rtp_cluster_command_duration_seconds', 'Time from the '
                                      "client's command to our reply.",
                                      labels=['cluster', 'command'])
    for cluster in clusters:
        stats = runtime.command_stats(cluster.name)
        for letter, histogram in sorted(stats.durations.items()):
            commands.add_metric([cluster.name, letter], histogram.count)
            add_histogram(durations, [cluster.name, letter], histogram)
        for result, count in sorted(stats.replies.values.items()):
            replies.add_metric([cluster.name, result], count)
    return iter((commands, replies, durations))


def _sessions(clusters: list) -> Metric:
    family = GaugeMetricFamily('rtp_cluster_sessions', 'Sessions known to this instance, own '
                               '(created here) and foreign (shared by a peer).',
                               labels=['cluster', 'ownership'])
    for cluster in clusters:
        own, foreign = cluster.store.ownership_counts()
        family.add_metric([cluster.name, 'own'], own)
        family.add_metric([cluster.name, 'foreign'], foreign)
    return family


def _redis_families(sharing: Any) -> Iterator[Metric]:
    yield GaugeMetricFamily('rtp_cluster_redis_up', 'Redis writes succeed (not degraded).',
                            value=0 if sharing.degraded else 1)
    state = sharing.state
    yield GaugeMetricFamily('rtp_cluster_redis_subscriber_up', 'The keyspace subscriber is '
                            'connected.', value=1 if state.subscriber_connected else 0)
    yield GaugeMetricFamily('rtp_cluster_redis_write_queue', 'Record writes waiting for Redis.',
                            value=sharing.queue_depth())
    yield CounterMetricFamily('rtp_cluster_redis_writes', 'Record writes Redis acknowledged.',
                              value=sharing.writer.writes_ok)
    yield CounterMetricFamily('rtp_cluster_redis_transactions', 'Write transactions (MULTI/EXEC).',
                              value=sharing.writer.transactions)
    yield GaugeMetricFamily('rtp_cluster_redis_resync_duration_seconds',
                            'Duration of the last resync.',
                            value=state.last_resync.get('duration', 0.0))
    yield GaugeMetricFamily('rtp_cluster_redis_duplicate_instance', '1 while another process '
                            'writes with this instance id.',
                            value=1 if state.duplicate_active else 0)
    peers = GaugeMetricFamily('rtp_cluster_peers', 'Peer instances by state.', labels=['state'])
    alive = sum(1 for info in sharing.peers.values() if info.get('alive'))
    peers.add_metric(['alive'], alive)
    peers.add_metric(['dead'], len(sharing.peers) - alive)
    yield peers
    yield from group_families([state.redis_counters])
    yield from group_families([sharing.counters])


def gc_pause_families(pauses: GCPauses) -> Iterator[Metric]:
    family = HistogramMetricFamily('rtp_cluster_gc_pause_seconds', 'Time the cyclic garbage '
                                   'collector held the process, by generation collected '
                                   '(2: a full pass over every tracked object).',
                                   labels=['generation'])
    cpu = CounterMetricFamily('rtp_cluster_gc_cpu_seconds', 'CPU time of the garbage '
                              "collector's passes, by generation collected.",
                              labels=['generation'])
    for generation, histogram in enumerate(pauses.histograms):
        add_histogram(family, [str(generation)], histogram)
        cpu.add_metric([str(generation)], pauses.cpu_seconds[generation])
    return iter((family, cpu))


def add_histogram(family: HistogramMetricFamily, labels: list[str], histogram: Histogram) -> None:
    names = _LE_NAMES.get(histogram.bounds)
    if names is None:
        names = _LE_NAMES[histogram.bounds] = [floatToGoString(bound) for bound in
                                               histogram.bounds + (float('inf'),)]
    buckets = list(zip(names, (count for _, count in histogram.cumulative())))
    family.add_metric(labels, buckets, histogram.sum)


_LE_NAMES: dict[tuple[float, ...], list[str]] = {}     # bucket bounds -> their `le` texts


__all__ = ['build_registry', 'render', 'MetricsPage', 'RuntimeCollector', 'group_families',
           'CONTENT_TYPE']
