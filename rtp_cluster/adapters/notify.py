"""Disconnect-notification relay (`<disconnect_notify>` of a cluster).

Remote members cannot reach the B2BUA's local unix sockets, so the cluster rewrites the
notify arguments of `U` commands (`CommandRewriter`): the member connects to this relay
over TCP (`tcp:%%CC_SELF%%:PORT`) and writes one line per timed-out session,
`<authenticator> <destination> <original tag>` (`core.notify_auth`).  The destination is
either a socket suffix (the relay writes `<original tag>\\n` to the unix stream socket
`dest_socket_prefix + suffix`, the sippy B2BUA's way) or a `tcp:HOST:PORT` the client gave
(Kamailio's `timeout_socket`, OpenSIPS's `rtpp_notify_socket`).

Only the members' addresses may connect, and only lines whose authenticator this process
issued are delivered: anything else is dropped and counted before it can create a
destination.  Delivery never blocks the reactor and nothing grows without bound: at most
`max_destinations` destinations, `max_queued_bytes` undelivered bytes in all, a destination
that does not read is paused on its transport's buffer; reconnects back off exponentially;
a destination without notifications for `idle_timeout` is closed and forgotten.  Repeated
warnings are logged at most once per LOG_INTERVAL, with the count since the last one.
"""
from __future__ import annotations

from collections import OrderedDict, deque
from typing import Any

from twisted.internet import protocol as tx_protocol
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

from ..core.counters import CounterGroup, Field, Kind, counter_group
from ..core.notify_auth import MAX_LINE, Notification, NotifyAuthenticator, Rejection
from ..core.protocol import notify_socket_path, parse_tcp_notify_socket
from .transports import StartupError

QUEUE_LIMIT = 1000          # undelivered notifications per destination
RECONNECT_MIN = 0.1         # s before the first reconnect; doubled after each failure
RECONNECT_MAX = 30.0        # s, the longest wait between two attempts
CONNECT_TIMEOUT = 5         # s
LOG_INTERVAL = 60.0         # s between two warnings of the same kind (per destination)
TCP_TARGETS_MAX = 64        # distinct tcp:HOST:PORT notify sockets clients may use
INBOUND_MAX = 64            # member connections at a time (RTPproxy keeps one per target)


RelayCounters = counter_group(
    'RelayCounters', 'notify',
    Field('received', 'Notifications received from members.'),
    Field('delivered', 'Notifications written to a B2BUA socket.'),
    Field('dropped', 'Notifications dropped: queue or byte bound reached, too many '
          'destinations, or destination forgotten while unreachable.'),
    Field('refused_connections', 'Connections refused because the peer is not a member.',
          metric='rtp_cluster_notify_rejected_connections_total'),
    Field('bad_lines', 'Lines rejected: malformed, over-long, or not issued by this cluster.',
          metric='rtp_cluster_notify_rejected_total'),
    Field('forged', 'Lines rejected because their authenticator is wrong (part of rejected).'),
    Field('connect_failures', 'Failed attempts to connect to a destination socket.'),
    Field('evicted_connections', 'Member connections closed, the least recently active first, '
          'to make room for a new one.'),
    Field('forgotten', 'Destinations closed and forgotten: idle for idle_timeout, or beyond '
          'a lowered max_destinations at reload.',
          metric='rtp_cluster_notify_destinations_forgotten_total'),
    Field('destinations', 'Destination sockets the relay currently keeps.', Kind.GAUGE),
    Field('queued_bytes', 'Bytes of notifications waiting for their destination.',
          Kind.GAUGE))


class _Throttle:
    """A warning logged at once, then at most once per LOG_INTERVAL with the count since."""

    def __init__(self, relay: 'NotifyRelay', text: str) -> None:
        self.relay = relay
        self.text = text
        self.pending = 0
        self.logged_at: float | None = None

    def event(self, **fields: Any) -> None:
        self.pending += 1
        now = self.relay.reactor.seconds()
        if self.logged_at is None or now - self.logged_at >= LOG_INTERVAL:
            self.relay.log.warn(self.text, count=self.pending, **fields)
            self.pending = 0
            self.logged_at = now


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
            self.relay.refusals.event(host=host)
            self.transport.abortConnection()
            return
        self.relay.admit(self)

    def connectionLost(self, reason=None) -> None:
        self.relay.inbound.pop(self, None)

    def dataReceived(self, data: bytes) -> None:
        if self in self.relay.inbound:
            self.relay.inbound.move_to_end(self)
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
        self.relay.malformed.event(line='(%d bytes)' % size)


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


@implementer(IPushProducer)
class _Destination:
    """One client socket (unix path or TCP address): a queue and at most one connection.

    It is the streaming producer of its connection: when the client stops reading and the
    transport's buffer fills, writing pauses and notifications wait in the bounded queue.
    """

    def __init__(self, relay: 'NotifyRelay', path: str, tcp: tuple[str, int] | None = None) -> None:
        self.relay = relay
        self.path = path            # what the log shows: the unix path or tcp:HOST:PORT
        self.tcp = tcp
        self.queue: deque[bytes] = deque()
        self.protocol: _Outbound | None = None
        self.paused = False
        self.connecting = False
        self.retry: Any = None
        self.delay = RECONNECT_MIN
        self.last_used = relay.reactor.seconds()
        self.unreachable = _Throttle(relay, 'notify relay: cannot reach {path}: {why} '
                                            '({count} failed attempt(s); retrying in {delay} s)')
        self.full = _Throttle(relay, 'notify relay: queue for {path} full, {count} '
                                     'notification(s) dropped (at most {limit} waiting for '
                                     'it, {max_bytes} bytes for all destinations)')

    def send(self, data: bytes) -> None:
        relay = self.relay
        self.last_used = relay.reactor.seconds()
        if (len(self.queue) >= relay.queue_limit
                or relay.counters.queued_bytes + len(data) > relay.config.max_queued_bytes):
            relay.counters.dropped += 1
            self.full.event(path=self.path, limit=relay.queue_limit,
                            max_bytes=relay.config.max_queued_bytes)
            return
        self.queue.append(data)
        relay.counters.queued_bytes += len(data)
        self.flush()

    def flush(self) -> None:
        if self.protocol is not None:
            self._write_queue()
        elif not self.connecting and self.retry is None and self.queue:
            self._connect()

    def _write_queue(self) -> None:
        transport = self.protocol.transport
        counters = self.relay.counters
        while self.queue and not self.paused:
            data = self.queue.popleft()
            counters.queued_bytes -= len(data)
            counters.delivered += 1
            transport.write(data)       # may pause us (pauseProducing) when its buffer fills

    def _connect(self) -> None:
        self.connecting = True
        reactor = self.relay.reactor
        if self.tcp is not None:
            reactor.connectTCP(self.tcp[0], self.tcp[1], _OutboundFactory(self),
                               timeout=CONNECT_TIMEOUT)
        else:
            reactor.connectUNIX(self.path, _OutboundFactory(self), timeout=CONNECT_TIMEOUT)

    # -- IPushProducer, for the outbound transport

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        if self.protocol is not None:
            self._write_queue()

    def stopProducing(self) -> None:
        self.paused = False

    # -- connection events

    def connected(self, protocol: _Outbound) -> None:
        self.connecting = False
        if self.relay.stopped or self.relay.destinations.get(self.path) is not self:
            protocol.transport.loseConnection()     # forgotten while connecting
            return
        self.delay = RECONNECT_MIN
        self.protocol = protocol
        self.paused = False
        protocol.transport.registerProducer(self, True)
        self.flush()

    def lost(self, protocol: _Outbound) -> None:
        if self.protocol is protocol:
            self.protocol = None
            self.paused = False
        if not self.relay.stopped and self.relay.destinations.get(self.path) is self:
            self.flush()

    def failed(self, why: str) -> None:
        self.connecting = False
        relay = self.relay
        relay.counters.connect_failures += 1
        if relay.stopped or relay.destinations.get(self.path) is not self:
            return
        self.unreachable.event(path=self.path, why=why, delay=self.delay)
        if self.queue:
            self.retry = relay.reactor.callLater(self.delay, self._retry)
            self.delay = min(self.delay * 2, RECONNECT_MAX)

    def _retry(self) -> None:
        self.retry = None
        self.flush()

    def close(self) -> None:
        """Stop retrying, drop what waits (counted), close the connection."""
        if self.retry is not None and self.retry.active():
            self.retry.cancel()
        self.retry = None
        counters = self.relay.counters
        counters.dropped += len(self.queue)
        counters.queued_bytes -= sum(len(data) for data in self.queue)
        self.queue.clear()
        if self.protocol is not None:
            self.protocol.transport.loseConnection()


class NotifyRelay:
    log = Logger()

    def __init__(self, config, reactor, auth: NotifyAuthenticator,
                 queue_limit: int = QUEUE_LIMIT, counters: CounterGroup | None = None) -> None:
        self.config = config
        self.reactor = reactor
        self.auth = auth
        self.queue_limit = queue_limit
        self.prefix_path = notify_socket_path(config.dest_socket_prefix)
        self.allowed: set[str] = set()
        self.counters = counters if counters is not None else RelayCounters()
        self.destinations: dict[str, _Destination] = {}
        self.tcp_targets: dict[str, tuple[str, int]] = {}
        self.port = None
        self.stopped = False
        self._sweep: Any = None
        self.refusals = _Throttle(self, 'notify relay: refused connection from {host} (not a '
                                        'member; {count} refused since the last report)')
        self.malformed = _Throttle(self, 'notify relay: {count} malformed notification(s) '
                                         'dropped, the last {line!r}')
        self.forged = _Throttle(self, 'notify relay: {count} notification(s) not issued by '
                                      'this cluster dropped (wrong authenticator), the last '
                                      '{line!r}')
        self.inbound: OrderedDict[_Inbound, None] = OrderedDict()   # least recently active first
        self.evictions = _Throttle(self, 'notify relay: closed {count} member connection(s), '
                                         'the least recently active, to make room (at most '
                                         '{limit} at a time)')
        self.too_many = _Throttle(self, 'notify relay: {count} notification(s) dropped: '
                                        'already {limit} destinations (max_destinations)')

    def listen(self) -> None:
        try:
            self.port = self.reactor.listenTCP(self.config.inbound_port, _InboundFactory(self),
                                               interface=self.config.inbound_host)
        except CannotListenError as exc:
            raise StartupError('notify relay cannot listen on %s:%d: %s' % (
                self.config.inbound_host, self.config.inbound_port, exc.socketError)) from None
        self._schedule_sweep()

    def stop(self):
        self.stopped = True
        if self._sweep is not None and self._sweep.active():
            self._sweep.cancel()
        self._sweep = None
        for destination in list(self.destinations.values()):
            self._forget(destination)
        for connection in list(self.inbound):
            connection.transport.loseConnection()
        self.inbound.clear()
        if self.port is not None:
            port, self.port = self.port, None
            return port.stopListening()
        return None

    def same_address(self, config) -> bool:
        return (config.inbound_host, config.inbound_port) == (
            self.config.inbound_host, self.config.inbound_port)

    def reconfigure(self, config) -> None:
        """New prefix and bounds on the same inbound address (`reload`), applied at once."""
        self.config = config
        self.prefix_path = notify_socket_path(config.dest_socket_prefix)
        self.sweep_idle()
        excess = len(self.destinations) - config.max_destinations
        if excess > 0:
            by_use = sorted(self.destinations.values(), key=lambda d: d.last_used)
            for destination in by_use[:excess]:
                self._forget(destination)
                self.counters.forgotten += 1
        if self._sweep is not None and self._sweep.active():
            self._sweep.cancel()
            self._schedule_sweep()

    def admit(self, connection: _Inbound) -> None:
        """Take a member connection; beyond INBOUND_MAX the least recently active goes.

        A member whose idle connection was closed reconnects when it next notifies, so many
        connections from a member's address cannot exhaust file descriptors nor lock
        members out.
        """
        while len(self.inbound) >= INBOUND_MAX:
            oldest, _ = self.inbound.popitem(last=False)
            oldest.transport.loseConnection()
            self.counters.evicted_connections += 1
            self.evictions.event(limit=INBOUND_MAX)
        self.inbound[connection] = None

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
        """One line from a member: delivered only if this cluster issued it."""
        self.counters.received += 1
        verdict = self.auth.check(line)
        if verdict is Rejection.FORGED:
            self.counters.bad_lines += 1
            self.counters.forged += 1
            self.forged.event(line=line[:80])
            return
        if not isinstance(verdict, Notification) or not self._deliverable(verdict):
            self.counters.bad_lines += 1
            self.malformed.event(line=line[:200])
            return
        destination = self._destination(verdict.destination)
        if destination is not None:
            destination.send(verdict.tag.encode('latin-1') + b'\n')

    def _deliverable(self, notification: Notification) -> bool:
        where = notification.destination
        if where.startswith('tcp:'):
            return parse_tcp_notify_socket(where) is not None
        return '..' not in where

    def _destination(self, where: str) -> _Destination | None:
        tcp = parse_tcp_notify_socket(where) if where.startswith('tcp:') else None
        key = where if tcp is not None else self.prefix_path + where
        destination = self.destinations.get(key)
        if destination is None:
            if len(self.destinations) >= self.config.max_destinations:
                self.counters.dropped += 1
                self.too_many.event(limit=self.config.max_destinations)
                return None
            destination = self.destinations[key] = _Destination(self, key, tcp)
            self.counters.destinations = len(self.destinations)
        return destination

    # -- idle destinations

    def _schedule_sweep(self) -> None:
        interval = max(1.0, self.config.idle_timeout / 4)
        self._sweep = self.reactor.callLater(interval, self._sweep_and_reschedule)

    def _sweep_and_reschedule(self) -> None:
        self.sweep_idle()
        self._schedule_sweep()

    def sweep_idle(self) -> None:
        """Forget every destination without a notification for idle_timeout seconds."""
        oldest_kept = self.reactor.seconds() - self.config.idle_timeout
        for destination in [d for d in self.destinations.values() if d.last_used <= oldest_kept]:
            self._forget(destination)
            self.counters.forgotten += 1

    def _forget(self, destination: _Destination) -> None:
        if self.destinations.get(destination.path) is destination:
            del self.destinations[destination.path]
        self.counters.destinations = len(self.destinations)
        destination.close()
