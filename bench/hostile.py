"""Hostile local clients against the daemon: memory and descriptors (issue 16, items 2 and 3).

    python -m bench.hostile [--root DIR] [--seconds 20] [--idle 20000] [SCENARIO...]

Scenarios (all by default), each against a fresh daemon with two scripted members
(bench/fakemember.py) and one UDP and one unix control socket:

  noread     one unix client writes `VF 20040107` lines for --seconds and never reads:
             the daemon's RSS before and after, and how much it read
  idle       --idle idle connections to the unix control socket (from child processes,
             9,000 each), then: does the admin socket answer `ls`, does a new control
             client get `V` answered, how many descriptors does the daemon hold
  halfclose  one-shot `U` and `D` followed by shutdown(SHUT_WR): is the reply there
  udpflood   unique 8,000-byte cookies, then unique 1,019-byte cookies, for --seconds each:
             RSS at the end of each flood and 25 s after the second

`--root` runs the daemon from another source tree (e.g. an export of an older commit) to
measure before and after.  Prints one JSON object per scenario.
"""
from __future__ import annotations

import argparse
import json
import os
import select
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHILD_CONNECTIONS = 9_000


def rss_mib(pid: int) -> float:
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024
    return float('nan')


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class Daemon:
    def __init__(self, root: str) -> None:
        self.tmp = tempfile.mkdtemp(prefix='rtpc-hostile-')
        self.children: list[subprocess.Popen] = []
        members = ''
        for i in range(2):
            port = free_port()
            member = self._spawn([sys.executable, '-m', 'bench.fakemember', '--listen',
                                  '127.0.0.1:%d' % port], HERE, stdout=subprocess.PIPE)
            member.stdout.readline()
            members += ('<rtpproxy><name>m%d</name><protocol>udp</protocol>'
                        '<address>127.0.0.1:%d</address><weight>1</weight>'
                        '<capacity>1000000</capacity><status>ACTIVE</status></rtpproxy>'
                        % (i, port))
        self.udp = ('127.0.0.1', free_port())
        self.unix = os.path.join(self.tmp, 'control.sock')
        self.admin = os.path.join(self.tmp, 'admin.sock')
        config = os.path.join(self.tmp, 'rtp_cluster.xml')
        with open(config, 'w') as f:
            f.write('<rtp_cluster_config><rtp_cluster><name>u</name><protocol>udp</protocol>'
                    '<address>127.0.0.1:%d</address>%s</rtp_cluster><rtp_cluster><name>s</name>'
                    '<protocol>unix</protocol><address>%s</address>%s</rtp_cluster>'
                    '</rtp_cluster_config>' % (self.udp[1], members, self.unix, members))
        self.proc = self._spawn([sys.executable, '-m', 'rtp_cluster.app', '-f', '-c', config,
                                 '-s', 'unix:' + self.admin, '-P',
                                 os.path.join(self.tmp, 'pid')], root,
                                stdout=open(os.path.join(self.tmp, 'log'), 'w'))
        deadline = time.monotonic() + 15
        while self.udp_command(b'w V', 0.2) != b'w 20040107\n':
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise SystemExit('the daemon did not start; see %s/log' % self.tmp)
        time.sleep(2.5)                      # members online

    def _spawn(self, argv, cwd, **kwargs) -> subprocess.Popen:
        proc = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL,
                                stderr=subprocess.STDOUT, **kwargs)
        self.children.append(proc)
        return proc

    def udp_command(self, datagram: bytes, timeout: float = 2.0) -> bytes | None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            s.sendto(datagram, self.udp)
            try:
                return s.recv(65535)
            except OSError:
                return None

    def rss(self) -> float:
        return rss_mib(self.proc.pid)

    def fds(self) -> int:
        return len(os.listdir('/proc/%d/fd' % self.proc.pid))

    def stop(self) -> None:
        for proc in reversed(self.children):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def unix_exchange(path: str, data: bytes, half_close: bool, timeout: float = 3.0) -> bytes | str:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(path)
            s.sendall(data)
            if half_close:
                s.shutdown(socket.SHUT_WR)
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
                if not half_close and chunk.endswith(b'\n'):
                    break
            return b''.join(chunks)
    except OSError as exc:
        return '%s: %s' % (type(exc).__name__, exc)


def noread(d: Daemon, seconds: float) -> dict:
    before = d.rss()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(d.unix)
    s.sendall(b'V\n')
    s.recv(100)
    s.setblocking(False)
    chunk = b'VF 20040107\n' * 5000
    sent = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            sent += s.send(chunk)
        except BlockingIOError:
            select.select([], [s], [], 0.05)
    after = d.rss()
    other = d.udp_command(b'o V')
    s.close()
    return {'rss_before_mib': round(before, 1), 'rss_after_mib': round(after, 1),
            'bytes_taken_mib': round(sent / 2**20, 1), 'others_served': other == b'o 20040107\n'}


def _hold_connections(path: str, count: int) -> None:
    """Child process: open `count` idle connections, report how many, hold them."""
    held = []
    for _ in range(count):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(2.0)
        for _ in range(200):
            try:
                s.connect(path)
                held.append(s)
                break
            except BlockingIOError:
                time.sleep(0.005)
            except OSError:
                break
    print(len(held), flush=True)
    sys.stdin.read()


def idle(d: Daemon, count: int) -> dict:
    children = []
    opened = 0
    for start in range(0, count, CHILD_CONNECTIONS):
        n = min(CHILD_CONNECTIONS, count - start)
        child = subprocess.Popen([sys.executable, '-c', 'from bench.hostile import '
                                  '_hold_connections as h; h(%r, %d)' % (d.unix, n)],
                                 cwd=HERE, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        children.append(child)
        opened += int(child.stdout.readline() or 0)
    show = (lambda r: r if isinstance(r, str) else r.decode())
    at_once = unix_exchange(d.unix, b'V', half_close=False)
    time.sleep(6)                   # the idle connections are now evictable (EVICT_IDLE 5 s)
    admin = unix_exchange(d.admin, b'ls\n', half_close=True)
    control = unix_exchange(d.unix, b'V', half_close=False)
    result = {'connections_opened': opened, 'daemon_fds': d.fds(),
              'admin_ls_ok': isinstance(admin, bytes) and admin.endswith(b'OK\n'),
              'admin_reply_tail': show(admin)[-30:],
              'new_control_client_at_once': show(at_once),
              'new_control_client_6s_later': show(control),
              'daemon_alive': d.proc.poll() is None}
    for child in children:
        child.stdin.close()
        child.wait(30)
    return result


def halfclose(d: Daemon) -> dict:
    u = unix_exchange(d.unix, b'U hostile-1 127.0.0.1 5000 ft1', half_close=True)
    dl = unix_exchange(d.unix, b'D hostile-1 ft1', half_close=True)
    lines = unix_exchange(d.unix, b'U hostile-2 127.0.0.1 5000 ft1\nD hostile-2 ft1\n', True)
    show = (lambda r: r.decode() if isinstance(r, bytes) else r)
    return {'one_shot_U': show(u), 'one_shot_D': show(dl), 'lines_U_D': show(lines)}


def _udp_flood(d: Daemon, cookie_len: int, seconds: float) -> int:
    answered = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(d.udp)
        s.setblocking(False)
        end = time.monotonic() + seconds
        i = 0
        outstanding = 0
        while time.monotonic() < end:
            while outstanding < 64:
                i += 1
                s.send(b'%s V' % (b'%d' % i).rjust(cookie_len, b'c'))
                outstanding += 1
            if select.select([s], [], [], 0.5)[0]:
                while True:
                    try:
                        s.recv(65535)
                    except BlockingIOError:
                        break
                    answered += 1
                    outstanding -= 1
            else:
                outstanding = 0
    return answered


def udpflood(d: Daemon, seconds: float) -> dict:
    start = d.rss()
    long_answers = _udp_flood(d, 8000, seconds)
    after_long = d.rss()
    max_answers = _udp_flood(d, 1019, seconds)
    after_max = d.rss()
    time.sleep(25)
    return {'rss_start_mib': round(start, 1),
            'cookies_8000': {'answered': long_answers, 'rss_mib': round(after_long, 1)},
            'cookies_1019': {'answered': max_answers, 'rss_mib': round(after_max, 1)},
            'rss_25s_later_mib': round(d.rss(), 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--root', default=HERE, help='source tree of the daemon (default: this one)')
    ap.add_argument('--seconds', type=float, default=20.0)
    ap.add_argument('--idle', type=int, default=20_000)
    ap.add_argument('scenarios', nargs='*', default=['noread', 'idle', 'halfclose', 'udpflood'])
    args = ap.parse_args(argv)
    for name in args.scenarios:
        d = Daemon(os.path.abspath(args.root))
        try:
            if name == 'noread':
                result = noread(d, args.seconds)
            elif name == 'idle':
                result = idle(d, args.idle)
            elif name == 'halfclose':
                result = halfclose(d)
            elif name == 'udpflood':
                result = udpflood(d, args.seconds)
            else:
                raise SystemExit('unknown scenario %s' % name)
        finally:
            d.stop()
        print(json.dumps({'scenario': name, 'root': args.root, **result}), flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
