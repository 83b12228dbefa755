"""Bookkeeping of the sharing core (rtp_cluster/core/sharing_views.py): peers, read order."""
from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from rtp_cluster.core.sharing_actions import Identity
from rtp_cluster.core.sharing_views import PeerView, ReadOrder


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
    view.presence('c', {'state': 'ok'}, 1.0)
    view.gone(['b'])
    assert view.info == {'b': {'alive': False, 'last_event': 5.0},
                         'c': {'alive': True, 'presence': {'state': 'ok'}}}
    assert view.known() == {'b', 'c'}


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
