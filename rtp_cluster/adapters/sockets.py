"""What the control servers and member clients share: the handler they serve, the startup
error, socket buffer sizes and address resolution."""
from __future__ import annotations

import socket
from typing import Callable

from ..core.protocol import Command

Respond = Callable[[str], None]
Handler = Callable[[Command, Respond], None]

SOCKET_BUFFER = 4 * 1024 * 1024


class StartupError(Exception):
    """A socket could not be set up; the message is one line for the operator."""


def grow_buffers(sock: socket.socket) -> None:
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
        except OSError:
            pass


def resolve(host: str, port: int, family: int) -> str:
    """Numeric address for `host` (config may name hosts; connected UDP needs a literal)."""
    try:
        infos = socket.getaddrinfo(host, port, family, socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        raise StartupError('cannot resolve %s: %s' % (host, exc.strerror)) from None
    return infos[0][4][0]
