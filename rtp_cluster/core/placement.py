"""Which member gets a new session: weighted random by weight × free capacity."""
from __future__ import annotations

from typing import Callable, Iterable

from .member import ACTIVE, Member


def pick_member(members: Iterable[Member], rng: Callable[[], float], soft_limit: bool,
                exclude: Iterable[str] = ()) -> Member | None:
    """A weighted random pick among ACTIVE online members by weight × (1 − utilisation).

    When every candidate is full, a soft-limit cluster still places the session on the
    member with the best score (the least overloaded); a hard-limit cluster places none.
    """
    excluded = frozenset(exclude)
    candidates: list[tuple[Member, float]] = []
    total = 0.0
    best: Member | None = None
    best_score = float('-inf')
    for member in members:
        if member.status != ACTIVE or not member.online or member.name in excluded:
            continue
        score = member.weight * (1.0 - member.utilisation())
        if score > 0:
            candidates.append((member, score))
            total += score
        if score > best_score:
            best, best_score = member, score
    if candidates:
        threshold = rng() * total
        for member, score in candidates:
            threshold -= score
            if threshold < 0:
                return member
        return candidates[-1][0]
    return best if soft_limit else None
