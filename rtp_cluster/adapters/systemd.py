"""systemd service notifications (`Type=notify`): READY, STATUS, RELOADING and WATCHDOG.

The protocol is one datagram per notification, `KEY=VALUE` lines, sent to the unix
socket named by `$NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace).  It is
spoken here directly with the standard library instead of python3-systemd: a dozen lines,
no C extension to build in a virtualenv, and the same code runs under systemd, in
containers that emulate it, and in tests that read the datagrams from their own socket.

Sending never blocks: the socket is non-blocking and a notification that cannot be sent
is logged once and dropped (systemd itself may be restarting).
"""
from __future__ import annotations

import os
import socket
import time
from typing import Callable, Mapping

from twisted.internet import task
from twisted.logger import Logger

STATUS_INTERVAL = 5.0       # s between STATUS= refreshes (only sent when the text changed)


class SystemdNotifier:
    log = Logger()

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        environ = os.environ if environ is None else environ
        self.address = _socket_address(environ.get('NOTIFY_SOCKET', ''))
        self.watchdog_interval = _watchdog_interval(environ)
        self._socket: socket.socket | None = None
        self._failed = False
        self._loops: list[task.LoopingCall] = []
        self._last_status = ''

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *lines: str) -> bool:
        """Send one notification; False when not under systemd or the send failed."""
        if self.address is None:
            return False
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._socket.setblocking(False)
            self._socket.sendto('\n'.join(lines).encode('utf-8'), self.address)
        except OSError as exc:
            if not self._failed:
                self._failed = True
                self.log.warn('systemd notification failed: {error}', error=exc)
            return False
        self._failed = False
        return True

    def ready(self, status: str = '') -> None:
        self.notify('READY=1', *(['STATUS=' + status] if status else []))

    def reloading(self) -> None:
        # MONOTONIC_USEC lets systemd (253+) tell this reload from an older one
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.notify('RELOADING=1', 'MONOTONIC_USEC=%d' % usec)

    def stopping(self) -> None:
        self.notify('STOPPING=1')

    def status(self, text: str) -> None:
        if text != self._last_status:
            self._last_status = text
            self.notify('STATUS=' + text)

    def start(self, clock, summary: Callable[[], str]) -> None:
        """Pings from the reactor (a stalled reactor stops them) and STATUS= refreshes."""
        if not self.enabled:
            return
        if self.watchdog_interval is not None:
            self._every(clock, self.watchdog_interval / 2.0, lambda: self.notify('WATCHDOG=1'))
        self._every(clock, STATUS_INTERVAL, lambda: self.status(summary()))

    def _every(self, clock, interval: float, what: Callable[[], object]) -> None:
        loop = task.LoopingCall(what)
        loop.clock = clock
        loop.start(interval, now=True).addErrback(
            lambda failure: self.log.failure('systemd notification loop', failure))
        self._loops.append(loop)

    def stop(self) -> None:
        for loop in self._loops:
            if loop.running:
                loop.stop()
        self._loops = []
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def _socket_address(text: str) -> str | None:
    if not text or not (text.startswith('/') or text.startswith('@')):
        return None     # unset, or a vsock address this daemon does not speak
    return '\0' + text[1:] if text.startswith('@') else text


def _watchdog_interval(environ: Mapping[str, str]) -> float | None:
    """Seconds of WatchdogSec=, when it is meant for this process."""
    usec = environ.get('WATCHDOG_USEC', '')
    pid = environ.get('WATCHDOG_PID', '')
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 1_000_000.0


def status_line(clusters) -> str:
    """`2 clusters, 3/4 members online, 120 sessions`: what `systemctl status` shows."""
    clusters = list(clusters)
    members = [member for cluster in clusters for member in cluster.members.values()]
    online = sum(1 for member in members if member.online)
    sessions = sum(len(cluster.store) for cluster in clusters)
    return '%d clusters, %d/%d members online, %d sessions' % (
        len(clusters), online, len(members), sessions)


__all__ = ['SystemdNotifier', 'status_line']
