"""Session ownership shared between rtp_cluster instances: the part without I/O.

Each instance writes its OWN sessions under its own key prefix and learns its peers'
sessions (FOREIGN) from Redis.  Routing treats both alike; ownership decides who writes,
refreshes and deletes a record.  Conflicts are ordered by (epoch, seq, owner), never by
clocks: epoch grows on every takeover, seq on every change within an epoch.

Key of a session: see `keys` (the grammar); it is a Redis hash whose fields are those of
`records.Record`.  `SharedSessionStore` is the cluster's session store with
ownership; it hands every change of an OWN session to a writer (`queue_write`) and never
waits for it.
"""
from __future__ import annotations

import time
from typing import Callable, Iterable, NamedTuple

from .counters import Field, counter_group
from .keys import cluster_prefix, key_owner, presence_key, session_key, session_prefix
from .records import ACTIVE_STATE, DELETED_STATE, Record
from .sessions import (DEFAULT_SESSION_TTL, LAST_USED, MEMBER, SESSION_AGING_INTERVAL, TO_TAG,
                       MemorySessionStore, SessionInfo, Which)

__all__ = ['key_owner', 'presence_key', 'session_key', 'session_prefix', 'SharedSessionStore',
           'SharingCounters', 'LiveRecord', 'Tombstone']

# sessions checked against final_timeout per expire(): a pass over 200,000 in one go held
# the event loop for about 90 ms on a slow VM, a slice of this size holds it for about 2 ms
FINAL_SCAN_SLICE = 5000


class SharedSession(NamedTuple):
    """A session with its ownership, as the store hands it out (a copy).  The table holds
    it as a plain tuple of the same fields (`MemorySessionStore`: the garbage collector
    does not walk those)."""

    member: str
    last_used: float
    from_tag: str | None
    to_tag: str | None
    owner: str
    epoch: int
    seq: int
    created: float
    updated: float
    address: str = ''        # the member's control address when it was bound

    @property
    def order(self) -> tuple[int, int, str]:
        return self.epoch, self.seq, self.owner


# positions of the ownership fields in a table entry (after those of `Session`)
OWNER, EPOCH, SEQ, CREATED, UPDATED, ADDRESS = range(4, 10)


class LiveRecord:
    """What the store hands the writer for an OWN session: a view of the session.

    Called, it gives the hash of the session's current state (so changes that coalesce
    before the writer takes the key cost one record); `snapshot()` fixes that state.  The
    writer snapshots every key of a transaction when it takes the batch, so what it writes
    is the state at that moment even if the session changes while the batch is encoded.
    The current state is the table's entry for the call while it is still own; once the
    call is gone (or no longer own) it is the state it had when the write was queued.
    """

    __slots__ = ('store', 'call_id', 'session', 'state')

    def __init__(self, store: 'SharedSessionStore', call_id: str, session: SharedSession,
                 state: str = ACTIVE_STATE) -> None:
        self.store = store
        self.call_id = call_id
        self.session = session
        self.state = state

    def current(self) -> SharedSession:
        now = self.store.get(self.call_id)
        return now if now is not None and now.owner == self.session.owner else self.session

    def snapshot(self) -> Record:
        s = self.current()
        return Record(self.call_id, self.store.cluster, s.member, s.address, s.from_tag or '',
                      s.to_tag or '', s.created, s.updated, s.owner, s.epoch, s.seq, self.state)

    def __call__(self) -> dict[str, str]:
        return self.snapshot().to_mapping()


class Tombstone(LiveRecord):
    """The write of a deleted, taken-over call: its record (state `deleted`) must outrank
    the older keys other instances may still hold for the call, and only while they live."""

    __slots__ = ()

    def __init__(self, store: 'SharedSessionStore', call_id: str,
                 session: SharedSession) -> None:
        super().__init__(store, call_id, session, DELETED_STATE)

    def current(self) -> SharedSession:
        return self.session          # the call is deleted: its last state is final


# (key, op): op is a LiveRecord (Tombstone included) to write, or None to delete the key
WriteOp = Callable[[str, 'LiveRecord | None'], None]


SharingCounters = counter_group(
    'SharingCounters', 'sharing',
    Field('takeovers', 'Calls of a dead peer taken over.'),
    Field('demotions', 'Own calls given up to a newer owner.'),
    Field('conflicts', 'Record conflicts (reserved; not counted yet).'),
    Field('applied', 'Foreign records applied.'),
    Field('removed_by_event', 'Foreign calls removed by a keyspace event.'),
    Field('removed_by_resync', 'Foreign calls removed by a resync.'),
    Field('bad_records', 'Records that could not be decoded.',
          metric='rtp_cluster_redis_bad_records_total'),
    Field('unknown_members', 'Records naming a member this instance does not have.'),
    Field('writes_queued', 'Record writes queued for Redis.'),
    Field('lookups_on_miss', 'Redis lookups of a call-id not in memory.'))


Resolver = Callable[[str, Callable[[], None], bool], bool]   # (call_id, then, ends_call)


def _never_resolves(call_id: str, then: Callable[[], None], ends_call: bool) -> bool:
    return False


class SharedSessionStore:
    """A cluster's session table with OWN/FOREIGN ownership, written behind to Redis.

    Implements `SessionStore` around a `MemorySessionStore` (the routing table and its
    aging order); every change of an OWN session goes to `write` and is never waited for.
    """

    def __init__(self, cluster: str, instance_id: str, namespace: str, write: WriteOp, *,
                 ttl: float = DEFAULT_SESSION_TTL, final_timeout: float = 0.0,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time,
                 counters: SharingCounters | None = None,
                 resolve: Resolver = _never_resolves) -> None:
        self.table = MemorySessionStore(ttl=ttl, clock=clock, entry_type=SharedSession._make)
        self.cluster = cluster
        self.instance_id = instance_id
        self.namespace = namespace
        self.write = write
        self.final_timeout = final_timeout
        self.wall_clock = wall_clock
        self.counters = counters or SharingCounters()
        self.on_unbind: Callable[[str, str], None] | None = None
        self.member_known: Callable[[str], bool] = lambda name: True
        self._resolve = resolve
        self._own_prefix = cluster_prefix(namespace, instance_id, cluster)
        self._owners: dict[str, int] = {}      # sessions per owner, kept on every change
        # FOREIGN calls an operator terminated here: call-id -> (owner, monotonic time),
        # oldest first; their owner's records are not applied while they are remembered
        self._terminated: dict[str, tuple[str, float]] = {}
        # the final_timeout pass under way: the call-ids it has still to check
        self._final_scan: list[str] = []
        self._final_pos = 0

    # --- the SessionStore interface ------------------------------------------------------

    def __len__(self) -> int:
        return len(self.table)

    def __contains__(self, call_id: str) -> bool:
        return call_id in self.table

    def get(self, call_id: str) -> SharedSession | None:
        """A copy of the session of `call_id`, or None."""
        return self.table.get(call_id)

    def items(self):
        return self.table.items()

    @property
    def aging_interval(self) -> float:
        """How often `expire` must run: fine enough for `final_timeout` to be kept, and at
        once while a `final_timeout` pass has call-ids left to check."""
        if self._final_pos < len(self._final_scan):
            return 0.0
        if self.final_timeout > 0:
            return min(SESSION_AGING_INTERVAL, max(1.0, self.final_timeout / 10.0))
        return SESSION_AGING_INTERVAL

    def lookup(self, call_id: str) -> str | None:
        entry = self.table.entry(call_id)
        if entry is None:
            return None
        if entry[OWNER] != self.instance_id:
            entry = self._take_over(call_id, SharedSession._make(entry))
        self.table.touch(call_id, entry)
        return entry[MEMBER]

    def bind(self, call_id: str, member: str, from_tag: str | None = None,
             to_tag: str | None = None, *, address: str = '') -> None:
        old = self.get(call_id)
        if old is not None and old.member == member:
            if old.owner != self.instance_id:
                self._take_over(call_id, old._replace(address=address or old.address))
                return
            self.table.touch(call_id, old if to_tag is None else old._replace(to_tag=to_tag))
            return
        now = self.wall_clock()
        epoch = old.epoch + 1 if old is not None else 1
        session = SharedSession(member, self.table.now(), from_tag, to_tag, self.instance_id,
                                epoch, 1, now, now, address)
        self._terminated.pop(call_id, None)     # a client brought the call back here
        self._put(call_id, session)
        self._queue(call_id, session)

    def learn_to_tag(self, call_id: str, to_tag: str) -> None:
        entry = self.table.entry(call_id)
        if entry is None or entry[TO_TAG] is not None:
            return
        session = SharedSession._make(entry)._replace(to_tag=to_tag)
        if session.owner == self.instance_id:
            session = session._replace(seq=session.seq + 1, updated=self.wall_clock())
            self.table.replace(call_id, session)
            self._queue(call_id, session)
        else:
            self.table.replace(call_id, session)

    def unbind(self, call_id: str) -> str | None:
        session = self.get(call_id)
        if session is None:
            return None
        if session.owner == self.instance_id:
            self._queue_delete(call_id, session)
        self._drop(call_id)
        return session.member

    def count(self, member: str) -> int:
        return self.table.count(member)

    def member_counts(self) -> dict[str, int]:
        return self.table.member_counts()

    def ownership_counts(self) -> tuple[int, int]:
        own = self._owners.get(self.instance_id, 0)
        return own, len(self.table) - own

    def foreign_counts(self) -> dict[str, int]:
        return {owner: n for owner, n in self._owners.items() if owner != self.instance_id}

    def call_ids(self) -> list[str]:
        return self.table.call_ids()

    def forget_foreign(self, call_id: str) -> bool:
        entry = self.table.entry(call_id)
        if entry is None or entry[OWNER] == self.instance_id:
            return False
        self._terminated[call_id] = (entry[OWNER], self.table.now())
        self._drop(call_id)
        return True

    def terminated_here(self, call_id: str) -> bool:
        """An operator terminated this FOREIGN call here and its owner still has it."""
        return call_id in self._terminated

    def drop_member(self, member: str) -> int:
        if not self.table.count(member):
            return 0               # no walk over the table for a member without sessions
        doomed = self.table.call_ids_of(member)
        for call_id in doomed:
            self.unbind(call_id)
        return len(doomed)

    def expire(self, now: float | None = None) -> int:
        doomed = self.table.unused_since(now)
        for call_id in doomed:
            self.unbind(call_id)
        expired = len(doomed)
        self._forget_terminated_before((self.table.now() if now is None else now) - self.table.ttl)
        if self.final_timeout > 0:
            expired += self._expire_final_slice()
        return expired

    def _expire_final_slice(self) -> int:
        """Ends the calls created more than `final_timeout` ago among the next
        FINAL_SCAN_SLICE call-ids of the pass under way (a new pass starts from a snapshot
        of the table when the last one is done)."""
        if self._final_pos >= len(self._final_scan):
            self._final_scan, self._final_pos = self.table.call_ids(), 0
        limit = self.wall_clock() - self.final_timeout
        end = self._final_pos + FINAL_SCAN_SLICE
        expired = 0
        for call_id in self._final_scan[self._final_pos:end]:
            entry = self.table.entry(call_id)
            if entry is not None and entry[CREATED] < limit:
                self.unbind(call_id)
                expired += 1
        if end >= len(self._final_scan):
            self._final_scan, end = [], 0
        self._final_pos = end
        return expired

    def describe(self, call_id: str) -> SessionInfo | None:
        entry = self.table.entry(call_id)
        return None if entry is None else self._info(call_id, entry)

    def listing(self, which: Which = 'all', limit: int | None = None,
                offset: int = 0) -> list[SessionInfo]:
        found: list[SessionInfo] = []
        skipped = 0
        for call_id, entry in self.table.entries():
            own = entry[OWNER] == self.instance_id
            if (which == 'own' and not own) or (which == 'foreign' and own):
                continue
            if skipped < offset:
                skipped += 1
                continue
            if limit is not None and len(found) >= limit:
                break
            found.append(self._info(call_id, entry))
        return found

    def resolve_unknown(self, call_id: str, then: Callable[[], None], *,
                        ends_call: bool = False) -> bool:
        return self._resolve(call_id, then, ends_call)

    def _info(self, call_id: str, entry: tuple) -> SessionInfo:
        member, last_used, from_tag, to_tag, owner, epoch, seq, created, updated, _ = entry
        return SessionInfo(call_id, member, from_tag, to_tag, last_used,
                           owner == self.instance_id, owner, epoch, seq, created, updated,
                           self.key_of(call_id, owner))

    # --- ownership -----------------------------------------------------------------------

    def is_own(self, call_id: str) -> bool:
        entry = self.table.entry(call_id)
        return entry is not None and entry[OWNER] == self.instance_id

    def _take_over(self, call_id: str, session: SharedSession) -> SharedSession:
        """Make `session` (the call's entry, maybe changed) own; returns the new entry."""
        self._count(session.owner, -1)
        self._count(self.instance_id, 1)
        session = session._replace(owner=self.instance_id, epoch=session.epoch + 1, seq=1,
                                   updated=self.wall_clock())
        self.table.replace(call_id, session)
        self.counters.takeovers += 1
        self._queue(call_id, session)
        return session

    def take_over_one(self, call_id: str, peer: str | None = None) -> bool:
        """Make one FOREIGN session (of `peer`, or of any peer) own; False if it is not one."""
        session = self.get(call_id)
        if session is None or session.owner == self.instance_id or (
                peer is not None and session.owner != peer):
            return False
        self._take_over(call_id, session)
        return True

    def take_over_all(self, peer: str | None = None) -> int:
        doomed = [c for c, e in self.table.entries()
                  if e[OWNER] != self.instance_id and (peer is None or e[OWNER] == peer)]
        for call_id in doomed:
            self.take_over_one(call_id)
        return len(doomed)

    def mapping_of(self, call_id: str, session: SharedSession,
                   state: str = ACTIVE_STATE) -> dict[str, str]:
        """The hash written for a session now: the fields of `Record.to_mapping`."""
        return LiveRecord(self, call_id, session, state)()

    def key_of(self, call_id: str, owner: str | None = None) -> str:
        """The Redis key of `call_id` in `owner`'s prefix (ours by default)."""
        if owner is None or owner == self.instance_id:
            return self._own_prefix + call_id
        return session_key(self.namespace, owner, self.cluster, call_id)

    def _queue(self, call_id: str, session: SharedSession) -> None:
        self.counters.writes_queued += 1
        self.write(self._own_prefix + call_id, LiveRecord(self, call_id, session))

    def _queue_delete(self, call_id: str, session: SharedSession) -> None:
        self.counters.writes_queued += 1
        if session.epoch == 1:
            self.write(self._own_prefix + call_id, None)
        else:
            # a previous owner's key may still exist: outrank it as long as it does
            self.write(self._own_prefix + call_id,
                       Tombstone(self, call_id, session._replace(seq=session.seq + 1)))

    def rewrite_all_own(self) -> int:
        """After a Redis restart: write every OWN session again."""
        return self.rewrite_own(self.call_ids())

    def rewrite_own(self, call_ids: Iterable[str]) -> int:
        """Write these sessions again, those still OWN; how many."""
        n = 0
        for call_id in call_ids:
            session = self.get(call_id)
            if session is not None and session.owner == self.instance_id:
                self._queue(call_id, session)
                n += 1
        return n

    def own_keys(self) -> list[str]:
        return [self.key_of(c) for c, e in self.table.entries() if e[OWNER] == self.instance_id]

    # --- learning from Redis -------------------------------------------------------------

    def apply_record(self, record: Record) -> bool:
        """A peer's record (or our own, at start-up); True if it changed the table."""
        current = self.get(record.cid)
        if current is not None and current.order >= record.order:
            return False
        if record.cid in self._terminated and current is None:
            if record.state == DELETED_STATE:
                del self._terminated[record.cid]     # its owner ended it too
            return False
        if record.owner != self.instance_id and not self.member_known(record.member):
            self.counters.unknown_members += 1
        if (current is not None and current.owner == self.instance_id
                and record.owner != self.instance_id):
            # split brain: a peer took the call over after us; it wins, we demote
            self.counters.demotions += 1
            self.write(self.key_of(record.cid), None)
        if record.state == DELETED_STATE:
            if current is not None:
                self._drop(record.cid)
            return current is not None
        session = SharedSession(record.member, self.table.now(), record.ftag or None,
                                record.ttag or None, record.owner, record.epoch, record.seq,
                                record.created, record.updated, record.maddr)
        self._put(record.cid, session)
        self.counters.applied += 1
        return True

    def apply_removal(self, call_id: str, peer: str) -> bool:
        """A peer's key disappeared: drop our copy only if that peer still owns it."""
        if self._terminated.get(call_id, ('',))[0] == peer:
            del self._terminated[call_id]          # its owner deleted it: nothing to hide
        entry = self.table.entry(call_id)
        if entry is None or entry[OWNER] != peer or peer == self.instance_id:
            return False
        self._drop(call_id)
        self.counters.removed_by_event += 1
        return True

    def _drop(self, call_id: str) -> None:
        entry = self.table.pop(call_id)
        if entry is None:
            return
        self._count(entry[OWNER], -1)
        if self.on_unbind is not None:
            self.on_unbind(call_id, entry[MEMBER])

    def _put(self, call_id: str, session: SharedSession) -> None:
        """Add or replace an entry, keeping the counts per owner."""
        old = self.table.entry(call_id)
        if old is not None:
            self._count(old[OWNER], -1)
        self.table.put(call_id, session)
        self._count(session.owner, 1)

    def _count(self, owner: str, change: int) -> None:
        left = self._owners.get(owner, 0) + change
        if left > 0:
            self._owners[owner] = left
        else:
            self._owners.pop(owner, None)

    def _forget_terminated_before(self, limit: float) -> None:
        """Terminated calls remembered since before `limit`: their records may come back."""
        terminated = self._terminated
        while terminated:
            call_id, (_, since) = next(iter(terminated.items()))
            if since > limit:
                break
            del terminated[call_id]

    def foreign_of(self, peer: str) -> list[str]:
        return [c for c, e in self.table.entries() if e[OWNER] == peer]

    def drop_foreign(self, peer: str | None = None) -> int:
        doomed = [c for c, e in self.table.entries()
                  if e[OWNER] != self.instance_id and (peer is None or e[OWNER] == peer)]
        for call_id in doomed:
            self._drop(call_id)
        return len(doomed)

    def drop_sessions_of(self, owner: str, call_ids: Iterable[str]) -> int:
        """Forget those of these sessions that `owner` (a peer) still owns; how many."""
        doomed = [c for c in call_ids if (s := self.get(c)) is not None and s.owner == owner
                  and owner != self.instance_id]
        for call_id in doomed:
            self._drop(call_id)
        return len(doomed)

    def drop_unseen(self, peer: str, seen: set[str], since: float) -> int:
        """After a full resync of `peer`: forget its sessions Redis no longer has."""
        doomed = [c for c, e in self.table.entries()
                  if e[OWNER] == peer and c not in seen and e[LAST_USED] < since]
        for call_id in doomed:
            self._drop(call_id)
        for call_id in [c for c, (owner, _) in self._terminated.items()
                        if owner == peer and c not in seen]:
            del self._terminated[call_id]          # its owner deleted it
        self.counters.removed_by_resync += len(doomed)
        return len(doomed)
