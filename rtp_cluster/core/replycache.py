"""The reply cache of a datagram control socket, bounded in bytes.

A retransmitted cookie must get the reply of its first copy and must not run twice.  Replies
live in two generations: `rotate()` (called every 10 s by the server) retires the older one,
so a reply is kept 10-20 s.  A generation that reaches half the byte budget is rotated at
once: a flood of unique cookies then shortens how long replies are kept instead of growing
memory, and the whole cache never holds more than `max_bytes`.  Retired generations are
dropped as a whole, so their memory goes back to the allocator.
"""
from __future__ import annotations

from typing import Hashable

__all__ = ['ReplyCache', 'DEFAULT_MAX_BYTES', 'MIN_MAX_BYTES', 'ENTRY_OVERHEAD']

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
# The smallest budget worth configuring: a generation must hold a burst of retransmits.
MIN_MAX_BYTES = 1024 * 1024
# Bytes an entry costs beyond its cookie and reply: the key tuple, the client address
# (tuple, host string, port), the reply's bytes header and the dict slot.  Measured with
# tracemalloc on CPython 3.11 (about 280) and rounded up.
ENTRY_OVERHEAD = 300


class ReplyCache:
    """`(cookie, client address) -> reply datagram`, at most `max_bytes` in all."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_bytes <= 0:
            raise ValueError('max_bytes must be positive')
        self.max_bytes = max_bytes
        self._current: dict[Hashable, bytes] = {}
        self._previous: dict[Hashable, bytes] = {}
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
        found = self._current.get(key)
        return found if found is not None else self._previous.get(key)

    def put(self, key: tuple[str, Hashable], reply: bytes) -> None:
        cost = len(key[0]) + len(reply) + ENTRY_OVERHEAD        # entry_cost, once per command
        if self._current_bytes + cost > self.max_bytes // 2 and self._current:
            self.early_rotations += 1
            self.rotate()
        old = self._current.get(key)
        if old is not None:
            self._current_bytes -= entry_cost(key, old)
        self._current[key] = reply
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


def entry_cost(key: tuple[str, Hashable], reply: bytes) -> int:
    return len(key[0]) + len(reply) + ENTRY_OVERHEAD
