"""One member RTPproxy: health state machine, heartbeat statistics and load estimate.

The member talks to its RTPproxy through an injected client (see `MemberClient`) and
schedules its timers on an injected clock (`IReactorTime`), so the whole state machine
runs under `twisted.internet.task.Clock` in tests.

States: offline → probing → online → offline …
- probing: `V` must answer 20040107, then every `VF` capability date is asked (in
  parallel) and an `Ib` fetches the first statistics; all good → online.
- online: `Ib` heartbeat every `heartbeat_interval`; a failed heartbeat → offline.  A
  command that timed out triggers an immediate `V` probe; no answer → offline.
- offline: probed again every `probe_interval` seconds.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Protocol

from .log import Logger

from . import protocol
from .counters import CounterGroup, Field, counter_group
from .monotonic import MonotonicTotals

if TYPE_CHECKING:
    from .config import MemberConfig

OFFLINE = 'offline'
PROBING = 'probing'
ONLINE = 'online'

ACTIVE = 'ACTIVE'
SUSPENDED = 'SUSPENDED'
DRAINING = 'DRAINING'

# Capability dates asked with `VF` (reference section 5).
CAPABILITY_DATES = (
    '20050322', '20060704', '20071116', '20071218', '20080403', '20081102', '20081224',
    '20090810', '20140323', '20140617', '20141004', '20150330', '20150420', '20150617',
    '20170313', '20191015', '20200226', '20230205', '20230314', '20230424', '20250523',
    '20251015', '20260306', '20260308', '20260309',
)
NOTIFY_CAPABILITY = '20081224'
CC_SELF_CAPABILITY = '20150617'

Reply = Callable[[str | None], None]

MemberCounters = counter_group(
    'MemberCounters', 'member',
    Field('timeouts', 'Commands to the member that got no reply in time.'),
    Field('late_replies', 'Replies from the member that came after their command expired.'),
    Field('state_changes', 'Changes between up (online) and down (offline or probing).'))


class MemberClient(Protocol):
    """Sends commands to one RTPproxy; `callback(None)` means no reply in time."""

    rtt: float | None
    on_timeout: Callable[[], None] | None      # called before a command's callback(None)

    def send(self, text: str, callback: Reply, timeout: float | None = None) -> None: ...

    def close(self) -> None: ...


class Member:
    log = Logger()

    def __init__(self, config: MemberConfig, client: MemberClient, clock, *,
                 heartbeat_interval: float = 1.0, heartbeat_timeout: float = 1.5,
                 probe_interval: float = 2.0, probe_timeout: float = 1.0,
                 counters: CounterGroup | None = None, cluster: str = '') -> None:
        self.config = config
        self.cluster = cluster          # the cluster's name, for log events
        self.name = config.name
        self.control_spec = str(config.endpoint)    # fixed for this object (see Runtime.reload)
        self.client = client
        self.clock = clock
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.probe_interval = probe_interval
        self.probe_timeout = probe_timeout
        self.status = config.status.upper()
        self.state = OFFLINE
        self.capabilities: frozenset[str] = frozenset()
        self.capabilities_known = False             # stays True once a probe completed
        self.stats: dict[str, int] | None = None
        self.stats_cache: dict[tuple, list] = {}     # last good `G` values per name list
        self.info_totals = MonotonicTotals()         # `I` counters, kept while offline
        self.stats_totals = MonotonicTotals()        # `G` counters, kept while offline
        self.filtered_active: float = 0.0
        self.created_since_heartbeat = 0
        self.counters = counters if counters is not None else MemberCounters()
        self.state_since: float | None = None    # clock time of the last up/down change
        self.observers: list[Callable[['Member', str, str], None]] = []
        self._timer = None
        self._generation = 0        # bumps on every state change: stale callbacks see it
        self._suspect_check = False
        self._stopped = False
        # Commands go straight to the client; its timeouts make the member suspect.
        self.send = client.send
        client.on_timeout = self.suspect

    # --- configuration --------------------------------------------------------------------

    @property
    def weight(self) -> int:
        return self.config.weight

    @property
    def capacity(self) -> int:
        return self.config.capacity

    @property
    def wan_address(self) -> str | None:
        return self.config.wan_address

    @property
    def lan_address(self) -> str | None:
        return self.config.lan_address

    @property
    def supports_notify_relay(self) -> bool:
        """Can send timeout notifications to `tcp:%%CC_SELF%%:port` (the relay)."""
        return NOTIFY_CAPABILITY in self.capabilities and CC_SELF_CAPABILITY in self.capabilities

    @property
    def is_local(self) -> bool:
        return self.config.endpoint.protocol == 'unix'

    def apply_config(self, config: MemberConfig, revive: bool = False) -> None:
        """New weight/capacity/status/NAT addresses; same control address (same client).

        A draining member keeps draining unless `revive` (it is back in the config file).
        """
        self.config = config
        if revive or self.status != DRAINING:
            self.status = config.status.upper()

    # --- state ----------------------------------------------------------------------------

    @property
    def online(self) -> bool:
        return self.state == ONLINE

    @property
    def active_sessions(self) -> int | None:
        return None if self.stats is None else self.stats['active sessions']

    def utilisation(self) -> float:
        """Estimated share of capacity in use, counting sessions created since the last heartbeat."""
        return (self.filtered_active + self.created_since_heartbeat) / self.capacity

    def note_session_created(self) -> None:
        self.created_since_heartbeat += 1

    @property
    def rtt(self) -> float:
        return self.client.rtt or 0.0

    def take_history_from(self, previous: 'Member') -> None:
        """The same member under a new client (new control address): keep its counters."""
        self.info_totals.take_over(previous.info_totals)
        self.stats_totals.take_over(previous.stats_totals)

    def start(self) -> None:
        self._stopped = False
        self._probe()

    def stop(self) -> None:
        self._stopped = True
        self._generation += 1
        self._cancel_timer()
        self.client.close()

    def _set_state(self, state: str, reason: str) -> None:
        old, self.state = self.state, state
        self._generation += 1
        if old == state:
            return
        if ONLINE in (old, state):      # a dead member's offline/probing cycle is no change
            self.counters.state_changes += 1
            self.state_since = self.clock.seconds()
        if state == OFFLINE:
            self.stats = None
        level = self.log.warn if state == OFFLINE else self.log.info
        # the fields make a structured event for JSON log lines; the text stays as it was
        level('member {name}: {old} -> {new}', name=self.name, old=old, new=state,
              event='member_state', cluster=self.cluster,
              member=self.name, reason=reason)
        for observer in list(self.observers):
            observer(self, old, state)

    def _schedule(self, delay: float, what: Callable[[], None]) -> None:
        self._cancel_timer()
        if not self._stopped:
            self._timer = self.clock.callLater(delay, what)

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    # --- probing ----------------------------------------------------------------------------

    def _probe(self) -> None:
        if self._stopped:
            return
        self._set_state(PROBING, 'probe')
        generation = self._generation
        self.client.send('V', lambda reply: self._on_version(generation, reply),
                         self.probe_timeout)

    def _on_version(self, generation: int, reply: str | None) -> None:
        if generation != self._generation:
            return
        if reply is None or reply.strip() != protocol.PROTOCOL_VERSION:
            self._probe_failed('V answered %r' % reply if reply is not None else 'no answer to V')
            return
        answers: dict[str, bool] = {}

        def on_capability(date: str, answer: str | None) -> None:
            if generation != self._generation:
                return
            if answer is None:
                self._probe_failed('no answer to VF %s' % date)
                return
            answers[date] = answer.strip() == '1'
            if len(answers) == len(CAPABILITY_DATES):
                self.capabilities = frozenset(d for d, ok in answers.items() if ok)
                self.capabilities_known = True
                self._first_heartbeat(generation)

        for date in CAPABILITY_DATES:
            self.client.send('VF ' + date, lambda a, d=date: on_capability(d, a),
                             self.probe_timeout)

    def _first_heartbeat(self, generation: int) -> None:
        def done(reply: str | None) -> None:
            if generation != self._generation:
                return
            stats = protocol.parse_info(reply) if reply is not None else None
            if stats is None:
                self._probe_failed('bad or no answer to Ib: %r' % reply)
                return
            self._take_stats(stats, 0)
            self.filtered_active = float(stats['active sessions'])
            self._set_state(ONLINE, 'probe answered')
            self._schedule(self.heartbeat_interval, self._heartbeat)
        self.client.send('Ib', done, self.probe_timeout)

    def _probe_failed(self, why: str) -> None:
        if self.state != OFFLINE:
            self.log.info('member {name}: probe failed: {why}', name=self.name, why=why)
        self._set_state(OFFLINE, why)
        self._schedule(self.probe_interval, self._probe)

    # --- heartbeat ---------------------------------------------------------------------------

    def _heartbeat(self) -> None:
        generation = self._generation
        created_before = self.created_since_heartbeat

        def done(reply: str | None) -> None:
            if generation != self._generation:
                return
            stats = protocol.parse_info(reply) if reply is not None else None
            if stats is None:
                self._go_offline('heartbeat failed: %r' % reply)
                return
            self._take_stats(stats, created_before)
            self._schedule(self.heartbeat_interval, self._heartbeat)
        self.client.send('Ib', done, self.heartbeat_timeout)

    def _take_stats(self, stats: dict[str, int], created_before: int) -> None:
        self.stats = stats
        for name in protocol.INFO_COUNTERS:
            self.info_totals.update(name, stats[name])
        # sessions created before the request went out are in the member's own count now
        self.created_since_heartbeat = max(0, self.created_since_heartbeat - created_before)
        active = float(stats['active sessions'])
        # rises are taken at once (overload protection), falls are smoothed
        if active >= self.filtered_active:
            self.filtered_active = active
        else:
            self.filtered_active = 0.5 * self.filtered_active + 0.5 * active

    def _go_offline(self, why: str) -> None:
        self.log.warn('member {name}: {why}', name=self.name, why=why)
        self._set_state(OFFLINE, why)
        self._schedule(self.probe_interval, self._probe)

    # --- commands -----------------------------------------------------------------------------


    def suspect(self) -> None:
        """A command went unanswered: check with `V` now instead of waiting for the heartbeat."""
        if self.state != ONLINE or self._suspect_check:
            return
        self._suspect_check = True
        generation = self._generation

        def done(reply: str | None) -> None:
            self._suspect_check = False
            if generation == self._generation and (
                    reply is None or reply.strip() != protocol.PROTOCOL_VERSION):
                self._go_offline('no answer to a command, nor to the V probe after it')
        self.client.send('V', done, self.probe_timeout)
