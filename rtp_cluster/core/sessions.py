"""Session ownership: which member holds each call-id.

`SessionStore` is the interface the cluster routes with and the admin socket reads; it names
every capability either uses.  `MemorySessionStore` keeps the table in one process; the
shared store (`sharing.SharedSessionStore`, session sharing between instances) implements the
same interface around a `MemorySessionStore` of its own.

Every routing operation is O(1): one dict keyed by call-id, kept in last-use order so that
aging pops expired entries from the front without scanning.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from itertools import islice
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Literal, NamedTuple, Protocol

DEFAULT_SESSION_TTL = 3600.0 * 4   # sessions unused this long are forgotten (lost `D`s)
SESSION_AGING_INTERVAL = 60.0      # how often a store without other needs is aged

Which = Literal['all', 'own', 'foreign']


class Session(NamedTuple):
    """Routing entry of one call-id, as the store hands it out (a copy: it does not follow
    changes).  The table itself holds each entry as a plain tuple of these fields, replaced
    on every change (see `MemorySessionStore`)."""

    member: str
    last_used: float
    from_tag: str | None = None
    to_tag: str | None = None


# positions of the fields in a table entry (the same in SharedSession's longer entries)
MEMBER, LAST_USED, FROM_TAG, TO_TAG = range(4)


@dataclass(frozen=True)
class SessionInfo:
    """What the admin socket shows of one session (a copy: it does not follow changes)."""
    call_id: str
    member: str
    from_tag: str | None
    to_tag: str | None
    last_used: float          # on the store's monotonic clock
    own: bool                 # written by this instance (always, without sharing)
    owner: str                # the instance that owns it; '' without sharing
    epoch: int | None = None
    seq: int | None = None
    created: float | None = None
    updated: float | None = None
    key: str = ''             # where it is published ('' when it is not)


class SessionStore(Protocol):
    """Everything the cluster and the admin socket may ask of a session table."""

    # set by the owner of the store: on_unbind(call_id, member) after every removal;
    # member_known(name) tells whether a member is configured here
    on_unbind: Callable[[str, str], None] | None
    member_known: Callable[[str], bool]

    def lookup(self, call_id: str) -> str | None:
        """Name of the member holding `call_id` (and mark it used), or None."""

    def bind(self, call_id: str, member: str, from_tag: str | None = None,
             to_tag: str | None = None, *, address: str = '') -> None:
        """Record that `member` (control address `address`) holds `call_id`."""

    def learn_to_tag(self, call_id: str, to_tag: str) -> None:
        """The answer side of a known session became known."""

    def unbind(self, call_id: str) -> str | None:
        """Forget `call_id`; returns the member that held it."""

    def count(self, member: str) -> int:
        """Live sessions bound to `member`."""

    def member_counts(self) -> dict[str, int]:
        """Live sessions per member."""

    def ownership_counts(self) -> tuple[int, int]:
        """(own, foreign) sessions: counts kept as the table changes, never counted."""

    def foreign_counts(self) -> dict[str, int]:
        """FOREIGN sessions per owning instance (kept, not counted); {} without sharing."""

    def call_ids(self) -> list[str]:
        """A snapshot of every call-id, to walk the table in slices (bulk.py): a copy made
        without a Python loop (milliseconds for 200,000), in the order they were bound."""

    def forget_foreign(self, call_id: str) -> bool:
        """An operator terminated a FOREIGN session: forget it here and keep it forgotten
        (its owner's records of it are not applied again until the owner deletes it or the
        TTL passes).  False when `call_id` is not a FOREIGN session."""

    def drop_member(self, member: str) -> int:
        """Forget every session of `member`; returns how many."""

    @property
    def aging_interval(self) -> float:
        """How often `expire` must run."""

    def expire(self, now: float | None = None) -> int:
        """Forget sessions unused for longer than the TTL; returns how many."""

    def describe(self, call_id: str) -> SessionInfo | None:
        """Everything known about one session, or None."""

    def listing(self, which: Which = 'all', limit: int | None = None,
                offset: int = 0) -> list[SessionInfo]:
        """A page of sessions (own, foreign or all), oldest use first."""

    def resolve_unknown(self, call_id: str, then: Callable[[], None], *,
                        ends_call: bool = False) -> bool:
        """A command for an unknown call-id (`ends_call`: a `D` that ends it): look for it
        elsewhere and `then()` when done; False (and `then` is never called) when there is
        nowhere else to look."""

    def __len__(self) -> int: ...

    def __contains__(self, call_id: str) -> bool: ...


def _all_members_known(name: str) -> bool:
    return True


class MemorySessionStore:
    """In-process session table.

    Each entry is a plain tuple of atomic values (strings, numbers, None), replaced as a
    whole when the session changes.  CPython's cyclic garbage collector stops tracking such
    tuples after their first collection, so its full passes, which hold the event loop for
    as long as they walk every tracked object, do not grow with the sessions (an object
    with attributes would be walked on every pass: a tenth of a second at 200,000).
    `entry_type` is the view `get` and `view` hand out (a NamedTuple of the entry's fields).
    """

    aging_interval = SESSION_AGING_INTERVAL

    def __init__(self, ttl: float = DEFAULT_SESSION_TTL,
                 clock: Callable[[], float] = time.monotonic,
                 on_unbind: Callable[[str, str], None] | None = None,
                 entry_type: Callable[[tuple], Any] = Session._make) -> None:
        self.ttl = ttl
        self._clock = clock
        self._sessions: OrderedDict[str, tuple] = OrderedDict()
        self._counts: dict[str, int] = {}
        self._entry_type = entry_type
        self.on_unbind = on_unbind   # called as on_unbind(call_id, member) for every removal
        self.member_known: Callable[[str], bool] = _all_members_known

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, call_id: str) -> bool:
        return call_id in self._sessions

    def entry(self, call_id: str) -> tuple | None:
        """The table's own tuple for `call_id` (fields as in `Session`), or None."""
        return self._sessions.get(call_id)

    def get(self, call_id: str) -> Any:
        """A copy of the entry of `call_id` as `entry_type` (a `Session`), or None."""
        entry = self._sessions.get(call_id)
        return None if entry is None else self._entry_type(entry)

    def now(self) -> float:
        return self._clock()

    def lookup(self, call_id: str) -> str | None:
        # touch() inlined (the positions spelt out): this runs for most commands
        sessions = self._sessions
        entry = sessions.get(call_id)
        if entry is None:
            return None
        sessions[call_id] = (entry[0], self._clock()) + entry[2:]
        sessions.move_to_end(call_id)
        return entry[0]

    def touch(self, call_id: str, entry: tuple) -> None:
        """Mark a session used now (it moves to the back of the aging order); `entry` is
        its current tuple, or a changed one to store instead (same member)."""
        self._sessions[call_id] = (entry[MEMBER], self._clock()) + entry[FROM_TAG:]
        self._sessions.move_to_end(call_id)

    def bind(self, call_id: str, member: str, from_tag: str | None = None,
             to_tag: str | None = None, *, address: str = '') -> None:
        old = self._sessions.get(call_id)
        if old is not None and old[MEMBER] == member:
            self.touch(call_id, old if to_tag is None else with_field(old, TO_TAG, to_tag))
            return
        self.put(call_id, (member, self._clock(), from_tag, to_tag))

    def put(self, call_id: str, entry: tuple) -> None:
        """Add or replace an entry as it is, at the back of the aging order (no unbind side
        effects for the one replaced)."""
        old = self._sessions.pop(call_id, None)
        if old is not None:
            self._decrement(old[MEMBER])
        self._sessions[call_id] = _plain(entry)
        self._counts[entry[MEMBER]] = self._counts.get(entry[MEMBER], 0) + 1

    def replace(self, call_id: str, entry: tuple) -> None:
        """A changed entry for a known `call_id`, in its place in the aging order."""
        old = self._sessions[call_id]
        self._sessions[call_id] = _plain(entry)
        if old[MEMBER] != entry[MEMBER]:
            self._decrement(old[MEMBER])
            self._counts[entry[MEMBER]] = self._counts.get(entry[MEMBER], 0) + 1

    def pop(self, call_id: str) -> tuple | None:
        """Drop an entry without the unbind side effects; returns its tuple."""
        entry = self._sessions.pop(call_id, None)
        if entry is not None:
            self._decrement(entry[MEMBER])
        return entry

    def learn_to_tag(self, call_id: str, to_tag: str) -> None:
        entry = self._sessions.get(call_id)
        if entry is not None and entry[TO_TAG] is None:
            self._sessions[call_id] = with_field(entry, TO_TAG, to_tag)

    def unbind(self, call_id: str) -> str | None:
        entry = self.pop(call_id)
        if entry is None:
            return None
        if self.on_unbind is not None:
            self.on_unbind(call_id, entry[MEMBER])
        return entry[MEMBER]

    def count(self, member: str) -> int:
        return self._counts.get(member, 0)

    def member_counts(self) -> dict[str, int]:
        return dict(self._counts)

    members = member_counts

    def ownership_counts(self) -> tuple[int, int]:
        return len(self._sessions), 0

    def foreign_counts(self) -> dict[str, int]:
        return {}

    def call_ids(self) -> list[str]:
        # the dict's own key order (binding order): an OrderedDict's linked order costs a
        # Python-speed walk, ten times longer at 200,000 sessions
        return list(dict.keys(self._sessions))

    def forget_foreign(self, call_id: str) -> bool:
        return False               # every session is this instance's own

    def items(self) -> Iterator[tuple[str, Any]]:
        """A snapshot of (call-id, entry as `entry_type`), oldest use first."""
        make = self._entry_type
        return iter([(call_id, make(entry)) for call_id, entry in self._sessions.items()])

    def view(self) -> Iterator[tuple[str, Any]]:
        """(call-id, entry as `entry_type`), oldest use first, read as it is iterated:
        nothing may be added or removed meanwhile."""
        make = self._entry_type
        return ((call_id, make(entry)) for call_id, entry in self._sessions.items())

    def entries(self) -> Iterable[tuple[str, tuple]]:
        """A live view of (call-id, the table's tuple), oldest use first, for walks that
        read fields by position: nothing may be added or removed while it is iterated."""
        return self._sessions.items()

    def call_ids_of(self, member: str) -> list[str]:
        return [cid for cid, entry in self._sessions.items() if entry[MEMBER] == member]

    def drop_member(self, member: str) -> int:
        if not self._counts.get(member):
            return 0               # no walk over the table for a member without sessions
        doomed = self.call_ids_of(member)
        for cid in doomed:
            self.unbind(cid)
        return len(doomed)

    def unused_since(self, now: float | None = None) -> list[str]:
        """Call-ids unused for longer than the TTL (from the front: no scan)."""
        limit = (self._clock() if now is None else now) - self.ttl
        found = []
        for call_id, entry in self._sessions.items():
            if entry[LAST_USED] > limit:
                break
            found.append(call_id)
        return found

    def expire(self, now: float | None = None) -> int:
        doomed = self.unused_since(now)
        for call_id in doomed:
            self.unbind(call_id)
        return len(doomed)

    def describe(self, call_id: str) -> SessionInfo | None:
        entry = self._sessions.get(call_id)
        return None if entry is None else self._info(call_id, entry)

    def listing(self, which: Which = 'all', limit: int | None = None,
                offset: int = 0) -> list[SessionInfo]:
        if which == 'foreign':
            return []
        end = None if limit is None else offset + limit
        return [self._info(c, e) for c, e in islice(self._sessions.items(), offset, end)]

    def resolve_unknown(self, call_id: str, then: Callable[[], None], *,
                        ends_call: bool = False) -> bool:
        return False               # the table is all there is

    @staticmethod
    def _info(call_id: str, entry: tuple) -> SessionInfo:
        return SessionInfo(call_id, entry[MEMBER], entry[FROM_TAG], entry[TO_TAG],
                           entry[LAST_USED], True, '')

    def _decrement(self, member: str) -> None:
        left = self._counts.get(member, 0) - 1
        if left > 0:
            self._counts[member] = left
        else:
            self._counts.pop(member, None)


def with_field(entry: tuple, index: int, value: Any) -> tuple:
    """A copy of a table entry with one field changed."""
    return entry[:index] + (value,) + entry[index + 1:]


def _plain(entry: tuple) -> tuple:
    """The entry as a plain tuple: the collector stops tracking those, not a NamedTuple."""
    return entry if type(entry) is tuple else tuple(entry)
