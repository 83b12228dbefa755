"""Bookkeeping of the sharing core (rtp_cluster/core/sharing_views.py): peers, read order."""
from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from rtp_cluster.core.sharing_actions import Identity
from rtp_cluster.core.sharing_actions import ListOwn, Log, Resume, WhenFlushed
from rtp_cluster.core.sharing_views import (MissLookups, OwnRewrite, PeerView, ReadOrder,
                                            ServerLink, SharedStores)
from tests.support.session_tables import shared


def test_automatic_peers_follow_what_they_discover_and_never_themselves():
    view = PeerView(Identity('a', 'rtpc'), 'a')
    assert view.auto and view.follows('anyone')
    assert view.discover('b') and not view.discover('b') and not view.discover('a')
    assert view.followed() == {'b'}


def test_configured_peers_and_ksrm_in_auto_mode_pin_the_list():
    view = PeerView(Identity('a', 'rtpc', peers=('b',)), 'a')
    assert not view.auto and view.follows('b') and not view.follows('c')
    assert not view.discover('c')
    auto = PeerView(Identity('a', 'rtpc'), 'a')
    auto.presence('b', {}, 1.0)
    auto.presence('c', {}, 1.0)
    auto.unsubscribe('b')                       # leaves auto mode with every other peer
    assert not auto.auto and auto.subscribed == {'c'}
    assert not auto.follows('b') and auto.follows('c')


def test_peers_without_presence_after_a_resync_are_not_alive():
    view = PeerView(Identity('a', 'rtpc'), 'a')
    view.seen('b', True, 5.0)
    assert view.after_resync({'c': {'state': 'ok'}}, 'run1', 1.0) == []
    assert view.info == {'b': {'alive': False, 'last_event': 5.0},
                         'c': {'alive': True, 'presence': {'state': 'ok'}}}
    assert view.known() == {'b', 'c'}
    assert view.unsynced == {'b', 'c'}      # neither has rewritten into run1


def test_only_peers_that_name_this_redis_run_are_synced_after_a_resync():
    view = PeerView(Identity('a', 'rtpc'), 'a')
    presences = {'a': {'synced_run_id': 'run1'}, 'b': {'synced_run_id': 'run1'},
                 'c': {'synced_run_id': 'run0'}, 'd': {}}
    assert view.after_resync(presences, 'run1', 2.0) == ['b']
    assert view.unsynced == {'c', 'd'} and 'a' not in view.info
    assert view.after_resync(presences, '', 3.0) == []      # no run id known: nobody
    assert view.unsynced == {'b', 'c', 'd'}


def test_a_removal_outranks_a_read_issued_before_it_only():
    order = ReadOrder()
    order.dirty.update({'k1', 'k2'})
    assert order.next_read() == ['k1', 'k2']
    issued = order.issued('event')
    assert order.next_read() == []                # one read in flight
    order.removed('k1')
    assert order.removed_since('k1', issued) and not order.removed_since('k2', issued)
    order.read_done()
    assert order.pending_removals == {}           # nothing in flight: nothing to outrank


def test_resync_requests_while_one_runs_coalesce_into_one_more():
    order = ReadOrder()
    assert order.start_resync()
    assert not order.start_resync() and not order.start_resync()
    assert order.resync_done()                    # one more, not two
    assert order.start_resync()
    assert not order.resync_done()
    order.start_resync()
    order.resync_failed()
    assert not order.resync_running and order.resync_pending


@given(st.lists(st.tuples(st.sampled_from(['dirty', 'read', 'done', 'remove', 'resync',
                                           'resync_done']),
                          st.sampled_from(['k1', 'k2', 'k3'])), max_size=80))
def test_removals_are_kept_only_while_a_read_they_outrank_is_in_flight(steps):
    order = ReadOrder()
    for step, key in steps:
        if step == 'dirty':
            order.dirty.add(key)
        elif step == 'read':
            order.next_read()
        elif step == 'done' and order.read_in_flight:
            order.read_done()
        elif step == 'remove':
            order.removed(key)
        elif step == 'resync':
            order.start_resync()
        elif step == 'resync_done' and order.resync_running:
            order.resync_done()
        if not order.read_in_flight and not order.resync_running:
            assert order.pending_removals == {}   # nothing left to outrank: nothing kept
    if order.read_in_flight:
        order.read_done()
    while order.resync_running:
        order.resync_done()
    assert order.pending_removals == {}


def test_own_load_remembers_deletes_only_until_it_is_done_and_boundedly():
    from rtp_cluster.core.sharing_views import MAX_ENDED_WHILE_LOADING, OwnLoad
    load = OwnLoad()
    load.ended('test', 'c1')
    assert load.take_ended('test', 'c1') and not load.take_ended('test', 'c1')   # once
    for i in range(MAX_ENDED_WHILE_LOADING + 10):
        load.ended('test', 'x%d' % i)
    assert load.take_ended('test', 'x0') and not load.take_ended('test', 'x%d' % (
        MAX_ENDED_WHILE_LOADING + 5))                 # beyond the bound: not remembered
    load.complete()
    load.ended('test', 'late')
    assert load.done and not load.take_ended('test', 'late') and not load.take_ended('test', 'x1')


def test_duplicate_watch_ignores_our_previous_run_and_expired_records():
    from rtp_cluster.core.sharing_views import DUPLICATE_WINDOW, DuplicateWatch
    watch = DuplicateWatch('ours')
    assert not watch.after_presence_write('previous-run', 0.0)
    assert not watch.after_presence_write(None, 1.0) and not watch.after_presence_write('ours', 2.0)
    assert watch.after_presence_write('twin', 3.0)             # logged
    assert not watch.after_presence_write('twin', 4.0)         # not again within a minute
    assert watch.active(3.0 + DUPLICATE_WINDOW - 1) and not watch.active(4.0 + DUPLICATE_WINDOW)


def test_the_server_link_degrades_after_errors_in_a_row_and_logs_each_change_once():
    link = ServerLink(degraded_after=2)
    assert link.write_failed('e1') == [] and not link.degraded
    assert link.write_ok() == [] and link.write_errors == 0       # not in a row
    assert link.write_failed('e1') == []
    [log] = link.write_failed('e2')
    assert link.degraded and log.level == 'warn' and log.fields['reason'] == 'e2'
    assert link.write_failed('e3') == []                         # already degraded
    [log] = link.write_ok()
    assert not link.degraded and log.fields == {'event': 'redis_state', 'old': 'degraded',
                                                 'new': 'connected'}


def test_the_server_link_rewrites_for_a_new_run_or_a_new_master_only():
    link = ServerLink(degraded_after=1)
    assert link.needs_rewrite('run1')
    assert link.new_server('run1') == []                   # the first server: nothing to say
    assert not link.needs_rewrite('run1')
    link.synced_run_id = 'run1'
    [log] = link.new_master('READONLY')
    assert link.needs_rewrite('run1') and link.synced_run_id == '' and log.level == 'warn'
    assert link.new_master('switch') == [] and link.rewrite_due == 'switch'
    [log] = link.new_server('run2')
    assert 'master' in log.text and link.rewrite_due == '' and link.redis_run_id == 'run2'
    [log] = link.new_server('run3')                        # restarted under us
    assert 'restarted' in log.text and isinstance(log, Log)


class _Store:
    def __init__(self, own: int, foreign: dict[str, set[str]]) -> None:
        self.own, self.foreign = own, foreign

    def ownership_counts(self) -> tuple[int, int]:
        return self.own, sum(len(ids) for ids in self.foreign.values())

    def own_keys(self) -> list[str]:
        return ['k%d' % i for i in range(self.own)]

    def foreign_counts(self) -> dict[str, int]:
        return {peer: len(ids) for peer, ids in self.foreign.items()}

    def drop_unseen(self, peer: str, seen: set[str], since: float) -> int:
        ids = self.foreign.get(peer, set())
        gone = ids - seen
        ids -= gone
        return len(gone)


def test_shared_stores_add_up_every_cluster():
    stores = SharedStores(one=_Store(2, {'b': {'x', 'y'}}), two=_Store(1, {'b': {'z'},
                                                                         'c': {'w'}}))
    assert stores.ownership_counts() == (3, 4) and stores.own_count() == 3
    assert len(stores.own_keys()) == 3
    # cluster `one` saw y only, cluster `two` saw nothing of b
    assert stores.drop_unseen('b', {('b', 'one'): {'y'}}, 0.0) == 2
    assert stores.ownership_counts() == (3, 2)
    assert stores.foreign_count('b') == 1 and stores.foreign_count('c') == 1
    assert stores.foreign_count('nobody') == 0


def test_a_lookup_on_miss_resumes_its_command_once():
    lookups = MissLookups()
    resumed = []
    first = lookups.start(lambda: resumed.append('first'))
    second = lookups.start(lambda: resumed.append('second'))
    assert first != second and len(lookups) == 2
    [resume] = lookups.finish(second)
    assert isinstance(resume, Resume) and lookups.finish(second) == []    # the deadline, late
    resume.then()
    assert resumed == ['second'] and len(lookups) == 1


def test_a_rewrite_counts_what_it_wrote_and_a_cancelled_one_stops():
    written = []
    store = shared(own=3, foreign=2)
    store.write = lambda key, op: written.append(key)
    stores = SharedStores(c=store)
    job = OwnRewrite(stores, 'run-12345678')
    infos = store.listing('all')
    job.visit('c', infos)                               # the foreign ones are not ours
    assert job.rewritten == 3 and written == ['ns:s:a:c:own0', 'ns:s:a:c:own1', 'ns:s:a:c:own2']
    flushed, listed, log = job.finished()
    assert flushed == WhenFlushed('run-12345678') and listed == ListOwn()
    assert log.fields == {'n': 3, 'run': 'run-1234'}
    job.cancelled = True
    job.visit('c', infos)
    assert job.rewritten == 3 and len(written) == 3 and job.finished() == []
