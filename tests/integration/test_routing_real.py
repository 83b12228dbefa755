"""Routing, balancing and aggregation through the running cluster, with real rtp-io members.

The cluster runs as a child process (cluster_proc.ClusterProc: the daemon, or the Runtime
in a small script); members are rtp-io RTPproxies in child processes.  Every member gets
its own media port range, so the port in a U/L reply tells which member answered.
"""
from __future__ import annotations

import os
import signal
import time

import pytest

from tests.support.cluster_proc import ClusterProc, cluster_xml, member_xml, run_calls
from tests.support.procs import ProcessTracker, free_udp_port, media_port_range
from rtp_cluster.core import protocol

RANGE = 3000


def port_range(size: int = RANGE) -> tuple[int, int]:
    for _ in range(100):
        lo, hi = media_port_range(size)
        if hi <= 65000:
            return lo, hi
    raise RuntimeError('no media port range left')


class Real:
    """A real member with a private media port range."""

    def __init__(self, tracker, protocol_name: str = 'udp', extra: list[str] = (), **kwargs):
        self.lo, self.hi = port_range()
        self.proc = tracker.member(protocol_name, extra=['-m', str(self.lo), '-M', str(self.hi)]
                                   + list(extra), **kwargs)

    def owns(self, port: int) -> bool:
        return self.lo <= port <= self.hi

    def command(self, cmd: str) -> str:
        reply = self.proc.command(cmd)
        return reply[:-1] if reply.endswith('\n') else reply

    def info(self) -> dict[str, int]:
        info = protocol.parse_info(self.command('Ib'))
        assert info is not None
        return info

    def created(self) -> int:
        return self.info()['sessions created']

    def active(self) -> int:
        return self.info()['active sessions']

    def xml(self, name: str, **kwargs) -> str:
        return member_xml(name, self.proc, **kwargs)


def owner(reply: str | None, members: list[Real]) -> int:
    parsed = protocol.parse_ul_reply(reply or '')
    assert parsed is not None, reply
    owners = [i for i, m in enumerate(members) if m.owns(parsed[0])]
    assert len(owners) == 1, (reply, [(m.lo, m.hi) for m in members])
    return owners[0]


def wait_until(predicate, timeout: float, what: str):
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError('timed out waiting for ' + what)
        time.sleep(0.05)


@pytest.fixture(scope='module')
def shared():
    """Three UDP members reused by the tests that neither kill nor stop them."""
    tracker = ProcessTracker()
    try:
        members = [Real(tracker) for _ in range(3)]
        yield members
    finally:
        tracker.stop_all()


@pytest.fixture
def fresh(shared):
    for m in shared:
        assert m.command('X') == '0'
    return shared


def start(procs, tmp_path, members_xml: list[str], names, **kwargs) -> ClusterProc:
    return ClusterProc.start(procs, tmp_path, cluster_xml(members_xml, **kwargs), wait_online=names)


# --- stickiness under load --------------------------------------------------------------------

@pytest.mark.slow
def test_20000_session_cycles_are_never_misrouted(procs, tmp_path):
    members = [Real(procs), Real(procs), Real(procs, 'unix')]
    cluster = start(procs, tmp_path, [m.xml('m%d' % i) for i, m in enumerate(members)],
                    ['m0', 'm1', 'm2'])
    before = [m.created() for m in members]
    n = 20000
    calls = [['U cyc%d@h 127.0.0.1 %d ft%d;1' % (i, 10000 + i % 20000, i),
              'L cyc%d@h 127.0.0.1 %d ft%d;1 tt%d;1' % (i, 30000 + i % 20000, i, i),
              'D cyc%d@h ft%d tt%d' % (i, i, i)] for i in range(n)]
    started = time.monotonic()
    results = run_calls(cluster.control, calls, window=64, deadline=150.0)
    took = time.monotonic() - started
    per_member = [0, 0, 0]
    failures = []
    for i, (u, l, d) in enumerate(results):
        try:
            who = owner(u, members)
            assert owner(l, members) == who, 'L answered by another member'
            assert d == '0'
            per_member[who] += 1
        except AssertionError as exc:
            failures.append((i, u, l, d, str(exc)))
    assert failures == [], failures[:5]
    after = [m.created() for m in members]
    assert [a - b for a, b in zip(after, before)] == per_member
    assert sum(per_member) == n
    assert all(m.active() == 0 for m in members)
    assert min(per_member) > n / 10                # every member took part
    print('20000 U/L/D cycles in %.1f s (%.0f commands/s); per member %s'
          % (took, 3 * n / took, per_member))


@pytest.mark.slow
def test_weighted_pick_through_the_cluster(fresh, procs, tmp_path):
    members = fresh
    cluster = start(procs, tmp_path,
                    [m.xml('m%d' % i, weight=w, capacity=10**6)
                     for i, (m, w) in enumerate(zip(members, (100, 50, 25)))],
                    ['m0', 'm1', 'm2'])
    before = [m.created() for m in members]
    n = 10000
    calls = [['U wp%d 127.0.0.1 5000 ft' % i, 'D wp%d ft' % i] for i in range(n)]
    results = run_calls(cluster.control, calls, window=64, deadline=100.0)
    counts = [0, 0, 0]
    for u, d in results:
        counts[owner(u, members)] += 1
        assert d == '0'
    assert [m.created() - b for m, b in zip(members, before)] == counts
    for got, expected in zip(counts, (100 / 175, 50 / 175, 25 / 175)):
        assert abs(got / n - expected) <= 0.03, counts


# --- capacity ----------------------------------------------------------------------------------

def test_small_member_stops_receiving_new_sessions_when_full(fresh, procs, tmp_path):
    small, big = fresh[0], fresh[1]
    cluster = start(procs, tmp_path, [small.xml('small', capacity=100),
                                      big.xml('big', capacity=1000)], ['small', 'big'])
    results = run_calls(cluster.control,
                        [['U cap%d 127.0.0.1 5000 ft' % i] for i in range(300)], window=8)
    owners = [owner(r[0], [small, big]) for r in results]
    assert small.active() == owners.count(0) <= 100
    assert big.active() == owners.count(1) >= 200
    for i in range(100 - small.active()):              # fill it up behind the cluster's back
        assert protocol.parse_ul_reply(small.command('U direct%d 127.0.0.1 5000 ft' % i))
    assert small.active() == 100
    wait_until(lambda: protocol.parse_info(cluster.command('Ib'))['active sessions']
               == 100 + owners.count(1), 5.0, 'the heartbeat to see the full member')
    small_created = small.created()
    results = run_calls(cluster.control,
                        [['U more%d 127.0.0.1 5000 ft' % i] for i in range(50)], window=8)
    assert all(owner(r[0], [small, big]) == 1 for r in results)
    assert small.created() == small_created


@pytest.mark.parametrize('limit', ['hard', 'soft'])
def test_capacity_limit_when_all_members_are_full(fresh, procs, tmp_path, limit):
    a, b = fresh[0], fresh[1]
    cluster = start(procs, tmp_path, [a.xml('a', capacity=3), b.xml('b', capacity=3)],
                    ['a', 'b'], capacity_limit=limit)
    replies = [cluster.command('U full%d 127.0.0.1 5000 ft' % i) for i in range(6)]
    assert sorted(owner(r, [a, b]) for r in replies) == [0, 0, 0, 1, 1, 1]
    reply = cluster.command('U over 127.0.0.1 5000 ft')
    if limit == 'hard':
        assert reply == 'E998'
        assert a.active() + b.active() == 6
    else:
        assert protocol.parse_ul_reply(reply)
        assert a.active() + b.active() == 7
    # the sessions that are there keep working
    assert protocol.parse_ul_reply(cluster.command('L full0 127.0.0.1 6000 ft tt'))
    assert cluster.command('D full0 ft tt') == '0'


# --- no member -------------------------------------------------------------------------------

def test_every_member_down(procs, tmp_path):
    dead = [member_xml('d%d' % i, protocol='udp', address='127.0.0.1:%d' % free_udp_port())
            for i in range(2)]
    cluster = start(procs, tmp_path, dead, [])
    cluster.wait_log('member d1: probing -> offline', 5.0)
    # no member was ever probed: like an RTPproxy that is not up yet (issue 15; clients
    # keep V/VF answers for their lifetime, so none is given that members might contradict)
    assert cluster.command('V') == 'E999'
    assert cluster.command('VF 20050322') == 'E999'
    assert cluster.command('U c1 127.0.0.1 5000 ft') == 'E999'
    assert cluster.command('L c1 127.0.0.1 5000 ft tt') == 'E999'
    assert cluster.command('D c1 ft tt') == 'E999'
    assert cluster.command('G nsess_created') == 'E999'
    assert cluster.log_count('probing -> online') == 0


# --- status --------------------------------------------------------------------------------------

def test_suspended_member_gets_no_new_sessions_but_serves_existing_ones(fresh, procs, tmp_path):
    a, b = fresh[0], fresh[1]
    port = protocol.parse_ul_reply(b.command('U before@h 127.0.0.1 5000 ft'))[0]
    cluster = start(procs, tmp_path, [a.xml('a'), b.xml('b', status='SUSPENDED')], ['a', 'b'])
    results = run_calls(cluster.control,
                        [['U sus%d 127.0.0.1 5000 ft' % i] for i in range(100)], window=8)
    assert all(owner(r[0], [a, b]) == 0 for r in results)
    # a call the cluster does not know (it started before) is found and served on b
    reply = cluster.command('L before@h 127.0.0.1 6000 ft tt')
    assert owner(reply, [a, b]) == 1
    assert cluster.command('U before@h 127.0.0.1 5000 ft') == '%d 127.0.0.1' % port
    assert cluster.command('D before@h ft tt') == '0'
    assert b.active() == 0


@pytest.mark.slow
def test_draining_member_is_removed_after_its_calls_end(fresh, procs, tmp_path):
    a, b = fresh[0], fresh[1]
    xml_both = cluster_xml([a.xml('a'), b.xml('b')])
    cluster = ClusterProc.start(procs, tmp_path, xml_both, wait_online=['a', 'b'])
    replies = [cluster.command('U dr%d 127.0.0.1 5000 ft' % i) for i in range(30)]
    on_b = [i for i, r in enumerate(replies) if owner(r, [a, b]) == 1]
    assert on_b
    xml_a = xml_both[0].replace(b.xml('b'), '')
    with open(cluster.config_path, 'w') as f:
        f.write(xml_a)
    os.kill(cluster.proc.pid, signal.SIGHUP)
    cluster.wait_log('Loaded 1 clusters and 1 RTP proxies', 10.0)
    news = [cluster.command('U new%d 127.0.0.1 5000 ft' % i) for i in range(30)]
    assert all(owner(r, [a, b]) == 0 for r in news)
    for i in on_b:                                     # b still serves its calls
        assert owner(cluster.command('L dr%d 127.0.0.1 6000 ft tt' % i), [a, b]) == 1
    assert cluster.log_count('member b removed') == 0
    for i in on_b:
        assert cluster.command('D dr%d ft tt' % i) == '0'
    cluster.wait_log('member b removed', 5.0)
    assert b.active() == 0


# --- address rewriting --------------------------------------------------------------------------

def test_lan_address_makes_the_member_allocate_there(procs, tmp_path):
    member = Real(procs, extra=['-l', 'lan@127.0.0.2'])
    assert member.command('U probe 127.0.0.1 5000 ft').endswith(' 127.0.0.1')   # the default
    cluster = start(procs, tmp_path, [member.xml('m', lan='127.0.0.2')], ['m'])
    for cmd in ('U lan1 127.0.0.1 5000 ft', 'UR127.0.0.1 lan2 127.0.0.1 5000 ft',
                'Ul127.0.0.1 lan3 127.0.0.1 5000 ft'):
        reply = cluster.command(cmd)
        assert reply.endswith(' 127.0.0.2'), (cmd, reply)
    assert cluster.command('L lan1 127.0.0.1 6000 ft tt').endswith(' 127.0.0.2')


def test_wan_address_is_what_the_client_sees(fresh, procs, tmp_path):
    a = fresh[0]
    cluster = start(procs, tmp_path, [a.xml('m', wan='203.0.113.5')], ['m'])
    reply = cluster.command('U wan1 127.0.0.1 5000 ft')
    port = int(reply.split()[0])
    assert reply == '%d 203.0.113.5' % port and a.owns(port)
    assert cluster.command('L wan1 127.0.0.1 6000 ft tt').endswith(' 203.0.113.5')
    assert cluster.command('Q wan1 ft tt').split()[0].isdigit()


# --- aggregation -------------------------------------------------------------------------------

def test_info_and_counters_are_sums_over_members(fresh, procs, tmp_path):
    a, b = fresh[0], fresh[1]
    for i in range(3):
        a.command('U ia%d 127.0.0.1 5000 ft' % i)
    for i in range(5):
        b.command('U ib%d 127.0.0.1 5000 ft' % i)
    a.command('D ia0 ft')
    cluster = start(procs, tmp_path, [a.xml('a'), b.xml('b')], ['a', 'b'])
    expected = {k: a.info()[k] + b.info()[k] for k in protocol.INFO_FIELDS}
    assert protocol.parse_info(cluster.command('Ib')) == expected
    assert protocol.parse_info(cluster.command('I')) == expected
    assert cluster.command('Il').endswith('\naverage load: 0.000000')
    names = 'nsess_created nsess_destroyed total_duration npkts_rcvd'
    mine = [protocol.parse_stats_reply(names.split(), m.command('G ' + names), False)
            for m in (a, b)]
    got = protocol.parse_stats_reply(names.split(), cluster.command('G ' + names), False)
    assert got[:2] == [mine[0][0] + mine[1][0], mine[0][1] + mine[1][1]]
    assert isinstance(got[2], float) and got[2] == pytest.approx(mine[0][2] + mine[1][2], abs=1e-5)
    verbose = cluster.command('Gv nsess_created total_duration')
    assert verbose.startswith('nsess_created=%d total_duration=' % (mine[0][0] + mine[1][0]))
    assert cluster.command('G nsess_created nosuch') == 'E68'


@pytest.mark.slow
def test_aggregation_with_a_silent_and_then_a_dead_member(procs, tmp_path):
    a, b = Real(procs), Real(procs)
    for i in range(2):
        a.command('U sa%d 127.0.0.1 5000 ft' % i)
    for i in range(4):
        b.command('U sb%d 127.0.0.1 5000 ft' % i)
    cluster = start(procs, tmp_path, [a.xml('a'), b.xml('b')], ['a', 'b'])
    assert cluster.command('G nsess_created') == '6'
    os.kill(b.proc.pid, signal.SIGSTOP)                 # b stops answering
    try:
        a.command('U sa9 127.0.0.1 5000 ft')
        assert cluster.command('G nsess_created') == '7'   # b's last value, from the cache
        cluster.wait_log('member b: online -> offline', 5.0)
        # counters keep b's last values, gauges drop (issue 15: they were 3 and 3)
        assert cluster.command('G nsess_created') == '7'
        info = protocol.parse_info(cluster.command('Ib'))
        assert info['active sessions'] == 3 and info['sessions created'] == 7
    finally:
        os.kill(b.proc.pid, signal.SIGCONT)
    b.proc.kill(signal.SIGKILL)
    assert protocol.parse_info(cluster.command('Ib'))['active sessions'] == 3
    assert cluster.command('V') == '20040107'


def test_capabilities_are_those_every_member_has(fresh, procs, tmp_path):
    cluster = start(procs, tmp_path, [m.xml('m%d' % i) for i, m in enumerate(fresh)],
                    ['m0', 'm1', 'm2'])
    assert cluster.command('VF 20050322') == '1'
    # remote members and no <disconnect_notify>: notifications could not reach the client
    # (issue 15; test_notify.py has the relay's '1')
    assert cluster.command('VF 20081224') == '0'
    cluster.wait_log('cannot reach clients without <disconnect_notify>; VF 20081224 is answered 0')
    assert cluster.command('VF 20170313') == '0'        # no RTPproxy supports it
    assert cluster.command('VF 20040107') == '1'


# --- member failures --------------------------------------------------------------------------------

@pytest.mark.slow
def test_new_sessions_on_a_silent_member_go_to_a_live_one(procs, tmp_path):
    a, b = Real(procs), Real(procs)
    cluster = start(procs, tmp_path, [a.xml('a'), b.xml('b')], ['a', 'b'])
    os.kill(a.proc.pid, signal.SIGSTOP)
    try:
        replies = []
        for i in range(12):
            started = time.monotonic()
            replies.append(cluster.command('U silent%d 127.0.0.1 5000 ft' % i, timeout=2.0))
            assert time.monotonic() - started < 1.0     # inside a SIP proxy's retransmit time
        assert 'E997' not in replies
        assert all(owner(r, [a, b]) == 1 for r in replies)
        assert b.active() == 12
    finally:
        os.kill(a.proc.pid, signal.SIGCONT)
    for i in range(12):
        assert owner(cluster.command('L silent%d 127.0.0.1 6000 ft tt' % i), [a, b]) == 1


@pytest.mark.slow
def test_reoffer_for_a_call_on_a_dead_member_moves_it(procs, tmp_path):
    a, b = Real(procs), Real(procs)
    cluster = start(procs, tmp_path, [a.xml('a'), b.xml('b')], ['a', 'b'])
    replies = {i: cluster.command('U ro%d 127.0.0.1 5000 ft' % i) for i in range(10)}
    on_a = [i for i, r in replies.items() if owner(r, [a, b]) == 0]
    assert on_a
    for i in on_a:
        assert owner(cluster.command('L ro%d 127.0.0.1 6000 ft tt' % i), [a, b]) == 0
    a.proc.kill(signal.SIGKILL)
    cluster.wait_log('member a: online -> offline', 5.0)
    for i in on_a:
        assert owner(cluster.command('U ro%d 127.0.0.1 5000 ft tt' % i), [a, b]) == 1
        assert owner(cluster.command('L ro%d 127.0.0.1 6000 ft tt' % i), [a, b]) == 1
        assert cluster.command('D ro%d ft tt' % i) == '0'
    news = [cluster.command('U ro_new%d 127.0.0.1 5000 ft' % i) for i in range(5)]
    assert all(owner(r, [a, b]) == 1 for r in news)


@pytest.mark.slow
def test_delete_for_a_call_on_a_dead_member_is_answered_at_once(procs, tmp_path):
    a, b = Real(procs), Real(procs)
    cluster = start(procs, tmp_path, [a.xml('a'), b.xml('b')], ['a', 'b'])
    on_a = []
    for i in range(40):
        if owner(cluster.command('U dd%d 127.0.0.1 5000 ft' % i), [a, b]) == 0:
            on_a.append(i)
    assert on_a
    a.proc.kill(signal.SIGKILL)
    cluster.wait_log('member a: online -> offline', 5.0)
    for i in on_a:
        started = time.monotonic()
        assert cluster.command('D dd%d ft tt' % i, timeout=2.0) == '0'
        assert time.monotonic() - started < 1.5      # not after the 3 s member timeout


@pytest.mark.slow
def test_probe_interval_option_brings_a_restarted_member_back_sooner(procs, tmp_path):
    member = procs.member('udp')
    port = int(member.address.rsplit(':', 1)[1])
    cluster = ClusterProc.start(procs, tmp_path, cluster_xml([member_xml('m1', member)]),
                                wait_online=['m1'], extra_args=['--probe-interval', '0.5'])
    member.kill()
    cluster.wait_log('member m1: online -> offline')
    restarted = procs.member('udp', port=port)
    assert restarted.command('V') == '20040107\n'
    back = cluster.wait_log('member m1: probing -> online', timeout=10, count=2)
    # one probe timeout (1 s) plus one interval (0.5 s) at the most; the default
    # interval (2 s) would allow up to 3 s
    assert back < 2.2, 'online again after %.1f s' % back
