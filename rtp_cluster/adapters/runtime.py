"""The running daemon's state: clusters, their control sockets and members, built from config.

`reload()` makes the running state match a new configuration without losing sessions: a
member whose control address did not change keeps its sessions and health state, changed
weight/capacity/status apply at once, members that disappeared are drained.
"""
from __future__ import annotations

import secrets
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from ..core.cluster import Cluster, ClusterCounters
from ..core.config import (ClusterConfig, Config, ConfigError, HttpConfig, MemberConfig,
                           load_config)
from ..core.counters import CommandStats, CounterGroup, Histogram, Registry
from ..core.loops import member_loop, own_sockets
from ..core.member import Member, MemberCounters
from ..core.notify_auth import KEY_BYTES, NotifyAuthenticator
from .admin_sessions import BulkWork
from .local_sockets import forwarding_loops, is_local_ip, resolve_socket
from .logcontrol import LogLevels
from .notify import NotifyRelay, RelayCounters
from .systemd import SystemdNotifier, status_line
from ..core.sessions import DEFAULT_SESSION_TTL, SessionStore
from .transports import (ControlCounters, StartupError, StreamControlFactory, UDPControlServer,
                         listen_unix, make_member_client)

__all__ = ['Runtime', 'StartupError']

RTT_HISTOGRAM = 'rtp_cluster_member_rtt_seconds'
COMMAND_STATS = 'rtp_cluster_commands'


class Runtime:
    log = Logger()

    def __init__(self, config: Config, config_path: str, reactor, sock_owner=None,
                 admin_spec: str | None = None, probe_interval: float = 2.0,
                 admin_secret: str | None = None, log_levels: LogLevels | None = None,
                 notifier: SystemdNotifier | None = None) -> None:
        self.config = config
        self.config_path = config_path
        self.reactor = reactor
        self.sock_owner = sock_owner
        self.admin_spec = admin_spec
        self.admin_secret = admin_secret
        self.probe_interval = probe_interval
        self.clusters: dict[str, Cluster] = {}
        self.metrics = Registry()     # every counter, kept by labels across reloads
        self._servers: dict[str, Any] = {}
        self.admin = None
        self.relays: dict[str, NotifyRelay] = {}
        # signs the notify tags the relays deliver; kept for the process (reloads included)
        self.notify_key = secrets.token_bytes(KEY_BYTES)
        self._member_ports: set[int] = set()    # UDP ports our member clients send from
        self.sharing = None
        if config.redis is not None:
            from .redis_sharing import RedisSharing
            self.sharing = RedisSharing(config.redis, reactor)
        self.extensions: list[Any] = []   # e.g. the notification relays, the Redis sharer
        self.bulk = BulkWork(reactor)     # admin work done in slices (terminate all)
        self.http = None
        self.started = reactor.seconds()
        self.log_levels = log_levels if log_levels is not None else LogLevels()
        self.log_levels.set(config.log_level)
        self.notifier = notifier if notifier is not None else SystemdNotifier({})

    # --- life cycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Bind every socket and start probing members; StartupError leaves nothing open."""
        try:
            for cluster_config in self.config.clusters:
                self._start_cluster(cluster_config)
            if self.sharing is not None:
                self.sharing.start()
            self._sync_http(self.config.http)
            if self.admin_spec:
                from .admin_socket import AdminServer   # the admin socket is optional in tests
                self.admin = AdminServer(self, self.admin_spec, self.sock_owner,
                                         secret=self.admin_secret)
                self.admin.listen(self.reactor)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> defer.Deferred:
        self.bulk.stop()
        waits = []
        if self.http is not None:
            waits.append(defer.maybeDeferred(self.http.stop))
            self.http = None
        if self.admin is not None:
            waits.append(defer.maybeDeferred(self.admin.stop))
            self.admin = None
        for name in list(self.clusters):
            waits.append(self._stop_cluster(name))
        if self.sharing is not None:
            self.sharing.stop()
        return defer.DeferredList(waits)

    # --- clusters -------------------------------------------------------------------------------

    def _start_cluster(self, config: ClusterConfig) -> Cluster:
        cluster = Cluster(config, self.reactor, store=self._session_store(config.name),
                          counters=self.metrics.group(ClusterCounters, cluster=config.name))
        cluster.on_member_removed = lambda member: self._member_removed(cluster)
        self._servers[config.name] = self._listen(config, cluster)
        self.clusters[config.name] = cluster
        for member_config in config.members:
            self.add_member(cluster, member_config)
        self._sync_relay(cluster)
        cluster.start()
        self.log.info('cluster {name} listening on {endpoint} with {n} members',
                      name=config.name, endpoint=str(config.endpoint), n=len(config.members))
        return cluster

    def _session_store(self, name: str) -> SessionStore | None:
        """Shared through Redis when configured, else in memory (None: the cluster's default)."""
        if self.sharing is None:
            return None
        return self.sharing.store_for(name, DEFAULT_SESSION_TTL)

    def _listen(self, config: ClusterConfig, cluster: Cluster):
        endpoint = config.endpoint
        stats = self.command_stats(config.name)
        if endpoint.protocol == 'unix':
            factory = StreamControlFactory(cluster.handle, self.reactor, stats=stats)
            return listen_unix(self.reactor, endpoint.path, factory, self.sock_owner)
        server = UDPControlServer(cluster.handle, self.reactor, stats=stats,
                                  cache_bytes=config.reply_cache_bytes,
                                  is_own_source=self._is_own_source,
                                  counters=self.control_counters(config.name))
        server.listen(self.reactor, endpoint.host, endpoint.port)
        return server

    def _stop_cluster(self, name: str) -> defer.Deferred:
        cluster = self.clusters.pop(name)
        cluster.stop()
        self._sync_member_ports()
        relay = self.relays.pop(name, None)
        if relay is not None:
            relay.stop()
        server = self._servers.pop(name)
        return defer.maybeDeferred(_close_server, server)

    def _sync_relay(self, cluster: Cluster) -> None:
        """Start, restart or stop the cluster's notify relay; allow its remote members."""
        wanted = cluster.config.disconnect_notify
        relay = self.relays.get(cluster.name)
        if relay is not None and relay.config != wanted:
            if wanted is not None and relay.same_address(wanted):
                relay.reconfigure(wanted)     # rebinding the same port would race the close
            else:
                relay.stop()
                del self.relays[cluster.name]
                relay = None
        if relay is None and wanted is not None:
            relay = NotifyRelay(wanted, self.reactor,
                                NotifyAuthenticator(self.notify_key, cluster.name),
                                counters=self.metrics.group(RelayCounters, cluster=cluster.name))
            relay.listen()
            self.relays[cluster.name] = relay
        if relay is not None:
            relay.set_allowed(member.client.address[0] for member in cluster.members.values()
                              if not member.is_local)
        cluster.rewriter.allow_tcp_notify_target = (
            relay.allow_tcp_target if relay is not None else None)
        cluster.rewriter.notify_auth = relay.auth if relay is not None else None

    def _sync_http(self, config: HttpConfig | None) -> None:
        """Start, move or stop the HTTP listener (metrics, health, status page)."""
        if self.http is not None:
            self.http.stop()
            self.http = None
        if config is not None:
            from .http import HttpServer     # twisted.web and prometheus_client only when used
            server = HttpServer(self, config)
            server.listen(self.reactor)
            self.http = server

    def add_member(self, cluster: Cluster, config: MemberConfig) -> Member:
        """Start member `config` in `cluster`; ValueError if it exists or would loop back."""
        if config.name in cluster.members:
            raise ValueError('%s: RTPproxy already exists' % config.name)
        self._refuse_loop(config)
        client = make_member_client(self.reactor, config.endpoint, config.cmd_out_address)
        counters = self.metrics.group(MemberCounters, cluster=cluster.name, member=config.name)
        client.use_counters(counters, self.rtt_histogram(cluster.name, config.name))
        client.start()
        member = Member(config, client, self.reactor, probe_interval=self.probe_interval,
                        counters=counters, cluster=cluster.name)
        cluster.add_member(member)
        member.start()
        self._sync_relay(cluster)
        self._sync_member_ports()
        return member

    def _member_removed(self, cluster: Cluster) -> None:
        self._sync_relay(cluster)
        self._sync_member_ports()

    def _sync_member_ports(self) -> None:
        ports = {getattr(member.client, 'local_port', None)
                 for cluster in self.clusters.values() for member in cluster.members.values()}
        ports.discard(None)
        self._member_ports.clear()
        self._member_ports.update(ports)

    def _is_own_source(self, addr) -> bool:
        """Did one of our own member clients send this datagram?  O(1) for other clients."""
        return addr[1] in self._member_ports and is_local_ip(addr[0])

    def _refuse_loop(self, config: MemberConfig) -> None:
        own = own_sockets(((name, cluster.config.endpoint)
                           for name, cluster in self.clusters.items()), resolve_socket)
        problem = member_loop(config.name, config.endpoint, own, resolve_socket)
        if problem is not None:
            raise ValueError(problem)

    def command_stats(self, cluster: str) -> CommandStats:
        return self.metrics.get(COMMAND_STATS, CommandStats, cluster=cluster)

    def control_counters(self, cluster: str) -> CounterGroup:
        return self.metrics.group(ControlCounters, cluster=cluster)

    def rtt_histogram(self, cluster: str, member: str) -> Histogram:
        return self.metrics.histogram(RTT_HISTOGRAM, cluster=cluster, member=member)

    # --- reload ------------------------------------------------------------------------------------

    def reload(self) -> tuple[int, int]:
        """Re-read the config file and apply it; on a config error nothing changes."""
        self.notifier.reloading()
        try:
            new = load_config(self.config_path)
            problems = forwarding_loops(new)
            if problems:
                raise ConfigError('%s: %s' % (self.config_path, '; '.join(problems)))
            if new.redis != self.config.redis:
                self.log.warn('reload: changed <redis> settings take effect at the next restart')
            self.apply(new)
        finally:
            self.notifier.ready(status_line(self.clusters.values()))
        nclusters, nmembers = len(new.clusters), sum(len(c.members) for c in new.clusters)
        self.log.info('reload: {nclusters} clusters, {nmembers} members', event='reload',
                      nclusters=nclusters, nmembers=nmembers)
        return nclusters, nmembers

    def apply(self, new: Config) -> None:
        wanted = {c.name for c in new.clusters}
        for name in [n for n in self.clusters if n not in wanted]:
            self.log.info('cluster {name} removed by reload', name=name)
            self._stop_cluster(name)
        for cluster_config in new.clusters:
            cluster = self.clusters.get(cluster_config.name)
            if cluster is None:
                self._start_cluster(cluster_config)
            else:
                self._update_cluster(cluster, cluster_config)
        if new.log_level != self.config.log_level:
            self.log_levels.set(new.log_level)
        if new.http != self.config.http:
            try:
                self._sync_http(new.http)
            except StartupError as exc:
                self.log.error('reload: {error}; the HTTP listener is off', error=str(exc))
        self.config = new

    def _update_cluster(self, cluster: Cluster, config: ClusterConfig) -> None:
        if config.endpoint != cluster.config.endpoint:
            old_server = self._servers.pop(config.name)
            _close_server(old_server)
            self._servers[config.name] = self._listen(config, cluster)
        elif isinstance(self._servers[config.name], UDPControlServer):
            self._servers[config.name].cache.resize(config.reply_cache_bytes)
        cluster.config = config
        wanted = {m.name for m in config.members}
        for name in [n for n in cluster.members if n not in wanted]:
            cluster.drain_member(name)
        for member_config in config.members:
            member = cluster.members.get(member_config.name)
            if member is None:
                self.add_member(cluster, member_config)
            elif _same_transport(member.config, member_config):
                member.apply_config(member_config, revive=True)
            else:
                self._replace_member(cluster, member, member_config)
        self._sync_relay(cluster)

    def _replace_member(self, cluster: Cluster, member: Member, config: MemberConfig) -> None:
        """New control address: new client and health state; its sessions stay bound by name."""
        member.stop()
        del cluster.members[member.name]
        self.add_member(cluster, config).take_history_from(member)


def _close_server(server):
    """A control server: our UDPControlServer (stop) or a Twisted unix port (stopListening)."""
    return server.stop() if hasattr(server, 'stop') else server.stopListening()


def _same_transport(a: MemberConfig, b: MemberConfig) -> bool:
    return a.endpoint == b.endpoint and a.cmd_out_address == b.cmd_out_address


def sock_owner_ids(spec: str) -> tuple[int, int]:
    """'user:group' → (uid, gid); ValueError with a readable message."""
    import grp
    import pwd
    user, _, group = spec.partition(':')
    try:
        uid = pwd.getpwnam(user).pw_uid if user else -1
    except KeyError:
        raise ValueError('unknown user %r' % user) from None
    try:
        gid = grp.getgrnam(group).gr_gid if group else -1
    except KeyError:
        raise ValueError('unknown group %r' % group) from None
    return uid, gid

