"""adapters/metrics.py: the collectors read the counters and the state at scrape time."""
from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from rtp_cluster.adapters import metrics
from rtp_cluster.adapters.notify import RelayCounters
from rtp_cluster.core import protocol
from tests.unit.test_observe_world import World


def scrape(world: World) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of one scrape, through the text format."""
    text = metrics.render(metrics.build_registry(world)).decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def value(samples, name: str, **labels) -> float:
    return samples[name, tuple(sorted(labels.items()))]


def test_member_gauges_follow_the_member_state():
    world = World({'a': ['m1', 'm2']})
    samples = scrape(world)
    assert value(samples, 'rtp_cluster_member_up', cluster='a', member='m1') == 1
    assert value(samples, 'rtp_cluster_member_weight', cluster='a', member='m2') == 20
    assert value(samples, 'rtp_cluster_member_capacity', cluster='a', member='m2') == 100
    assert value(samples, 'rtp_cluster_member_status', cluster='a', member='m1',
                 status='ACTIVE') == 1
    assert value(samples, 'rtp_cluster_member_status', cluster='a', member='m1',
                 status='DRAINING') == 0
    world.kill('a', 'm2')
    samples = scrape(world)
    assert value(samples, 'rtp_cluster_member_up', cluster='a', member='m2') == 0
    assert value(samples, 'rtp_cluster_member_up', cluster='a', member='m1') == 1
    # probing -> online, then online -> offline (offline -> probing is no up/down change)
    assert value(samples, 'rtp_cluster_member_state_changes_total', cluster='a', member='m2') == 2
    world.run(10.0)         # probes of the dead member: offline <-> probing
    samples = scrape(world)
    assert value(samples, 'rtp_cluster_member_state_changes_total', cluster='a', member='m2') == 2


def test_counters_are_read_when_scraped_not_copied_before():
    world = World({'a': ['m1']})
    cluster = world.clusters['a']
    assert value(scrape(world), 'rtp_cluster_broadcasts_total', cluster='a') == 0
    replies = []
    cluster.handle(protocol.parse_command('L unknown-call 127.0.0.1 4000 ft tt'), replies.append)
    world.run(0.1)
    assert replies == ['0']
    samples = scrape(world)
    assert value(samples, 'rtp_cluster_broadcasts_total', cluster='a') == 1


def test_sessions_and_utilisation():
    world = World({'a': ['m1']})
    replies = []
    world.clusters['a'].handle(protocol.parse_command('U call-1 127.0.0.1 4000 ft'),
                               replies.append)
    world.run(0.1)
    assert len(replies) == 1 and not protocol.is_error(replies[0])
    samples = scrape(world)
    assert value(samples, 'rtp_cluster_member_sessions', cluster='a', member='m1') == 1
    assert value(samples, 'rtp_cluster_sessions', cluster='a', ownership='own') == 1
    assert value(samples, 'rtp_cluster_sessions', cluster='a', ownership='foreign') == 0
    assert value(samples, 'rtp_cluster_new_sessions_total', cluster='a') == 1
    assert 0 < value(samples, 'rtp_cluster_member_utilization_ratio', cluster='a',
                     member='m1') <= 0.02


def test_command_counts_replies_and_durations():
    world = World({'a': ['m1']})
    stats = world.command_stats('a')
    stats.observe('U', 0.002, '35000 127.0.0.1')
    stats.observe('U', 0.3, 'E8')
    stats.observe('V', 0.00005, '20040107')
    samples = scrape(world)
    assert value(samples, 'rtp_cluster_commands_total', cluster='a', command='U') == 2
    assert value(samples, 'rtp_cluster_commands_total', cluster='a', command='V') == 1
    assert value(samples, 'rtp_cluster_replies_total', cluster='a', result='ok') == 2
    assert value(samples, 'rtp_cluster_replies_total', cluster='a', result='E8') == 1
    assert value(samples, 'rtp_cluster_command_duration_seconds_bucket', cluster='a',
                 command='U', le='0.0025') == 1
    assert value(samples, 'rtp_cluster_command_duration_seconds_bucket', cluster='a',
                 command='U', le='+Inf') == 2
    assert value(samples, 'rtp_cluster_command_duration_seconds_sum', cluster='a',
                 command='U') == pytest.approx(0.302)


def test_retransmits_answered_by_the_control_server():
    world = World({'a': ['m1']})
    world.control_counters('a').duplicates += 3
    assert value(scrape(world), 'rtp_cluster_retransmits_total', cluster='a') == 3


def test_rtt_histogram_of_each_member():
    world = World({'a': ['m1']})
    world.rtt_histogram('a', 'm1').observe(0.0004)
    samples = scrape(world)
    assert value(samples, 'rtp_cluster_member_rtt_seconds_count', cluster='a', member='m1') == 1
    assert value(samples, 'rtp_cluster_member_rtt_seconds_bucket', cluster='a', member='m1',
                 le='0.0005') == 1


def test_notify_relay_counters_are_exported_by_their_field_descriptions():
    world = World({'a': ['m1']})
    relay_counters = world.metrics.group(RelayCounters, cluster='a')
    relay_counters.delivered += 5
    relay_counters.dropped += 2
    relay_counters.bad_lines += 1

    class Relay:
        counters = relay_counters
    world.relays = {'a': Relay()}
    samples = scrape(world)
    assert value(samples, 'rtp_cluster_notify_delivered_total', cluster='a') == 5
    assert value(samples, 'rtp_cluster_notify_dropped_total', cluster='a') == 2
    assert value(samples, 'rtp_cluster_notify_rejected_total', cluster='a') == 1


def test_a_removed_member_leaves_the_scrape():
    world = World({'a': ['m1', 'm2']})
    assert ('rtp_cluster_member_up', (('cluster', 'a'), ('member', 'm2'))) in scrape(world)
    world.clusters['a'].drain_member('m2')
    world.run(0.1)
    assert ('rtp_cluster_member_up', (('cluster', 'a'), ('member', 'm2'))) not in scrape(world)


def test_process_metrics_of_the_client_library_are_there():
    names = {name for name, _ in scrape(World({'a': ['m1']}))}
    assert 'process_resident_memory_bytes' in names or 'python_info' in names
    assert 'rtp_cluster_info' in names


class _Sharing:
    """The attributes of RedisSharing that the collector reads."""

    def __init__(self) -> None:
        from types import SimpleNamespace
        from rtp_cluster.core.sharing import SharingCounters
        from rtp_cluster.core.sharing_state import RedisCounters
        self.degraded = False
        self.peers = {'node-b': {'alive': True}, 'node-c': {'alive': False}}
        self.counters = SharingCounters()
        self.state = SimpleNamespace(subscriber_connected=True, duplicate_active=False,
                                     last_resync={'duration': 0.25},
                                     redis_counters=RedisCounters())

        class Writer:
            writes_ok = 40
            transactions = 7
        self.writer = Writer()

    def queue_depth(self) -> int:
        return 3


def test_redis_families():
    world = World({'a': ['m1']})
    world.sharing = _Sharing()
    world.sharing.state.redis_counters.resyncs += 2
    world.sharing.counters.bad_records += 1
    world.sharing.counters.takeovers += 4
    samples = scrape(world)
    assert value(samples, 'rtp_cluster_redis_up') == 1
    assert value(samples, 'rtp_cluster_redis_write_queue') == 3
    assert value(samples, 'rtp_cluster_redis_writes_total') == 40
    assert value(samples, 'rtp_cluster_redis_resyncs_total') == 2
    assert value(samples, 'rtp_cluster_redis_resync_duration_seconds') == 0.25
    assert value(samples, 'rtp_cluster_redis_bad_records_total') == 1
    assert value(samples, 'rtp_cluster_sharing_takeovers_total') == 4
    assert value(samples, 'rtp_cluster_peers', state='alive') == 1
    assert value(samples, 'rtp_cluster_peers', state='dead') == 1
    world.sharing.degraded = True
    assert value(scrape(world), 'rtp_cluster_redis_up') == 0


def test_grafana_dashboard_uses_only_exported_metrics():
    import json
    import re
    from pathlib import Path
    world = World({'a': ['m1']})
    world.sharing = _Sharing()
    relay_counters = world.metrics.group(RelayCounters, cluster='a')

    class Relay:
        counters = relay_counters
    world.relays = {'a': Relay()}
    world.command_stats('a').observe('U', 0.001, '0')
    exported = {name for name, _ in scrape(world)}
    path = Path(__file__).resolve().parents[2] / 'contrib' / 'grafana' / 'rtp_cluster.json'
    dashboard = json.loads(path.read_text())
    used = set()
    for panel in dashboard['panels']:
        for target in panel.get('targets', []):
            used.update(re.findall(r'\brtp_cluster_[a-z_]+', target['expr']))
    assert used, 'no metric found in the dashboard'
    assert used - exported == set()
    readme = (Path(__file__).resolve().parents[2] / 'README.md').read_text()
    documented = {re.sub(r'_bucket$', '', name) for name in used}
    assert {name for name in documented if '`%s`' % name not in readme} == set()


def test_metrics_page_collects_then_renders_the_same_text():
    world = World({'a': ['m1', 'm2']})
    world.command_stats('a').observe('U', 0.002, '0')
    page = metrics.MetricsPage(world)
    families = page.collect()           # on the reactor: the numbers are taken here
    world.command_stats('a').observe('U', 0.002, '0')
    text = page.render(families).decode()   # in a thread: formats what was taken
    assert 'rtp_cluster_commands_total{cluster="a",command="U"} 1.0' in text
    assert 'process_' in text or 'python_info' in text
    ours = [line for line in text.splitlines() if line.startswith('rtp_cluster_')]
    direct = [line for line in metrics.render(metrics.build_registry(world)).decode().splitlines()
              if line.startswith('rtp_cluster_')]
    assert len(ours) == len(direct)
    assert 'rtp_cluster_commands_total{cluster="a",command="U"} 2.0' in direct



def test_gc_pauses_are_exported_by_generation_once_recorded():
    import gc

    from rtp_cluster.adapters.gc_pauses import GCPauses
    world = World({'a': ['m1']})
    pauses = GCPauses()
    collector = metrics.RuntimeCollector(world, pauses)
    assert not [f for f in collector.collect() if f.name.startswith('rtp_cluster_gc')]
    pauses.install()
    try:
        gc.collect(2)
        families = {f.name: f for f in collector.collect()}
    finally:
        pauses.remove()
    family = families['rtp_cluster_gc_pause_seconds']
    assert family.type == 'histogram'
    samples = {(s.name, s.labels['generation'], s.labels.get('le')): s.value
               for s in family.samples}
    assert samples['rtp_cluster_gc_pause_seconds_count', '2', None] == 1
    assert samples['rtp_cluster_gc_pause_seconds_sum', '2', None] > 0.0
    assert samples['rtp_cluster_gc_pause_seconds_bucket', '2', '+Inf'] == 1
    assert {generation for _, generation, _ in samples} == {'0', '1', '2'}
    cpu = families['rtp_cluster_gc_cpu_seconds']
    assert cpu.type == 'counter'
    assert {s.labels['generation']: s.value for s in cpu.samples
            if s.name == 'rtp_cluster_gc_cpu_seconds_total'}['2'] == pauses.cpu_seconds[2] > 0
