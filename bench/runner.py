"""A/B benchmark: one rtp-io member direct (A) against rtp_cluster with two rtp-io members (B).

For every concurrency, rounds alternate A F B A F B ... (each --duration seconds after
--warmup), on the same machine in the same run, so every target sees the same conditions.
F, the floor, is the null forwarder (bench/nullfwd.py): the least a Python relay must do, in
front of B's two members; the cluster is reported as multiples of it beside the ratios to
direct (--no-floor leaves it out).  Reported per target and concurrency: cycles/s (median and
min-max of the rounds), commands/s, latency percentiles per command, errors, retransmits,
timeouts; the ratio B/A, also round by round; and the CPU the target process spent per command
(utime+stime from /proc/PID/stat, before/after each measurement, divided by every reply of
that measurement): for A the member, for F the forwarder, for B the rtp_cluster daemon (its
members separately).

    python -m bench.runner --rounds 3 --duration 10
    python -m bench.runner --b member        # B = a second direct member (checks the runner)
    python -m bench.runner --baseline /tmp/old-checkout   # + C = the cluster of that checkout

With --baseline, C (the rtp_cluster daemon of another checkout, e.g. `git worktree add
/tmp/old HEAD~3`) runs in front of the same two members right before B in every round, and
B/C round by round says what a change did, free of the drift between separate runs.

Results go to a JSON file (--out; `make bench` writes bench/results/bench.json, to be
committed): the date, the machine (CPU model, cores, kernel, Python and rtp-io versions, load
average before and after), every round's figures and the medians with min-max.  The tables
are printed at the end; `python -m bench.report FILE` prints the README's table again from a
file.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time

from bench.loadgen import LoadGen, Stats, format_table
from bench.members import (CLK_TCK, ROOT, Fleet, cluster_available, cpu_ticks, free_tcp_port,
                           free_udp_port, write_results)
from bench.report import markdown, readme_table

HOST = '127.0.0.1'
RESULTS = os.path.join(ROOT, 'bench', 'results', 'latest.json')


def media_ranges(base: int, size: int, count: int) -> list[tuple[int, int]]:
    """`count` disjoint RTP port ranges of `size` ports (even start) from `base` on."""
    base += base % 2
    return [(base + i * size, base + (i + 1) * size - 1) for i in range(count)]


class Target:
    """Where the load goes and which processes' CPU is charged to it."""

    def __init__(self, name: str, label: str, addr: tuple[str, int], main_pid: int,
                 member_pids: list[int], redis_port: int | None = None,
                 metrics_url: str | None = None) -> None:
        self.name, self.label, self.addr = name, label, addr
        self.main_pid = main_pid           # the process whose CPU µs/command is reported
        self.member_pids = member_pids     # RTPproxies behind it (B only)
        self.redis_port = redis_port       # where it shares sessions (cluster-redis B)
        self.metrics_url = metrics_url     # its /metrics (cluster-http B)


SCRAPES = 200      # scrapes back to back when the cost of one is measured on its own


def scrape_cost(target: Target, scrapes: int = SCRAPES) -> dict:
    """The daemon's CPU per scrape of /metrics, measured directly: `scrapes` GETs back to back
    with no other load, the daemon's /proc CPU time before and after."""
    import urllib.request
    size = 0
    before = cpu_ticks(target.main_pid)
    started = time.monotonic()
    for _ in range(scrapes):
        with urllib.request.urlopen(target.metrics_url, timeout=5) as reply:
            size = len(reply.read())
    seconds = time.monotonic() - started
    cpu_ms = (cpu_ticks(target.main_pid) - before) * 1000.0 / CLK_TCK
    return {'scrapes': scrapes, 'bytes': size, 'seconds': round(seconds, 2),
            'daemon_cpu_ms_per_scrape': round(cpu_ms / scrapes, 2)}


def redis_writes(port: int) -> dict[str, int]:
    """Calls per command the server served: the proof that B really wrote its sessions (the
    server's totals: with a baseline, C's writes, to its own database, are in them too)."""
    import redis
    stats = redis.Redis(host=HOST, port=port, socket_timeout=2).info('commandstats')
    return {name[len('cmdstat_'):]: value['calls'] for name, value in stats.items()
            if name[len('cmdstat_'):] in ('hset', 'del', 'pexpire', 'exec', 'hgetall')}


def measure(target: Target, concurrency: int, args) -> tuple[Stats, dict]:
    pids = [target.main_pid] + target.member_pids
    before = [cpu_ticks(p) for p in pids]
    gen = LoadGen(target.addr, concurrency, timeout=args.timeout, tries=args.tries,
                  mix_ib=args.mix_ib, mix_q=args.mix_q, seed=args.seed, rate=args.rate,
                  hold=args.hold)
    try:
        stats = gen.run(args.duration, warmup=args.warmup)
    finally:
        gen.close()
    used = [(cpu_ticks(p) - b) * 1e6 / CLK_TCK for p, b in zip(pids, before)]
    cpu = {'main_cpu_us': used[0], 'members_cpu_us': sum(used[1:])}
    return stats, cpu


def aggregate(parts: list[tuple[Stats, dict]]) -> dict:
    """Merge the rounds of one target at one concurrency."""
    merged = Stats.merge([s for s, _ in parts]).summary()
    replies = sum(s.replies for s, _ in parts) or 1
    rounds = [s.summary()['cycles_per_s'] for s, _ in parts]
    merged['rounds_cycles_per_s'] = rounds
    merged['cycles_per_s_median'] = median(rounds)
    merged['cycles_per_s_range'] = [min(rounds), max(rounds)]
    for key, name in (('main_cpu_us', 'cpu_us_per_command'),
                      ('members_cpu_us', 'members_cpu_us_per_command')):
        merged[name] = round(sum(c[key] for _, c in parts) / replies, 1)
        per_round = [round(c[key] / (s.replies or 1), 1) for s, c in parts]
        merged['rounds_' + name] = per_round
        merged[name + '_range'] = [min(per_round), max(per_round)]
    merged['clean'] = (merged['error_count'] == 0 and merged['timeout_count'] == 0
                       and merged['abandoned'] == 0)
    return merged


def _ratio(b, a):
    return round(b / a, 3) if a else None


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[mid]
    return round((ordered[mid - 1] + ordered[mid]) / 2, 3)


def paired_ratios(num_parts: list, den_parts: list) -> dict:
    """Cycles/s of one target over another's, round by round (the two ran back to back), with
    the median and the min-max: the spread a reader of one run should expect."""
    rounds = [_ratio(n.summary()['cycles_per_s'], d.summary()['cycles_per_s'])
              for (n, _), (d, _) in zip(num_parts, den_parts)]
    rounds = [r for r in rounds if r is not None]
    if not rounds:
        return {'rounds': [], 'median': None, 'range': None}
    return {'rounds': rounds, 'median': median(rounds), 'range': [min(rounds), max(rounds)]}


def floor_multiples(row: dict) -> dict:
    """The cluster (B) as multiples of the null forwarder (F): throughput, CPU per command, and
    the U latency it adds over the forwarder."""
    b, f = row['B'], row['F']
    u_b, u_f = b['latency_ms'].get('U', {}), f['latency_ms'].get('U', {})
    return {'cycles': _ratio(b['cycles_per_s'], f['cycles_per_s']),
            'cpu_per_command': _ratio(b['cpu_us_per_command'], f['cpu_us_per_command']),
            'u_p50_added_ms': (round(u_b['p50'] - u_f['p50'], 3)
                               if 'p50' in u_b and 'p50' in u_f else None)}


def paired_p99_ratios(a_parts: list, b_parts: list) -> dict[str, dict]:
    """Per command: B's p99 over A's, round by round (A and B of a round ran back to back),
    and the median of those ratios: steadier than pooled percentiles on a machine whose
    background load drifts over minutes."""
    out: dict[str, dict] = {}
    for (a, _), (b, _) in zip(a_parts, b_parts):
        a_lat, b_lat = a.latency_ms(), b.latency_ms()
        for cmd in a_lat:
            if cmd in b_lat and a_lat[cmd]['p99']:
                out.setdefault(cmd, {'rounds': []})['rounds'].append(
                    round(b_lat[cmd]['p99'] / a_lat[cmd]['p99'], 3))
    for entry in out.values():
        entry['median'] = median(entry['rounds'])
    return out


def cpu_model() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_description() -> dict:
    """What a reader needs to compare a result file with their own run."""
    return {'cpu_model': cpu_model(), 'cpus': os.cpu_count(), 'arch': platform.machine(),
            'kernel': platform.release(), 'os': platform.platform(terse=True),
            'python': '%s %s' % (platform.python_implementation(), platform.python_version()),
            'rtp_io': _rtp_io_version(), 'loadavg_start': list(os.getloadavg())}


def _rtp_io_version() -> str:
    try:
        from importlib.metadata import version
        return version('rtp-io')
    except Exception:                      # noqa: BLE001 - informational only
        return 'unknown'


def run(args) -> dict:
    concurrencies = [int(c) for c in args.concurrency.split(',')]
    # each cycle holds 4 ports while it runs; leave room for late deletes and retransmits
    span = max(2000, 16 * max(concurrencies))
    ranges = media_ranges(args.media_base, span, 3)
    results = {'meta': {
        'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        'machine': cpu_model(), 'cpus': os.cpu_count(),
        'machine_description': machine_description(),
        'python': platform.python_version(), 'rtp_io': _rtp_io_version(),
        'rounds': args.rounds, 'duration_s': args.duration, 'warmup_s': args.warmup,
        'concurrencies': concurrencies, 'mix_q_pct': args.mix_q, 'mix_ib_pct': args.mix_ib,
        'timeout_s': args.timeout, 'tries': args.tries, 'b': args.b,
        'rate_cycles_per_s': args.rate, 'hold_s': args.hold,
    }, 'runs': [], 'summary': []}
    with Fleet() as fleet:
        targets = make_targets(args.b, fleet, ranges, floor=args.floor,
                               baseline=args.baseline, twin=args.twin)
        results['meta']['targets'] = {t.name: t.label for t in targets}
        for t in targets:
            print('%s: %s at %s:%d (pid %d)' % (t.name, t.label, *t.addr, t.main_pid), flush=True)
        for conc in concurrencies:
            per_target: dict[str, list] = {t.name: [] for t in targets}
            for rnd in range(1, args.rounds + 1):
                for target in targets:
                    stats, cpu = measure(target, conc, args)
                    per_target[target.name].append((stats, cpu))
                    s = stats.summary()
                    s['cpu_us_per_command'] = round(cpu['main_cpu_us'] / (stats.replies or 1), 1)
                    s['members_cpu_us_per_command'] = round(
                        cpu['members_cpu_us'] / (stats.replies or 1), 1)
                    results['runs'].append({'concurrency': conc, 'round': rnd,
                                            'target': target.name, **s})
                    print(format_table([('%s c=%d r=%d' % (target.name, conc, rnd), s)]
                                       ).splitlines()[-1], flush=True)
                    time.sleep(args.pause)
            results['summary'].append(summary_row(conc, per_target))
        results['meta']['machine_description']['loadavg_end'] = list(os.getloadavg())
        target_b = targets[-1]
        if target_b.redis_port is not None:
            results['meta']['redis_calls'] = redis_writes(target_b.redis_port)
        if target_b.metrics_url is not None:
            results['scrape_cost'] = cost = scrape_cost(target_b)
            for row in results['summary']:
                # one scrape a second spread over the commands B answered each second
                row['scrape_share'] = round(cost['daemon_cpu_ms_per_scrape'] * 1000.0 / (
                    row['B']['commands_per_s'] * row['B']['cpu_us_per_command']), 4)
    return results


def summary_row(conc: int, per_target: dict[str, list]) -> dict:
    row = {'concurrency': conc, **{name: aggregate(parts) for name, parts in per_target.items()}}
    row['ratio_cycles'] = _ratio(row['B']['cycles_per_s'], row['A']['cycles_per_s'])
    row['ratio_commands'] = _ratio(row['B']['commands_per_s'], row['A']['commands_per_s'])
    row['paired_b_a'] = paired_ratios(per_target['B'], per_target['A'])
    row['p99_ratios'] = paired_p99_ratios(per_target['A'], per_target['B'])
    if 'F' in per_target:
        row['paired_b_f'] = paired_ratios(per_target['B'], per_target['F'])
        row['floor_multiples'] = floor_multiples(row)
    row['cpu_b_over_a'] = _ratio(row['B']['cpu_us_per_command'],
                                 row['A']['cpu_us_per_command'])
    if 'C' in per_target:
        row['paired_b_c'] = paired_ratios(per_target['B'], per_target['C'])
        row['paired_c_a'] = paired_ratios(per_target['C'], per_target['A'])
        row['cpu_b_over_c'] = _ratio(row['B']['cpu_us_per_command'],
                                     row['C']['cpu_us_per_command'])
        row['cpu_c_over_a'] = _ratio(row['C']['cpu_us_per_command'],
                                     row['A']['cpu_us_per_command'])
    return row


def make_targets(kind: str, fleet: Fleet, ranges, floor: bool = True,
                 baseline: str | None = None, twin: bool = False) -> list[Target]:
    """The targets in the order each round measures them; B last."""
    if kind == 'cluster-redis':
        return sharing_targets(fleet, ranges, baseline)
    if kind == 'cluster-http':
        return http_targets(fleet, ranges, twin)
    a_port = free_udp_port(HOST)
    a = fleet.rtpp_member('a-direct', a_port, ranges[0])
    target_a = Target('A', 'one rtp-io member, direct', (HOST, a_port), a.pid, [])
    if kind == 'member':
        b_port = free_udp_port(HOST)
        b = fleet.rtpp_member('b-direct', b_port, ranges[1])
        return [target_a, Target('B', 'a second rtp-io member, direct (stand-in)',
                                 (HOST, b_port), b.pid, [])]
    ports = [free_udp_port(HOST) for _ in range(3)]
    m1 = fleet.rtpp_member('m1', ports[0], ranges[1])
    m2 = fleet.rtpp_member('m2', ports[1], ranges[2])
    cl = fleet.cluster(ports[2], [('m1', (HOST, ports[0])), ('m2', (HOST, ports[1]))], HOST)
    target_b = Target('B', 'rtp_cluster with two rtp-io members', (HOST, ports[2]),
                      cl.pid, [m1.pid, m2.pid])
    before_b = []
    if baseline is not None:
        c_port = free_udp_port(HOST)
        old = fleet.cluster(c_port, [('m1', (HOST, ports[0])), ('m2', (HOST, ports[1]))], HOST,
                            name='cluster-baseline', root=os.path.abspath(baseline))
        before_b.append(Target('C', 'rtp_cluster of %s (baseline), same members'
                               % os.path.abspath(baseline), (HOST, c_port), old.pid,
                               [m1.pid, m2.pid]))
    if not floor:
        return [target_a] + before_b + [target_b]
    f_port = free_udp_port(HOST)
    fwd = fleet.null_forwarder('floor', f_port, [(HOST, ports[0]), (HOST, ports[1])])
    target_f = Target('F', 'null forwarder (call-id hash, no parsing, no routing) in front of '
                      'the same two members', (HOST, f_port), fwd.pid, [m1.pid, m2.pid])
    return [target_a, target_f] + before_b + [target_b]


def sharing_targets(fleet: Fleet, ranges, baseline: str | None = None) -> list[Target]:
    """A = rtp_cluster without sharing, B = rtp_cluster sharing through Redis; same two members.
    With `baseline`, C = that checkout's rtp_cluster sharing through database 1 of the same
    Redis (keyspace events are per database: B and C never see each other's sessions)."""
    ports = [free_udp_port(HOST) for _ in range(4)]
    m1 = fleet.rtpp_member('m1', ports[0], ranges[1])
    m2 = fleet.rtpp_member('m2', ports[1], ranges[2])
    members = [('m1', (HOST, ports[0])), ('m2', (HOST, ports[1]))]
    redis_port = free_udp_port(HOST)
    fleet.redis(redis_port)
    plain = fleet.cluster(ports[2], members, HOST, name='cluster-plain')
    shared = fleet.cluster(ports[3], members, HOST, redis_url='redis://127.0.0.1:%d/0' % redis_port,
                           name='cluster-redis')
    targets = [Target('A', 'rtp_cluster, no session sharing', (HOST, ports[2]), plain.pid,
                      [m1.pid, m2.pid])]
    if baseline is not None:
        c_port = free_udp_port(HOST)
        old = fleet.cluster(c_port, members, HOST, name='cluster-redis-baseline',
                            redis_url='redis://127.0.0.1:%d/1' % redis_port,
                            root=os.path.abspath(baseline))
        targets.append(Target('C', 'rtp_cluster of %s (baseline) sharing sessions through '
                              'Redis' % os.path.abspath(baseline), (HOST, c_port), old.pid,
                              [m1.pid, m2.pid], redis_port=redis_port))
    targets.append(Target('B', 'rtp_cluster sharing sessions through Redis', (HOST, ports[3]),
                          shared.pid, [m1.pid, m2.pid], redis_port=redis_port))
    return targets


def http_targets(fleet: Fleet, ranges, twin: bool = False) -> list[Target]:
    """A = rtp_cluster without the HTTP listener, B = with it, scraped every second; with
    `twin`, C = a second cluster without the listener, measured in the same rounds: how far
    two identical clusters differ on this machine, the noise the B/A figure carries."""
    ports = [free_udp_port(HOST) for _ in range(4)]
    m1 = fleet.rtpp_member('m1', ports[0], ranges[1])
    m2 = fleet.rtpp_member('m2', ports[1], ranges[2])
    members = [('m1', (HOST, ports[0])), ('m2', (HOST, ports[1]))]
    plain = fleet.cluster(ports[2], members, HOST, name='cluster-plain')
    http_port = free_tcp_port(HOST)
    observed = fleet.cluster(ports[3], members, HOST, name='cluster-http', http_port=http_port)
    metrics_url = 'http://%s:%d/metrics' % (HOST, http_port)
    fleet.scraper(metrics_url, 1.0)
    targets = [Target('A', 'rtp_cluster, no HTTP listener', (HOST, ports[2]), plain.pid,
                      [m1.pid, m2.pid])]
    if twin:
        twin_port = free_udp_port(HOST)
        other = fleet.cluster(twin_port, members, HOST, name='cluster-twin')
        targets.append(Target('C', "rtp_cluster, no HTTP listener (A's twin)",
                              (HOST, twin_port), other.pid, [m1.pid, m2.pid]))
    targets.append(Target('B', 'rtp_cluster with the HTTP listener, /metrics scraped every '
                          'second', (HOST, ports[3]), observed.pid, [m1.pid, m2.pid],
                          metrics_url=metrics_url))
    return targets


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description='A/B benchmark: direct member vs rtp_cluster')
    ap.add_argument('--rounds', type=int, default=3, help='A/B rounds per concurrency (3)')
    ap.add_argument('--duration', type=float, default=10.0, help='seconds per measurement (10)')
    ap.add_argument('--warmup', type=float, default=1.0, help='uncounted seconds first (1)')
    ap.add_argument('--concurrency', default='1,16,64', help='comma list (1,16,64)')
    ap.add_argument('--b', choices=('cluster', 'member', 'cluster-redis', 'cluster-http'),
                    default='cluster',
                    help='B = rtp_cluster with two members (default), a second direct member, '
                         'or (cluster-redis) A = the cluster without and B = with Redis sharing, '
                         'or (cluster-http) A = the cluster without and B = with the HTTP '
                         'listener scraped every second')
    ap.add_argument('--no-floor', dest='floor', action='store_false',
                    help='leave out F, the null forwarder (measured by default with --b cluster)')
    ap.add_argument('--baseline', default=None, metavar='CHECKOUT',
                    help='also measure C, the rtp_cluster of another checkout (a revision to '
                         'compare with), right before B in every round')
    ap.add_argument('--twin', action='store_true',
                    help="with --b cluster-http: also C, a second cluster without the listener "
                         "(A's twin), so the run shows how far two identical clusters differ")
    ap.add_argument('--rate', type=float, default=None,
                    help='offer this many cycles/s (open loop) instead of a closed loop')
    ap.add_argument('--hold', type=float, default=0.0,
                    help='seconds before L and before D of every call, so calls outlive the '
                         'write-behind interval (0)')
    ap.add_argument('--mix-q', type=float, default=0.0, help='%% of cycles with a Q (0)')
    ap.add_argument('--mix-ib', type=float, default=0.0, help='%% of cycles with an Ib (0)')
    ap.add_argument('--timeout', type=float, default=1.0, help='retransmit after (1 s)')
    ap.add_argument('--tries', type=int, default=5, help='sends per command (5)')
    ap.add_argument('--seed', type=int, default=1)
    ap.add_argument('--pause', type=float, default=0.5, help='seconds between measurements')
    ap.add_argument('--media-base', type=int, default=40000, help='first member RTP port')
    ap.add_argument('--out', default=RESULTS, help='JSON result file (%(default)s)')
    args = ap.parse_args(argv)
    if args.twin and args.b != 'cluster-http':
        ap.error('--twin goes with --b cluster-http')
    if args.b != 'member' and not cluster_available():
        print('rtp_cluster daemon not found (rtp_cluster/app.py, adapters/runtime.py); '
              'use --b member to run B against a second direct member', file=sys.stderr)
        return 2
    results = run(args)
    write_results(args.out, results)
    print()
    print(markdown(results))
    calls = results['meta'].get('redis_calls')
    if calls is not None:
        writers = [name for name in ('C', 'B') if name in results['meta']['targets']]
        cycles = sum(r[name]['cycles'] for r in results['summary'] for name in writers)
        print('\nRedis served %s: %s (%d cycles measured in all)' % (
            ' and '.join(writers), ', '.join('%s %d' % kv for kv in sorted(calls.items())),
            cycles))
    if args.b == 'cluster':
        print('\nThe README table (python -m bench.report %s):\n' % os.path.relpath(args.out))
        print(readme_table(results))
    for row in results['summary']:
        print('concurrency %d: B/A CPU per command %s' % (row['concurrency'],
                                                          row['cpu_b_over_a']))
        if 'paired_b_c' in row:
            c = row['paired_b_c']
            print('concurrency %d: B/C cycles/s %s (rounds %s), B/C CPU per command %s' % (
                row['concurrency'], c['median'], ' '.join(map(str, c['rounds'])),
                row['cpu_b_over_c']))
            twin = row['paired_c_a']
            print('concurrency %d: C/A cycles/s %s (rounds %s), C/A CPU per command %s' % (
                row['concurrency'], twin['median'], ' '.join(map(str, twin['rounds'])),
                row['cpu_c_over_a']))
    cost = results.get('scrape_cost')
    if cost is not None:
        print('one scrape (%d bytes) costs the daemon %s ms of CPU (%d back to back)' % (
            cost['bytes'], cost['daemon_cpu_ms_per_scrape'], cost['scrapes']))
        for row in results['summary']:
            print('concurrency %d: one scrape a second is %.2f %% of B\'s CPU' % (
                row['concurrency'], 100 * row['scrape_share']))
    print('\nresults: %s' % args.out)
    for row in results['summary']:
        if row['concurrency'] == max(results['meta']['concurrencies']):
            b = row['B']
            print('no-drop check (B, concurrency %d): %s (errors %d, timeouts %d, '
                  'retransmits %d)' % (row['concurrency'], 'PASS' if b['clean'] else 'FAIL',
                                       b['error_count'], b['timeout_count'], b['retransmits']))
    return 0


if __name__ == '__main__':
    sys.exit(main())
