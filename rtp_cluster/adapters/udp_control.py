"""The UDP (and UDP6) control server: what Kamailio, OpenSIPS and the sippy B2BUA send
`COOKIE COMMAND` datagrams to.

It only moves bytes and keeps the reply cache; every decision is made by the handler it is
given (`Handler(command, respond)`, normally `Cluster.handle`).
"""
from __future__ import annotations

from typing import Callable

from twisted.internet import protocol as tx_protocol
from twisted.internet.error import CannotListenError
from twisted.logger import Logger

from ..core import protocol
from ..core.counters import INVALID, CommandStats, CounterGroup, Field, counter_group
from ..core.replycache import DEFAULT_MAX_BYTES as REPLY_CACHE_BYTES
from ..core.replycache import ReplyCache
from .reactor import lean_dispatch
from .sockets import Handler, StartupError, grow_buffers

REPLY_CACHE_GENERATION = 10.0        # seconds; a reply stays cached 10-20 s (less in a flood)
OWN_DATAGRAM_LOG_INTERVAL = 10.0     # s between log lines about dropped looped-back commands

ControlCounters = counter_group(
    'ControlCounters', '',
    Field('duplicates', 'Retransmitted commands answered from the reply cache or dropped '
          'while their first copy was in flight.', metric='rtp_cluster_retransmits_total'))



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
        grow_buffers(self.port.socket)
        lean_dispatch(self.port)
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
        """Count the command, cache its reply and send it."""
        self._inflight.discard(key)
        self.stats.observe(letter, self.clock.seconds() - started, body)
        cookie, addr = key
        data = ('%s %s\n' % (cookie, body)).encode('latin-1')
        self.cache.put(key, data)
        if self.port is not None:
            try:
                # the socket itself: transport.write re-validates the address every time
                self.port.socket.sendto(data, addr)
            except OSError as exc:
                self.log.warn('cannot reply to {addr}: {err}', addr=addr, err=exc)
