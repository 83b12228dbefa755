"""One connection to Redis (or to a sentinel) on the reactor: where to connect and how.

Where: the <url>, or a (host, port) the sentinels named, over TCP, TLS or a unix socket;
with TCP keepalive; AUTH, SELECT and CLIENT SETNAME first.  How: `RespConnection`,
pipelined requests each waiting for a known number of replies, in order, within the command
timeout (<command_timeout_ms>); a reply missing that long drops the connection.
"""
from __future__ import annotations

import collections
import socket
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from twisted.internet import defer, error, protocol, ssl
from twisted.internet.endpoints import HostnameEndpoint, UNIXClientEndpoint, wrapClientTLS

from ..core import config_schema as schema
from ..core.resp import ProtocolError, ReplyError, ReplyParser, encode
from ..core.sentinel import Address

__all__ = ['RedisCommandError', 'ConnectionLostError', 'RespConnection', 'database_number',
           'database_of', 'uses_tls', 'tls_options', 'client_endpoint', 'keepalive_options',
           'enable_keepalive', 'handshake_commands', 'describe_failure', 'check_replies',
           'COMMAND_TIMEOUT', 'KEEPALIVE_PROBES']

COMMAND_TIMEOUT = schema.child('redis', 'command_timeout_ms').default / 1000.0
KEEPALIVE_PROBES = 3         # unanswered probes before the kernel drops the connection


class RedisCommandError(Exception):
    """Redis refused a command (error reply), or the reply was not the one expected."""


class ConnectionLostError(ConnectionError):
    """The connection went away before the reply; the message says why, ready to log."""


# --- where to connect ------------------------------------------------------------------------

def database_number(url: str) -> int:
    parts = urlsplit(url)
    path = parts.path.strip('/') if parts.scheme != 'unix' else ''
    if path.isdigit():
        return int(path)
    for name, value in parse_qsl(parts.query):
        if name == 'db' and value.isdigit():
            return int(value)
    return 0


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _certificates(pem: str) -> list[ssl.Certificate]:
    """Every certificate of a PEM bundle (loadPEM reads only the first)."""
    marker = '-----END CERTIFICATE-----'
    blocks = [block + marker for block in pem.split(marker) if 'BEGIN CERTIFICATE' in block]
    return [ssl.Certificate.loadPEM(block) for block in blocks]


def tls_options(config, hostname: str):
    """Client TLS (rediss://, tls="yes"): the chain is always verified, the name unless
    switched off."""
    trust = (ssl.trustRootFromCertificates(_certificates(_read(config.tls_ca)))
             if config.tls_ca else ssl.platformTrust())
    client_cert = None
    if config.tls_cert:
        key = _read(config.tls_key) if config.tls_key else ''
        client_cert = ssl.PrivateCertificate.loadPEM(_read(config.tls_cert) + key)
    if config.tls_verify_hostname:
        return ssl.optionsForClientTLS(hostname, trustRoot=trust, clientCertificate=client_cert)
    extra: dict[str, Any] = {}
    if client_cert is not None:
        extra = {'privateKey': client_cert.privateKey.original,
                 'certificate': client_cert.original}
    return ssl.CertificateOptions(trustRoot=trust, **extra)


def database_of(config) -> int:
    """The database number: of the <url>, or the db attribute of <sentinel>."""
    if config.sentinel is not None:
        return config.sentinel.db
    return database_number(config.url)


def uses_tls(config) -> bool:
    """TLS: a rediss:// url, or <sentinel tls="yes"> (sentinels and data nodes alike)."""
    if config.sentinel is not None:
        return config.sentinel.tls
    return urlsplit(config.url).scheme == 'rediss'


def client_endpoint(config, reactor, address: Address | None = None):
    """A Twisted client endpoint for the configured URL (TCP, TLS or unix socket), or for
    `address`, a data node or a sentinel found through <sentinel>."""
    timeout = config.connect_timeout_ms / 1000.0
    if address is None:
        parts = urlsplit(config.url)
        if parts.scheme == 'unix':
            return UNIXClientEndpoint(reactor, parts.path, timeout=timeout)
        address = (parts.hostname, parts.port or 6379)
    host, port = address
    endpoint = HostnameEndpoint(reactor, host, port, timeout=timeout)
    if uses_tls(config):
        endpoint = wrapClientTLS(tls_options(config, host), endpoint)
    return endpoint


def keepalive_options(idle: int) -> dict[int, int]:
    """TCP keepalive socket options: probes after `idle` s, KEEPALIVE_PROBES of them."""
    options = {}
    interval = max(1, idle // KEEPALIVE_PROBES)
    for name, value in (('TCP_KEEPIDLE', idle), ('TCP_KEEPINTVL', interval),
                        ('TCP_KEEPCNT', KEEPALIVE_PROBES)):
        if hasattr(socket, name):      # Linux, FreeBSD; elsewhere the system's timers apply
            options[getattr(socket, name)] = value
    return options


def enable_keepalive(transport, idle: int) -> bool:
    """Turn TCP keepalive on for the socket under `transport` (through a TLS wrapper);
    False if there is none to set (a unix socket, keepalive off)."""
    while not hasattr(transport, 'socket') and hasattr(transport, 'transport'):
        transport = transport.transport
    sock = getattr(transport, 'socket', None)
    if idle <= 0 or sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in keepalive_options(idle).items():
        sock.setsockopt(socket.IPPROTO_TCP, option, value)
    return True


def handshake_commands(config, password: str | None, name: str) -> list[bytes]:
    """AUTH (with the URL's user name, if any), SELECT and CLIENT SETNAME, as needed."""
    commands = []
    user = urlsplit(config.url).username if config.url else None
    if password is not None:
        commands.append(encode('AUTH', user, password) if user else encode('AUTH', password))
    db = database_of(config)
    if db:
        commands.append(encode('SELECT', db))
    commands.append(encode('CLIENT', 'SETNAME', name))
    return commands


def describe_failure(reason) -> str:
    """One line an operator can act on, from a connection or TLS failure."""
    exc = getattr(reason, 'value', reason)
    if isinstance(exc, (ConnectionLostError, RedisCommandError)):
        return str(exc)
    name = type(exc).__name__
    if name == 'VerificationError':
        return ('TLS: certificate verify failed: the server certificate does not match the '
                'host name (name mismatch): %s' % exc)
    text = str(exc)
    if 'certificate verify failed' in text:
        return 'TLS: certificate verify failed (untrusted or invalid server certificate): %s' % text
    if isinstance(exc, error.ConnectionDone):
        return 'connection closed by Redis'
    return '%s: %s' % (name, text) if text else name


# --- one connection ------------------------------------------------------------------------

class RespConnection(protocol.Protocol):
    """Pipelined requests, each waiting for a known number of replies, in order."""

    def __init__(self, reactor, timeout: float = COMMAND_TIMEOUT) -> None:
        self.reactor = reactor
        self.timeout = timeout
        self._parser = ReplyParser()
        self._waiting: collections.deque = collections.deque()  # [count, replies, deferred]
        self._timer = None
        self.lost: defer.Deferred = defer.Deferred()
        self.lost_reason = ''
        self.connected = False

    def connectionMade(self) -> None:
        self.connected = True

    def request(self, data: bytes, count: int) -> defer.Deferred:
        """Send `data` (`count` commands); fires with their `count` replies, in order."""
        return self._send(data, count, None)

    def transaction(self, data: bytes, count: int) -> defer.Deferred:
        """Send MULTI, `count` commands, EXEC (all in `data`); fires with None once all are
        done, or fails with RedisCommandError naming the first error."""
        return self._send(data, count + 2, count)

    def _send(self, data: bytes, count: int, transaction: int | None) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        if not self.connected:
            d.errback(ConnectionLostError(self.lost_reason or 'not connected'))
            return d
        self._waiting.append([count, [], d, transaction])
        self.transport.write(data)
        if self._timer is None:
            self._timer = self.reactor.callLater(self.timeout, self._timed_out)
        return d

    def dataReceived(self, data: bytes) -> None:
        self._parser.feed(data)
        try:
            while self._waiting:
                count, replies, _, transaction = self._waiting[0]
                if transaction is not None and not replies:
                    fast = self._parser.take_integer_transaction(transaction)
                    if fast is None:
                        return
                    if fast:
                        self._complete(None)
                        continue
                more = self._parser.replies(count - len(replies))
                if not more:
                    return
                replies += more
                if len(replies) == count:
                    self._complete(replies if transaction is None else _transaction_result(replies))
            if self._parser.pending:
                self._drop('a reply nobody asked for')
        except ProtocolError as exc:
            self._drop('not a Redis reply: %s' % exc)

    def _complete(self, result) -> None:
        _, _, d, _ = self._waiting.popleft()
        self._rearm()
        if isinstance(result, Exception):
            d.errback(result)
        else:
            d.callback(result)

    def _rearm(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = (self.reactor.callLater(self.timeout, self._timed_out)
                       if self._waiting else None)

    def _timed_out(self) -> None:
        self._timer = None
        self._drop('no reply within %g s' % self.timeout)

    def _drop(self, why: str) -> None:
        self.lost_reason = why
        self.transport.abortConnection()

    def connectionLost(self, reason=protocol.connectionDone) -> None:
        self.connected = False
        if not self.lost_reason:
            self.lost_reason = describe_failure(reason)
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        waiting, self._waiting = self._waiting, collections.deque()
        for _, _, d, _ in waiting:
            d.errback(ConnectionLostError(self.lost_reason))
        self.lost.callback(self.lost_reason)


def _transaction_result(replies: list) -> RedisCommandError | None:
    """None if MULTI, every command and EXEC succeeded, else the error to report."""
    try:
        check_replies(replies)
    except RedisCommandError as exc:
        return exc
    if replies[-1] is None:
        return RedisCommandError('transaction aborted')
    return None


def check_replies(replies: list) -> None:
    """RedisCommandError if any reply (or any result of an EXEC) is an error."""
    for reply in replies:
        if isinstance(reply, ReplyError):
            raise RedisCommandError(str(reply))
        if isinstance(reply, list):
            check_replies(reply)
