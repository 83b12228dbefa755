"""Child processes of the benchmarks: real rtp-io members, fake members and the rtp_cluster daemon.

Every process is started with `subprocess.Popen`, tracked by a `Fleet` and stopped by its PID
(SIGTERM, then SIGKILL after a grace period) when the fleet is closed, also on errors.
"""
from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MEMBER_SCRIPT = os.path.join(ROOT, 'tools', 'rtpp_member.py')
CLK_TCK = os.sysconf('SC_CLK_TCK')


def free_udp_port(host: str = '127.0.0.1') -> int:
    """A UDP port that is free on `host` right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def free_tcp_port(host: str = '127.0.0.1') -> int:
    """A TCP port that is free on `host` right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def control_command(addr: tuple[str, int], cmd: str, timeout: float = 1.0) -> str | None:
    """One UDP control command; the reply body (with its newline), or None without an answer."""
    cookie = b'bq%x_%x' % (os.getpid(), time.monotonic_ns())
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(addr)
        s.send(cookie + b' ' + cmd.encode('latin-1'))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            s.settimeout(left)
            try:
                data = s.recv(65535)
            except (socket.timeout, ConnectionRefusedError):
                return None
            got, _, body = data.partition(b' ')
            if got == cookie:
                return body.decode('latin-1')


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process, in clock ticks (1/CLK_TCK s), from /proc/PID/stat."""
    with open('/proc/%d/stat' % pid) as f:
        stat = f.read()
    fields = stat[stat.rindex(')') + 2:].split()   # the command name may contain spaces
    return int(fields[11]) + int(fields[12])        # fields 14 and 15 of stat(5)


def rss_bytes(pid: int) -> int:
    """Resident set size of a process (VmRSS of /proc/PID/status) in bytes."""
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) * 1024
    raise RuntimeError('no VmRSS for pid %d' % pid)


class Child:
    """One child process, stopped by its PID."""

    def __init__(self, name: str, argv: list[str], log_path: str | None = None,
                 ready_line: bool = True, cwd: str = ROOT) -> None:
        """`ready_line`: the child prints READY on stdout (else stdout goes to the log too);
        `cwd`: where `python -m` finds the package (another checkout for a baseline)."""
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self._log = open(log_path, 'ab') if log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE if ready_line else self._log,
                                     stderr=self._log)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_ready_line(self, timeout: float) -> str:
        """Wait for a line starting with READY on the child's stdout."""
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                line = self.proc.stdout.readline().decode('latin-1')
                if line.startswith('READY'):
                    return line
                if not line and not self.alive():
                    break
        raise RuntimeError('%s did not print READY (exit code %r)' % (self.name, self.proc.poll()))

    def log_tail(self, lines: int = 5) -> str:
        if not self.log_path or not os.path.exists(self.log_path):
            return 'no log'
        with open(self.log_path, 'rb') as f:
            tail = f.read()[-4000:].decode('latin-1').splitlines()[-lines:]
        return '%s ends with:\n  %s' % (self.log_path, '\n  '.join(tail))

    def stop(self, grace: float = 10.0) -> None:
        if self.alive():
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(grace)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream:
                stream.close()
        if self._log is not subprocess.DEVNULL:
            self._log.close()


def wait_answer(child: Child, addr: tuple[str, int], cmd: str, accept, timeout: float) -> str:
    """Repeat `cmd` until `accept(reply)` is true; bounded by `timeout` seconds."""
    deadline = time.monotonic() + timeout
    reply = None
    while time.monotonic() < deadline:
        if not child.alive():
            raise RuntimeError('%s exited with code %r; %s' % (
                child.name, child.proc.poll(), child.log_tail()))
        reply = control_command(addr, cmd, 0.5)
        if reply is not None and accept(reply):
            return reply
        time.sleep(0.1)
    raise RuntimeError('%s: no acceptable answer to %r (last %r); %s' % (
        child.name, cmd, reply, child.log_tail()))


class Fleet:
    """Starts the benchmark's processes and stops every one of them (by PID) on close()."""

    def __init__(self, workdir: str | None = None) -> None:
        self._own_workdir = workdir is None
        self.workdir = workdir or tempfile.mkdtemp(prefix='rtpc-bench-')
        self.children: list[Child] = []

    def __enter__(self) -> 'Fleet':
        return self

    def __exit__(self, exc_type, *_) -> None:
        self.close()
        if exc_type is None and self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)   # logs are kept after a failure

    def close(self) -> None:
        while self.children:
            self.children.pop().stop()

    def _start(self, child: Child) -> Child:
        self.children.append(child)
        return child

    def rtpp_member(self, name: str, port: int, media: tuple[int, int],
                    host: str = '127.0.0.1', ttl: int = 60) -> Child:
        """A real RTPproxy (rtp-io engine in a child process) on udp:HOST:PORT."""
        argv = [sys.executable, MEMBER_SCRIPT, '--die-with-stdin',
                '-s', 'udp:%s:%d' % (host, port), '-l', host,
                '-m', str(media[0]), '-M', str(media[1]), '-T', str(ttl)]
        child = self._start(Child(name, argv, log_path=os.path.join(self.workdir, name + '.log')))
        child.wait_ready_line(30)
        wait_answer(child, (host, port), 'V', lambda r: r == '20040107\n', 15)
        return child

    def fake_member(self, name: str, port: int, host: str = '127.0.0.1') -> Child:
        """A scripted member (bench/fakemember.py): instant answers, no media."""
        argv = [sys.executable, '-m', 'bench.fakemember', '--listen', '%s:%d' % (host, port)]
        child = self._start(Child(name, argv, log_path=os.path.join(self.workdir, name + '.log')))
        child.wait_ready_line(15)
        wait_answer(child, (host, port), 'V', lambda r: r == '20040107\n', 10)
        return child

    def null_forwarder(self, name: str, port: int, members: list[tuple[str, int]],
                       host: str = '127.0.0.1') -> Child:
        """The floor (bench/nullfwd.py): forwards datagrams to `members` with no parsing."""
        argv = [sys.executable, '-m', 'bench.nullfwd', '--listen', '%s:%d' % (host, port)]
        for member in members:
            argv += ['--member', '%s:%d' % member]
        child = self._start(Child(name, argv, log_path=os.path.join(self.workdir, name + '.log')))
        child.wait_ready_line(15)
        wait_answer(child, (host, port), 'V', lambda r: r == '20040107\n', 10)
        return child

    def redis(self, port: int) -> Child:
        """A private redis-server on loopback with keyspace notifications (session sharing)."""
        import redis
        argv = ['redis-server', '--port', str(port), '--bind', '127.0.0.1', '--save', '',
                '--appendonly', 'no', '--notify-keyspace-events', 'Kghxe', '--dir', self.workdir]
        child = self._start(Child('redis', argv, ready_line=False,
                                  log_path=os.path.join(self.workdir, 'redis.out')))
        client = redis.Redis(host='127.0.0.1', port=port, socket_timeout=1)
        deadline = time.monotonic() + 10
        while True:
            try:
                if client.ping():
                    return child
            except redis.RedisError:
                if time.monotonic() > deadline or not child.alive():
                    raise RuntimeError('redis-server did not start: %s' % child.log_tail())
                time.sleep(0.05)

    def cluster(self, port: int, members: list[tuple[str, tuple[str, int]]],
                host: str = '127.0.0.1', capacity: int = 100000,
                redis_url: str | None = None, name: str = 'rtp_cluster',
                http_port: int | None = None, root: str = ROOT) -> Child:
        """The rtp_cluster daemon in the foreground, serving udp:HOST:PORT for `members`;
        `root`: the checkout whose rtp_cluster runs (another one to compare revisions).

        Returns once the cluster has created (and deleted) a probe session, i.e. once at least
        one member is online behind it.
        """
        conf = os.path.join(self.workdir, name + '.xml')
        with open(conf, 'w') as f:
            f.write(cluster_config_xml('bench', (host, port), members, capacity, redis_url,
                                       http_port))
        argv = [sys.executable, '-m', 'rtp_cluster.app', '-f', '-c', conf,
                '-s', 'unix:' + os.path.join(self.workdir, name + '-admin.sock'),
                '-P', os.path.join(self.workdir, name + '.pid'),
                '-L', os.path.join(self.workdir, name + '.log')]
        child = self._start(Child(name, argv, ready_line=False,
                                  log_path=os.path.join(self.workdir, name + '.out'), cwd=root))
        addr = (host, port)
        wait_answer(child, addr, 'V', lambda r: r == '20040107\n', 20)
        probe = 'bench-probe-%d' % os.getpid()
        wait_answer(child, addr, 'U %s 127.0.0.1 4000 pf' % probe,
                    lambda r: r[:1].isdigit() and r.split()[0] != '0', 30)
        control_command(addr, 'D %s pf' % probe, 2.0)
        return child


    def scraper(self, url: str, interval: float = 1.0) -> Child:
        """GETs `url` every `interval` seconds in its own process (bench/scraper.py)."""
        argv = [sys.executable, '-m', 'bench.scraper', '--url', url, '--interval', str(interval)]
        child = self._start(Child('scraper', argv,
                                  log_path=os.path.join(self.workdir, 'scraper.log')))
        child.wait_ready_line(15)
        return child


def write_results(path: str, results: dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, 'w') as f:
        json.dump(results, f, indent=2)


def cluster_config_xml(name: str, addr: tuple[str, int],
                       members: list[tuple[str, tuple[str, int]]], capacity: int,
                       redis_url: str | None = None, http_port: int | None = None) -> str:
    parts = ['<?xml version="1.0" encoding="UTF-8"?>', '<rtp_cluster_config>']
    if http_port:
        parts += ['  <http><address>127.0.0.1:%d</address></http>' % http_port]
    if redis_url:
        parts += ['  <redis><url>%s</url><instance_id>bench-%d</instance_id></redis>'
                  % (redis_url, addr[1])]
    parts += ['  <rtp_cluster>',
             '    <name>%s</name>' % name, '    <protocol>udp</protocol>',
             '    <address>%s:%d</address>' % addr]
    for mname, (mhost, mport) in members:
        parts += ['    <rtpproxy>', '      <name>%s</name>' % mname,
                  '      <protocol>udp</protocol>',
                  '      <address>%s:%d</address>' % (mhost, mport),
                  '      <weight>100</weight>', '      <capacity>%d</capacity>' % capacity,
                  '      <status>ACTIVE</status>', '    </rtpproxy>']
    parts += ['  </rtp_cluster>', '</rtp_cluster_config>', '']
    return '\n'.join(parts)


def cluster_available() -> bool:
    """True when the rtp_cluster daemon exists in this tree (rtp_cluster/app.py and adapters/runtime.py)."""
    pkg = os.path.join(ROOT, 'rtp_cluster')
    return all(os.path.exists(os.path.join(pkg, f)) for f in ('app.py', 'adapters/runtime.py'))
