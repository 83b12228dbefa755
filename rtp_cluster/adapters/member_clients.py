"""Member clients: how commands reach a member RTPproxy over UDP/UDP6 (fresh cookies,
retransmits, one sweep timer per member) or its one-shot `unix:` socket."""
from __future__ import annotations

import random
import socket
from collections import deque
from typing import Callable

from twisted.internet import protocol as tx_protocol
from twisted.internet.error import CannotListenError
from twisted.logger import Logger

from ..core.counters import CounterGroup, Histogram
from ..core.member import MemberCounters
from .reactor import lean_dispatch
from .sockets import StartupError, grow_buffers, resolve

Reply = Callable[[str | None], None]

SWEEP_INTERVAL = 0.01                # s; retransmit/expiry check of member commands
# A member command is given up after this long (then E997).  Kamailio and OpenSIPS wait
# 1 s per try and disable the whole cluster when their tries run out (2-5 s).
MEMBER_TIMEOUT = 1.5


class _Pending:
    """A command sent to a member and not answered yet."""

    __slots__ = ('callback', 'data', 'sent_at', 'deadline', 'retransmit_at', 'retransmitted', 'rto')

    def __init__(self, callback: Reply, data: bytes, sent_at: float, deadline: float, rto: float):
        self.callback = callback
        self.data = data
        self.sent_at = sent_at
        self.deadline = deadline
        self.retransmit_at = sent_at + rto
        self.retransmitted = False
        self.rto = rto


class RttEstimator:
    """Smoothed round trip (RFC 6298 style); samples only from unretransmitted commands.

    `rto` is the retransmit timeout, kept current by `sample` (read for every command).
    """

    INITIAL_RTO, MIN_RTO, MAX_RTO = 0.5, 0.03, 1.0

    def __init__(self) -> None:
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.rto = self.INITIAL_RTO

    def sample(self, rtt: float) -> None:
        if self.srtt is None:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt
        self.rto = min(self.MAX_RTO, max(self.MIN_RTO, self.srtt + 4 * self.rttvar))


class _ClientStats:
    """What every member client keeps: the RTT estimate and histogram, counters, the timeout hook."""

    def _init_stats(self) -> None:
        self._estimator = RttEstimator()
        self.counters: CounterGroup = MemberCounters()
        self.rtt_histogram = Histogram()
        self.on_timeout: Callable[[], None] | None = None

    def use_counters(self, counters: CounterGroup, rtt_histogram: Histogram) -> None:
        """Count into the member's registry entries (they outlive this client)."""
        self.counters = counters
        self.rtt_histogram = rtt_histogram

    @property
    def timeouts(self) -> int:
        return self.counters.timeouts

    @property
    def late_replies(self) -> int:
        return self.counters.late_replies

    @property
    def rtt(self) -> float | None:
        return self._estimator.srtt

    def _sample_rtt(self, rtt: float) -> None:
        self._estimator.sample(rtt)
        self.rtt_histogram.observe(rtt)

    def _timed_out(self) -> None:
        self.counters.timeouts += 1
        if self.on_timeout is not None:
            self.on_timeout()


class UDPMemberClient(_ClientStats, tx_protocol.DatagramProtocol):
    """Commands to a UDP/UDP6 member: fresh short cookies, retransmits with backoff."""

    log = Logger()
    noisy = False
    default_timeout = MEMBER_TIMEOUT

    def __init__(self, reactor, host: str, port: int, family: int = socket.AF_INET,
                 bind_address: str | None = None) -> None:
        self.reactor = reactor
        self.family = family
        self.address = (resolve(host, port, family), port)
        self.bind_address = bind_address
        self._prefix = b'%x_' % random.getrandbits(32)
        self._counter = 0
        self._pending: dict[bytes, _Pending] = {}     # by cookie, as it comes back
        self._init_stats()
        self._listening = None
        self._sweeper = None
        self._closed = False

    def start(self) -> None:
        interface = self.bind_address or ('::' if self.family == socket.AF_INET6 else '0.0.0.0')
        bind_port = 0
        if self.bind_address and self.bind_address.count(':') == 1 and self.family == socket.AF_INET:
            interface, bind_port = self.bind_address.split(':')
            bind_port = int(bind_port)
        try:
            self._listening = self.reactor.listenUDP(bind_port, self, interface=interface,
                                                     maxPacketSize=65535)
        except CannotListenError as exc:
            raise StartupError('cannot bind member client to %s: %s'
                               % (interface, exc.socketError)) from None
        grow_buffers(self._listening.socket)
        lean_dispatch(self._listening)
        # Not connect()ed on purpose: an ICMP port-unreachable on a connected socket makes
        # epoll report EPOLLERR, and Twisted then closes the port for good, so a member
        # that was down for a moment could never be probed again.  Replies are matched on
        # their source address instead (datagramReceived).

    @property
    def local_port(self) -> int | None:
        """The port commands to the member are sent from (None before start or after close)."""
        return self._listening.getHost().port if self._listening is not None else None

    def close(self) -> None:
        """Take no new commands; the socket closes once those in flight are answered or expired.

        Every callback is still called exactly once: a member removed right after its last
        `D` went out (a drained member) must not leave that `D` without an answer.
        """
        self._closed = True
        self._close_if_idle()

    def _close_if_idle(self) -> None:
        if not self._closed or self._pending:
            return
        if self._sweeper is not None and self._sweeper.active():
            self._sweeper.cancel()
        self._sweeper = None
        if self._listening is not None:
            listening, self._listening = self._listening, None
            listening.stopListening()

    def send(self, text: str, callback: Reply, timeout: float | None = None) -> None:
        if self._closed:
            callback(None)
            return
        self._counter += 1
        cookie = b'%s%d' % (self._prefix, self._counter)
        now = self.reactor.seconds()
        data = b'%s %s' % (cookie, text.encode('latin-1'))
        self._pending[cookie] = _Pending(callback, data, now,
                                         now + (timeout or self.default_timeout),
                                         self._estimator.rto)
        self._write(data)
        if self._sweeper is None:
            self._sweeper = self.reactor.callLater(SWEEP_INTERVAL, self._sweep)

    def _write(self, data: bytes) -> None:
        if self._listening is not None:
            try:
                self._listening.socket.sendto(data, self.address)
            except OSError:
                pass    # e.g. a full buffer: the retransmit tries again

    def _sweep(self) -> None:
        """Retransmit and expire: one timer per client, not one per command."""
        self._sweeper = None
        now = self.reactor.seconds()
        expired = []
        for cookie, pending in self._pending.items():
            if now >= pending.deadline:
                expired.append(cookie)
            elif now >= pending.retransmit_at:
                pending.retransmitted = True
                pending.rto = min(pending.rto * 2, RttEstimator.MAX_RTO)
                pending.retransmit_at = min(now + pending.rto, pending.deadline)
                self._write(pending.data)
        for cookie in expired:
            self._expire(cookie)
        if self._pending and self._sweeper is None:
            self._sweeper = self.reactor.callLater(SWEEP_INTERVAL, self._sweep)

    def _expire(self, cookie: bytes) -> None:
        pending = self._pending.pop(cookie, None)
        if pending is not None:
            self.counters.timeouts += 1
            if self.on_timeout is not None and not self._closed:
                self.on_timeout()
            pending.callback(None)
            self._close_if_idle()

    def datagramReceived(self, data: bytes, addr) -> None:
        if addr[1] != self.address[1] or addr[0] != self.address[0]:
            return      # not from our member
        cookie, _, body = data.partition(b' ')
        pending = self._pending.pop(cookie, None)
        if pending is None:
            self.counters.late_replies += 1
            return
        if not pending.retransmitted:
            self._sample_rtt(self.reactor.seconds() - pending.sent_at)
        if body.endswith(b'\n'):
            body = body[:-1]
        pending.callback(body.decode('latin-1'))
        if self._closed:
            self._close_if_idle()

    def connectionRefused(self) -> None:
        pass    # ICMP port unreachable: the member is down; timeouts and probes handle it


class _OneShotProtocol(tx_protocol.Protocol):
    def __init__(self, client: 'UnixMemberClient', text: bytes, finish: Callable[[str | None], None]):
        self.client = client
        self.text = text
        self.finish = finish
        self.chunks: list[bytes] = []

    def connectionMade(self) -> None:
        self.transport.write(self.text)

    def dataReceived(self, data: bytes) -> None:
        self.chunks.append(data)

    def connectionLost(self, reason=None) -> None:
        data = b''.join(self.chunks).decode('latin-1')
        self.finish(data if data else None)


class _OneShotFactory(tx_protocol.ClientFactory):
    noisy = False

    def __init__(self, client, text: bytes, finish):
        self.client, self.text, self.finish = client, text, finish

    def buildProtocol(self, addr):
        return _OneShotProtocol(self.client, self.text, self.finish)

    def clientConnectionFailed(self, connector, reason) -> None:
        self.finish(None)


class UnixMemberClient(_ClientStats):
    """Commands to a member's one-shot `unix:` socket: one connection per command."""

    log = Logger()
    default_timeout = MEMBER_TIMEOUT
    # RTPproxy listens with a backlog of 32 (and serves at most 100 stream connections):
    # more connects at once than the backlog fail with EAGAIN and the command is lost.
    max_connections = 16

    def __init__(self, reactor, path: str) -> None:
        self.reactor = reactor
        self.path = path
        self._init_stats()
        self._active = 0
        self._queue: deque = deque()
        self._closed = False

    def start(self) -> None:
        self._closed = False

    def close(self) -> None:
        """Take no new commands; queued ones still go out (a drained member's last `D`)."""
        self._closed = True

    def send(self, text: str, callback: Reply, timeout: float | None = None) -> None:
        if self._closed:
            callback(None)
            return
        if self._active >= self.max_connections:
            self._queue.append((text, callback, timeout))
            return
        self._start_one(text, callback, timeout or self.default_timeout)

    def _start_one(self, text: str, callback: Reply, timeout: float) -> None:
        self._active += 1
        started = self.reactor.seconds()
        state = {'done': False, 'timer': None, 'connector': None}

        def finish(reply: str | None) -> None:
            if state['done']:
                return
            state['done'] = True
            self._active -= 1
            timer = state['timer']
            if timer is not None and timer.active():
                timer.cancel()
            if reply is not None:
                self._sample_rtt(self.reactor.seconds() - started)
                if reply.endswith('\n'):
                    reply = reply[:-1]
            callback(reply)
            self._next()

        def on_timeout() -> None:
            connector = state['connector']
            self._timed_out()
            finish(None)
            if connector is not None:
                connector.disconnect()

        state['timer'] = self.reactor.callLater(timeout, on_timeout)
        factory = _OneShotFactory(self, text.encode('latin-1'), finish)
        state['connector'] = self.reactor.connectUNIX(self.path, factory, timeout=timeout)

    def _next(self) -> None:
        if self._queue and self._active < self.max_connections:
            text, callback, timeout = self._queue.popleft()
            self._start_one(text, callback, timeout or self.default_timeout)


def make_member_client(reactor, endpoint, bind_address: str | None = None):
    """The right client for a member's configured endpoint (not started yet)."""
    if endpoint.protocol == 'unix':
        return UnixMemberClient(reactor, endpoint.path)
    family = socket.AF_INET6 if endpoint.protocol == 'udp6' else socket.AF_INET
    return UDPMemberClient(reactor, endpoint.host, endpoint.port, family, bind_address)
