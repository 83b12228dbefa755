"""Twisted adapters: control servers (what Kamailio/OpenSIPS talk to) and member clients.

These classes only move bytes; every decision is made by the handler they are given
(`Handler(command, respond)`, normally `Cluster.handle`).
"""
from __future__ import annotations

import os
import random
import socket
import stat
from collections import deque
from typing import Callable

from twisted.internet import protocol as tx_protocol
from twisted.internet.error import CannotListenError
from twisted.logger import Logger

from ..core import protocol
from ..core.counters import INVALID, CommandStats, CounterGroup, Field, Histogram, counter_group
from ..core.member import MemberCounters
from ..core.protocol import Command
from ..core.replycache import DEFAULT_MAX_BYTES as REPLY_CACHE_BYTES
from ..core.replycache import ReplyCache
from .streams import BoundedStreamFactory, BoundedStreamProtocol, StreamLimits, connection_limit

Respond = Callable[[str], None]
Handler = Callable[[Command, Respond], None]
Reply = Callable[[str | None], None]

SOCKET_BUFFER = 4 * 1024 * 1024
REPLY_CACHE_GENERATION = 10.0        # seconds; a reply stays cached 10-20 s (less in a flood)
SWEEP_INTERVAL = 0.01                # s; retransmit/expiry check of member commands
# A member command is given up after this long (then E997).  Kamailio and OpenSIPS wait
# 1 s per try and disable the whole cluster when their tries run out (2-5 s).
MEMBER_TIMEOUT = 1.5
OWN_DATAGRAM_LOG_INTERVAL = 10.0     # s between log lines about dropped looped-back commands
MAX_CONTROL_CONNECTIONS = 512        # per unix control socket (a real RTPproxy serves 100)


ControlCounters = counter_group(
    'ControlCounters', '',
    Field('duplicates', 'Retransmitted commands answered from the reply cache or dropped '
          'while their first copy was in flight.', metric='rtp_cluster_retransmits_total'))


class StartupError(Exception):
    """A socket could not be set up; the message is one line for the operator."""


def _grow_buffers(sock: socket.socket) -> None:
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


# --- UDP control server ----------------------------------------------------------------------

class UDPControlServer(tx_protocol.DatagramProtocol):
    """`COOKIE COMMAND` in, `COOKIE REPLY` out, from the socket the client wrote to.

    A retransmitted cookie (same client address) gets the cached reply; one whose first
    copy is still in flight is dropped, its reply goes out when the member answers.  The
    cache holds at most `cache_bytes` (core/replycache.py).
    A datagram for which `is_own_source(addr)` is true was sent by this process itself (one
    of its member clients pointed at it): it is dropped and counted, never forwarded again.
    """

    log = Logger()
    noisy = False

    def __init__(self, handler: Handler, clock, *, cache_generation: float = REPLY_CACHE_GENERATION,
                 cache_bytes: int = REPLY_CACHE_BYTES, stats: CommandStats | None = None,
                 is_own_source: Callable[[tuple], bool] | None = None,
                 counters: CounterGroup | None = None) -> None:
        self.handler = handler
        self.is_own_source = is_own_source
        self.own_datagrams = 0
        self._own_logged_at: float | None = None
        self.clock = clock
        self.stats = stats if stats is not None else CommandStats()
        self.cache_generation = cache_generation
        self.cache = ReplyCache(cache_bytes)
        self._inflight: set = set()
        self._rotation = None
        self.port = None
        self.counters = counters if counters is not None else ControlCounters()

    @property
    def duplicates(self) -> int:
        return self.counters.duplicates

    def listen(self, reactor, host: str, port: int) -> None:
        try:
            self.port = reactor.listenUDP(port, self, interface=host, maxPacketSize=65535)
        except CannotListenError as exc:
            raise StartupError('cannot listen on udp %s port %d: %s'
                               % (host, port, exc.socketError)) from None
        _grow_buffers(self.port.socket)
        self._rotation = self.clock.callLater(self.cache_generation, self._rotate)

    def stop(self):
        if self._rotation is not None and self._rotation.active():
            self._rotation.cancel()
        if self.port is not None:
            port, self.port = self.port, None
            return port.stopListening()
        return None

    def _rotate(self) -> None:
        self.cache.rotate()
        self._rotation = self.clock.callLater(self.cache_generation, self._rotate)

    def datagramReceived(self, data: bytes, addr) -> None:
        if self.is_own_source is not None and self.is_own_source(addr):
            self._drop_own(addr)
            return
        text = data[:protocol.MAX_COMMAND_BYTES].decode('latin-1')
        cookie, command_text = protocol.split_cookie(text)
        if cookie is None:
            self.port.socket.sendto(b'E5\n', addr)
            return
        key = (cookie, addr)
        cached = self.cache.get(key)
        if cached is not None:
            self.counters.duplicates += 1
            self.port.socket.sendto(cached, addr)
            return
        if key in self._inflight:
            self.counters.duplicates += 1
            return
        started = self.clock.seconds()
        if command_text is None:
            self._answer(key, protocol.E_SYNTAX, INVALID, started)
            return
        command = protocol.parse_command(command_text)
        if command.error is not None:
            self._answer(key, command.error, command.letter or INVALID, started)
            return
        self._inflight.add(key)
        letter = command.letter
        self.handler(command, lambda body: self._answer(key, body, letter, started))

    def _drop_own(self, addr) -> None:
        self.own_datagrams += 1
        now = self.clock.seconds()
        if self._own_logged_at is None or now - self._own_logged_at >= OWN_DATAGRAM_LOG_INTERVAL:
            self._own_logged_at = now
            self.log.warn('dropped {n} commands sent by this rtp_cluster itself (from {addr}): '
                          'a member points at a control socket of this process',
                          n=self.own_datagrams, addr=addr)

    def _answer(self, key, body: str, letter: str, started: float) -> None:
        self._inflight.discard(key)
        self.stats.observe(letter, self.clock.seconds() - started, body)
        self._send(key, body)

    def _send(self, key, body: str) -> None:
        cookie, addr = key
        data = ('%s %s\n' % (cookie, body)).encode('latin-1')
        self.cache.put(key, data)
        if self.port is not None:
            try:
                # the socket itself: transport.write re-validates the address every time
                self.port.socket.sendto(data, addr)
            except OSError as exc:
                self.log.warn('cannot reply to {addr}: {err}', addr=addr, err=exc)


# --- unix stream control server ------------------------------------------------------------------

ONE_SHOT, LINES = 'one-shot', 'lines'


class StreamControlProtocol(BoundedStreamProtocol):
    """Serves both stream styles real clients use, within the bounds of streams.py.

    One-shot (Kamailio/OpenSIPS `unix:`): one write without a newline, one reply, close.
    Line mode (`cunix:`, telnet, socat): `\\n`-terminated commands on a persistent
    connection, one `\\n`-terminated reply per line, in order.
    """

    MAX_LINE = 8192          # a real RTPproxy's line buffer; a longer line ends the connection
    MAX_IN_FLIGHT = 256      # commands of one connection awaiting replies; reading pauses beyond

    def __init__(self, handler: Handler, stats: CommandStats | None = None, clock=None) -> None:
        super().__init__()
        self.handler = handler
        self.stats = stats if stats is not None else CommandStats()
        self.clock = clock if clock is not None else _default_clock()
        self._buffer = bytearray()
        self._mode: str | None = None      # decided by the first read
        self._pending: deque = deque()     # reply slots [body, close_after], in command order
        self._processing = False
        self._out = bytearray()            # replies made while processing one read: one write

    def refusal(self) -> bytes:
        return protocol.E_TOO_MANY_CONNECTIONS.encode('ascii') + b'\n'

    def awaiting_replies(self) -> bool:
        return bool(self._pending)

    def may_process(self) -> bool:
        return self._mode != ONE_SHOT and len(self._pending) < self.MAX_IN_FLIGHT

    def dataReceived(self, data: bytes) -> None:
        if self._closing or self._mode == ONE_SHOT:
            return
        self.touch()
        self._buffer += data
        if self._mode is None:
            if b'\n' not in self._buffer:
                self._one_shot()
                return
            self._mode = LINES
        self.process_input()

    def _one_shot(self) -> None:
        """The whole first write is one command; nothing after it is read."""
        self._mode = ONE_SHOT
        text = self._buffer.decode('latin-1')
        self._buffer = bytearray()
        self.update_reading()
        self._dispatch(text, close_after=True)

    def process_input(self) -> None:
        if self._mode != LINES or self._processing:
            return
        self._processing = True
        buffer = self._buffer
        start = 0
        try:
            while self.processing_allowed:
                newline = buffer.find(b'\n', start)
                if newline < 0:
                    break
                line = buffer[start:newline].decode('latin-1')
                start = newline + 1
                self._dispatch(line, close_after=False)
        finally:
            del buffer[:start]
            self._processing = False
            self._flush()
        if len(buffer) > self.MAX_LINE and b'\n' not in buffer:
            buffer.clear()
            self.close()

    def _dispatch(self, text: str, close_after: bool) -> None:
        slot = [None, close_after]
        self._pending.append(slot)
        started = self.clock.seconds()
        command = protocol.parse_command(text[:protocol.MAX_COMMAND_BYTES])
        letter = command.letter or INVALID
        if command.error is not None:
            self._fill(slot, command.error, letter, started)
            return
        self.handler(command, lambda body: self._fill(slot, body, letter, started))

    def _flush(self) -> None:
        if self._out and not self._closing:
            self.transport.write(bytes(self._out))
        self._out.clear()

    def _fill(self, slot: list, body: str, letter: str, started: float) -> None:
        self.stats.observe(letter, self.clock.seconds() - started, body)
        slot[0] = body
        was_full = len(self._pending) >= self.MAX_IN_FLIGHT
        while self._pending and self._pending[0][0] is not None:
            body, close_after = self._pending.popleft()
            if self._closing:
                continue
            self._out += body.encode('latin-1') + b'\n'
            if not self._processing:
                self._flush()
            if close_after:
                self.close()
        if self._closing:
            return
        self.touch()
        if was_full and not self._processing:
            self.process_input()
            self.update_reading()
        self.close_when_answered()


class StreamControlFactory(BoundedStreamFactory):
    """A unix control socket: at most `max_connections` clients (E992 beyond; see streams.py)."""

    def __init__(self, handler: Handler, clock=None, limits: StreamLimits | None = None,
                 stats: CommandStats | None = None) -> None:
        super().__init__('unix control socket', limits or StreamLimits(
            max_connections=connection_limit(MAX_CONTROL_CONNECTIONS, 4)), clock)
        self.handler = handler
        self.stats = stats if stats is not None else CommandStats()

    def buildProtocol(self, addr):
        proto = StreamControlProtocol(self.handler, self.stats, self.clock)
        proto.factory = self
        return proto


def _default_clock():
    from twisted.internet import reactor
    return reactor


def prepare_unix_path(path: str) -> None:
    """Remove a stale socket file; refuse to replace anything else or a live socket."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise StartupError('%s exists and is not a socket' % path)
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)
        return
    finally:
        probe.close()
    raise StartupError('%s: another process is already listening there' % path)


def listen_unix(reactor, path: str, factory, owner: tuple[int, int] | None = None, mode: int = 0o660):
    prepare_unix_path(path)
    try:
        port = reactor.listenUNIX(path, factory, mode=mode)
    except CannotListenError as exc:
        raise StartupError('cannot listen on unix socket %s: %s' % (path, exc.socketError)) from None
    if owner is not None:
        try:
            os.chown(path, *owner)
        except OSError as exc:
            port.stopListening()
            raise StartupError('cannot chown %s: %s' % (path, exc.strerror)) from None
    return port


# --- member clients --------------------------------------------------------------------------------

class _Pending:
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
    """Smoothed round trip (RFC 6298 style); samples only from unretransmitted commands."""

    def __init__(self) -> None:
        self.srtt: float | None = None
        self.rttvar = 0.0

    def sample(self, rtt: float) -> None:
        if self.srtt is None:
            self.srtt, self.rttvar = rtt, rtt / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt

    def rto(self, floor: float = 0.03, ceiling: float = 1.0) -> float:
        if self.srtt is None:
            return 0.5
        return min(ceiling, max(floor, self.srtt + 4 * self.rttvar))


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
        self._prefix = '%x_' % random.getrandbits(32)
        self._counter = 0
        self._pending: dict[str, _Pending] = {}
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
        _grow_buffers(self._listening.socket)
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
        cookie = self._prefix + str(self._counter)
        now = self.reactor.seconds()
        pending = _Pending(callback, ('%s %s' % (cookie, text)).encode('latin-1'), now,
                           now + (timeout or self.default_timeout), self._estimator.rto())
        self._pending[cookie] = pending
        self._write(pending.data)
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
                pending.rto = min(pending.rto * 2, 1.0)
                pending.retransmit_at = min(now + pending.rto, pending.deadline)
                self._write(pending.data)
        for cookie in expired:
            self._expire(cookie)
        if self._pending and self._sweeper is None:
            self._sweeper = self.reactor.callLater(SWEEP_INTERVAL, self._sweep)

    def _expire(self, cookie: str) -> None:
        pending = self._pending.pop(cookie, None)
        if pending is not None:
            self.counters.timeouts += 1
            if self.on_timeout is not None and not self._closed:
                self.on_timeout()
            pending.callback(None)
            self._close_if_idle()

    def datagramReceived(self, data: bytes, addr) -> None:
        if (addr[0], addr[1]) != self.address:
            return      # not from our member
        text = data.decode('latin-1')
        cookie, _, body = text.partition(' ')
        pending = self._pending.pop(cookie, None)
        if pending is None:
            self.counters.late_replies += 1
            return
        if not pending.retransmitted:
            self._sample_rtt(self.reactor.seconds() - pending.sent_at)
        if body.endswith('\n'):
            body = body[:-1]
        pending.callback(body)
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
