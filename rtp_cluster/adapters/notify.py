"""Disconnect-notification relay (`<disconnect_notify>` of a cluster).

Remote members cannot reach the B2BUA's local unix sockets, so the cluster rewrites the
notify arguments of `U` commands (see `Cluster._notify_for_remote`): the member connects to
this relay over TCP (`tcp:%%CC_SELF%%:PORT`) and writes one line per timed-out session,
`<destination> <original tag>`.  The destination is either a socket suffix (the relay writes
`<original tag>\\n` to the unix stream socket `dest_socket_prefix + suffix`, the sippy
B2BUA's way) or a `tcp:HOST:PORT` the client gave (Kamailio's `timeout_socket`, OpenSIPS's
`rtpp_notify_socket`).  One connection per destination, reconnected when the client closed it.

Only the members' addresses may connect, and TCP destinations are only those the cluster
saw in its clients' commands (at most TCP_TARGETS_MAX).  Delivery never blocks the reactor:
each destination has a bounded queue; what does not fit is dropped, logged and counted.
"""
from __future__ import annotations

from collections import deque

from twisted.internet import protocol as tx_protocol
from twisted.internet.error import CannotListenError
from twisted.logger import Logger

from ..core.counters import CounterGroup, Field, counter_group
from ..core.protocol import notify_socket_path, parse_tcp_notify_socket
from .transports import StartupError

QUEUE_LIMIT = 1000          # undelivered notifications per destination
RECONNECT_DELAY = 1.0       # s between attempts to reach a destination socket
MAX_LINE = 4096
TCP_TARGETS_MAX = 64        # distinct tcp:HOST:PORT notify sockets clients may use


RelayCounters = counter_group(
    'RelayCounters', 'notify',
    Field('received', 'Notifications received from members.'),
    Field('delivered', 'Notifications written to a B2BUA socket.'),
    Field('dropped', 'Notifications dropped because the destination queue was full.'),
    Field('refused_connections', 'Connections refused because the peer is not a member.',
          metric='rtp_cluster_notify_rejected_connections_total'),
    Field('bad_lines', 'Malformed or over-long notification lines.',
          metric='rtp_cluster_notify_rejected_total'))


class _Inbound(tx_protocol.Protocol):
    """Lines from one member; over-long lines are dropped, the connection is kept."""

    def __init__(self, relay: 'NotifyRelay') -> None:
        self.relay = relay
        self._buffer = b''
        self._discarding = False

    def connectionMade(self) -> None:
        host = self.transport.getPeer().host
        if host not in self.relay.allowed:
            self.relay.counters.refused_connections += 1
            self.relay.log.warn('notify relay: refused connection from {host} (not a member)',
                                host=host)
            self.transport.abortConnection()

    def dataReceived(self, data: bytes) -> None:
        *lines, self._buffer = (self._buffer + data).split(b'\n')
        for line in lines:
            if self._discarding:
                self._discarding = False      # the tail of an over-long line
                continue
            if len(line) > MAX_LINE:
                self._too_long(len(line))
                continue
            self.relay.dispatch(line.rstrip(b'\r').decode('latin-1'))
        if len(self._buffer) > MAX_LINE:
            self._too_long(len(self._buffer))
            self._buffer = b''
            self._discarding = True

    def _too_long(self, size: int) -> None:
        self.relay.counters.bad_lines += 1
        self.relay.log.warn('notify relay: line of {n} bytes dropped', n=size)


class _InboundFactory(tx_protocol.Factory):
    noisy = False

    def __init__(self, relay: 'NotifyRelay') -> None:
        self.relay = relay

    def buildProtocol(self, addr):
        return _Inbound(self.relay)


class _Outbound(tx_protocol.Protocol):
    def __init__(self, destination: '_Destination') -> None:
        self.destination = destination

    def connectionMade(self) -> None:
        self.destination.connected(self)

    def dataReceived(self, data: bytes) -> None:
        pass    # the B2BUA does not answer notifications

    def connectionLost(self, reason=None) -> None:
        self.destination.lost(self)


class _OutboundFactory(tx_protocol.ClientFactory):
    noisy = False

    def __init__(self, destination: '_Destination') -> None:
        self.destination = destination

    def buildProtocol(self, addr):
        return _Outbound(self.destination)

    def clientConnectionFailed(self, connector, reason) -> None:
        self.destination.failed(reason.getErrorMessage())


class _Destination:
    """One client socket (unix path or TCP address): a queue and at most one connection."""

    def __init__(self, relay: 'NotifyRelay', path: str, tcp: tuple[str, int] | None = None) -> None:
        self.relay = relay
        self.path = path            # what the log shows: the unix path or tcp:HOST:PORT
        self.tcp = tcp
        self.queue: deque[bytes] = deque()
        self.protocol: _Outbound | None = None
        self.connecting = False
        self.retry = None

    def send(self, data: bytes) -> None:
        if len(self.queue) >= self.relay.queue_limit:
            counters = self.relay.counters
            counters.dropped += 1
            if counters.dropped == 1 or counters.dropped % 1000 == 0:
                self.relay.log.warn('notify relay: queue for {path} full, notification dropped '
                                    '({n} dropped so far)', path=self.path, n=counters.dropped)
            return
        self.queue.append(data)
        self.flush()

    def flush(self) -> None:
        if self.protocol is not None:
            transport = self.protocol.transport
            while self.queue:
                transport.write(self.queue.popleft())
                self.relay.counters.delivered += 1
        elif not self.connecting and self.retry is None and self.queue:
            self.connecting = True
            if self.tcp is not None:
                self.relay.reactor.connectTCP(self.tcp[0], self.tcp[1], _OutboundFactory(self),
                                              timeout=5)
            else:
                self.relay.reactor.connectUNIX(self.path, _OutboundFactory(self), timeout=5)

    def connected(self, protocol: _Outbound) -> None:
        self.connecting = False
        self.protocol = protocol
        self.flush()

    def lost(self, protocol: _Outbound) -> None:
        if self.protocol is protocol:
            self.protocol = None
        self.flush()

    def failed(self, why: str) -> None:
        self.connecting = False
        self.relay.log.warn('notify relay: cannot reach {path}: {why}', path=self.path, why=why)
        if self.queue and not self.relay.stopped:
            self.retry = self.relay.reactor.callLater(RECONNECT_DELAY, self._retry)

    def _retry(self) -> None:
        self.retry = None
        self.flush()

    def close(self) -> None:
        if self.retry is not None and self.retry.active():
            self.retry.cancel()
        self.retry = None
        if self.protocol is not None:
            self.protocol.transport.loseConnection()


class NotifyRelay:
    log = Logger()

    def __init__(self, config, reactor, queue_limit: int = QUEUE_LIMIT,
                 counters: CounterGroup | None = None) -> None:
        self.config = config
        self.reactor = reactor
        self.queue_limit = queue_limit
        self.prefix_path = notify_socket_path(config.dest_socket_prefix)
        self.allowed: set[str] = set()
        self.counters = counters if counters is not None else RelayCounters()
        self.destinations: dict[str, _Destination] = {}
        self.tcp_targets: dict[str, tuple[str, int]] = {}
        self.port = None
        self.stopped = False

    def listen(self) -> None:
        try:
            self.port = self.reactor.listenTCP(self.config.inbound_port, _InboundFactory(self),
                                               interface=self.config.inbound_host)
        except CannotListenError as exc:
            raise StartupError('notify relay cannot listen on %s:%d: %s' % (
                self.config.inbound_host, self.config.inbound_port, exc.socketError)) from None

    def stop(self):
        self.stopped = True
        for destination in self.destinations.values():
            destination.close()
        if self.port is not None:
            port, self.port = self.port, None
            return port.stopListening()
        return None

    def same_address(self, config) -> bool:
        return (config.inbound_host, config.inbound_port) == (
            self.config.inbound_host, self.config.inbound_port)

    def reconfigure(self, config) -> None:
        """New destination prefix on the same inbound address."""
        self.config = config
        self.prefix_path = notify_socket_path(config.dest_socket_prefix)

    def set_allowed(self, hosts) -> None:
        self.allowed = set(hosts)

    def allow_tcp_target(self, spec: str) -> bool:
        """May notifications go to the client socket `tcp:HOST:PORT`?  (Bounded set.)"""
        if spec in self.tcp_targets:
            return True
        address = parse_tcp_notify_socket(spec)
        if address is None:
            return False
        if len(self.tcp_targets) >= TCP_TARGETS_MAX:
            self.log.warn('notify relay: more than {n} TCP notification sockets; '
                          'notifications to {spec} are dropped', n=TCP_TARGETS_MAX, spec=spec)
            return False
        self.tcp_targets[spec] = address
        return True

    def dispatch(self, line: str) -> None:
        """One notification from a member: `<socket suffix or tcp:HOST:PORT> <tag>`."""
        self.counters.received += 1
        where, sep, tag = line.partition(' ')
        tcp = self.tcp_targets.get(where)
        if not sep or not tag or '\x00' in line or (tcp is None and '..' in where):
            self.counters.bad_lines += 1
            self.log.warn('notify relay: malformed notification {line!r}', line=line[:200])
            return
        key = where if tcp is not None else self.prefix_path + where
        destination = self.destinations.get(key)
        if destination is None:
            destination = self.destinations[key] = _Destination(self, key, tcp)
        destination.send(tag.encode('latin-1') + b'\n')
