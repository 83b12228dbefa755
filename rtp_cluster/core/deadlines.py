"""Deadlines that are all the same delay away: a FIFO and one timer, not one timer each.

A `D` must be answered within DELETE_DEADLINE even when its member is silent.  One timer per
command costs the event loop a timer object, a heap push and, after the member answered, a
cancellation (Twisted rebuilds its heap once enough are cancelled).  With one delay for
every entry the deadlines arrive in the order the entries were added, so a deque holds them
in deadline order and one timer, armed for the oldest, serves them all: O(1) per entry.

An entry answered before its deadline stays queued until then (its `expire()` does nothing):
at most the entries of one delay are held.  The timer runs at most once per `resolution`
seconds (entries arrive all the time under load; re-arming it for each next deadline would be
one timer per entry again), so an entry expires up to `resolution` after its deadline.
"""
from __future__ import annotations

from collections import deque
from typing import Protocol


class Expiring(Protocol):
    def expire(self) -> None:
        """The deadline passed (called once, for an entry that may have been answered)."""


DEFAULT_RESOLUTION = 0.02      # s


class DeadlineQueue:
    """Calls `entry.expire()` `delay` seconds (plus at most `resolution`) after `add(entry)`,
    on an injected clock."""

    def __init__(self, clock, delay: float, resolution: float = DEFAULT_RESOLUTION) -> None:
        self.clock = clock
        self.delay = delay
        self.resolution = resolution
        self._entries: deque[tuple[float, Expiring]] = deque()
        self._timer = None

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, entry: Expiring) -> None:
        self._entries.append((self.clock.seconds() + self.delay, entry))
        if self._timer is None:
            self._timer = self.clock.callLater(self.delay, self._run)

    def _run(self) -> None:
        self._timer = None
        entries = self._entries
        now = self.clock.seconds()
        while entries and entries[0][0] <= now:
            entries.popleft()[1].expire()
        if entries and self._timer is None:
            wait = max(self.resolution, entries[0][0] - now)
            self._timer = self.clock.callLater(wait, self._run)
