"""What the members' answers to a broadcast lookup mean.

A command for a call-id the cluster does not know is asked of every online member (a `U`
with a to-tag as the equivalent `L`, which never creates anything).  `judge` turns their
answers into one of: a reply for the client, the one member that has the call, or a late
offer to place like a new session (no member has it).  It decides only; `Cluster` acts.
"""
from __future__ import annotations

from typing import Any, NamedTuple, Sequence

from . import protocol
from .protocol import Command


class Answer(NamedTuple):
    member: Any              # the Member asked
    sent: Command            # what it was sent (rewritten for it)
    reply: str | None        # None: silent within the broadcast deadline


class Verdict(NamedTuple):
    reply: str | None = None                 # answer the client with this
    owner: Answer | None = None              # the one member that has the call
    late_offer: frozenset[str] | None = None  # nobody has it: place it, avoiding these
    holders: int = 0                         # members that have it, when more than one


def judge(cmd: Command, answers: Sequence[Answer]) -> Verdict:
    """The outcome of a broadcast of `cmd` (one answer per online member)."""
    found = [a for a in answers if a.reply is not None and knows_session(cmd.letter, a.reply)]
    if cmd.letter == 'D' and found:
        return Verdict(reply=found[0].reply)
    if len(found) == 1:
        return Verdict(owner=found[0])
    replies = [a.reply for a in answers]
    if found:
        common = common_reply(replies)
        if common is not None and protocol.is_error(common):
            return Verdict(reply=common)     # the command itself failed, wherever the call is
        return Verdict(reply='0' if cmd.letter in ('U', 'L') else protocol.E_BROADCAST_AMBIGUOUS,
                       holders=len(found))
    silent = frozenset(a.member.name for a in answers if a.reply is None)
    if cmd.letter == 'U':
        return Verdict(late_offer=silent)
    if silent:
        return Verdict(reply=protocol.E_MEMBER_TIMEOUT)     # it may be on a silent member
    return Verdict(reply=common_reply(replies) or replies[0])


def knows_session(letter: str, reply: str) -> bool:
    """Whether a member's reply to a broadcast command shows that it has the call."""
    if letter in ('U', 'L'):
        return protocol.is_positive_ul_reply(reply)
    return reply != protocol.E_SESSION_NOT_FOUND


def common_reply(replies: Sequence[str | None]) -> str | None:
    """The reply every member gave, or None if they differ."""
    first = replies[0]
    return first if all(reply == first for reply in replies) else None
