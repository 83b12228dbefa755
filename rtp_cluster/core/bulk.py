"""Work over every session a slice at a time, so that no admin command holds the reactor.

At 200,000 sessions one pass over a table costs the reactor tenths of a second, and a
terminate that sends a `D` per session tens of seconds; a SIP proxy takes an RTPproxy for
dead after a few seconds without answers.  So bulk work is cut into slices:

- `SessionWalk` visits the sessions of one or more stores from a snapshot of their
  call-ids, taken when it reaches each store (`SessionStore.call_ids`, a copy without a
  Python loop): sessions bound later are not visited, sessions gone meanwhile are skipped;
- `TerminateJob` ends the sessions it walks: an own session gets the `D` a client would
  send (through its cluster), a FOREIGN one is forgotten here and stays forgotten;
- `TakeoverJob` makes the FOREIGN sessions of a peer (or of every peer) own;
- `GroupedWalk` hands the sessions it walks to a function, a slice at a time, grouped by
  store (the sharing core's TTL refresh and rewrite of own sessions).

Each `step(size)` does one slice and says whether more is left; the caller (an adapter)
decides when the next slice runs, so the pace is the adapter's: see admin_sessions.py.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterable, Mapping

from .sessions import SessionInfo, SessionStore, Which

if TYPE_CHECKING:
    from .cluster import Cluster
    from .sharing import SharedSessionStore

__all__ = ['SessionWalk', 'GroupedWalk', 'TerminateJob', 'TakeoverJob', 'count_sessions',
           'WHICH']

WHICH: tuple[Which, ...] = ('all', 'own', 'foreign')


def count_sessions(store: SessionStore, which: Which = 'all') -> int:
    """The sessions of `store` that `which` selects, from the counts the store keeps."""
    own, foreign = store.ownership_counts()
    return {'all': own + foreign, 'own': own, 'foreign': foreign}[which]


def _selected(info: SessionInfo, which: Which) -> bool:
    return which == 'all' or info.own == (which == 'own')


class SessionWalk:
    """The sessions of `stores` ((name, store) pairs) that `which` selects, a slice at a time."""

    def __init__(self, stores: Iterable[tuple[str, SessionStore]], which: Which = 'all') -> None:
        self.which = which
        self._stores = list(stores)
        self._next_store = 0
        self._name = ''
        self._store: SessionStore | None = None
        self._ids: list[str] = []
        self._pos = 0
        self.visited = 0                # call-ids looked at so far

    @property
    def done(self) -> bool:
        return self._pos >= len(self._ids) and self._next_store >= len(self._stores)

    def left(self) -> int:
        """Call-ids not looked at yet (a store not reached yet counts its sessions now)."""
        ahead = sum(len(store) for _, store in self._stores[self._next_store:])
        return len(self._ids) - self._pos + ahead

    def next_slice(self, size: int) -> list[tuple[str, SessionInfo]]:
        """Look at up to `size` more call-ids; (store name, session) of those still known
        and selected."""
        found: list[tuple[str, SessionInfo]] = []
        budget = size
        while budget > 0 and (self._pos < len(self._ids) or self._advance()):
            end = min(len(self._ids), self._pos + budget)
            describe, which = self._store.describe, self.which
            for call_id in self._ids[self._pos:end]:
                info = describe(call_id)
                if info is not None and _selected(info, which):
                    found.append((self._name, info))
            budget -= end - self._pos
            self.visited += end - self._pos
            self._pos = end
        return found

    def _advance(self) -> bool:
        """Snapshot the next store with sessions; False when every store is done."""
        self._ids, self._pos = [], 0
        while self._next_store < len(self._stores):
            self._name, self._store = self._stores[self._next_store]
            self._next_store += 1
            if count_sessions(self._store, self.which):
                self._ids = self._store.call_ids()
                return True
        return False


class GroupedWalk:
    """`visit(store name, sessions)` for the sessions of `stores` that `which` selects, `size`
    sessions per `step()`, grouped by store; `then()` after the last.  `step` says whether
    more is left (the caller runs it again on a later turn)."""

    def __init__(self, stores: Iterable[tuple[str, SessionStore]],
                 visit: Callable[[str, list[SessionInfo]], None],
                 then: Callable[[], None] = lambda: None, which: Which = 'all',
                 size: int = 2000) -> None:
        self.walk = SessionWalk(stores, which)
        self.visit = visit
        self.then = then
        self.size = size

    def step(self) -> bool:
        groups: dict[str, list[SessionInfo]] = {}
        for name, info in self.walk.next_slice(self.size):
            groups.setdefault(name, []).append(info)
        for name, infos in groups.items():
            self.visit(name, infos)
        if self.walk.done:
            self.then()
        return not self.walk.done


Refusal = Callable[[str, str], None]


class TerminateJob:
    """`terminate all|own|foreign` over `clusters` (name -> Cluster, as the runtime has them).

    An own session is ended as a client's full `D` would end it (the member is told, the
    shared record deleted); a FOREIGN one is forgotten here, and its owner's records are
    not applied again (`SessionStore.forget_foreign`).  A cluster that is replaced or
    removed while the job runs is left alone from then on.
    """

    def __init__(self, clusters: Mapping[str, 'Cluster'], which: Which,
                 on_refusal: Refusal | None = None) -> None:
        self.which = which
        self.name = 'terminate ' + which
        self.live = clusters
        self._clusters = dict(clusters)
        self.on_refusal = on_refusal
        self.total = sum(count_sessions(c.store, which) for c in self._clusters.values())
        self.walk = SessionWalk(((name, c.store) for name, c in self._clusters.items()), which)
        self.own_done = 0
        self.foreign_done = 0

    @property
    def done(self) -> bool:
        return self.walk.done

    @property
    def ended(self) -> int:
        return self.own_done + self.foreign_done

    def left(self) -> int:
        """Sessions still to look at (for `own` and `foreign` the others are among them)."""
        return self.walk.left()

    def step(self, size: int) -> bool:
        """End the selected sessions among the next `size` call-ids; True if more are left."""
        for name, info in self.walk.next_slice(size):
            cluster = self._clusters[name]
            if self.live.get(name) is not cluster:
                continue
            if info.own:
                self.own_done += cluster.terminate_session(info.call_id, self.on_refusal)
            else:
                self.foreign_done += cluster.store.forget_foreign(info.call_id)
        return not self.walk.done


class TakeoverJob:
    """`takeover PEER|all` over the shared stores (cluster name -> store): the FOREIGN
    sessions of `peer` (None: of every peer) become own, with a new epoch, as after a
    failover."""

    def __init__(self, stores: Mapping[str, 'SharedSessionStore'], peer: str | None) -> None:
        self.peer = peer
        self.name = 'takeover ' + (peer or 'all')
        self._stores = dict(stores)
        if peer is None:
            self.total = sum(count_sessions(store, 'foreign') for store in self._stores.values())
        else:
            self.total = sum(store.foreign_counts().get(peer, 0)
                             for store in self._stores.values())
        self.walk = SessionWalk(self._stores.items(), 'foreign')
        self.taken = 0

    @property
    def done(self) -> bool:
        return self.walk.done

    def left(self) -> int:
        return self.walk.left()

    def step(self, size: int) -> bool:
        """Take over the sessions among the next `size` call-ids; True if more are left."""
        for name, info in self.walk.next_slice(size):
            self.taken += self._stores[name].take_over_one(info.call_id, self.peer)
        return not self.walk.done
