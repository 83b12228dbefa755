"""Redis Sentinel on the reactor: asking the sentinels for the master, and following
`+switch-master`.

`SentinelLocator` asks the sentinels in turn (`core.sentinel.Discovery` decides the order)
with `SENTINEL get-master-addr-by-name` over a short connection each, and gives the writer
an endpoint for the master it named.  `SentinelWatch` keeps one subscription to
`+switch-master` on one sentinel at a time (the next one when it goes away) and reports a
switch of our master at once, so nobody waits for a timeout or a back-off to notice it.
Both are non-blocking, like every connection of the reactor.
"""
from __future__ import annotations

from typing import Callable

from twisted.internet import defer, protocol
from twisted.logger import Logger

from ..core.resp import ProtocolError, ReplyError, ReplyParser, encode
from ..core.sentinel import (SWITCH_CHANNEL, Address, Discovery, SentinelRing, format_address,
                             parse_switch_master)
from .redis_connection import (RespConnection, check_replies, client_endpoint,
                               describe_failure, enable_keepalive)

__all__ = ['SentinelLocator', 'SentinelWatch', 'NoMasterError']


class NoMasterError(ConnectionError):
    """No sentinel named the master; the message says what each one answered."""


def _auth(password: str | None) -> list[bytes]:
    return [] if password is None else [encode('AUTH', password)]


class SentinelLocator:
    """Which data node is the master now, according to the sentinels."""

    log = Logger()

    def __init__(self, config, reactor, password: Callable[[], str | None]) -> None:
        self.config = config
        self.reactor = reactor
        self.sentinel = config.sentinel
        self.ring = SentinelRing(config.sentinel.addresses)
        self._password = password       # read at every question: a rotated file is picked up
        self.current: Address | None = None     # the master the writer was last sent to

    def endpoint(self) -> defer.Deferred:
        """An endpoint for the master the sentinels name now (the writer's endpoint_factory)."""
        d = self.locate()

        def found(address: Address):
            if address != self.current:
                self.log.info('redis: the sentinels name {address} master of {name}',
                              address=format_address(address), name=self.sentinel.master)
            self.current = address
            return client_endpoint(self.config, self.reactor, address)
        return d.addCallback(found)

    @defer.inlineCallbacks
    def locate(self):
        """Fires with the master's (host, port); fails with NoMasterError."""
        attempt = Discovery(self.ring, self.sentinel.master)
        password = self._password()
        sentinel = attempt.next()
        while sentinel is not None:
            try:
                reply = yield self._ask(sentinel, password)
            except Exception as exc:       # refused, timed out, TLS, bad password: next one
                attempt.failed(sentinel, describe_failure(exc))
            else:
                address = attempt.answered(sentinel, reply)
                if address is not None:
                    return address
            sentinel = attempt.next()
        raise NoMasterError(attempt.summary())

    @defer.inlineCallbacks
    def _ask(self, sentinel: Address, password: str | None):
        factory = protocol.Factory.forProtocol(
            lambda: RespConnection(self.reactor, self.config.command_timeout_ms / 1000.0))
        factory.noisy = False               # one question per connect: no log lines
        conn = yield client_endpoint(self.config, self.reactor, sentinel).connect(factory)
        try:
            commands = _auth(password) + [
                encode('SENTINEL', 'get-master-addr-by-name', self.sentinel.master)]
            replies = yield conn.request(b''.join(commands), len(commands))
        finally:
            if conn.connected:
                conn.transport.loseConnection()
        check_replies(replies[:-1])        # AUTH refused: say so, not "unknown master"
        return replies[-1]


class SwitchSubscription(protocol.Protocol):
    """One sentinel connection in subscribe mode, listening to +switch-master."""

    def __init__(self, watch: 'SentinelWatch', password: str | None) -> None:
        self.watch = watch
        self.password = password
        self.parser = ReplyParser()
        self.why = ''

    def connectionMade(self) -> None:
        enable_keepalive(self.transport, self.watch.config.tcp_keepalive)
        self.transport.write(b''.join(_auth(self.password) + [encode('SUBSCRIBE',
                                                                     SWITCH_CHANNEL)]))

    def dataReceived(self, data: bytes) -> None:
        self.parser.feed(data)
        try:
            replies = self.parser.replies()
        except ProtocolError as exc:
            self._drop('not a Redis reply: %s' % exc)
            return
        for reply in replies:
            self._handle(reply)

    def _handle(self, reply) -> None:
        if isinstance(reply, ReplyError):
            self._drop('refused: %s' % reply)
        elif isinstance(reply, list) and len(reply) == 3 and isinstance(reply[0], bytes):
            kind = reply[0]
            if kind == b'subscribe':
                self.watch.subscribed()
            elif kind == b'message' and isinstance(reply[2], bytes):
                self.watch.message(reply[2].decode('latin-1'))

    def _drop(self, why: str) -> None:
        self.why = why
        self.transport.abortConnection()

    def connectionLost(self, reason=protocol.connectionDone) -> None:
        self.watch.lost(self.why or describe_failure(reason))


class SentinelWatch:
    """Follows +switch-master of our master on one sentinel at a time.

    on_switch(address) when the sentinels switched the master; on_watching() after every
    (re)subscription, since a switch published meanwhile was missed.
    """

    log = Logger()

    def __init__(self, config, reactor, *, password: Callable[[], str | None],
                 on_switch: Callable[[Address], None],
                 on_watching: Callable[[], None]) -> None:
        self.config = config
        self.reactor = reactor
        self.master = config.sentinel.master
        self.ring = SentinelRing(config.sentinel.addresses)
        self._password = password
        self.on_switch = on_switch
        self.on_watching = on_watching
        self.low = config.reconnect_min_ms / 1000.0
        self.high = config.reconnect_max_ms / 1000.0
        self._backoff = self.low
        self._left: list[Address] = []
        self._conn: SwitchSubscription | None = None
        self._retry = None
        self.running = False
        self.watching: Address | None = None
        self.switches = 0

    def start(self) -> None:
        self.running = True
        self._next()

    def stop(self) -> None:
        self.running = False
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        if self._conn is not None and self._conn.transport is not None:
            self._conn.transport.loseConnection()

    def _next(self) -> None:
        """Subscribe on the next sentinel of this round; after a round, wait and start over."""
        self._retry = None
        if not self.running:
            return
        if not self._left:
            self._left = self.ring.order()
        sentinel = self._left.pop(0)
        factory = protocol.Factory.forProtocol(
            lambda: SwitchSubscription(self, self._password()))
        factory.noisy = False
        d = defer.maybeDeferred(
            lambda: client_endpoint(self.config, self.reactor, sentinel).connect(factory))
        d.addCallbacks(self._connected, self._failed, callbackArgs=(sentinel,),
                       errbackArgs=(sentinel,))

    def _connected(self, conn: SwitchSubscription, sentinel: Address) -> None:
        self._conn = conn
        self.watching = sentinel
        if not self.running:
            conn.transport.loseConnection()

    def _failed(self, failure, sentinel: Address) -> None:
        self.log.debug('redis: sentinel {s} not reachable for +switch-master: {why}',
                       s=format_address(sentinel), why=describe_failure(failure))
        self._again()

    def subscribed(self) -> None:
        self._backoff = self.low
        self._left = []
        self.ring.answered(self.watching)
        self.on_watching()

    def message(self, data: str) -> None:
        address = parse_switch_master(data, self.master)
        if address is not None:
            self.switches += 1
            self.on_switch(address)

    def lost(self, why: str) -> None:
        self._conn = None
        self.watching = None
        if self.running:
            self.log.info('redis: +switch-master subscription lost ({why}); trying the next '
                          'sentinel', why=why)
            self._again()

    def _again(self) -> None:
        if not self.running or self._retry is not None:
            return
        delay = 0 if self._left else self._backoff     # the next sentinel of the round now
        if not self._left:
            self._backoff = min(self._backoff * 2, self.high)
        self._retry = self.reactor.callLater(delay, self._next)
