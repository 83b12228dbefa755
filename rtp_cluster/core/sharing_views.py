"""Bookkeeping of `SharingState`: the peers it knows and follows, the order of reads, the
Redis server, the stores, lookups on miss and rewrites of own sessions."""
from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

from .sharing_actions import Action, Identity, ListOwn, Log, Resume, WhenFlushed

DUPLICATE_WINDOW = 10.0       # s a foreign run token in our presence counts as a live twin
DUPLICATE_LOG_EVERY = 60.0    # s between two errors about the same twin
MAX_ENDED_WHILE_LOADING = 100_000


class PeerView:
    """The peers: configured or discovered, followed or not, and what we know of them."""

    def __init__(self, identity: Identity, instance_id: str) -> None:
        self.instance_id = instance_id
        self.subscribed: set[str] = set(identity.peers)
        self.auto = not identity.peers
        self.discovered: set[str] = set()      # found through presence records (auto)
        self.info: dict[str, dict] = {}        # peer: alive, last_event, presence
        self.listening_since = 0.0             # events before it may have been lost
        self._heard: dict[str, float] = {}     # peer: when its presence was last seen
        self.unsynced: set[str] = set()        # alive, not yet rewritten into this Redis

    def followed(self) -> set[str]:
        peers = self.discovered if self.auto else self.subscribed
        return peers - {self.instance_id}

    def follows(self, peer: str) -> bool:
        return self.auto or peer in self.subscribed

    def known(self) -> set[str]:
        return set(self.info) | self.subscribed | self.discovered

    def discover(self, peer: str) -> bool:
        """True if `peer` is newly followed (automatic peers only)."""
        if self.auto and peer != self.instance_id and peer not in self.discovered:
            self.discovered.add(peer)
            return True
        return False

    def seen(self, peer: str, alive: bool, at: float | None) -> None:
        info = self.info.setdefault(peer, {})
        info['alive'] = alive
        if at is not None:
            info['last_event'] = at
            self._heard[peer] = at

    def presence(self, peer: str, presence: dict[str, str], at: float) -> None:
        self.info.setdefault(peer, {}).update(alive=True, presence=presence)
        self._heard.setdefault(peer, at)

    def expire_silent(self, now: float, ttl: float) -> list[str]:
        """Peers alive by their last event but silent for longer than the presence TTL.

        A live peer rewrites its presence every second, and each write is an event; a dead
        one's presence key expires in Redis only when Redis gets round to it (lazily, or by
        its sampling expiry cycle, which can take minutes among 100,000 keys with TTLs).
        """
        silent = [peer for peer, info in self.info.items() if info.get('alive')
                  and now - max(self._heard.get(peer, now), self.listening_since) > ttl]
        for peer in silent:
            self.info[peer]['alive'] = False
        return silent

    def after_resync(self, presences: Mapping[str, Mapping[str, str]], run_id: str,
                     now: float) -> list[str]:
        """The presences a resync read; returns the peers that rewrote their sessions into
        this Redis (their presence names its run id): only their missing keys prove
        deletions."""
        synced = []
        for peer, presence in presences.items():
            if peer == self.instance_id:
                continue
            self.presence(peer, dict(presence), now)
            if run_id and presence.get('synced_run_id') == run_id:
                self.unsynced.discard(peer)
                synced.append(peer)
            else:
                self.unsynced.add(peer)
        for peer in set(self.info) - set(presences):
            self.info[peer]['alive'] = False
        # a peer without presence may not have reconnected yet (or be dead: then no presence
        # write of it ever comes, and waiting costs nothing)
        self.unsynced |= self.known() - set(presences) - {self.instance_id}
        return synced

    def subscribe(self, peer: str) -> None:
        if self.subscribed:
            self.auto = False
        self.subscribed.add(peer)

    def unsubscribe(self, peer: str) -> None:
        self.subscribed.discard(peer)
        if self.auto:
            self.auto = False
            self.subscribed = {p for p in self.info if p != peer}


class ReadOrder:
    """Which read results may still be applied.

    Removal events are numbered; a read remembers the number current when it was issued,
    and its result for a key removed later is stale.  One event read in flight at a time
    (the keys that change meanwhile wait in `dirty`), one resync at a time (another request
    while it runs makes one more follow).
    """

    def __init__(self) -> None:
        self.dirty: set[str] = set()
        self.read_in_flight = False
        self.resync_running = False
        self.resync_pending = False
        self._removals = 0
        self._removed_at: dict[str, int] = {}
        self._read_issued = 0
        self._resync_issued = 0

    def removed(self, key: str) -> None:
        self._removals += 1
        if self.read_in_flight or self.resync_running:    # else no result can be stale
            self._removed_at[key] = self._removals

    def removed_since(self, key: str, issued: int) -> bool:
        return self._removed_at.get(key, 0) > issued

    def issued(self, source: str) -> int:
        if source == 'event':
            return self._read_issued
        if source == 'resync':
            return self._resync_issued
        return 0                          # the own load: no event touches our prefix

    def next_read(self) -> list[str]:
        if not self.dirty or self.read_in_flight:
            return []
        self.read_in_flight = True
        self._read_issued = self._removals
        keys, self.dirty = sorted(self.dirty), set()
        return keys

    def read_done(self) -> None:
        self.read_in_flight = False
        self.prune()

    def read_failed(self, keys: Iterable[str]) -> None:
        self.read_in_flight = False
        self.dirty.update(keys)

    def start_resync(self) -> bool:
        """True if a resync should start now (else one more follows the running one)."""
        if self.resync_running:
            self.resync_pending = True
            return False
        self.resync_running = True
        self._resync_issued = self._removals
        return True

    def resync_done(self) -> bool:
        """True if another resync was asked for meanwhile."""
        self.resync_running = False
        self.prune()
        pending, self.resync_pending = self.resync_pending, False
        return pending

    def resync_failed(self) -> None:
        self.resync_running = False
        self.resync_pending = True

    def prune(self) -> None:
        """Forget removals older than every read still in flight."""
        floor = self._removals
        if self.read_in_flight:
            floor = min(floor, self._read_issued)
        if self.resync_running:
            floor = min(floor, self._resync_issued)
        if self._removed_at:
            self._removed_at = {k: n for k, n in self._removed_at.items() if n > floor}

    @property
    def pending_removals(self) -> dict[str, int]:
        return dict(self._removed_at)


class PendingTombstones:
    """Our tombstones not yet known to have been seen by a resync, by (cluster, call-id).

    A taken-over call we deleted has a tombstone queued in the writer; the dead previous
    owner's key is still in Redis.  Until a resync has scanned Redis after the tombstone was
    written, a read of that older key must not bring the call back: the scan could not see
    the tombstone that outranks it.  Writes are confirmed by writer barriers, numbered:
    `barrier_due` names the next one to ask for, `written` reports one done.
    """

    def __init__(self) -> None:
        self._orders: dict[tuple[str, str], tuple[tuple[int, int, str], int]] = {}
        self._asked = 0                # the last barrier asked for
        self._unasked = False          # tombstones added since then
        self._written = 0              # the last barrier the writer reported done
        self._before_resync = 0        # barriers done when the running resync started

    def __len__(self) -> int:
        return len(self._orders)

    def add(self, cluster: str, call_id: str, order: tuple[int, int, str]) -> None:
        self._orders[(cluster, call_id)] = (order, self._asked + 1)
        self._unasked = True

    def hides(self, cluster: str, call_id: str, order: tuple[int, int, str]) -> bool:
        """A record of this order is one of our pending tombstones or older."""
        entry = self._orders.get((cluster, call_id))
        return entry is not None and order <= entry[0]

    def barrier_due(self) -> int | None:
        if not self._unasked:
            return None
        self._unasked = False
        self._asked += 1
        return self._asked

    def written(self, barrier: int) -> None:
        self._written = max(self._written, barrier)

    def resync_started(self) -> None:
        self._before_resync = self._written

    def resync_done(self) -> None:
        """The scan read every tombstone written before it started: forget those."""
        done = self._before_resync
        if self._orders:
            self._orders = {k: v for k, v in self._orders.items() if v[1] > done}


class DuplicateWatch:
    """Another live process writing as our instance id, told by the run token it leaves in
    our presence record between two of our writes."""

    def __init__(self, run_token: str) -> None:
        self.run_token = run_token
        self.info: dict[str, Any] = {}     # token, last_seen, logged
        self._written = False

    def after_presence_write(self, previous_token: str | None, now: float) -> bool:
        """Our presence record was written; it held `previous_token`.  True: log the twin.

        The first write may replace the record of our previous run (restarted within the
        presence TTL): not a twin.  No token: the record had expired.
        """
        first, self._written = not self._written, True
        if first or previous_token is None or previous_token == self.run_token:
            return False
        log = not self.info or now - self.info.get('logged', 0.0) > DUPLICATE_LOG_EVERY
        self.info.update(token=previous_token, last_seen=now)
        if log:
            self.info['logged'] = now
        return log

    def active(self, now: float) -> bool:
        return bool(self.info) and now - self.info['last_seen'] < DUPLICATE_WINDOW


class OwnLoad:
    """Whether our own prefix has been read once (the start-up load or a resync), and the
    calls whose `D` came before that: a `D` for an unknown call-id goes out by broadcast, and
    the load must not bring such a call back."""

    def __init__(self) -> None:
        self.done = False
        self._ended: set[tuple[str, str]] = set()

    def ended(self, cluster: str, call_id: str) -> None:
        if not self.done and len(self._ended) < MAX_ENDED_WHILE_LOADING:
            self._ended.add((cluster, call_id))

    def take_ended(self, cluster: str, call_id: str) -> bool:
        """True (once) if a `D` for this call came while loading."""
        if (cluster, call_id) not in self._ended:
            return False
        self._ended.discard((cluster, call_id))
        return True

    def complete(self) -> None:
        self.done = True
        self._ended.clear()


class ServerLink:
    """The Redis server written to: whether writes succeed, which server run (its run id)
    holds every own session, and whether a new master must get them all again."""

    def __init__(self, degraded_after: int) -> None:
        self.degraded_after = degraded_after
        self.degraded = False
        self.write_errors = 0                  # consecutive failed writes
        self.redis_run_id: str | None = None
        self.synced_run_id = ''                # the run our presence says holds our sessions
        self.rewrite_due = ''                  # why the next server must get everything again

    def write_ok(self) -> list[Log]:
        was_degraded, self.degraded, self.write_errors = self.degraded, False, 0
        if not was_degraded:
            return []
        return [Log('info', 'redis: writes succeed again',
                    {'event': 'redis_state', 'old': 'degraded', 'new': 'connected'})]

    def write_failed(self, error: str) -> list[Log]:
        """Degraded after `degraded_after` failed writes or connections in a row."""
        self.write_errors += 1
        if self.degraded or self.write_errors < self.degraded_after:
            return []
        self.degraded = True
        return [Log('warn', 'redis: write failed, serving from memory (degraded): {error}',
                    {'error': error, 'event': 'redis_state', 'old': 'connected',
                     'new': 'degraded', 'reason': error})]

    def needs_rewrite(self, run_id: str) -> bool:
        return run_id != self.redis_run_id or bool(self.rewrite_due)

    def new_master(self, why: str) -> list[Log]:
        """The next master may lack writes the old one took (replication is asynchronous):
        every own session is written again once one answers."""
        logs = [] if self.rewrite_due else [
            Log('warn', 'redis: looking for the master ({why}); own sessions are written '
                'again once it answers', {'why': why})]
        self.rewrite_due = why
        self.synced_run_id = ''    # peers must not take a missing key of ours as deleted
        return logs

    def new_server(self, run_id: str) -> list[Log]:
        """Own sessions are about to be written to server run `run_id`."""
        if self.rewrite_due:
            logs = [Log('info', 'redis: writing own sessions to the master (run {run})',
                        {'run': run_id[:8]})]
        elif self.redis_run_id is not None:
            logs = [Log('warn', 'redis: server restarted (run_id changed); rewriting own '
                        'sessions')]
        else:
            logs = []
        self.rewrite_due = ''
        self.synced_run_id = ''
        self.redis_run_id = run_id
        return logs


class SharedStores(dict):
    """The shared session table of every cluster, by cluster name, and what is asked of
    all of them at once."""

    def own_keys(self) -> list[str]:
        return [key for store in self.values() for key in store.own_keys()]

    def own_count(self) -> int:
        return sum(store.ownership_counts()[0] for store in self.values())

    def ownership_counts(self) -> tuple[int, int]:
        """(own, foreign) sessions over every cluster."""
        own = foreign = 0
        for store in self.values():
            o, f = store.ownership_counts()
            own, foreign = own + o, foreign + f
        return own, foreign

    def foreign_count(self, peer: str) -> int:
        """`peer`'s sessions over every cluster (kept counts)."""
        return sum(store.foreign_counts().get(peer, 0) for store in self.values())

    def drop_unseen(self, peer: str, seen: Mapping[tuple[str, str], set[str]],
                    since: float) -> int:
        """After a resync: forget `peer`'s sessions missing from `seen` (call-ids by
        (owner, cluster))."""
        return sum(store.drop_unseen(peer, seen.get((peer, name), set()), since)
                   for name, store in self.items())


class MissLookups:
    """Lookups of unknown call-ids under way: each resumes its command exactly once."""

    def __init__(self) -> None:
        self._waiting: dict[int, Callable[[], None]] = {}
        self._issued = 0

    def __len__(self) -> int:
        return len(self._waiting)

    def start(self, then: Callable[[], None]) -> int:
        self._issued += 1
        self._waiting[self._issued] = then
        return self._issued

    def finish(self, token: int) -> list[Resume]:
        """The command to resume; nothing when it was resumed already."""
        then = self._waiting.pop(token, None)
        return [] if then is None else [Resume(then)]


class OwnRewrite:
    """Every own session written again for server run `run_id`, a slice at a time (its
    `visit` goes to a `GroupedWalk`); `cancel` stops it when a newer rewrite starts."""

    def __init__(self, stores: SharedStores, run_id: str) -> None:
        self.stores = stores
        self.run_id = run_id
        self.rewritten = 0
        self.cancelled = False

    def visit(self, cluster: str, sessions: list) -> None:
        if not self.cancelled:
            self.rewritten += self.stores[cluster].rewrite_own(s.call_id for s in sessions)

    def finished(self) -> list[Action]:
        """What follows the last slice: the barrier that tells when every write is done, and
        the list of own keys (to delete those no longer in the table)."""
        if self.cancelled:
            return []
        return [WhenFlushed(self.run_id), ListOwn(),
                Log('info', 'redis: {n} own sessions written for run {run}',
                    {'n': self.rewritten, 'run': self.run_id[:8]})]
