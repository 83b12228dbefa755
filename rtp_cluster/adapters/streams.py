"""Bounds shared by the stream sockets: the unix control sockets and the admin socket.

A broken or hostile local client must not make the daemon grow or run out of descriptors:

- unsent replies: the transport keeps at most `max_unsent` bytes for one client; beyond
  that the connection stops reading (and handling) its commands until the client has read
  its replies (Twisted push producer: the transport pauses and resumes the protocol);
- connections: at most `max_connections` per listening socket.  When all are taken, a new
  client takes the place of the connection idle the longest if that one waits for no reply
  and sent nothing for EVICT_IDLE seconds (idle connections cannot lock others out);
  otherwise the new client gets a one-line refusal and is closed.  Both are logged at most
  once per LOG_INTERVAL;
- idle time: a connection that sent nothing for `idle_timeout` seconds and waits for no
  reply is closed; if the client does not read what is left, it is aborted CLOSE_GRACE
  seconds later;
- half-close: a client may shut down its sending side after its commands; every complete
  command received before is answered, then the connection is closed.
"""
from __future__ import annotations

import resource
import time
from collections import OrderedDict
from dataclasses import dataclass

from twisted.internet import protocol as tx_protocol
from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

__all__ = ['StreamLimits', 'ConnectionGate', 'RateLimitedLog', 'BoundedStreamProtocol',
           'BoundedStreamFactory', 'connection_limit', 'MAX_UNSENT', 'IDLE_TIMEOUT']

MAX_UNSENT = 1024 * 1024          # bytes of replies a client may leave unread
IDLE_TIMEOUT = 300.0              # seconds without a byte from a client that waits for nothing
CLOSE_GRACE = 10.0                # seconds a closing connection gets to take its last replies
EVICT_IDLE = 5.0                  # seconds of silence after which a connection may be evicted
EVICT_SCAN = 8                    # busy connections passed over when looking for an idle one
LOG_INTERVAL = 10.0               # seconds between two log lines about the same event

log = Logger(namespace='rtp_cluster.streams')


def connection_limit(ceiling: int, share: int) -> int:
    """`ceiling`, or less when the descriptor limit is low (systemd's default soft limit is
    1024): one socket may use at most 1/`share` of the descriptors."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return ceiling
    return max(8, min(ceiling, soft // share))


@dataclass(frozen=True)
class StreamLimits:
    max_connections: int
    max_unsent: int = MAX_UNSENT
    idle_timeout: float = IDLE_TIMEOUT


class RateLimitedLog:
    """One warning now, then the events since summed up at most once per LOG_INTERVAL."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.total = 0
        self._unlogged = 0
        self._logged_at: float | None = None

    def count(self, **fields) -> None:
        self.total += 1
        self._unlogged += 1
        now = time.monotonic()
        if self._logged_at is None or now - self._logged_at >= LOG_INTERVAL:
            log.warn(self.text, count=self._unlogged, **fields)
            self._unlogged = 0
            self._logged_at = now


class ConnectionGate:
    """The open connections of one listening socket, least recently active first."""

    def __init__(self, what: str, max_connections: int) -> None:
        self.what = what
        self.max_connections = max_connections
        self.connections: OrderedDict = OrderedDict()
        self.refusals = RateLimitedLog('{what}: refused {count} connection(s): at most {limit} '
                                       'at a time, none idle')
        self.evictions = RateLimitedLog('{what}: closed {count} idle connection(s) to make room '
                                        'for new ones (at most {limit} at a time)')

    def admit(self, connection) -> bool:
        if len(self.connections) >= self.max_connections and not self._evict_one():
            self.refusals.count(what=self.what, limit=self.max_connections)
            return False
        self.connections[connection] = None
        return True

    def _evict_one(self) -> bool:
        """Close the least recently active idle connection; busy ones met first move back."""
        for _ in range(EVICT_SCAN if self.connections else 0):
            oldest = next(iter(self.connections))
            if oldest.awaiting_replies():
                self.connections.move_to_end(oldest)
                continue
            if not oldest.evictable():
                return False             # every later one was active more recently
            del self.connections[oldest]
            oldest.evict()
            self.evictions.count(what=self.what, limit=self.max_connections)
            return True
        return False

    def active(self, connection) -> None:
        if connection in self.connections:
            self.connections.move_to_end(connection)

    def release(self, connection) -> None:
        self.connections.pop(connection, None)


@implementer(IPushProducer, IHalfCloseableProtocol)
class BoundedStreamProtocol(tx_protocol.Protocol):
    """A line-ish stream connection within StreamLimits (see the module text).

    Subclasses read only while `processing_allowed`, call `touch()` on activity and
    `close_when_answered()` after each reply, and provide the hooks below.
    """

    factory: 'BoundedStreamFactory | None' = None
    default_limits = StreamLimits(max_connections=1)

    def __init__(self) -> None:
        self._write_blocked = False      # the transport holds more than max_unsent for the client
        self._input_ended = False        # the client shut down its sending side
        self._closing = False
        self._lost = False
        self._registered = False
        self._admitted = False
        self._clock = None
        self._idle_timer = None
        self._last_activity = 0.0

    # --- hooks ---------------------------------------------------------------------------------

    def refusal(self) -> bytes:
        """What a client over the connection limit reads before the connection closes."""
        raise NotImplementedError

    def awaiting_replies(self) -> bool:
        """Commands received and not answered yet."""
        return False

    def may_process(self) -> bool:
        """A protocol's own reason to stop taking commands (e.g. too many in flight)."""
        return True

    def process_input(self) -> None:
        """Handle what is buffered, as far as `processing_allowed` lets it."""

    # --- state ---------------------------------------------------------------------------------

    @property
    def limits(self) -> StreamLimits:
        return self.factory.limits if self.factory is not None else self.default_limits

    @property
    def processing_allowed(self) -> bool:
        return not (self._write_blocked or self._closing) and self.may_process()

    def update_reading(self) -> None:
        """Read from the socket only while commands may be handled."""
        if self.transport is None or self._closing or self._input_ended:
            return
        if self.processing_allowed:
            self.transport.resumeProducing()
        else:
            self.transport.pauseProducing()

    def touch(self) -> None:
        if self._clock is not None:
            self._last_activity = self._clock.seconds()
        if self._admitted:
            self.factory.gate.active(self)

    def evictable(self) -> bool:
        """Silent for EVICT_IDLE seconds and owed no reply: may make room for a new client."""
        if self._clock is None or self.awaiting_replies():
            return False
        return self._clock.seconds() - self._last_activity >= EVICT_IDLE

    def evict(self) -> None:
        self._admitted = False
        self._closing = True
        self.transport.abortConnection()

    # --- connection ----------------------------------------------------------------------------

    def connectionMade(self) -> None:
        if self.factory is not None and not self.factory.gate.admit(self):
            self._closing = True
            self.transport.write(self.refusal())
            self.transport.loseConnection()
            return
        self._admitted = self.factory is not None
        self.transport.bufferSize = self.limits.max_unsent
        self.transport.registerProducer(self, True)
        self._registered = True
        self._start_idle_timer()

    def connectionLost(self, reason=None) -> None:
        self._closing = True
        self._lost = True
        if self._idle_timer is not None and self._idle_timer.active():
            self._idle_timer.cancel()
        self._idle_timer = None
        if self._admitted:
            self._admitted = False
            self.factory.gate.release(self)

    def close(self) -> None:
        """Hang up once the replies written so far are sent (within CLOSE_GRACE)."""
        if self._lost or self.transport is None:
            return
        self._closing = True
        if self._registered:
            # a registered producer would keep a closing transport waiting for it
            self._registered = False
            self.transport.unregisterProducer()
        self.transport.loseConnection()
        if self._clock is not None:
            if self._idle_timer is not None and self._idle_timer.active():
                self._idle_timer.cancel()
            self._idle_timer = self._clock.callLater(CLOSE_GRACE, self._idle_check)

    def close_when_answered(self) -> None:
        """After a half-close, the connection ends with the last reply."""
        if self._input_ended and not self._closing and not self.awaiting_replies():
            self.close()

    # --- IPushProducer: the transport pauses us while the client does not read ------------

    def pauseProducing(self) -> None:
        self._write_blocked = True
        self.update_reading()

    def resumeProducing(self) -> None:
        self._write_blocked = False
        if self._closing:
            return
        self.process_input()
        self.update_reading()

    def stopProducing(self) -> None:
        self._closing = True

    # --- IHalfCloseableProtocol ----------------------------------------------------------------

    def readConnectionLost(self) -> None:
        self._input_ended = True
        if not self._closing:
            self.process_input()
            self.close_when_answered()

    def writeConnectionLost(self) -> None:
        pass        # we never half-close our side

    # --- idle timeout --------------------------------------------------------------------------

    def _start_idle_timer(self) -> None:
        clock = (self.factory.clock if self.factory is not None else None) \
            or getattr(self.transport, 'reactor', None)
        if clock is None:
            return
        self._clock = clock
        self._last_activity = clock.seconds()
        self._idle_timer = clock.callLater(self.limits.idle_timeout, self._idle_check)

    def _idle_check(self) -> None:
        self._idle_timer = None
        if self._closing:
            self.transport.abortConnection()      # the client does not take its last replies
            return
        if self.awaiting_replies():
            self.touch()
        remaining = self._last_activity + self.limits.idle_timeout - self._clock.seconds()
        if remaining > 0:
            self._idle_timer = self._clock.callLater(remaining, self._idle_check)
            return
        self.close()


class BoundedStreamFactory(tx_protocol.Factory):
    """The StreamLimits and the ConnectionGate that a listening socket's protocols share.

    `clock` (the reactor) drives the idle timeout; without it the transport's reactor is used.
    """

    noisy = False

    def __init__(self, what: str, limits: StreamLimits, clock=None) -> None:
        self.limits = limits
        self.clock = clock
        self.gate = ConnectionGate(what, limits.max_connections)

    @property
    def max_connections(self) -> int:
        return self.limits.max_connections

    @property
    def connections(self) -> OrderedDict:
        """The open connections, least recently active first."""
        return self.gate.connections

    def disconnect_all(self) -> None:
        for connection in list(self.gate.connections):
            connection.close()
