"""Load generator for the RTPproxy control protocol over UDP.

K concurrent session slots each run call cycles until the time (or cycle budget) is up:

    U <cid> <addr> <port> <ftag>          -> expects `<port> <addr>`
    L <cid> <addr> <port> <ftag> <ttag>   -> expects `<port> <addr>` (a positive answer)
    [Q <cid> <ftag> <ttag>]               -> expects five numbers   (--mix-q PCT of the cycles)
    [Ib]                                  -> expects the info lines (--mix-ib PCT of the cycles)
    D <cid> <ftag> <ttag>                 -> expects `0`

Every command has its own cookie; a command without answer is retransmitted with the same
cookie after --timeout seconds (later retransmits up to --jitter x --timeout later still), up to
--tries sends in all, then counted as a timeout.  Each
reply is checked and wrong ones are counted by command and kind (`U:E72`, `D:form`, ...).

Counting: commands, cycles and latencies are taken from replies that arrive inside the
measurement window (after --warmup); errors, retransmits and timeouts are counted over the
whole run, warm-up and the drain of in-flight cycles included.  Latency is measured from the
first send of a cookie to its reply.

With --live-sessions N, N sessions (U only) are created first, stay in place while the cycles
run, and are deleted at the end.

One thread, non-blocking connected UDP sockets (--sockets, default 1) and an epoll selector.

    python -m bench.loadgen --target 127.0.0.1:22222 -c 16 -d 10 --mix-q 10 --mix-ib 5
    python -m bench.loadgen --self-test     # capacity of the generator against bench.fakemember
"""
from __future__ import annotations

import argparse
import json
import os
import random
import selectors
import socket
import sys
import time
from collections import Counter
from heapq import heappop, heappush

CMD_TYPES = ('U', 'L', 'D', 'Ib', 'Q')
INFO_PREFIXES = (b'sessions created: ', b'active sessions: ', b'active streams: ',
                 b'packets received: ', b'packets transmitted: ')


# ---------------------------------------------------------------------------------------------
# reply checks: None when the reply body (bytes after the cookie and its space) is right,
# otherwise the kind of error ('E50', 'form', 'not-found', ...)

def _error_kind(body: bytes) -> str:
    code = body[:-1] if body.endswith(b'\n') else body
    if code[:1] == b'E' and code[1:].isdigit():
        return code.decode('latin-1')
    return 'form'


def check_port(body: bytes) -> str | None:
    """U and L: `<port> <addr>` with a non-zero port."""
    parts = body.split()
    if body.endswith(b'\n') and len(parts) == 2 and parts[0].isdigit():
        port = int(parts[0])
        if 0 < port < 65536:
            return None
    if body == b'0\n':
        return 'not-found'
    return _error_kind(body)


def check_zero(body: bytes) -> str | None:
    """D: `0`."""
    return None if body == b'0\n' else _error_kind(body)


def check_zero_or_gone(body: bytes) -> str | None:
    """D after a failed U/L/Q: the session may or may not exist."""
    return None if body in (b'0\n', b'E50\n') else _error_kind(body)


def check_info(body: bytes) -> str | None:
    """Ib: five `name: number` lines, each ending with a newline."""
    lines = body.split(b'\n')
    if len(lines) != 6 or lines[5] != b'':
        return _error_kind(body)
    for line, prefix in zip(lines, INFO_PREFIXES):
        if not line.startswith(prefix) or not line[len(prefix):].isdigit():
            return 'form'
    return None


def check_query(body: bytes) -> str | None:
    """Q: five numbers (ttl and four packet counters)."""
    parts = body.split()
    if body.endswith(b'\n') and len(parts) == 5 and all(p.isdigit() for p in parts):
        return None
    return _error_kind(body)


# ---------------------------------------------------------------------------------------------

def percentile(sorted_values: list, q: float):
    """Nearest-rank percentile of an already sorted list (None when empty)."""
    if not sorted_values:
        return None
    rank = max(1, min(len(sorted_values), int(q / 100.0 * len(sorted_values) + 0.999999)))
    return sorted_values[rank - 1]


class Stats:
    """Counters of one phase of a load generator run (mergeable across rounds)."""

    def __init__(self, phase: str = 'cycles', concurrency: int = 0) -> None:
        self.phase = phase
        self.concurrency = concurrency
        self.lat_ns: dict[str, list[int]] = {t: [] for t in CMD_TYPES}
        self.errors: Counter = Counter()
        self.timeouts: Counter = Counter()
        self.retransmits = 0
        self.late_replies = 0          # replies to cookies no longer waited for (duplicates)
        self.abandoned = 0             # commands still unanswered when the drain time ran out
        self.timeout_samples: list[str] = []   # the first few commands that got no answer
        self.replies = 0               # every matched reply, warm-up and drain included
        self.cycles = 0
        self.cycles_failed = 0
        self.window_s = 0.0
        self.wall_s = 0.0
        self.cpu_s = 0.0               # CPU time of the load generator itself

    @property
    def commands(self) -> int:
        return sum(len(v) for v in self.lat_ns.values())

    @classmethod
    def merge(cls, parts: list['Stats']) -> 'Stats':
        out = cls(parts[0].phase if parts else 'cycles', parts[0].concurrency if parts else 0)
        for p in parts:
            for t in CMD_TYPES:
                out.lat_ns[t].extend(p.lat_ns[t])
            out.errors.update(p.errors)
            out.timeout_samples = (out.timeout_samples + p.timeout_samples)[:5]
            out.timeouts.update(p.timeouts)
            for name in ('retransmits', 'late_replies', 'abandoned', 'replies', 'cycles',
                         'cycles_failed', 'window_s', 'wall_s', 'cpu_s'):
                setattr(out, name, getattr(out, name) + getattr(p, name))
        return out

    def latency_ms(self) -> dict:
        out = {}
        for t in CMD_TYPES:
            values = sorted(self.lat_ns[t])
            if values:
                out[t] = {'n': len(values),
                          'p50': round(percentile(values, 50) / 1e6, 3),
                          'p95': round(percentile(values, 95) / 1e6, 3),
                          'p99': round(percentile(values, 99) / 1e6, 3),
                          'max': round(values[-1] / 1e6, 3)}
        return out

    def summary(self) -> dict:
        window = self.window_s or float('nan')
        return {
            'phase': self.phase,
            'concurrency': self.concurrency,
            'window_s': round(self.window_s, 3),
            'cycles': self.cycles,
            'cycles_failed': self.cycles_failed,
            'cycles_per_s': round(self.cycles / window, 1),
            'commands': self.commands,
            'commands_per_s': round(self.commands / window, 1),
            'latency_ms': self.latency_ms(),
            'errors': dict(sorted(self.errors.items())),
            'error_count': sum(self.errors.values()),
            'retransmits': self.retransmits,
            'timeouts': dict(sorted(self.timeouts.items())),
            'timeout_count': sum(self.timeouts.values()),
            'timeout_samples': self.timeout_samples,
            'replies_total': self.replies,
            'late_replies': self.late_replies,
            'abandoned': self.abandoned,
            'loadgen_cpu_pct': round(100.0 * self.cpu_s / self.wall_s, 1) if self.wall_s else None,
        }


class LoadGen:
    """Drives one RTPproxy-protocol UDP target: create_live(), run(), delete_live(), close()."""

    def __init__(self, target: tuple[str, int], concurrency: int = 1, sockets: int = 1,
                 timeout: float = 1.0, tries: int = 5, mix_ib: float = 0.0, mix_q: float = 0.0,
                 jitter: float = 0.1,
                 media_addr: str = '127.0.0.1', seed: int | None = None,
                 live_concurrency: int = 128, rate: float | None = None,
                 hold: float = 0.0) -> None:
        if rate is not None and rate <= 0:
            raise ValueError('rate must be > 0 cycles/s')
        if concurrency < 1 or sockets < 1 or tries < 1 or timeout <= 0:
            raise ValueError('concurrency, sockets and tries must be >= 1, timeout > 0')
        self.target = target
        self.concurrency = concurrency
        self.timeout_ns = int(timeout * 1e9)
        self.tries = tries
        self.jitter = jitter
        self.mix_ib = mix_ib
        self.mix_q = mix_q
        self.media_addr = media_addr
        self.live_concurrency = live_concurrency
        self.rate = rate                    # cycles/s offered in all (None: closed loop)
        self.hold = hold                    # s before L (ringing) and before D (talking)
        self.rng = random.Random(seed)
        nonce = random.SystemRandom().getrandbits(24)
        self.run_id = 'b%x%x' % (os.getpid(), nonce)        # call-id prefix, unique per generator
        self._cookie_prefix = ('%x%x_' % (os.getpid() & 0xffff, nonce)).encode()
        self._seq = 0
        self._cycle_seq = 0
        self.live: list[str] = []
        self._stopping = False
        self._counting = False
        self._cycles_left: int | None = None
        self.socks = []
        self.sel = selectors.DefaultSelector()
        for _ in range(sockets):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            s.bind((target[0] if target[0].startswith('127.') else '0.0.0.0', 0))
            s.connect(target)
            s.setblocking(False)
            self.sel.register(s, selectors.EVENT_READ)
            self.socks.append(s)

    def close(self) -> None:
        self.sel.close()
        for s in self.socks:
            s.close()
        self.socks = []

    # -- scripts: generators yielding (type, command, check); they receive True when the reply
    #    passed its check, False for a wrong reply, None for a timeout.

    def _cycle_script(self, slot: int, stats: Stats):
        addr, rng, mix_q, mix_ib = self.media_addr, self.rng, self.mix_q, self.mix_ib
        port_a = 10000 + 4 * (slot % 5000)
        port_b = port_a + 2
        while not self._stopping:
            if self._cycles_left is not None:
                if self._cycles_left <= 0:
                    return
                self._cycles_left -= 1
            self._cycle_seq += 1
            cid = '%s-%d' % (self.run_id, self._cycle_seq)
            ftag, ttag = 'f%d' % slot, 't%d' % slot
            ok = yield 'U', 'U %s %s %d %s' % (cid, addr, port_a, ftag), check_port
            if ok:
                ok = yield 'L', 'L %s %s %d %s %s' % (cid, addr, port_b, ftag, ttag), check_port
                if ok and mix_q and rng.random() * 100.0 < mix_q:
                    ok = yield 'Q', 'Q %s %s %s' % (cid, ftag, ttag), check_query
            if mix_ib and rng.random() * 100.0 < mix_ib:
                ok = (yield 'Ib', 'Ib', check_info) and ok
            check_d = check_zero if ok else check_zero_or_gone
            done = yield 'D', 'D %s %s %s' % (cid, ftag, ttag), check_d
            if self._counting:
                if ok and done:
                    stats.cycles += 1
                else:
                    stats.cycles_failed += 1

    def _live_create_script(self, numbers):
        for i in numbers:                      # an iterator shared by all slots
            cid = '%s-live-%d' % (self.run_id, i)
            if (yield 'U', 'U %s %s %d lf' % (cid, self.media_addr, 30000 + 2 * (i % 10000)),
                    check_port):
                self.live.append(cid)

    def _live_delete_script(self, cids):
        for cid in cids:                       # an iterator shared by all slots
            yield 'D', 'D %s lf' % cid, check_zero

    # -- phases

    def run(self, duration: float | None = 10.0, cycles: int | None = None,
            warmup: float = 0.0) -> Stats:
        """Call cycles for `duration` seconds after `warmup` (or until `cycles` are started)."""
        if duration is None and cycles is None:
            raise ValueError('need a duration or a number of cycles')
        stats = Stats('cycles', self.concurrency)
        self._cycles_left = cycles
        scripts = [self._cycle_script(slot, stats) for slot in range(self.concurrency)]
        self._drive(scripts, stats, warmup, duration, pace=self.rate, hold=self.hold)
        self._cycles_left = None
        return stats

    def create_live(self, n: int, limit: float = 600.0) -> Stats:
        """Create `n` sessions with U only (they stay until delete_live()); gives up after
        `limit` seconds."""
        stats = Stats('create-live', self.live_concurrency)
        numbers = iter(range(len(self.live), len(self.live) + n))
        self._drive([self._live_create_script(numbers) for _ in range(self.live_concurrency)],
                    stats, 0.0, None, limit)
        return stats

    def delete_live(self, limit: float = 600.0) -> Stats:
        """Delete the sessions of create_live(); gives up after `limit` seconds."""
        stats = Stats('delete-live', self.live_concurrency)
        cids = iter(self.live)
        self._drive([self._live_delete_script(cids) for _ in range(self.live_concurrency)],
                    stats, 0.0, None, limit)
        self.live = []
        return stats

    # -- the loop

    def _drive(self, scripts: list, stats: Stats, warmup: float, duration: float | None,
               limit: float = 600.0, pace: float | None = None, hold: float = 0.0) -> None:
        """Run `scripts` to completion.  Replies inside [start+warmup, start+warmup+duration)
        are counted; after that the scripts are asked to stop and in-flight work is drained
        (bounded by the retransmission budget).  Without a duration, `limit` seconds bound
        the whole run.

        With `pace` (cycles/s), every slot starts its cycles on a fixed schedule, the slots
        staggered, so the target is offered `pace` cycles/s whatever its latency (open loop,
        as long as a cycle fits in concurrency/pace seconds); a cycle that cannot start on
        time starts at once and the schedule is kept, so a stall is not hidden.
        With `hold` (s), L and D wait that long after the previous reply, so calls live
        longer than the target's write-behind interval, as real ones do."""
        mono = time.monotonic_ns
        timeout_ns, tries = self.timeout_ns, self.tries
        socks, nsocks = self.socks, len(self.socks)
        prefix = self._cookie_prefix
        lat = stats.lat_ns
        errors = stats.errors
        pending: dict[bytes, list] = {}
        waits: list = []                 # heap of (deadline, cookie, try)
        jitter_ns = int(self.timeout_ns * self.jitter)
        randbelow = self.rng.randrange
        start = mono()
        cpu0 = time.process_time()
        t_from = start + int(warmup * 1e9)
        t_to = t_from + int(duration * 1e9) if duration is not None else None
        drain_ns = timeout_ns * tries + 2_000_000_000
        hard_end = (t_to + drain_ns) if t_to is not None else start + int(limit * 1e9)
        self._stopping = False

        interval_ns = int(len(scripts) * 1e9 / pace) if pace else 0
        next_start = [start + int(k * 1e9 / pace) for k in range(len(scripts))] if pace else []
        delayed: list = []               # heap of (start time, slot, gen, step): paced cycles

        def send_now(gen, step, slot: int, now: int) -> None:
            typ, text, check = step
            self._seq += 1
            cookie = prefix + b'%x' % self._seq
            payload = cookie + b' ' + text.encode('latin-1')
            sock = socks[slot % nsocks]
            try:
                sock.send(payload)
            except OSError:
                pass                             # lost like a dropped datagram: retransmitted
            pending[cookie] = [gen, typ, check, now, 1, payload, sock, slot]
            heappush(waits, (now + timeout_ns, cookie, 1))

        hold_ns = int(hold * 1e9)

        def issue(gen, step, slot: int, now: int) -> None:
            if interval_ns and step[0] == 'U':
                due = next_start[slot]
                next_start[slot] = due + interval_ns
                if due > now:
                    heappush(delayed, (due, slot, gen, step))
                    return
            elif hold_ns and step[0] in ('L', 'D'):
                heappush(delayed, (now + hold_ns, slot, gen, step))
                return
            send_now(gen, step, slot, now)

        active = 0
        now = mono()
        for slot, gen in enumerate(scripts):
            step = next(gen, None)
            if step is not None:
                issue(gen, step, slot, now)
                active += 1

        select = self.sel.select
        while active:
            now = mono()
            if now >= hard_end:
                break
            if t_to is not None and now >= t_to:
                self._stopping = True        # scripts stop at their next cycle boundary
            while delayed and delayed[0][0] <= now:
                _, slot, gen, step = heappop(delayed)
                send_now(gen, step, slot, now)
            wait_s = 0.05
            if waits:
                wait_s = min(wait_s, max(0.0, (waits[0][0] - now) / 1e9))
            if delayed:
                wait_s = min(wait_s, max(0.0, (delayed[0][0] - now) / 1e9))
            for key, _ in select(wait_s):
                recv = key.fileobj.recv
                while True:
                    try:
                        data = recv(65535)
                    except BlockingIOError:
                        break
                    except ConnectionRefusedError:
                        errors['refused'] += 1
                        break
                    now = mono()
                    cookie, _, body = data.partition(b' ')
                    entry = pending.pop(cookie, None)
                    if entry is None:
                        stats.late_replies += 1
                        continue
                    stats.replies += 1
                    gen, typ, check, sent, _, _, _, slot = entry
                    err = check(body)
                    if err is not None:
                        errors['%s:%s' % (typ, err)] += 1
                    counting = t_from <= now and (t_to is None or now < t_to)
                    self._counting = counting
                    if counting:
                        lat[typ].append(now - sent)
                    try:
                        step = gen.send(err is None)
                    except StopIteration:
                        active -= 1
                    else:
                        issue(gen, step, slot, now)
            now = mono()
            while waits and waits[0][0] <= now:
                _, cookie, attempt = heappop(waits)
                entry = pending.get(cookie)
                if entry is None or entry[4] != attempt:
                    continue
                if attempt < tries:
                    entry[4] = attempt + 1
                    stats.retransmits += 1
                    try:
                        entry[6].send(entry[5])
                    except OSError:
                        pass
                    # a little jitter keeps retransmits from locking onto a periodic stall
                    deadline = now + timeout_ns + (randbelow(jitter_ns) if jitter_ns else 0)
                    heappush(waits, (deadline, cookie, attempt + 1))
                    continue
                del pending[cookie]
                stats.timeouts[entry[1]] += 1
                if len(stats.timeout_samples) < 5:
                    stats.timeout_samples.append(entry[5].decode('latin-1'))
                self._counting = t_from <= now and (t_to is None or now < t_to)
                try:
                    step = entry[0].send(None)
                except StopIteration:
                    active -= 1
                else:
                    issue(entry[0], step, entry[7], now)
        stats.abandoned += len(pending)
        for gen in scripts:
            gen.close()
        end = mono()
        stats.window_s += ((min(end, t_to) if t_to is not None else end) - min(t_from, end)) / 1e9
        stats.wall_s += (end - start) / 1e9
        stats.cpu_s += time.process_time() - cpu0


# ---------------------------------------------------------------------------------------------
# reporting

def format_table(rows: list[tuple[str, dict]]) -> str:
    """A plain-text table of summaries: one line per (label, summary)."""
    head = ('%-24s %5s %9s %10s %7s %7s %7s %7s %7s %5s %5s %5s' %
            ('run', 'conc', 'cycles/s', 'cmds/s', 'U p50', 'U p99', 'L p50', 'D p50', 'D p99',
             'err', 'rtx', 'tmo'))
    lines = [head, '-' * len(head)]
    for label, s in rows:
        lat = s['latency_ms']

        def ms(t, q):
            return '%.3f' % lat[t][q] if t in lat else '-'
        lines.append('%-24s %5d %9.1f %10.1f %7s %7s %7s %7s %7s %5d %5d %5d' % (
            label[:24], s['concurrency'], s['cycles_per_s'], s['commands_per_s'],
            ms('U', 'p50'), ms('U', 'p99'), ms('L', 'p50'), ms('D', 'p50'), ms('D', 'p99'),
            s['error_count'], s['retransmits'], s['timeout_count']))
    return '\n'.join(lines)


def format_latency(summary: dict) -> str:
    lines = ['%-4s %8s %9s %9s %9s %9s' % ('cmd', 'n', 'p50 ms', 'p95 ms', 'p99 ms', 'max ms')]
    for t, v in summary['latency_ms'].items():
        lines.append('%-4s %8d %9.3f %9.3f %9.3f %9.3f' % (t, v['n'], v['p50'], v['p95'],
                                                           v['p99'], v['max']))
    if summary['loadgen_cpu_pct'] is not None:
        lines.append('load generator CPU: %.1f%% of one core' % summary['loadgen_cpu_pct'])
    if summary['errors']:
        lines.append('errors: ' + ', '.join('%s=%d' % kv for kv in summary['errors'].items()))
    if summary['timeouts']:
        lines.append('timeouts: ' + ', '.join('%s=%d' % kv for kv in summary['timeouts'].items()))
    return '\n'.join(lines)


def parse_hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(':')
    return host or '127.0.0.1', int(port)


def run_phases(target: tuple[str, int], args) -> list[tuple[str, dict]]:
    """The command line's run: [create live sessions,] call cycles[, delete live sessions]."""
    gen = LoadGen(target, args.concurrency, sockets=args.sockets, timeout=args.timeout,
                  tries=args.tries, mix_ib=args.mix_ib, mix_q=args.mix_q, jitter=args.jitter,
                  seed=args.seed, rate=args.rate, hold=args.hold)
    phases = []
    try:
        if args.live_sessions:
            phases.append(('create-live', gen.create_live(args.live_sessions).summary()))
        phases.append(('cycles', gen.run(args.duration, args.cycles, args.warmup).summary()))
    finally:
        if gen.live:
            phases.append(('delete-live', gen.delete_live().summary()))
        gen.close()
    return phases


def self_test(args) -> list[tuple[str, dict]]:
    """Capacity of the generator: drive bench.fakemember, each pinned to its own CPU."""
    from bench.members import Fleet, free_udp_port
    cpus = sorted(os.sched_getaffinity(0))
    with Fleet() as fleet:
        port = free_udp_port()
        fake = fleet.fake_member('fake-echo', port)
        if len(cpus) >= 2:
            os.sched_setaffinity(fake.pid, {cpus[1]})
            os.sched_setaffinity(0, {cpus[0]})
        try:
            return run_phases(('127.0.0.1', port), args)
        finally:
            os.sched_setaffinity(0, set(cpus))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description='RTPproxy control protocol load generator (UDP)')
    ap.add_argument('--target', help='HOST:PORT of the RTPproxy or cluster control socket')
    ap.add_argument('--self-test', action='store_true',
                    help='measure the generator itself against bench.fakemember')
    ap.add_argument('-c', '--concurrency', type=int, default=16, help='session slots (16)')
    ap.add_argument('--rate', type=float, default=None,
                    help='offer this many cycles/s in all (open loop); default: closed loop')
    ap.add_argument('--hold', type=float, default=0.0,
                    help='seconds before L and before D of every call (0)')
    ap.add_argument('-d', '--duration', type=float, default=10.0, help='seconds measured (10)')
    ap.add_argument('-n', '--cycles', type=int, default=None,
                    help='stop after this many cycles instead of after --duration')
    ap.add_argument('--warmup', type=float, default=1.0, help='seconds not counted (1)')
    ap.add_argument('--mix-ib', type=float, default=0.0, help='%% of cycles with an Ib (0)')
    ap.add_argument('--mix-q', type=float, default=0.0, help='%% of cycles with a Q (0)')
    ap.add_argument('--live-sessions', type=int, default=0,
                    help='create N sessions first, keep them during the run, delete them after')
    ap.add_argument('--timeout', type=float, default=1.0, help='seconds before a retransmit (1)')
    ap.add_argument('--tries', type=int, default=5, help='sends per command incl. retransmits (5)')
    ap.add_argument('--jitter', type=float, default=0.1,
                    help='retransmit after timeout x (1 + up to JITTER) (0.1)')
    ap.add_argument('--sockets', type=int, default=1, help='UDP sockets (1)')
    ap.add_argument('--seed', type=int, default=None, help='seed of the Q/Ib mix')
    ap.add_argument('--json', help='also write the JSON result to this file')
    args = ap.parse_args(argv)
    if args.cycles is not None:
        args.duration = None
    if args.self_test:
        target = 'bench.fakemember (self-test, one CPU each)'
        phases = self_test(args)
    elif args.target:
        target = args.target
        phases = run_phases(parse_hostport(args.target), args)
    else:
        ap.error('--target or --self-test is required')
    result = {'target': target, 'phases': dict(phases)}
    print(format_table(phases))
    print()
    print(format_latency(result['phases']['cycles']))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == '__main__':
    sys.exit(main())
