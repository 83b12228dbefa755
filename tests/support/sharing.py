"""Session-sharing daemons for tests: one rtp_cluster instance seen through its control and
admin sockets (`Instance`), pipelined UDP commands (`batch`) and polling (`wait_for`)."""
from __future__ import annotations

import os
import signal
import socket
import time

from tests.support.daemon import Daemon


def wait_for(predicate, timeout: float, what: str, interval: float = 0.02) -> float:
    """Poll `predicate` until true; the seconds it took.  AssertionError on timeout."""
    start = time.monotonic()
    deadline = start + timeout
    last = None
    while True:
        last = predicate()
        if last:
            return time.monotonic() - start
        if time.monotonic() > deadline:
            raise AssertionError('timed out after %.1f s waiting for %s (last: %r)'
                                 % (timeout, what, last))
        time.sleep(interval)


def batch(spec: str, commands: list[str], window: int = 32, timeout: float = 5.0) -> list[str]:
    """Send `commands` over one UDP socket with at most `window` unanswered; the replies."""
    _, _, rest = spec.partition(':')
    host, _, port = rest.rpartition(':')
    replies: list[str | None] = [None] * len(commands)
    prefix = 't%d_%d_' % (os.getpid(), time.monotonic_ns())
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((host, int(port)))
        s.settimeout(timeout)
        sent = answered = 0
        while answered < len(commands):
            while sent < len(commands) and sent - answered < window:
                s.send(('%s%d %s' % (prefix, sent, commands[sent])).encode('latin-1'))
                sent += 1
            data = s.recv(65535).decode('latin-1')      # socket.timeout fails the test
            cookie, _, body = data.partition(' ')
            if not cookie.startswith(prefix):
                continue
            index = int(cookie[len(prefix):])
            if replies[index] is None:
                replies[index] = body.strip()
                answered += 1
    return replies


def is_port_reply(reply: str) -> bool:
    parts = reply.split()
    return len(parts) >= 1 and parts[0].isdigit() and int(parts[0]) > 0


class Instance:
    """One rtp_cluster daemon with session sharing."""

    def __init__(self, name: str, daemon: Daemon) -> None:
        self.name = name
        self.daemon = daemon

    @property
    def control(self) -> str:
        return self.daemon.control

    def admin(self, line: str, check: bool = True, timeout: float = 5.0) -> list[str]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(self.daemon.admin)
            s.sendall(line.encode() + b'\n')
            data = b''
            while True:
                chunk = s.recv(1 << 20)
                if not chunk:
                    raise AssertionError('admin connection closed during %r' % line)
                data += chunk
                lines = data.decode('utf-8', 'replace').split('\n')
                complete = lines[:-1]
                if complete and (complete[-1] == 'OK' or complete[-1].startswith('ERROR')):
                    break
        if check and complete[-1] != 'OK':
            raise AssertionError('%s: %r -> %r' % (self.name, line, complete))
        return complete[:-1] if complete[-1] == 'OK' else complete

    def counts(self) -> tuple[int, int]:
        lines = self.admin('ls numsessions')
        values = {line.split(':')[0]: int(line.split(':')[1]) for line in lines}
        return values['Current sessions own'], values['Current sessions foreign']

    def sessions(self, which: str = 'all') -> dict[str, dict[str, str]]:
        result = {}
        for line in self.admin('ls sessions %s' % which):
            call_id, *fields = line.split(' ')
            result[call_id] = dict(f.split('=', 1) for f in fields)
        return result

    def status(self) -> dict[str, str]:
        return dict(line.split(': ', 1) for line in self.admin('ls redis'))

    def resync_at(self) -> str:
        """When the last resync finished ('never' or its unix time)."""
        text = self.status()['last resync']
        return text.split(' at ')[1].split()[0] if ' at ' in text else text

    def resync_done(self) -> None:
        """Ask for a resync and wait until one that started after the request finished."""
        for _ in range(2):      # the first to finish may have started before the request
            before = self.resync_at()
            self.admin('resync')
            wait_for(lambda: self.resync_at() != before, 10, '%s resync' % self.name)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.daemon.proc.poll() is None:
            os.kill(self.daemon.proc.pid, sig)
            if sig in (signal.SIGKILL, signal.SIGTERM):
                self.daemon.proc.wait(10)
