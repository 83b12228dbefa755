"""bench/stall.py: the daemon's garbage-collector pauses between two readings of /metrics."""
from __future__ import annotations

from bench.stall import gc_between

INF = float('inf')


def reading(**generations) -> dict:
    """{generation: cumulative buckets}, from {bound: count} with a 'sum' of seconds."""
    return {name[1:]: buckets for name, buckets in generations.items()}


def test_passes_total_time_and_the_bound_of_the_longest_between_two_readings():
    before = reading(g0={0.001: 10, 0.01: 10, 0.1: 10, INF: 10, 'sum': 0.004, 'cpu': 0.003},
                     g2={0.001: 0, 0.01: 1, 0.1: 1, INF: 1, 'sum': 0.008, 'cpu': 0.008})
    after = reading(g0={0.001: 30, 0.01: 31, 0.1: 31, INF: 31, 'sum': 0.02, 'cpu': 0.013},
                    g2={0.001: 0, 0.01: 3, 0.1: 4, INF: 4, 'sum': 0.1, 'cpu': 0.05})
    found = gc_between(before, after)
    assert found['0'] == {'passes': 21, 'ms': 16.0, 'cpu_ms': 10.0, 'longest_within_ms': 10.0}
    assert found['2'] == {'passes': 3, 'ms': 92.0, 'cpu_ms': 42.0, 'longest_within_ms': 100.0}


def test_no_pass_means_no_longest_and_no_histogram_means_no_figures():
    same = reading(g2={0.01: 1, INF: 1, 'sum': 0.005, 'cpu': 0.004})
    assert gc_between(same, same) == {'2': {'passes': 0, 'ms': 0.0, 'cpu_ms': 0.0,
                                            'longest_within_ms': 0.0}}
    assert gc_between({}, same) is None and gc_between(same, {}) is None
