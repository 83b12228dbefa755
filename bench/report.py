"""Tables from a benchmark result file (bench/runner.py writes them under bench/results/).

    python -m bench.report bench/results/bench.json            # the README table
    python -m bench.report --full bench/results/bench.json     # every table the runner prints

The README's performance table is pasted from the first form, so every figure in it can be
traced to a committed result file: its date, its machine and the figures of every round.
"""
from __future__ import annotations

import argparse
import json
import sys


def _ratio(b, a):
    return round(b / a, 3) if a else None


def _cycles(entry: dict) -> str:
    low, high = entry['cycles_per_s_range']
    return '%.0f (%.0f-%.0f)' % (entry['cycles_per_s_median'], low, high)


def _paired(ratio: dict | None) -> str:
    if not ratio or ratio['median'] is None:
        return '-'
    return '%.2f (%.2f-%.2f)' % (ratio['median'], *ratio['range'])


def _cpu(entry: dict, key: str = 'cpu_us_per_command') -> str:
    """CPU per command: over all rounds, with the rounds' min-max when the file has them."""
    spread = entry.get(key + '_range')
    if spread:
        return '%.0f (%.0f-%.0f)' % (entry[key], *spread)
    return '%.0f' % entry[key]


def _p(entry: dict, cmd: str, q: str) -> str:
    value = entry['latency_ms'].get(cmd, {}).get(q)
    return '%.2f' % value if value is not None else '-'


def _faults(entry: dict) -> str:
    return '%d/%d/%d' % (entry['error_count'], entry['retransmits'], entry['timeout_count'])


def machine_line(meta: dict) -> str:
    """Where and when: the sentence under the README table."""
    machine = meta.get('machine_description') or {}
    cpu = machine.get('cpu_model') or meta.get('machine', '?')
    load = machine.get('loadavg_start')
    busy = ', load average %.1f at the start' % load[0] if load else ''
    return ('%s; %s, %s CPUs, Linux %s, Python %s, rtp-io %s%s; %d rounds x %g s per target '
            'and concurrency, interleaved %s.' % (
                meta['date'], cpu, machine.get('cpus', meta.get('cpus')),
                machine.get('kernel', '?'), meta['python'], meta['rtp_io'], busy,
                meta['rounds'], meta['duration_s'], ' '.join(meta.get('targets', {}))))


def readme_table(results: dict) -> str:
    """The README's table: cluster against direct and against the null forwarder."""
    meta = results['meta']
    has_floor = 'F' in meta.get('targets', {})
    head = ['concurrency', 'direct (A) cycles/s', 'cluster (B) cycles/s', 'B/A']
    if has_floor:
        head += ['null forwarder (F) cycles/s', 'B/F']
    head += ['cluster CPU µs/cmd', 'member CPU µs/cmd', 'cluster/member CPU',
             'U p50 A / B ms', 'U p99 A / B ms', 'B err/rtx/tmo']
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---:|' * len(head)]
    for row in results['summary']:
        a, b = row['A'], row['B']
        cells = [str(row['concurrency']), _cycles(a), _cycles(b), _paired(row['paired_b_a'])]
        if has_floor:
            cells += [_cycles(row['F']), _paired(row.get('paired_b_f'))]
        cells += [_cpu(b), _cpu(b, 'members_cpu_us_per_command'),
                  '%.2f' % (_ratio(b['cpu_us_per_command'], b['members_cpu_us_per_command'])
                            or 0),
                  '%s / %s' % (_p(a, 'U', 'p50'), _p(b, 'U', 'p50')),
                  '%s / %s' % (_p(a, 'U', 'p99'), _p(b, 'U', 'p99')), _faults(b)]
        lines.append('| ' + ' | '.join(cells) + ' |')
    lines += ['', machine_line(meta) + '  Cycles/s: median of the rounds (min-max); ratios: '
              'median of the round-by-round ratios (min-max); CPU per command: all rounds '
              'together (min-max of the rounds).']
    return '\n'.join(lines)


def markdown(results: dict) -> str:
    """Every table the runner prints after a run."""
    meta = results['meta']
    names = list(meta['targets'])
    has_floor = 'F' in names
    lines = ['; '.join('%s = %s' % (n, meta['targets'][n]) for n in names) + '.',
             machine_line(meta) + '  Cycles/s: median of the rounds (min-max); ratios: median '
             'of the round-by-round ratios (min-max).', '']
    head = '| concurrency | A cycles/s | B cycles/s | B/A |'
    rule = '|---:|---:|---:|---:|'
    if has_floor:
        head += ' F cycles/s | B/F | B/F CPU per cmd | U p50 added over F (ms) |'
        rule += '---:|---:|---:|---:|'
    head += (' A CPU µs/cmd | B CPU µs/cmd (cluster) | B members µs/cmd | cluster/member CPU '
             '| A err/rtx/tmo | B err/rtx/tmo |')
    rule += '---:|---:|---:|---:|---:|---:|'
    lines += [head, rule]
    for row in results['summary']:
        a, b = row['A'], row['B']
        cells = [str(row['concurrency']), _cycles(a), _cycles(b), _paired(row['paired_b_a'])]
        if has_floor:
            fm = row['floor_multiples']
            cells += [_cycles(row['F']), _paired(row['paired_b_f']),
                      '%.2f' % fm['cpu_per_command'] if fm['cpu_per_command'] else '-',
                      '%.3f' % fm['u_p50_added_ms'] if fm['u_p50_added_ms'] is not None else '-']
        cells += ['%.1f' % a['cpu_us_per_command'], '%.1f' % b['cpu_us_per_command'],
                  '%.1f' % b['members_cpu_us_per_command'],
                  '%.2f' % (_ratio(b['cpu_us_per_command'], b['members_cpu_us_per_command']) or 0),
                  _faults(a), _faults(b)]
        lines.append('| ' + ' | '.join(cells) + ' |')
    lines += ['', '| concurrency | target | cmd | p50 ms | p95 ms | p99 ms |',
              '|---:|---|---|---:|---:|---:|']
    for row in results['summary']:
        for name in names:
            for cmd, v in row[name]['latency_ms'].items():
                lines.append('| %d | %s | %s | %.3f | %.3f | %.3f |' % (
                    row['concurrency'], name, cmd, v['p50'], v['p95'], v['p99']))
    lines += ['', '| concurrency | cmd | B/A p99, round by round | median |', '|---:|---|---|---:|']
    for row in results['summary']:
        for cmd, v in row.get('p99_ratios', {}).items():
            lines.append('| %d | %s | %s | %.2f |' % (
                row['concurrency'], cmd, ' '.join('%.2f' % r for r in v['rounds']), v['median']))
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description='tables from a bench/runner.py result file')
    ap.add_argument('result', help='JSON written by bench/runner.py (bench/results/...)')
    ap.add_argument('--full', action='store_true', help='every table, not only the README one')
    args = ap.parse_args(argv)
    with open(args.result) as f:
        results = json.load(f)
    if 'A' not in results['summary'][0] or 'B' not in results['summary'][0]:
        print('%s: not an A/B result of bench/runner.py' % args.result, file=sys.stderr)
        return 2
    print(markdown(results) if args.full else readme_table(results))
    return 0


if __name__ == '__main__':
    sys.exit(main())
