"""bench/stall.py: the daemon's garbage-collector pauses between two readings of /metrics; the
spread and the verdict over several whole runs."""
from __future__ import annotations

from bench.stall import gc_between, overall_verdict, spread

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


def test_the_daemons_cpu_and_wait_for_a_cpu_come_from_its_scheduler_statistics():
    import os

    from bench.stall import scheduled_between, schedstat
    mine = schedstat(os.getpid())
    assert mine is not None and mine[0] > 0.0 and mine[1] >= 0.0
    assert scheduled_between((1.0, 0.5), (3.25, 0.75)) == {'cpu_s': 2.25, 'waited_for_cpu_s': 0.25}
    assert scheduled_between(None, mine) is None
    assert schedstat(2 ** 22 + 12345) is None            # no such process


def one_run(v_p99: float, d_p99: float, d_max: float, terminate_s: float) -> dict:
    """A whole run as bench.stall.run writes it, reduced to what spread and verdict read."""
    def operation(name: str, admin: dict | None = None) -> dict:
        found = {'operation': name, 'v_ms': {'p50': 0.1, 'p99': v_p99, 'max': 2 * v_p99},
                 'load': {'latency_ms': {'U': {'p99': 1.0, 'max': 2.0},
                                         'D': {'p99': d_p99, 'max': d_max}}}}
        if admin is not None:
            found['admin'] = admin
        return found
    runs = [operation('baseline'), operation('terminate all', {'seconds': terminate_s})]
    verdict = {'worst_p99_ms': max(2 * v_p99, d_p99), 'worst_max_ms': max(2 * v_p99, d_max),
               'terminate_all_s': terminate_s, 'p99_met': max(v_p99, d_p99) <= 20.0,
               'max_met': max(2 * v_p99, d_max) <= 100.0, 'terminate_met': terminate_s < 60}
    return {'runs': runs, 'verdict': verdict}


def test_spread_is_the_range_of_each_figure_over_the_runs():
    runs = [one_run(1.0, 5.0, 30.0, 40.0), one_run(3.0, 12.0, 20.0, 41.5)]
    found = spread(runs)
    assert found['baseline']['v_p99'] == [1.0, 3.0]
    assert found['baseline']['uld_p99'] == [5.0, 12.0]       # the worst of U and D per run
    assert found['baseline']['uld_max'] == [20.0, 30.0]
    assert found['terminate all']['seconds'] == [40.0, 41.5]
    assert 'seconds' not in found['baseline']


def test_the_verdict_over_runs_is_the_worst_and_counts_the_runs_that_met_everything():
    runs = [one_run(1.0, 5.0, 30.0, 40.0), one_run(1.0, 25.0, 30.0, 40.0),
            one_run(1.0, 5.0, 30.0, 70.0)]
    found = overall_verdict(runs)
    assert found['worst_p99_ms'] == 25.0 and found['terminate_all_s'] == 70.0
    assert (found['p99_met'], found['max_met'], found['terminate_met']) == (False, True, False)
    assert (found['runs_meeting_all'], found['runs']) == (1, 3)


def test_repeats_below_one_is_a_usage_error(capsys):
    import pytest
    from bench.stall import main
    with pytest.raises(SystemExit) as exit_:
        main(['--repeats', '0'])
    assert exit_.value.code == 2
    assert '--repeats must be at least 1' in capsys.readouterr().err
