"""Session sharing without I/O: every decision, as events in and actions out.

`SharingState` owns the sharing side of the session tables (one `SharedSessionStore` per
cluster) and decides everything the Redis adapters only carry out: which keys to read after
keyspace events, which read results may still be applied (a removal seen after a read was
issued outranks its result), what a resync proves deleted, when a lookup-on-miss is worth
it, which own keys to delete at start-up, the duplicate-instance window, which peers to
follow.  It is fed events (keyspace notifications, read results, write acknowledgements,
ticks of an injected clock) and hands actions (`Write`, `Delete`, `Read`, `Subscribe`, ...)
to `emit`, in order.  It never blocks and imports no I/O.

The orderings it keeps:
- (epoch, seq, owner) decides between records (`SharedSessionStore.apply_record`);
- a key's removal event numbered after a read was issued wins over that read's result;
- once our own prefix is loaded, our table is the truth about our own keys;
- a `D` for an unknown call-id while our own prefix is still loading is remembered: if the
  call is still unknown when its own record arrives (the `D` went out by broadcast), the
  record is dropped and its key deleted instead of bringing the call back;
- a peer's key missing from a resync proves a deletion only once that peer rewrote its
  sessions into this Redis (its presence names the Redis run id); a peer seen alive but not
  yet rewritten gets one more resync as soon as its presence changes, so calls it ended
  while Redis was away are dropped within seconds, not at the next periodic resync;
- after a new master (restart: the run id changed; or the node turned out to be a replica,
  or the sentinels switched it) every own session is written again, and until that is
  written our presence names no synced run id.
"""
from __future__ import annotations

import random
from typing import Any, Callable, Iterable, Mapping

from .counters import Field, counter_group
from .keys import (SessionKey, group_session_keys, parse_presence_key, parse_session_key,
                   presence_key, presence_pattern, same_call_keys, session_key,
                   session_prefix)
from .bulk import GroupedWalk
from .sessions import DEFAULT_SESSION_TTL
from .records import BadRecord, Record, decode_record
from .sharing import LiveRecord, SharedSessionStore, SharingCounters, Tombstone
from .sharing_actions import (Action, Barrier, Continue, Identity, LoadOwn, Log, Lookup, Read,
                              Refresh, Resync, Subscribe, Write, WritePresence)
from .sharing_views import (DUPLICATE_WINDOW, DuplicateWatch, MissLookups, OwnLoad, OwnRewrite,
                            PeerView, PendingTombstones, ReadOrder, ServerLink, SharedStores)

__all__ = ['SharingState', 'Identity', 'Action', 'PRESENCE_INTERVAL', 'DUPLICATE_WINDOW']

PRESENCE_INTERVAL = 1.0       # s between presence writes (the tick)
OWN_SLICE = 2000              # own sessions a TTL refresh or a rewrite looks at per turn
PRESENCE_TTL_MS = 3000
MAX_OWNERS_SEEN = 1024

RedisCounters = counter_group(
    'RedisCounters', 'redis',
    Field('resyncs', 'Resyncs (full reads of the namespace) finished.'))
REMOVAL_EVENTS = frozenset({'del', 'expired', 'evicted', 'rename_from'})


# --- the state machine -----------------------------------------------------------------------

class SharingState:
    """Every sharing decision of one instance; see the module documentation."""

    def __init__(self, identity: Identity, emit: Callable[[Action], None], *,
                 wall_clock: Callable[[], float], mono_clock: Callable[[], float],
                 run_token: str | None = None) -> None:
        self.identity = identity
        self.instance_id = identity.instance_id
        self.namespace = identity.namespace
        self.emit = emit
        self.wall = wall_clock
        self.mono = mono_clock
        self.run_token = run_token or '%x' % random.getrandbits(64)
        self.started = wall_clock()
        self.stores = SharedStores()        # cluster name: SharedSessionStore
        self.counters = SharingCounters()
        self.redis_counters = RedisCounters()
        self.peers_view = PeerView(identity, self.instance_id)
        self.reads = ReadOrder()
        self.tombstones = PendingTombstones()
        self.twin = DuplicateWatch(self.run_token)
        self.owners_seen: set[str] = set()     # instances whose records we read (bounded)
        self.link = ServerLink(identity.degraded_after)
        self.subscriber_connected = False
        self._repair_since: float | None = None     # a repair resync is due or running
        self.reader_ok = True
        self.last_error = ''
        self.last_resync: dict[str, Any] = {}
        self.events_received = 0
        self.bad_events = 0
        self.own_load = OwnLoad()
        self.lookups = MissLookups()
        self._rewrite: OwnRewrite | None = None    # the rewrite of own sessions under way
        self._ticks = 0

    # --- stores and start ----------------------------------------------------------------

    def store_for(self, cluster: str, ttl: float = DEFAULT_SESSION_TTL) -> SharedSessionStore:
        store = SharedSessionStore(
            cluster, self.instance_id, self.namespace, self.queue_write, ttl=ttl,
            final_timeout=self.identity.final_timeout, counters=self.counters,
            clock=self.mono, wall_clock=self.wall,
            resolve=lambda call_id, then, ends: self.lookup_unknown(cluster, call_id, then,
                                                                    ends))
        self.stores[cluster] = store
        return store

    def start(self) -> None:
        self.emit(Subscribe(tuple(self.patterns())))
        self.emit(LoadOwn())

    def _every(self, seconds: float) -> int:
        """The number of ticks in `seconds` (at least one)."""
        return max(1, round(seconds / PRESENCE_INTERVAL))

    def tick(self) -> None:
        """Every PRESENCE_INTERVAL: presence, and the TTL refresh and resync when due.

        Counted in ticks, not compared with a clock: a period equal to the tick's must not
        slip to every other tick by a microsecond of jitter (keys would expire).
        """
        self._ticks += 1
        self.write_presence()
        if self.subscriber_connected:      # else the silence is ours, not the peers'
            for peer in self.peers_view.expire_silent(self.wall(), PRESENCE_TTL_MS / 1000.0):
                self.emit(Log('warn', 'redis: peer {peer} wrote no presence for {ttl} s; '
                              'taking it for dead', {'peer': peer, 'ttl': PRESENCE_TTL_MS / 1000}))
        barrier = self.tombstones.barrier_due()
        if barrier is not None:
            self.emit(Barrier(barrier))
        if self._ticks % self._every(max(1.0, self.identity.session_ttl / 4.0)) == 0:
            if self.stores.own_count():
                refresh = GroupedWalk(self.stores.items(), which='own', size=OWN_SLICE, visit=(
                    lambda cluster, infos: self.emit(Refresh(tuple(i.key for i in infos)))))
                self.emit(Continue(refresh.step))
        if self._ticks % self._every(self.identity.resync_interval) == 0:
            self.request_resync()

    def write_presence(self) -> None:
        self.emit(WritePresence(presence_key(self.namespace, self.instance_id),
                                self.presence_record(), PRESENCE_TTL_MS))

    def presence_record(self) -> dict[str, str]:
        own = self.stores.own_count()
        state = ('degraded' if self.link.degraded else
                 'duplicate-id' if self.duplicate_active else 'ok')
        return {'run_token': self.run_token, 'started': '%.3f' % self.started,
                'version': self.identity.version, 'state': state,
                'own_sessions': str(own), 'last_seen': '%.3f' % self.wall(),
                'synced_run_id': self.link.synced_run_id}

    # --- writes ----------------------------------------------------------------------------

    def queue_write(self, key: str, op: LiveRecord | None) -> None:
        shadows: tuple[str, ...] = ()
        if isinstance(op, Tombstone):
            # owners seen in records too: a dead instance's keys outlive its presence record
            peers = (self.peers_view.known() | self.owners_seen) - {self.instance_id}
            shadows = tuple(same_call_keys(self.namespace, self.instance_id, key, peers))
            record = op.snapshot()
            self.tombstones.add(record.cluster, record.cid, record.order)
        self.emit(Write(key, op, shadows))

    def on_barrier(self, number: int) -> None:
        self.tombstones.written(number)

    def on_write_ok(self) -> None:
        self._emit_all(self.link.write_ok())

    def on_write_failed(self, error: str) -> None:
        self.last_error = error
        self._emit_all(self.link.write_failed(error))

    def on_server(self, run_id: str, previous_token: str | None) -> None:
        """After each presence write: the server's run_id and the run token it replaced."""
        if self.twin.after_presence_write(previous_token, self.wall()):
            self.emit(Log('error', 'redis: another live process uses instance id {id!r} (run '
                          'token {token}); both write the same keys: give every instance its '
                          'own <instance_id>.  Own keys missing from the table are not deleted '
                          'until this stops',
                          {'id': self.instance_id, 'token': self.duplicate['token'][:16]}))
        if self.link.needs_rewrite(run_id):
            self._emit_all(self.link.new_server(run_id))
            if self._rewrite is not None:
                self._rewrite.cancelled = True
            job = self._rewrite = OwnRewrite(self.stores, run_id)
            self.emit(Continue(GroupedWalk(self.stores.items(), job.visit,
                                           lambda: self._emit_all(job.finished()), 'own',
                                           OWN_SLICE).step))

    def on_new_master(self, why: str) -> None:
        """The node written to is not (or no longer) the master, or the sentinels switched it."""
        self._emit_all(self.link.new_master(why))

    def on_synced(self, run_id: str) -> None:
        self.link.synced_run_id = run_id

    @property
    def duplicate(self) -> dict[str, Any]:
        """token, last_seen, logged of another live process with our instance id, or {}."""
        return self.twin.info

    @property
    def duplicate_active(self) -> bool:
        return self.twin.active(self.wall())

    def _emit_all(self, actions: Iterable[Action]) -> None:
        for action in actions:
            self.emit(action)

    def on_own_keys(self, keys: Iterable[str]) -> None:
        """Own keys in Redis that our table does not have (restored from an old dump)."""
        if self.duplicate_active:
            return                  # they may be the other process's: leave them alone
        live = set(self.stores.own_keys())
        for key in keys:
            if key not in live:
                self.emit(Write(key, None))

    # --- keyspace events ---------------------------------------------------------------------

    def patterns(self) -> list[str]:
        # One pattern per peer, never one for the whole namespace: our own writes would
        # come back as events that cost the reactor as much as writing them.
        return [session_prefix(self.namespace, p) + '*'
                for p in sorted(self.peers_view.followed())] + [presence_pattern(self.namespace)]

    def on_subscribed(self) -> None:
        """A subscribe confirmation (first, or after a silent reconnect): events were lost."""
        self.subscriber_connected = True
        self.peers_view.listening_since = self.wall()
        self.request_resync(repair=True)

    def on_subscriber_down(self, error: str) -> None:
        if self.subscriber_connected:
            self.emit(Log('warn', 'redis: subscriber lost ({error}); peers keep their last '
                          'known sessions', {'error': error}))
        self.subscriber_connected = False
        self.last_error = error

    def on_events(self, events: Iterable[tuple[str, str]]) -> None:
        """Keyspace notifications, as (key, event); then reads what changed."""
        for key, event in events:
            self.events_received += 1
            self._on_event(key, event)
        self._schedule_read()

    def _on_event(self, key: str, event: str) -> None:
        parsed = parse_session_key(self.namespace, key)
        if parsed is not None:
            if parsed.owner == self.instance_id or not self.peers_view.follows(parsed.owner):
                return
            if event == 'hset':
                self.reads.dirty.add(key)
            elif event in REMOVAL_EVENTS:
                self.reads.removed(key)
                self._remove(parsed)
            elif event != 'expire':
                self.bad_events += 1
            return
        peer = parse_presence_key(self.namespace, key)
        if peer and peer != self.instance_id:
            alive = event not in ('del', 'expired', 'evicted')
            self.peers_view.seen(peer, alive, self.wall() if alive else None)
            if alive:
                self._discover(peer)
                if peer in self.peers_view.unsynced and event == 'hset':
                    self.request_resync()     # maybe it has rewritten its sessions now

    def _discover(self, peer: str) -> None:
        if self.peers_view.discover(peer):
            self.emit(Log('info', 'redis: following sessions of peer {peer}', {'peer': peer}))
            self.emit(Subscribe(tuple(self.patterns())))

    def _remove(self, parsed: SessionKey) -> None:
        store = self.stores.get(parsed.cluster)
        if store is not None:
            store.apply_removal(parsed.call_id, parsed.owner)

    def _schedule_read(self) -> None:
        keys = self.reads.next_read()
        if keys:
            self.emit(Read(tuple(keys)))

    # --- what was read ----------------------------------------------------------------------

    def on_records(self, results: Iterable[tuple[str, Mapping | Record]], source: str) -> None:
        """Hashes read from Redis, or records decoded from them (`newest_records`);
        `source` is 'event', 'resync' or 'own' (the load)."""
        self.reader_ok = True
        issued = self.reads.issued(source)
        for key, raw in results:
            parsed = parse_session_key(self.namespace, key)
            if parsed is None:
                continue
            if parsed.owner == self.instance_id:
                if source != 'own' and self.own_load.done:
                    # once our own prefix is loaded, the table is the truth: a resync may
                    # read an own key whose DEL is still queued, and must not bring it back
                    continue
                if self._deleted_while_loading(parsed, key):
                    continue
            elif not self.peers_view.follows(parsed.owner):
                continue              # a resync reads every prefix; `ksrm` peers stay out
            if self.reads.removed_since(key, issued):
                continue              # removed after this read was issued: stale
            if not raw:
                # gone between the scan (or the event) and the read: its deletion event
                # removes it, and an empty hash is no record at all (not a bad one)
                if source == 'event':
                    self._remove(parsed)
                continue
            if isinstance(raw, Record):
                self.apply(raw, key)
            else:
                self.apply_raw(key, raw)
        if source == 'event':
            self.reads.read_done()
            self._schedule_read()

    def _deleted_while_loading(self, parsed: SessionKey, key: str) -> bool:
        """Our own record of a call whose `D` came while our prefix was loading and that is
        still unknown (the `D` went out by broadcast): delete the key instead."""
        store = self.stores.get(parsed.cluster)
        if store is None or parsed.call_id in store:
            return False
        if not self.own_load.take_ended(parsed.cluster, parsed.call_id):
            return False
        self.emit(Write(key, None))
        return True

    def on_own_loaded(self) -> None:
        self.own_load.complete()

    def apply_raw(self, key: str, raw: Mapping) -> None:
        """Validate one hash read from Redis and give it to its cluster's store."""
        try:
            record = decode_record(key, self.namespace, raw)
        except BadRecord as exc:
            self.bad_record(key, str(exc))
            return
        self.apply(record, key)

    def apply(self, record: Record, key: str = '') -> None:
        store = self.stores.get(record.cluster)
        if store is None:
            self.bad_record(key, 'unknown cluster %r' % record.cluster[:64])
            return
        if self.tombstones.hides(record.cluster, record.cid, record.order):
            return                    # our tombstone, maybe not in Redis yet, outranks it
        if record.owner not in self.owners_seen and len(self.owners_seen) < MAX_OWNERS_SEEN:
            self.owners_seen.add(record.owner)
        store.apply_record(record)

    def bad_record(self, key: str, why: str) -> None:
        self.counters.bad_records += 1
        n = self.counters.bad_records
        if n <= 20 or n % 1000 == 0:
            self.emit(Log('warn', 'redis: ignoring record {key!r}: {why} ({n} bad records so '
                          'far)', {'key': key[:120], 'why': why, 'n': n}))

    def on_read_failed(self, kind: str, payload: Any, error: str) -> None:
        self.last_error = error
        self.reader_ok = False
        if kind == 'lookup':
            self._emit_all(self.lookups.finish(payload))
        elif kind == 'read':
            self.reads.read_failed(payload)
        elif kind == 'resync':
            self.reads.resync_failed()

    # --- resync ----------------------------------------------------------------------------------

    def request_resync(self, repair: bool = False) -> None:
        """Read the whole namespace.  `repair`: events may have been lost, so the view is
        stale (unknown calls are looked up in Redis) until a resync started after now ends;
        a periodic or operator resync only double-checks a view that events keep current."""
        if repair and self._repair_since is None:
            self._repair_since = self.mono()
        if self.reads.start_resync():
            self.tombstones.resync_started()
            self.emit(Resync(self.mono()))

    def on_resync_done(self, since: float, keys: Iterable[str],
                       presences: Mapping[str, Mapping[str, str]], run_id: str,
                       duration: float) -> None:
        """The scan behind the last `on_records(..., 'resync')`: every session key it saw,
        the presence hashes by peer, the server's run id."""
        seen, count = group_session_keys(self.namespace, keys)
        removed = 0
        for peer in self.peers_view.after_resync(presences, run_id, self.wall()):
            removed += self.stores.drop_unseen(peer, seen, since)
        for peer in presences:
            self._discover(peer)
        self.last_resync = {'at': self.wall(), 'duration': duration, 'keys': count,
                            'removed': removed}
        self.redis_counters.resyncs += 1
        if self._repair_since is not None and since >= self._repair_since:
            self._repair_since = None
        self.own_load.complete()
        self.tombstones.resync_done()
        if self.reads.resync_done():
            self.request_resync()

    # --- lookup on miss ------------------------------------------------------------------------

    @property
    def stale(self) -> bool:
        """Our view of the peers may miss sessions (subscriber down, repair resync not done)."""
        return not self.subscriber_connected or self._repair_since is not None

    def lookup_unknown(self, cluster: str, call_id: str, then: Callable[[], None],
                       ends_call: bool = False) -> bool:
        """While the view is stale, read the call-id under every peer's prefix, then `then()`.

        False (and `then` is not called) when no lookup is needed.  `then` runs once, when the
        records are applied or at the lookup's deadline, whichever comes first.
        """
        if ends_call:
            self.own_load.ended(cluster, call_id)
        peers = sorted(self.peers_view.known() - {self.instance_id})
        # with Redis unreachable a lookup would only add its deadline to every new call
        if not self.stale or not peers or self.link.degraded or not self.reader_ok:
            return False
        token = self.lookups.start(then)
        self.counters.lookups_on_miss += 1
        self.emit(Lookup(token, tuple(session_key(self.namespace, peer, cluster, call_id)
                                      for peer in peers)))
        return True

    def on_lookup_result(self, token: int, results: Iterable[tuple[str, Mapping]]) -> None:
        self.reader_ok = True
        for key, raw in results:
            if raw and parse_session_key(self.namespace, key) is not None:
                self.apply_raw(key, raw)
        self._emit_all(self.lookups.finish(token))

    def on_lookup_deadline(self, token: int) -> None:
        self._emit_all(self.lookups.finish(token))

    # --- operator commands ---------------------------------------------------------------------

    def subscribe(self, peer: str) -> None:
        self.peers_view.subscribe(peer)
        self.emit(Subscribe(tuple(self.patterns())))

    def unsubscribe(self, peer: str) -> int:
        """Stop following `peer` and forget its sessions: OWN_SLICE now, the rest a slice per
        reactor turn; returns how many there are."""
        self.peers_view.unsubscribe(peer)
        self.emit(Subscribe(tuple(self.patterns())))
        count = self.stores.foreign_count(peer)
        walk = GroupedWalk(self.stores.items(), which='foreign', size=OWN_SLICE, visit=(
            lambda cluster, infos: self.stores[cluster].drop_sessions_of(
                peer, (i.call_id for i in infos))))
        if walk.step():
            self.emit(Continue(walk.step))
        return count
