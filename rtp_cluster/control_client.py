"""One RTPproxy control command to rtp_cluster or an RTPproxy: `rtp_cluster_client --control`.

    rtp_cluster_client --control udp:127.0.0.1:22222 'U call1 127.0.0.1 5000 ft1'
    rtp_cluster_client --control unix:/run/rtp_cluster/control.sock --stats

UDP and UDP over IPv6: the command goes out as `COOKIE COMMAND` in one datagram and is
sent again with the same cookie after 0.5 s, 1 s, 2 s, ... until a reply with that cookie
arrives or the time is up; the server's reply cache answers a retransmit without running
the command twice.  unix: one connection, the command in one write without a newline
(the one-shot style Kamailio uses), the reply is everything the server writes before it
closes the connection.

Command and reply bytes are passed through unchanged (call-ids need not be UTF-8); the
parsing is rtp_cluster.core.protocol's.
"""
from __future__ import annotations

import os
import secrets
import socket
import time

from .core import protocol
from .core.endpoints import Endpoint, parse_socket_spec

FIRST_RETRANSMIT = 0.5       # seconds; doubled after every retransmit
MAX_REPLY = 65535            # one datagram; a stream reply longer than this is not RTPproxy's
STATS_COMMAND = 'Ib'


class NoReply(Exception):
    """No reply (cannot send, refused, timeout); str(e) is one line for the user."""


def parse_control_socket(spec: str) -> Endpoint:
    """`udp:HOST[:PORT]`, `udp6:HOST[:PORT]`, `unix:/PATH` or `/PATH`; ValueError otherwise."""
    endpoint = parse_socket_spec(spec)
    if endpoint.protocol not in ('udp', 'udp6', 'unix'):
        raise ValueError('"%s": a control socket is udp:HOST[:PORT], udp6:HOST[:PORT], '
                         'unix:/PATH or /PATH' % spec)
    return endpoint


def new_cookie() -> str:
    return '%d_%s' % (os.getpid(), secrets.token_hex(4))


def check_command(command: bytes, cookie: str | None) -> None:
    """ValueError when RTPproxy would not read the whole command (`cookie` None: unix)."""
    if not command.strip():
        raise ValueError('the command is empty')
    limit = protocol.MAX_COMMAND_BYTES - (0 if cookie is None else len(cookie) + 1)
    if len(command) > limit:
        raise ValueError('the command is %d bytes long; RTPproxy reads at most %d'
                         % (len(command), limit))


def send_command(endpoint: Endpoint, command: bytes, timeout: float) -> bytes:
    """Send one command; the reply body (without cookie).  NoReply when there is none."""
    if endpoint.protocol == 'unix':
        check_command(command, None)
        return _ask_unix(endpoint.path, command, timeout)
    cookie = new_cookie()
    check_command(command, cookie)
    return _ask_udp(endpoint, cookie, command, timeout)


def _ask_udp(endpoint: Endpoint, cookie: str, command: bytes, timeout: float) -> bytes:
    family = socket.AF_INET6 if endpoint.protocol == 'udp6' else socket.AF_INET
    datagram = cookie.encode('latin-1') + b' ' + command
    deadline = time.monotonic() + timeout
    interval = FIRST_RETRANSMIT
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        try:
            # connected: an ICMP port unreachable comes back as ECONNREFUSED at once
            sock.connect((endpoint.host, endpoint.port))
            while True:
                sock.send(datagram)
                retransmit_at = min(time.monotonic() + interval, deadline)
                body = _wait_for_cookie(sock, cookie, retransmit_at)
                if body is not None:
                    return body
                if time.monotonic() >= deadline:
                    raise NoReply('%s: no reply within %g s' % (endpoint, timeout))
                interval *= 2
        except OSError as exc:
            raise NoReply('%s: %s' % (endpoint, _reason(exc))) from None


def _wait_for_cookie(sock: socket.socket, cookie: str, until: float) -> bytes | None:
    """The body of the reply carrying `cookie`, or None at `until` (other replies are skipped)."""
    while True:
        remaining = until - time.monotonic()
        if remaining <= 0:
            return None
        sock.settimeout(remaining)
        try:
            data = sock.recv(MAX_REPLY)
        except socket.timeout:
            return None
        got, body = protocol.split_cookie(data.decode('latin-1'))
        if got == cookie:
            return (body or '').encode('latin-1')


def _ask_unix(path: str, command: bytes, timeout: float) -> bytes:
    deadline = time.monotonic() + timeout
    chunks: list[bytes] = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.settimeout(timeout)
            sock.connect(path)
            sock.sendall(command)            # one write: a one-shot server reads once
            while True:
                sock.settimeout(max(deadline - time.monotonic(), 0.001))
                data = sock.recv(MAX_REPLY)
                if not data:
                    break
                chunks.append(data)
                if sum(map(len, chunks)) > MAX_REPLY:
                    raise NoReply('unix:%s: reply longer than %d bytes' % (path, MAX_REPLY))
        except socket.timeout:
            raise NoReply('unix:%s: no complete reply within %g s (the server did not '
                          'close the connection)' % (path, timeout)) from None
        except OSError as exc:
            raise NoReply('unix:%s: %s' % (path, _reason(exc))) from None
    if not chunks:
        raise NoReply('unix:%s: the connection was closed without a reply' % path)
    return b''.join(chunks)


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


def is_error_reply(body: bytes) -> bool:
    return protocol.is_error(body.decode('latin-1').lstrip())


def stats_table(body: bytes) -> str | None:
    """The `Ib` counters as aligned `name  value` lines; None if the reply is not an Ib reply."""
    values = protocol.parse_info(body.decode('latin-1'))
    if values is None:
        return None
    width = max(map(len, protocol.INFO_FIELDS))
    digits = max(len(str(v)) for v in values.values())
    return ''.join('%-*s  %*d\n' % (width, name, digits, values[name])
                   for name in protocol.INFO_FIELDS)
