"""How a command changes on its way to a member, and the member's reply on its way back.

Outgoing: a member behind NAT gets its LAN address in `U`/`L`, and a remote member's
timeout notifications are pointed at this cluster's relay (or dropped when they cannot
reach the client).  Incoming: the member's address is replaced by its WAN address where
the client's own address choices say so, and errors that make a client disable the whole
"RTPproxy" are softened.
"""
from __future__ import annotations

from typing import Callable

from . import protocol
from .member import Member
from .notify_auth import NotifyAuthenticator
from .protocol import Command

# U/L error codes OpenSIPS reads as "this RTPproxy is broken" (it then disables the node).
_NODE_DISABLING_ERRORS = frozenset({'E7', 'E8', 'E9', 'E10'})


class CommandRewriter:
    """The rewriting rules of one cluster.

    `config` is the cluster's configuration (replaced on reload).  The runtime sets, when
    the cluster has a relay, `allow_tcp_notify_target` (may it deliver to `tcp:HOST:PORT`?)
    and `notify_auth` (the relay's authenticator, which every relayed tag carries).
    """

    def __init__(self, config) -> None:
        self.config = config
        self.allow_tcp_notify_target: Callable[[str], bool] | None = None
        self.notify_auth: NotifyAuthenticator | None = None

    def outgoing(self, cmd: Command, member: Member) -> Command:
        """The command as the member must get it: LAN address, notify socket."""
        if cmd.letter not in ('U', 'L'):
            return cmd
        out = cmd
        if member.lan_address is not None:
            out = out.with_local_address(member.lan_address)
        if out.notify_socket is not None and not member.is_local:
            out = self._notify_for_remote(out, member)
        return out

    def _notify_for_remote(self, cmd: Command, member: Member) -> Command:
        """Point a remote member's timeout notifications at our relay, or drop them.

        The member is told to notify `tcp:%%CC_SELF%%:<relay port>` with the tag
        `<authenticator> <destination> <client's tag>` (`NotifyAuthenticator.issue`): the
        destination is the client's socket path after `dest_socket_prefix` (a unix socket
        such as the sippy B2BUA's), or the client's whole `tcp:HOST:PORT` (Kamailio's
        timeout_socket) once the relay accepted it.
        """
        relay, auth = self.config.disconnect_notify, self.notify_auth
        if relay is not None and auth is not None and member.supports_notify_relay:
            destination = self._relay_destination(cmd.notify_socket, relay.dest_socket_prefix)
            if destination is not None:
                tag = auth.issue(destination, protocol.percent_unquote(cmd.notify_tag))
                if tag is not None:
                    return cmd.with_notify('tcp:%%%%CC_SELF%%%%:%d' % relay.inbound_port,
                                           protocol.percent_quote(tag))
        return cmd.without_notify()

    def _relay_destination(self, socket: str, prefix: str) -> str | None:
        if protocol.parse_tcp_notify_socket(socket) is not None:
            allow = self.allow_tcp_notify_target
            return socket if allow is not None and allow(socket) else None
        socket_path = protocol.notify_socket_path(socket)
        prefix = protocol.notify_socket_path(prefix)
        if not socket_path.startswith(prefix):
            return None
        suffix = socket_path[len(prefix):]
        # the relay would take such a suffix for a TCP destination
        return None if suffix.startswith('tcp:') else suffix

    def client_reply(self, cmd: Command, out: Command, member: Member, reply: str) -> str:
        """The member's reply to `out` as the client of `cmd` must get it."""
        if cmd.letter not in ('U', 'L'):
            return reply
        if reply.split(' ', 1)[0] in _NODE_DISABLING_ERRORS:
            return protocol.E_SYNTAX
        wan = member.wan_address
        if wan is None or not protocol.is_positive_ul_reply(reply):
            return reply
        if _rewrite_to_wan(cmd, out, member):
            return '%s %s' % (reply.split(None, 1)[0], wan)
        return reply


def _rewrite_to_wan(cmd: Command, out: Command, member: Member) -> bool:
    # The original cluster's rule: the client's own routing (r) and local (l) choices
    # decide whether the member's address is visible to the outside.
    route, local = cmd.route_address, cmd.local_address
    if route is not None and local != member.lan_address:
        return True
    return local is None or out.local_address == member.lan_address
