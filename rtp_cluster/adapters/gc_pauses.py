"""How long the cyclic garbage collector holds the daemon, by generation.

A collection runs in whatever thread allocated the object that triggered it, and the event
loop waits for it: a young pass costs little, a full (generation 2) pass walks every object
the collector tracks.  `GCPauses` is a `gc.callbacks` hook that times each collection
into one histogram per generation (exported as `rtp_cluster_gc_pause_seconds`), so an
operator sees the stalls the collector causes whatever else the machine runs: the time is
taken inside the process, around the collection itself.  The histogram holds the time the
event loop waited (wall clock); the CPU time the collections used is summed beside it
(`rtp_cluster_gc_cpu_seconds_total`): on a busy machine a pause can be long because the
process was not running, and the two tell that apart.  Per collection it costs four reads
of a clock and one histogram observation.
"""
from __future__ import annotations

import gc
import time
from typing import Callable, Sequence

from ..core.counters import LATENCY_BUCKETS, Histogram

__all__ = ['GCPauses', 'GC_PAUSES', 'GENERATIONS']

GENERATIONS = len(gc.get_threshold())       # 3 on CPython: 0 and 1 young, 2 the full pass


class GCPauses:
    """Durations of the collections of each generation (a `gc.callbacks` hook)."""

    __slots__ = ('histograms', 'longest', 'cpu_seconds', '_clock', '_cpu_clock', '_started',
                 '_cpu_started')

    def __init__(self, clock: Callable[[], float] = time.perf_counter,
                 bounds: Sequence[float] = LATENCY_BUCKETS,
                 cpu_clock: Callable[[], float] = time.thread_time) -> None:
        self.histograms = tuple(Histogram(bounds) for _ in range(GENERATIONS))
        self.longest = [0.0] * GENERATIONS      # the longest pause seen, seconds
        self.cpu_seconds = [0.0] * GENERATIONS  # CPU time of the collections, in all
        self._clock = clock
        self._cpu_clock = cpu_clock
        self._started: float | None = None
        self._cpu_started = 0.0

    def __call__(self, phase: str, info: dict) -> None:
        if phase == 'start':
            self._started = self._clock()
            self._cpu_started = self._cpu_clock()
            return
        started, self._started = self._started, None
        if started is None:                 # installed while a collection ran
            return
        elapsed = self._clock() - started
        generation = min(info.get('generation', 0), GENERATIONS - 1)
        self.cpu_seconds[generation] += self._cpu_clock() - self._cpu_started
        self.histograms[generation].observe(elapsed)
        if elapsed > self.longest[generation]:
            self.longest[generation] = elapsed

    @property
    def installed(self) -> bool:
        return any(hook is self for hook in gc.callbacks)

    def install(self) -> None:
        """Time every collection from now on (once, however often it is called)."""
        if not self.installed:
            gc.callbacks.append(self)

    def remove(self) -> None:
        gc.callbacks[:] = [hook for hook in gc.callbacks if hook is not self]
        self._started = None


# The process has one collector, so one recorder: the daemon installs it at start-up
# (reactor.tune_garbage_collector) and the metrics read it.
GC_PAUSES = GCPauses()
