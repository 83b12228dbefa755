"""Name resolution for the forwarding-loop check (core/loops.py), and this host's addresses.

Resolution uses the system resolver and so may block: it runs when the configuration is
checked or loaded and when `modify add` adds a member, as the member clients' own
resolution does, never per control command.
"""
from __future__ import annotations

import os
import socket
from functools import lru_cache

from ..core.endpoints import Endpoint
from ..core.loops import SocketAddress, config_loops

__all__ = ['resolve_socket', 'is_local_ip', 'forwarding_loops']


def resolve_socket(endpoint: Endpoint) -> list[SocketAddress]:
    """Every address `endpoint` stands for; none when its name does not resolve."""
    if endpoint.protocol == 'unix':
        return [SocketAddress(path=os.path.realpath(endpoint.path))]
    family = socket.AF_INET6 if endpoint.protocol == 'udp6' else socket.AF_INET
    try:
        infos = socket.getaddrinfo(endpoint.host, endpoint.port, family, socket.SOCK_DGRAM)
    except (socket.gaierror, UnicodeError):
        return []
    hosts = dict.fromkeys(str(info[4][0]) for info in infos)
    return [SocketAddress(host=host, port=endpoint.port, local=is_local_ip(host))
            for host in hosts]


@lru_cache(maxsize=1024)
def is_local_ip(host: str) -> bool:
    """Is `host` (numeric) one of this host's addresses?  Only those can be bound to."""
    family = socket.AF_INET6 if ':' in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.bind((host, 0))
    except OSError:
        return False
    return True


def forwarding_loops(config) -> list[str]:
    """The members of `config` (a core.config.Config) whose address is one of its clusters'
    control sockets (see core/loops.py)."""
    return config_loops(config, resolve_socket)
