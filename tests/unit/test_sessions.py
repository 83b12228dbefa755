"""MemorySessionStore: the call-id → member table the cluster routes with."""
from __future__ import annotations

import pytest

from hypothesis import given, settings
from hypothesis import strategies as st

from rtp_cluster.core.sessions import DEFAULT_SESSION_TTL, MemorySessionStore


class FakeTime:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_store(ttl: float = 100.0):
    clock = FakeTime()
    unbound: list[tuple[str, str]] = []
    store = MemorySessionStore(ttl=ttl, clock=clock,
                               on_unbind=lambda cid, member: unbound.append((cid, member)))
    return store, clock, unbound


def test_bind_lookup_unbind():
    store, _, unbound = make_store()
    assert store.lookup('c1') is None
    store.bind('c1', 'm1', 'ftag', None)
    store.bind('c2', 'm2', 'f2', 't2')
    assert store.lookup('c1') == 'm1'
    assert store.lookup('c2') == 'm2'
    assert len(store) == 2 and 'c1' in store
    assert store.get('c2').from_tag == 'f2' and store.get('c2').to_tag == 't2'
    assert store.unbind('c1') == 'm1'
    assert unbound == [('c1', 'm1')]
    assert store.lookup('c1') is None
    assert store.unbind('c1') is None          # second unbind: nothing, no callback
    assert unbound == [('c1', 'm1')]
    assert len(store) == 1


def test_counts_follow_binds_rebinds_and_unbinds():
    store, _, _ = make_store()
    for i in range(10):
        store.bind('c%d' % i, 'm1' if i < 7 else 'm2')
    assert store.count('m1') == 7 and store.count('m2') == 3 and store.count('m3') == 0
    store.bind('c0', 'm1')                      # same member again: no double count
    assert store.count('m1') == 7
    store.bind('c0', 'm3')                      # re-anchored elsewhere
    assert (store.count('m1'), store.count('m3')) == (6, 1)
    assert store.lookup('c0') == 'm3'
    store.unbind('c9')
    assert store.members() == {'m1': 6, 'm2': 2, 'm3': 1}


def test_rebind_same_member_keeps_tags_and_learns_to_tag():
    store, _, _ = make_store()
    store.bind('c', 'm1', 'f', None)
    store.learn_to_tag('c', 't')
    assert store.get('c').to_tag == 't'
    store.learn_to_tag('c', 'other')            # the first answer side stays
    assert store.get('c').to_tag == 't'
    store.learn_to_tag('missing', 't')          # unknown call-id: no entry appears
    assert 'missing' not in store
    store.bind('c', 'm1', 'f', 't2')
    assert store.get('c').from_tag == 'f' and store.get('c').to_tag == 't2'


def test_drop_member_forgets_only_its_sessions():
    store, _, unbound = make_store()
    for i in range(6):
        store.bind('c%d' % i, 'm%d' % (i % 2))
    assert store.drop_member('m0') == 3
    assert store.count('m0') == 0 and store.count('m1') == 3
    assert sorted(cid for cid, _ in unbound) == ['c0', 'c2', 'c4']
    assert all(store.lookup('c%d' % i) is None for i in (0, 2, 4))
    assert all(store.lookup('c%d' % i) == 'm1' for i in (1, 3, 5))
    assert store.drop_member('m0') == 0


def test_expire_forgets_unused_sessions_only():
    store, clock, unbound = make_store(ttl=100.0)
    store.bind('old', 'm1')
    store.bind('used', 'm1')
    clock.now += 60
    store.bind('new', 'm2')
    assert store.lookup('used') == 'm1'         # a lookup refreshes the entry
    clock.now += 50                             # old: 110 s unused, used/new: 50 s
    assert store.expire() == 1
    assert unbound == [('old', 'm1')]
    assert store.lookup('old') is None
    assert store.lookup('used') == 'm1' and store.lookup('new') == 'm2'
    assert store.expire(clock.now + 1000) == 2
    assert len(store) == 0 and store.members() == {}


def test_expire_keeps_entry_refreshed_by_rebind():
    store, clock, _ = make_store(ttl=10.0)
    store.bind('a', 'm1')
    store.bind('b', 'm1')
    clock.now += 8
    store.bind('a', 'm1')                       # e.g. a re-offer: moves to the back
    clock.now += 5
    assert store.expire() == 1
    assert 'a' in store and 'b' not in store


def test_default_ttl_is_hours():
    store = MemorySessionStore()
    assert store.ttl == DEFAULT_SESSION_TTL >= 3600


def test_non_ascii_call_ids_are_distinct_keys():
    store, _, _ = make_store()
    ids = ['caf\xe9@h', 'caf\xc3\xa9@h', 'a\x85b', 'a b'.replace(' ', '\xa0')]
    for i, cid in enumerate(ids):
        store.bind(cid, 'm%d' % i)
    assert [store.lookup(cid) for cid in ids] == ['m0', 'm1', 'm2', 'm3']


operations = st.lists(st.tuples(
    st.sampled_from(['bind', 'unbind', 'lookup', 'drop', 'expire', 'tick']),
    st.integers(0, 7),               # call-id
    st.integers(0, 2)),              # member
    max_size=60)


@settings(max_examples=200, deadline=None)
@given(operations)
def test_store_matches_a_simple_model(ops):
    """Counts, lookups and unbind callbacks agree with a plain dict under any operation mix."""
    store, clock, unbound = make_store(ttl=5.0)
    model: dict[str, tuple[str, float]] = {}
    expected_unbound: list[tuple[str, str]] = []
    for op, c, m in ops:
        cid, member = 'c%d' % c, 'm%d' % m
        if op == 'bind':
            model[cid] = (member, clock.now)
            store.bind(cid, member)
        elif op == 'unbind':
            expected = model.pop(cid)[0] if cid in model else None
            if expected is not None:
                expected_unbound.append((cid, expected))
            assert store.unbind(cid) == expected
        elif op == 'lookup':
            got = store.lookup(cid)
            if cid in model:
                model[cid] = (model[cid][0], clock.now)
                assert got == model[cid][0]
            else:
                assert got is None
        elif op == 'drop':
            doomed = [k for k, v in model.items() if v[0] == member]
            assert store.drop_member(member) == len(doomed)
            for k in doomed:
                expected_unbound.append((k, model.pop(k)[0]))
        elif op == 'expire':
            doomed = [k for k, v in model.items() if v[1] <= clock.now - 5.0]
            assert store.expire() == len(doomed)
            for k in doomed:
                expected_unbound.append((k, model.pop(k)[0]))
        else:
            clock.now += 2.0
        assert len(store) == len(model)
        for name in ('m0', 'm1', 'm2'):
            assert store.count(name) == sum(1 for v in model.values() if v[0] == name)
    assert {k: v[0] for k, v in model.items()} == {k: store.lookup(k) for k in model}
    assert sorted(unbound) == sorted(expected_unbound)


# --- the SessionStore interface ------------------------------------------------------------

def test_memory_store_implements_the_whole_interface():
    from rtp_cluster.core.sessions import SESSION_AGING_INTERVAL, SessionInfo, SessionStore
    store, clock, _ = make_store()
    typed: SessionStore = store                      # what the cluster holds
    typed.bind('c1', 'm1', 'f1', None, address='udp:127.0.0.1:7001')
    clock.now += 1
    typed.bind('c2', 'm2', 'f2', 't2')
    typed.bind('c3', 'm1', 'f3', None)
    assert typed.member_counts() == {'m1': 2, 'm2': 1}
    assert typed.ownership_counts() == (3, 0)        # without sharing every session is own
    assert typed.aging_interval == SESSION_AGING_INTERVAL
    assert typed.describe('c2') == SessionInfo('c2', 'm2', 'f2', 't2', 1001.0, True, '')
    assert typed.describe('nope') is None
    assert [i.call_id for i in typed.listing()] == ['c1', 'c2', 'c3']
    assert [i.call_id for i in typed.listing('own', limit=1, offset=1)] == ['c2']
    assert typed.listing('foreign') == []
    resumed = []
    assert typed.resolve_unknown('x', lambda: resumed.append(1)) is False and resumed == []
    assert 'c1' in typed and len(typed) == 3


def test_call_ids_is_a_snapshot_in_binding_order_and_counts_need_no_walk():
    store = MemorySessionStore()
    for cid in ('a', 'b', 'c'):
        store.bind(cid, 'm1', 'ft', None)
    store.lookup('a')                                   # used again: aging order changes
    ids = store.call_ids()
    store.unbind('b')
    assert ids == ['a', 'b', 'c']                       # a copy, not a view
    assert store.ownership_counts() == (2, 0) and store.foreign_counts() == {}
    assert store.forget_foreign('a') is False and 'a' in store


def test_drop_member_without_sessions_does_not_walk_the_table():
    store = MemorySessionStore()
    store.bind('a', 'm1', 'ft', None)
    store.call_ids_of = lambda member: pytest.fail('walked the table')
    assert store.drop_member('m2') == 0


def test_entries_are_plain_tuples_the_garbage_collector_stops_tracking():
    """A full collection walks every tracked object while the event loop waits: the table's
    entries must not be among them, however they were made or changed."""
    import gc
    store, clock, _ = make_store()
    store.bind('new', 'm1', 'f', None)
    store.bind('tagged', 'm1', 'f', None)
    store.learn_to_tag('tagged', 't')
    store.bind('rebound', 'm1', 'f', None)
    store.bind('rebound', 'm1', 'f', 't2')
    store.bind('moved', 'm1', 'f', None)
    store.bind('moved', 'm2', 'f', None)
    clock.now += 1.0
    store.lookup('new')
    gc.collect()
    for call_id in ('new', 'tagged', 'rebound', 'moved'):
        entry = store.entry(call_id)
        assert type(entry) is tuple and not gc.is_tracked(entry), call_id
    assert store.get('new').last_used == clock.now
    assert store.get('rebound').to_tag == 't2' and store.get('tagged').to_tag == 't'
    assert store.get('moved').member == 'm2'


def test_a_copy_handed_out_does_not_change_the_table():
    store, clock, _ = make_store()
    store.bind('c', 'm1', 'f', None)
    seen = store.get('c')
    store.learn_to_tag('c', 't')
    assert seen.to_tag is None and store.get('c').to_tag == 't'
    assert [(c, s.member) for c, s in store.view()] == [('c', 'm1')]


def test_replace_keeps_the_aging_order_and_the_counts_per_member():
    store, clock, unbound = make_store()
    store.bind('a', 'm1', 'f', None)
    store.bind('b', 'm1', 'f', None)
    store.replace('a', ('m2',) + store.entry('a')[1:])
    assert store.call_ids() == ['a', 'b'] and [c for c, _ in store.entries()] == ['a', 'b']
    assert store.member_counts() == {'m1': 1, 'm2': 1} and unbound == []
    store.replace('b', store.get('b')._replace(to_tag='t'))   # a view is stored as a plain tuple
    assert type(store.entry('b')) is tuple and store.get('b').to_tag == 't'
    clock.now += 200.0
    assert store.expire() == 2 and store.member_counts() == {}
