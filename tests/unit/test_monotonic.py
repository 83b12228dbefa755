"""core/monotonic.py: counters that never go backwards."""
from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from rtp_cluster.core.monotonic import MonotonicTotals, RetiredTotals


def test_growing_readings_are_taken_as_they_are():
    totals = MonotonicTotals()
    assert totals.total('n') == 0
    for value in (3, 3, 10):
        totals.update('n', value)
    assert totals.total('n') == 10


def test_a_restart_carries_the_previous_reading_over():
    totals = MonotonicTotals()
    totals.update('n', 10)
    totals.update('n', 2)            # the member restarted and counted 2 since
    assert totals.total('n') == 12
    totals.update('n', 5)
    assert totals.total('n') == 15
    totals.update('n', 0)            # restarted again
    assert totals.total('n') == 15


def test_doubles_stay_doubles():
    totals = MonotonicTotals()
    totals.update('total_duration', 1.5)
    totals.update('total_duration', 0.25)
    assert totals.total('total_duration') == 1.75
    assert isinstance(totals.total('total_duration'), float)


def test_names_are_independent():
    totals = MonotonicTotals()
    totals.update('a', 5)
    totals.update('b', 1)
    totals.update('a', 1)
    assert (totals.total('a'), totals.total('b')) == (6, 1)
    assert sorted(totals.names()) == ['a', 'b']


def test_take_over_continues_the_history_of_the_same_member():
    old = MonotonicTotals()
    old.update('n', 7)
    old.update('n', 3)               # total 10, last reading 3
    same_process = MonotonicTotals()
    same_process.take_over(old)
    same_process.update('n', 4)      # one more since: not a restart
    assert same_process.total('n') == 11
    restarted = MonotonicTotals()
    restarted.update('n', 1)         # read before the take-over: counted from a new start
    restarted.take_over(old)
    assert restarted.total('n') == 11


def test_retired_totals_add_up_removed_members():
    retired = RetiredTotals()
    first, second = MonotonicTotals(), MonotonicTotals()
    first.update('n', 4)
    second.update('n', 6)
    second.update('m', 1.5)
    retired.retire(first)
    retired.retire(second)
    assert (retired.total('n'), retired.total('m'), retired.total('x')) == (10, 1.5, 0)


@given(st.lists(st.integers(min_value=0, max_value=10**9), max_size=50))
def test_the_total_never_decreases(readings):
    totals = MonotonicTotals()
    previous = 0
    for value in readings:
        totals.update('n', value)
        assert totals.total('n') >= previous
        previous = totals.total('n')
