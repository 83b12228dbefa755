"""adapters/gc_pauses.py: every collection of the garbage collector timed by generation."""
from __future__ import annotations

import gc

import pytest

from rtp_cluster.adapters.gc_pauses import GENERATIONS, GCPauses


class SteppingClock:
    """A clock that advances `step` seconds at every reading."""

    def __init__(self, step: float) -> None:
        self.now = 0.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


@pytest.fixture
def recorder():
    pauses = GCPauses()
    pauses.install()
    yield pauses
    pauses.remove()


def test_each_collection_is_timed_in_the_histogram_of_its_generation(recorder):
    before = [h.count for h in recorder.histograms]
    gc.collect(2)
    gc.collect(0)
    after = [h.count for h in recorder.histograms]
    assert after[2] - before[2] == 1
    assert after[0] - before[0] >= 1     # and any young pass the test's own allocations caused
    assert recorder.histograms[2].sum > 0.0 and recorder.longest[2] > 0.0
    assert recorder.cpu_seconds[2] > 0.0


def test_the_pause_is_the_time_between_start_and_stop():
    pauses = GCPauses(clock=SteppingClock(0.25), cpu_clock=SteppingClock(0.01))
    pauses('start', {'generation': 1})
    pauses('stop', {'generation': 1, 'collected': 0, 'uncollectable': 0})
    assert pauses.histograms[1].count == 1
    assert pauses.histograms[1].sum == pytest.approx(0.25)
    assert pauses.longest == [0.0, 0.25, 0.0]
    assert pauses.cpu_seconds == [0.0, pytest.approx(0.01), 0.0]
    # 0.25 s lands in the bucket bounded by 0.25, not a shorter one
    assert dict(pauses.histograms[1].cumulative())[0.1] == 0
    assert dict(pauses.histograms[1].cumulative())[0.25] == 1


def test_a_stop_without_its_start_is_not_counted():
    pauses = GCPauses(clock=SteppingClock(1.0))
    pauses('stop', {'generation': 2})
    assert [h.count for h in pauses.histograms] == [0] * GENERATIONS


def test_install_is_idempotent_and_remove_takes_it_out():
    pauses = GCPauses()
    try:
        pauses.install()
        pauses.install()
        assert sum(1 for hook in gc.callbacks if hook is pauses) == 1
    finally:
        pauses.remove()
    assert not pauses.installed
    count = pauses.histograms[2].count
    gc.collect()
    assert pauses.histograms[2].count == count
