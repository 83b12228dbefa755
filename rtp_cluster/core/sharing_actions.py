"""What `SharingState` asks the Redis adapters to do (its actions), and who it is."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Union

from .sessions import DEFAULT_SESSION_TTL
from .sharing import LiveRecord

LOOKUP_DEADLINE = 0.2         # s; a lookup-on-miss never delays a command longer


@dataclass(frozen=True)
class Write:
    """Queue `op` for `key` in the writer (None deletes the key); `shadows`: for a tombstone,
    the call's keys in other prefixes that it must outlive."""
    key: str
    op: LiveRecord | None
    shadows: tuple[str, ...] = ()


@dataclass(frozen=True)
class Read:
    """HGETALL `keys`; results to `on_records(results, 'event')`."""
    keys: tuple[str, ...]


@dataclass(frozen=True)
class Lookup:
    """HGETALL `keys`; results to `on_lookup_result(token, ...)`, or `on_lookup_deadline(token)`
    after `deadline` seconds, whichever comes first."""
    token: int
    keys: tuple[str, ...]
    deadline: float = LOOKUP_DEADLINE


@dataclass(frozen=True)
class Resync:
    """Read every session and presence record of the namespace: records to
    `on_records(..., 'resync')`, then `on_resync_done`; `since` is the monotonic start."""
    since: float


@dataclass(frozen=True)
class LoadOwn:
    """Read our own prefix: records to `on_records(..., 'own')`, then `on_own_loaded()`."""


@dataclass(frozen=True)
class ListOwn:
    """List the keys of our own prefix; to `on_own_keys(keys)`."""


@dataclass(frozen=True)
class Subscribe:
    """(Re)subscribe to exactly these keyspace patterns (their keys, without the channel)."""
    patterns: tuple[str, ...]


@dataclass(frozen=True)
class WritePresence:
    key: str
    mapping: Mapping[str, str]
    ttl_ms: int


@dataclass(frozen=True)
class Refresh:
    keys: tuple[str, ...]


@dataclass(frozen=True)
class WhenFlushed:
    """Call `on_synced(run_id)` once everything queued so far is written."""
    run_id: str


@dataclass(frozen=True)
class Barrier:
    """Call `on_barrier(number)` once everything queued so far is written."""
    number: int


@dataclass(frozen=True)
class Continue:
    """Run `step` on a later reactor turn, and again while it returns True: work over every
    session, a slice per turn, so that the control path is served in between."""
    step: Callable[[], bool]


@dataclass(frozen=True)
class Resume:
    """Run `then` (a command waiting for a lookup-on-miss)."""
    then: Callable[[], None]


@dataclass(frozen=True)
class Log:
    level: str               # 'info', 'warn' or 'error'
    text: str                # a twisted.logger format string
    fields: Mapping[str, Any] = field(default_factory=dict)


Action = Union[Write, Read, Lookup, Resync, LoadOwn, ListOwn, Subscribe, WritePresence,
               Refresh, WhenFlushed, Barrier, Continue, Resume, Log]


@dataclass
class Identity:
    instance_id: str
    namespace: str
    peers: tuple[str, ...] = ()      # configured peers; none: follow every peer seen
    session_ttl: float = DEFAULT_SESSION_TTL
    resync_interval: float = 30.0
    final_timeout: float = 0.0
    version: str = ''
    degraded_after: int = 1          # consecutive write errors before reporting degraded
