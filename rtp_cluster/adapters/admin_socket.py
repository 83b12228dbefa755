"""The admin socket: moves command lines between a unix or TCP stream socket and the
command language (`AdminCommands`, admin.py), within the bounds of streams.py."""
from __future__ import annotations

import os
import stat
import time

from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.logger import Logger

from ..core.admin_auth import AuthGate
from ..core.admin_text import guard_line
from ..core.endpoints import Endpoint, parse_admin_socket
from .admin import AdminCommands
from .admin_registry import AdminReply, stream_failure
from .streams import BoundedStreamFactory, BoundedStreamProtocol, StreamLimits, connection_limit
from .transports import StartupError, listen_unix

__all__ = ['AdminProtocol', 'AdminFactory', 'AdminServer', 'MAX_LINE', 'MAX_CONNECTIONS']

MAX_LINE = 64 * 1024            # bytes in one command line, line end not counted
MAX_CONNECTIONS = connection_limit(256, 8)      # simultaneous admin clients
AUTH_LOG_INTERVAL = 10.0        # s between log lines about refused admin secrets

log = Logger(namespace='rtp_cluster.admin')


class AdminProtocol(BoundedStreamProtocol):
    """`\\n`-terminated command lines in (a `\\r` before it is dropped), replies out in order.

    A line longer than MAX_LINE is answered `ERROR: line too long` and skipped up to its
    newline.  Unsent replies, connections and idle time are bounded (streams.py).  A
    streamed reply (`AdminReply.more`) is written a batch per reactor turn, and only while
    the client reads it; the next command is handled after its final line.
    """

    def __init__(self, commands: AdminCommands, max_line: int = MAX_LINE,
                 secret: str | None = None) -> None:
        super().__init__()
        self.commands = commands
        self.max_line = max_line
        self.gate = AuthGate(secret)
        self._buffer = bytearray()
        self._scanned = 0            # bytes of _buffer known to hold no newline
        self._discarding = False     # inside an over-long line
        self._stream = None          # the rest of a streamed reply being written
        self._stream_call = None     # its next batch, scheduled

    def refusal(self) -> bytes:
        return AdminReply.error('too many admin connections (at most %d); try again later'
                                % self.factory.max_connections).text().encode('utf-8')

    def connectionLost(self, reason=None) -> None:
        super().connectionLost(reason)
        self._buffer = bytearray()
        self._end_stream()

    def may_process(self) -> bool:
        return self._stream is None

    def awaiting_replies(self) -> bool:
        return self._stream is not None

    def resumeProducing(self) -> None:
        super().resumeProducing()
        self._schedule_stream()

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        self.touch()
        self._buffer += data
        self.process_input()

    def process_input(self) -> None:
        buffer = self._buffer
        start = 0
        exhausted = False
        while self.processing_allowed:
            newline = buffer.find(b'\n', max(start, self._scanned))
            if newline < 0:
                exhausted = True
                break
            raw = bytes(buffer[start:newline])
            start = newline + 1
            self._line(raw)
        del buffer[:start]
        self._scanned = len(buffer) if exhausted else 0
        if exhausted and not self._closing:
            self._check_partial_line(buffer)

    def _check_partial_line(self, buffer: bytearray) -> None:
        """The unterminated rest: dropped inside an over-long line, or when it gets too long."""
        if not self._discarding and len(buffer) > self.max_line + 1:    # + 1: a final '\r'
            self._write(AdminReply.error('line too long (more than %d bytes)' % self.max_line))
            self._discarding = True
        if self._discarding:
            buffer.clear()
            self._scanned = 0

    def _line(self, raw: bytes) -> None:
        if self._discarding:
            self._discarding = False      # this newline ends the over-long line
            return
        if raw.endswith(b'\r'):
            raw = raw[:-1]
        if len(raw) > self.max_line:
            self._write(AdminReply.error('line too long (more than %d bytes)' % self.max_line))
            return
        text = raw.decode('utf-8', 'replace')
        reply = self.commands.execute(text) if self.gate.passed else self._authenticate(text)
        self._write(reply)
        if reply.close:
            self.close()

    def _authenticate(self, line: str) -> AdminReply:
        """The first line of a connection that needs the shared secret."""
        if not line.strip():
            return AdminReply()
        problem = self.gate.check(line)
        if problem is None:
            return AdminReply.ok()
        factory = getattr(self, 'factory', None)
        if factory is not None:
            factory.auth_refused(self.transport.getPeer() if self.transport else None)
        return AdminReply(AdminReply.error(problem).lines, close=True)

    def _write(self, reply: AdminReply) -> None:
        if reply.lines and self.transport is not None:
            self.transport.write(reply.text().encode('utf-8', 'replace'))
            self.touch()
        if reply.more is not None:
            self._stream = reply.more
            self._schedule_stream()
            self.update_reading()

    # --- streamed replies ------------------------------------------------------------------

    def _schedule_stream(self) -> None:
        if self._stream is None or self._stream_call is not None or self._closing \
                or self._write_blocked:
            return                   # resumeProducing schedules it once the client reads
        self._stream_call = self._reactor().callLater(0, self._stream_batch)

    def _reactor(self):
        if self._clock is not None:
            return self._clock
        from twisted.internet import reactor
        return reactor

    def _stream_batch(self) -> None:
        self._stream_call = None
        if self._stream is None or self._closing or self._write_blocked:
            return                   # resumeProducing schedules it again
        try:
            batch = next(self._stream)
        except StopIteration:
            self._finish_stream('OK')
            return
        except Exception as exc:
            self._finish_stream(stream_failure(exc))
            return
        if batch and self.transport is not None:
            text = ''.join(guard_line(line) + '\n' for line in batch)
            self.transport.write(text.encode('utf-8', 'replace'))
            self.touch()
        self._schedule_stream()

    def _finish_stream(self, last_line: str) -> None:
        self._stream = None
        self._write(AdminReply((last_line,)))
        self.process_input()
        self.update_reading()
        self.close_when_answered()

    def _end_stream(self) -> None:
        stream, self._stream = self._stream, None
        if self._stream_call is not None and self._stream_call.active():
            self._stream_call.cancel()
        self._stream_call = None
        if stream is not None:
            stream.close()


class AdminFactory(BoundedStreamFactory):
    """At most `max_connections` admin clients at a time (see streams.py for the bounds)."""

    def __init__(self, commands: AdminCommands, max_connections: int = MAX_CONNECTIONS,
                 max_line: int = MAX_LINE, secret: str | None = None, clock=None) -> None:
        super().__init__('admin socket', StreamLimits(max_connections=max_connections), clock)
        self.commands = commands
        self.secret = secret
        self.max_line = max_line
        self.auth_refusals = 0
        self._auth_logged_at: float | None = None

    def buildProtocol(self, addr) -> AdminProtocol:
        proto = AdminProtocol(self.commands, self.max_line, self.secret)
        proto.factory = self
        return proto

    def auth_refused(self, peer) -> None:
        """Count a connection refused for its secret; log it, at most every AUTH_LOG_INTERVAL."""
        self.auth_refusals += 1
        now = time.monotonic()
        if self._auth_logged_at is None or now - self._auth_logged_at >= AUTH_LOG_INTERVAL:
            self._auth_logged_at = now
            log.warn('admin: connection from {peer} refused: no or wrong secret '
                     '({n} refused so far)', peer=str(peer), n=self.auth_refusals)


def parse_admin_spec(spec: str) -> Endpoint:
    """'/path', 'unix:/path' or 'tcp:host:port' -> Endpoint; StartupError otherwise."""
    try:
        return parse_admin_socket(spec)
    except ValueError as exc:
        raise StartupError('admin socket: %s' % exc) from None


class AdminServer:
    """The admin socket of a Runtime: unix (mode 0660, owner `sock_owner`) or TCP.

    With a `secret`, every connection must send `auth SECRET` before any command.
    """

    def __init__(self, runtime, spec: str, sock_owner: tuple[int, int] | None = None, *,
                 max_connections: int = MAX_CONNECTIONS, max_line: int = MAX_LINE,
                 secret: str | None = None) -> None:
        self.endpoint = parse_admin_spec(spec)
        self.sock_owner = sock_owner
        self.commands = AdminCommands(runtime)
        self.factory = AdminFactory(self.commands, max_connections, max_line, secret)
        self.port = None

    def listen(self, reactor) -> None:
        """Bind the socket; StartupError (one line) when that is impossible."""
        endpoint = self.endpoint
        if endpoint.protocol == 'unix':
            self.port = listen_unix(reactor, endpoint.path, self.factory, self.sock_owner, 0o660)
        else:
            try:
                self.port = reactor.listenTCP(endpoint.port, self.factory, interface=endpoint.host)
            except CannotListenError as exc:
                raise StartupError('cannot listen on admin socket tcp %s port %d: %s'
                                   % (endpoint.host, endpoint.port, exc.socketError)) from None
        log.info('admin socket listening on {endpoint}', endpoint=str(endpoint))

    def stop(self) -> defer.Deferred | None:
        """Close the socket and every admin connection; a unix socket file is removed."""
        if self.port is None:
            return None
        port, self.port = self.port, None
        self.factory.disconnect_all()
        d = defer.maybeDeferred(port.stopListening)
        d.addErrback(lambda failure: log.failure('closing the admin socket', failure))
        if self.endpoint.protocol == 'unix':
            d.addCallback(lambda _: remove_socket_file(self.endpoint.path))
        return d


def remove_socket_file(path: str) -> None:
    """Remove `path` if it is still a socket file (some Twisted versions leave it)."""
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warn('cannot remove {path}: {error}', path=path, error=exc.strerror)
