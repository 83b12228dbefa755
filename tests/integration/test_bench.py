"""Smoke tests of the benchmark tooling (bench/): no timing assertions here."""
import subprocess
import sys

import pytest

from bench.fakemember import FakeMember
from bench.loadgen import LoadGen, check_info, check_port, check_query
from tests.support.procs import ROOT, control_command, free_udp_port


def _target(member):
    host, _, port = member.address.rpartition(':')
    return host, int(port)


def test_loadgen_against_real_member(procs):
    member = procs.member()
    gen = LoadGen(_target(member), concurrency=4, mix_ib=20, mix_q=20, seed=7)
    try:
        gen.create_live(10)
        assert len(gen.live) == 10
        stats = gen.run(duration=1.0)
        deleted = gen.delete_live()
    finally:
        gen.close()
    summary = stats.summary()
    assert summary['cycles'] > 0
    assert summary['cycles_failed'] == 0
    assert summary['errors'] == {}
    assert summary['timeouts'] == {}
    assert summary['abandoned'] == 0
    assert set(summary['latency_ms']) >= {'U', 'L', 'D'}
    assert deleted.summary()['errors'] == {} and deleted.summary()['timeouts'] == {}
    # every session of the run is gone: nothing left to delete
    assert member.command('D %s-live-0 lf' % gen.run_id).strip() == 'E50'


def test_loadgen_counts_wrong_replies(procs):
    """A member without the cycle's session: L answers 0, D answers E50 (counted by kind)."""
    member = procs.member()
    gen = LoadGen(_target(member), concurrency=1)
    try:
        gen.live = ['bench-no-such-call']
        deleted = gen.delete_live().summary()
    finally:
        gen.close()
    assert deleted['errors'] == {'D:E50': 1}


def test_fake_member_answers():
    fake = FakeMember('127.0.0.1')

    def ask(cmd):
        reply = fake.answer(b'ck1 ' + cmd)
        assert reply.startswith(b'ck1 ') and reply.endswith(b'\n')
        return reply[4:]

    assert ask(b'V') == b'20040107\n'
    assert ask(b'VF 20050322') == b'1\n'
    u = ask(b'U c1 127.0.0.1 5000 f1')
    assert check_port(u) is None
    assert ask(b'U c1 127.0.0.1 5000 f1') == u            # stable port per call and tag
    assert check_port(ask(b'L c1 127.0.0.1 6000 f1 t1')) is None
    assert check_query(ask(b'Q c1 f1 t1')) is None
    info = ask(b'Ib')
    assert check_info(info) is None and b'active sessions: 1\n' in info
    assert ask(b'D c1 f1 t1') == b'0\n'
    assert b'active sessions: 0\n' in ask(b'Ib')
    assert ask(b'Gv nsess_created ncmds_rcvd') == b'nsess_created=0 ncmds_rcvd=0\n'
    assert ask(b'Y') == b'E0\n'
    assert fake.answer(b'ck2') == b'ck2 E5\n'


def test_fake_member_process(procs):
    port = free_udp_port()
    proc = procs.add(subprocess.Popen(
        [sys.executable, '-m', 'bench.fakemember', '--listen', '127.0.0.1:%d' % port],
        cwd=ROOT, stdout=subprocess.PIPE, text=True))
    assert proc.stdout.readline().startswith('READY')
    spec = 'udp:127.0.0.1:%d' % port
    assert control_command(spec, 'V') == '20040107\n'
    assert control_command(spec, 'U c2 127.0.0.1 5000 f2').endswith(' 127.0.0.1\n')
    assert control_command(spec, 'D c2 f2') == '0\n'
    gen = LoadGen(('127.0.0.1', port), concurrency=4, mix_ib=10, mix_q=10, seed=3)
    try:
        stats = gen.run(duration=None, cycles=50).summary()
    finally:
        gen.close()
    assert stats['cycles'] == 50 and stats['errors'] == {} and stats['timeouts'] == {}


def test_paced_run_offers_the_rate_not_what_the_target_could_take(procs):
    """--rate: cycles start on a schedule; a closed loop against the same member runs
    thousands of cycles in the same second, the paced one about `rate`."""
    member = procs.member()
    gen = LoadGen(_target(member), concurrency=4, rate=50.0)
    try:
        stats = gen.run(duration=1.0, warmup=0.2).summary()
    finally:
        gen.close()
    assert stats['errors'] == {} and stats['timeouts'] == {}
    # 50/s for 1 s of measurement, plus at most one cycle per slot at the window's edges
    assert 40 <= stats['cycles'] <= 50 + 4, stats['cycles']


def test_rate_must_be_positive():
    import pytest
    with pytest.raises(ValueError):
        LoadGen(('127.0.0.1', 9), rate=0)


def test_hold_keeps_every_call_up_between_its_commands(procs):
    """--hold: L and D wait `hold` after the previous reply, so a slot's cycle lasts at least
    2 x hold (a closed loop without it runs thousands of cycles a second)."""
    member = procs.member()
    gen = LoadGen(_target(member), concurrency=2, hold=0.2)
    try:
        stats = gen.run(duration=1.0).summary()
    finally:
        gen.close()
    assert stats['errors'] == {} and stats['timeouts'] == {}
    assert 1 <= stats['cycles'] <= 2 * (1.0 / 0.4 + 1), stats['cycles']


def test_null_forwarder_keeps_each_call_on_one_member_and_returns_replies_by_cookie(procs):
    """The floor (bench/nullfwd.py) in front of two scripted members: every command of a call
    reaches the member that saw its offer (same port back), and each client gets its own
    replies."""
    members = []
    for _ in range(2):
        port = free_udp_port()
        proc = procs.add(subprocess.Popen(
            [sys.executable, '-m', 'bench.fakemember', '--listen', '127.0.0.1:%d' % port],
            cwd=ROOT, stdout=subprocess.PIPE, text=True))
        assert proc.stdout.readline().startswith('READY')
        members.append(port)
    port = free_udp_port()
    fwd = procs.add(subprocess.Popen(
        [sys.executable, '-m', 'bench.nullfwd', '--listen', '127.0.0.1:%d' % port]
        + ['--member=127.0.0.1:%d' % m for m in members],
        cwd=ROOT, stdout=subprocess.PIPE, text=True))
    assert fwd.stdout.readline().startswith('READY')
    spec = 'udp:127.0.0.1:%d' % port
    sessions_seen = []
    for i in range(20):
        offer = control_command(spec, 'U nf%d 127.0.0.1 5000 f%d' % (i, i))
        assert check_port(offer.encode()) is None
        assert control_command(spec, 'U nf%d 127.0.0.1 5000 f%d' % (i, i)) == offer
    for m in members:
        info = control_command('udp:127.0.0.1:%d' % m, 'Ib')
        sessions_seen.append(int(info.split('active sessions: ')[1].split()[0]))
    # each call on exactly one member (a repeated offer elsewhere would count twice), both used
    assert sum(sessions_seen) == 20 and min(sessions_seen) > 0, sessions_seen
    for i in range(20):
        assert control_command(spec, 'D nf%d f%d' % (i, i)) == '0\n'
    gen = LoadGen(('127.0.0.1', port), concurrency=8, seed=5)
    try:
        stats = gen.run(duration=None, cycles=200).summary()
    finally:
        gen.close()
    assert stats['cycles'] == 200 and stats['errors'] == {} and stats['timeouts'] == {}


def test_http_comparison_targets_and_the_scraper(tmp_path):
    """--b cluster-http: A without the listener, B with it, scraped every second by a child."""
    import time
    import urllib.request
    from bench.members import Fleet
    from bench.runner import make_targets, media_ranges, scrape_cost
    from tests.support.procs import media_port_range
    base = media_port_range(600)[0]
    with Fleet(str(tmp_path)) as fleet:
        a, b = make_targets('cluster-http', fleet, media_ranges(base, 200, 3))
        assert 'no HTTP listener' in a.label and 'scraped every second' in b.label
        assert control_command('udp:%s:%d' % a.addr, 'V').strip() == '20040107'
        assert control_command('udp:%s:%d' % b.addr, 'V').strip() == '20040107'
        config = open(tmp_path / 'cluster-http.xml').read()
        port = int(config.split('<http><address>127.0.0.1:')[1].split('<')[0])
        assert '<http>' not in open(tmp_path / 'cluster-plain.xml').read()
        with urllib.request.urlopen('http://127.0.0.1:%d/metrics' % port, timeout=5) as reply:
            assert b'rtp_cluster_member_up{cluster="bench",member="m1"} 1.0' in reply.read()
        scraper = [child for child in fleet.children if child.name == 'scraper'][0]
        time.sleep(2.5)
        assert scraper.alive()
        log = open(tmp_path / 'scraper.log').read()
        assert 'scrape failed' not in log and log.count('scraped ') >= 2, log
        cost = scrape_cost(b, scrapes=20)
        assert cost['scrapes'] == 20 and cost['bytes'] > 1000
        assert cost['daemon_cpu_ms_per_scrape'] > 0     # 20 scrapes: several clock ticks


def test_http_comparison_with_the_twin_measures_a_second_plain_cluster(tmp_path):
    """--twin: C, a second cluster without the listener, between A and B in every round."""
    from bench.members import Fleet
    from bench.runner import make_targets, media_ranges
    from tests.support.procs import media_port_range
    base = media_port_range(600)[0]
    with Fleet(str(tmp_path)) as fleet:
        targets = make_targets('cluster-http', fleet, media_ranges(base, 200, 3), twin=True)
        assert [t.name for t in targets] == ['A', 'C', 'B']
        twin = targets[1]
        assert "A's twin" in twin.label and twin.addr not in (targets[0].addr, targets[2].addr)
        assert control_command('udp:%s:%d' % twin.addr, 'V').strip() == '20040107'
        assert '<http>' not in open(tmp_path / 'cluster-twin.xml').read()


@pytest.mark.redis
@pytest.mark.slow
def test_sharing_scale_benchmark_runs_every_phase_on_a_small_scale(tmp_path):
    """bench/sharing_scale.py end to end with 300 sessions: every phase reports, failover
    routes every sampled call without a broadcast (figures are the benchmark's business)."""
    import json
    out = tmp_path / 'scale.json'
    subprocess.run([sys.executable, '-m', 'bench.sharing_scale', '--sessions', '300',
                    '--rate', '200', '--seconds', '1', '--load-seconds', '1', '--sample', '30',
                    '--out', str(out)], cwd=ROOT, check=True, timeout=240,
                   stdout=subprocess.DEVNULL)
    result = json.loads(out.read_text())
    out.unlink()
    assert result['propagation']['answered'] == 200
    assert result['propagation']['known_by_b'] == 200
    assert result['create_with_sharing']['sessions'] == 300
    assert result['create_without_sharing']['errors'] == 0
    assert result['fresh_instance_learns_after_start_s'] is not None
    assert result['dead_peer_shown_after_s'] is not None
    assert result['failover'] == {**result['failover'], 'sample': 30, 'answered_with_port': 30,
                                  'broadcasts': 0}
    assert result['load_during_resync']['errors'] == 0


def test_stall_benchmark_measures_every_operation_on_a_small_scale(tmp_path):
    """bench/stall.py end to end with 2,000 sessions: every operation is measured and the
    terminate ends every session (the figures themselves are the benchmark's business)."""
    import json
    out = tmp_path / 'stall.json'
    subprocess.run([sys.executable, '-m', 'bench.stall', '--sessions', '2000', '--rate', '100',
                    '--concurrency', '32', '--seconds', '1', '--repeats', '2', '--rest', '0',
                    '--out', str(out)], cwd=ROOT, check=True, timeout=240,
                   stdout=subprocess.DEVNULL)
    document = json.loads(out.read_text())
    out.unlink()
    assert len(document['repeats']) == 2
    for result in document['repeats']:
        check_stall_run(result)
    took = sorted(r['runs'][4]['admin']['seconds'] for r in document['repeats'])
    assert document['spread']['terminate all']['seconds'] == [took[0], took[-1]]
    v_p99 = sorted(r['runs'][0]['v_ms']['p99'] for r in document['repeats'])
    assert document['spread']['baseline']['v_p99'] == [v_p99[0], v_p99[-1]]
    assert document['verdict']['runs'] == 2
    assert 0 <= document['verdict']['runs_meeting_all'] <= 2


def check_stall_run(result: dict) -> None:
    assert result['create']['sessions'] == 2000
    assert [r['operation'] for r in result['runs']] == [
        'baseline', 'ls numsessions', 'ls sessions --all', 'reload', 'terminate all']
    for run in result['runs']:
        assert run['v_ms']['n'] > 10 and run['v_ms']['lost'] == 0, run
        assert run['load']['latency_ms']['U']['n'] > 0, run
        # the daemon's own collector pauses, read from its /metrics around each operation
        assert sorted(run['gc']) == ['0', '1', '2'], run
        assert all(g['passes'] >= 0 and g['ms'] >= 0.0 for g in run['gc'].values()), run
    listing = result['runs'][2]['admin']
    assert listing['runs'] >= 1 and listing['lines_last_run'] >= 2001
    assert result['runs'][4]['admin']['seconds'] is not None
    assert result['sessions_left'] == 0
    assert set(result['verdict']) >= {'p99_met', 'max_met', 'terminate_met'}


def test_memory_benchmark_repeats_and_reports_the_spread(tmp_path):
    """bench/memory.py --repeats 2 on a small scale (the cluster, 500 sessions): two whole
    runs, their bytes per session, and the median and range computed from them."""
    import json
    from statistics import median
    out = tmp_path / 'memory.json'
    subprocess.run([sys.executable, '-m', 'bench.memory', '--sessions', '500', '--duration',
                    '1', '--settle', '0.2', '--repeats', '2', '--out', str(out)], cwd=ROOT,
                   check=True, timeout=240, stdout=subprocess.DEVNULL)
    document = json.loads(out.read_text())
    out.unlink()
    assert document['date'] and document['machine_description']['cpus'] >= 1
    runs = document['repeats']
    assert len(runs) == 2 and all(r['create']['sessions'] == 500 for r in runs)
    values = [r['bytes_per_session'] for r in runs]
    assert document['bytes_per_session'] == {'runs': values, 'median': median(values),
                                             'range': [min(values), max(values)]}
