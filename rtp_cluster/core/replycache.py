"""The reply cache of a datagram control socket, bounded in bytes.

A retransmitted cookie must get the reply of its first copy and must not run twice.  Replies
live in two generations: `rotate()` (called every 10 s by the server) retires the older one,
so a reply is kept 10-20 s.  A generation that reaches half the byte budget is rotated at
once: a flood of unique cookies then shortens how long replies are kept instead of growing
memory, and the whole cache never holds more than `max_bytes`.  Retired generations are
dropped as a whole, so their memory goes back to the allocator.

Entries are kept under one string per (cookie, client address), not under that tuple: a
tuple kept 10-20 s is an object the garbage collector tracks until its next young pass,
and with two of them per command those passes came every few thousand commands, each
walking tens of thousands of objects while the event loop waited.  A string is not
tracked at all.
"""
from __future__ import annotations

from typing import Hashable

__all__ = ['ReplyCache', 'DEFAULT_MAX_BYTES', 'MIN_MAX_BYTES', 'ENTRY_OVERHEAD', 'flat_key']

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
# The smallest budget worth configuring: a generation must hold a burst of retransmits.
MIN_MAX_BYTES = 1024 * 1024
# Bytes an entry costs beyond its cookie and reply: the key tuple, the client address
# (tuple, host string, port), the reply's bytes header and the dict slot.  Measured with
# tracemalloc on CPython 3.11 (about 280) and rounded up; the key is one string now (about
# 100 bytes less), the budget still counts the former cost.
ENTRY_OVERHEAD = 300


class ReplyCache:
    """`(cookie, client address) -> reply datagram`, at most `max_bytes` in all."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_bytes <= 0:
            raise ValueError('max_bytes must be positive')
        self.max_bytes = max_bytes
        self._current: dict[str, bytes] = {}
        self._previous: dict[str, bytes] = {}
        self._current_bytes = 0
        self._previous_bytes = 0
        self.early_rotations = 0      # generations retired because they were full

    @property
    def bytes(self) -> int:
        """The accounted size of both generations."""
        return self._current_bytes + self._previous_bytes

    def __len__(self) -> int:
        return len(self._current) + len(self._previous)

    def get(self, key: tuple[str, Hashable]) -> bytes | None:
        flat = flat_key(key)
        found = self._current.get(flat)
        return found if found is not None else self._previous.get(flat)

    def put(self, key: tuple[str, Hashable], reply: bytes) -> None:
        cost = len(key[0]) + len(reply) + ENTRY_OVERHEAD        # entry_cost, once per command
        if self._current_bytes + cost > self.max_bytes // 2 and self._current:
            self.early_rotations += 1
            self.rotate()
        flat = flat_key(key)
        old = self._current.get(flat)
        if old is not None:
            self._current_bytes -= entry_cost(key, old)
        self._current[flat] = reply
        self._current_bytes += cost

    def rotate(self) -> None:
        """Retire the older generation; the current one becomes the older."""
        self._previous, self._current = self._current, {}
        self._previous_bytes, self._current_bytes = self._current_bytes, 0

    def resize(self, max_bytes: int) -> None:
        """A new budget (reload); a smaller one is enforced by dropping whole generations."""
        if max_bytes <= 0:
            raise ValueError('max_bytes must be positive')
        self.max_bytes = max_bytes
        if self._current_bytes > max_bytes // 2:
            self._current, self._current_bytes = {}, 0
        if self._previous_bytes > max_bytes // 2:
            self._previous, self._previous_bytes = {}, 0


def flat_key(key: tuple[str, Hashable]) -> str:
    """(cookie, (host, port)) as one string, host first: a host holds no space, so the
    string tells every pair apart (whatever the cookie holds)."""
    cookie, addr = key
    return '%s %s %s' % (addr[0], addr[1], cookie)


def entry_cost(key: tuple[str, Hashable], reply: bytes) -> int:
    return len(key[0]) + len(reply) + ENTRY_OVERHEAD
