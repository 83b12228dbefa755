"""core/bulk.py: walking the session tables in slices, and terminate as a sliced job."""
from __future__ import annotations

from rtp_cluster.core.bulk import (GroupedWalk, SessionWalk, TakeoverJob, TerminateJob,
                                   count_sessions)
from rtp_cluster.core.sessions import MemorySessionStore
from rtp_cluster.core.records import Record
from tests.support.session_tables import RecordingClient, cluster_with, filled, shared


def test_a_walk_visits_every_session_once_in_slices_of_the_size_asked():
    walk = SessionWalk([('x', filled(25)), ('y', MemorySessionStore()), ('z', filled(7, 'z'))])
    assert walk.left() == 32
    seen = []
    sizes = []
    while not walk.done:
        found = walk.next_slice(10)
        sizes.append(len(found))
        seen += [(name, info.call_id) for name, info in found]
    assert sizes == [10, 10, 10, 2]
    assert len(seen) == len(set(seen)) == 32
    assert seen[:2] == [('x', 'c0'), ('x', 'c1')] and seen[-1] == ('z', 'z6')
    assert walk.left() == 0 and walk.visited == 32


def test_a_walk_skips_sessions_gone_and_does_not_visit_sessions_bound_after_its_snapshot():
    store = filled(10)
    walk = SessionWalk([('x', store)])
    first = [info.call_id for _, info in walk.next_slice(3)]
    store.unbind('c5')
    store.bind('late', 'm1', 'ft', None)
    rest = [info.call_id for _, info in walk.next_slice(100)]
    assert first == ['c0', 'c1', 'c2']
    assert rest == ['c3', 'c4', 'c6', 'c7', 'c8', 'c9'] and walk.done


def test_a_walk_selects_own_or_foreign_and_counts_come_from_the_store():
    store = shared(own=3, foreign=4)
    assert [count_sessions(store, w) for w in ('all', 'own', 'foreign')] == [7, 3, 4]
    own = SessionWalk([('c', store)], 'own').next_slice(100)
    foreign = SessionWalk([('c', store)], 'foreign').next_slice(100)
    assert sorted(i.call_id for _, i in own) == ['own0', 'own1', 'own2']
    assert sorted(i.call_id for _, i in foreign) == ['f0', 'f1', 'f2', 'f3']
    assert all(i.own for _, i in own) and not any(i.own for _, i in foreign)


def test_a_walk_does_not_snapshot_a_store_without_selected_sessions():
    calls = []

    class Spy(MemorySessionStore):
        def call_ids(self):
            calls.append(1)
            return super().call_ids()

    walk = SessionWalk([('x', Spy())], 'all')
    assert walk.next_slice(10) == [] and walk.done and calls == []
    store = Spy()
    store.bind('c1', 'm1', 'ft', None)
    assert SessionWalk([('x', store)], 'foreign').next_slice(10) == [] and calls == []


def test_a_grouped_walk_hands_each_slice_over_by_store_and_ends_once():
    x, z = filled(5), filled(4, 'z')
    visits, ends = [], []
    walk = GroupedWalk([('x', x), ('z', z)], lambda name, infos: visits.append(
        (name, [i.call_id for i in infos])), lambda: ends.append(1), size=4)
    assert walk.step() and visits == [('x', ['c0', 'c1', 'c2', 'c3'])] and ends == []
    x.unbind('c4')                                      # gone before its slice: skipped
    assert walk.step() and visits[1:] == [('z', ['z0', 'z1', 'z2'])]
    assert not walk.step() and visits[2:] == [('z', ['z3'])] and ends == [1]


def test_a_grouped_walk_of_own_sessions_and_of_nothing():
    store = shared(own=3, foreign=4)
    visits, ends = [], []
    walk = GroupedWalk([('c', store)], lambda name, infos: visits.append(len(infos)),
                       lambda: ends.append(1), which='own', size=100)
    assert not walk.step() and visits == [3] and ends == [1]
    empty = GroupedWalk([('c', MemorySessionStore())], lambda *a: visits.append(a),
                        lambda: ends.append(2))
    assert not empty.step() and visits == [3] and ends == [1, 2]


def test_terminate_job_ends_a_slice_per_step_with_the_d_a_client_would_send():
    cluster, clients = cluster_with(filled(250))
    job = TerminateJob({'c': cluster}, 'all')
    assert job.total == 250 and job.left() == 250
    assert job.step(100) is True
    assert job.own_done == 100 and len(cluster.store) == 150 and job.left() == 150
    assert clients['m1'].sent[0] == 'D c0 ft0' and clients['m2'].sent[0] == 'D c1 ft1'
    assert job.step(100) is True and job.step(100) is False
    assert job.done and job.own_done == 250 and len(cluster.store) == 0
    assert len(clients['m1'].sent) + len(clients['m2'].sent) == 250


def test_terminate_job_forgets_foreign_sessions_without_telling_members():
    cluster, clients = cluster_with(shared(own=2, foreign=3))
    job = TerminateJob({'c': cluster}, 'foreign')
    assert job.total == 3
    while job.step(2):
        pass
    assert (job.own_done, job.foreign_done) == (0, 3)
    assert clients['m1'].sent == clients['m2'].sent == []
    assert cluster.store.ownership_counts() == (2, 0)
    assert all(cluster.store.terminated_here('f%d' % i) for i in range(3))


def test_terminate_job_leaves_a_cluster_alone_once_it_is_replaced_or_removed():
    first, first_clients = cluster_with(filled(5), 'a')
    second, second_clients = cluster_with(filled(5), 'b')
    live = {'a': first, 'b': second}
    job = TerminateJob(live, 'all')
    del live['b']                                        # a reload removed cluster b
    while job.step(3):
        pass
    assert job.own_done == 5 and len(second.store) == 5
    assert second_clients['m1'].sent == second_clients['m2'].sent == []


class SilentClient:
    """A member client whose commands all time out (the callback gets None)."""
    rtt = None

    def __init__(self) -> None:
        self.sent: list[str] = []

    def send(self, text, callback, timeout=None):
        self.sent.append(text)
        callback(None)

    def close(self):
        pass


def test_an_operator_terminate_sends_its_d_without_a_client_deadline_timer():
    cluster, clients = cluster_with(filled(3))
    refused = []
    assert cluster.terminate_session('c0', lambda cmd, reply: refused.append((cmd, reply)))
    assert clients['m1'].sent == ['D c0 ft0'] and 'c0' not in cluster.store
    assert cluster.clock.getDelayedCalls() == [] and refused == []
    assert cluster.terminate_session('c0') is False


def test_an_operator_terminate_hears_of_a_member_that_does_not_answer():
    cluster, clients = cluster_with(filled(2), client=SilentClient)
    refused = []
    assert cluster.terminate_session('c1', lambda cmd, reply: refused.append((cmd, reply)))
    assert clients['m2'].sent == ['D c1 ft1'] and refused == [('D c1 ft1', 'E997')]
    assert cluster.counters.member_timeouts == 1 and 'c1' not in cluster.store


def test_takeover_job_takes_over_a_peers_sessions_a_slice_at_a_time():
    store = shared(own=2, foreign=5)
    for i in range(3):
        store.apply_record(Record('g%d' % i, 'c', 'm2', '', 'ft', '', 1.0, 1.0, 'z', 1, 1))
    job = TakeoverJob({'c': store}, 'b')
    assert job.total == 5 and job.name == 'takeover b'
    assert job.step(4) is True and job.taken <= 4
    while job.step(4):
        pass
    assert job.taken == 5 and store.foreign_counts() == {'z': 3}
    everything = TakeoverJob({'c': store}, None)
    assert everything.total == 3 and everything.step(100) is False and everything.taken == 3
    assert store.ownership_counts() == (10, 0)


class WipingClient(RecordingClient):
    """Answers X (delete every session) with 0 too."""

    def send(self, text, callback, timeout=None):
        self.sent.append(text)
        callback('0' if text[:1] in 'DX' else 'E1')


def test_after_a_members_x_its_sessions_are_forgotten_a_slice_per_turn():
    from rtp_cluster.core.cluster import FORGET_SLICE
    from rtp_cluster.core.protocol import parse_command
    cluster, clients = cluster_with(filled(3 * FORGET_SLICE), client=WipingClient)
    replies = []
    cluster.handle(parse_command('X'), replies.append)
    assert replies == ['0']
    assert 0 < len(cluster.store) < 3 * FORGET_SLICE            # the first slice only
    turns = 0
    clock = cluster.clock
    while clock.calls and turns < 100:       # one delayed call per turn, as a reactor runs them
        call = clock.calls.pop(0)
        call.called = 1
        call.func(*call.args, **call.kw)
        turns += 1
    assert len(cluster.store) == 0 and turns >= 2
