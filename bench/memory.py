"""Memory benchmark: rtp_cluster holding many live sessions, behind two fake members.

One real RTPproxy holds only a few thousand sessions, so the members here are bench.fakemember
processes (instant answers).  In one run:

 1. throughput of the empty cluster (call cycles at --concurrency for --duration s), which also
    warms the process up;
 2. RSS of the cluster (VmRSS), create --sessions live sessions through it (U only), RSS again
    -> bytes per session (an upper bound: it includes whatever the cluster keeps per recent
    command, e.g. cached replies, unless --settle outlasts that);
 3. throughput twice with those sessions present; delete them; throughput of the empty
    cluster once more (order empty, full, full, empty).

    python -m bench.memory --sessions 100000
    python -m bench.memory --sessions 100000 --repeats 3   # the README's figure, with its spread
    python -m bench.memory --target fake     # checks the tooling: one fake member, no cluster

Each repeat is a whole run with fresh processes; the JSON holds every run, the date and the
machine, and the median and range of the bytes per session.
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from statistics import median

from bench.loadgen import LoadGen, format_table
from bench.members import (CLK_TCK, ROOT, Fleet, cluster_available, cpu_ticks, free_udp_port,
                           rss_bytes, write_results)

HOST = '127.0.0.1'
RESULTS = os.path.join(ROOT, 'bench', 'results', 'memory.json')


def throughput(addr: tuple[str, int], pid: int, args, label: str) -> dict:
    before = cpu_ticks(pid)
    gen = LoadGen(addr, args.concurrency, timeout=args.timeout)
    try:
        stats = gen.run(args.duration, warmup=args.warmup)
    finally:
        gen.close()
    summary = stats.summary()
    summary['cpu_us_per_command'] = round(
        (cpu_ticks(pid) - before) * 1e6 / CLK_TCK / (stats.replies or 1), 1)
    print(format_table([(label, summary)]).splitlines()[-1], flush=True)
    return summary


def settled_rss(pid: int, pause: float) -> int:
    time.sleep(pause)                      # let replies, timers and heartbeats settle
    return rss_bytes(pid)


def _mean_cycles(runs: list[dict]) -> float:
    return round(sum(r['cycles_per_s'] for r in runs) / len(runs), 1)


def run(args) -> dict:
    """Throughput runs in the order empty, full, full, empty (cancels a linear drift of the
    machine's speed); RSS before and after creating the sessions."""
    result: dict = {'sessions_requested': args.sessions, 'concurrency': args.concurrency,
                    'create_concurrency': args.create_concurrency, 'duration_s': args.duration,
                    'settle_s': args.settle, 'target': args.target}
    with Fleet() as fleet:
        if args.target == 'cluster':
            ports = [free_udp_port(HOST) for _ in range(3)]
            fleet.fake_member('fake1', ports[0])
            fleet.fake_member('fake2', ports[1])
            proc = fleet.cluster(ports[2], [('fake1', (HOST, ports[0])),
                                            ('fake2', (HOST, ports[1]))], HOST,
                                 capacity=max(100000, args.sessions))
            addr = (HOST, ports[2])
        else:
            port = free_udp_port(HOST)
            proc = fleet.fake_member('fake', port)
            addr = (HOST, port)
        result['rss_start'] = settled_rss(proc.pid, 1.0)
        empty = [throughput(addr, proc.pid, args, 'empty')]
        # the empty run has warmed the process (caches, allocator arenas): measure from here
        result['rss_before'] = settled_rss(proc.pid, args.settle)
        holder = LoadGen(addr, 1, timeout=args.timeout, live_concurrency=args.create_concurrency)
        try:
            t0 = time.monotonic()
            created = holder.create_live(args.sessions).summary()
            seconds = time.monotonic() - t0
            result['create'] = {'seconds': round(seconds, 2), 'sessions': len(holder.live),
                                'per_s': round(len(holder.live) / seconds, 1),
                                'errors': created['errors'], 'timeouts': created['timeouts'],
                                'retransmits': created['retransmits']}
            print('created %d sessions in %.1f s (%d errors, %d timeouts, %d retransmits)' % (
                len(holder.live), seconds, created['error_count'], created['timeout_count'],
                created['retransmits']), flush=True)
            result['rss_after'] = settled_rss(proc.pid, args.settle)
            label = 'with %d sessions' % len(holder.live)
            full = [throughput(addr, proc.pid, args, label) for _ in range(2)]
            result['rss_after_runs'] = settled_rss(proc.pid, 0)
        finally:
            deleted = holder.delete_live().summary()
            holder.close()
        result['delete'] = {'errors': deleted['errors'], 'timeouts': deleted['timeouts']}
        result['rss_after_delete'] = settled_rss(proc.pid, 1.0)
        empty.append(throughput(addr, proc.pid, args, 'empty again'))
        result['empty_runs'], result['full_runs'] = empty, full
        result['empty_cycles_per_s'] = _mean_cycles(empty)
        result['full_cycles_per_s'] = _mean_cycles(full)
        n = result['create']['sessions']
        result['bytes_per_session'] = \
            round((result['rss_after'] - result['rss_before']) / n, 1) if n else None
        result['throughput_ratio_full_vs_empty'] = round(
            result['full_cycles_per_s'] / result['empty_cycles_per_s'], 3) \
            if result['empty_cycles_per_s'] else None
    return result


def run_repeated(args) -> dict:
    """--repeats whole runs; the bytes per session as median and range over them."""
    from bench.runner import machine_description
    document: dict = {
        'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        'machine_description': machine_description(), 'repeats': []}
    for number in range(1, args.repeats + 1):
        print('run %d of %d' % (number, args.repeats), flush=True)
        document['repeats'].append(run(args))
    document['machine_description']['loadavg_end'] = list(os.getloadavg())
    per_session = [r['bytes_per_session'] for r in document['repeats']
                   if r['bytes_per_session'] is not None]
    document['bytes_per_session'] = {
        'runs': per_session, 'median': median(per_session) if per_session else None,
        'range': [min(per_session), max(per_session)] if per_session else None}
    return document


def report(result: dict) -> str:
    mib = 1024 * 1024
    what = 'rtp_cluster (2 fake members)' if result['target'] == 'cluster' else 'fake member alone'
    conc = result['concurrency']
    return '\n'.join([
        '| measured | %s |' % what,
        '|---|---:|',
        '| RSS at start | %.1f MiB |' % (result['rss_start'] / mib),
        '| RSS before sessions (after a warm-up run) | %.1f MiB |' % (result['rss_before'] / mib),
        '| RSS with %d sessions | %.1f MiB |' % (result['create']['sessions'],
                                               result['rss_after'] / mib),
        '| RSS after deleting them | %.1f MiB |' % (result['rss_after_delete'] / mib),
        '| **bytes per session** | **%.0f** |' % (result['bytes_per_session'] or 0),
        '| session creation rate (%d in flight) | %.0f /s |' % (
            result['create_concurrency'], result['create']['per_s']),
        '| cycles/s at concurrency %d, empty (2 runs) | %.0f |' % (
            conc, result['empty_cycles_per_s']),
        '| cycles/s at concurrency %d, with the sessions (2 runs) | %.0f |' % (
            conc, result['full_cycles_per_s']),
        '| ratio with / empty | %.2f |' % (result['throughput_ratio_full_vs_empty'] or 0),
        '| CPU µs per command, empty / with sessions | %.1f / %.1f |' % (
            sum(r['cpu_us_per_command'] for r in result['empty_runs']) / 2,
            sum(r['cpu_us_per_command'] for r in result['full_runs']) / 2),
    ])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description='rtp_cluster memory per session and throughput')
    ap.add_argument('--sessions', type=int, default=100000, help='live sessions (100000)')
    ap.add_argument('--concurrency', type=int, default=16, help='throughput slots (16)')
    ap.add_argument('--duration', type=float, default=10.0, help='seconds per throughput run')
    ap.add_argument('--warmup', type=float, default=1.0)
    ap.add_argument('--create-concurrency', type=int, default=64,
                    help='commands in flight while creating the sessions (64)')
    ap.add_argument('--timeout', type=float, default=1.0)
    ap.add_argument('--settle', type=float, default=2.0,
                    help='seconds of quiet before each RSS reading (2)')
    ap.add_argument('--target', choices=('cluster', 'fake'), default='cluster',
                    help='cluster (default) or one fake member without cluster (tool check)')
    ap.add_argument('--repeats', type=int, default=1, help='whole runs (1)')
    ap.add_argument('--out', default=RESULTS, help='JSON result file (%(default)s)')
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error('--repeats must be at least 1')
    if args.target == 'cluster' and not cluster_available():
        print('rtp_cluster daemon not found; use --target fake to check the tooling',
              file=sys.stderr)
        return 2
    document = run_repeated(args)
    write_results(args.out, document)
    for result in document['repeats']:
        print()
        print(report(result))
    spread = document['bytes_per_session']
    print('\nbytes per session: median %s, range %s over %d runs' % (
        spread['median'], spread['range'], len(document['repeats'])))
    print('results: %s' % args.out)
    return 0


if __name__ == '__main__':
    sys.exit(main())
