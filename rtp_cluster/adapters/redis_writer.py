"""The session writer: a Redis connection on the reactor, written behind and never waited on.

Every change of an OWN session lands in a coalescing map ({key: thunk | None}) and returns at
once.  Every FLUSH_INTERVAL the map is drained in MULTI/EXEC transactions (HSET + PEXPIRE, or
DEL), one transaction in flight at a time, over one non-blocking connection of the reactor.
The record of a key is built when its transaction is encoded, so a call changed five times
in one interval costs one record.  Nothing here blocks: connecting, TLS and replies are
events; a reply missing for the command timeout (<command_timeout_ms>) drops the connection;
a failed transaction goes back into the map (a newer change of a key wins) and is retried
after reconnecting, after a back-off between <reconnect_min_ms> and <reconnect_max_ms>.

Why not a thread: the writer runs on every control command's heels, and a Python thread
holding the interpreter lock delays the reactor (README, "Design").
"""
from __future__ import annotations

import collections
import time
from typing import Any, Callable

from twisted.internet import defer, protocol
from twisted.logger import Logger

from ..core import config_schema as schema
from ..core.resp import encode, encode_hset
from ..core.sentinel import is_readonly, not_master_reason
from ..core.sharing import LiveRecord
from .redis_connection import (
    COMMAND_TIMEOUT, KEEPALIVE_PROBES, ConnectionLostError, RedisCommandError, RespConnection,
    check_replies, client_endpoint, database_number, describe_failure, enable_keepalive,
    handshake_commands, keepalive_options, tls_options,
)

__all__ = [
    'RedisWriter', 'TombstoneWrite', 'TOMBSTONE_SCRIPT', 'FLUSH_INTERVAL', 'WRITE_BATCH',
    'ENCODE_SLICE', 'REFRESH_BATCH', 'MIN_BACKOFF', 'MAX_BACKOFF',
    # the connection's names, as they were imported from here before the split
    'COMMAND_TIMEOUT', 'KEEPALIVE_PROBES', 'ConnectionLostError', 'RedisCommandError',
    'RespConnection', 'check_replies', 'client_endpoint', 'database_number', 'describe_failure',
    'enable_keepalive', 'handshake_commands', 'keepalive_options', 'tls_options',
]

FLUSH_INTERVAL = 0.02        # s: a burst of changes coalesces into one transaction
WRITE_BATCH = 500            # keys per transaction
ENCODE_SLICE = 16            # keys encoded per reactor turn (about 0.1 ms)
REFRESH_BATCH = 1000         # PEXPIREs of the TTL refresh per transaction
# the defaults of the <redis> tunables, in seconds
MIN_BACKOFF = schema.child('redis', 'reconnect_min_ms').default / 1000.0
MAX_BACKOFF = schema.child('redis', 'reconnect_max_ms').default / 1000.0
_ROLE = encode('INFO', 'replication')

_MULTI = encode('MULTI')
_EXEC = encode('EXEC')

Thunk = Callable[[], dict]   # builds the mapping to HSET when the key is written

# KEYS[1]: the tombstone; KEYS[2..]: the call's keys in other prefixes; ARGV[1]: the session
# TTL (ms), then the fields.  The tombstone lives as long as the longest-lived of those keys
# (plus a second); if none is left, nothing needs outranking and the key is just deleted.
TOMBSTONE_SCRIPT = '''
local ttl = 0
for i = 2, #KEYS do
  local t = redis.call('PTTL', KEYS[i])
  if t == -1 then t = tonumber(ARGV[1]) end
  if t > ttl then ttl = t end
end
if ttl <= 0 then
  redis.call('DEL', KEYS[1])
  return 0
end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('PEXPIRE', KEYS[1], ttl + 1000)
return 1
'''


class TombstoneWrite:
    """A write whose key must only live as long as the `shadows` keys (see the script)."""

    __slots__ = ('build', 'shadows')

    def __init__(self, build: Thunk, shadows: list[str]) -> None:
        self.build = build
        self.shadows = shadows

    def __call__(self) -> dict:
        return self.build()

    def encode(self, key: bytes, ttl_ms: bytes) -> bytes:
        fields = [x for pair in self.build().items() for x in pair]
        return encode('EVAL', TOMBSTONE_SCRIPT, 1 + len(self.shadows), key,
                      *[k.encode('latin-1') for k in self.shadows], ttl_ms, *fields)


def frozen(op: Thunk | None) -> Thunk | None:
    """The op as it stands now: a session's record is fixed when its batch is taken, so a
    change made while the batch is encoded (over several reactor turns) is not written with
    the order (epoch, seq) of the change that follows it."""
    if isinstance(op, TombstoneWrite):
        return TombstoneWrite(frozen(op.build), op.shadows)
    if isinstance(op, LiveRecord):
        return op.snapshot().to_mapping
    return op


def _encode_ops(ops: list[tuple[bytes, Thunk | None]], ttl_ms: bytes,
                log: Logger) -> list[bytes]:
    parts = []
    for key, thunk in ops:
        if thunk is None:
            parts.append(b'*2\r\n$3\r\nDEL\r\n$%d\r\n%s\r\n' % (len(key), key))
            continue
        try:
            if isinstance(thunk, TombstoneWrite):
                parts.append(thunk.encode(key, ttl_ms))
                continue
            hset = encode_hset(key, thunk())
        except Exception:          # a bug must cost this key only, not the whole batch
            log.failure('redis: cannot build the record of {key!r}; not written', key=key[:120])
            continue
        parts += (hset, _pexpire(key, ttl_ms))
    return parts


def _pexpire(key: bytes, ttl_ms: bytes) -> bytes:
    return (b'*3\r\n$7\r\nPEXPIRE\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n'
            % (len(key), key, len(ttl_ms), ttl_ms))


def _encode_refresh(keys: list[bytes], ttl_ms: bytes) -> list[bytes]:
    return [_pexpire(k, ttl_ms) for k in keys]


# --- the writer ----------------------------------------------------------------------------

class RedisWriter:
    """Write-behind of OWN sessions plus the presence record, on one reactor connection.

    Callbacks (all on the reactor): on_ok() after any successful round trip, on_failed(text)
    when the connection or a write fails, on_connected() after every (re)connect (checks
    go out with `command`), on_server(run_id, presence_token) with every
    presence write: the server's run_id and the run token the presence record had before
    this write (None if it had none), on_not_master(why) when the node turns out not to be
    the master (READONLY, or with `check_role` `INFO replication` says role:slave) or the
    sentinels switched it: whatever it holds may lack our writes, and the next connect goes
    back to `endpoint_factory` (which may ask the sentinels; it may return a Deferred).
    """

    log = Logger()

    def __init__(self, config, reactor, *, on_ok: Callable[[], None],
                 on_failed: Callable[[str], None],
                 on_server: Callable[[str, str | None], None],
                 on_connected: Callable[[], None] = lambda: None,
                 on_not_master: Callable[[str], None] = lambda why: None,
                 endpoint_factory: Callable[[], Any] | None = None,
                 password: Callable[[], str | None] = lambda: None,
                 name: str = 'rtpc-writer', check_role: bool = False) -> None:
        self.config = config
        self.reactor = reactor
        self.on_ok, self.on_failed, self.on_server = on_ok, on_failed, on_server
        self.on_connected, self.on_not_master = on_connected, on_not_master
        self.check_role = check_role
        self._generation = 0        # +1 at every master switch: older connects are stale
        self._endpoint_factory = endpoint_factory or (lambda: client_endpoint(config, reactor))
        self._password = password      # read at every connect: a rotated file is picked up
        self._name = name
        self.ttl_ms = b'%d' % int(config.session_ttl * 1000)
        self._ops: dict[bytes, Thunk | None] = {}
        self._refresh: collections.deque = collections.deque()
        self._presence: bytes | None = None
        self._barriers: list[tuple[int, Callable[[], None]]] = []
        self._taken = 0             # keys taken from the head of _ops, in order
        self._written = 0           # of those, confirmed written
        self._in_flight: list[tuple[bytes, Thunk | None]] | None = None
        self._flush_call = None
        self._connecting = False
        self._retry_call = None
        self.command_timeout = config.command_timeout_ms / 1000.0
        self.min_backoff = config.reconnect_min_ms / 1000.0
        self.max_backoff = config.reconnect_max_ms / 1000.0
        self._backoff = self.min_backoff
        self.conn: RespConnection | None = None
        self.running = False
        self.writes_ok = 0
        self.transactions = 0
        self.last_flush_ms = 0.0

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        self.running = True
        self._connect()

    def stop(self) -> None:
        self.running = False
        for call in (self._flush_call, self._retry_call):
            if call is not None and call.active():
                call.cancel()
        self._flush_call = self._retry_call = None
        if self.conn is not None and self.conn.transport is not None:
            self.conn.transport.loseConnection()

    def _connect(self) -> None:
        self._retry_call = None
        if not self.running or self._connecting or self.conn is not None:
            return
        self._connecting = True
        factory = protocol.Factory.forProtocol(
            lambda: RespConnection(self.reactor, self.command_timeout))
        # a TLS file that cannot be read, a bad certificate, no master found: same path
        d = defer.maybeDeferred(self._endpoint_factory)
        d.addCallback(lambda endpoint: endpoint.connect(factory))
        d.addCallback(self._handshake_on)   # reading the password may fail: same path
        d.addCallbacks(self._ready, self._connect_failed, callbackArgs=(self._generation,))

    def _handshake_on(self, conn: RespConnection):
        commands = handshake_commands(self.config, self._password(), self._name)
        if self.check_role:
            commands.append(_ROLE)
        d = conn.request(b''.join(commands), len(commands))

        def checked(replies):
            check_replies(replies)
            if self.check_role:
                info = replies[-1]
                why = not_master_reason(info.decode('latin-1') if isinstance(info, bytes)
                                        else '')
                if why is not None:
                    self.on_not_master(why)
                    raise RedisCommandError(why)
            return conn

        def failed(failure):
            if conn.connected:
                conn.transport.abortConnection()
            return failure
        return d.addCallback(checked).addErrback(failed)

    def _ready(self, conn: RespConnection, generation: int) -> None:
        self._connecting = False
        if not self.running:
            conn.transport.loseConnection()
            return
        if generation != self._generation:     # the master switched while connecting
            conn.transport.loseConnection()
            self._connect()
            return
        self.conn = conn
        self._backoff = self.min_backoff
        enable_keepalive(conn.transport, self.config.tcp_keepalive)
        conn.lost.addCallback(self._lost)
        self._kick(0)
        self.on_connected()

    def _connect_failed(self, failure) -> None:
        self._connecting = False
        self._failed(describe_failure(failure))

    def _lost(self, reason: str) -> None:
        self.conn = None
        self._requeue()
        if self.running:
            self._failed(reason)

    def _failed(self, reason: str) -> None:
        self.on_failed(reason)
        if self.running and self._retry_call is None:
            self._retry_call = self.reactor.callLater(self._backoff, self._connect)
            self._backoff = min(self._backoff * 2, self.max_backoff)

    def master_switched(self, why: str) -> None:
        """The sentinels named a new master: leave the old one now and connect again."""
        self._generation += 1
        self._backoff = self.min_backoff
        self.on_not_master(why)
        if self.conn is not None:
            self._drop(why)                # _lost reconnects after the shortest back-off
        elif self._retry_call is not None and self._retry_call.active():
            self._retry_call.cancel()
            self._connect()

    def _drop(self, why: str) -> None:
        if self.conn is not None and self.conn.connected:
            self.conn.lost_reason = why
            self.conn.transport.abortConnection()

    def _refused_as_replica(self, error: str) -> bool:
        """A write answered READONLY: this node is a replica now; find the master."""
        if not is_readonly(error):
            return False
        self.on_not_master(error)
        self._drop('write failed: %s' % error)
        return True

    # --- what the sharing layer hands over -----------------------------------------------------

    def queue(self, key: str, thunk: Thunk | None) -> None:
        """Write (thunk: builds the hash) or delete (None) `key`, soon; never waits."""
        self._ops[key.encode('latin-1')] = thunk
        if self._flush_call is None:
            self._kick(FLUSH_INTERVAL)

    def refresh(self, keys: list[str]) -> None:
        """PEXPIRE these keys again, a slice per transaction."""
        self._refresh.extend(k.encode('latin-1') for k in keys)
        self._kick(FLUSH_INTERVAL)

    def write_presence(self, key: str, mapping: dict[str, str], ttl_ms: int) -> None:
        """INFO server + HGET of the old run token + the presence hash, with the next flush."""
        key_b = key.encode('latin-1')
        self._presence = b''.join((
            encode('INFO', 'server'), encode('HGET', key_b, 'run_token'), _MULTI,
            encode_hset(key_b, mapping), encode('PEXPIRE', key_b, ttl_ms), _EXEC))
        self._kick(0)

    def when_flushed(self, callback: Callable[[], None]) -> None:
        """Call `callback` once every change queued until now is written."""
        self._barriers.append((self._taken + len(self._ops), callback))
        self._kick(0)

    def queued(self, key: str):
        """False if nothing is queued for `key`, else its thunk (None: a delete)."""
        return self._ops.get(key.encode('latin-1'), False)

    def command(self, *args) -> defer.Deferred:
        """One command outside the write stream (checks); fires with its reply, which may
        be a ReplyError; fails with ConnectionLostError when not connected."""
        if self.conn is None:
            return defer.fail(ConnectionLostError('not connected'))
        return self.conn.request(encode(*args), 1).addCallback(lambda replies: replies[0])

    @property
    def depth(self) -> int:
        return len(self._ops) + len(self._refresh)

    # --- flushing -----------------------------------------------------------------------------

    def _kick(self, delay: float) -> None:
        if not self.running:
            return                     # queued until start(); nothing scheduled before
        if self._flush_call is not None:
            if delay or not self._flush_call.active():
                return
            self._flush_call.cancel()
        self._flush_call = self.reactor.callLater(delay, self._flush)

    def _flush(self) -> None:
        self._flush_call = None
        if self.conn is None or self._in_flight is not None:
            return
        if self._presence is not None:
            self._send_presence()
            return
        self._release_barriers()
        if not self._ops and not self._refresh:
            return
        ops = []
        for key in self._ops:
            ops.append(key)
            if len(ops) >= WRITE_BATCH:
                break
        batch = [(key, frozen(self._ops.pop(key))) for key in ops]
        self._taken += len(batch)
        refresh = [self._refresh.popleft()
                   for _ in range(min(REFRESH_BATCH, len(self._refresh)))] if len(
                       batch) < WRITE_BATCH else []
        self._in_flight = batch
        self._encode_slice(batch, 0, _encode_refresh(refresh, self.ttl_ms), refresh,
                           time.monotonic())

    def _encode_slice(self, batch: list, start: int, parts: list, refresh: list,
                      started: float) -> None:
        """Encode ENCODE_SLICE keys, then let the reactor serve the sockets before the next
        slice: a full batch costs the control path a few short pauses, not one long one."""
        if self._in_flight is not batch or self.conn is None or not self.running:
            self._refresh.extendleft(reversed(refresh))   # connection lost meanwhile
            return
        end = start + ENCODE_SLICE
        parts += _encode_ops(batch[start:end], self.ttl_ms, self.log)
        if end < len(batch):
            self.reactor.callLater(0, self._encode_slice, batch, end, parts, refresh, started)
            return
        d = self.conn.transaction(b''.join([_MULTI, *parts, _EXEC]), len(parts))
        d.addCallbacks(self._written_ok, self._write_failed,
                       callbackArgs=(batch, started), errbackArgs=(batch, refresh))

    def _written_ok(self, _, batch: list, started: float) -> None:
        self._in_flight = None
        self._written += len(batch)
        self._backoff = self.min_backoff
        self.writes_ok += len(batch)
        self.transactions += 1
        self.last_flush_ms = (time.monotonic() - started) * 1000.0
        self.on_ok()
        self._release_barriers()
        # a backlog goes out at once; otherwise the next changes get time to coalesce
        backlog = len(self._ops) >= WRITE_BATCH or self._presence is not None
        self._kick(0 if backlog else FLUSH_INTERVAL)

    def _write_failed(self, failure, batch: list, refresh: list) -> None:
        if failure.check(RedisCommandError) and self._refused_as_replica(str(failure.value)):
            self._refresh.extendleft(reversed(refresh))   # _lost puts the batch back
            return
        if failure.check(RedisCommandError):       # refused by Redis (OOM, ...)
            self._put_back(batch, refresh)
            self._failed('write failed: %s' % failure.value)
            self._kick(self._backoff)
            return
        # the connection is gone: _lost puts the batch back and reconnects
        self._refresh.extendleft(reversed(refresh))

    def _requeue(self) -> None:
        if self._in_flight is not None:
            self._put_back(self._in_flight, [])
            self._in_flight = None

    def _put_back(self, batch: list, refresh: list) -> None:
        self._in_flight = None
        for key, thunk in batch:
            self._ops.setdefault(key, thunk)          # a newer change of the key wins
        self._refresh.extendleft(reversed(refresh))
        # what a barrier waited for may now sit behind newer keys: wait for all of it
        self._taken = self._written
        self._barriers = [(self._taken + len(self._ops), cb) for _, cb in self._barriers]

    def _release_barriers(self) -> None:
        while self._barriers and self._barriers[0][0] <= self._written:
            _, callback = self._barriers.pop(0)
            callback()

    def _send_presence(self) -> None:
        data, self._presence = self._presence, None
        self._in_flight = []
        d = self.conn.request(data, 6)
        d.addCallbacks(self._presence_ok, self._presence_failed, errbackArgs=(data,))

    def _presence_ok(self, replies: list) -> None:
        self._in_flight = None
        info, old_token = replies[0], replies[1]
        try:
            check_replies(replies)
        except RedisCommandError as exc:
            if not self._refused_as_replica(str(exc)):
                self._failed('write failed: %s' % exc)
                self._kick(self._backoff)
            return
        run_id = ''
        if isinstance(info, bytes):
            for line in info.split(b'\r\n'):
                if line.startswith(b'run_id:'):
                    run_id = line[7:].decode('latin-1')
        self.on_ok()
        self.on_server(run_id, old_token.decode('latin-1') if isinstance(old_token, bytes)
                       else None)
        self._kick(0)

    def _presence_failed(self, failure, data: bytes) -> None:
        if self._presence is None:
            self._presence = data                     # resent after reconnecting
