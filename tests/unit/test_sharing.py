"""Session sharing without Redis: ownership order, SharedSessionStore, admin commands (the
records themselves: test_records.py).

Everything here is pure: fake clocks, a list as the write-behind queue, a RedisSharing that
is never started (it opens no connection before `start()`), clusters with stub member
clients that record what they are sent.
"""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import task

from tests.support.records import NS, encoded, record
from tests.support.session_tables import cluster_with
from rtp_cluster.adapters.admin import AdminCommands
from rtp_cluster.adapters.admin_sessions import BulkWork
from rtp_cluster.adapters.admin_sharing import NOT_CONFIGURED, execute_sharing_command, show
from rtp_cluster.core.config import RedisConfig
from rtp_cluster.adapters.redis_sharing import RedisSharing
from rtp_cluster.core.protocol import parse_command
from rtp_cluster.core.sharing_actions import Continue
from rtp_cluster.core import sharing as sharing_module
from rtp_cluster.core.records import DELETED_STATE, Record, decode_record
from rtp_cluster.core.sharing import (SharedSessionStore, Tombstone, key_owner, presence_key,
                                      session_key, session_prefix)


class FakeTime:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Harness:
    """A SharedSessionStore for instance `me` with fake clocks and a visible write queue."""

    def __init__(self, me='a', ttl=100.0, final_timeout=0.0, members=('m1', 'm2')) -> None:
        self.mono = FakeTime(50.0)
        self.wall = FakeTime(1_700_000_000.0)
        self.writes: list[tuple[str, dict | None]] = []
        self.unbound: list[tuple[str, str]] = []
        self.thunks: list = []          # what the store handed over, unevaluated
        self.store = SharedSessionStore(
            'test', me, NS, self._write,
            ttl=ttl, final_timeout=final_timeout, clock=self.mono, wall_clock=self.wall)
        self.store.on_unbind = lambda cid, member: self.unbound.append((cid, member))
        self.store.member_known = lambda m: m in members

    @staticmethod
    def address(member: str) -> str:
        """The control address the cluster passes when it binds `member`."""
        return 'udp:127.0.0.1:%d' % (7000 + int(member[1:]))

    def _write(self, key, thunk) -> None:
        self.thunks.append((key, thunk))
        self.writes.append((key, thunk() if thunk is not None else None))

    def last_write(self):
        return self.writes[-1]

    def decode_last(self) -> Record:
        key, mapping = self.last_write()
        return decode_record(key, NS, mapping)


# --- keys -------------------------------------------------------------------------------------

def test_keys_and_owner_of_key():
    assert session_key(NS, 'a', 'test', 'c:1') == 'rtpc:s:a:test:c:1'
    assert session_prefix(NS, 'a') == 'rtpc:s:a:'
    assert presence_key(NS, 'a') == 'rtpc:n:a'
    assert key_owner(NS, 'rtpc:s:a:test:c:1') == 'a'
    assert key_owner(NS, 'rtpc:n:a') is None
    assert key_owner(NS, 'other:s:a:test:c') is None
    assert key_owner(NS, 'rtpc:s::test:c') is None
    assert key_owner(NS, 'rtpc:s:a') is None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 4), st.integers(1, 4), st.sampled_from('bcd')),
                min_size=1, max_size=12))
def test_store_converges_to_the_highest_record_in_any_arrival_order(orders):
    """Peers' records applied in any order leave exactly the maximum (epoch, seq, owner)."""
    h = Harness(me='a')
    for epoch, seq, owner in orders:
        h.store.apply_record(record(owner=owner, epoch=epoch, seq=seq,
                                    member='m%d' % (1 + (epoch + seq) % 2)))
    best = max(orders)
    session = h.store.get('c1')
    assert (session.epoch, session.seq, session.owner) == best
    assert session.member == 'm%d' % (1 + (best[0] + best[1]) % 2)
    assert h.writes == []                  # learning peers' records never writes


# --- SharedSessionStore: own sessions ------------------------------------------------------------

def test_new_session_is_own_epoch_1_and_queued():
    h = Harness()
    h.store.bind('c1', 'm1', 'ft', None, address=h.address('m1'))
    key, mapping = h.last_write()
    assert key == 'rtpc:s:a:test:c1'
    rec = h.decode_last()
    assert (rec.owner, rec.epoch, rec.seq, rec.member, rec.ftag, rec.ttag) == (
        'a', 1, 1, 'm1', 'ft', '')
    assert rec.maddr == 'udp:127.0.0.1:7001'
    assert rec.created == pytest.approx(h.wall.now)
    assert h.store.ownership_counts() == (1, 0)


def test_learning_to_tag_bumps_seq_once():
    h = Harness()
    h.store.bind('c1', 'm1', 'ft', None)
    h.wall.now += 5
    h.store.learn_to_tag('c1', 'tt')
    rec = h.decode_last()
    assert (rec.seq, rec.ttag, rec.updated) == (2, 'tt', pytest.approx(h.wall.now))
    n = len(h.writes)
    h.store.learn_to_tag('c1', 'other')          # known already: nothing changes
    assert len(h.writes) == n and h.store.get('c1').to_tag == 'tt'


def test_records_are_built_when_written_so_coalesced_changes_cost_one_record():
    """The writer evaluates a key's thunk when it writes the key: it sees the latest state,
    and equals the Record the store would describe (the format peers decode)."""
    h = Harness()
    h.store.bind('c1', 'm1', 'ft', None, address=h.address('m1'))
    key, first = h.thunks[-1]
    h.wall.now += 3
    h.store.learn_to_tag('c1', 'tt')
    late = first()                                   # evaluated after the second change
    assert late['ttag'] == 'tt' and late['seq'] == '2'
    session = h.store.get('c1')
    rec = decode_record(key, NS, late)
    assert rec.to_mapping() == late                  # exactly the Record format peers read
    assert rec == Record('c1', 'test', 'm1', 'udp:127.0.0.1:7001', 'ft', 'tt', session.created,
                         session.updated, 'a', 1, 2)
    assert rec.order == (1, 2, 'a')


def test_delete_of_epoch_1_session_deletes_the_key():
    h = Harness()
    h.store.bind('c1', 'm1', 'ft', None)
    assert h.store.unbind('c1') == 'm1'
    assert h.last_write() == ('rtpc:s:a:test:c1', None)
    assert h.unbound == [('c1', 'm1')]
    assert len(h.store) == 0


def test_reanchor_to_another_member_bumps_epoch():
    h = Harness()
    h.store.bind('c1', 'm1', 'ft', None)
    h.store.bind('c1', 'm2', 'ft', None)
    rec = h.decode_last()
    assert (rec.member, rec.epoch, rec.seq) == ('m2', 2, 1)
    assert h.store.count('m1') == 0 and h.store.count('m2') == 1


# --- takeover ------------------------------------------------------------------------------------

def test_lookup_of_foreign_session_takes_it_over():
    h = Harness(me='a')
    assert h.store.apply_record(record(owner='b', epoch=1, seq=3, ttag='tt'))
    assert h.store.ownership_counts() == (0, 1)
    assert h.writes == []
    h.wall.now += 1
    assert h.store.lookup('c1') == 'm1'
    rec = h.decode_last()
    assert h.last_write()[0] == 'rtpc:s:a:test:c1'           # written into OUR prefix only
    assert (rec.owner, rec.epoch, rec.seq, rec.member, rec.ftag, rec.ttag) == (
        'a', 2, 1, 'm1', 'ft', 'tt')
    assert rec.created == 1000.0                               # creation time survives
    assert h.store.counters.takeovers == 1
    assert h.store.ownership_counts() == (1, 0)
    n = len(h.writes)
    h.store.lookup('c1')                                       # own now: no more writes
    assert len(h.writes) == n and h.store.counters.takeovers == 1


def test_bind_same_member_of_foreign_session_takes_over_without_duplicate():
    h = Harness(me='a')
    h.store.apply_record(record(owner='b', epoch=4, seq=2))
    h.store.bind('c1', 'm1', 'ft', None)
    rec = h.decode_last()
    assert (rec.owner, rec.epoch, rec.seq) == ('a', 5, 1)
    assert h.store.count('m1') == 1


def test_take_over_all_or_one_peer():
    h = Harness(me='a')
    for i, owner in enumerate('bbcc'):
        h.store.apply_record(record(cid='c%d' % i, owner=owner))
    h.store.bind('own', 'm1', 'f', None)
    assert h.store.take_over_all('b') == 2
    assert sorted(h.store.foreign_of('c')) == ['c2', 'c3']
    assert h.store.take_over_all() == 2
    assert h.store.ownership_counts() == (5, 0)
    assert all(key.startswith('rtpc:s:a:') for key, _ in h.writes)


def test_delete_after_takeover_writes_a_tombstone_that_outranks_the_old_key():
    h = Harness(me='a')
    h.store.apply_record(record(owner='b', epoch=1, seq=1))
    h.store.lookup('c1')                                       # epoch 2, seq 1
    h.store.unbind('c1')
    key, mapping = h.last_write()
    assert key == 'rtpc:s:a:test:c1' and mapping is not None
    tomb = decode_record(key, NS, mapping)
    assert (tomb.state, tomb.epoch, tomb.seq) == (DELETED_STATE, 2, 2)
    assert tomb.order > record(owner='b', epoch=1, seq=1).order
    # a third instance applying the tombstone drops its copy of b's record
    c = Harness(me='c')
    c.store.apply_record(record(owner='b', epoch=1, seq=1))
    assert c.store.apply_record(tomb)
    assert 'c1' not in c.store


def test_tombstone_for_unknown_call_adds_nothing():
    h = Harness(me='c')
    assert not h.store.apply_record(record(owner='a', epoch=2, seq=2, state=DELETED_STATE))
    assert len(h.store) == 0 and h.writes == []


def test_tombstone_after_an_older_record_drops_it():
    """The store applies records in arrival order; a resync, which reads a dead owner's
    stale key and the taker's tombstone in any order, filters them first (newest_records,
    tested below)."""
    h = Harness(me='c')
    h.store.apply_record(record(owner='b', epoch=1, seq=1))
    assert h.store.apply_record(record(owner='a', epoch=2, seq=2, state=DELETED_STATE))
    assert 'c1' not in h.store and h.writes == []


# --- demotion (split brain) ----------------------------------------------------------------------

def test_newer_peer_record_demotes_our_own_session_and_deletes_our_key():
    h = Harness(me='a')
    h.store.bind('c1', 'm1', 'ft', None)                       # a: epoch 1
    h.writes.clear()
    assert h.store.apply_record(record(owner='b', epoch=2, seq=1))
    assert h.writes == [('rtpc:s:a:test:c1', None)]
    assert h.store.counters.demotions == 1
    session = h.store.get('c1')
    assert (session.owner, session.epoch) == ('b', 2)
    assert h.store.ownership_counts() == (0, 1)


def test_split_brain_both_take_over_then_converge_on_the_higher_owner():
    """a and b both take over z's call at epoch 2: (2, 1, 'b') > (2, 1, 'a'), so b keeps it."""
    a, b = Harness(me='a'), Harness(me='b')
    for h in (a, b):
        h.store.apply_record(record(owner='z', epoch=1, seq=1))
        h.store.lookup('c1')
    rec_a, rec_b = a.decode_last(), b.decode_last()
    assert rec_a.epoch == rec_b.epoch == 2
    a.writes.clear()
    b.writes.clear()
    assert a.store.apply_record(rec_b)                         # a demotes
    assert not b.store.apply_record(rec_a)                     # b ignores the lower record
    assert a.writes == [('rtpc:s:a:test:c1', None)] and b.writes == []
    assert a.store.get('c1').owner == b.store.get('c1').owner == 'b'
    assert a.store.counters.demotions == 1 and b.store.counters.demotions == 0


def test_older_or_equal_records_are_ignored():
    h = Harness(me='a')
    h.store.apply_record(record(owner='b', epoch=2, seq=5, member='m2'))
    assert not h.store.apply_record(record(owner='b', epoch=2, seq=5, member='m1'))
    assert not h.store.apply_record(record(owner='b', epoch=2, seq=4, member='m1'))
    assert not h.store.apply_record(record(owner='b', epoch=1, seq=9, member='m1'))
    assert h.store.get('c1').member == 'm2'
    assert h.store.apply_record(record(owner='b', epoch=2, seq=6, member='m1'))
    assert h.store.get('c1').member == 'm1'
    assert h.store.count('m1') == 1 and h.store.count('m2') == 0


def test_lower_peer_record_does_not_demote_and_owner_breaks_ties():
    h = Harness(me='a')
    h.store.bind('c1', 'm1', 'ft', None)
    h.store.learn_to_tag('c1', 'tt')                           # ours: (1, 2, 'a')
    h.writes.clear()
    assert not h.store.apply_record(record(owner='b', epoch=1, seq=1))
    assert h.writes == [] and h.store.get('c1').owner == 'a'
    assert h.store.apply_record(record(owner='b', epoch=1, seq=2))   # (1, 2, 'b') wins the tie
    assert h.writes == [('rtpc:s:a:test:c1', None)] and h.store.get('c1').owner == 'b'


def test_unknown_member_is_counted_but_kept():
    h = Harness(me='a')
    h.store.apply_record(record(owner='b', member='m9'))
    assert h.store.counters.unknown_members == 1
    assert h.store.get('c1').member == 'm9'


# --- removal -------------------------------------------------------------------------------------

def test_apply_removal_only_when_that_peer_owns_the_session():
    h = Harness(me='a')
    h.store.apply_record(record(cid='c1', owner='b'))
    h.store.apply_record(record(cid='c2', owner='c'))
    h.store.bind('c3', 'm1', 'ft', None)
    h.writes.clear()
    assert not h.store.apply_removal('c1', 'c')                # c does not own c1
    assert not h.store.apply_removal('c3', 'b')                # our own session
    assert not h.store.apply_removal('c3', 'a')                # our own key went away
    assert not h.store.apply_removal('nope', 'b')
    assert h.store.apply_removal('c1', 'b')
    assert 'c1' not in h.store and 'c2' in h.store and 'c3' in h.store
    assert h.store.counters.removed_by_event == 1
    assert h.unbound == [('c1', 'm1')]
    assert h.writes == []                                      # removal never writes


def test_removal_of_old_owner_key_after_takeover_keeps_the_session():
    h = Harness(me='a')
    h.store.apply_record(record(owner='b', epoch=1))
    h.store.apply_record(record(owner='c', epoch=2))           # c took it over from b
    assert not h.store.apply_removal('c1', 'b')                # b's demotion DEL
    assert h.store.get('c1').owner == 'c'


def test_drop_unseen_after_resync():
    h = Harness(me='a')
    for cid in ('c1', 'c2', 'c3'):
        h.store.apply_record(record(cid=cid, owner='b'))
    h.store.apply_record(record(cid='c4', owner='c'))
    h.store.bind('own', 'm1', 'ft', None)
    since = h.mono.now + 1
    h.mono.now += 2
    h.store.apply_record(record(cid='c5', owner='b'))          # learnt after the scan began
    assert h.store.drop_unseen('b', {'c1'}, since) == 2        # c2, c3
    assert sorted(c for c, _ in h.store.items()) == ['c1', 'c4', 'c5', 'own']
    assert h.store.counters.removed_by_resync == 2
    assert h.writes[-1][0] == 'rtpc:s:a:test:own'              # nothing written by the drop


def test_drop_foreign_and_foreign_of():
    h = Harness(me='a')
    for i, owner in enumerate('bbc'):
        h.store.apply_record(record(cid='c%d' % i, owner=owner))
    h.store.bind('own', 'm1', 'ft', None)
    assert sorted(h.store.foreign_of('b')) == ['c0', 'c1']
    assert h.store.drop_foreign('b') == 2
    assert h.store.drop_foreign() == 1
    assert [c for c, _ in h.store.items()] == ['own']


def test_rewrite_all_own_and_own_keys():
    h = Harness(me='a')
    h.store.bind('x', 'm1', 'f', None)
    h.store.bind('y', 'm2', 'f', None)
    h.store.apply_record(record(cid='z', owner='b'))
    h.writes.clear()
    assert h.store.rewrite_all_own() == 2
    assert sorted(k for k, _ in h.writes) == ['rtpc:s:a:test:x', 'rtpc:s:a:test:y']
    assert sorted(h.store.own_keys()) == ['rtpc:s:a:test:x', 'rtpc:s:a:test:y']


# --- timeouts ------------------------------------------------------------------------------------

def test_ttl_expiry_of_own_and_foreign_sessions():
    h = Harness(me='a', ttl=100.0)
    h.store.bind('own', 'm1', 'f', None)
    h.store.apply_record(record(cid='foreign', owner='b'))
    h.mono.now += 50
    h.store.lookup('own')
    h.writes.clear()
    h.mono.now += 60
    assert h.store.expire() == 1                               # foreign: unused for 110 s
    assert 'foreign' not in h.store and 'own' in h.store
    assert h.writes == []                                      # a foreign expiry never writes
    h.mono.now += 101
    assert h.store.expire() == 1
    assert h.writes == [('rtpc:s:a:test:own', None)]


def test_final_timeout_ends_long_calls_by_creation_time():
    h = Harness(me='a', ttl=10_000.0, final_timeout=30.0)
    h.store.bind('old', 'm1', 'f', None)
    h.store.apply_record(record(cid='peer-old', owner='b', created=h.wall.now - 2))
    h.wall.now += 25
    h.store.bind('young', 'm1', 'f', None)
    assert h.store.expire() == 0
    h.wall.now += 10                                           # old: 35 s, peer-old: 37 s
    h.mono.now += 1
    h.store.lookup('old')                                      # being used does not help
    h.writes.clear()
    assert h.store.expire() == 2
    assert sorted(c for c, _ in h.store.items()) == ['young']
    assert h.writes == [('rtpc:s:a:test:old', None)]           # only our own key


def test_final_timeout_pass_is_sliced_and_asks_to_run_again_at_once(monkeypatch):
    monkeypatch.setattr(sharing_module, 'FINAL_SCAN_SLICE', 2)
    h = Harness(me='a', ttl=10_000.0, final_timeout=30.0)
    for n in range(5):
        h.store.bind('old%d' % n, 'm1', 'f', None)
    h.wall.now += 31
    h.store.bind('young', 'm1', 'f', None)
    ended = []
    for _ in range(3):
        ended.append(h.store.expire())
        if h.store.aging_interval != 0.0:
            break
    assert ended == [2, 2, 1]                  # 6 call-ids, 2 per slice: the third ends the pass
    assert h.store.aging_interval == 3.0
    assert sorted(c for c, _ in h.store.items()) == ['young']


def test_final_timeout_pass_skips_calls_gone_since_its_snapshot(monkeypatch):
    monkeypatch.setattr(sharing_module, 'FINAL_SCAN_SLICE', 1)
    h = Harness(me='a', ttl=10_000.0, final_timeout=30.0)
    h.store.bind('first', 'm1', 'f', None)
    h.store.bind('second', 'm1', 'f', None)
    h.wall.now += 31
    assert h.store.expire() == 1
    assert h.store.aging_interval == 0.0
    h.store.unbind('second')                   # a client's D between two slices
    assert h.store.expire() == 0
    assert h.store.aging_interval == 3.0
    assert len(h.store) == 0


def test_final_timeout_zero_disables_it():
    h = Harness(me='a', ttl=10_000.0, final_timeout=0.0)
    h.store.bind('old', 'm1', 'f', None)
    h.wall.now += 10 ** 6
    assert h.store.expire() == 0


# --- admin commands (no Redis: RedisSharing is never started) ------------------------------------


class FakeRuntime:
    def __init__(self, sharing, clusters, clock=None) -> None:
        self.sharing = sharing
        self.clusters = clusters
        self.bulk = BulkWork(clock or task.Clock())


def sharing_cluster(me='a', peers=(), clock=None):
    """A RedisSharing (no threads started) and a Cluster on its store with two online members.

    With a `clock`, the sharing layer schedules on it too (its reactor); else it has none.
    """
    sharing = RedisSharing(RedisConfig('redis://127.0.0.1:1/0', instance_id=me, peers=peers),
                           reactor=clock, client_factory=lambda: None)
    clock = clock or task.Clock()
    cluster, clients = cluster_with(sharing.store_for('test', 3600.0), 'test', clock=clock,
                                    capacity=1000)
    return sharing, cluster, clients


def queued(sharing) -> dict:
    """The writer's coalescing map as {key: thunk | None}, keys as text."""
    return {k.decode('latin-1'): v for k, v in sharing.writer._ops.items()}


def admin_setup(me='a', peers=()):
    sharing, cluster, clients = sharing_cluster(me, peers)
    runtime = FakeRuntime(sharing, {'test': cluster})
    return runtime, sharing, cluster.store, clients


def run(runtime, line):
    return execute_sharing_command(runtime, line.split())


def test_admin_not_a_sharing_command_and_not_configured():
    runtime, _, _, _ = admin_setup()
    assert run(runtime, 'ls') is None
    assert run(runtime, 'ls test') is None
    assert run(runtime, 'modify test pause m1') is None
    assert run(runtime, '') is None
    bare = FakeRuntime(None, {})
    for line in ('ksadd b', 'ksrm b', 'kslist', 'ls peers', 'ls redis', 'resync', 'takeover all'):
        assert run(bare, line) == [NOT_CONFIGURED], line
    # the session commands work without sharing (issue 17): see tests/unit/test_admin_sessions.py
    assert run(bare, 'ls numsessions') == ['Current sessions total: 0', 'OK']
    assert run(bare, 'ls sessions own') == ['OK']
    assert run(bare, 'ls session x') == ['ERROR: session "x" not found']
    assert run(bare, 'terminate all') == ['Terminated: 0', 'OK']


def test_admin_cluster_names_win_over_sharing_words():
    runtime, _, _, _ = admin_setup()
    runtime.clusters['redis'] = runtime.clusters['test']
    assert run(runtime, 'ls redis') is None
    assert run(runtime, 'ls peers')[-1] == 'OK'


def fill(store):
    store.bind('own1', 'm1', 'f1', None)
    store.bind('own2', 'm2', 'f2', 't2')
    for i in range(3):
        store.apply_record(record(cid='b%d' % i, owner='b', epoch=2, seq=1))
    store.apply_record(record(cid='c0', owner='c', member='m2'))


def test_admin_counts_and_listing():
    runtime, sharing, store, _ = admin_setup()
    fill(store)
    assert run(runtime, 'ls numsessions') == [
        'Current sessions own: 2', 'Current sessions foreign: 4', 'Current sessions total: 6',
        'OK']
    own = run(runtime, 'ls sessions own')
    assert own == ['own1 cluster=test member=m1 owner=a epoch=1 state=OWN',
                   'own2 cluster=test member=m2 owner=a epoch=1 state=OWN', 'OK']
    foreign = run(runtime, 'ls sessions foreign')
    assert len(foreign) == 5 and all(line.endswith('state=FOREIGN') for line in foreign[:-1])
    assert 'b1 cluster=test member=m1 owner=b epoch=2 state=FOREIGN' in foreign
    assert len(run(runtime, 'ls sessions')) == 7
    assert len(run(runtime, 'ls sessions all 3')) == 4
    assert len(run(runtime, 'ls sessions 1')) == 2
    assert store.ownership_counts() == (2, 4)                  # listing took nothing over


def test_admin_session_details():
    runtime, sharing, store, _ = admin_setup()
    fill(store)
    lines = run(runtime, 'ls session own2')
    text = '\n'.join(lines)
    assert lines[0] == 'Session own2:' and lines[-1] == 'OK'
    for part in ('    member = m2', '    member address = udp:127.0.0.1:7002',
                 '    from tag = f2', '    to tag = t2', '    state = OWN', '    owner = a',
                 '    epoch = 1', '    key = rtpc:s:a:test:own2', '    queued = write (active)',
                 '    written = no (queued)'):
        assert part in text
    sharing.writer._ops.clear()                                # as if the writer flushed
    assert '    written = yes' in run(runtime, 'ls session own2')
    details = run(runtime, 'ls session b1')
    assert '    state = FOREIGN' in details and '    written = by peer b' in details
    assert '    key = rtpc:s:b:test:b1' in details
    assert store.get('b1').owner == 'b'                        # no takeover by looking
    assert run(runtime, 'ls session nope') == ['ERROR: session "nope" not found']


def test_admin_terminate_own_sends_d_through_the_cluster():
    runtime, sharing, store, clients = admin_setup()
    fill(store)
    sharing.writer._ops.clear()
    assert run(runtime, 'terminate own') == ['Terminated own: 2', 'Terminated foreign: 0', 'OK']
    assert clients['m1'].sent == ['D own1 f1']
    assert clients['m2'].sent == ['D own2 f2 t2']
    assert queued(sharing) == {'rtpc:s:a:test:own1': None, 'rtpc:s:a:test:own2': None}
    assert store.ownership_counts() == (0, 4)


def test_admin_terminate_foreign_writes_nothing():
    runtime, sharing, store, clients = admin_setup()
    fill(store)
    sharing.writer._ops.clear()
    assert run(runtime, 'terminate foreign') == ['Terminated own: 0', 'Terminated foreign: 4',
                                                 'OK']
    assert queued(sharing) == {}
    assert clients['m1'].sent == clients['m2'].sent == []
    assert store.ownership_counts() == (2, 0)


def test_admin_terminate_one_and_all():
    runtime, sharing, store, clients = admin_setup()
    fill(store)
    assert run(runtime, 'terminate b1') == ['Terminated own: 0', 'Terminated foreign: 1', 'OK']
    assert 'b1' not in store and clients['m1'].sent == []
    assert run(runtime, 'terminate own1')[0] == 'Terminated own: 1'
    assert clients['m1'].sent == ['D own1 f1']
    assert run(runtime, 'terminate nope') == ['ERROR: session "nope" not found']
    assert run(runtime, 'terminate all') == ['Terminated own: 1', 'Terminated foreign: 3', 'OK']
    assert len(store) == 0


def test_admin_ksadd_ksrm_kslist():
    runtime, sharing, store, _ = admin_setup(peers=('b', 'c'))
    fill(store)
    assert run(runtime, 'kslist') == ['mode: list', 'b sessions=3', 'c sessions=1', 'OK']
    assert run(runtime, 'ksrm b') == ['Unsubscribed from b, dropped 3 foreign sessions', 'OK']
    assert store.foreign_of('b') == []
    assert run(runtime, 'kslist') == ['mode: list', 'c sessions=1', 'OK']
    assert run(runtime, 'ksadd d') == ['Subscribed to d', 'OK']
    assert 'd' in sharing.subscribed and sharing._patterns_changed.is_set()
    assert any(p.endswith(':rtpc:s:d:*') for p in sharing.patterns())
    assert not any(p.endswith(':rtpc:s:b:*') for p in sharing.patterns())


def test_admin_takeover_and_resync():
    runtime, sharing, store, _ = admin_setup()
    fill(store)
    sharing.writer._ops.clear()
    assert run(runtime, 'takeover c') == ['Took over 1 sessions', 'OK']
    assert list(queued(sharing)) == ['rtpc:s:a:test:c0']
    assert run(runtime, 'takeover all') == ['Took over 3 sessions', 'OK']
    assert store.ownership_counts() == (6, 0)
    assert all(key.startswith('rtpc:s:a:') for key in queued(sharing))
    assert run(runtime, 'resync') == ['Resync requested', 'OK']
    assert sharing._reads.get_nowait()[0] == 'resync'


def test_admin_peers_and_redis_status():
    runtime, sharing, store, _ = admin_setup()
    fill(store)
    sharing.peers['b'] = {'alive': True, 'presence': {'own_sessions': '3', 'state': 'ok',
                                                      'last_seen': '%f' % 1e10}}
    lines = run(runtime, 'ls peers')
    assert lines[0].startswith('b alive=yes last_seen=') and 'own_sessions=3' in lines[0]
    assert 'sessions_here=3 subscribed=yes' in lines[0]
    assert lines[1].startswith('c alive=no last_seen=never') and 'sessions_here=1' in lines[1]
    runtime.clusters['test'].counters.broadcasts = 7
    sharing.counters.bad_records = 2
    status = run(runtime, 'ls redis')
    for line in ('instance: a', 'state: connected', 'subscriber: disconnected', 'peers: auto',
                 'last resync: never', 'bad records: 2', 'own: 2', 'foreign: 4',
                 'broadcasts: 7', 'resyncs: 0', 'OK'):
        assert line in status
    assert 'queue depth: %d' % sharing.writer.depth in status


@pytest.mark.parametrize('line, expected', [
    ('ls numsessions x', 'ls numsessions (no arguments)'),
    ('ls sessions mine', 'ls sessions [all|own|foreign] [LIMIT]'),
    ('ls sessions own 0', 'ls sessions [all|own|foreign] [LIMIT]'),
    ('ls sessions own 5 6', 'ls sessions [all|own|foreign] [LIMIT]'),
    ('ls session', 'ls session CALLID'),
    ('ls session a b', 'ls session CALLID'),
    ('terminate', 'terminate CALLID|own|foreign|all'),
    ('terminate a b', 'terminate CALLID|own|foreign|all'),
    ('ksadd', 'ksadd PEER'),
    ('ksadd a:b', 'ksadd PEER'),
    ('ksadd a', 'ksadd PEER'),                                 # this instance itself
    ('ksrm b c', 'ksrm PEER'),
    ('kslist x', 'kslist (no arguments)'),
    ('resync b', 'resync (no arguments)'),
    ('takeover', 'takeover PEER|all'),
    ('takeover *', 'takeover PEER|all'),
    ('ls peers x', 'ls peers (no arguments)'),
    ('ls redis x', 'ls redis (no arguments)'),
])
def test_admin_bad_arguments_give_one_error_line(line, expected):
    runtime, sharing, store, _ = admin_setup()
    fill(store)
    before = store.ownership_counts()
    reply = run(runtime, line)
    assert len(reply) == 1 and reply[0].startswith('ERROR: ') and expected in reply[0], reply
    assert store.ownership_counts() == before


def test_admin_output_is_one_line_per_session_even_for_odd_call_ids():
    runtime, sharing, store, _ = admin_setup()
    store.apply_record(record(cid='evil\ncall\x00\\', owner='b'))
    lines = run(runtime, 'ls sessions')
    assert lines == ['evil\\x0acall\\x00\\\\ cluster=test member=m1 owner=b epoch=1 '
                     'state=FOREIGN', 'OK']
    assert show('x' * 500).endswith('...')


def test_admin_hook_in_admin_commands():
    runtime, sharing, store, _ = admin_setup()
    fill(store)
    commands = AdminCommands(runtime)
    assert commands.execute('ls numsessions').text() == (
        'Current sessions own: 2\nCurrent sessions foreign: 4\nCurrent sessions total: 6\nOK\n')
    assert commands.execute('ls sessions bogus').is_error
    bare = AdminCommands(FakeRuntime(None, {}))
    assert bare.execute('kslist').text() == NOT_CONFIGURED + '\n'


# --- RedisSharing, reactor side (fed by hand: no threads, no Redis) ------------------------------

from rtp_cluster.core.records import newest_records  # noqa: E402

CHANNEL = '__keyspace@0__:'


def sharing_setup(me='a', peers=()):
    sharing = RedisSharing(RedisConfig('redis://127.0.0.1:1/0', instance_id=me, peers=peers),
                           reactor=task.Clock(), client_factory=lambda: None)
    store = sharing.store_for('test', 3600.0)
    return sharing, store


def queued_reads(sharing) -> list:
    items = []
    while not sharing._reads.empty():
        items.append(sharing._reads.get_nowait())
    return items


def test_resync_does_not_bring_back_a_call_deleted_after_a_takeover():
    """b died owning c1; a took it over and deleted it (tombstone); c's resync reads both."""
    sharing, store = sharing_setup(me='c')
    sharing.state.own_load.done = True
    stale = encoded(record(cid='c1', owner='b', epoch=1, seq=1))
    tomb = encoded(record(cid='c1', owner='a', epoch=2, seq=2, state=DELETED_STATE))
    for order in ([stale, tomb], [tomb, stale]):
        sharing.state.on_records(newest_records(NS, order), 'resync')
        assert 'c1' not in store


def test_event_read_answered_before_the_delete_event_does_not_resurrect():
    sharing, store = sharing_setup(me='a')
    key, raw = encoded(record(cid='c1', owner='b'))
    sharing._on_events([(CHANNEL + key, 'hset')])
    assert queued_reads(sharing) == [('read', [key])]
    # the reader's HGETALL ran before b's DEL; the del event reaches the reactor first
    sharing._on_events([(CHANNEL + key, 'del')])
    sharing.state.on_records([(key, raw)], 'event')
    assert 'c1' not in store
    # the call is created again: its new hset is read and applied
    sharing._on_events([(CHANNEL + key, 'hset')])
    assert queued_reads(sharing) == [('read', [key])]
    sharing.state.on_records([encoded(record(cid='c1', owner='b', seq=2))], 'event')
    assert store.get('c1').seq == 2
    assert sharing.state.reads.pending_removals == {}                          # nothing in flight: forgotten


def test_resync_read_before_a_delete_event_does_not_resurrect():
    sharing, store = sharing_setup(me='a')
    sharing.state.own_load.done = True
    key, raw = encoded(record(cid='c1', owner='b'))
    sharing.request_resync()
    assert queued_reads(sharing)[0][0] == 'resync'
    sharing._on_events([(CHANNEL + key, 'del')])              # while the scan runs
    sharing.state.on_records([(key, raw), encoded(record(cid='c2', owner='b'))], 'resync')
    assert 'c1' not in store and 'c2' in store


def test_resync_skips_our_own_keys_once_loaded():
    """A resync may read an own key whose DEL is still queued: the table is the truth."""
    sharing, store = sharing_setup(me='a')
    own = encoded(record(cid='mine', owner='a'))
    sharing.state.on_records([own], 'own')                  # the start-up load
    sharing.state.on_own_loaded()
    assert store.get('mine').owner == 'a'
    store.unbind('mine')                                      # DEL queued, not flushed yet
    sharing.state.on_records([own], 'resync')                        # a resync read the old key
    assert 'mine' not in store


def test_resync_applies_own_keys_until_the_own_load_succeeded():
    sharing, store = sharing_setup(me='a')
    sharing.state.on_records([encoded(record(cid='mine', owner='a'))], 'resync')
    assert store.get('mine').owner == 'a'


def test_resync_ignores_peers_removed_with_ksrm():
    sharing, store = sharing_setup(me='a', peers=('b', 'c'))
    sharing.state.own_load.done = True
    sharing.state.on_records([encoded(record(cid='b1', owner='b')),
                              encoded(record(cid='c1', owner='c'))], 'resync')
    assert sharing.unsubscribe('b') == 1
    sharing.state.on_records([encoded(record(cid='b1', owner='b')),
                              encoded(record(cid='c1', owner='c'))], 'resync')   # the next resync
    assert 'b1' not in store and 'c1' in store


@pytest.mark.parametrize('final_timeout,interval', [(0.0, 60.0), (30.0, 3.0), (5.0, 1.0),
                                                     (3600.0, 60.0)])
def test_cluster_ages_sessions_often_enough_for_final_timeout(final_timeout, interval):
    from twisted.internet.task import Clock
    from rtp_cluster.core.cluster import Cluster
    from rtp_cluster.core.config import ClusterConfig, Endpoint
    h = Harness(me='a', ttl=10_000.0, final_timeout=final_timeout)
    clock = Clock()
    cluster = Cluster(ClusterConfig('test', Endpoint('udp', '127.0.0.1', 1), ()), clock,
                      store=h.store)
    cluster.start()
    assert [c.getTime() for c in clock.getDelayedCalls()] == [interval]
    clock.advance(interval)
    assert [c.getTime() for c in clock.getDelayedCalls()] == [2 * interval]
    cluster.stop()


# --- lookup on miss ----------------------------------------------------------------------------------

def lookup_setup():
    clock = task.Clock()
    sharing, cluster, clients = sharing_cluster(clock=clock)
    sharing.state.peers_view.discovered.add('b')
    return clock, sharing, cluster, clients


def queued_lookup(sharing):
    kind, payload = sharing._reads.get_nowait()
    assert kind == 'lookup'
    return payload


def test_stale_view_looks_the_call_up_in_redis_before_broadcasting():
    clock, sharing, cluster, clients = lookup_setup()
    sharing.state.subscriber_connected = False                 # events may have been lost
    replies = []
    cluster.handle(parse_command('D lost@h ft tt'), replies.append)
    assert replies == [] and all(c.sent == [] for c in clients.values())
    token, keys = queued_lookup(sharing)
    assert keys == ['%s:s:b:test:lost@h' % NS]
    sharing.state.on_lookup_result(token, [encoded(record(cid='lost@h', owner='b', member='m2'))])
    assert replies == ['0']
    assert clients['m2'].sent == ['D lost@h ft tt'] and clients['m1'].sent == []   # no broadcast
    assert sharing.counters.lookups_on_miss == 1


def test_lookup_on_miss_gives_up_at_its_deadline_and_only_when_stale():
    clock, sharing, cluster, clients = lookup_setup()
    sharing.state.subscriber_connected = True                  # fresh view: no lookup
    replies = []
    cluster.handle(parse_command('D x@h ft tt'), replies.append)
    assert sharing._reads.empty() and len(clients['m1'].sent) == 1   # broadcast at once
    sharing.state.subscriber_connected = False
    cluster.handle(parse_command('D y@h ft tt'), replies.append)
    queued_lookup(sharing)                               # Redis never answers
    clock.advance(0.19)
    assert len(replies) == 1
    clock.advance(0.02)
    assert len(replies) == 2                             # broadcast after the deadline
    assert clients['m1'].sent[-1] == 'D y@h ft tt'


def test_no_lookup_on_miss_while_redis_is_unreachable():
    clock, sharing, cluster, clients = lookup_setup()
    sharing.state.subscriber_connected = False
    sharing.state.on_read_failed('read', [], 'Connection refused')
    replies = []
    cluster.handle(parse_command('U new@h 127.0.0.1 5000 ft'), replies.append)
    assert sharing._reads.empty()                        # no lookup: it could only time out
    assert len(replies) == 1                             # answered at once


def test_admin_terminate_own_ends_every_media_stream():
    runtime, sharing, store, clients = admin_setup()
    store.bind('multi', 'm1', 'ft;1', 'tt;1')           # as Kamailio tags its first m-line
    assert run(runtime, 'terminate multi') == ['Terminated own: 1', 'Terminated foreign: 0', 'OK']
    assert clients['m1'].sent == ['D multi ft tt']
    assert store.get('multi') is None


def test_duplicate_instance_id_needs_a_foreign_token_after_our_own_first_write():
    """The first presence write may replace the record of our previous run (restarted within
    the presence TTL): not a duplicate.  A foreign token after that means another process
    rewrote our record since our last write."""
    sharing, store = sharing_setup()
    sharing.state.on_server('run-1', 'token-of-our-previous-run')
    assert sharing.state.duplicate == {} and not sharing.state.duplicate_active
    sharing.state.on_server('run-1', sharing.state.run_token)            # our own record: fine
    sharing.state.on_server('run-1', None)                         # expired meanwhile: fine
    assert sharing.state.duplicate == {}
    sharing.state.on_server('run-1', 'someone-else')
    assert sharing.state.duplicate['token'] == 'someone-else' and sharing.state.duplicate_active
    assert sharing.status()['duplicate']['token'] == 'someone-else'
    # while it lasts, own keys missing from our table are not deleted
    store.bind('mine', 'm1', 'ft')
    sharing.writer._ops.clear()
    sharing.state.on_own_keys(['rtpc:s:a:test:mine', 'rtpc:s:a:test:theirs'])
    assert queued(sharing) == {}
    sharing.state.write_presence()
    assert b'duplicate-id' in sharing.writer._presence
    sharing.state.duplicate['last_seen'] -= 60                      # the twin went away
    assert not sharing.state.duplicate_active and sharing.status()['duplicate'] == {}
    sharing.state.write_presence()
    assert b'duplicate-id' not in sharing.writer._presence
    sharing.state.on_own_keys(['rtpc:s:a:test:mine', 'rtpc:s:a:test:theirs'])
    assert queued(sharing) == {'rtpc:s:a:test:theirs': None}


def test_tombstone_shadows_every_other_prefix_the_call_may_still_have_a_key_in():
    """Peers known from presence, configuration or discovery, and owners only ever seen in
    records (a dead instance's keys outlive its presence); never our own prefix."""
    sharing, store = sharing_setup(peers=('b',))
    sharing.peers['c'] = {'alive': False}
    key, raw = encoded(record(cid='c1', owner='d', epoch=1))
    sharing.state.apply_raw(key, raw)                              # d: only seen in a record
    store.lookup('c1')                                        # taken over: epoch 2
    store.unbind('c1')
    write = sharing.writer.queued('rtpc:s:a:test:c1')
    assert write.shadows == ['rtpc:s:b:test:c1', 'rtpc:s:c:test:c1', 'rtpc:s:d:test:c1']
    assert write()['state'] == DELETED_STATE


def test_decoded_records_share_the_names_they_have_in_common():
    key1, raw1 = encoded(record(cid='n1', owner='b', member='m2'))
    key2, raw2 = encoded(record(cid='n2', owner='b', member='m2'))
    one, two = decode_record(key1, NS, raw1), decode_record(key2, NS, raw2)
    for name in ('owner', 'member', 'maddr', 'cluster', 'state'):
        assert getattr(one, name) is getattr(two, name), name


# --- counts kept per owner, terminated FOREIGN calls (issue 16) ---------------------------------

def scanned_counts(store) -> tuple[int, int]:
    own = sum(1 for _, s in store.table.view() if s.owner == store.instance_id)
    return own, len(store) - own


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(['bind', 'unbind', 'apply', 'delete', 'removal',
                                           'lookup', 'takeover', 'forget', 'expire']),
                          st.integers(0, 5), st.sampled_from(['b', 'c']),
                          st.integers(1, 4)), max_size=60))
def test_ownership_counts_are_kept_exactly_through_every_change(ops):
    h = Harness(ttl=30.0)
    store = h.store
    for op, n, peer, epoch in ops:
        cid = 'c%d' % n
        if op == 'bind':
            store.bind(cid, 'm1', 'ft', None)
        elif op == 'unbind':
            store.unbind(cid)
        elif op == 'apply':
            store.apply_record(record(cid=cid, owner=peer, epoch=epoch))
        elif op == 'delete':
            store.apply_record(record(cid=cid, owner=peer, epoch=epoch, state=DELETED_STATE))
        elif op == 'removal':
            store.apply_removal(cid, peer)
        elif op == 'lookup':
            store.lookup(cid)
        elif op == 'takeover':
            store.take_over_one(cid, peer)
        elif op == 'forget':
            store.forget_foreign(cid)
        else:
            h.mono.now += 20.0
            store.expire()
        assert store.ownership_counts() == scanned_counts(store), (op, cid)
        foreign: dict[str, int] = {}
        for _, s in store.table.view():
            if s.owner != 'a':
                foreign[s.owner] = foreign.get(s.owner, 0) + 1
        assert store.foreign_counts() == foreign


def test_a_terminated_foreign_call_is_not_brought_back_by_its_owners_records():
    h = Harness()
    store = h.store
    store.apply_record(record(cid='f1', owner='b', epoch=2, seq=1))
    assert store.forget_foreign('f1') is True
    assert 'f1' not in store and store.terminated_here('f1')
    assert h.unbound == [('f1', 'm1')] and h.writes == []      # the owner's key is not touched
    # a resync or an event reads the same record again, or a newer one of the same call
    assert store.apply_record(record(cid='f1', owner='b', epoch=2, seq=1)) is False
    assert store.apply_record(record(cid='f1', owner='b', epoch=2, seq=5)) is False
    assert 'f1' not in store and store.ownership_counts() == (0, 0)
    # the owner deletes it: nothing left to hide, a later call with this id is learnt again
    store.apply_removal('f1', 'b')
    assert not store.terminated_here('f1')
    assert store.apply_record(record(cid='f1', owner='b', epoch=3, seq=1)) is True


def test_a_terminated_foreign_call_is_forgotten_when_its_owner_ends_it_or_after_the_ttl():
    h = Harness(ttl=100.0)
    store = h.store
    for cid in ('f1', 'f2', 'f3'):
        store.apply_record(record(cid=cid, owner='b'))
        store.forget_foreign(cid)
    store.apply_record(record(cid='f1', owner='b', epoch=2, state=DELETED_STATE))
    assert not store.terminated_here('f1')                     # the owner's tombstone
    store.drop_unseen('b', {'f3'}, since=h.mono.now)           # a resync without f2's key
    assert not store.terminated_here('f2') and store.terminated_here('f3')
    h.mono.now += 101.0
    store.expire()
    assert not store.terminated_here('f3')
    assert store.forget_foreign('nope') is False
    store.bind('own', 'm1', 'ft', None)
    assert store.forget_foreign('own') is False and 'own' in store


def test_a_client_using_a_terminated_foreign_call_brings_it_back_as_own():
    h = Harness()
    store = h.store
    store.apply_record(record(cid='f1', owner='b'))
    store.forget_foreign('f1')
    store.bind('f1', 'm1', 'ft', None)                         # found on a member by broadcast
    assert not store.terminated_here('f1') and store.is_own('f1')


def test_take_over_one_makes_one_foreign_call_own():
    h = Harness()
    store = h.store
    store.apply_record(record(cid='f1', owner='b'))
    store.apply_record(record(cid='f2', owner='c'))
    assert store.take_over_one('f1', 'c') is False             # not c's
    assert store.take_over_one('f1', 'b') is True and store.is_own('f1')
    assert store.take_over_one('f1') is False                  # own already
    assert store.take_over_one('f2') is True
    assert store.ownership_counts() == (2, 0) and store.foreign_counts() == {}


def test_drop_member_does_not_walk_the_table_for_a_member_without_sessions():
    h = Harness()
    h.store.bind('c1', 'm1', 'ft', None)
    walked = []
    h.store.table.call_ids_of = lambda member: walked.append(member) or []
    assert h.store.drop_member('m2') == 0 and walked == []


def test_sliced_work_of_the_core_runs_on_later_reactor_turns_until_done_or_stopped():
    clock = task.Clock()
    sharing = RedisSharing(RedisConfig('redis://127.0.0.1:1/0', instance_id='a'),
                           reactor=clock, client_factory=lambda: None)
    steps = []
    sharing._carry_out(Continue(lambda: steps.append(1) or len(steps) < 3))
    assert steps == [] and len(clock.getDelayedCalls()) == 1    # not within the emitting call
    clock.advance(0)            # (a Clock runs calls made for "now" within the same advance)
    assert steps == [1, 1, 1] and clock.getDelayedCalls() == []
    sharing._carry_out(Continue(lambda: steps.append(2) or True))      # never ends by itself
    sharing.stop()
    clock.advance(0)
    assert steps == [1, 1, 1] and clock.getDelayedCalls() == []


def test_shared_entries_are_plain_tuples_the_garbage_collector_stops_tracking():
    import gc
    h = Harness()
    store = h.store
    store.bind('own', 'm1', 'ft', None)
    store.learn_to_tag('own', 'tt')
    store.apply_record(record(cid='foreign', owner='b', epoch=1))
    store.apply_record(record(cid='taken', owner='b', epoch=1))
    store.lookup('taken')                          # a client's command takes it over
    store.apply_record(record(cid='tagged', owner='b', epoch=1, ttag=''))
    store.learn_to_tag('tagged', 'late')
    gc.collect()
    for call_id in ('own', 'foreign', 'taken', 'tagged'):
        entry = store.table.entry(call_id)
        assert type(entry) is tuple and not gc.is_tracked(entry), call_id
    assert (store.get('taken').owner, store.get('taken').epoch) == ('a', 2)
    assert store.get('tagged').to_tag == 'late' and store.get('tagged').owner == 'b'


def test_a_tombstone_keeps_the_state_of_the_deleted_call_when_it_comes_back():
    """A queued write renders the call's current state while it is own; a tombstone is the
    call's last state, even if a client binds the call-id again before it is written."""
    h = Harness()
    store = h.store
    store.apply_record(record(cid='c1', owner='b', epoch=1))
    store.lookup('c1')                                   # taken over: epoch 2, seq 1
    store.unbind('c1')
    key, tombstone = h.thunks[-1]
    assert isinstance(tombstone, Tombstone)
    store.bind('c1', 'm2', 'ft2', None)                  # back, as a new own call
    assert tombstone.snapshot().order == (2, 2, 'a')
    assert tombstone.snapshot().state == DELETED_STATE and tombstone.snapshot().member == 'm1'
    _, live = h.thunks[-1]
    assert live.snapshot().member == 'm2' and live.snapshot().state == 'active'
