"""Child processes for tests: real RTPproxy members (rtp-io) and free loopback ports.

Every process started here is tracked and stopped by PID by the `procs` fixture
(see conftest.py), also when a test fails.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MEMBER_SCRIPT = os.path.join(ROOT, 'tools', 'rtpp_member.py')

_used_ports: set[int] = set()


def free_udp_port(host: str = '127.0.0.1', span: int = 1) -> int:
    """A UDP port (and the `span - 1` after it) free on `host` right now."""
    family = socket.AF_INET6 if ':' in host else socket.AF_INET
    for _ in range(200):
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port + span > 65000 or any(p in _used_ports for p in range(port, port + span)):
            continue
        if all(_udp_free(family, host, p) for p in range(port, port + span)):
            _used_ports.update(range(port, port + span))
            return port
    raise RuntimeError('no free UDP port found')


def free_tcp_port(host: str = '127.0.0.1') -> int:
    family = socket.AF_INET6 if ':' in host else socket.AF_INET
    for _ in range(200):
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port not in _used_ports:
            _used_ports.add(port)
            return port
    raise RuntimeError('no free TCP port found')


def _udp_free(family: int, host: str, port: int) -> bool:
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.bind((host, port))
        return True
    except OSError:
        return False


_next_media_base = [36000 + (os.getpid() % 50) * 400]


def media_port_range(size: int = 200) -> tuple[int, int]:
    """A private RTP port range for one member (members in one test run never overlap)."""
    if _next_media_base[0] + size > 64000:
        _next_media_base[0] = 36000
    base = _next_media_base[0]
    _next_media_base[0] += size
    return base, base + size - 1


@dataclass
class Member:
    """A real RTPproxy running in a child process."""
    proc: subprocess.Popen
    control: str                       # rtpproxy -s spec, e.g. 'udp:127.0.0.1:23480'
    protocol: str                      # 'udp' | 'udp6' | 'unix' (as in rtp_cluster.xml)
    address: str                       # address as written in rtp_cluster.xml
    args: list[str] = field(default_factory=list)
    workdir: str | None = None         # the engine's working directory, removed by stop()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.alive():
            os.kill(self.proc.pid, sig)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        """Stop the process and remove its working directory (a kill() keeps it)."""
        self.kill(signal.SIGTERM)
        self.remove_workdir()

    def remove_workdir(self) -> None:
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def command(self, cmd: str, timeout: float = 2.0) -> str:
        """Send one command straight to this member (bypassing any cluster)."""
        return control_command(self.control, cmd, timeout)


def start_member(protocol: str = 'udp', host: str = '127.0.0.1', port: int | None = None,
                 path: str | None = None, extra: list[str] | None = None,
                 listen: str | None = None) -> Member:
    """Start an rtp-io RTPproxy with one control socket and wait until it answers `V`.

    The member runs in a private working directory (its accounting file and, unless `path`
    is given, its unix control socket live there); `Member.stop()` removes it.
    """
    workdir = tempfile.mkdtemp(prefix='rtpp-member-')
    try:
        return _start_member_in(workdir, protocol, host, port, path, extra, listen)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise


def _start_member_in(workdir: str, protocol: str, host: str, port: int | None,
                     path: str | None, extra: list[str] | None, listen: str | None) -> Member:
    if protocol == 'udp':
        port = port or free_udp_port(host)
        control, address = 'udp:%s:%d' % (host, port), '%s:%d' % (host, port)
    elif protocol == 'udp6':
        host = host if ':' in host else '::1'
        port = port or free_udp_port(host)
        control, address = 'udp6:%s:%d' % (host, port), '[%s]:%d' % (host, port)
    elif protocol == 'unix':
        path = path or os.path.join(workdir, 'rtpp.sock')
        control, address = 'unix:' + path, path
    else:
        raise ValueError(protocol)
    lo, hi = media_port_range()
    args = ['-s', control, '-l', listen or '127.0.0.1', '-m', str(lo), '-M', str(hi)]
    if protocol == 'udp6' and not listen:
        args += ['-6', 'v6@::1']       # a second listen address needs a label
    args += extra or []
    proc = subprocess.Popen([sys.executable, MEMBER_SCRIPT, '--die-with-stdin', '--workdir', workdir]
                            + args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    member = Member(proc, control, protocol, address, args, workdir)
    line = proc.stdout.readline()
    if not line.startswith('READY'):
        member.kill()
        raise RuntimeError('member did not start: %r' % line)
    deadline = time.monotonic() + 10
    while True:
        try:
            if member.command('V', 0.5).strip() == '20040107':
                return member
        except OSError:
            pass
        if time.monotonic() > deadline:
            member.kill()
            raise RuntimeError('member %s does not answer V' % control)
        time.sleep(0.05)


def start_scripted_member(tracker: 'ProcessTracker', host: str = '127.0.0.1') -> int:
    """A scripted member (bench/fakemember.py: instant answers, no media) in a child process
    `tracker` stops; returns its UDP port once it is ready."""
    port = free_udp_port(host)
    proc = tracker.add(subprocess.Popen(
        [sys.executable, '-m', 'bench.fakemember', '--listen', '%s:%d' % (host, port)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True))
    if not proc.stdout.readline().startswith('READY'):
        raise RuntimeError('the scripted member did not start')
    return port


def control_command(spec: str, cmd: str, timeout: float = 2.0) -> str:
    """One command to an RTPproxy-protocol socket ('udp:h:p', 'udp6:h:p', 'unix:/p'); the reply body."""
    kind, _, rest = spec.partition(':')
    if kind in ('udp', 'udp6'):
        host, _, port = rest.rpartition(':')
        host = host.strip('[]')
        family = socket.AF_INET6 if kind == 'udp6' else socket.AF_INET
        cookie = '%d_%d' % (os.getpid(), time.monotonic_ns())
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            s.connect((host, int(port)))
            s.send(('%s %s' % (cookie, cmd)).encode('latin-1'))
            while True:
                data = s.recv(65535).decode('latin-1')
                got_cookie, _, body = data.partition(' ')
                if got_cookie == cookie:
                    return body
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(rest)
        s.sendall(cmd.encode('latin-1'))
        chunks = []
        while True:
            data = s.recv(65535)
            if not data:
                break
            chunks.append(data)
            if data.endswith(b'\n'):
                break
        return b''.join(chunks).decode('latin-1')


class ProcessTracker:
    """Stops, by PID, every process a test registered, even when the test failed."""

    def __init__(self) -> None:
        self.members: list[Member] = []
        self.popens: list[subprocess.Popen] = []

    def member(self, *args, **kwargs) -> Member:
        m = start_member(*args, **kwargs)
        self.members.append(m)
        return m

    def add(self, proc: subprocess.Popen) -> subprocess.Popen:
        self.popens.append(proc)
        return proc

    def stop_all(self) -> None:
        # every process first: a restarted member may use a socket in another's directory
        for m in self.members:
            m.kill(signal.SIGTERM)
        for p in self.popens:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(10)
        for m in self.members:
            m.remove_workdir()
