"""Session ownership: which member holds each call-id.

`SessionStore` is the interface the cluster routes with; `MemorySessionStore` keeps the
table in one process.  The Redis-backed store (session sharing between instances)
implements the same interface.

Every operation is O(1): one dict keyed by call-id, kept in last-use order so that aging
pops expired entries from the front without scanning.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from typing import Callable, Iterator, Protocol

DEFAULT_SESSION_TTL = 3600.0 * 4   # sessions unused this long are forgotten (lost `D`s)


class Session:
    """Routing entry of one call-id."""

    __slots__ = ('member', 'last_used', 'from_tag', 'to_tag')

    def __init__(self, member: str, last_used: float, from_tag: str | None = None,
                 to_tag: str | None = None) -> None:
        self.member = member
        self.last_used = last_used
        self.from_tag = from_tag
        self.to_tag = to_tag


class SessionStore(Protocol):
    def lookup(self, call_id: str) -> str | None:
        """Name of the member holding `call_id` (and mark it used), or None."""

    def bind(self, call_id: str, member: str, from_tag: str | None = None,
             to_tag: str | None = None) -> None:
        """Record that `member` holds `call_id` (new session, re-anchor or lookup result)."""

    def learn_to_tag(self, call_id: str, to_tag: str) -> None:
        """The answer side of a known session became known."""

    def unbind(self, call_id: str) -> str | None:
        """Forget `call_id`; returns the member that held it."""

    def count(self, member: str) -> int:
        """Live sessions bound to `member`."""

    def drop_member(self, member: str) -> int:
        """Forget every session of `member`; returns how many."""

    def expire(self, now: float | None = None) -> int:
        """Forget sessions unused for longer than the TTL; returns how many."""

    def __len__(self) -> int: ...


class MemorySessionStore:
    """In-process session table."""

    def __init__(self, ttl: float = DEFAULT_SESSION_TTL,
                 clock: Callable[[], float] = time.monotonic,
                 on_unbind: Callable[[str, str], None] | None = None) -> None:
        self.ttl = ttl
        self._clock = clock
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._counts: dict[str, int] = {}
        self.on_unbind = on_unbind   # called as on_unbind(call_id, member) for every removal

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, call_id: str) -> bool:
        return call_id in self._sessions

    def get(self, call_id: str) -> Session | None:
        return self._sessions.get(call_id)

    def lookup(self, call_id: str) -> str | None:
        session = self._sessions.get(call_id)
        if session is None:
            return None
        session.last_used = self._clock()
        self._sessions.move_to_end(call_id)
        return session.member

    def bind(self, call_id: str, member: str, from_tag: str | None = None,
             to_tag: str | None = None) -> None:
        sessions = self._sessions
        old = sessions.get(call_id)
        if old is not None:
            if old.member == member:
                old.last_used = self._clock()
                sessions.move_to_end(call_id)
                if to_tag is not None:
                    old.to_tag = to_tag
                return
            self._decrement(old.member)
            del sessions[call_id]
        sessions[call_id] = self._new_session(call_id, member, from_tag, to_tag, old)
        self._counts[member] = self._counts.get(member, 0) + 1

    def _new_session(self, call_id: str, member: str, from_tag: str | None, to_tag: str | None,
                     previous: Session | None) -> Session:
        return Session(member, self._clock(), from_tag, to_tag)

    def _insert(self, call_id: str, session: Session) -> None:
        """Add or replace an entry as it is (used by stores that learn sessions elsewhere)."""
        old = self._sessions.pop(call_id, None)
        if old is not None:
            self._decrement(old.member)
        self._sessions[call_id] = session
        self._counts[session.member] = self._counts.get(session.member, 0) + 1

    def _remove(self, call_id: str) -> Session | None:
        """Drop an entry without the unbind side effects."""
        session = self._sessions.pop(call_id, None)
        if session is not None:
            self._decrement(session.member)
        return session

    def learn_to_tag(self, call_id: str, to_tag: str) -> None:
        session = self._sessions.get(call_id)
        if session is not None and session.to_tag is None:
            session.to_tag = to_tag

    def unbind(self, call_id: str) -> str | None:
        session = self._sessions.pop(call_id, None)
        if session is None:
            return None
        self._decrement(session.member)
        if self.on_unbind is not None:
            self.on_unbind(call_id, session.member)
        return session.member

    def count(self, member: str) -> int:
        return self._counts.get(member, 0)

    def members(self) -> dict[str, int]:
        return dict(self._counts)

    def items(self) -> Iterator[tuple[str, Session]]:
        return iter(list(self._sessions.items()))

    def drop_member(self, member: str) -> int:
        doomed = [cid for cid, s in self._sessions.items() if s.member == member]
        for cid in doomed:
            self.unbind(cid)
        return len(doomed)

    def expire(self, now: float | None = None) -> int:
        now = self._clock() if now is None else now
        limit = now - self.ttl
        sessions = self._sessions
        expired = 0
        while sessions:
            call_id, session = next(iter(sessions.items()))
            if session.last_used > limit:
                break
            self.unbind(call_id)
            expired += 1
        return expired

    def _decrement(self, member: str) -> None:
        left = self._counts.get(member, 0) - 1
        if left > 0:
            self._counts[member] = left
        else:
            self._counts.pop(member, None)
