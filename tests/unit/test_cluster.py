"""Cluster routing: stickiness, broadcasts for unknown calls, member status and failures.

Real Member objects talk to in-memory RTPproxies (tests/support/cluster_harness.py);
time is a twisted Clock.
"""
from __future__ import annotations

import dataclasses

import pytest

from tests.support.cluster_harness import Harness, run, session_calls, three
from rtp_cluster.core import protocol
from rtp_cluster.core import cluster as cluster_mod
from rtp_cluster.core.cluster import NEW_SESSION_DEADLINE
from rtp_cluster.core.member import DRAINING, ONLINE, SUSPENDED


# --- routing stickiness ---------------------------------------------------------------------

def test_every_command_of_a_call_lands_on_the_member_that_got_the_offer():
    h = three()
    calls = ['call-%d@host' % i for i in range(300)]
    for cid in calls:
        u = h.cmd('U %s 127.0.0.1 5000 ft;1' % cid)
        owner = h.owner_of(u)
        assert h.owner_of(h.cmd('L %s 127.0.0.1 6000 ft;1 tt;1' % cid)) == owner
        assert h.cmd('Q %s ft;1 tt;1' % cid) == '60 0 0 0 0'
        assert h.owner_of(h.cmd('U %s 127.0.0.1 5000 ft;1 tt;1' % cid)) == owner  # re-offer
        assert h.cmd('P5 %s /tmp/prompt session ft;1 tt;1' % cid) == '0'
        assert h.cmd('D %s ft tt' % cid) == '0'
    seen = [session_calls(f) for f in h.fakes.values()]
    assert sum(len(s) for s in seen) == len(calls)          # no call-id on two members
    assert set().union(*seen) == set(calls)
    for fake in h.fakes.values():
        per_call: dict[str, list[str]] = {}
        for text in fake.session_commands:
            cmd = protocol.parse_command(text)
            per_call.setdefault(cmd.call_id, []).append(cmd.letter)
        assert all(letters == ['U', 'L', 'Q', 'U', 'P', 'D'] for letters in per_call.values())
    assert all(not f.sessions for f in h.fakes.values())
    assert len(h.cluster.store) == 0
    assert h.cluster.counters.broadcasts == 0


def test_several_streams_and_branches_of_one_call_share_its_member():
    h = three()
    owner = h.owner_of(h.cmd('U c1 127.0.0.1 5000 ft;1'))
    assert h.owner_of(h.cmd('U c1 127.0.0.1 5002 ft;2')) == owner      # second m-line
    assert h.owner_of(h.cmd('U c1 127.0.0.1 5004 other-branch')) == owner
    assert session_calls(h.fakes[owner]) == {'c1'}
    assert h.cluster.counters.new_sessions == 1


def test_commands_are_forwarded_byte_exact():
    h = Harness([{}])
    texts = ['UAc0,8,101Z20 c1 127.0.0.1 5000 ft;1',
             'Lc0,8 c1 127.0.0.1 6000 ft;1 tt;1 && S ttl=30',
             'Qv c1 ft;1 tt;1 ttl npkts_ina',
             'CSP c1 udp:127.0.0.1:9 ft;1 tt;1',
             'Dw c1 ft tt']
    for text in texts:
        h.cmd(text)
    assert h.fakes['m1'].session_commands == texts


# --- unknown call-ids: broadcast ----------------------------------------------------------------

def test_lookup_of_unknown_call_found_on_one_member_binds_it():
    h = three()
    port = h.fakes['m2'].create('x@h', 'ft')
    reply = h.cmd('L x@h 127.0.0.1 6000 ft tt')
    assert h.owner_of(reply) == 'm2'
    assert reply == '%d 127.0.0.1' % (port + 5000)
    for fake in h.fakes.values():                # asked everywhere, unchanged
        assert fake.session_commands == ['L x@h 127.0.0.1 6000 ft tt']
    assert h.cluster.store.lookup('x@h') == 'm2'
    assert h.cmd('Q x@h ft tt') == '60 0 0 0 0'  # bound now: no second broadcast
    assert [len(f.session_commands) for f in h.fakes.values()] == [1, 2, 1]
    assert h.cluster.counters.broadcasts == 1


@pytest.mark.parametrize('offer, expected', [
    ('U x@h 127.0.0.1 6000 tt ft', 'L x@h 127.0.0.1 6000 ft tt'),
    ('U x@h 127.0.0.1 6000 tt ft unix:/tmp/notify.sock tag1', 'L x@h 127.0.0.1 6000 ft tt'),
    ('UAc0,8 x@h 127.0.0.1 6000 tt ft && L 127.0.0.1 7000', 'LAc0,8 x@h 127.0.0.1 6000 ft tt'),
])


def test_offer_with_to_tag_for_unknown_call_is_broadcast_as_lookup(offer, expected):
    h = three()
    h.fakes['m3'].create('x@h', 'ft')
    reply = h.cmd(offer)
    assert h.owner_of(reply) == 'm3'
    for fake in h.fakes.values():
        assert fake.session_commands == [expected]
    assert h.cluster.store.lookup('x@h') == 'm3'
    assert h.owner_of(h.cmd('U x@h 127.0.0.1 6000 tt ft')) == 'm3'
    assert h.fakes['m1'].session_commands == [expected]          # no second broadcast


# Issue 15: one RTPproxy answers E50 (session not found) to these; the cluster passes the
# members' common reply through (it answered E995 before).


@pytest.mark.parametrize('text, expected', [
    ('L nx@h 127.0.0.1 6000 ft tt', '0'),
    ('Q nx@h ft tt', protocol.E_SESSION_NOT_FOUND),
    ('D nx@h ft tt', protocol.E_SESSION_NOT_FOUND),
    ('P nx@h /tmp/p session ft tt', protocol.E_SESSION_NOT_FOUND),
    ('R nx@h ft tt', protocol.E_SESSION_NOT_FOUND),
])


def test_unknown_call_found_nowhere(text, expected):
    h = three()
    assert h.cmd(text) == expected
    assert all(len(f.session_commands) == 1 for f in h.fakes.values())
    assert len(h.cluster.store) == 0
    assert not any(f.sessions for f in h.fakes.values())    # a lookup never creates


@pytest.mark.parametrize('text, expected', [
    ('L dup@h 127.0.0.1 6000 ft tt', '0'),
    ('U dup@h 127.0.0.1 6000 tt ft', '0'),
    ('Q dup@h ft tt', protocol.E_BROADCAST_AMBIGUOUS),
])


def test_unknown_call_found_on_two_members_is_not_bound(text, expected):
    h = three()
    h.fakes['m1'].create('dup@h', 'ft')
    h.fakes['m3'].create('dup@h', 'ft')
    assert h.cmd(text) == expected
    assert h.cluster.store.lookup('dup@h') is None


@pytest.mark.parametrize('offer', [
    'Uc8 late@h 127.0.0.1 6000 tt;1 ft;1',                       # Kamailio late offer
    'U late@h 127.0.0.1 6000 tt ft unix:/tmp/notify.sock tag1',  # B2BUA callee side
])


def test_offer_with_to_tag_for_a_call_no_member_has_creates_it(offer):
    """Late offer: the first command of the call carries both tags; one RTPproxy creates it."""
    h = three()
    reply = h.cmd(offer)
    owner = h.owner_of(reply)
    assert h.cluster.store.lookup('late@h') == owner
    lookup = protocol.parse_command(offer).as_lookup().serialize()
    forwarded = protocol.parse_command(offer).without_notify().serialize()  # no relay here
    for name, fake in h.fakes.items():
        expected = [lookup, forwarded] if name == owner else [lookup]
        assert fake.session_commands == expected
    assert set(h.fakes[owner].sessions) == {'late@h'}
    assert h.cluster.counters.new_sessions == 1 and h.cluster.counters.late_offers == 1
    answer = 'Lc8 late@h 127.0.0.1 7000 tt;1 ft;1'
    assert h.owner_of(h.cmd(answer)) == owner                     # the ACK's answer
    assert h.cmd('D late@h ft tt') == '0'
    assert not any(f.sessions for f in h.fakes.values())


def test_late_offer_avoids_a_member_that_did_not_answer_the_lookup():
    h = Harness([{}, {}], rng=lambda: 0.0)                   # picks would go to m1 first
    h.clients['m1'].silent = True
    replies = h.send('U late2@h 127.0.0.1 6000 tt ft')
    run(h.clock, 1.0)
    assert len(replies) == 1 and h.owner_of(replies[0]) == 'm2'
    assert not any(t.startswith('U ') for t in h.clients['m1'].sent)


def test_unknown_call_with_a_silent_member_is_a_timeout_not_a_not_found():
    h = three()
    h.clients['m2'].silent = True
    replies = h.send('Q nx@h ft tt')
    run(h.clock, 1.0)
    assert replies == [protocol.E_MEMBER_TIMEOUT]      # the call may be on m2


def test_one_member_knowing_the_call_answers_even_with_an_error():
    h = three()
    h.fakes['m2'].create('p@h', 'ft')
    h.clients['m2'].override = lambda text: 'E60' if text.startswith('P') else None
    assert h.cmd('P p@h /nonexistent session ft tt') == 'E60'   # found, playback failed
    assert h.cluster.store.lookup('p@h') == 'm2'


def test_an_error_every_member_gives_is_passed_through():
    h = three()
    h.fakes['m1'].create('q@h', 'ft')
    h.fakes['m3'].create('q@h', 'ft')
    for client in h.clients.values():
        client.override = lambda text: 'E62' if text.startswith('Q') else None
    assert h.cmd('Q q@h ft tt nosuchname') == 'E62'


def test_delete_of_unknown_call_answers_a_positive_reply():
    h = three()
    h.fakes['m1'].create('d1@h', 'ft')
    assert h.cmd('D d1@h ft tt') == '0'
    assert 'd1@h' not in h.fakes['m1'].sessions
    h.fakes['m1'].create('d2@h', 'ft')
    h.fakes['m2'].create('d2@h', 'ft')
    assert h.cmd('D d2@h ft tt') == '0'                      # found twice: still deleted
    assert all('d2@h' not in f.sessions for f in h.fakes.values())
    assert len(h.cluster.store) == 0


def test_broadcast_skips_offline_members_and_survives_a_silent_one():
    h = three()
    h.fakes['m2'].create('x@h', 'ft')
    h.take_offline('m1')
    before = len(h.fakes['m1'].received)
    reply = h.cmd('L x@h 127.0.0.1 6000 ft tt')
    assert h.owner_of(reply) == 'm2'
    assert h.fakes['m1'].session_commands == []
    assert len(h.fakes['m1'].received) == before or all(
        t in ('V', 'Ib') or t.startswith('VF') for t in h.fakes['m1'].received[before:])
    h.clients['m3'].silent = True                            # online, but does not answer
    h.fakes['m2'].create('y@h', 'ft')
    replies = h.send('L y@h 127.0.0.1 6000 ft tt')
    run(h.clock, 3.5)
    assert len(replies) == 1 and h.owner_of(replies[0]) == 'm2'


# --- delete on an offline member ------------------------------------------------------------------

def test_delete_for_a_session_on_an_offline_member_answers_at_once_and_is_still_sent():
    h = Harness([{}, {}], rng=lambda: 0.0)                  # new sessions go to m1
    assert h.owner_of(h.cmd('U c1 127.0.0.1 5000 ft')) == 'm1'
    h.take_offline('m1')
    h.clients['m1'].silent = False                           # answers, but still marked offline
    assert h.member('m1').state != ONLINE
    replies = h.send('D c1 ft tt')
    assert replies == ['0']                                  # at once, before any clock tick
    run(h.clock, 0.1)
    assert replies == ['0']                                  # the member's late answer is dropped
    assert 'D c1 ft tt' in h.fakes['m1'].session_commands
    assert 'c1' not in h.fakes['m1'].sessions
    assert h.cluster.counters.late_replies == 1
    assert h.cluster.store.lookup('c1') is None


# --- weighted pick ---------------------------------------------------------------------------------

def test_no_member_online():
    h = three(start=False)
    for text in ('U c1 127.0.0.1 5000 ft', 'L c1 127.0.0.1 6000 ft tt', 'Q c1 ft tt',
                 'D c1 ft tt', 'G nsess_created', 'X'):
        assert h.cmd(text) == protocol.E_NO_MEMBER_ONLINE, text
    assert h.cmd('Ib').startswith('sessions created: 0\n')
    assert all(f.received == [] for f in h.fakes.values())


# --- member status -------------------------------------------------------------------------------

def test_suspended_member_gets_no_new_sessions_but_serves_its_own():
    h = Harness([{}, {'status': 'SUSPENDED'}])
    for i in range(100):
        assert h.owner_of(h.cmd('U a%d 127.0.0.1 5000 ft' % i)) == 'm1'
    h2 = Harness([{}, {}], rng=lambda: 0.99)                   # new sessions go to m2
    assert h2.owner_of(h2.cmd('U s1 127.0.0.1 5000 ft')) == 'm2'
    h2.member('m2').status = SUSPENDED
    assert h2.owner_of(h2.cmd('U s2 127.0.0.1 5000 ft')) == 'm1'
    assert h2.owner_of(h2.cmd('L s1 127.0.0.1 6000 ft tt')) == 'm2'
    assert h2.owner_of(h2.cmd('U s1 127.0.0.1 5000 ft tt')) == 'm2'
    assert h2.cmd('D s1 ft tt') == '0'
    assert 's1' not in h2.fakes['m2'].sessions
    # a call unknown to the cluster is still looked up on the suspended member
    h2.fakes['m2'].create('old@h', 'ft')
    assert h2.owner_of(h2.cmd('L old@h 127.0.0.1 6000 ft tt')) == 'm2'


def test_draining_member_is_removed_after_its_last_session():
    h = Harness([{}, {}], rng=lambda: 0.0)
    for i in range(3):
        assert h.owner_of(h.cmd('U d%d 127.0.0.1 5000 ft' % i)) == 'm1'
    client = h.clients['m1']
    assert h.cluster.drain_member('m1')
    assert h.member('m1').status == DRAINING
    assert h.owner_of(h.cmd('U new 127.0.0.1 5000 ft')) == 'm2'
    for i in range(3):
        assert h.owner_of(h.cmd('L d%d 127.0.0.1 6000 ft tt' % i)) == 'm1'
    assert h.cmd('D d0 ft tt') == '0'
    assert h.cmd('D d1 ft tt') == '0'
    assert 'm1' in h.cluster.members and h.removed == []
    assert h.cmd('D d2 ft tt') == '0'
    run(h.clock, 0.05)
    assert 'm1' not in h.cluster.members
    assert h.removed == ['m1']
    assert client.closed
    sent = len(client.sent)
    run(h.clock, 5.0)
    assert len(client.sent) == sent              # no more heartbeats to a removed member


def test_draining_member_without_sessions_is_removed_at_once():
    h = Harness([{}, {}])
    assert h.cluster.drain_member('m2')
    assert list(h.cluster.members) == ['m1'] and h.removed == ['m2']
    assert not h.cluster.drain_member('nosuch')


# --- aggregation -------------------------------------------------------------------------------------

def test_delete_all_is_broadcast():
    h = three()
    for i in range(9):
        h.cmd('U x%d 127.0.0.1 5000 ft' % i)
    assert h.cmd('X') == '0'
    assert all(not f.sessions and 'X' in f.received for f in h.fakes.values())
    assert len(h.cluster.store) == 0


def test_unknown_command_letter_is_answered_locally():
    h = Harness([{}])
    assert protocol.parse_command('Y').error == 'E0'
    replies: list[str] = []
    h.cluster.handle(protocol.Command('Y', 'Y', '', [], []), replies.append)
    assert replies == ['E0']
    assert h.fakes['m1'].session_commands == []


# --- member failures around new sessions -------------------------------------------------------------

def test_new_session_on_a_silent_member_is_retried_on_another_within_the_deadline():
    h = Harness([{}, {}], rng=lambda: 0.0)                  # m1 is picked first
    h.clients['m1'].silent = True                            # online, not answering yet
    replies = h.send('U c1 127.0.0.1 5000 ft')
    run(h.clock, NEW_SESSION_DEADLINE - 0.05)
    assert replies == []
    run(h.clock, 0.1)
    assert len(replies) == 1
    assert h.owner_of(replies[0]) == 'm2'
    assert h.clock.seconds() - 0.1 < 1.0                     # well inside the client's retry
    assert h.cluster.store.lookup('c1') == 'm2'
    assert h.cluster.counters.retried_new == 1
    assert h.owner_of(h.cmd('L c1 127.0.0.1 6000 ft tt')) == 'm2'
    # the slow member is told to drop the session in case it creates it late
    assert h.clients['m1'].sent.count('D c1 ft') == 1


def test_no_member_timeout_error_while_a_member_answers():
    h = Harness([{}, {}, {}], seed=11)
    h.clients['m2'].silent = True
    pending = []
    for i in range(30):
        pending.append(h.send('U r%d 127.0.0.1 5000 ft' % i))
        run(h.clock, 0.02)
    run(h.clock, 1.0)
    assert all(len(r) == 1 for r in pending)
    replies = [r[0] for r in pending]
    assert protocol.E_MEMBER_TIMEOUT not in replies
    assert all(h.owner_of(r) in ('m1', 'm3') for r in replies)
    assert h.cluster.counters.retried_new >= 1       # m2 was picked and skipped


def test_new_session_with_every_member_silent_is_a_timeout():
    h = Harness([{}, {}])
    for client in h.clients.values():
        client.silent = True
    replies = h.send('U c1 127.0.0.1 5000 ft')
    run(h.clock, 4.0)
    assert replies == [protocol.E_MEMBER_TIMEOUT]
    assert h.cluster.store.lookup('c1') is None


def test_reoffer_for_a_session_on_an_offline_member_is_reanchored():
    h = Harness([{}, {}], rng=lambda: 0.0)
    assert h.owner_of(h.cmd('U c1 127.0.0.1 5000 ft')) == 'm1'
    assert h.owner_of(h.cmd('L c1 127.0.0.1 6000 ft tt')) == 'm1'
    h.take_offline('m1')
    replies = h.send('U c1 127.0.0.1 5000 ft tt')
    run(h.clock, 0.1)
    assert len(replies) == 1 and h.owner_of(replies[0]) == 'm2'
    assert h.cluster.store.lookup('c1') == 'm2'
    assert h.cluster.counters.reanchored == 1
    assert h.owner_of(h.cmd('L c1 127.0.0.1 6000 ft tt')) == 'm2'
    assert h.cmd('D c1 ft tt') == '0'
    assert 'c1' not in h.fakes['m2'].sessions


def test_session_of_a_removed_member_is_forgotten():
    h = Harness([{}, {}], rng=lambda: 0.0)
    h.cmd('U c1 127.0.0.1 5000 ft')
    member = h.member('m1')
    h.cluster._remove_member(member)
    assert h.cluster.store.lookup('c1') is None
    assert h.cmd('L c1 127.0.0.1 6000 ft tt') == '0'      # broadcast to the rest: not found


# --- answered well within the SIP clients' 1 s retransmit interval -----------------------------------

def test_broadcast_answers_within_a_second_despite_a_silent_member():
    h = three()
    h.fakes['m2'].create('x@h', 'ft')
    h.clients['m3'].silent = True              # online, not noticed yet
    replies = h.send('L x@h 127.0.0.1 6000 ft tt')
    run(h.clock, 1.0)
    assert len(replies) == 1 and h.owner_of(replies[0]) == 'm2'


def test_reoffer_with_every_member_offline_is_answered_at_once():
    h = Harness([{}, {}], rng=lambda: 0.0)
    h.cmd('U c1 127.0.0.1 5000 ft')
    for name in h.fakes:
        h.take_offline(name)
    replies = h.send('U c1 127.0.0.1 5000 ft tt')
    run(h.clock, 0.1)
    assert replies == [protocol.E_NO_MEMBER_ONLINE]


def test_delete_to_a_silent_member_is_answered_zero_at_the_deadline():
    h = Harness([{}], rng=lambda: 0.0)
    h.cmd('U d1 127.0.0.1 5000 ft')
    h.clients['m1'].silent = True               # online, silence not noticed yet
    replies = h.send('D d1 ft tt')
    run(h.clock, cluster_mod.DELETE_DEADLINE - 0.05)
    assert replies == []
    run(h.clock, 0.1)
    assert replies == ['0']
    assert h.cluster.store.lookup('d1') is None


@pytest.mark.parametrize('delete,bound', [
    ('D s1 ft tt', False),          # the whole call
    ('D s1 ft;1 tt;1', True),       # one media stream of the call
    ('Dw s1 ft', True),             # a weak flag only: the session may live on
])


def test_delete_unbinds_only_when_it_ends_the_call(delete, bound):
    h = Harness([{}], rng=lambda: 0.0)
    h.cmd('U s1 127.0.0.1 5000 ft;1')
    h.cmd('U s1 127.0.0.1 5002 ft;2')
    h.cmd(delete)
    assert (h.cluster.store.get('s1') is not None) is bound


# --- counters never decrease (issue 15) -------------------------------------------------------------


def test_a_reloaded_configuration_reaches_every_part_of_the_cluster():
    h = three()
    new = dataclasses.replace(h.config, capacity_limit='hard')
    h.cluster.config = new
    assert h.cluster.config is new
    assert h.cluster.rewriter.config is new and h.cluster.capabilities.config is new
    assert not h.cluster.soft_limit


def test_a_cluster_at_its_max_sessions_answers_new_calls_as_a_full_cluster():
    h = three()
    h.cluster.config = dataclasses.replace(h.config, max_sessions=2)
    assert h.cmd('U a 127.0.0.1 5000 ft')[0].isdigit()
    assert h.cmd('U b 127.0.0.1 5000 ft')[0].isdigit()
    offered = sum(len(session_calls(f)) for f in h.fakes.values())
    assert h.cmd('U c 127.0.0.1 5000 ft') == protocol.E_NO_CAPACITY
    assert sum(len(session_calls(f)) for f in h.fakes.values()) == offered   # nobody asked
    assert h.cmd('U c 127.0.0.1 5000 ft tt') == protocol.E_NO_CAPACITY      # a late offer too
    assert 'c' not in h.cluster.store
    assert h.cmd('U a 127.0.0.1 5002 ft')[0].isdigit()       # a known call goes on as before
    assert h.cmd('D b ft') == '0'
    assert h.cmd('U c 127.0.0.1 5000 ft')[0].isdigit()       # room again
