"""The unix stream control server: Kamailio/OpenSIPS `unix:` (one command per connection)
and line-mode clients (`cunix:`, telnet, socat), within the bounds of streams.py."""
from __future__ import annotations

import os
import socket
import stat
from collections import deque

from twisted.internet.error import CannotListenError

from ..core import protocol
from ..core.counters import INVALID, CommandStats
from .sockets import Handler, StartupError
from .streams import BoundedStreamFactory, BoundedStreamProtocol, StreamLimits, connection_limit

MAX_CONTROL_CONNECTIONS = 512        # per unix control socket (a real RTPproxy serves 100)

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
