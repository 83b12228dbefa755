"""Stall benchmark (issue 16): does a bulk admin operation hold up the control path?

rtp_cluster in front of two scripted members (bench/fakemember.py) holds --sessions live
sessions (200,000 by default).  Then, for a baseline without admin work and for each bulk
admin operation in turn,

    ls numsessions (repeated)   ls sessions --all (repeated)   reload (repeated)
    terminate all (once, until every session is gone; it runs last)

the control path is measured while the operation runs: `V` every 10 ms from a separate
process (its latency p50/p99/max) and a load of --rate calls/s (U, L, D; loadgen) whose
latencies are reported per command.  The admin commands go over one admin connection from
a child process (starting an interpreter per command would compete with the daemon for
the CPU).  Printed as a table; written as JSON.  Beside the latencies, the daemon's own
garbage-collector pauses during each operation (`rtp_cluster_gc_pause_seconds`, read from
/metrics before and after it): how many full passes, their time in all and a bound of the
longest, and the CPU time they used (which, unlike the wall-clock figures, other tenants of
the machine do not stretch); and, from the kernel's scheduler statistics of the daemon's
event-loop thread, how long it ran and how long it was ready to run but waited for a CPU
(time the control path waits that no change to the daemon can remove).

    python -m bench.stall                      # 200,000 sessions, 1,000 calls/s
    python -m bench.stall --sessions 20000 --seconds 5
    python -m bench.stall --repeats 3 --rest 60   # the README's figures: three whole runs

With --repeats N the whole run (a fresh daemon and fresh members each time) is made N times,
--rest seconds apart so one run's aftermath does not load the next; the JSON holds every run
and, per operation, the spread (min-max over the runs) of each figure, and the verdict over
all of them.

Targets (issue 16): p99 <= 20 ms and max <= 100 ms during every operation; terminate all of
200,000 sessions within a minute.  On a shared machine the figures include the other
tenants' noise: say so when quoting them.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from bench.loadgen import LoadGen, Stats, percentile
from bench.members import (ROOT, Fleet, cluster_available, free_tcp_port, free_udp_port,
                           write_results)
from rtp_cluster.admin_client import read_reply

HOST = '127.0.0.1'
RESULTS = os.path.join(ROOT, 'bench', 'results', 'stall.json')
PROBE_INTERVAL = 0.01          # s between two V probes
TARGET_P99_MS, TARGET_MAX_MS, TARGET_TERMINATE_S = 20.0, 100.0, 60.0


# --- the V prober (a child process: its timing is not disturbed by the load generator) ---------

def probe_main(address: str, seconds: float) -> int:
    """Send V every PROBE_INTERVAL for `seconds` (or until SIGTERM); print the latencies
    (ms, None = no reply)."""
    host, _, port = address.rpartition(':')
    latencies: list[float | None] = []
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    end = time.monotonic() + seconds
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((host, int(port)))
        n = 0
        while time.monotonic() < end and not stop.is_set():
            n += 1
            cookie = b'v%d' % n
            sock.settimeout(2.0)
            started = time.monotonic()
            sock.send(cookie + b' V')
            try:
                while sock.recv(4096).split(b' ', 1)[0] != cookie:
                    pass
                latencies.append((time.monotonic() - started) * 1e3)
            except socket.timeout:
                latencies.append(None)
            time.sleep(PROBE_INTERVAL)
    print(json.dumps(latencies))
    return 0


def start_prober(address: tuple[str, int], seconds: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, '-m', 'bench.stall', '--probe',
                             '%s:%d' % address, '--seconds', str(seconds)],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True)


def prober_result(proc: subprocess.Popen) -> dict:
    out, _ = proc.communicate(timeout=120)
    values = json.loads(out)
    answered = sorted(v for v in values if v is not None)
    return {'n': len(values), 'lost': len(values) - len(answered),
            'p50': _round(percentile(answered, 50)), 'p99': _round(percentile(answered, 99)),
            'max': _round(answered[-1] if answered else None)}


def _round(value):
    return None if value is None else round(value, 2)


# --- admin operations (a child process on one admin connection: no interpreter start per
#     command competing with the daemon for the CPU) ---------------------------------------------

class AdminConnection:
    """One connection to the admin socket; `ask(line)` gives the reply lines."""

    def __init__(self, socket_path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(socket_path)

    def ask(self, line: str) -> list[str]:
        self.sock.sendall(line.encode() + b'\n')
        reply = read_reply(self.sock, 60.0)
        if reply[-1] != 'OK':
            raise RuntimeError('%s: %s' % (line, reply[-1]))
        return reply

    def close(self) -> None:
        self.sock.close()


def sessions_left(connection: AdminConnection) -> tuple[int, bool]:
    """(sessions, a bulk job still runs) from ls numsessions."""
    lines = connection.ask('ls numsessions')
    total = int(lines[0].rsplit(':', 1)[1])
    return total, any(line.startswith(('Terminating', 'Taking over')) for line in lines)


def admin_main(socket_path: str, command: str, seconds: float, pause: float) -> int:
    """`command` again and again for `seconds` (`terminate all`: once, then its progress
    until it is done); prints what it saw as JSON."""
    connection = AdminConnection(socket_path)
    started = time.monotonic()
    if command == 'terminate all':
        reply = connection.ask(command)
        while sessions_left(connection)[1]:
            time.sleep(0.25)
        result = {'seconds': round(time.monotonic() - started, 1), 'reply': reply[:2]}
    else:
        runs: list[float] = []
        lines = 0
        while time.monotonic() - started < seconds:
            begun = time.monotonic()
            lines = len(connection.ask(command))
            runs.append(time.monotonic() - begun)
            time.sleep(pause)
        result = {'runs': len(runs), 'lines_last_run': lines,
                  'seconds_per_run': round(sum(runs) / len(runs), 3)}
    connection.close()
    print(json.dumps(result))
    return 0


class AdminWork:
    """An admin operation run by a child process (admin_main) while the load runs."""

    def __init__(self, socket_path: str, command: str, seconds: float, pause: float) -> None:
        self.command = command
        self.argv = [sys.executable, '-m', 'bench.stall', '--admin', socket_path,
                     '--command', command, '--seconds', str(seconds), '--pause', str(pause)]
        self.proc: subprocess.Popen | None = None

    @property
    def once(self) -> bool:
        return self.command == 'terminate all'

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, cwd=ROOT, stdout=subprocess.PIPE, text=True)

    def finished(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def stop(self, timeout: float) -> dict:
        out, _ = self.proc.communicate(timeout=timeout)
        if self.proc.returncode != 0:
            raise RuntimeError('admin work %r failed' % self.command)
        return json.loads(out)


# --- the daemon's garbage-collector pauses (its /metrics) ----------------------------------------

GC_FAMILY = 'rtp_cluster_gc_pause_seconds'
GC_CPU_FAMILY = 'rtp_cluster_gc_cpu_seconds'


def gc_pauses(http_port: int) -> dict[str, dict]:
    """{generation: {bucket bound: cumulative passes, 'sum': seconds, 'cpu': seconds}}; {}
    when the daemon does not export the histogram (an older revision) or does not answer."""
    try:
        with urllib.request.urlopen('http://%s:%d/metrics' % (HOST, http_port),
                                    timeout=10) as reply:
            text = reply.read().decode()
    except OSError:
        return {}
    found: dict[str, dict] = {}
    for family in text_string_to_metric_families(text):
        if family.name not in (GC_FAMILY, GC_CPU_FAMILY):
            continue
        for sample in family.samples:
            one = found.setdefault(sample.labels['generation'], {})
            if sample.name.endswith('_bucket'):
                one[float(sample.labels['le'])] = sample.value
            elif sample.name.endswith('_sum'):
                one['sum'] = sample.value
            elif sample.name == GC_CPU_FAMILY + '_total':
                one['cpu'] = sample.value
    return found


def gc_between(before: dict, after: dict) -> dict | None:
    """Per generation: the passes between two readings, their milliseconds in all (wall
    clock and CPU) and the bucket bound the longest stayed within (ms); None without the
    histogram."""
    if not before or not after:
        return None
    out = {}
    for generation, buckets in sorted(after.items()):
        old = before.get(generation, {})
        passes = {bound: n - old.get(bound, 0) for bound, n in buckets.items()
                  if bound not in ('sum', 'cpu')}
        total = passes[float('inf')]
        longest = min(bound for bound, n in passes.items() if n == total) if total else 0.0
        out[generation] = {'passes': int(total),
                           'ms': round((buckets['sum'] - old.get('sum', 0.0)) * 1e3, 1),
                           'cpu_ms': round((buckets.get('cpu', 0.0) - old.get('cpu', 0.0)) * 1e3,
                                           1),
                           'longest_within_ms': longest * 1e3}
    return out


def schedstat(pid: int) -> tuple[float, float] | None:
    """(seconds on a CPU, seconds runnable but waiting for one) of `pid`'s main thread (the
    daemon's event loop), from /proc/PID/schedstat; None where the kernel has none."""
    try:
        with open('/proc/%d/schedstat' % pid) as f:
            ran, waited = f.read().split()[:2]
        return int(ran) / 1e9, int(waited) / 1e9
    except (OSError, ValueError):
        return None


def scheduled_between(before, after) -> dict | None:
    if before is None or after is None:
        return None
    return {'cpu_s': round(after[0] - before[0], 2),
            'waited_for_cpu_s': round(after[1] - before[1], 2)}


# --- one measurement ---------------------------------------------------------------------------

def load(addr: tuple[str, int], args) -> LoadGen:
    return LoadGen(addr, args.concurrency, timeout=1.0, tries=5, rate=args.rate, hold=args.hold)


def measure(name: str, addr: tuple[str, int], args, operation: AdminWork | None = None,
            http_port: int | None = None, daemon_pid: int | None = None) -> dict:
    """The control path's latencies while `operation` runs (None: the baseline)."""
    gc_before = gc_pauses(http_port) if http_port else {}
    sched_before = schedstat(daemon_pid) if daemon_pid else None
    begun = time.monotonic()
    once = operation is not None and operation.once
    seconds = args.terminate_limit if once else args.seconds
    prober = start_prober(addr, seconds)
    if operation is not None:
        operation.start()
    parts: list[Stats] = []
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        gen = load(addr, args)
        try:
            parts.append(gen.run(max(0.5, min(5.0, seconds - (time.monotonic() - started)))))
        finally:
            gen.close()
        if once and operation.finished():
            break
    if once:
        prober.send_signal(signal.SIGTERM)
    result = {'operation': name, 'v_ms': prober_result(prober)}
    stats = Stats.merge(parts).summary()
    result['load'] = {'cycles_per_s': stats['cycles_per_s'], 'latency_ms': stats['latency_ms'],
                      'errors': stats['errors'], 'timeouts': stats['timeouts']}
    if operation is not None:
        result['admin'] = operation.stop(args.terminate_limit)
    result['daemon'] = scheduled_between(sched_before,
                                         schedstat(daemon_pid) if daemon_pid else None)
    if result['daemon'] is not None:
        result['daemon']['seconds'] = round(time.monotonic() - begun, 1)
    result['gc'] = gc_between(gc_before, gc_pauses(http_port) if http_port else {})
    print(row(result), flush=True)
    return result


def row(result: dict) -> str:
    v = result['v_ms']
    lat = result['load']['latency_ms']
    cells = ['%-22s' % result['operation'],
             'V %6s %7s %7s' % (v['p50'], v['p99'], v['max'])]
    for letter in ('U', 'L', 'D'):
        one = lat.get(letter, {})
        cells.append('%s %6s %7s' % (letter, one.get('p99'), one.get('max')))
    admin_part = result.get('admin', {})
    if 'seconds' in admin_part:
        cells.append('took %s s' % admin_part['seconds'])
    elif admin_part:
        cells.append('%s runs, %s s each' % (admin_part['runs'], admin_part['seconds_per_run']))
    daemon = result.get('daemon')
    if daemon is not None:
        cells.append('daemon CPU %.1f s, waited %.1f s for a CPU'
                     % (daemon['cpu_s'], daemon['waited_for_cpu_s']))
    full = (result.get('gc') or {}).get('2')
    if full is not None:
        young = [result['gc'][g] for g in ('0', '1')]
        cells.append('GC full %d (%.0f ms, CPU %.0f, longest <= %g), young %d (%.0f ms, CPU %.0f)'
                     % (full['passes'], full['ms'], full['cpu_ms'], full['longest_within_ms'],
                        sum(g['passes'] for g in young), sum(g['ms'] for g in young),
                        sum(g['cpu_ms'] for g in young)))
    return ' | '.join(cells)


# --- the run -----------------------------------------------------------------------------------

def run(args) -> dict:
    """One whole run: a fresh fleet, the sessions, then every operation in turn."""
    results: dict = {'when': datetime.datetime.now(datetime.timezone.utc).isoformat(),
                     'loadavg_start': list(os.getloadavg()),
                     'host': platform.node(), 'cpus': os.cpu_count(),
                     'sessions_requested': args.sessions, 'rate': args.rate,
                     'seconds': args.seconds, 'targets': {
                         'p99_ms': TARGET_P99_MS, 'max_ms': TARGET_MAX_MS,
                         'terminate_all_s': TARGET_TERMINATE_S}, 'runs': []}
    with Fleet() as fleet:
        ports = [free_udp_port(HOST) for _ in range(3)]
        http_port = free_tcp_port(HOST)
        fleet.fake_member('fake1', ports[0])
        fleet.fake_member('fake2', ports[1])
        daemon = fleet.cluster(ports[2], [('fake1', (HOST, ports[0])), ('fake2', (HOST, ports[1]))],
                      HOST, capacity=max(1_000_000, 2 * args.sessions), http_port=http_port)
        addr = (HOST, ports[2])
        admin_socket = os.path.join(fleet.workdir, 'rtp_cluster-admin.sock')
        holder = LoadGen(addr, 1, timeout=1.0, live_concurrency=128)
        t0 = time.monotonic()
        created = holder.create_live(args.sessions).summary()
        results['create'] = {'sessions': len(holder.live),
                             'seconds': round(time.monotonic() - t0, 1),
                             'errors': created['errors'], 'timeouts': created['timeouts']}
        holder.close()
        print('%d sessions created in %.1f s' % (len(holder.live), results['create']['seconds']),
              flush=True)
        print('%-22s | V p50 p99 max (ms) | U/L/D p99 max (ms) at %d calls/s'
              % ('operation', args.rate), flush=True)
        runs = results['runs']
        runs.append(measure('baseline', addr, args, http_port=http_port, daemon_pid=daemon.pid))
        for command, pause in (('ls numsessions', 0.05), ('ls sessions --all', 0.1),
                               ('reload', 0.5), ('terminate all', 0.0)):
            runs.append(measure(command, addr, args,
                                AdminWork(admin_socket, command, args.seconds, pause), http_port,
                                daemon.pid))
        connection = AdminConnection(admin_socket)
        results['sessions_left'] = sessions_left(connection)[0]
        connection.close()
    results['loadavg_end'] = list(os.getloadavg())
    results['verdict'] = verdict(results)
    return results


def run_repeated(args) -> dict:
    """--repeats whole runs, --rest seconds apart, with the spread of every figure."""
    runs = []
    for number in range(1, args.repeats + 1):
        if number > 1:
            print('\nresting %g s before run %d' % (args.rest, number), flush=True)
            time.sleep(args.rest)
        print('\nrun %d of %d' % (number, args.repeats), flush=True)
        runs.append(run(args))
    return {'repeats': runs, 'spread': spread(runs), 'verdict': overall_verdict(runs)}


def spread(runs: list[dict]) -> dict:
    """Per operation, [min, max] over the runs of V p50/p99/max and of the worst U/L/D p99
    and max (the figures the README quotes)."""
    def figures(one: dict) -> dict:
        load = [f for f in one['load']['latency_ms'].values() if f.get('p99') is not None]
        out = {'v_p50': one['v_ms']['p50'], 'v_p99': one['v_ms']['p99'],
               'v_max': one['v_ms']['max'],
               'uld_p99': max((f['p99'] for f in load), default=None),
               'uld_max': max((f['max'] for f in load), default=None)}
        if 'seconds' in one.get('admin', {}):
            out['seconds'] = one['admin']['seconds']
        return out
    table: dict = {}
    for one_run in runs:
        for one in one_run['runs']:
            for key, value in figures(one).items():
                if value is not None:
                    table.setdefault(one['operation'], {}).setdefault(key, []).append(value)
    return {operation: {key: [min(values), max(values)] for key, values in keys.items()}
            for operation, keys in table.items()}


def overall_verdict(runs: list[dict]) -> dict:
    """Every target against the worst of all runs, and how many runs met all of them."""
    verdicts = [one['verdict'] for one in runs]
    terminates = [v['terminate_all_s'] for v in verdicts]
    return {'worst_p99_ms': max(v['worst_p99_ms'] for v in verdicts),
            'worst_max_ms': max(v['worst_max_ms'] for v in verdicts),
            'terminate_all_s': None if None in terminates else max(terminates),
            'p99_met': all(v['p99_met'] for v in verdicts),
            'max_met': all(v['max_met'] for v in verdicts),
            'terminate_met': all(v['terminate_met'] for v in verdicts),
            'runs_meeting_all': sum(v['p99_met'] and v['max_met'] and v['terminate_met']
                                    for v in verdicts),
            'runs': len(verdicts)}


def verdict(results: dict) -> dict:
    """Each target met or not, from the figures above (V and the load's U/L/D)."""
    worst_p99 = worst_max = 0.0
    for one in results['runs']:
        figures = [one['v_ms']] + list(one['load']['latency_ms'].values())
        worst_p99 = max([worst_p99] + [f['p99'] for f in figures if f.get('p99') is not None])
        worst_max = max([worst_max] + [f['max'] for f in figures if f.get('max') is not None])
    terminate = next((r['admin']['seconds'] for r in results['runs']
                      if r['operation'] == 'terminate all'), None)
    return {'worst_p99_ms': worst_p99, 'worst_max_ms': worst_max,
            'terminate_all_s': terminate,
            'p99_met': worst_p99 <= TARGET_P99_MS, 'max_met': worst_max <= TARGET_MAX_MS,
            'terminate_met': terminate is not None and terminate < TARGET_TERMINATE_S}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description='control-path latency during bulk admin work')
    ap.add_argument('--sessions', type=int, default=200_000)
    ap.add_argument('--rate', type=float, default=1000.0, help='calls/s of the load (1000)')
    ap.add_argument('--hold', type=float, default=0.1, help='s before L and before D (0.1)')
    ap.add_argument('--concurrency', type=int, default=256, help='call slots of the load')
    ap.add_argument('--seconds', type=float, default=10.0, help='per repeated operation (10)')
    ap.add_argument('--terminate-limit', type=float, default=120.0,
                    help='longest wait for terminate all (120 s)')
    ap.add_argument('--repeats', type=int, default=1, help='whole runs (1)')
    ap.add_argument('--rest', type=float, default=60.0, help='s between runs (60)')
    ap.add_argument('--out', default=RESULTS)
    ap.add_argument('--probe', metavar='HOST:PORT', help=argparse.SUPPRESS)
    ap.add_argument('--admin', metavar='SOCKET', help=argparse.SUPPRESS)
    ap.add_argument('--command', help=argparse.SUPPRESS)
    ap.add_argument('--pause', type=float, default=0.1, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.probe:
        return probe_main(args.probe, args.seconds)
    if args.admin:
        return admin_main(args.admin, args.command, args.seconds, args.pause)
    if not cluster_available():
        print('rtp_cluster daemon not found', file=sys.stderr)
        return 2
    if args.repeats < 1:
        ap.error('--repeats must be at least 1')
    results = run_repeated(args)
    write_results(args.out, results)
    print('\nverdict: %s' % json.dumps(results['verdict']))
    print('results: %s' % args.out)
    return 0


if __name__ == '__main__':
    sys.exit(main())
