"""Many live sessions through a cluster's UDP control socket, as fast as it answers.

    created = offer_sessions(('127.0.0.1', port), 'bulk', 100_000)

Each session is one `U <prefix>-<n> 127.0.0.1 <port> ft<n>` with its own cookie, at most
`window` unanswered at a time; a lost datagram is sent again (same cookie, as a SIP proxy
retransmits) after `retransmit` seconds.
"""
from __future__ import annotations

import select
import socket
import time

__all__ = ['offer_sessions', 'call_id', 'udp_address', 'timed_command']


def call_id(prefix: str, n: int) -> str:
    return '%s-%d' % (prefix, n)


def udp_address(spec: str) -> tuple[str, int]:
    """'udp:HOST:PORT' -> (HOST, PORT)."""
    host, _, port = spec.partition(':')[2].rpartition(':')
    return host.strip('[]'), int(port)


def offer_sessions(address: tuple[str, int], prefix: str, count: int, window: int = 128,
                   retransmit: float = 1.0, deadline: float = 300.0) -> list[str]:
    """Create `count` sessions; the call-ids of those answered with a port."""
    created: list[str] = []
    pending: dict[bytes, tuple[int, float, bytes]] = {}      # cookie -> (n, sent at, datagram)
    next_n = 0
    end = time.monotonic() + deadline
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        sock.connect(address)
        sock.setblocking(False)
        while next_n < count or pending:
            if time.monotonic() > end:
                raise AssertionError('%d of %d sessions created in %.0f s'
                                     % (len(created), count, deadline))
            while len(pending) < window and next_n < count:
                cookie = b'%s_%d' % (prefix.encode(), next_n)
                datagram = b'%s U %s 127.0.0.1 %d ft%d' % (
                    cookie, call_id(prefix, next_n).encode(), 4000 + next_n % 20000, next_n)
                pending[cookie] = (next_n, time.monotonic(), datagram)
                sock.send(datagram)
                next_n += 1
            if select.select([sock], [], [], 0.05)[0]:
                _receive(sock, pending, created, prefix)
            _retransmit(sock, pending, retransmit)
    return created


def _receive(sock: socket.socket, pending: dict, created: list[str], prefix: str) -> None:
    for _ in range(10000):
        try:
            data = sock.recv(65535)
        except BlockingIOError:
            return
        cookie, _, body = data.partition(b' ')
        entry = pending.pop(cookie, None)
        if entry is not None and body[:1].isdigit() and not body.startswith(b'0 '):
            created.append(call_id(prefix, entry[0]))


def _retransmit(sock: socket.socket, pending: dict, after: float) -> None:
    now = time.monotonic()
    for cookie, (n, sent_at, datagram) in list(pending.items()):
        if now - sent_at > after:
            pending[cookie] = (n, now, datagram)
            sock.send(datagram)


def timed_command(address: tuple[str, int], command: str,
                  timeout: float = 5.0) -> tuple[str | None, float]:
    """One command (no retransmit); (reply body or None, seconds until it came)."""
    cookie = 't%d' % time.monotonic_ns()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect(address)
        sock.settimeout(timeout)
        started = time.monotonic()
        sock.send(('%s %s' % (cookie, command)).encode('latin-1'))
        try:
            while True:
                got, _, body = sock.recv(65535).decode('latin-1').partition(' ')
                if got == cookie:
                    return body.rstrip('\n'), time.monotonic() - started
        except socket.timeout:
            return None, time.monotonic() - started
