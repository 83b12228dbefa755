"""Session sharing through Redis keyspace notifications: the I/O part.

redis-py's synchronous client runs in three dedicated threads so the reactor never waits
on Redis (measurements and reasons: README, "Design"):

- writer: drains the coalescing write-behind map ({key: mapping | None}) in MULTI/EXEC
  pipelines, writes the presence record every second, refreshes TTLs, notices a Redis
  restart (`run_id` changed);
- subscriber: PSUBSCRIBEs to the peers' keyspace notifications and hands events to the
  reactor in batches; every subscribe confirmation (first or after a silent reconnect)
  triggers a full resync, because pub/sub loses events;
- reader: HGETALLs for changed keys and SCAN-based resyncs; results go to the reactor.

All session state lives on the reactor thread (`SharedSessionStore`); threads only see
immutable snapshots.
"""
from __future__ import annotations

import os
import queue
import random
import threading
import time
import traceback
from typing import Any, Callable
from urllib.parse import urlparse

import redis
from twisted.internet import task
from twisted.logger import Logger

from . import __version__
from .sharing import (BadRecord, SharedSessionStore, SharingCounters, decode_record, key_owner,
                      presence_key, session_key, session_prefix)

FLUSH_INTERVAL = 0.02
WRITE_BATCH = 500
EVENT_BATCH = 500
PRESENCE_INTERVAL = 1.0
PRESENCE_TTL_MS = 3000
COMMAND_TIMEOUT = 1.0
SCAN_COUNT = 1000
APPLY_CHUNK = 1000
LOOKUP_DEADLINE = 0.2       # s; a lookup-on-miss never delays a command longer


def connection_kwargs(config) -> dict[str, Any]:
    """redis-py options for the configured URL, password and TLS settings."""
    kwargs: dict[str, Any] = {'socket_timeout': COMMAND_TIMEOUT,
                              'socket_connect_timeout': COMMAND_TIMEOUT,
                              'encoding': 'latin-1'}     # as every text in the daemon
    password = read_password(config)
    if password is not None:
        kwargs['password'] = password
    if urlparse(config.url).scheme == 'rediss':
        kwargs.update(ssl_cert_reqs='required', ssl_check_hostname=config.tls_verify_hostname)
        if config.tls_ca:
            kwargs['ssl_ca_certs'] = config.tls_ca
        if config.tls_cert:
            kwargs['ssl_certfile'] = config.tls_cert
        if config.tls_key:
            kwargs['ssl_keyfile'] = config.tls_key
    return kwargs


def read_password(config) -> str | None:
    if config.password_file:
        with open(config.password_file) as f:
            return f.read().strip()
    if config.password_env:
        return os.environ.get(config.password_env)
    return None


def database_number(url: str) -> int:
    parsed = urlparse(url)
    if parsed.scheme == 'unix':
        for part in parsed.query.split('&'):
            if part.startswith('db='):
                return int(part[3:])
        return 0
    path = parsed.path.strip('/')
    return int(path) if path.isdigit() else 0


def newest_records(namespace: str, records: list[tuple[str, dict]]) -> list[tuple[str, dict]]:
    """Of the keys of one call in different prefixes, keep only the newest record.

    A dead owner's key outlives a takeover and the taker's tombstone until both expire; a
    resync reads them in scan order, and applying the stale record after the tombstone
    would bring a deleted call back.  Unreadable records are kept (counted where applied).
    """
    best: dict[tuple[str, str], tuple] = {}
    decoded = []
    for key, raw in records:
        try:
            record = decode_record(key, namespace, raw)
        except BadRecord:
            record = None
        decoded.append(record)
        if record is not None:
            ident = (record.cluster, record.cid)
            if ident not in best or record.order > best[ident]:
                best[ident] = record.order
    return [item for item, record in zip(records, decoded)
            if record is None or record.order == best[(record.cluster, record.cid)]]


def _resp(args: list[bytes]) -> bytes:
    parts = [b'*%d\r\n' % len(args)]
    for arg in args:
        parts += (b'$%d\r\n' % len(arg), arg, b'\r\n')
    return b''.join(parts)


def _encode_batch(batch: dict, session_ttl: float) -> tuple[bytes, int]:
    """One MULTI/EXEC of HSET+PEXPIRE (or DEL) per key, encoded here in one pass.

    redis-py's per-command packing cost more CPU than everything else the sharing does,
    and it runs in a thread that competes with the reactor.  Text is latin-1, as in the
    whole daemon, so any call-id byte survives.
    """
    ttl = b'%d' % int(session_ttl * 1000)
    commands = [b'*1\r\n$5\r\nMULTI\r\n']
    queued = 0
    for key, mapping in batch.items():
        key_bytes = key.encode('latin-1')
        if mapping is None:
            commands.append(_resp([b'DEL', key_bytes]))
            queued += 1
            continue
        args = [b'HSET', key_bytes]
        for name, value in mapping.items():
            args += (name.encode('latin-1'), value.encode('latin-1'))
        commands += (_resp(args), _resp([b'PEXPIRE', key_bytes, ttl]))
        queued += 2
    commands.append(b'*1\r\n$4\r\nEXEC\r\n')
    return b''.join(commands), queued


def _checkout(pool):
    try:
        return pool.get_connection()
    except TypeError:               # redis-py before 5.3 wants a command name
        return pool.get_connection('MULTI')


def _execute_transaction(client, data: bytes, queued: int) -> None:
    """Send an encoded MULTI/EXEC and check every reply; RedisError on any failure."""
    pool = client.connection_pool
    conn = _checkout(pool)
    try:
        conn.send_packed_command([data])
        for _ in range(queued + 1):            # +OK for MULTI, +QUEUED per command
            conn.read_response()
        results = conn.read_response()
    except BaseException:
        conn.disconnect()                      # replies may be left unread on it
        raise
    finally:
        pool.release(conn)
    if results is None:
        raise redis.RedisError('transaction aborted')
    failed = [r for r in results if isinstance(r, Exception)]
    if failed:
        raise redis.RedisError('write failed: %s' % failed[0])


def _text(value) -> str:
    return value.decode('latin-1') if isinstance(value, bytes) else str(value)


class RedisSharing:
    log = Logger()

    def __init__(self, config, reactor, client_factory: Callable[[], Any] | None = None) -> None:
        self.config = config
        self.reactor = reactor
        self.instance_id = config.instance_id
        self.namespace = config.namespace
        self.db = database_number(config.url)
        self._client_factory = client_factory or self._default_client
        self.stores: dict[str, SharedSessionStore] = {}
        self.counters = SharingCounters()
        self.run_token = '%x' % random.getrandbits(64)
        self.started = time.time()
        # write-behind map, shared with the writer thread
        self._lock = threading.Lock()
        self._ops: dict[str, dict | None] = {}
        self._writer_tasks: queue.SimpleQueue = queue.SimpleQueue()
        self._wake = threading.Event()
        self._reads: queue.SimpleQueue = queue.SimpleQueue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._patterns_changed = threading.Event()
        self.subscribed: set[str] = set(config.peers)
        self.auto_peers = not config.peers
        self.discovered: set[str] = set()     # peers found through presence records (auto)
        # state seen on the reactor thread
        self.degraded = False
        self.subscriber_connected = False
        self.last_error = ''
        self.redis_run_id: str | None = None
        self.synced_run_id = ''
        self.peers: dict[str, dict] = {}
        self.last_resync: dict[str, Any] = {}
        self.events_received = 0
        self.bad_events = 0
        self._dirty: set[str] = set()
        self._read_scheduled = False
        self._resync_pending = False
        self._resync_running = False
        self._own_loaded = False       # own prefix read once (start-up load or a resync)
        # removal events, numbered: a read issued before a key's removal event must not
        # bring the key's record back when its (older) result arrives after the event
        self._removals = 0
        self._removed_at: dict[str, int] = {}
        self._read_issued = 0
        self._resync_issued = 0
        self._loops: list[task.LoopingCall] = []
        self._lookups: dict[int, Callable[[], None]] = {}
        self._lookup_counter = 0
        self._reader_ok = True

    # --- set-up ---------------------------------------------------------------------------------

    def _default_client(self):
        return redis.Redis.from_url(self.config.url, **connection_kwargs(self.config))

    def store_for(self, cluster: str, member_address: Callable[[str], str | None],
                  ttl: float) -> SharedSessionStore:
        store = SharedSessionStore(cluster, self.instance_id, self.namespace, self.queue_write,
                                   member_address, ttl=ttl, final_timeout=self.config.final_timeout,
                                   counters=self.counters)
        store.resolve_unknown = lambda call_id, then: self.lookup_unknown(cluster, call_id, then)
        self.stores[cluster] = store
        return store

    def start(self) -> None:
        for target, name in ((self._writer_loop, 'writer'), (self._subscriber_loop, 'subscriber'),
                             (self._reader_loop, 'reader')):
            thread = threading.Thread(target=target, name='redis-' + name, daemon=True)
            thread.start()
            self._threads.append(thread)
        self._reads.put(('load_own', None))
        for interval, what in ((PRESENCE_INTERVAL, self._queue_presence),
                               (max(1.0, self.config.session_ttl / 4.0), self._queue_refresh),
                               (self.config.resync_interval, self._periodic_resync)):
            loop = task.LoopingCall(what)
            loop.clock = self.reactor
            loop.start(interval, now=False)
            self._loops.append(loop)

    def stop(self) -> None:
        for loop in self._loops:
            if loop.running:
                loop.stop()
        self._stop.set()
        self._wake.set()
        self._reads.put(('stop', None))
        for thread in self._threads:
            thread.join(2.0)

    def _report_unexpected(self, thread: str, exc: Exception) -> None:
        """Connection trouble is expected and handled by the caller; anything else is a bug."""
        if isinstance(exc, (redis.RedisError, OSError)):
            return
        text = traceback.format_exc()
        self.reactor.callFromThread(self.log.error, 'redis {thread} thread: unexpected error, '
                                    'retrying:\n{text}', thread=thread, text=text)

    # --- writes (reactor side) ----------------------------------------------------------------------

    def queue_write(self, key: str, mapping: dict | None) -> None:
        with self._lock:
            self._ops[key] = mapping
        self._wake.set()

    def queue_depth(self) -> int:
        return len(self._ops)

    def _queue_presence(self) -> None:
        own = sum(s.ownership_counts()[0] for s in self.stores.values())
        record = {'run_token': self.run_token, 'started': '%.3f' % self.started,
                  'version': __version__, 'state': 'degraded' if self.degraded else 'ok',
                  'own_sessions': str(own), 'last_seen': '%.3f' % time.time(),
                  'synced_run_id': self.synced_run_id}
        self._writer_tasks.put(('presence', record))
        self._wake.set()

    def _queue_refresh(self) -> None:
        keys = [k for store in self.stores.values() for k in store.own_keys()]
        if keys:
            self._writer_tasks.put(('refresh', keys))
            self._wake.set()

    # --- writer thread ----------------------------------------------------------------------------------

    def _writer_loop(self) -> None:
        client = None
        backoff = 0.1
        while not self._stop.is_set():
            self._wake.wait(1.0)
            self._wake.clear()
            time.sleep(FLUSH_INTERVAL)          # let a burst coalesce
            try:
                if client is None:
                    client = self._client_factory()
                self._flush(client)
                self._run_writer_tasks(client)
                backoff = 0.1
            except Exception as exc:       # a bug must not end sharing: log it, keep going
                self._report_unexpected('writer', exc)
                client = None
                self.reactor.callFromThread(self._on_write_failed, str(exc))
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
                self._wake.set()

    def _flush(self, client) -> None:
        while True:
            with self._lock:
                if not self._ops:
                    return
                batch = dict(list(self._ops.items())[:WRITE_BATCH])
                for key in batch:
                    del self._ops[key]
            try:
                _execute_transaction(client, *_encode_batch(batch, self.config.session_ttl))
            except Exception:
                with self._lock:
                    for key, mapping in batch.items():
                        self._ops.setdefault(key, mapping)   # a newer op for the key wins
                raise
            self.reactor.callFromThread(self._on_write_ok, len(batch))

    def _run_writer_tasks(self, client) -> None:
        while True:
            try:
                kind, payload = self._writer_tasks.get_nowait()
            except queue.Empty:
                return
            if kind == 'presence':
                run_id = _text(client.info('server').get('run_id', ''))
                key = presence_key(self.namespace, self.instance_id)
                pipe = client.pipeline(transaction=True)
                pipe.hset(key, mapping=payload)
                pipe.pexpire(key, PRESENCE_TTL_MS)
                pipe.execute()
                self.reactor.callFromThread(self._on_write_ok, 0)
                self.reactor.callFromThread(self._on_run_id, run_id)
            elif kind == 'refresh':
                ttl_ms = int(self.config.session_ttl * 1000)
                for start in range(0, len(payload), WRITE_BATCH):
                    pipe = client.pipeline(transaction=False)
                    for key in payload[start:start + WRITE_BATCH]:
                        pipe.pexpire(key, ttl_ms)
                    pipe.execute()
            elif kind == 'synced':
                self.reactor.callFromThread(self._on_synced, payload)

    def _on_write_ok(self, count: int) -> None:
        if self.degraded:
            self.log.info('redis: writes succeed again')
        self.degraded = False

    def _on_write_failed(self, error: str) -> None:
        if not self.degraded:
            self.log.warn('redis: write failed, serving from memory (degraded): {error}', error=error)
        self.degraded = True
        self.last_error = error

    def _on_run_id(self, run_id: str) -> None:
        if run_id == self.redis_run_id:
            return
        if self.redis_run_id is not None:
            self.log.warn('redis: server restarted (run_id changed); rewriting own sessions')
        self.redis_run_id = run_id
        rewritten = sum(store.rewrite_all_own() for store in self.stores.values())
        self._writer_tasks.put(('synced', run_id))     # runs after the rewrite is flushed
        self._wake.set()
        self._reads.put(('clean_own', None))
        self.log.info('redis: {n} own sessions written for run {run}', n=rewritten, run=run_id[:8])

    def _on_synced(self, run_id: str) -> None:
        self.synced_run_id = run_id

    # --- subscriber thread ----------------------------------------------------------------------------------

    def patterns(self) -> list[str]:
        space = '__keyspace@%d__:' % self.db
        presence = space + '%s:n:*' % self.namespace
        # One pattern per peer, never one for the whole namespace: our own writes would
        # come back as events that cost the reactor as much as writing them.
        peers = self.discovered if self.auto_peers else self.subscribed
        return [space + session_prefix(self.namespace, p) + '*'
                for p in sorted(peers) if p != self.instance_id] + [presence]

    def _discover(self, peer: str) -> None:
        """A peer announced itself; with automatic peers, follow its sessions from now on."""
        if self.auto_peers and peer != self.instance_id and peer not in self.discovered:
            self.discovered.add(peer)
            self.log.info('redis: following sessions of peer {peer}', peer=peer)
            self._patterns_changed.set()

    def _subscriber_loop(self) -> None:
        pubsub = None
        while not self._stop.is_set():
            try:
                if pubsub is None or self._patterns_changed.is_set():
                    if pubsub is not None:
                        pubsub.close()
                    self._patterns_changed.clear()
                    pubsub = self._client_factory().pubsub()
                    pubsub.psubscribe(*self.patterns())
                self._pump(pubsub)
            except Exception as exc:
                self._report_unexpected('subscriber', exc)
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except Exception:
                        pass
                pubsub = None
                self.reactor.callFromThread(self._on_subscriber_down, str(exc))
                self._stop.wait(0.5)
        if pubsub is not None:
            pubsub.close()

    def _pump(self, pubsub) -> None:
        batch: list[tuple[str, str]] = []
        message = pubsub.get_message(timeout=0.5)
        while message is not None:
            kind = _text(message.get('type'))
            if kind == 'psubscribe':
                batch.append(('', 'subscribed'))
            elif kind == 'pmessage':
                batch.append((_text(message['channel']), _text(message['data'])))
            if len(batch) >= EVENT_BATCH:
                self.reactor.callFromThread(self._on_events, batch)
                batch = []
            message = pubsub.get_message(timeout=0)
        if batch:
            self.reactor.callFromThread(self._on_events, batch)

    def _on_subscriber_down(self, error: str) -> None:
        if self.subscriber_connected:
            self.log.warn('redis: subscriber lost ({error}); peers keep their last known sessions',
                          error=error)
        self.subscriber_connected = False
        self.last_error = error

    def _on_events(self, batch: list[tuple[str, str]]) -> None:
        for channel, event in batch:
            if event == 'subscribed' and not channel:
                self.subscriber_connected = True
                self.request_resync()
                continue
            self.events_received += 1
            self._on_event(channel.partition(':')[2], event)
        self._schedule_read()

    def _on_event(self, key: str, event: str) -> None:
        owner = key_owner(self.namespace, key)
        if owner is not None:
            if owner == self.instance_id or not self._follows(owner):
                return
            if event == 'hset':
                self._dirty.add(key)
            elif event in ('del', 'expired', 'evicted', 'rename_from'):
                self._removals += 1
                self._removed_at[key] = self._removals
                self._remove_by_key(key, owner)
            elif event != 'expire':
                self.bad_events += 1
            return
        peer = key[len(self.namespace) + 3:] if key.startswith(self.namespace + ':n:') else None
        if peer and peer != self.instance_id:
            info = self.peers.setdefault(peer, {})
            info['alive'] = event not in ('del', 'expired', 'evicted')
            if info['alive']:
                info['last_event'] = time.time()
                self._discover(peer)

    def _follows(self, peer: str) -> bool:
        return self.auto_peers or peer in self.subscribed

    def _split_key(self, key: str, owner: str) -> tuple[SharedSessionStore, str] | None:
        rest = key[len(session_prefix(self.namespace, owner)):]
        for name, store in self.stores.items():
            if rest.startswith(name + ':'):
                return store, rest[len(name) + 1:]
        return None

    def _remove_by_key(self, key: str, owner: str) -> None:
        found = self._split_key(key, owner)
        if found is not None:
            store, call_id = found
            store.apply_removal(call_id, owner)

    def _schedule_read(self) -> None:
        if self._dirty and not self._read_scheduled:
            self._read_scheduled = True
            self._read_issued = self._removals
            keys, self._dirty = sorted(self._dirty), set()
            self._reads.put(('read', keys))

    # --- reader thread ---------------------------------------------------------------------------------------

    def _reader_loop(self) -> None:
        client = None
        while not self._stop.is_set():
            kind, payload = self._reads.get()
            if kind == 'stop':
                return
            try:
                if client is None:
                    client = self._client_factory()
                if kind == 'read':
                    self.reactor.callFromThread(self._apply_reads, self._hgetall(client, payload), True)
                elif kind == 'resync':
                    self._resync(client, payload)
                elif kind == 'load_own':
                    self._load_prefix(client, session_prefix(self.namespace, self.instance_id),
                                      own=True)
                    self.reactor.callFromThread(self._on_own_loaded)
                elif kind == 'clean_own':
                    self._clean_own(client)
                elif kind == 'lookup':
                    token, keys = payload
                    self.reactor.callFromThread(self._apply_lookup, token,
                                                self._hgetall(client, keys))
            except Exception as exc:
                self._report_unexpected('reader', exc)
                client = None
                self.reactor.callFromThread(self._on_read_failed, kind, payload, str(exc))
                self._stop.wait(0.5)

    def _hgetall(self, client, keys: list[str]) -> list[tuple[str, dict]]:
        results = []
        for start in range(0, len(keys), SCAN_COUNT):
            chunk = keys[start:start + SCAN_COUNT]
            pipe = client.pipeline(transaction=False)
            for key in chunk:
                pipe.hgetall(key)
            for key, value in zip(chunk, pipe.execute(raise_on_error=False)):
                results.append((key, value if isinstance(value, dict) else {'_error': str(value)}))
        return results

    def _scan(self, client, pattern: str):
        for key in client.scan_iter(match=pattern, count=SCAN_COUNT):
            yield _text(key)

    def _load_prefix(self, client, prefix: str, own: bool = False) -> list[str]:
        keys = list(self._scan(client, prefix + '*'))
        records = newest_records(self.namespace, self._hgetall(client, keys))
        for start in range(0, len(records), APPLY_CHUNK):
            self.reactor.callFromThread(self._apply_reads, records[start:start + APPLY_CHUNK],
                                        False, own)
        return keys

    def _resync(self, client, since: float) -> None:
        started = time.monotonic()
        keys = self._load_prefix(client, '%s:s:' % self.namespace)
        presences = {}
        presence_keys = list(self._scan(client, '%s:n:*' % self.namespace))
        for key, raw in self._hgetall(client, presence_keys):
            if '_error' in raw:           # not a hash: garbage must not stop every resync
                self.reactor.callFromThread(self._bad_record, key, raw['_error'][:100])
                continue
            presences[key[len(self.namespace) + 3:]] = {
                _text(k): _text(v) for k, v in raw.items()}
        run_id = _text(client.info('server').get('run_id', ''))
        self.reactor.callFromThread(self._finish_resync, since, keys, presences, run_id,
                                    time.monotonic() - started)

    def _clean_own(self, client) -> None:
        prefix = session_prefix(self.namespace, self.instance_id)
        keys = list(self._scan(client, prefix + '*'))
        self.reactor.callFromThread(self._delete_stale_own, keys)

    def _on_read_failed(self, kind: str, payload, error: str) -> None:
        self.last_error = error
        self._reader_ok = False
        if kind == 'lookup':
            self._finish_lookup(payload[0])
        if kind == 'read':
            self._read_scheduled = False
            self._dirty.update(payload)
        elif kind == 'resync':
            self._resync_running = False
            self._resync_pending = True

    # --- lookup on miss ---------------------------------------------------------------------------------

    @property
    def stale(self) -> bool:
        """Our view of the peers may miss sessions (subscriber down, resync not finished)."""
        return not self.subscriber_connected or self._resync_running or self._resync_pending

    def lookup_unknown(self, cluster: str, call_id: str, then: Callable[[], None]) -> bool:
        """While the view is stale, read the call-id under every peer's prefix, then `then()`.

        False (and `then` is not called) when no lookup is needed.  `then` runs once, when the
        records are applied or after LOOKUP_DEADLINE, whichever comes first.
        """
        peers = sorted((self.discovered | self.subscribed | set(self.peers)) - {self.instance_id})
        # with Redis unreachable a lookup would only add its deadline to every new call
        if not self.stale or not peers or self.degraded or not self._reader_ok:
            return False
        self._lookup_counter += 1
        token = self._lookup_counter
        self._lookups[token] = then
        self.counters.lookups_on_miss += 1
        keys = [session_key(self.namespace, peer, cluster, call_id) for peer in peers]
        self._reads.put(('lookup', (token, keys)))
        self.reactor.callLater(LOOKUP_DEADLINE, self._finish_lookup, token)
        return True

    def _apply_lookup(self, token: int, results: list[tuple[str, dict]]) -> None:
        self._reader_ok = True
        for key, raw in results:
            if raw and key_owner(self.namespace, key) is not None:
                self._apply_raw(key, raw)
        self._finish_lookup(token)

    def _finish_lookup(self, token: int) -> None:
        then = self._lookups.pop(token, None)
        if then is not None:
            then()

    # --- applying what was read (reactor) ---------------------------------------------------------------------

    def _apply_reads(self, results: list[tuple[str, dict]], from_events: bool,
                     own: bool = False) -> None:
        self._reader_ok = True
        issued = self._read_issued if from_events else self._resync_issued
        for key, raw in results:
            owner = key_owner(self.namespace, key)
            if owner is None:
                continue
            if owner == self.instance_id and not own and self._own_loaded:
                # once our own prefix is loaded, the table is the truth: a resync may read
                # an own key whose DEL is still queued, and must not bring the call back
                continue
            if owner != self.instance_id and not self._follows(owner):
                continue                  # a resync reads every prefix; `ksrm` peers stay out
            if self._removed_at.get(key, 0) > issued:
                continue                  # removed after this read was issued: stale
            if not raw and from_events:
                self._remove_by_key(key, owner)
                continue
            self._apply_raw(key, raw)
        if from_events:
            self._read_scheduled = False
            self._prune_removals()
            self._schedule_read()

    def _prune_removals(self) -> None:
        """Forget removals older than every read still in flight."""
        floor = self._removals
        if self._read_scheduled:
            floor = min(floor, self._read_issued)
        if self._resync_running:
            floor = min(floor, self._resync_issued)
        if self._removed_at:
            self._removed_at = {k: n for k, n in self._removed_at.items() if n > floor}

    def _on_own_loaded(self) -> None:
        self._own_loaded = True

    def _apply_raw(self, key: str, raw: dict) -> None:
        """Validate one hash read from Redis and give it to its cluster's store."""
        try:
            record = decode_record(key, self.namespace, raw)
        except BadRecord as exc:
            self._bad_record(key, str(exc))
            return
        store = self.stores.get(record.cluster)
        if store is None:
            self._bad_record(key, 'unknown cluster %r' % record.cluster[:64])
            return
        store.apply_record(record)

    def _bad_record(self, key: str, why: str) -> None:
        self.counters.bad_records += 1
        if self.counters.bad_records <= 20 or self.counters.bad_records % 1000 == 0:
            self.log.warn('redis: ignoring record {key!r}: {why} ({n} bad records so far)',
                          key=key[:120], why=why, n=self.counters.bad_records)

    # --- resync --------------------------------------------------------------------------------------------------

    def request_resync(self) -> None:
        if self._resync_running:
            self._resync_pending = True
            return
        self._resync_running = True
        self._resync_issued = self._removals
        self._reads.put(('resync', time.monotonic()))

    def _periodic_resync(self) -> None:
        self.request_resync()

    def _finish_resync(self, since: float, keys: list[str], presences: dict, run_id: str,
                       duration: float) -> None:
        seen: dict[str, set[str]] = {}
        for key in keys:
            owner = key_owner(self.namespace, key)
            found = self._split_key(key, owner) if owner else None
            if found is not None:
                seen.setdefault(owner, set()).add(found[1])
        removed = 0
        for peer, presence in presences.items():
            if peer == self.instance_id:
                continue
            info = self.peers.setdefault(peer, {})
            info.update(alive=True, presence=presence)
            self._discover(peer)
            # absence in Redis proves deletion only once the peer rewrote into this Redis
            if presence.get('synced_run_id') == run_id and run_id:
                for store in self.stores.values():
                    mine = {c for c in seen.get(peer, ())}
                    removed += store.drop_unseen(peer, mine, since)
        for peer in set(self.peers) - set(presences):
            self.peers[peer]['alive'] = False
        self.last_resync = {'at': time.time(), 'duration': duration, 'keys': len(keys),
                            'removed': removed}
        self._own_loaded = True
        self._resync_running = False
        self._prune_removals()
        if self._resync_pending:
            self._resync_pending = False
            self.request_resync()

    def _delete_stale_own(self, keys: list[str]) -> None:
        """Own keys in Redis that our table does not have (restored from an old dump)."""
        live = {k for store in self.stores.values() for k in store.own_keys()}
        for key in keys:
            if key not in live:
                self.queue_write(key, None)

    # --- operator commands -------------------------------------------------------------------------------------------

    def subscribe(self, peer: str) -> None:
        self.auto_peers = False if self.config.peers or self.subscribed else self.auto_peers
        self.subscribed.add(peer)
        self._patterns_changed.set()

    def unsubscribe(self, peer: str) -> int:
        self.subscribed.discard(peer)
        if self.auto_peers:
            self.auto_peers = False
            self.subscribed = {p for p in self.peers if p != peer}
        self._patterns_changed.set()
        return sum(store.drop_foreign(peer) for store in self.stores.values())

    def take_over(self, peer: str | None) -> int:
        return sum(store.take_over_all(peer) for store in self.stores.values())

    def status(self) -> dict[str, Any]:
        own = foreign = 0
        for store in self.stores.values():
            o, f = store.ownership_counts()
            own, foreign = own + o, foreign + f
        return {'instance_id': self.instance_id, 'url': _redact(self.config.url),
                'state': 'degraded' if self.degraded else 'connected',
                'subscriber': 'connected' if self.subscriber_connected else 'disconnected',
                'queue_depth': self.queue_depth(), 'last_error': self.last_error,
                'last_resync': dict(self.last_resync), 'events': self.events_received,
                'bad_events': self.bad_events, 'own': own, 'foreign': foreign,
                'counters': self.counters.as_dict(), 'redis_run_id': self.redis_run_id or '',
                'synced_run_id': self.synced_run_id}


def _redact(url: str) -> str:
    parsed = urlparse(url)
    if parsed.password:
        return url.replace(':%s@' % parsed.password, ':***@')
    return url
