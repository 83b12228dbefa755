"""Member health state machine, sans-IO: a scripted client and twisted.internet.task.Clock."""
from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from tests.support.cluster_proc import ScriptedClient
from rtp_cluster.core.config import Endpoint, MemberConfig
from rtp_cluster.core.member import (CAPABILITY_DATES, DRAINING, OFFLINE, ONLINE, PROBING, Member)

UDP = Endpoint('udp', host='127.0.0.1', port=22222)


def make_member(*, capacity: int = 100, status: str = 'ACTIVE', **kwargs):
    clock = Clock()
    client = ScriptedClient(clock)
    config = MemberConfig('m1', UDP, weight=100, capacity=capacity, status=status)
    member = Member(config, client, clock, **kwargs)
    transitions: list[tuple[str, str]] = []
    member.observers.append(lambda m, old, new: transitions.append((old, new)))
    return member, client, clock, transitions


def run(clock: Clock, seconds: float, step: float = 0.01) -> None:
    for _ in range(int(round(seconds / step))):
        clock.advance(step)


def run_until(clock: Clock, done, seconds: float, step: float = 0.01) -> None:
    """Advance `clock` in steps until `done()` or `seconds` have passed."""
    for _ in range(int(round(seconds / step))):
        clock.advance(step)
        if done():
            return


def online_member(**kwargs):
    member, client, clock, transitions = make_member(**kwargs)
    member.start()
    run(clock, 0.1)
    assert member.state == ONLINE
    return member, client, clock, transitions


def test_probe_sequence_reads_capabilities_then_goes_online():
    member, client, clock, transitions = make_member()
    client.rtpp.capabilities = frozenset({'20050322', '20081224', '20150617'})
    member.start()
    assert member.state == PROBING
    assert client.sent == ['V']
    run(clock, 0.1)
    assert member.state == ONLINE and member.online
    assert sorted(client.sent[1:1 + len(CAPABILITY_DATES)]) == sorted('VF ' + d for d in CAPABILITY_DATES)
    assert client.sent[1 + len(CAPABILITY_DATES)] == 'Ib'
    assert member.capabilities == {'20050322', '20081224', '20150617'}
    assert member.supports_notify_relay
    assert member.stats['sessions created'] == 0
    assert transitions == [(OFFLINE, PROBING), (PROBING, ONLINE)]


def test_capabilities_of_a_full_rtpproxy():
    member, client, clock, _ = online_member()
    assert '20081224' in member.capabilities and '20050322' in member.capabilities
    assert member.capabilities == frozenset(CAPABILITY_DATES) - {'20170313'}


@pytest.mark.parametrize('bad', ['20040106', 'E1', '', 'garbage\n'])
def test_wrong_version_keeps_member_offline_and_reprobes(bad):
    member, client, clock, transitions = make_member(probe_interval=2.0)
    client.override = lambda text: bad if text == 'V' else None
    member.start()
    run(clock, 0.1)
    assert member.state == OFFLINE
    assert client.sent == ['V']
    run(clock, 2.0)
    assert client.sent == ['V', 'V']            # probed again after probe_interval
    client.override = None
    run(clock, 2.1)
    assert member.state == ONLINE
    assert (OFFLINE, PROBING) in transitions and transitions[-1] == (PROBING, ONLINE)


def test_unanswered_capability_probe_fails_the_probe():
    member, client, clock, _ = make_member(probe_timeout=1.0, probe_interval=2.0)
    original = client.rtpp.answer
    client.rtpp.answer = lambda text: None if text == 'VF 20081224' else original(text)
    member.start()
    run(clock, 0.5)
    assert member.state == PROBING
    run(clock, 0.6)
    assert member.state == OFFLINE and member.capabilities == frozenset()


@pytest.mark.parametrize('bad_ib', [None, 'E18', 'sessions created: 1\n', 'junk'])
def test_bad_first_heartbeat_fails_the_probe(bad_ib):
    member, client, clock, _ = make_member()
    if bad_ib is None:
        original = client.rtpp.answer
        client.rtpp.answer = lambda text: None if text == 'Ib' else original(text)
    else:
        client.override = lambda text: bad_ib if text == 'Ib' else None
    member.start()
    run(clock, 1.2)
    assert member.state == OFFLINE
    assert member.stats is None


def test_heartbeat_every_interval_updates_stats():
    member, client, clock, _ = online_member(heartbeat_interval=1.0)
    before = client.sent.count('Ib')
    for i in range(3):
        client.rtpp.create('c%d' % i)
    run(clock, 3.05)
    assert client.sent.count('Ib') - before == 3
    assert member.stats['active sessions'] == 3
    assert member.active_sessions == 3
    assert member.stats['sessions created'] == 3


def test_dead_member_goes_offline_within_5_seconds_then_recovers():
    member, client, clock, transitions = online_member(heartbeat_interval=1.0,
                                                       heartbeat_timeout=1.5, probe_interval=2.0)
    client.silent = True                         # SIGKILL
    died = clock.seconds()
    run_until(clock, lambda: member.state == OFFLINE, 5.0)
    assert member.state == OFFLINE
    assert clock.seconds() - died <= 5.0
    assert member.stats is None
    assert transitions[-1] == (ONLINE, OFFLINE)
    client.silent = False                        # restarted on the same address
    back = clock.seconds()
    run_until(clock, lambda: member.state == ONLINE, 5.0)
    assert member.state == ONLINE
    assert clock.seconds() - back <= member.probe_interval + member.probe_timeout + 0.1


def test_offline_member_is_reprobed_every_probe_interval():
    member, client, clock, _ = make_member(probe_interval=2.0, probe_timeout=1.0)
    client.silent = True
    member.start()
    run(clock, 10.0)
    # V at 0, timeout at 1, next V at 3, 6, 9 (probe_timeout + probe_interval apart)
    assert client.sent.count('V') == 4
    assert member.state in (OFFLINE, PROBING)
    assert not member.online


def test_suspect_probe_takes_member_offline_only_without_answer():
    member, client, clock, _ = online_member(heartbeat_interval=10.0)
    replies: list = []
    original = client.rtpp.answer
    client.rtpp.answer = lambda text: None if text.startswith('U') else original(text)
    member.send('U c1 127.0.0.1 5000 f1', replies.append, 0.4)
    run(clock, 0.5)
    assert replies == [None]
    assert client.sent[-1] == 'V'               # immediate check instead of waiting
    run(clock, 0.1)
    assert member.state == ONLINE               # it answered V: still online
    client.silent = True
    member.send('U c2 127.0.0.1 5000 f1', replies.append, 0.4)
    member.send('U c3 127.0.0.1 5000 f1', replies.append, 0.4)
    run(clock, 0.5)
    assert client.sent.count('V') == 3          # one V probe for two timeouts, not two
    run(clock, 1.0)
    assert member.state == OFFLINE


def test_stale_answers_from_a_previous_state_are_ignored():
    member, client, clock, _ = make_member(probe_timeout=1.0, probe_interval=2.0)
    client.delay = 0.9                         # V answered just before the probe timeout
    member.start()
    member.stop()                              # stopped while the probe is in flight
    run(clock, 5.0)
    assert member.state != ONLINE
    assert client.sent == ['V']
    assert client.closed


def test_stop_cancels_heartbeats_and_closes_client():
    member, client, clock, _ = online_member()
    member.stop()
    sent = len(client.sent)
    run(clock, 5.0)
    assert len(client.sent) == sent
    assert client.closed
    assert not clock.getDelayedCalls() or all(not c.active() for c in clock.getDelayedCalls())


def test_utilisation_counts_new_sessions_until_the_heartbeat_sees_them():
    member, client, clock, _ = online_member(capacity=100, heartbeat_interval=1.0)
    assert member.utilisation() == 0.0
    for i in range(10):
        member.note_session_created()
        client.rtpp.create('c%d' % i)
    assert member.utilisation() == pytest.approx(0.10)
    run(clock, 1.05)                            # heartbeat reports 10 active
    assert member.created_since_heartbeat == 0
    assert member.utilisation() == pytest.approx(0.10)


def test_utilisation_rises_at_once_and_falls_smoothly():
    member, client, clock, _ = online_member(capacity=100, heartbeat_interval=1.0)
    for i in range(80):
        client.rtpp.create('c%d' % i)
    run(clock, 1.05)
    assert member.filtered_active == 80
    client.rtpp.sessions.clear()
    run(clock, 1.0)
    assert 0 < member.filtered_active < 80      # smoothed, not dropped to 0
    run(clock, 10.0)
    assert member.filtered_active < 1


def test_session_created_during_heartbeat_is_not_lost():
    member, client, clock, _ = online_member(capacity=100, heartbeat_interval=1.0)
    client.delay = 0.2
    heartbeats = client.sent.count('Ib')
    run_until(clock, lambda: client.sent.count('Ib') > heartbeats, 2.0)
    assert client.sent[-1] == 'Ib'              # the heartbeat request is out
    member.note_session_created()               # a session created while it is in flight
    run(clock, 0.3)
    # the RTPproxy had not seen that session when it answered, so it stays counted here
    assert member.created_since_heartbeat == 1
    assert member.utilisation() == pytest.approx(0.01)


def test_apply_config_keeps_draining_unless_revived():
    member, _, _, _ = make_member()
    member.status = DRAINING
    new = MemberConfig('m1', UDP, weight=50, capacity=10, status='SUSPENDED')
    member.apply_config(new)
    assert member.status == DRAINING and member.weight == 50 and member.capacity == 10
    member.apply_config(new, revive=True)
    assert member.status == 'SUSPENDED'


def test_config_properties():
    config = MemberConfig('m9', Endpoint('unix', path='/tmp/x.sock'), weight=7, capacity=9,
                          status='suspended', wan_address='203.0.113.1', lan_address='10.0.0.1')
    member = Member(config, ScriptedClient(Clock()), Clock())
    assert (member.name, member.weight, member.capacity) == ('m9', 7, 9)
    assert member.status == 'SUSPENDED'
    assert member.is_local
    assert (member.wan_address, member.lan_address) == ('203.0.113.1', '10.0.0.1')
    assert member.rtt == 0.0
