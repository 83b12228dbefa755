"""Routing decisions: which member gets a command, and what the client gets back.

`Cluster.handle(command, respond)` is the whole data path: it looks the call-id up in the
session store, picks a member for a new session (weight × free capacity), broadcasts
lookups for unknown sessions, aggregates statistics, and calls `respond(body)` exactly
once per command.  It opens no sockets: members are reached through `Member.send`.
"""
from __future__ import annotations

import random
from typing import Callable, Iterable

from .log import Logger

from . import protocol
from .broadcast import Answer, Verdict, judge
from .bulk import SessionWalk
from .counters import CounterGroup, Field, counter_group
from .capabilities import Capabilities
from .deadlines import DeadlineQueue
from .member import ACTIVE, DRAINING, ONLINE, SUSPENDED, Member
from .placement import pick_member
from .protocol import Command
from .rewrite import CommandRewriter
from .stats import StatsAggregator
from .sessions import MemorySessionStore, SessionStore

Respond = Callable[[str], None]

NEW_SESSION_DEADLINE = 0.4      # s; well inside the 1 s retransmit interval of Kamailio/OpenSIPS
DELETE_DEADLINE = 0.5           # s; a `D` is answered `0` by then even if the member is silent
BROADCAST_DEADLINE = 0.5        # s; a member silent this long counts as not knowing the call
FORGET_SLICE = 2000             # sessions looked at per reactor turn after a member's `X`


class MemberDraining(ValueError):
    """The member is being removed: it can no longer be paused or resumed."""


ClusterCounters = counter_group(
    'ClusterCounters', '',
    Field('commands', 'Control commands the cluster handled.', metric=''),
    Field('new_sessions', 'Sessions placed on a member.'),
    Field('broadcasts', 'Commands for unknown calls asked of every online member.'),
    Field('reanchored', 'Sessions moved off an offline member by a re-offer.'),
    Field('retried_new', 'New sessions retried on another member after a timeout.',
          metric='rtp_cluster_retried_new_sessions_total'),
    Field('member_timeouts', 'Commands answered with a timeout error (the member was silent).',
          metric='rtp_cluster_command_timeouts_total'),
    Field('late_replies', 'Member replies that came after the client was answered.'),
    Field('expired_sessions', 'Sessions forgotten by aging.'),
    Field('late_offers', 'Late-offer commands placed on a member after the lookup.'))


class Cluster:
    log = Logger()

    def __init__(self, config, clock, *, store: SessionStore | None = None,
                 rng: Callable[[], float] = random.random,
                 new_session_deadline: float = NEW_SESSION_DEADLINE,
                 counters: CounterGroup | None = None) -> None:
        self.clock = clock
        self.rng = rng
        self.new_session_deadline = new_session_deadline
        self.members: dict[str, Member] = {}
        self.store: SessionStore = store if store is not None else MemorySessionStore()
        self.store.on_unbind = self._on_unbind
        self.store.member_known = self.members.__contains__
        self.counters = counters if counters is not None else ClusterCounters()
        self.on_member_removed: Callable[[Member], None] | None = None
        self._aging = None
        self._delete_deadlines = DeadlineQueue(clock, DELETE_DEADLINE)
        self.capabilities = Capabilities(config, clock, self.members)
        self.stats = StatsAggregator(self.members)
        self.rewriter = CommandRewriter(config)
        self.config = config

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def soft_limit(self) -> bool:
        return self.config.capacity_limit != 'hard'

    # --- membership ----------------------------------------------------------------------------

    def add_member(self, member: Member) -> None:
        self.members[member.name] = member
        member.observers.append(self._on_member_state)

    def _on_member_state(self, member: Member, old: str, new: str) -> None:
        if new == ONLINE and self.members.get(member.name) is member:
            self.capabilities.member_online(member)

    def drain_member(self, name: str) -> bool:
        """Take `name` out of rotation; it is removed once its sessions are gone."""
        member = self.members.get(name)
        if member is None:
            return False
        member.status = DRAINING
        if self.store.count(name) == 0:
            self._remove_member(member)
        return True

    def pause_member(self, name: str) -> Member:
        """Give `name` no new sessions (SUSPENDED); its sessions stay.

        KeyError when there is no such member, MemberDraining when it is being removed.
        """
        return self._set_status(name, SUSPENDED)

    def resume_member(self, name: str) -> Member:
        """Give `name` new sessions again (ACTIVE); the errors of pause_member."""
        return self._set_status(name, ACTIVE)

    def _set_status(self, name: str, status: str) -> Member:
        member = self.members[name]
        if member.status == DRAINING:
            raise MemberDraining(name)
        member.status = status
        return member

    def _remove_member(self, member: Member) -> None:
        if self.members.get(member.name) is member:
            del self.members[member.name]
            self.stats.retire(member)
            self.store.drop_member(member.name)
            member.stop()
            self.log.info('cluster {cluster}: member {name} removed', cluster=self.name,
                          name=member.name)
            if self.on_member_removed is not None:
                self.on_member_removed(member)

    def _on_unbind(self, call_id: str, member_name: str) -> None:
        member = self.members.get(member_name)
        if member is not None and member.status == DRAINING and self.store.count(member_name) == 0:
            self.clock.callLater(0, self._remove_member, member)

    def online_members(self) -> list[Member]:
        return [m for m in self.members.values() if m.online]

    def offline_members(self) -> list[Member]:
        return [m for m in self.members.values() if not m.online]

    @property
    def aging_interval(self) -> float:
        return self.store.aging_interval

    def start(self) -> None:
        self._aging = self.clock.callLater(self.aging_interval, self._age_sessions)
        remote = [m.name for m in self.members.values() if not m.is_local]
        if remote and self.config.disconnect_notify is None:
            self.log.warn('cluster {cluster}: timeout notifications of the remote members '
                          '{names} cannot reach clients without <disconnect_notify>; '
                          'VF 20081224 is answered 0', cluster=self.name,
                          names=' '.join(remote))

    def stop(self) -> None:
        if self._aging is not None and self._aging.active():
            self._aging.cancel()
        self.capabilities.stop()
        for member in list(self.members.values()):
            member.stop()

    def _age_sessions(self) -> None:
        self.counters.expired_sessions += self.store.expire()
        self._aging = self.clock.callLater(self.aging_interval, self._age_sessions)

    # --- the data path ------------------------------------------------------------------------

    def handle(self, cmd: Command, respond: Respond) -> None:
        self.counters.commands += 1
        letter = cmd.letter
        if letter in protocol.SESSION_COMMANDS:
            self._session_command(cmd, respond)
        elif letter == 'V':
            self.capabilities.answer(cmd, respond)
        elif letter == 'I':
            respond(self.stats.info(with_load='l' in cmd.mods.lower()))
        elif letter == 'G':
            self.stats.stats(cmd, self.online_members(), respond)
        elif letter == 'X':
            self._delete_all(cmd, respond)
        else:
            respond(protocol.E_UNKNOWN_COMMAND)

    def _session_command(self, cmd: Command, respond: Respond, looked_up: bool = False) -> None:
        call_id = cmd.call_id
        name = self.store.lookup(call_id)
        member = self.members.get(name) if name is not None else None
        if name is not None and member is None:
            self.store.unbind(call_id)      # its member was removed
        if member is None and not looked_up and self._resolve_elsewhere(cmd, respond):
            return
        if member is None:
            if cmd.is_new_session_offer:
                # An offer without to-tag comes from a dialog-creating request: the call is
                # new, so no member is asked first (every new call would wait for all).
                self._new_session(cmd, respond)
            else:
                self._broadcast_lookup(cmd, respond)
            return
        if cmd.letter == 'U' and not member.online:
            self._reanchor(cmd, member, respond)
            return
        if cmd.letter == 'D':
            if _ends_the_call(cmd):
                self.store.unbind(call_id)
            if not member.online:
                respond('0')
                self._forward(cmd, member, self._late_reply_logger(member, cmd))
            else:
                self._delete(cmd, member, respond)
            return
        elif cmd.letter == 'U' or cmd.letter == 'L':
            to_tag = cmd.to_tag
            if to_tag is not None:
                self.store.learn_to_tag(call_id, to_tag)
        self._forward(cmd, member, respond)

    def _resolve_elsewhere(self, cmd: Command, respond: Respond) -> bool:
        """A shared store whose view is stale may find the call in Redis first (then retry)."""
        return self.store.resolve_unknown(
            cmd.call_id, lambda: self._session_command(cmd, respond, looked_up=True),
            ends_call=cmd.letter == 'D' and _ends_the_call(cmd))

    def _forward(self, cmd: Command, member: Member, respond: Respond,
                 timeout: float | None = None) -> None:
        out = self.rewriter.outgoing(cmd, member)

        def done(reply: str | None) -> None:
            if reply is None:
                self.counters.member_timeouts += 1
                respond(protocol.E_MEMBER_TIMEOUT)
            else:
                respond(self.rewriter.client_reply(cmd, out, member, reply))
        member.send(out.serialize(), done, timeout)

    def _delete(self, cmd: Command, member: Member, respond: Respond) -> None:
        """Forward a `D`; if the member is silent, answer `0` at the deadline and keep trying.

        The session is unbound already.  A client that waits seconds for a delete takes
        the whole cluster for dead (Kamailio disables it after its retries).
        """
        pending = _PendingDelete(self, member, cmd, respond)
        self._delete_deadlines.add(pending)
        self._forward(cmd, member, pending.answer)

    def _late_reply_logger(self, member: Member, cmd: Command) -> Respond:
        return lambda reply: self._log_late_reply(member, cmd, reply)

    def _log_late_reply(self, member: Member, cmd: Command, reply: str) -> None:
        self.counters.late_replies += 1
        self.log.info('member {name} answered {reply!r} to an already answered {cmd!r}',
                      name=member.name, reply=reply, cmd=cmd.serialize())

    # --- new sessions ---------------------------------------------------------------------------

    def _new_session(self, cmd: Command, respond: Respond, avoid: frozenset = frozenset(),
                     silent: frozenset = frozenset(), may_retry: bool = True) -> None:
        """Place `cmd` (a `U`) on a picked member; the member creates the session.

        `avoid`: members not to use (offline); `silent`: members that just did not answer
        (if nobody else can take the session the reply is the timeout code).  A first
        attempt that times out is retried once on another member.  A cluster holding its
        `max_sessions` already answers as a full one.
        """
        limit = self.config.max_sessions
        if limit is not None and len(self.store) >= limit:
            respond(protocol.E_NO_CAPACITY)
            return
        member = self.pick_member(avoid | silent)
        if member is None:
            if silent:
                respond(protocol.E_MEMBER_TIMEOUT)
            elif not any(m.online for m in self.members.values()):
                respond(protocol.E_NO_MEMBER_ONLINE)
            else:
                respond(protocol.E_NO_CAPACITY)
            return
        call_id = cmd.call_id
        self.store.bind(call_id, member.name, cmd.from_tag, cmd.to_tag,
                        address=member.control_spec)
        member.note_session_created()
        self.counters.new_sessions += 1
        out = self.rewriter.outgoing(cmd, member)

        def done(reply: str | None) -> None:
            if reply is None:
                self.counters.member_timeouts += 1
                self.store.unbind(call_id)
                if may_retry:
                    self.counters.retried_new += 1
                    self.log.warn('member {name} did not answer a new session in time; '
                                  'trying another member', name=member.name)
                    self._discard_late_session(cmd, member)
                    self._new_session(cmd, respond, avoid, silent | {member.name}, False)
                else:
                    respond(protocol.E_MEMBER_TIMEOUT)
                return
            if protocol.is_error(reply):
                self.store.unbind(call_id)
            respond(self.rewriter.client_reply(cmd, out, member, reply))
        member.send(out.serialize(), done, self.new_session_deadline if may_retry else None)

    def _discard_late_session(self, cmd: Command, member: Member) -> None:
        """The slow member may still create the session we moved elsewhere: delete it there."""
        delete = protocol.parse_command('D %s %s' % (cmd.call_id, cmd.from_tag))
        if delete.error is None:
            member.send(delete.serialize(), lambda reply: None)

    def _reanchor(self, cmd: Command, dead: Member, respond: Respond) -> None:
        """A re-offer for a session whose member is offline: move it to a live member."""
        if self.pick_member(frozenset({dead.name})) is None:
            online = any(m.online for m in self.members.values())
            respond(protocol.E_NO_CAPACITY if online else protocol.E_NO_MEMBER_ONLINE)
            return
        self.counters.reanchored += 1
        self.log.warn('call {cid!r}: member {name} is offline, re-anchoring the session',
                      cid=cmd.call_id, name=dead.name)
        self.store.unbind(cmd.call_id)
        self._new_session(cmd, respond, frozenset({dead.name}), may_retry=False)

    def pick_member(self, exclude: Iterable[str] = ()) -> Member | None:
        return pick_member(self.members.values(), self.rng, self.soft_limit, exclude)

    # --- unknown sessions -------------------------------------------------------------------------

    def _broadcast_lookup(self, cmd: Command, respond: Respond) -> None:
        """Ask every online member about a call-id the cluster does not know.

        A `U` with to-tag is asked as the equivalent `L` (which never creates anything);
        if no member has the call, the `U` then creates it like a new offer, as one
        RTPproxy does (late offer: the first command of the call carries both tags).
        """
        online = self.online_members()
        if not online:
            respond(protocol.E_NO_MEMBER_ONLINE)
            return
        self.counters.broadcasts += 1
        query = cmd.as_lookup() if cmd.letter == 'U' else cmd
        answers: list[Answer] = []

        def collect(member: Member, out: Command, reply: str | None) -> None:
            answers.append(Answer(member, out, reply))
            if len(answers) == len(online):
                self._finish_broadcast(cmd, judge(cmd, answers), respond)

        for member in online:
            out = self.rewriter.outgoing(query, member)
            member.send(out.serialize(), lambda r, m=member, o=out: collect(m, o, r),
                        BROADCAST_DEADLINE)

    def _finish_broadcast(self, cmd: Command, verdict: Verdict, respond: Respond) -> None:
        if verdict.holders:
            self.log.warn('call {cid!r} found on {n} members', cid=cmd.call_id,
                          n=verdict.holders)
        if verdict.owner is not None:
            member, out, reply = verdict.owner
            self.store.bind(cmd.call_id, member.name, cmd.from_tag, cmd.to_tag,
                            address=member.control_spec)
            respond(self.rewriter.client_reply(cmd, out, member, reply))
        elif verdict.late_offer is not None:
            self.counters.late_offers += 1
            self._new_session(cmd, respond, silent=verdict.late_offer)
        else:
            respond(verdict.reply)

    # --- locally answered commands ------------------------------------------------------------

    @property
    def config(self):
        return self._config

    @config.setter
    def config(self, config) -> None:
        """The cluster's configuration; a reload replaces it for every part at once."""
        self._config = config
        self.capabilities.config = config
        self.rewriter.config = config

    def info(self, with_load: bool = False) -> str:
        return self.stats.info(with_load)

    def _delete_all(self, cmd: Command, respond: Respond) -> None:
        online = self.online_members()
        if not online:
            respond(protocol.E_NO_MEMBER_ONLINE)
            return
        remaining = [len(online)]
        ok = [0]

        def collect(member: Member, reply: str | None) -> None:
            remaining[0] -= 1
            if reply is not None and not protocol.is_error(reply):
                ok[0] += 1
                self._forget_sessions_of(member.name)
            if remaining[0] == 0:
                respond('0' if ok[0] else protocol.E_MEMBER_TIMEOUT)

        for member in online:
            member.send(cmd.serialize(), lambda r, m=member: collect(m, r))

    def _forget_sessions_of(self, name: str) -> None:
        """The member `name` deleted every session (`X`): forget ours of it, FORGET_SLICE
        call-ids per reactor turn (at 200,000 sessions one pass would hold the reactor for
        a good part of a second)."""
        if not self.store.count(name):
            return
        walk = SessionWalk([(self.name, self.store)])

        def forget_slice() -> None:
            for _, info in walk.next_slice(FORGET_SLICE):
                if info.member == name:
                    self.store.unbind(info.call_id)
            if not walk.done:
                self.clock.callLater(0, forget_slice)
        forget_slice()

    # --- operator actions on sessions -------------------------------------------------------

    def terminate_session(self, call_id: str,
                          on_refusal: Callable[[str, str], None] | None = None) -> bool:
        """End a session as a client's full `D` would (every media stream); False if unknown.

        `on_refusal(command, reply)` hears of an error reply or a timeout.  A session without
        a from-tag cannot be addressed on its member and is only forgotten here.  The `D`
        goes straight to the member: nobody waits for its answer, so it needs none of the
        client path's deadline timer (a bulk terminate sends thousands a second, and every
        timer alive would be one more object for the garbage collector to walk).
        """
        session = self.store.describe(call_id)
        if session is None:
            return False
        cmd = delete_command(call_id, session.from_tag, session.to_tag)
        self.store.unbind(call_id)
        member = self.members.get(session.member)
        if cmd is None or member is None:
            return True

        def done(reply: str | None) -> None:
            if reply is None:
                self.counters.member_timeouts += 1
                reply = protocol.E_MEMBER_TIMEOUT
            if on_refusal is not None and protocol.is_error(reply):
                on_refusal(cmd.text, reply)
        member.send(cmd.serialize(), done)
        return True


class _PendingDelete:
    """A forwarded `D`: answered by its member, or with `0` when its deadline comes first."""

    __slots__ = ('cluster', 'member', 'cmd', 'respond')

    def __init__(self, cluster: Cluster, member: Member, cmd: Command, respond: Respond) -> None:
        self.cluster = cluster
        self.member = member
        self.cmd = cmd
        self.respond: Respond | None = respond

    def answer(self, body: str) -> None:
        respond, self.respond = self.respond, None
        if respond is not None:
            respond(body)
        else:
            self.cluster._log_late_reply(self.member, self.cmd, body)

    def expire(self) -> None:
        if self.respond is not None:
            self.cluster.log.warn('member {name} did not answer a delete within {t} s; '
                                  'answered 0', name=self.member.name, t=DELETE_DEADLINE)
            self.answer('0')


def delete_command(call_id: str, from_tag: str | None, to_tag: str | None) -> Command | None:
    """The `D` that ends every stream of a call (tags without their `;N` suffix), or None."""
    if not from_tag:
        return None
    words = ['D', call_id, from_tag.split(';', 1)[0]]
    if to_tag:
        words.append(to_tag.split(';', 1)[0])
    cmd = protocol.parse_command(' '.join(words))
    return None if cmd.error is not None else cmd


def _ends_the_call(cmd: Command) -> bool:
    """A `D` that leaves nothing of the call on the member.

    `Dw` only clears a weak flag, and a tag with a `;N` suffix deletes one media stream of
    several; the call stays bound then (aging forgets it if no full `D` ever comes).
    """
    if 'w' in cmd.mods or 'W' in cmd.mods:
        return False
    return ';' not in ' '.join(cmd.args[1:3])      # tokens hold no space: one C-level scan


__all__ = ['Cluster', 'ACTIVE', 'SUSPENDED', 'DRAINING']
