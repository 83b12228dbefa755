"""Forwarding loops: a member whose address is one of this process's own control sockets.

Such a member would get every command the cluster forwards to it back on the cluster's
own socket, which forwards it again: one `U` bounces until the CPU is saturated.  The check
is made on resolved addresses (`SocketAddress`), which the adapters produce; this module
does no I/O.  A listener on a wildcard address (0.0.0.0, ::) receives what is sent to any
address of the host, so a member on one of the host's own addresses (`local`) and the
same port is a loop too.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Callable, Iterable

from .endpoints import Endpoint

__all__ = ['SocketAddress', 'Resolver', 'same_socket', 'own_sockets', 'member_loop',
           'config_loops']


@dataclass(frozen=True)
class SocketAddress:
    """A control socket after name resolution: a unix path, or a numeric IP and port."""

    path: str = ''          # unix: the absolute path with symbolic links resolved
    host: str = ''          # IP: a numeric address
    port: int = 0
    local: bool = False     # IP: the address is one of this host's own

    @property
    def is_unix(self) -> bool:
        return bool(self.path)


# An endpoint -> every address it stands for (a name may resolve to several; none if it
# does not resolve, which the member client reports on its own when it starts).
Resolver = Callable[[Endpoint], 'list[SocketAddress]']


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    address = ipaddress.ip_address(host.split('%', 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def same_socket(member: SocketAddress, own: SocketAddress) -> bool:
    """Would a datagram or connection to `member` arrive at the listener `own`?"""
    if member.is_unix or own.is_unix:
        return member.is_unix and own.is_unix and member.path == own.path
    if member.port != own.port:
        return False
    target, listener = _ip(member.host), _ip(own.host)
    if target == listener:
        return True
    if not listener.is_unspecified or not member.local:
        return False
    # '::' also takes IPv4 (Linux listens dual-stack unless IPV6_V6ONLY), '0.0.0.0' only IPv4
    return listener.version == 6 or target.version == 4


def own_sockets(endpoints: Iterable[tuple[str, Endpoint]],
                resolve: Resolver) -> list[tuple[str, Endpoint, list[SocketAddress]]]:
    """(cluster name, control socket, its resolved addresses) of this process's clusters."""
    return [(name, endpoint, resolve(endpoint)) for name, endpoint in endpoints]


def member_loop(name: str, endpoint: Endpoint,
                own: Iterable[tuple[str, Endpoint, list[SocketAddress]]],
                resolve: Resolver) -> str | None:
    """Why member `name` at `endpoint` would loop back into one of `own` (see own_sockets),
    or None."""
    targets = resolve(endpoint)
    for cluster, own_endpoint, listeners in own:
        if any(same_socket(target, listener) for target in targets for listener in listeners):
            return ('member %s: %s is the control socket of cluster %s (%s) of this '
                    'rtp_cluster; commands forwarded to it would loop back; give the '
                    'address of an RTPproxy' % (name, endpoint, cluster, own_endpoint))
    return None


def config_loops(config, resolve: Resolver) -> list[str]:
    """One message per member of `config` (a core.config.Config) that would loop back."""
    own = own_sockets(((c.name, c.endpoint) for c in config.clusters), resolve)
    problems = []
    for cluster in config.clusters:
        for member in cluster.members:
            problem = member_loop(member.name, member.endpoint, own, resolve)
            if problem is not None:
                problems.append('cluster %s: %s' % (cluster.name, problem))
    return problems
