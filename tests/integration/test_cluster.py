"""Cluster routing, balancing and aggregation, sans-IO.

Real Member objects (health state machine included) talk to in-memory RTPproxies
(cluster_proc.FakeRtpp) through scripted clients; time is a twisted Clock.  Every fake
hands out ports in its own range, so a reply port names the member that made it.
"""
from __future__ import annotations

import random

import pytest
from twisted.internet.task import Clock

from tests.support.cluster_proc import FakeRtpp, ScriptedClient
from rtp_cluster.core import protocol
from rtp_cluster.core import cluster as cluster_mod
from rtp_cluster.core.cluster import NEW_SESSION_DEADLINE, Cluster
from rtp_cluster.core.config import ClusterConfig, Endpoint, MemberConfig
from rtp_cluster.core.member import DRAINING, OFFLINE, ONLINE, SUSPENDED, Member

CONTROL = Endpoint('udp', host='127.0.0.1', port=22222)


def run(clock: Clock, seconds: float, step: float = 0.01) -> None:
    for _ in range(max(1, int(round(seconds / step)))):
        clock.advance(step)


class Harness:
    """A cluster of fake members; `cmd()` sends one command and returns the one reply."""

    def __init__(self, specs: list[dict], capacity_limit: str = 'soft', seed: int = 1,
                 rng=None, start: bool = True) -> None:
        self.clock = Clock()
        configs = []
        for i, spec in enumerate(specs):
            configs.append(MemberConfig(
                spec.get('name', 'm%d' % (i + 1)),
                Endpoint('udp', host='127.0.0.1', port=23000 + i),
                weight=spec.get('weight', 100), capacity=spec.get('capacity', 1000),
                status=spec.get('status', 'ACTIVE'), wan_address=spec.get('wan'),
                lan_address=spec.get('lan')))
        self.config = ClusterConfig('c', CONTROL, tuple(configs), capacity_limit=capacity_limit)
        self.cluster = Cluster(self.config, self.clock,
                               rng=rng or random.Random(seed).random)
        self.removed: list[str] = []
        self.cluster.on_member_removed = lambda member: self.removed.append(member.name)
        self.fakes: dict[str, FakeRtpp] = {}
        self.clients: dict[str, ScriptedClient] = {}
        for i, (spec, config) in enumerate(zip(specs, configs)):
            fake = FakeRtpp(config.name, port_base=20000 + 10000 * i,
                            capabilities=spec.get('caps', FakeRtpp().capabilities),
                            counters=spec.get('counters'))
            client = ScriptedClient(self.clock, fake)
            self.fakes[config.name] = fake
            self.clients[config.name] = client
            self.cluster.add_member(Member(config, client, self.clock))
        self.cluster.start()
        if start:
            for member in self.cluster.members.values():
                member.start()
            run(self.clock, 0.1)
            assert all(m.state == ONLINE for m in self.cluster.members.values())

    def member(self, name: str) -> Member:
        return self.cluster.members[name]

    def send(self, text: str) -> list[str]:
        """Hand one command to the cluster; the list its replies will be appended to."""
        cmd = protocol.parse_command(text)
        assert cmd.error is None, (text, cmd.error)
        replies: list[str] = []
        self.cluster.handle(cmd, replies.append)
        return replies

    def cmd(self, text: str, settle: float = 0.02) -> str:
        replies = self.send(text)
        run(self.clock, settle, min(settle, 0.01))
        assert len(replies) == 1, (text, replies)
        return replies[0]

    def owner_of(self, reply: str) -> str:
        port = int(reply.split()[0])
        owners = [name for name, fake in self.fakes.items() if fake.owns(port)]
        assert len(owners) == 1, reply
        return owners[0]

    def take_offline(self, name: str) -> None:
        self.clients[name].silent = True
        for _ in range(500):
            run(self.clock, 0.05)
            if self.member(name).state == OFFLINE:
                return
        raise AssertionError('%s did not go offline' % name)

    def bring_online(self, name: str) -> None:
        self.clients[name].silent = False
        for _ in range(500):
            run(self.clock, 0.05)
            if self.member(name).state == ONLINE:
                return
        raise AssertionError('%s did not come back' % name)


def three(**kwargs) -> Harness:
    return Harness([{}, {}, {}], **kwargs)


def session_calls(fake: FakeRtpp) -> set[str]:
    return {protocol.parse_command(text).call_id for text in fake.session_commands}


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

def test_weighted_pick_10000_sessions_by_weight():
    h = Harness([{'weight': 100, 'capacity': 10**9}, {'weight': 50, 'capacity': 10**9},
                 {'weight': 25, 'capacity': 10**9}], seed=20240107)
    counts = dict.fromkeys(h.fakes, 0)
    for i in range(10000):
        replies = h.send('U w%d 127.0.0.1 5000 ft' % i)
        if i % 100 == 99:
            run(h.clock, 0.01)
    run(h.clock, 0.05)
    for name, fake in h.fakes.items():
        counts[name] = fake.created
    assert sum(counts.values()) == 10000
    shares = {name: n / 10000 for name, n in counts.items()}
    for name, expected in zip(('m1', 'm2', 'm3'), (100 / 175, 50 / 175, 25 / 175)):
        assert abs(shares[name] - expected) <= 0.03, shares
    assert replies and not protocol.is_error(replies[0])


def test_pick_is_proportional_to_free_capacity():
    h = Harness([{'weight': 100, 'capacity': 100}, {'weight': 100, 'capacity': 100}], seed=7)
    for i in range(75):                       # m1 75 % full, m2 empty
        h.fakes['m1'].create('pre%d' % i)
    run(h.clock, 1.1)                         # heartbeat
    assert h.member('m1').active_sessions == 75
    for i in range(40):
        h.cmd('U n%d 127.0.0.1 5000 ft' % i, settle=0.001)
    new_m1 = h.fakes['m1'].created - 75
    # scores 25 : 100 at first, m1 should get roughly a fifth, certainly less than m2
    assert new_m1 < h.fakes['m2'].created
    assert new_m1 <= 15


def test_small_member_stops_receiving_new_sessions_when_full():
    h = Harness([{'capacity': 100}, {'capacity': 1000}], seed=3)
    for i in range(300):
        h.cmd('U live%d 127.0.0.1 5000 ft' % i, settle=0.01)   # heartbeats happen meanwhile
    small, big = h.fakes['m1'], h.fakes['m2']
    assert small.created + big.created == 300
    assert small.created <= 100
    assert big.created >= 200
    for i in range(100 - len(small.sessions)):                 # fill it up outside the cluster
        small.create('direct%d' % i)
    run(h.clock, 1.1)
    before = small.created
    for i in range(100):
        h.cmd('U more%d 127.0.0.1 5000 ft' % i, settle=0.001)
    assert small.created == before
    assert len(big.sessions) >= 300


@pytest.mark.parametrize('limit', ['soft', 'hard'])
def test_capacity_limit_when_every_member_is_full(limit):
    h = Harness([{'capacity': 2}, {'capacity': 4}], capacity_limit=limit)
    replies = [h.cmd('U f%d 127.0.0.1 5000 ft' % i) for i in range(6)]
    assert all(protocol.parse_ul_reply(r) for r in replies)
    assert (h.fakes['m1'].created, h.fakes['m2'].created) == (2, 4)
    h.fakes['m1'].create('direct')              # m1 now 3 of 2 (150 %), m2 4 of 4 (100 %)
    run(h.clock, 1.1)
    reply = h.cmd('U over 127.0.0.1 5000 ft')
    if limit == 'hard':
        assert reply == protocol.E_NO_CAPACITY
        assert h.cluster.store.lookup('over') is None
    else:
        assert protocol.parse_ul_reply(reply)
        assert h.owner_of(reply) == 'm2'        # the least overloaded one
    # existing sessions still work when full
    assert protocol.parse_ul_reply(h.cmd('L f0 127.0.0.1 6000 ft tt'))


def test_no_member_online():
    h = three(start=False)
    for text in ('U c1 127.0.0.1 5000 ft', 'L c1 127.0.0.1 6000 ft tt', 'Q c1 ft tt',
                 'D c1 ft tt', 'G nsess_created', 'X'):
        assert h.cmd(text) == protocol.E_NO_MEMBER_ONLINE, text
    assert h.cmd('Ib').startswith('sessions created: 0\n')
    assert all(f.received == [] for f in h.fakes.values())


def test_version_waits_for_the_first_probe_and_then_fails_like_a_relay_not_yet_up():
    """Issue 15: no `V`/`VF` answer before the members' capabilities are known.

    Clients ask once and keep the answers; an early `0` would stick for their lifetime.
    """
    h = three(start=False)
    version, capability = h.send('V'), h.send('VF 20081224')
    run(h.clock, cluster_mod.CAPABILITY_WAIT - 0.05)
    assert version == [] and capability == []
    run(h.clock, 0.1)
    assert (version, capability) == ([protocol.E_NO_MEMBER_ONLINE], [protocol.E_NO_MEMBER_ONLINE])
    version, capability = h.send('V'), h.send('VF 20071116')
    h.member('m2').start()                      # the first probe completes during the wait
    run(h.clock, 0.1)
    assert (version, capability) == (['20040107'], ['1'])
    assert h.cmd('VF 20081224') == '0'          # remote member, no relay: see the notify tests
    assert h.cmd('VF 20050322') == '1'


def test_all_members_went_down():
    h = Harness([{}, {}])
    for name in h.fakes:
        h.take_offline(name)
    assert h.cmd('V') == '20040107'
    assert h.cmd('VF 20050322') == '1'          # from the capabilities read while online
    assert h.cmd('U c1 127.0.0.1 5000 ft') == protocol.E_NO_MEMBER_ONLINE
    assert h.cmd('L c1 127.0.0.1 6000 ft tt') == protocol.E_NO_MEMBER_ONLINE
    h.bring_online('m2')
    assert h.owner_of(h.cmd('U c1 127.0.0.1 5000 ft')) == 'm2'


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


# --- address rewriting ------------------------------------------------------------------------------

@pytest.mark.parametrize('client_cmd, member_cmd', [
    ('U c1 127.0.0.1 5000 ft', 'UL10.0.0.5 c1 127.0.0.1 5000 ft'),
    ('UAc0,8R192.0.2.1 c1 127.0.0.1 5000 ft', 'UAc0,8L10.0.0.5 c1 127.0.0.1 5000 ft'),
    ('Ul192.0.2.7 c1 127.0.0.1 5000 ft', 'UL10.0.0.5 c1 127.0.0.1 5000 ft'),
])
def test_lan_address_is_forced_on_offers(client_cmd, member_cmd):
    h = Harness([{'lan': '10.0.0.5'}])
    reply = h.cmd(client_cmd)
    assert h.fakes['m1'].session_commands == [member_cmd]
    assert reply.endswith(' 10.0.0.5')
    h.cmd('L c1 127.0.0.1 6000 ft tt')
    h.cmd('D c1 ft tt')
    assert h.fakes['m1'].session_commands[1:] == ['LL10.0.0.5 c1 127.0.0.1 6000 ft tt',
                                                  'D c1 ft tt']


def test_ipv6_lan_address_is_bracketed():
    h = Harness([{'lan': 'fd00::5'}])
    h.cmd('U6 c1 ::1 5000 ft')
    assert h.fakes['m1'].session_commands == ['U6L[fd00::5] c1 ::1 5000 ft']


def test_wan_address_replaces_the_reply_address():
    h = Harness([{'wan': '203.0.113.9', 'lan': '10.0.0.5'}, {'wan': '198.51.100.1'}],
                rng=lambda: 0.0)
    reply = h.cmd('U c1 127.0.0.1 5000 ft')
    assert reply == '20002 203.0.113.9'
    assert h.cmd('L c1 127.0.0.1 6000 ft tt') == '25002 203.0.113.9'
    assert h.cmd('Q c1 ft tt') == '60 0 0 0 0'      # other replies untouched
    h.take_offline('m1')
    assert h.cmd('U c2 127.0.0.1 5000 ft') == '30002 198.51.100.1'


def test_lookup_through_broadcast_gets_the_wan_address_too():
    h = Harness([{'wan': '203.0.113.9'}, {}])
    port = h.fakes['m1'].create('x@h', 'ft')
    assert h.cmd('L x@h 127.0.0.1 6000 ft tt') == '%d 203.0.113.9' % (port + 5000)


@pytest.mark.parametrize('code', ['E7', 'E8', 'E9', 'E10'])
def test_node_disabling_error_codes_are_not_passed_to_the_client(code):
    h = Harness([{}])
    h.clients['m1'].override = lambda text: code if text.startswith(('U', 'L')) else None
    reply = h.cmd('U c1 127.0.0.1 5000 ft')
    assert reply.startswith('E') and reply not in ('E7', 'E8', 'E9', 'E10')
    assert h.cluster.store.lookup('c1') is None     # a failed offer binds nothing


def test_member_error_on_offer_is_passed_and_not_bound():
    h = Harness([{}])
    h.clients['m1'].override = lambda text: 'E72' if text.startswith('U') else None
    assert h.cmd('U c1 127.0.0.1 5000 ft') == 'E72'
    assert len(h.cluster.store) == 0


# --- aggregation -------------------------------------------------------------------------------------

def test_info_is_the_sum_of_online_members():
    h = three()
    for i, fake in enumerate(h.fakes.values()):
        for j in range(i + 1):
            fake.create('i%d_%d' % (i, j))
        fake.packets = (100 * (i + 1), 10 * (i + 1))
    run(h.clock, 1.1)
    info = protocol.parse_info(h.cmd('Ib'))
    assert info == {'sessions created': 6, 'active sessions': 6, 'active streams': 12,
                    'packets received': 600, 'packets transmitted': 60}
    assert h.cmd('Il').endswith('\naverage load: 0.000000')
    assert protocol.parse_info(h.cmd('I')) == info
    h.take_offline('m3')
    info = protocol.parse_info(h.cmd('Ib'))
    # gauges drop with the member; counters keep its last values (issue 15)
    assert info['active sessions'] == 3 and info['packets received'] == 600
    assert info['sessions created'] == 6


def test_stats_sum_ints_and_doubles_in_request_order():
    h = Harness([{'counters': {'nsess_created': 5, 'total_duration': 1.5, 'pps_in': 0.25}},
                 {'counters': {'nsess_created': 7, 'total_duration': 2.25, 'pps_in': 0.5}}])
    assert h.cmd('G nsess_created total_duration') == '12 3.750000'
    assert h.cmd('Gv total_duration nsess_created pps_in') == \
        'total_duration=3.750000 nsess_created=12 pps_in=0.750000'
    assert h.cmd('G') == ''
    assert h.cmd('G nosuch') == 'E68'
    # the members are asked with the plain form and the cluster formats the reply itself
    assert 'G total_duration nsess_created pps_in' in h.fakes['m1'].received


def test_stats_use_cached_values_of_a_member_that_does_not_answer():
    h = Harness([{'counters': {'nsess_created': 5, 'total_duration': 1.5}},
                 {'counters': {'nsess_created': 7, 'total_duration': 2.25}}])
    assert h.cmd('Gv nsess_created total_duration') == 'nsess_created=12 total_duration=3.750000'
    h.fakes['m1'].counters['nsess_created'] = 6
    h.clients['m2'].silent = True
    replies = h.send('G nsess_created total_duration')
    run(h.clock, 1.5)
    assert replies == ['13 3.750000']
    h.clients['m2'].silent = False
    h.clients['m2'].override = lambda text: 'garbage' if text.startswith('G') else None
    assert h.cmd('G nsess_created total_duration') == '13 3.750000'


def test_stats_with_one_member_offline_count_only_online_members():
    h = Harness([{'counters': {'nsess_created': 5}}, {'counters': {'nsess_created': 7}}])
    h.take_offline('m1')
    assert h.cmd('G nsess_created') == '7'


def test_capability_answer_requires_every_online_member():
    caps = FakeRtpp().capabilities
    h = Harness([{}, {'caps': caps - {'20191015'}}])
    assert h.cmd('VF 20191015') == '0'
    assert h.cmd('VF 20050322') == '1'
    assert h.cmd('VF 20040107') == '1'
    assert h.cmd('VF 20170313') == '0'
    assert h.cmd('VF 19990101') == '0'
    assert all(not any(t == 'VF 20191015' for t in f.received[-3:]) for f in h.fakes.values())
    h.take_offline('m2')
    # m2 gets sessions again when it is back: still not promised (issue 15; was '1')
    assert h.cmd('VF 20191015') == '0'
    h.cluster.drain_member('m2')                # removed: it will never get a session
    assert 'm2' not in h.cluster.members
    assert h.cmd('VF 20191015') == '1'


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


def test_stats_with_every_member_silent_and_nothing_cached():
    h = Harness([{'counters': {'nsess_created': 1}}, {'counters': {'nsess_created': 2}}])
    for client in h.clients.values():
        client.silent = True
    replies = h.send('G nsess_created')
    run(h.clock, 1.5)
    assert replies == [protocol.E_STATS_ALL_FAILED]


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

def test_counters_survive_offline_removed_and_restarted_members():
    h = Harness([{'counters': {'nsess_created': 5, 'total_duration': 1.5, 'pps_in': 2.0}},
                 {'counters': {'nsess_created': 7, 'total_duration': 2.0, 'pps_in': 3.0}}])
    for i, fake in enumerate(h.fakes.values()):
        for j in range(3 + i):
            fake.create('c%d_%d' % (i, j))
        fake.packets = (100, 50)
    run(h.clock, 1.1)
    seen = [protocol.parse_info(h.cmd('Ib'))]
    assert h.cmd('G nsess_created total_duration pps_in') == '12 3.500000 5.000000'
    h.take_offline('m2')
    seen.append(protocol.parse_info(h.cmd('Ib')))
    assert h.cmd('G nsess_created total_duration pps_in') == '12 3.500000 2.000000'  # rate drops
    h.cluster.drain_member('m2')                       # no sessions bound: removed at once
    assert h.removed == ['m2']
    seen.append(protocol.parse_info(h.cmd('Ib')))
    fake = h.fakes['m1']                               # m1 restarts: its counters begin anew
    fake.sessions.clear()
    fake.created, fake.packets, fake.counters['nsess_created'] = 1, (10, 5), 1
    fake.create('after-restart')
    run(h.clock, 1.1)
    seen.append(protocol.parse_info(h.cmd('Ib')))
    assert h.cmd('G nsess_created') == '13'
    for name in protocol.INFO_COUNTERS:
        values = [info[name] for info in seen]
        assert values == sorted(values), (name, values)
    assert [info['sessions created'] for info in seen] == [7, 7, 7, 9]
    assert [info['active sessions'] for info in seen] == [7, 3, 3, 1]  # a gauge
