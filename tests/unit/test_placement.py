"""Which member gets a new session: weight × free capacity, capacity limits (core/placement.py).

Real Member objects talk to in-memory RTPproxies (tests/support/cluster_harness.py);
time is a twisted Clock.
"""
from __future__ import annotations

import pytest

from tests.support.cluster_harness import Harness, run
from rtp_cluster.core import protocol
from rtp_cluster.core.placement import pick_member


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


# --- the pick itself, without a cluster ----------------------------------------------------------

class _Candidate:
    def __init__(self, name: str, weight: int, used: float, status: str = 'ACTIVE',
                 online: bool = True) -> None:
        self.name, self.weight, self._used = name, weight, used
        self.status, self.online = status, online

    def utilisation(self) -> float:
        return self._used


def test_pick_member_skips_excluded_suspended_and_offline_members():
    members = [_Candidate('a', 100, 0.0), _Candidate('b', 100, 0.0, status='SUSPENDED'),
               _Candidate('c', 100, 0.0, online=False), _Candidate('d', 100, 0.0)]
    picks = {pick_member(members, rng, True, exclude={'a'}).name
             for rng in (lambda: 0.0, lambda: 0.5, lambda: 0.999)}
    assert picks == {'d'}


def test_pick_member_when_all_are_full_depends_on_the_limit():
    members = [_Candidate('a', 100, 1.2), _Candidate('b', 100, 1.05)]
    assert pick_member(members, lambda: 0.5, soft_limit=True).name == 'b'
    assert pick_member(members, lambda: 0.5, soft_limit=False) is None


def test_pick_member_threshold_walks_the_scores_in_order():
    members = [_Candidate('a', 30, 0.0), _Candidate('b', 70, 0.0)]
    assert pick_member(members, lambda: 0.29, True).name == 'a'
    assert pick_member(members, lambda: 0.31, True).name == 'b'
