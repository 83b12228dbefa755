"""Session sharing through Redis keyspace notifications: the I/O part.

Writes and reads take different roads (measurements and reasons: README, "Design"):

- writer (`RedisWriter`, on the reactor): the coalescing write-behind of OWN sessions in
  MULTI/EXEC transactions, the presence record every second (which also tells a Redis
  restart: `run_id` changed, and a second instance with our id: someone else's run token),
  TTL refreshes.  Non-blocking, so the control path never waits for it, and no thread
  competes with the reactor for the interpreter on every command;
- subscriber thread (redis-py): PSUBSCRIBEs to the peers' keyspace notifications and hands
  events to the reactor in batches; every subscribe confirmation (first or after a silent
  reconnect) triggers a full resync, because pub/sub loses events;
- reader thread (redis-py): HGETALLs for changed keys and SCAN-based resyncs, bulk work that
  would stall the reactor; results go to the reactor.

With <sentinel>, the writer asks the sentinels for the master (`SentinelLocator`), checks
that the node it reached is one (`INFO replication`), and a `SentinelWatch` follows
`+switch-master`; the threads use redis-py's Sentinel client, and a switch (or a node found
to be a replica) makes them reconnect at once: the subscriber resubscribes, which resyncs.

Every decision is taken by the sans-IO `core.sharing_state.SharingState` on the reactor
thread; this module only carries out its actions and feeds it what Redis answered.  Threads
only see immutable snapshots.
"""
from __future__ import annotations

import os
import time
from typing import Any, Callable
from urllib.parse import urlparse

import redis
import redis.sentinel
from twisted.internet import defer, task
from twisted.logger import Logger

from .. import __version__
from .redis_connection import database_of, keepalive_options, uses_tls
from .redis_sentinel import SentinelLocator, SentinelWatch
from .redis_threads import Backoff, SharingThreads
from .redis_writer import RedisWriter, TombstoneWrite
from ..core import sharing_actions as actions
from ..core.redis_checks import NOTIFY, POLICY, ServerChecks
from ..core.sentinel import Address, format_address
from ..core.sessions import DEFAULT_SESSION_TTL
from ..core.sharing import SharedSessionStore, SharingCounters
from ..core.sharing_state import PRESENCE_INTERVAL, Identity, SharingState

__all__ = ['RedisSharing', 'connection_kwargs', 'sentinel_kwargs', 'read_password', 'Backoff']


def connection_kwargs(config) -> dict[str, Any]:
    """redis-py options for the data nodes: URL, password, TLS settings and tunables."""
    return _with_password(_transport_kwargs(config), read_password(config))


def sentinel_kwargs(config) -> dict[str, Any]:
    """redis-py options for the sentinels: the same TLS and tunables, their own password."""
    return _with_password(_transport_kwargs(config), read_sentinel_password(config))


def _with_password(kwargs: dict[str, Any], password: str | None) -> dict[str, Any]:
    if password is not None:
        kwargs['password'] = password
    return kwargs


def _transport_kwargs(config) -> dict[str, Any]:
    kwargs: dict[str, Any] = {'socket_timeout': config.command_timeout_ms / 1000.0,
                              'socket_connect_timeout': config.connect_timeout_ms / 1000.0,
                              'encoding': 'latin-1'}     # as every text in the daemon
    unix = config.url is not None and urlparse(config.url).scheme == 'unix'
    if config.tcp_keepalive and not unix:
        kwargs.update(socket_keepalive=True,
                      socket_keepalive_options=keepalive_options(config.tcp_keepalive))
    if uses_tls(config):
        kwargs.update(ssl_cert_reqs='required', ssl_check_hostname=config.tls_verify_hostname)
        if config.sentinel is not None:
            kwargs['ssl'] = True          # a rediss:// url says so itself
        if config.tls_ca:
            kwargs['ssl_ca_certs'] = config.tls_ca
        if config.tls_cert:
            kwargs['ssl_certfile'] = config.tls_cert
        if config.tls_key:
            kwargs['ssl_keyfile'] = config.tls_key
    return kwargs


def read_password(config) -> str | None:
    if config.password_file:
        with open(config.password_file) as f:
            return f.read().strip()
    if config.password_env:
        return os.environ.get(config.password_env)
    return None


def read_sentinel_password(config) -> str | None:
    if config.sentinel_password_file:
        with open(config.sentinel_password_file) as f:
            return f.read().strip()
    return None


def sentinel_client(config) -> redis.Redis:
    """A redis-py client of the master the sentinels name (asked at every new connection)."""
    sentinels = redis.sentinel.Sentinel(
        list(config.sentinel.addresses),
        sentinel_kwargs=sentinel_kwargs(config),
        **connection_kwargs(config))
    return sentinels.master_for(config.sentinel.master, db=config.sentinel.db)


def describe_server(config, master: Address | None = None) -> str:
    """The server as `ls redis` shows it: the url without password, or the sentinels and
    the master they named last."""
    if config.sentinel is None:
        return _redact(config.url)
    sentinels = ','.join(format_address(a) for a in config.sentinel.addresses)
    found = format_address(master) if master is not None else 'not found yet'
    return 'sentinel %s@%s (master %s)' % (config.sentinel.master, sentinels, found)


def tunables(config) -> str:
    """The <redis> tunables as `ls redis` shows them, named as in the configuration."""
    return ' '.join('%s=%s' % (tag, getattr(config, tag)) for tag in (
        'command_timeout_ms', 'connect_timeout_ms', 'tcp_keepalive', 'reconnect_min_ms',
        'reconnect_max_ms', 'degraded_after'))


class RedisSharing(SharingThreads):
    """The Redis side of session sharing: a writer on the reactor, a subscriber thread and a
    reader thread (`SharingThreads`), driven by a `SharingState`."""

    log = Logger()

    def __init__(self, config, reactor, client_factory: Callable[[], Any] | None = None) -> None:
        self.config = config
        self.reactor = reactor
        self.db = database_of(config)
        self._client_factory = client_factory or self._default_client
        identity = Identity(config.instance_id, config.namespace, peers=tuple(config.peers),
                            session_ttl=config.session_ttl,
                            resync_interval=config.resync_interval,
                            final_timeout=config.final_timeout, version=__version__,
                            degraded_after=config.degraded_after)
        self.state = SharingState(identity, self._carry_out, wall_clock=time.time,
                                  mono_clock=time.monotonic)
        self.checks = ServerChecks(config.configure_notifications)
        self._logged_findings: tuple = ()
        self.locator: SentinelLocator | None = None
        self.watch: SentinelWatch | None = None
        endpoint_factory = None
        if config.sentinel is not None:
            self.locator = SentinelLocator(config, reactor,
                                           lambda: read_sentinel_password(config))
            endpoint_factory = self.locator.endpoint
            self.watch = SentinelWatch(config, reactor,
                                       password=lambda: read_sentinel_password(config),
                                       on_switch=self._on_switch, on_watching=self._recheck)
        self.writer = RedisWriter(config, reactor, on_ok=self.state.on_write_ok,
                                  on_failed=self.state.on_write_failed,
                                  on_server=self.state.on_server,
                                  on_connected=self._check_server,
                                  on_not_master=self._not_master,
                                  endpoint_factory=endpoint_factory,
                                  check_role=config.sentinel is not None,
                                  password=lambda: read_password(config),
                                  name='rtpc-%s' % config.instance_id)
        self._init_threads()
        self._loop: task.LoopingCall | None = None
        self._handlers: dict[type, Callable[[Any], None]] = {
            actions.Write: self._write, actions.Read: self._read, actions.Lookup: self._lookup,
            actions.Resync: self._resync_action, actions.LoadOwn: self._load_own,
            actions.ListOwn: self._list_own, actions.Subscribe: self._subscribe,
            actions.WritePresence: self._presence, actions.Refresh: self._refresh,
            actions.WhenFlushed: self._when_flushed, actions.Barrier: self._barrier,
            actions.Continue: self._continue, actions.Resume: self._resume,
            actions.Log: self._log}
        self._steps: set = set()           # delayed calls of the state's sliced work

    # --- what the admin socket and the runtime see --------------------------------------------

    @property
    def instance_id(self) -> str:
        return self.state.instance_id

    @property
    def namespace(self) -> str:
        return self.state.namespace

    @property
    def stores(self) -> dict[str, SharedSessionStore]:
        return self.state.stores

    @property
    def counters(self) -> SharingCounters:
        return self.state.counters

    @property
    def degraded(self) -> bool:
        return self.state.link.degraded

    @property
    def peers(self) -> dict[str, dict]:
        return self.state.peers_view.info

    @property
    def subscribed(self) -> set[str]:
        return self.state.peers_view.subscribed

    @property
    def auto_peers(self) -> bool:
        return self.state.peers_view.auto

    def follows(self, peer: str) -> bool:
        return self.state.peers_view.follows(peer)

    def store_for(self, cluster: str, ttl: float = DEFAULT_SESSION_TTL) -> SharedSessionStore:
        return self.state.store_for(cluster, ttl)

    def subscribe(self, peer: str) -> None:
        self.state.subscribe(peer)

    def unsubscribe(self, peer: str) -> int:
        return self.state.unsubscribe(peer)

    def request_resync(self) -> None:
        self.state.request_resync()

    def queue_depth(self) -> int:
        return self.writer.depth

    def queued_op(self, key: str) -> str:
        """What the writer still has to do for `key`: 'no', 'delete' or 'write (STATE)'."""
        queued = self.writer.queued(key)
        if queued is False:
            return 'no'
        return 'delete' if queued is None else 'write (%s)' % queued().get('state', '?')

    def status(self) -> dict[str, Any]:
        state = self.state
        own, foreign = state.stores.ownership_counts()
        master = self.locator.current if self.locator is not None else None
        return {'instance_id': state.instance_id, 'url': describe_server(self.config, master),
                'sentinel_watch': self._watch_text(),
                'state': 'degraded' if state.link.degraded else 'connected',
                'subscriber': 'connected' if state.subscriber_connected else 'disconnected',
                'queue_depth': self.queue_depth(), 'last_error': state.last_error,
                'writes': self.writer.writes_ok, 'transactions': self.writer.transactions,
                'last_flush_ms': self.writer.last_flush_ms,
                'duplicate': dict(state.duplicate) if state.duplicate_active else {},
                'last_resync': dict(state.last_resync),
                'resyncs': state.redis_counters.resyncs, 'events': state.events_received,
                'bad_events': state.bad_events, 'own': own, 'foreign': foreign,
                'counters': state.counters.as_dict(), 'redis_run_id': state.link.redis_run_id or '',
                'synced_run_id': state.link.synced_run_id, 'tunables': tunables(self.config),
                'checks': ([(f.level, f.text) for f in self.checks.findings]
                           if self.checks.checked else None)}

    def _watch_text(self) -> str | None:
        """Where +switch-master is followed, for `ls redis` (None without <sentinel>)."""
        if self.watch is None:
            return None
        where = (format_address(self.watch.watching) if self.watch.watching is not None
                 else 'no sentinel reachable')
        return '%s (switches seen: %d)' % (where, self.watch.switches)

    # --- life cycle ----------------------------------------------------------------------------

    def _default_client(self):
        if self.config.sentinel is not None:
            return sentinel_client(self.config)
        return redis.Redis.from_url(self.config.url, **connection_kwargs(self.config))

    def start(self) -> None:
        self.writer.start()
        if self.watch is not None:
            self.watch.start()
        self.state.start()
        self._start_threads()
        self._loop = task.LoopingCall(self.state.tick)
        self._loop.clock = self.reactor
        self._loop.start(PRESENCE_INTERVAL, now=False)

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        for call in list(self._steps):
            if call.active():
                call.cancel()
        self._steps.clear()
        self.writer.stop()
        if self.watch is not None:
            self.watch.stop()
        self._stop_threads()

    # --- carrying out the state's actions (reactor) -------------------------------------------

    def _carry_out(self, action: actions.Action) -> None:
        self._handlers[type(action)](action)

    def _write(self, action: actions.Write) -> None:
        if action.shadows:
            self.writer.queue(action.key, TombstoneWrite(action.op, list(action.shadows)))
        else:
            self.writer.queue(action.key, action.op)

    def _read(self, action: actions.Read) -> None:
        self._reads.put(('read', list(action.keys)))

    def _lookup(self, action: actions.Lookup) -> None:
        self._reads.put(('lookup', (action.token, list(action.keys))))
        self.reactor.callLater(action.deadline, self.state.on_lookup_deadline, action.token)

    def _resync_action(self, action: actions.Resync) -> None:
        self._reads.put(('resync', action.since))

    def _load_own(self, action: actions.LoadOwn) -> None:
        self._reads.put(('load_own', None))

    def _list_own(self, action: actions.ListOwn) -> None:
        self._reads.put(('clean_own', None))

    def _subscribe(self, action: actions.Subscribe) -> None:
        space = '__keyspace@%d__:' % self.db
        self._patterns = [space + pattern for pattern in action.patterns]
        self._patterns_changed.set()

    def _presence(self, action: actions.WritePresence) -> None:
        self.writer.write_presence(action.key, dict(action.mapping), action.ttl_ms)

    def _refresh(self, action: actions.Refresh) -> None:
        self.writer.refresh(list(action.keys))

    def _when_flushed(self, action: actions.WhenFlushed) -> None:
        self.writer.when_flushed(lambda: self.state.on_synced(action.run_id))

    def _barrier(self, action: actions.Barrier) -> None:
        self.writer.when_flushed(lambda: self.state.on_barrier(action.number))

    def _continue(self, action: actions.Continue) -> None:
        """Run the step on the next reactor turns until it says it is done."""
        def run() -> None:
            self._steps.discard(call)
            if action.step():
                schedule()

        def schedule() -> None:
            nonlocal call
            call = self.reactor.callLater(0, run)
            self._steps.add(call)
        call = None
        schedule()

    def _resume(self, action: actions.Resume) -> None:
        action.then()

    def _log(self, action: actions.Log) -> None:
        emit = {'info': self.log.info, 'warn': self.log.warn}.get(action.level, self.log.error)
        emit(action.text, **action.fields)

    # --- the master moved (reactor) ----------------------------------------------------------

    def _on_switch(self, address: Address) -> None:
        """+switch-master: the writer leaves the old master now, the threads follow."""
        self.log.warn('redis: the sentinels switched the master of {name} to {address}',
                      name=self.config.sentinel.master, address=format_address(address))
        self.writer.master_switched('the sentinels switched the master to %s'
                                    % format_address(address))
        self.master_moved()

    def _recheck(self) -> None:
        """(Re)subscribed to +switch-master: a switch published meanwhile was missed."""
        def compare(address: Address) -> None:
            current = self.locator.current
            if current is not None and address != current:
                self._on_switch(address)
        self.locator.locate().addCallbacks(compare, lambda failure: None)

    def _not_master(self, why: str) -> None:
        """The writer's node is not the master, or the master was switched: the threads
        leave it too, once per search (each of their reconnects costs a resync; while the
        sentinels still name a demoted node, the writer finds it a replica at every try)."""
        searching = bool(self.state.link.rewrite_due)
        self.state.on_new_master(why)
        if not searching:
            self.master_moved()

    # --- checks of the server's configuration, at every (re)connect of the writer ----------

    def _check_server(self) -> None:
        self.checks.connected()
        self._ask_config()

    def _ask_config(self) -> None:
        asked = [self.writer.command('CONFIG', 'GET', name) for name in (NOTIFY, POLICY)]
        d = defer.gatherResults(asked, consumeErrors=True)
        # a lost connection is not a finding: the next connect checks again
        d.addCallbacks(self._on_config, lambda failure: None)

    def _on_config(self, replies: list) -> None:
        value = self.checks.on_config(*replies)
        if value is not None:
            d = self.writer.command('CONFIG', 'SET', NOTIFY, value)
            d.addCallbacks(self._on_config_set, lambda failure: None)
            return
        if self.checks.findings != self._logged_findings:
            if not self.checks.findings:
                self.log.info('redis: the configuration checks pass now')
            self._logged_findings = self.checks.findings
            for finding in self.checks.findings:
                emit = {'info': self.log.info, 'warn': self.log.warn}.get(finding.level,
                                                                           self.log.error)
                emit('redis: {finding}', finding=finding.text)

    def _on_config_set(self, reply) -> None:
        self.checks.on_set(reply)
        self._ask_config()
        self.state.request_resync(repair=True)   # changes made while no events came

def _redact(url: str) -> str:
    parsed = urlparse(url)
    if parsed.password:
        return url.replace(':%s@' % parsed.password, ':***@')
    return url
