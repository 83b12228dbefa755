"""bench/runner.py's summary of rounds and bench/report.py's tables, from made-up rounds."""
from __future__ import annotations

import json

from bench.loadgen import Stats
from bench.report import main as report_main
from bench.report import readme_table
from bench.runner import machine_description, summary_row


def _round(cycles_per_s: float, cpu_us: float, members_cpu_us: float) -> tuple[Stats, dict]:
    """One 10 s measurement: 3 commands per cycle, `cpu_us` CPU per command."""
    stats = Stats('cycles', 16)
    stats.window_s = 10.0
    stats.cycles = int(cycles_per_s * 10)
    stats.replies = 3 * stats.cycles
    for cmd in ('U', 'L', 'D'):
        stats.lat_ns[cmd] = [1_000_000] * stats.cycles
    return stats, {'main_cpu_us': cpu_us * stats.replies,
                   'members_cpu_us': members_cpu_us * stats.replies}


def _results() -> dict:
    per_target = {'A': [_round(1000, 100, 0), _round(1200, 100, 0), _round(800, 100, 0)],
                  'F': [_round(900, 30, 120), _round(1000, 30, 120), _round(700, 30, 120)],
                  'B': [_round(700, 60, 120), _round(600, 40, 120), _round(400, 50, 120)]}
    meta = {'date': '2026-12-01T09:00:00+00:00', 'python': '3.11.7', 'rtp_io': '1.1.1',
            'rounds': 3, 'duration_s': 10.0, 'targets': {'A': 'a', 'F': 'f', 'B': 'b'},
            'machine_description': {'cpu_model': 'Test CPU', 'cpus': 2, 'kernel': '6.1.0',
                                    'loadavg_start': [3.14, 2.0, 1.0]}}
    return {'meta': meta, 'summary': [summary_row(16, per_target)]}


def test_summary_keeps_every_round_and_the_medians_with_their_spread():
    row = _results()['summary'][0]
    assert row['B']['rounds_cycles_per_s'] == [700.0, 600.0, 400.0]
    assert row['B']['cycles_per_s_median'] == 600.0
    assert row['B']['cycles_per_s_range'] == [400.0, 700.0]
    assert row['B']['rounds_cpu_us_per_command'] == [60.0, 40.0, 50.0]
    assert row['B']['cpu_us_per_command_range'] == [40.0, 60.0]
    # B/A round by round: 0.7, 0.5, 0.5 (B/F: 0.78, 0.6, 0.57)
    assert row['paired_b_a'] == {'rounds': [0.7, 0.5, 0.5], 'median': 0.5, 'range': [0.5, 0.7]}


def test_summary_with_a_twin_compares_b_and_the_twin_with_a():
    """--twin (the http comparison): C is a second A; the row says how far C and B are from A."""
    per_target = {'A': [_round(1000, 100, 0), _round(1000, 100, 0)],
                  'C': [_round(900, 110, 0), _round(1100, 90, 0)],
                  'B': [_round(950, 104, 0), _round(1000, 102, 0)]}
    row = summary_row(16, per_target)
    assert row['paired_c_a'] == {'rounds': [0.9, 1.1], 'median': 1.0, 'range': [0.9, 1.1]}
    # pooled over all replies: (110 µs × 27,000 + 90 µs × 33,000) / 60,000 = 99 µs
    assert row['cpu_c_over_a'] == 0.99
    assert row['cpu_b_over_a'] == 1.03
    assert row['paired_b_c']['rounds'] == [1.056, 0.909]


def test_readme_table_shows_ratios_cpu_and_the_machine():
    table = readme_table(_results())
    lines = table.splitlines()
    assert lines[0].startswith('| concurrency | direct (A) cycles/s | cluster (B) cycles/s | B/A |')
    cells = [c.strip() for c in lines[2].strip('|').split('|')]
    assert cells[:6] == ['16', '1000 (800-1200)', '600 (400-700)', '0.50 (0.50-0.70)',
                         '900 (700-1000)', '0.60 (0.57-0.78)']
    # CPU over all rounds weighted by replies (2,580,000 µs / 51,000 = 50.6), the rounds'
    # spread, member CPU, their ratio
    assert cells[6:9] == ['51 (40-60)', '120 (120-120)', '0.42']
    assert ('Test CPU, 2 CPUs, Linux 6.1.0, Python 3.11.7, rtp-io 1.1.1, load average 3.1 '
            'at the start' in table)


def test_report_prints_the_table_from_a_result_file(tmp_path, capsys):
    path = tmp_path / 'bench.json'
    path.write_text(json.dumps(_results()))
    assert report_main([str(path)]) == 0
    assert capsys.readouterr().out.strip() == readme_table(_results())


def test_machine_description_names_cpu_kernel_and_versions():
    machine = machine_description()
    assert machine['cpus'] >= 1 and machine['kernel'] and machine['cpu_model']
    assert machine['python'].split()[1].count('.') == 2
    assert len(machine['loadavg_start']) == 3


def test_twin_only_goes_with_the_http_comparison(capsys):
    import pytest
    from bench.runner import main
    with pytest.raises(SystemExit) as exit_:
        main(['--twin', '--b', 'cluster-redis'])
    assert exit_.value.code == 2
    assert '--twin goes with --b cluster-http' in capsys.readouterr().err


def test_memory_repeats_below_one_is_a_usage_error(capsys):
    import pytest
    from bench.memory import main
    with pytest.raises(SystemExit) as exit_:
        main(['--repeats', '0'])
    assert exit_.value.code == 2
    assert '--repeats must be at least 1' in capsys.readouterr().err
