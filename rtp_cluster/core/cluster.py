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
from .counters import CounterGroup, Field, counter_group
from .member import ACTIVE, DRAINING, NOTIFY_CAPABILITY, ONLINE, SUSPENDED, Member
from .monotonic import RetiredTotals
from .protocol import Command
from .sessions import MemorySessionStore, SessionStore

Respond = Callable[[str], None]

NEW_SESSION_DEADLINE = 0.4      # s; well inside the 1 s retransmit interval of Kamailio/OpenSIPS
DELETE_DEADLINE = 0.5           # s; a `D` is answered `0` by then even if the member is silent
BROADCAST_DEADLINE = 0.5        # s; a member silent this long counts as not knowing the call
# `V`/`VF` asked before any member finished its first probe wait this long for one: at boot
# the members answer within milliseconds of the cluster's start, and 2 s stays inside the
# sippy B2BUA's 3 s command budget (Kamailio retransmits every second; a retransmit of a
# waiting command is not handled twice).
CAPABILITY_WAIT = 2.0
CAPABILITY_WAITERS_MAX = 1024
# U/L error codes OpenSIPS reads as "this RTPproxy is broken" (it then disables the node).
_NODE_DISABLING_ERRORS = frozenset({'E7', 'E8', 'E9', 'E10'})


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
        self.config = config
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
        self._retired_info = RetiredTotals()       # counters of removed members
        self._retired_stats = RetiredTotals()
        self._last_capabilities: frozenset[str] | None = None
        self._capability_waiters: list[Callable[[], None]] = []
        self._capability_timer = None
        # set by the runtime when the cluster has a relay: may it deliver to `tcp:HOST:PORT`?
        self.allow_tcp_notify_target: Callable[[str], bool] | None = None

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
        if new != ONLINE or self.members.get(member.name) is not member:
            return
        promised = self._last_capabilities
        missing = promised - member.capabilities if promised is not None else frozenset()
        if missing:
            self.log.warn('cluster {cluster}: member {name} lacks capabilities {dates} that '
                          'clients may have been told about already (VF answered 1)',
                          cluster=self.name, name=member.name, dates=' '.join(sorted(missing)))
        if (not member.is_local and self.config.disconnect_notify is not None
                and not member.supports_notify_relay):
            self.log.warn('cluster {cluster}: member {name} cannot send timeout notifications '
                          'to the relay (VF 20081224 and 20150617 needed); VF 20081224 is '
                          'answered 0', cluster=self.name, name=member.name)
        self._answer_capability_waiters()

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
            self._retired_info.retire(member.info_totals)
            self._retired_stats.retire(member.stats_totals)
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
        if self._capability_timer is not None and self._capability_timer.active():
            self._capability_timer.cancel()
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
            self._version(cmd, respond)
        elif letter == 'I':
            respond(self.info(with_load='l' in cmd.mods.lower()))
        elif letter == 'G':
            self._stats(cmd, respond)
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
        out = self._outgoing(cmd, member)

        def done(reply: str | None) -> None:
            if reply is None:
                self.counters.member_timeouts += 1
                respond(protocol.E_MEMBER_TIMEOUT)
            else:
                respond(self._client_reply(cmd, out, member, reply))
        member.send(out.serialize(), done, timeout)

    def _delete(self, cmd: Command, member: Member, respond: Respond) -> None:
        """Forward a `D`; if the member is silent, answer `0` at the deadline and keep trying.

        The session is unbound already.  A client that waits seconds for a delete takes
        the whole cluster for dead (Kamailio disables it after its retries).
        """
        pending = [respond]

        def answer(body: str) -> None:
            if pending:
                pending.pop()(body)
            else:
                self._late_reply_logger(member, cmd)(body)

        def on_deadline() -> None:
            if pending:
                self.log.warn('member {name} did not answer a delete within {t} s; answered 0',
                              name=member.name, t=DELETE_DEADLINE)
                answer('0')
        timer = self.clock.callLater(DELETE_DEADLINE, on_deadline)

        def done(body: str) -> None:
            if timer.active():
                timer.cancel()
            answer(body)
        self._forward(cmd, member, done)

    def _late_reply_logger(self, member: Member, cmd: Command) -> Respond:
        def log_late(reply: str) -> None:
            self.counters.late_replies += 1
            self.log.info('member {name} answered {reply!r} to an already answered {cmd!r}',
                          name=member.name, reply=reply, cmd=cmd.serialize())
        return log_late

    # --- new sessions ---------------------------------------------------------------------------

    def _new_session(self, cmd: Command, respond: Respond, avoid: frozenset = frozenset(),
                     silent: frozenset = frozenset(), may_retry: bool = True) -> None:
        """Place `cmd` (a `U`) on a picked member; the member creates the session.

        `avoid`: members not to use (offline); `silent`: members that just did not answer
        (if nobody else can take the session the reply is the timeout code).  A first
        attempt that times out is retried once on another member.
        """
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
        out = self._outgoing(cmd, member)

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
            respond(self._client_reply(cmd, out, member, reply))
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
        """Weighted random pick among ACTIVE online members by weight × (1 − utilisation)."""
        candidates: list[tuple[Member, float]] = []
        total = 0.0
        best: Member | None = None
        best_score = float('-inf')
        for member in self.members.values():
            if member.status != ACTIVE or not member.online or member.name in exclude:
                continue
            score = member.weight * (1.0 - member.utilisation())
            if score > 0:
                candidates.append((member, score))
                total += score
            if score > best_score:
                best, best_score = member, score
        if candidates:
            threshold = self.rng() * total
            for member, score in candidates:
                threshold -= score
                if threshold < 0:
                    return member
            return candidates[-1][0]
        return best if self.soft_limit else None

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
        answers: list[tuple[Member, Command, str | None]] = []

        def collect(member: Member, out: Command, reply: str | None) -> None:
            answers.append((member, out, reply))
            if len(answers) == len(online):
                self._finish_broadcast(cmd, answers, respond)

        for member in online:
            out = self._outgoing(query, member)
            member.send(out.serialize(), lambda r, m=member, o=out: collect(m, o, r),
                        BROADCAST_DEADLINE)

    def _finish_broadcast(self, cmd: Command, answers: list, respond: Respond) -> None:
        found = [a for a in answers if a[2] is not None and _knows_session(cmd.letter, a[2])]
        if cmd.letter == 'D' and found:
            respond(found[0][2])
            return
        if len(found) == 1:
            member, out, reply = found[0]
            self.store.bind(cmd.call_id, member.name, cmd.from_tag, cmd.to_tag,
                            address=member.control_spec)
            respond(self._client_reply(cmd, out, member, reply))
            return
        replies = [reply for _, _, reply in answers]
        if found:
            common = _common_reply(replies)
            if common is not None and protocol.is_error(common):
                respond(common)     # the command itself failed, wherever the call is
                return
            self.log.warn('call {cid!r} found on {n} members', cid=cmd.call_id, n=len(found))
            respond('0' if cmd.letter in ('U', 'L') else protocol.E_BROADCAST_AMBIGUOUS)
            return
        silent = frozenset(m.name for m, _, reply in answers if reply is None)
        if cmd.letter == 'U':
            self.counters.late_offers += 1
            self._new_session(cmd, respond, silent=silent)
        elif silent:
            respond(protocol.E_MEMBER_TIMEOUT)      # the call may be on the silent member
        else:
            respond(_common_reply(replies) or replies[0])

    # --- rewriting ---------------------------------------------------------------------------------

    def _outgoing(self, cmd: Command, member: Member) -> Command:
        """The command as the member must get it: LAN address, notify socket."""
        if cmd.letter not in ('U', 'L'):
            return cmd
        out = cmd
        if member.lan_address is not None:
            out = out.with_local_address(member.lan_address)
        if out.notify_socket is not None and not member.is_local:
            out = self._notify_for_remote(out, member)
        return out

    def _notify_for_remote(self, cmd: Command, member: Member) -> Command:
        """Point a remote member's timeout notifications at our relay, or drop them.

        The member is told to notify `tcp:%%CC_SELF%%:<relay port>` with the tag
        `<destination> <client's tag>`: the destination is the client's socket path after
        `dest_socket_prefix` (a unix socket such as the sippy B2BUA's), or the client's
        whole `tcp:HOST:PORT` (Kamailio's timeout_socket) once the relay accepted it.
        """
        relay = self.config.disconnect_notify
        if relay is not None and member.supports_notify_relay:
            destination = self._relay_destination(cmd.notify_socket, relay.dest_socket_prefix)
            if destination is not None:
                tag = '%s %s' % (destination, protocol.percent_unquote(cmd.notify_tag))
                return cmd.with_notify('tcp:%%%%CC_SELF%%%%:%d' % relay.inbound_port,
                                       protocol.percent_quote(tag))
        return cmd.without_notify()

    def _relay_destination(self, socket: str, prefix: str) -> str | None:
        if protocol.parse_tcp_notify_socket(socket) is not None:
            allow = self.allow_tcp_notify_target
            return socket if allow is not None and allow(socket) else None
        socket_path = protocol.notify_socket_path(socket)
        prefix = protocol.notify_socket_path(prefix)
        return socket_path[len(prefix):] if socket_path.startswith(prefix) else None

    def _client_reply(self, cmd: Command, out: Command, member: Member, reply: str) -> str:
        if cmd.letter not in ('U', 'L'):
            return reply
        if reply.split(' ', 1)[0] in _NODE_DISABLING_ERRORS:
            return protocol.E_SYNTAX
        wan = member.wan_address
        if wan is None or not protocol.is_positive_ul_reply(reply):
            return reply
        if self._rewrite_to_wan(cmd, out, member):
            return '%s %s' % (reply.split(None, 1)[0], wan)
        return reply

    @staticmethod
    def _rewrite_to_wan(cmd: Command, out: Command, member: Member) -> bool:
        # The original cluster's rule: the client's own routing (r) and local (l) choices
        # decide whether the member's address is visible to the outside.
        route, local = cmd.route_address, cmd.local_address
        if route is not None and local != member.lan_address:
            return True
        return local is None or out.local_address == member.lan_address

    # --- locally answered commands -----------------------------------------------------------------

    def _version(self, cmd: Command, respond: Respond) -> None:
        """`V` and `VF`: answered once the members' capabilities are known.

        Clients ask these once and keep the answers for their lifetime, so before any
        member has been probed the answer waits (up to CAPABILITY_WAIT) for the first
        probe to complete; if none does, `V` gets `E999`, which clients treat like an
        RTPproxy that is not up yet: they ask again later (Kamailio after
        rtpproxy_disable_tout, the sippy B2BUA after 60 s).
        """
        if self.capabilities_known():
            respond(self._version_answer(cmd))
        elif len(self._capability_waiters) >= CAPABILITY_WAITERS_MAX:
            respond(protocol.E_NO_MEMBER_ONLINE)
        else:
            self._capability_waiters.append(lambda: respond(self._version_answer(cmd)))
            if self._capability_timer is None:
                self._capability_timer = self.clock.callLater(
                    CAPABILITY_WAIT, self._answer_capability_waiters)

    def _answer_capability_waiters(self) -> None:
        if self._capability_timer is not None and self._capability_timer.active():
            self._capability_timer.cancel()
        self._capability_timer = None
        waiters, self._capability_waiters = self._capability_waiters, []
        for answer in waiters:
            answer()

    def _version_answer(self, cmd: Command) -> str:
        if not self.capabilities_known():
            return protocol.E_NO_MEMBER_ONLINE
        if not cmd.args:
            return protocol.PROTOCOL_VERSION
        return '1' if self.supports(cmd.args[0]) else '0'

    def capabilities_known(self) -> bool:
        """True once a member of this cluster completed a probe (also after it went away)."""
        return self._last_capabilities is not None or any(
            m.capabilities_known for m in self.members.values())

    def capabilities(self) -> frozenset[str]:
        """Dates every member that may get a session supports (members probed so far).

        Offline members count: they get sessions again when they come back.  Notification
        support (20081224) also needs a way for the notifications to reach the client:
        a member on a unix socket (same host) sends them itself, a remote one only
        through this cluster's relay (`<disconnect_notify>`) and only with `%%CC_SELF%%`.
        """
        known = [m for m in self.members.values() if m.capabilities_known]
        if not known:
            return self._last_capabilities or frozenset()
        dates = frozenset.intersection(*(m.capabilities for m in known))
        dates |= {protocol.PROTOCOL_VERSION}
        if not all(self.notifications_reach_client(m) for m in known):
            dates -= {NOTIFY_CAPABILITY}
        self._last_capabilities = dates
        return dates

    def notifications_reach_client(self, member: Member) -> bool:
        if NOTIFY_CAPABILITY not in member.capabilities:
            return False
        if member.is_local:
            return True
        return self.config.disconnect_notify is not None and member.supports_notify_relay

    def supports(self, date: str) -> bool:
        """`VF date`: 1 only if every member we may route to supports it."""
        return date in self.capabilities()

    def info(self, with_load: bool = False) -> str:
        """`I`: counters over every member ever seen (never decrease), gauges of online ones."""
        totals = {name: self._retired_info.total(name) for name in protocol.INFO_COUNTERS}
        for name in protocol.INFO_GAUGES:
            totals[name] = 0
        for member in self.members.values():
            for name in protocol.INFO_COUNTERS:
                totals[name] += member.info_totals.total(name)
            if member.online and member.stats is not None:
                for name in protocol.INFO_GAUGES:
                    totals[name] += member.stats[name]
        return protocol.format_info(totals, with_load)

    def _stats(self, cmd: Command, respond: Respond) -> None:
        names = tuple(cmd.args)
        if not names:
            respond('')
            return
        online = self.online_members()
        if not online:
            respond(protocol.E_NO_MEMBER_ONLINE)
            return
        verbose = 'v' in cmd.mods.lower()
        request = 'G ' + ' '.join(names)
        rows: list[list] = []
        errors: list[str] = []
        remaining = [len(online)]

        def collect(member: Member, reply: str | None) -> None:
            remaining[0] -= 1
            values = protocol.parse_stats_reply(names, reply, False) if reply else None
            if values is not None:
                member.stats_cache[names] = values
                for name, value in zip(names, values):
                    if name not in protocol.STATS_GAUGES:
                        member.stats_totals.update(name, value)
            elif reply is not None and protocol.is_error(reply):
                errors.append(reply)
            else:
                values = member.stats_cache.get(names)
            if values is not None:
                rows.append(values)
            if remaining[0] == 0:
                if rows:
                    respond(protocol.format_stats(names, self._stats_totals(names, rows),
                                                  verbose))
                else:
                    respond(errors[0] if errors else protocol.E_STATS_ALL_FAILED)

        for member in online:
            member.send(request, lambda r, m=member: collect(m, r), 1.0)

    def _stats_totals(self, names: tuple[str, ...], rows: list[list]) -> list:
        """Rates summed over this round's rows; counters over every member ever seen."""
        totals = protocol.sum_stats(rows)
        for i, name in enumerate(names):
            if name in protocol.STATS_GAUGES:
                continue
            total = self._retired_stats.total(name)
            for member in self.members.values():
                total += member.stats_totals.total(name)
            # keep the members' number type (a double stays a double)
            totals[i] = float(total) if isinstance(totals[i], float) else total
        return totals

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
                self.store.drop_member(member.name)
            if remaining[0] == 0:
                respond('0' if ok[0] else protocol.E_MEMBER_TIMEOUT)

        for member in online:
            member.send(cmd.serialize(), lambda r, m=member: collect(m, r))

    # --- operator actions on sessions -------------------------------------------------------

    def terminate_session(self, call_id: str,
                          on_refusal: Callable[[str, str], None] | None = None) -> bool:
        """End a session as a client's full `D` would (every media stream); False if unknown.

        `on_refusal(command, reply)` hears of an error reply.  A session without a from-tag
        cannot be addressed on its member and is only forgotten here.
        """
        session = self.store.describe(call_id)
        if session is None:
            return False
        cmd = delete_command(call_id, session.from_tag, session.to_tag)
        if cmd is None:
            self.store.unbind(call_id)
            return True

        def done(reply: str) -> None:
            if on_refusal is not None and protocol.is_error(reply):
                on_refusal(cmd.text, reply)
        self.handle(cmd, done)
        return True


def delete_command(call_id: str, from_tag: str | None, to_tag: str | None) -> Command | None:
    """The `D` that ends every stream of a call (tags without their `;N` suffix), or None."""
    if not from_tag:
        return None
    words = ['D', call_id, from_tag.split(';', 1)[0]]
    if to_tag:
        words.append(to_tag.split(';', 1)[0])
    cmd = protocol.parse_command(' '.join(words))
    return None if cmd.error is not None else cmd


def _knows_session(letter: str, reply: str) -> bool:
    """Whether a member's reply to a broadcast command shows that it has the call."""
    if letter in ('U', 'L'):
        return protocol.is_positive_ul_reply(reply)
    return reply != protocol.E_SESSION_NOT_FOUND


def _common_reply(replies: list[str | None]) -> str | None:
    """The reply every member gave, or None if they differ."""
    first = replies[0]
    return first if all(reply == first for reply in replies) else None


def _ends_the_call(cmd: Command) -> bool:
    """A `D` that leaves nothing of the call on the member.

    `Dw` only clears a weak flag, and a tag with a `;N` suffix deletes one media stream of
    several; the call stays bound then (aging forgets it if no full `D` ever comes).
    """
    if 'w' in cmd.mods or 'W' in cmd.mods:
        return False
    return not any(';' in tag for tag in cmd.args[1:3])


__all__ = ['Cluster', 'ACTIVE', 'SUSPENDED', 'DRAINING']
