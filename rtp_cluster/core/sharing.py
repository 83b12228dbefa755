"""Session ownership shared between rtp_cluster instances: the part without I/O.

Each instance writes its OWN sessions under its own key prefix and learns its peers'
sessions (FOREIGN) from Redis.  Routing treats both alike; ownership decides who writes,
refreshes and deletes a record.  Conflicts are ordered by (epoch, seq, owner), never by
clocks: epoch grows on every takeover, seq on every change within an epoch.

Key of a session: `{ns}:s:{instance}:{cluster}:{call-id}`; it is a Redis hash whose
fields are those of `Record`.  `SharedSessionStore` is the cluster's session store with
ownership; it hands every change of an OWN session to a writer (`queue_write`) and never
waits for it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Mapping

from .sessions import DEFAULT_SESSION_TTL, MemorySessionStore, Session

RECORD_VERSION = 1
_VERSION_TEXT = str(RECORD_VERSION)
MAX_CALL_ID = 512
MAX_FIELD = 1024
ACTIVE_STATE = 'active'
DELETED_STATE = 'deleted'
_FIELDS = ('v', 'cid', 'cluster', 'member', 'maddr', 'ftag', 'ttag', 'created', 'updated',
           'owner', 'epoch', 'seq', 'state')


def session_key(namespace: str, owner: str, cluster: str, call_id: str) -> str:
    return '%s:s:%s:%s:%s' % (namespace, owner, cluster, call_id)


def session_prefix(namespace: str, owner: str) -> str:
    return '%s:s:%s:' % (namespace, owner)


def presence_key(namespace: str, instance: str) -> str:
    return '%s:n:%s' % (namespace, instance)


def key_owner(namespace: str, key: str) -> str | None:
    """The instance part of a session key, or None if `key` is not a session key."""
    prefix = namespace + ':s:'
    if not key.startswith(prefix):
        return None
    owner, sep, _ = key[len(prefix):].partition(':')
    return owner if sep and owner else None


@dataclass(frozen=True)
class Record:
    cid: str
    cluster: str
    member: str
    maddr: str
    ftag: str
    ttag: str
    created: float
    updated: float
    owner: str
    epoch: int
    seq: int
    state: str = ACTIVE_STATE

    @property
    def order(self) -> tuple[int, int, str]:
        return self.epoch, self.seq, self.owner

    def to_mapping(self) -> dict[str, str]:
        return {'v': str(RECORD_VERSION), 'cid': self.cid, 'cluster': self.cluster,
                'member': self.member, 'maddr': self.maddr, 'ftag': self.ftag,
                'ttag': self.ttag, 'created': '%.3f' % self.created,
                'updated': '%.3f' % self.updated, 'owner': self.owner,
                'epoch': str(self.epoch), 'seq': str(self.seq), 'state': self.state}


class BadRecord(ValueError):
    """A record in Redis that cannot be used; the message says why."""


def decode_record(key: str, namespace: str, raw: Mapping) -> Record:
    """Validate a hash read from Redis (bytes or str); raises BadRecord."""
    if not raw:
        raise BadRecord('empty or missing')
    fields: dict[str, str] = {}
    for name, value in raw.items():
        name = name.decode('latin-1') if isinstance(name, bytes) else str(name)
        value = value.decode('latin-1') if isinstance(value, bytes) else str(value)
        if len(value) > MAX_FIELD:
            raise BadRecord('field %s is %d bytes long' % (name[:40], len(value)))
        fields[name] = value
    missing = [f for f in _FIELDS if f not in fields]
    if missing:
        raise BadRecord('missing fields: %s' % ', '.join(missing))
    try:
        version, epoch, seq = int(fields['v']), int(fields['epoch']), int(fields['seq'])
        created, updated = float(fields['created']), float(fields['updated'])
    except ValueError as exc:
        raise BadRecord('bad number: %s' % exc) from None
    if version < 1 or epoch < 1 or seq < 1:
        raise BadRecord('version, epoch and seq must be positive')
    owner = key_owner(namespace, key)
    if owner is None or owner != fields['owner']:
        raise BadRecord('owner %r does not match the key' % fields['owner'][:64])
    if fields['state'] not in (ACTIVE_STATE, DELETED_STATE):
        raise BadRecord('unknown state %r' % fields['state'][:20])
    cid, cluster = fields['cid'], fields['cluster']
    if not cid or len(cid) > MAX_CALL_ID or not fields['member']:
        raise BadRecord('bad call-id or member')
    if key != session_key(namespace, owner, cluster, cid):
        raise BadRecord('call-id/cluster do not match the key')
    return Record(cid, cluster, fields['member'], fields['maddr'], fields['ftag'],
                  fields['ttag'], created, updated, owner, epoch, seq, fields['state'])


class SharedSession(Session):
    __slots__ = ('owner', 'epoch', 'seq', 'created', 'updated')

    def __init__(self, member: str, last_used: float, from_tag: str | None, to_tag: str | None,
                 owner: str, epoch: int, seq: int, created: float, updated: float) -> None:
        super().__init__(member, last_used, from_tag, to_tag)
        self.owner = owner
        self.epoch = epoch
        self.seq = seq
        self.created = created
        self.updated = updated

    @property
    def order(self) -> tuple[int, int, str]:
        return self.epoch, self.seq, self.owner


# (key, thunk | None): the thunk builds the hash to write when the writer gets to the key,
# so changes that coalesce cost one record; None deletes the key
WriteOp = Callable[[str, Callable[[], dict] | None], None]


class Tombstone:
    """The write of a deleted, taken-over call: its record (state `deleted`) must outrank
    the older keys other instances may still hold for the call, and only while they live."""

    __slots__ = ('build',)

    def __init__(self, build: Callable[[], dict]) -> None:
        self.build = build

    def __call__(self) -> dict:
        return self.build()


class SharingCounters:
    __slots__ = ('takeovers', 'demotions', 'conflicts', 'applied', 'removed_by_event',
                 'removed_by_resync', 'bad_records', 'unknown_members', 'writes_queued',
                 'lookups_on_miss')

    def __init__(self) -> None:
        for name in self.__slots__:
            setattr(self, name, 0)

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


class SharedSessionStore(MemorySessionStore):
    """A cluster's session table with OWN/FOREIGN ownership, written behind to Redis."""

    def __init__(self, cluster: str, instance_id: str, namespace: str, write: WriteOp,
                 member_address: Callable[[str], str | None], *,
                 ttl: float = DEFAULT_SESSION_TTL, final_timeout: float = 0.0,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time,
                 counters: SharingCounters | None = None) -> None:
        super().__init__(ttl=ttl, clock=clock)
        self.cluster = cluster
        self.instance_id = instance_id
        self.namespace = namespace
        self.write = write
        self.member_address = member_address
        self.final_timeout = final_timeout
        self.wall_clock = wall_clock
        self.counters = counters or SharingCounters()
        # set by the Redis layer: resolve_unknown(call_id, then) -> bool (see lookup_unknown)
        self.resolve_unknown: Callable[[str, Callable[[], None]], bool] | None = None
        self._own_prefix = session_key(namespace, instance_id, cluster, '')

    @property
    def aging_interval(self) -> float:
        """How often `expire` must run: fine enough for `final_timeout` to be kept."""
        if self.final_timeout > 0:
            return min(60.0, max(1.0, self.final_timeout / 10.0))
        return 60.0

    # --- the routing interface ----------------------------------------------------------------

    def lookup(self, call_id: str) -> str | None:
        session = self._sessions.get(call_id)
        if session is None:
            return None
        if session.owner != self.instance_id:
            self._take_over(call_id, session)
        session.last_used = self._clock()
        self._sessions.move_to_end(call_id)
        return session.member

    def _new_session(self, call_id, member, from_tag, to_tag, previous) -> SharedSession:
        now = self.wall_clock()
        epoch = previous.epoch + 1 if previous is not None else 1
        session = SharedSession(member, self._clock(), from_tag, to_tag, self.instance_id,
                                epoch, 1, now, now)
        self._queue(call_id, session)
        return session

    def bind(self, call_id: str, member: str, from_tag: str | None = None,
             to_tag: str | None = None) -> None:
        old = self._sessions.get(call_id)
        if old is not None and old.member == member and old.owner == self.instance_id:
            super().bind(call_id, member, from_tag, to_tag)
            return
        if old is not None and old.member == member:
            self._take_over(call_id, old)
            return
        super().bind(call_id, member, from_tag, to_tag)

    def learn_to_tag(self, call_id: str, to_tag: str) -> None:
        session = self._sessions.get(call_id)
        if session is not None and session.to_tag is None:
            session.to_tag = to_tag
            if session.owner == self.instance_id:
                session.seq += 1
                session.updated = self.wall_clock()
                self._queue(call_id, session)

    def unbind(self, call_id: str) -> str | None:
        session = self._sessions.get(call_id)
        if session is not None and session.owner == self.instance_id:
            self._queue_delete(call_id, session)
        return super().unbind(call_id)

    def expire(self, now: float | None = None) -> int:
        expired = super().expire(now)
        if self.final_timeout > 0:
            limit = self.wall_clock() - self.final_timeout
            for call_id in [c for c, s in self._sessions.items() if s.created < limit]:
                self.unbind(call_id)
                expired += 1
        return expired

    # --- ownership -----------------------------------------------------------------------------

    def _take_over(self, call_id: str, session: SharedSession) -> None:
        session.owner = self.instance_id
        session.epoch += 1
        session.seq = 1
        session.updated = self.wall_clock()
        self.counters.takeovers += 1
        self._queue(call_id, session)

    def take_over_all(self, peer: str | None = None) -> int:
        taken = 0
        for call_id, session in list(self._sessions.items()):
            if session.owner != self.instance_id and (peer is None or session.owner == peer):
                self._take_over(call_id, session)
                taken += 1
        return taken

    def mapping_of(self, call_id: str, session: SharedSession,
                   state: str = ACTIVE_STATE) -> dict[str, str]:
        """The hash written for a session: the fields of `Record.to_mapping`, built directly
        from the session (no Record on the write path)."""
        return {'v': _VERSION_TEXT, 'cid': call_id, 'cluster': self.cluster,
                'member': session.member, 'maddr': self.member_address(session.member) or '',
                'ftag': session.from_tag or '', 'ttag': session.to_tag or '',
                'created': '%.3f' % session.created, 'updated': '%.3f' % session.updated,
                'owner': session.owner, 'epoch': str(session.epoch), 'seq': str(session.seq),
                'state': state}

    def key_of(self, call_id: str, owner: str | None = None) -> str:
        """The Redis key of `call_id` in `owner`'s prefix (ours by default)."""
        if owner is None or owner == self.instance_id:
            return self._own_prefix + call_id
        return session_key(self.namespace, owner, self.cluster, call_id)

    def _queue(self, call_id: str, session: SharedSession) -> None:
        self.counters.writes_queued += 1
        # built when written: by then it is the session's latest state, or a newer write
        # of the key (or a delete) has replaced this one
        self.write(self._own_prefix + call_id, lambda: self.mapping_of(call_id, session))

    def _queue_delete(self, call_id: str, session: SharedSession) -> None:
        self.counters.writes_queued += 1
        if session.epoch == 1:
            self.write(self._own_prefix + call_id, None)
        else:
            # a previous owner's key may still exist: outrank it as long as it does
            session.seq += 1
            self.write(self._own_prefix + call_id,
                       Tombstone(lambda: self.mapping_of(call_id, session, DELETED_STATE)))

    def rewrite_all_own(self) -> int:
        """After a Redis restart: write every OWN session again."""
        n = 0
        for call_id, session in self._sessions.items():
            if session.owner == self.instance_id:
                self._queue(call_id, session)
                n += 1
        return n

    def own_keys(self) -> list[str]:
        return [self.key_of(c) for c, s in self._sessions.items() if s.owner == self.instance_id]

    # --- learning from Redis ---------------------------------------------------------------------

    def apply_record(self, record: Record) -> bool:
        """A peer's record (or our own, at start-up); True if it changed the table."""
        current = self._sessions.get(record.cid)
        if current is not None and current.order >= record.order:
            return False
        if record.owner != self.instance_id and self.member_address(record.member) is None:
            self.counters.unknown_members += 1
        if current is not None and current.owner == self.instance_id and record.owner != self.instance_id:
            # split brain: a peer took the call over after us; it wins, we demote
            self.counters.demotions += 1
            self.write(self.key_of(record.cid), None)
        if record.state == DELETED_STATE:
            if current is not None:
                self._drop(record.cid)
            return current is not None
        session = SharedSession(record.member, self._clock(), record.ftag or None,
                                record.ttag or None, record.owner, record.epoch, record.seq,
                                record.created, record.updated)
        self._insert(record.cid, session)
        self.counters.applied += 1
        return True

    def apply_removal(self, call_id: str, peer: str) -> bool:
        """A peer's key disappeared: drop our copy only if that peer still owns it."""
        session = self._sessions.get(call_id)
        if session is None or session.owner != peer or peer == self.instance_id:
            return False
        self._drop(call_id)
        self.counters.removed_by_event += 1
        return True

    def _drop(self, call_id: str) -> None:
        session = self._remove(call_id)
        if session is not None and self.on_unbind is not None:
            self.on_unbind(call_id, session.member)

    def foreign_of(self, peer: str) -> list[str]:
        return [c for c, s in self._sessions.items() if s.owner == peer]

    def drop_foreign(self, peer: str | None = None) -> int:
        doomed = [c for c, s in self._sessions.items()
                  if s.owner != self.instance_id and (peer is None or s.owner == peer)]
        for call_id in doomed:
            self._drop(call_id)
        return len(doomed)

    def drop_unseen(self, peer: str, seen: set[str], since: float) -> int:
        """After a full resync of `peer`: forget its sessions Redis no longer has."""
        doomed = [c for c, s in self._sessions.items()
                  if s.owner == peer and c not in seen and s.last_used < since]
        for call_id in doomed:
            self._drop(call_id)
        self.counters.removed_by_resync += len(doomed)
        return len(doomed)

    def ownership_counts(self) -> tuple[int, int]:
        own = sum(1 for s in self._sessions.values() if s.owner == self.instance_id)
        return own, len(self._sessions) - own
