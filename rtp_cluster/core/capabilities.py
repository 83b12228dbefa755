"""`V` and `VF` for a cluster: the capabilities every member that may get a session has.

Clients ask these once and keep the answers for their lifetime, so the answers must not
promise what some member cannot do, and before any member has been probed the question
waits (up to CAPABILITY_WAIT) for the first probe instead of being answered blindly.
"""
from __future__ import annotations

from typing import Callable, Mapping

from . import protocol
from .log import Logger
from .member import NOTIFY_CAPABILITY, Member
from .protocol import Command

Respond = Callable[[str], None]

# `V`/`VF` asked before any member finished its first probe wait this long for one: at boot
# the members answer within milliseconds of the cluster's start, and 2 s stays inside the
# sippy B2BUA's 3 s command budget (Kamailio retransmits every second; a retransmit of a
# waiting command is not handled twice).
CAPABILITY_WAIT = 2.0
CAPABILITY_WAITERS_MAX = 1024


class Capabilities:
    """What one cluster answers to `V`/`VF`, over its `members` (the cluster's own dict)."""
    log = Logger()

    def __init__(self, config, clock, members: Mapping[str, Member]) -> None:
        self.config = config                    # the cluster's; replaced on reload
        self.clock = clock
        self.members = members
        self._last: frozenset[str] | None = None
        self._waiters: list[Callable[[], None]] = []
        self._timer = None

    def answer(self, cmd: Command, respond: Respond) -> None:
        """Answer `V`/`VF` now, or once the first member probe completes.

        If no probe completes in time, `V` gets `E999`, which clients treat like an
        RTPproxy that is not up yet: they ask again later (Kamailio after
        rtpproxy_disable_tout, the sippy B2BUA after 60 s).
        """
        if self.known():
            respond(self._answer_to(cmd))
        elif len(self._waiters) >= CAPABILITY_WAITERS_MAX:
            respond(protocol.E_NO_MEMBER_ONLINE)
        else:
            self._waiters.append(lambda: respond(self._answer_to(cmd)))
            if self._timer is None:
                self._timer = self.clock.callLater(CAPABILITY_WAIT, self._answer_waiters)

    def member_online(self, member: Member) -> None:
        """A member came online: warn about promises it breaks, answer waiting questions."""
        missing = self._last - member.capabilities if self._last is not None else frozenset()
        if missing:
            self.log.warn('cluster {cluster}: member {name} lacks capabilities {dates} that '
                          'clients may have been told about already (VF answered 1)',
                          cluster=self.config.name, name=member.name,
                          dates=' '.join(sorted(missing)))
        if (not member.is_local and self.config.disconnect_notify is not None
                and not member.supports_notify_relay):
            self.log.warn('cluster {cluster}: member {name} cannot send timeout notifications '
                          'to the relay (VF 20081224 and 20150617 needed); VF 20081224 is '
                          'answered 0', cluster=self.config.name, name=member.name)
        self._answer_waiters()

    def stop(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()

    def _answer_waiters(self) -> None:
        self.stop()
        self._timer = None
        waiters, self._waiters = self._waiters, []
        for answer in waiters:
            answer()

    def _answer_to(self, cmd: Command) -> str:
        if not self.known():
            return protocol.E_NO_MEMBER_ONLINE
        if not cmd.args:
            return protocol.PROTOCOL_VERSION
        return '1' if self.supports(cmd.args[0]) else '0'

    def known(self) -> bool:
        """True once a member of this cluster completed a probe (also after it went away)."""
        return self._last is not None or any(
            m.capabilities_known for m in self.members.values())

    def dates(self) -> frozenset[str]:
        """Dates every member that may get a session supports (members probed so far).

        Offline members count: they get sessions again when they come back.  Notification
        support (20081224) also needs a way for the notifications to reach the client:
        a member on a unix socket (same host) sends them itself, a remote one only
        through this cluster's relay (`<disconnect_notify>`) and only with `%%CC_SELF%%`.
        """
        known = [m for m in self.members.values() if m.capabilities_known]
        if not known:
            return self._last or frozenset()
        dates = frozenset.intersection(*(m.capabilities for m in known))
        dates |= {protocol.PROTOCOL_VERSION}
        if not all(self.notifications_reach_client(m) for m in known):
            dates -= {NOTIFY_CAPABILITY}
        self._last = dates
        return dates

    def notifications_reach_client(self, member: Member) -> bool:
        if NOTIFY_CAPABILITY not in member.capabilities:
            return False
        if member.is_local:
            return True
        return self.config.disconnect_notify is not None and member.supports_notify_relay

    def supports(self, date: str) -> bool:
        """`VF date`: 1 only if every member we may route to supports it."""
        return date in self.dates()
