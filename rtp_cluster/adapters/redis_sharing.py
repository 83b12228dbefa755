"""Session sharing through Redis keyspace notifications: the I/O part.

Writes and reads take different roads (measurements and reasons: README, "Design"):

- writer (`RedisWriter`, on the reactor): the coalescing write-behind of OWN sessions in
  MULTI/EXEC transactions, the presence record every second (which also tells a Redis
  restart: `run_id` changed, and a second instance with our id: someone else's run token),
  TTL refreshes.  Non-blocking, so the control path never waits for it, and no thread
  competes with the reactor for the interpreter on every command;
- subscriber thread (redis-py): PSUBSCRIBEs to the peers' keyspace notifications and hands
  events to the reactor in batches; every subscribe confirmation (first or after a silent
  reconnect) triggers a full resync, because pub/sub loses events;
- reader thread (redis-py): HGETALLs for changed keys and SCAN-based resyncs, bulk work that
  would stall the reactor; results go to the reactor.

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

from .. import __version__
from .redis_writer import COMMAND_TIMEOUT, RedisWriter, TombstoneWrite, database_number
from ..core.keys import (SessionKey, parse_presence_key, parse_session_key, presence_key,
                         presence_pattern, session_key, session_prefix, sessions_pattern)
from ..core.sessions import DEFAULT_SESSION_TTL
from ..core.sharing import (BadRecord, LiveRecord, SharedSessionStore, SharingCounters,
                            Tombstone, decode_record)

EVENT_BATCH = 500
PRESENCE_INTERVAL = 1.0
PRESENCE_TTL_MS = 3000
SCAN_COUNT = 1000
APPLY_CHUNK = 1000
LOOKUP_DEADLINE = 0.2       # s; a lookup-on-miss never delays a command longer
MAX_OWNERS_SEEN = 1024


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
        self.writer = RedisWriter(config, reactor, on_ok=self._on_write_ok,
                                  on_failed=self._on_write_failed, on_server=self._on_server,
                                  password=lambda: read_password(config),
                                  name='rtpc-%s' % self.instance_id)
        self.duplicate: dict[str, Any] = {}    # another live process with our instance id
        self.owners_seen: set[str] = set()     # instances whose records we read (bounded)
        self._presence_written = False
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

    def store_for(self, cluster: str, ttl: float = DEFAULT_SESSION_TTL) -> SharedSessionStore:
        store = SharedSessionStore(
            cluster, self.instance_id, self.namespace, self.queue_write, ttl=ttl,
            final_timeout=self.config.final_timeout, counters=self.counters,
            resolve=lambda call_id, then: self.lookup_unknown(cluster, call_id, then))
        self.stores[cluster] = store
        return store

    def start(self) -> None:
        self.writer.start()
        for target, name in ((self._subscriber_loop, 'subscriber'), (self._reader_loop, 'reader')):
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
        self.writer.stop()
        self._stop.set()
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

    # --- writes ------------------------------------------------------------------------------------

    def queue_write(self, key: str, op: LiveRecord | None) -> None:
        if isinstance(op, Tombstone):
            self.writer.queue(key, TombstoneWrite(op, self._shadow_keys(key)))
        else:
            self.writer.queue(key, op)

    def _shadow_keys(self, key: str) -> list[str]:
        """The same call's key in every other instance's prefix we know of."""
        rest = key[len(session_prefix(self.namespace, self.instance_id)):]
        # owners seen in records too: a dead instance's keys outlive its presence record
        peers = (set(self.peers) | self.subscribed | self.discovered
                 | self.owners_seen) - {self.instance_id}
        return [session_prefix(self.namespace, peer) + rest for peer in sorted(peers)]

    def queue_depth(self) -> int:
        return self.writer.depth

    def queued_op(self, key: str) -> str:
        """What the writer still has to do for `key`: 'no', 'delete' or 'write (STATE)'."""
        queued = self.writer.queued(key)
        if queued is False:
            return 'no'
        return 'delete' if queued is None else 'write (%s)' % queued().get('state', '?')

    def _queue_presence(self) -> None:
        own = sum(s.ownership_counts()[0] for s in self.stores.values())
        state = ('degraded' if self.degraded else
                 'duplicate-id' if self.duplicate_active else 'ok')
        record = {'run_token': self.run_token, 'started': '%.3f' % self.started,
                  'version': __version__, 'state': state,
                  'own_sessions': str(own), 'last_seen': '%.3f' % time.time(),
                  'synced_run_id': self.synced_run_id}
        self.writer.write_presence(presence_key(self.namespace, self.instance_id), record,
                                   PRESENCE_TTL_MS)

    def _queue_refresh(self) -> None:
        keys = [k for store in self.stores.values() for k in store.own_keys()]
        if keys:
            self.writer.refresh(keys)

    def _on_write_ok(self) -> None:
        if self.degraded:
            self.log.info('redis: writes succeed again')
        self.degraded = False

    def _on_write_failed(self, error: str) -> None:
        if not self.degraded:
            self.log.warn('redis: write failed, serving from memory (degraded): {error}', error=error)
        self.degraded = True
        self.last_error = error

    def _on_server(self, run_id: str, previous_token: str | None) -> None:
        """After each presence write: the server's run_id and the run token it replaced."""
        if (self._presence_written and previous_token is not None
                and previous_token != self.run_token):
            self._duplicate_seen(previous_token)
        self._presence_written = True
        self._on_run_id(run_id)

    def _duplicate_seen(self, token: str) -> None:
        """Our presence record was rewritten by someone else since our last write."""
        now = time.time()
        first = not self.duplicate or now - self.duplicate.get('logged', 0.0) > 60.0
        self.duplicate.update(token=token, last_seen=now)
        if first:
            self.duplicate['logged'] = now
            self.log.error(
                'redis: another live process uses instance id {id!r} (run token {token}); both '
                'write the same keys: give every instance its own <instance_id>.  Own keys '
                'missing from the table are not deleted until this stops', id=self.instance_id,
                token=token[:16])

    @property
    def duplicate_active(self) -> bool:
        return bool(self.duplicate) and time.time() - self.duplicate['last_seen'] < 10.0

    def _on_run_id(self, run_id: str) -> None:
        if run_id == self.redis_run_id:
            return
        if self.redis_run_id is not None:
            self.log.warn('redis: server restarted (run_id changed); rewriting own sessions')
        self.redis_run_id = run_id
        rewritten = sum(store.rewrite_all_own() for store in self.stores.values())
        self.writer.when_flushed(lambda: self._on_synced(run_id))
        self._reads.put(('clean_own', None))
        self.log.info('redis: {n} own sessions written for run {run}', n=rewritten, run=run_id[:8])

    def _on_synced(self, run_id: str) -> None:
        self.synced_run_id = run_id

    # --- subscriber thread ----------------------------------------------------------------------------------

    def patterns(self) -> list[str]:
        space = '__keyspace@%d__:' % self.db
        presence = space + presence_pattern(self.namespace)
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
        parsed = parse_session_key(self.namespace, key)
        if parsed is not None:
            if parsed.owner == self.instance_id or not self.follows(parsed.owner):
                return
            if event == 'hset':
                self._dirty.add(key)
            elif event in ('del', 'expired', 'evicted', 'rename_from'):
                self._removals += 1
                self._removed_at[key] = self._removals
                self._remove_by_key(parsed)
            elif event != 'expire':
                self.bad_events += 1
            return
        peer = parse_presence_key(self.namespace, key)
        if peer and peer != self.instance_id:
            info = self.peers.setdefault(peer, {})
            info['alive'] = event not in ('del', 'expired', 'evicted')
            if info['alive']:
                info['last_event'] = time.time()
                self._discover(peer)

    def follows(self, peer: str) -> bool:
        return self.auto_peers or peer in self.subscribed

    def _remove_by_key(self, parsed: SessionKey) -> None:
        store = self.stores.get(parsed.cluster)
        if store is not None:
            store.apply_removal(parsed.call_id, parsed.owner)

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
        keys = self._load_prefix(client, sessions_pattern(self.namespace)[:-1])
        presences = {}
        presence_keys = list(self._scan(client, presence_pattern(self.namespace)))
        for key, raw in self._hgetall(client, presence_keys):
            if '_error' in raw:           # not a hash: garbage must not stop every resync
                self.reactor.callFromThread(self._bad_record, key, raw['_error'][:100])
                continue
            peer = parse_presence_key(self.namespace, key)
            if peer is not None:
                presences[peer] = {_text(k): _text(v) for k, v in raw.items()}
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
            if raw and parse_session_key(self.namespace, key) is not None:
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
            parsed = parse_session_key(self.namespace, key)
            if parsed is None:
                continue
            owner = parsed.owner
            if owner == self.instance_id and not own and self._own_loaded:
                # once our own prefix is loaded, the table is the truth: a resync may read
                # an own key whose DEL is still queued, and must not bring the call back
                continue
            if owner != self.instance_id and not self.follows(owner):
                continue                  # a resync reads every prefix; `ksrm` peers stay out
            if self._removed_at.get(key, 0) > issued:
                continue                  # removed after this read was issued: stale
            if not raw and from_events:
                self._remove_by_key(parsed)
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
        if record.owner not in self.owners_seen and len(self.owners_seen) < MAX_OWNERS_SEEN:
            self.owners_seen.add(record.owner)
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
        seen: dict[tuple[str, str], set[str]] = {}     # (owner, cluster): call-ids
        for key in keys:
            parsed = parse_session_key(self.namespace, key)
            if parsed is not None:
                seen.setdefault(parsed[:2], set()).add(parsed.call_id)
        removed = 0
        for peer, presence in presences.items():
            if peer == self.instance_id:
                continue
            info = self.peers.setdefault(peer, {})
            info.update(alive=True, presence=presence)
            self._discover(peer)
            # absence in Redis proves deletion only once the peer rewrote into this Redis
            if presence.get('synced_run_id') == run_id and run_id:
                for name, store in self.stores.items():
                    removed += store.drop_unseen(peer, seen.get((peer, name), set()), since)
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
        if self.duplicate_active:
            return                  # they may be the other process's: leave them alone
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
                'writes': self.writer.writes_ok, 'transactions': self.writer.transactions,
                'last_flush_ms': self.writer.last_flush_ms,
                'duplicate': dict(self.duplicate) if self.duplicate_active else {},
                'last_resync': dict(self.last_resync), 'events': self.events_received,
                'bad_events': self.bad_events, 'own': own, 'foreign': foreign,
                'counters': self.counters.as_dict(), 'redis_run_id': self.redis_run_id or '',
                'synced_run_id': self.synced_run_id}


def _redact(url: str) -> str:
    parsed = urlparse(url)
    if parsed.password:
        return url.replace(':%s@' % parsed.password, ':***@')
    return url
