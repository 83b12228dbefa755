"""Profile the rtp_cluster daemon (or the null forwarder) under the benchmark's load.

Starts the same processes as `bench.runner` (two rtp-io members behind the cluster, or behind
the null forwarder), drives them with bench/loadgen.py at each concurrency, and samples the
target process with py-spy (`record --native --idle`, collapsed stacks) meanwhile.  For every
concurrency it writes a short text summary: the share of samples per innermost Python function
(self time), per function anywhere on the stack (inclusive time), the share spent idle in the
event loop's poll, and the throughput and CPU per command seen while sampling.

    python -m bench.profile --concurrency 1,16 --duration 10            # the cluster
    python -m bench.profile --target nullfwd --concurrency 16           # the floor

Summaries go to bench/profiles/<target>-c<K>.txt (--out-dir); the raw collapsed stacks
(large) stay in a scratch directory unless --keep-raw names one.  py-spy must be installed in
the running Python's environment (`pip install -e '.[profile]'`), `perf` (linux-perf) for
--perf and --syscalls; sampling a process needs ptrace rights.
"""
from __future__ import annotations

import argparse
import datetime
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter

from bench.loadgen import LoadGen
from bench.members import CLK_TCK, ROOT, Fleet, cpu_ticks, free_udp_port
from bench.runner import HOST, media_ranges

# Innermost frames that mean the process waits for the kernel to report a readable socket.
IDLE_FRAMES = ('epoll_wait', 'doPoll', 'poll (selectors.py', 'select.epoll.poll', 'epoll_pwait')
# Innermost frames that are a socket system call: the kernel's share (wall clock: it includes
# the time the scheduler ran the receiving process instead, so on-CPU time is in --perf).
SYSCALL_FRAMES = ('sendto (libc', 'send (libc', 'recvfrom (libc', 'recv (libc',
                  'sendmsg (libc', 'recvmsg (libc')
TOP = 25


def py_spy() -> str:
    found = shutil.which('py-spy', path=os.path.dirname(sys.executable)) or shutil.which('py-spy')
    if found is None:
        raise SystemExit('py-spy not found: pip install py-spy into this environment')
    return found


def start_target(fleet: Fleet, kind: str) -> tuple[tuple[str, int], int]:
    """The target's control address and pid, with two real members behind it."""
    ranges = media_ranges(40000, 2000, 2)
    ports = [free_udp_port(HOST) for _ in range(3)]
    fleet.rtpp_member('m1', ports[0], ranges[0])
    fleet.rtpp_member('m2', ports[1], ranges[1])
    members = [(HOST, ports[0]), (HOST, ports[1])]
    if kind == 'nullfwd':
        child = fleet.null_forwarder('floor', ports[2], members)
    else:
        child = fleet.cluster(ports[2], [('m1', members[0]), ('m2', members[1])], HOST)
    return (HOST, ports[2]), child.pid


SYSCALLS = ('epoll_wait', 'recvfrom', 'sendto', 'recvmmsg', 'sendmmsg', 'recvmsg', 'sendmsg')


def sampler_argv(tool: str, pid: int, duration: float, raw_path: str, rate: int) -> list[str]:
    if tool == 'syscalls':
        events = ','.join('syscalls:sys_enter_%s' % name for name in SYSCALLS)
        return ['perf', 'stat', '-x', ',', '-e', events, '-p', str(pid), '-o', raw_path,
                '--', 'sleep', str(duration)]
    if tool == 'perf':
        return ['perf', 'record', '-q', '-F', str(rate), '-g', '-p', str(pid), '-o', raw_path,
                '--', 'sleep', str(duration)]
    return [py_spy(), 'record', '--native', '--idle', '-r', str(rate), '-d', str(int(duration)),
            '-p', str(pid), '-f', 'raw', '-o', raw_path]


def sample(addr, pid: int, concurrency: int, duration: float, raw_path: str,
           rate: int, tool: str = 'py-spy') -> dict:
    """Load at `concurrency` for `duration` s while `tool` samples `pid`; the load's figures."""
    gen = LoadGen(addr, concurrency, timeout=1.0, tries=5)
    gen.run(1.0, warmup=0.0)        # sessions and caches in place before sampling
    spy = subprocess.Popen(sampler_argv(tool, pid, duration, raw_path, rate),
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    before = cpu_ticks(pid)
    try:
        stats = gen.run(duration, warmup=0.0)
    finally:
        gen.close()
    used_us = (cpu_ticks(pid) - before) * 1e6 / CLK_TCK
    _, err = spy.communicate(timeout=duration + 30)
    if spy.returncode != 0:
        raise SystemExit('%s failed: %s' % (tool, err.strip()))
    summary = stats.summary()
    replies = stats.replies or 1
    return {'replies': stats.replies, 'cycles_per_s': summary['cycles_per_s'], 'commands_per_s': summary['commands_per_s'],
            'cpu_us_per_command': round(used_us / replies, 1),
            'errors': summary['error_count'], 'timeouts': summary['timeout_count']}


def read_collapsed(path: str) -> Counter:
    stacks: Counter = Counter()
    with open(path) as f:
        for line in f:
            stack, _, count = line.rstrip('\n').rpartition(' ')
            if stack and count.isdigit():
                stacks[stack] += int(count)
    return stacks


def frame_name(frame: str) -> str:
    """`handle (rtp_cluster/core/cluster.py:203)` -> `handle (rtp_cluster/core/cluster.py)`."""
    name, _, where = frame.partition(' (')
    path = where.rstrip(')').rsplit(':', 1)[0]
    for marker in ('site-packages/', 'lib/python3'):
        if marker in path:
            path = path.split(marker, 1)[1]
    path = path.replace(ROOT + os.sep, '')
    return '%s (%s)' % (name, path) if path else name


def is_idle(frames: list[str]) -> bool:
    return any(marker in frames[-1] for marker in IDLE_FRAMES)


def summarize(stacks: Counter) -> dict:
    total = sum(stacks.values()) or 1
    self_time: Counter = Counter()
    inclusive: Counter = Counter()
    idle = syscalls = 0
    for stack, count in stacks.items():
        frames = stack.split(';')
        if is_idle(frames):
            idle += count
            continue
        if any(marker in frames[-1] for marker in SYSCALL_FRAMES):
            syscalls += count
            continue
        self_time[frame_name(frames[-1])] += count
        for name in {frame_name(f) for f in frames}:
            inclusive[name] += count
    return {'total': total, 'idle': idle, 'syscalls': syscalls, 'self': self_time,
            'inclusive': inclusive}


def load_line(figures: dict) -> str:
    return ('# load: %.0f cycles/s, %.0f commands/s, %.1f us CPU per command, errors %d, '
            'timeouts %d' % (figures['cycles_per_s'], figures['commands_per_s'],
                             figures['cpu_us_per_command'], figures['errors'],
                             figures['timeouts']))


def perf_header(kind: str, concurrency: int, figures: dict, how: str = 'perf record -g') -> str:
    return '\n'.join(['# %s of the %s at concurrency %d' % (how, kind, concurrency),
                      '# %s (bench/profile.py)' % _now(),
                      load_line(figures), '', ''])


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')


def report(kind: str, concurrency: int, figures: dict, profile: dict, duration: float,
           rate: int) -> str:
    total = profile['total']
    busy = total - profile['idle']
    user = busy - profile['syscalls']
    lines = ['# py-spy profile of the %s at concurrency %d' % (kind, concurrency),
             '# %s, %d s at %d samples/s, `py-spy record --native --idle` (bench/profile.py)'
             % (_now(), duration, rate),
             load_line(figures),
             '# samples: %d; idle in the poll %.1f %%, in socket calls %.1f %%, in Python and '
             'the rest %.1f %%' % (total, 100.0 * profile['idle'] / total,
                                  100.0 * profile['syscalls'] / total, 100.0 * user / total),
             '', '## self time (innermost frame), % of the samples outside poll and socket calls']
    user = user or 1
    for name, count in profile['self'].most_common(TOP):
        lines.append('%6.1f  %s' % (100.0 * count / user, name))
    lines += ['', '## inclusive time (anywhere on the stack), same base']
    for name, count in profile['inclusive'].most_common(TOP + 12):
        lines.append('%6.1f  %s' % (100.0 * count / user, name))
    return '\n'.join(lines) + '\n'


def perf_summary(raw_path: str) -> str:
    """On-CPU samples only (perf): the share per shared object, then the top symbols."""
    def report(*sort: str) -> list[str]:
        out = subprocess.run(['perf', 'report', '-i', raw_path, '--no-children', '--stdio',
                              '-q', '-g', 'none', '--percent-limit', '0.7', '--sort', ','.join(sort)],
                             capture_output=True, text=True, check=True).stdout
        return [line.rstrip() for line in out.splitlines() if line.strip()]
    return '\n'.join(['## on-CPU samples by object (perf)'] + report('dso')
                     + ['', '## on-CPU samples by symbol (perf, >= 0.7 %)'] + report('dso', 'sym'))


def syscall_summary(raw_path: str, figures: dict) -> str:
    """System calls per command answered: how often the loop woke, how many datagrams moved."""
    counts = {}
    with open(raw_path) as f:
        for line in f:
            fields = line.strip().split(',')
            if len(fields) > 2 and fields[2].startswith('syscalls:sys_enter_'):
                counts[fields[2][len('syscalls:sys_enter_'):]] = int(fields[0] or 0)
    replies = figures['replies'] or 1
    lines = ['## system calls per command answered (perf stat; the load ran a little longer '
             'than the count)']
    for name in SYSCALLS:
        if counts.get(name):
            lines.append('%8.2f  %s' % (counts[name] / replies, name))
    return '\n'.join(lines) + '\n'


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description='py-spy profile of the cluster under load')
    ap.add_argument('--target', choices=('cluster', 'nullfwd'), default='cluster')
    ap.add_argument('--concurrency', default='1,16', help='comma list (1,16)')
    ap.add_argument('--duration', type=float, default=10.0, help='seconds sampled (10)')
    ap.add_argument('--rate', type=int, default=500, help='samples per second (500)')
    ap.add_argument('--out-dir', default=os.path.join(ROOT, 'bench', 'profiles'))
    ap.add_argument('--keep-raw', default=None, help='directory for the collapsed stacks')
    ap.add_argument('--perf', action='store_true',
                    help='sample on-CPU time with perf (kernel and native symbols) instead')
    ap.add_argument('--syscalls', action='store_true',
                    help='count socket and poll system calls per command (perf stat) instead')
    args = ap.parse_args(argv)
    raw_dir = args.keep_raw or tempfile.mkdtemp(prefix='rtpc-profile-')
    os.makedirs(args.out_dir, exist_ok=True)
    os.makedirs(raw_dir, exist_ok=True)
    try:
        with Fleet() as fleet:
            addr, pid = start_target(fleet, args.target)
            for conc in (int(c) for c in args.concurrency.split(',')):
                tool = 'syscalls' if args.syscalls else 'perf' if args.perf else 'py-spy'
                raw = os.path.join(raw_dir, '%s-c%d.%s' % (args.target, conc, tool))
                figures = sample(addr, pid, conc, args.duration, raw, args.rate, tool)
                if args.syscalls:
                    text = perf_header(args.target, conc, figures, 'perf stat') + \
                        syscall_summary(raw, figures)
                elif args.perf:
                    text = perf_header(args.target, conc, figures) + perf_summary(raw) + '\n'
                else:
                    text = report(args.target, conc, figures, summarize(read_collapsed(raw)),
                                  args.duration, args.rate)
                suffix = '' if tool == 'py-spy' else '-' + tool
                out = os.path.join(args.out_dir, '%s-c%d%s.txt' % (args.target, conc, suffix))
                with open(out, 'w') as f:
                    f.write(text)
                print(text)
                print('written: %s' % out, flush=True)
    finally:
        if args.keep_raw is None:
            shutil.rmtree(raw_dir, ignore_errors=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
