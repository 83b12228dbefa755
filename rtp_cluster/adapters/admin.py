"""The admin interface: a line-based command language on a unix or TCP stream socket.

The language is an `AdminRegistry` (admin_registry.py): this module registers the
cluster commands, admin_sessions.py the session ones, admin_sharing.py the session-sharing
ones.  `AdminCommands.execute(line)`
runs one line and does no I/O: it reads the `Runtime`, changes it only through its and its
clusters' methods, and returns an `AdminReply` (lines ending with `OK`, or one
`ERROR: ...` line).  `AdminProtocol` and `AdminServer` only move lines between a socket
and it.

The commands and their output are those of sippy's original rtp_cluster (operators'
scripts parse them): `ls`, `ls CLUSTER`, `modify CLUSTER add|delete|remove|pause|resume`,
`reload`, `help`, `quit`; `ls [CLUSTER] --json` is an addition.  Addresses are printed as
`HOST:PORT`, `[IPV6]:PORT` or `/path`, as the current original prints them.
"""
from __future__ import annotations

import os
import stat
import time
from typing import Any, Callable, Iterable

from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.logger import Logger

from ..core import config_schema
from ..core.admin_auth import AuthGate
from ..core.admin_text import escape, guard_line, json_line
from ..core.cluster import MemberDraining
from ..core.config import ConfigError, FieldError, MemberConfig, member_from_fields
from ..core.endpoints import Endpoint, parse_admin_socket
from ..core.member import ACTIVE, DRAINING, SUSPENDED
from . import admin_sessions, admin_sharing
from .admin_registry import (
    AdminCommand, AdminError, AdminRegistry, AdminReply, UsageError, one_line, show_input,
    stream_failure,
)
from .streams import BoundedStreamFactory, BoundedStreamProtocol, StreamLimits, connection_limit
from .transports import StartupError, listen_unix

__all__ = ['AdminReply', 'AdminError', 'AdminCommands', 'AdminProtocol', 'AdminFactory',
           'AdminServer', 'build_registry', 'MAX_LINE', 'MAX_CONNECTIONS']

MAX_LINE = 64 * 1024            # bytes in one command line, line end not counted
MAX_CONNECTIONS = connection_limit(256, 8)      # simultaneous admin clients
AUTH_LOG_INTERVAL = 10.0        # s between log lines about refused admin secrets

ADD_KEYS = tuple(row.tag for row in config_schema.add_keys())
ADD_REQUIRED = tuple(row.tag for row in config_schema.required_add_keys())
ADD_USAGE = config_schema.add_usage()
MODIFY_USAGE = 'modify CLUSTER add|delete|remove|pause|resume ARGS'
MEMBER_ACTIONS = ('delete', 'remove', 'pause', 'suspend', 'resume')

log = Logger(namespace='rtp_cluster.admin')
_show = show_input


# --- the command language ----------------------------------------------------------------------

class AdminCommands:
    """The admin command language over a Runtime (`clusters`, `add_member`, `reload`)."""

    def __init__(self, runtime, registry: AdminRegistry | None = None) -> None:
        self.runtime = runtime
        self.registry = registry if registry is not None else build_registry()

    def execute(self, line: str) -> AdminReply:
        """Run one command line; never raises."""
        return self.registry.execute(self.runtime, line)


def build_registry() -> AdminRegistry:
    """Every admin command: the cluster commands, help, quit, the session and the sharing
    commands."""
    registry = AdminRegistry()
    registry.add(AdminCommand(
        ('ls',), 'ls [CLUSTER_NAME] [--json]', _ls,
        description='Without a cluster: every cluster with its control address and its numbers '
                    'of online and offline members.  With a cluster: every member with its '
                    'address, weight, capacity, state (online or offline), active sessions and '
                    'status (ACTIVE, SUSPENDED or DRAINING).  --json gives the same as one line '
                    'of JSON.'))
    registry.add(AdminCommand(
        ('modify',), 'modify CLUSTER_NAME [add|remove|delete|pause|resume] ARGS', _modify,
        details=(config_schema.add_usage('CLUSTER_NAME'),
                 'modify CLUSTER_NAME %s RTPPROXY_NAME' % '|'.join(
                     ('remove', 'delete', 'pause', 'suspend', 'resume'))),
        description='add: a new member, with the keys of its <rtpproxy> element (status ACTIVE '
                    'unless given).  delete (or remove): take the member out of rotation; it is '
                    'removed once it has no sessions left.  pause (or suspend): no new sessions '
                    'on the member, existing ones continue.  resume: new sessions again.  '
                    'Changes live in memory only: reload makes the running state match the '
                    'file again.'))
    registry.add(AdminCommand(
        ('reload',), 'reload', _reload,
        description='Re-read the configuration file, as SIGHUP does; on an error the running '
                    'state is kept and the error is the reply.'))
    registry.add(AdminCommand(
        ('set', 'loglevel'), 'set loglevel debug|info|warn|error|critical', _set_loglevel,
        description='Change the log level at once (until a reload brings a changed '
                    '<log_level>).'))
    registry.add(AdminCommand(('help',), 'help', lambda runtime, args: registry.help_lines(),
                              aliases=(('h',),), description='List the commands.'))
    registry.add(AdminCommand(('quit',), 'quit', _quit, aliases=(('q',), ('exit',)),
                              description='Close the connection.'))
    registry.add(AdminCommand(
        ('auth',), 'auth SECRET', _auth,
        description='The first line on a TCP admin socket of a daemon started with '
                    '--admin-secret-file (rtp_cluster_client --secret-file sends it).  Anywhere '
                    'else it is refused: the connection is authenticated already, or the admin '
                    'socket has no secret.'))
    admin_sessions.register(registry)
    admin_sharing.register(registry)
    return registry


def _cluster(runtime, name: str) -> tuple[int, Any]:
    for index, (cluster_name, cluster) in enumerate(runtime.clusters.items()):
        if cluster_name == name:
            return index, cluster
    raise AdminError('%s: cluster not found' % _show(name))


# --- ls ------------------------------------------------------------------------------------------

def _ls(runtime, args: str) -> list[str]:
    name, as_json = _split_json_flag(args)
    if not name:
        clusters = list(runtime.clusters.values())
        if as_json:
            return [_dumps({'clusters': [cluster_summary_dict(i, c)
                                         for i, c in enumerate(clusters)]})]
        return format_clusters(clusters)
    index, cluster = _cluster(runtime, name)
    if as_json:
        return [_dumps(cluster_detail_dict(index, cluster))]
    return format_cluster_members(index, cluster)


def _split_json_flag(args: str) -> tuple[str, bool]:
    """'NAME --json' / '--json NAME' / '--json' -> (NAME or '', True)."""
    text = args.strip()
    if text == '--json':
        return '', True
    if text.endswith(' --json') or text.endswith('\t--json'):
        return text[:-len('--json')].strip(), True
    if text.startswith('--json ') or text.startswith('--json\t'):
        return text[len('--json'):].strip(), True
    return text, False


# --- modify --------------------------------------------------------------------------------------

def _modify(runtime, args: str) -> list[str]:
    parts = args.split(None, 2)
    if not parts:
        raise AdminError('usage: ' + MODIFY_USAGE)
    _, cluster = _cluster(runtime, parts[0])
    if len(parts) < 2:
        raise AdminError('usage: ' + MODIFY_USAGE)
    action, rest = parts[1], parts[2].strip() if len(parts) > 2 else ''
    if action == 'add':
        return _add(runtime, cluster, rest)
    if action in MEMBER_ACTIONS:
        return _change(cluster, action, rest)
    raise AdminError('modify: unknown action "%s"; expected add, delete, remove, pause or '
                     'resume' % _show(action))


def _add(runtime, cluster, args: str) -> list[str]:
    values = parse_add_args(args)
    if values['name'] in cluster.members:
        raise AdminError('%s: RTPproxy already exists' % _show(values['name']))
    config = member_config_from_args(values)
    try:
        runtime.add_member(cluster, config)
    except (StartupError, ValueError, OSError) as exc:
        raise AdminError('modify add: %s' % exc) from None
    log.info('admin: cluster {cluster}: member {name} added ({endpoint}, status {status})',
             cluster=cluster.name, name=config.name, endpoint=str(config.endpoint),
             status=config.status)
    return []


def _change(cluster, action: str, name: str) -> list[str]:
    if not name:
        raise AdminError('usage: modify CLUSTER %s NAME' % action)
    if name not in cluster.members:
        raise AdminError('%s: RTPproxy not found' % _show(name))
    if action in ('delete', 'remove'):
        cluster.drain_member(name)
        what = 'draining' if name in cluster.members else 'removed'
        log.info('admin: cluster {cluster}: member {name} {what}', cluster=cluster.name,
                 name=name, what=what)
        return []
    change = cluster.resume_member if action == 'resume' else cluster.pause_member
    try:
        member = change(name)
    except MemberDraining:
        raise AdminError('%s: RTPproxy is being removed (draining); it cannot be paused or '
                         'resumed' % _show(name)) from None
    log.info('admin: cluster {cluster}: member {name} is now {status}', cluster=cluster.name,
             name=name, status=member.status)
    return []


# --- reload, quit --------------------------------------------------------------------------------

def _reload(runtime, args: str) -> list[str]:
    if args.strip():
        raise AdminError('usage: reload (it takes no arguments)')
    try:
        nclusters, nmembers = runtime.reload()
    except ConfigError as exc:
        log.error('admin: reload failed, keeping the running configuration: {error}',
                  error=one_line(str(exc)))
        raise AdminError(str(exc)) from None
    except (StartupError, ValueError, OSError) as exc:
        log.error('admin: reload failed: {error}', error=one_line(str(exc)))
        raise AdminError('reload failed: %s' % exc) from None
    log.info('admin: Loaded {nclusters} clusters and {nmembers} RTP proxies',
             nclusters=nclusters, nmembers=nmembers)
    return ['Loaded %d clusters and %d RTP proxies' % (nclusters, nmembers)]


def _auth(runtime, args: str) -> list[str]:
    # reached only once the connection's AuthGate is open (or there is none)
    raise AdminError('no authentication needed: this connection is authenticated already, or '
                     'the admin socket has no --admin-secret-file')


def _set_loglevel(runtime, args: str) -> list[str]:
    if len(args.split()) != 1:
        raise UsageError('one log level expected')
    try:
        level = runtime.log_levels.set(args)
    except ValueError as exc:
        raise AdminError(str(exc)) from None
    log.info('admin: log level is now {new_level}', new_level=level)
    return ['log level: %s' % level]


def _quit(runtime, args: str) -> AdminReply:
    return AdminReply(close=True)


# --- modify add arguments ------------------------------------------------------------------------

def parse_add_args(text: str) -> dict[str, str]:
    """`name=N,protocol=P,...` -> {key: value}; AdminError names the first problem."""
    if not text:
        raise AdminError('usage: ' + ADD_USAGE)
    values: dict[str, str] = {}
    for item in text.split(','):
        key, sep, value = item.partition('=')
        key, value = key.strip(), value.strip()
        if not sep or not key:
            raise AdminError('modify add: "%s" is not KEY=VALUE; usage: %s'
                             % (_show(item.strip()), ADD_USAGE))
        if key not in ADD_KEYS:
            raise AdminError('modify add: unknown key "%s"; expected %s'
                             % (_show(key), ', '.join(ADD_KEYS)))
        if key in values:
            raise AdminError('modify add: duplicate key "%s"' % key)
        if not value:
            raise AdminError('modify add: %s is empty; usage: %s' % (key, ADD_USAGE))
        values[key] = value
    missing = [key for key in ADD_REQUIRED if key not in values]
    if missing:
        raise AdminError('modify add: missing %s; usage: %s' % (', '.join(missing), ADD_USAGE))
    return values


def member_config_from_args(values: dict[str, str]) -> MemberConfig:
    """The member of `modify add`, checked by the configuration schema; AdminError if refused."""
    try:
        return member_from_fields(values)
    except FieldError as exc:
        problem = config_schema.add_problem(exc.row)
        raise AdminError('modify add: ' + problem.format(
            key=exc.row.tag, text=_show(exc.text), error=exc.reason)) from None


# --- ls output ---------------------------------------------------------------------------------

def format_clusters(clusters: Iterable[Any]) -> list[str]:
    """`ls`: one block per cluster, blocks separated by an empty line."""
    lines: list[str] = []
    for index, cluster in enumerate(clusters):
        if index:
            lines.append('')
        counts = _counts(cluster)
        lines += ['Cluster: #%d' % index,
                  '    name = %s' % escape(cluster.name),
                  '    address = %s' % cluster.config.endpoint.address,
                  '    online members = %(online)d (%(active)d active, %(suspended)d suspended, '
                  '%(draining)d draining)' % counts,
                  '    offline members = %(offline)d' % counts]
    return lines


def _counts(cluster) -> dict[str, int]:
    online = cluster.online_members()
    statuses = [member.status for member in online]
    return {'online': len(online), 'active': statuses.count(ACTIVE),
            'suspended': statuses.count(SUSPENDED), 'draining': statuses.count(DRAINING),
            'offline': len(cluster.offline_members())}


def format_cluster_members(index: int, cluster) -> list[str]:
    """`ls CLUSTER`: online members sorted by name, then offline members in cluster order."""
    lines = ['Online members of the cluster #%d:' % index]
    online = sorted(cluster.online_members(), key=lambda member: member.name)
    lines += _member_blocks(online, _online_member_lines)
    lines += ['', 'Offline members of the cluster #%d:' % index]
    offline = cluster.offline_members()
    lines += _member_blocks(offline, _offline_member_lines)
    if not offline:
        lines.append('')
    return lines


def _member_blocks(members: list, describe: Callable[[Any], list[str]]) -> list[str]:
    lines: list[str] = []
    for index, member in enumerate(members):
        if index:
            lines.append('')
        lines.append('    RTPproxy: #%d' % index)
        lines += describe(member)
    return lines


def _member_head(member) -> list[str]:
    config = member.config
    lines = ['        name = %s' % escape(member.name),
             '        address = %s' % config.endpoint.address]
    for key in ('wan_address', 'lan_address', 'cmd_out_address'):
        value = getattr(config, key)
        if value is not None:
            lines.append('        %s = %s' % (key, escape(str(value))))
    lines += ['        weight = %d' % config.weight, '        capacity = %d' % config.capacity]
    return lines


def _online_member_lines(member) -> list[str]:
    sessions = member.active_sessions
    return _member_head(member) + [
        '        state = online',
        '        active sessions = %s' % ('UNKNOWN' if sessions is None else '%d' % sessions),
        '        capacity utilization = %f%%' % (member.utilisation() * 100.0),
        '        average rtpc delay = %f sec' % member.rtt,
        '        status = %s' % member.status]


def _offline_member_lines(member) -> list[str]:
    return _member_head(member) + ['        state = offline']


# --- ls --json ---------------------------------------------------------------------------------

def _dumps(value: Any) -> str:
    return json_line(value)


def cluster_summary_dict(index: int, cluster) -> dict[str, Any]:
    counts = _counts(cluster)
    return {'index': index, 'name': cluster.name,
            'protocol': cluster.config.endpoint.protocol,
            'address': cluster.config.endpoint.address,
            'online_members': counts['online'], 'active': counts['active'],
            'suspended': counts['suspended'], 'draining': counts['draining'],
            'offline_members': counts['offline']}


def cluster_detail_dict(index: int, cluster) -> dict[str, Any]:
    online = sorted(cluster.online_members(), key=lambda member: member.name)
    return {'index': index, 'name': cluster.name,
            'protocol': cluster.config.endpoint.protocol,
            'address': cluster.config.endpoint.address,
            'online': [member_dict(member) for member in online],
            'offline': [member_dict(member) for member in cluster.offline_members()]}


def member_dict(member) -> dict[str, Any]:
    """Every field of the text form; numbers as numbers, unknown or unset values as null."""
    config = member.config
    online = member.online
    return {'name': member.name, 'protocol': config.endpoint.protocol,
            'address': config.endpoint.address, 'wan_address': config.wan_address,
            'lan_address': config.lan_address, 'cmd_out_address': config.cmd_out_address,
            'weight': config.weight, 'capacity': config.capacity,
            'state': 'online' if online else 'offline',
            'active_sessions': member.active_sessions if online else None,
            'capacity_utilization': member.utilisation() * 100.0 if online else None,
            'average_rtpc_delay': member.rtt if online else None,
            'status': member.status}


# --- the socket side ---------------------------------------------------------------------------

class AdminProtocol(BoundedStreamProtocol):
    """`\\n`-terminated command lines in (a `\\r` before it is dropped), replies out in order.

    A line longer than MAX_LINE is answered `ERROR: line too long` and skipped up to its
    newline.  Unsent replies, connections and idle time are bounded (streams.py).  A
    streamed reply (`AdminReply.more`) is written a batch per reactor turn, and only while
    the client reads it; the next command is handled after its final line.
    """

    def __init__(self, commands: AdminCommands, max_line: int = MAX_LINE,
                 secret: str | None = None) -> None:
        super().__init__()
        self.commands = commands
        self.max_line = max_line
        self.gate = AuthGate(secret)
        self._buffer = bytearray()
        self._scanned = 0            # bytes of _buffer known to hold no newline
        self._discarding = False     # inside an over-long line
        self._stream = None          # the rest of a streamed reply being written
        self._stream_call = None     # its next batch, scheduled

    def refusal(self) -> bytes:
        return AdminReply.error('too many admin connections (at most %d); try again later'
                                % self.factory.max_connections).text().encode('utf-8')

    def connectionLost(self, reason=None) -> None:
        super().connectionLost(reason)
        self._buffer = bytearray()
        self._end_stream()

    def may_process(self) -> bool:
        return self._stream is None

    def awaiting_replies(self) -> bool:
        return self._stream is not None

    def resumeProducing(self) -> None:
        super().resumeProducing()
        self._schedule_stream()

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        self.touch()
        self._buffer += data
        self.process_input()

    def process_input(self) -> None:
        buffer = self._buffer
        start = 0
        exhausted = False
        while self.processing_allowed:
            newline = buffer.find(b'\n', max(start, self._scanned))
            if newline < 0:
                exhausted = True
                break
            raw = bytes(buffer[start:newline])
            start = newline + 1
            self._line(raw)
        del buffer[:start]
        self._scanned = len(buffer) if exhausted else 0
        if exhausted and not self._closing:
            self._check_partial_line(buffer)

    def _check_partial_line(self, buffer: bytearray) -> None:
        """The unterminated rest: dropped inside an over-long line, or when it gets too long."""
        if not self._discarding and len(buffer) > self.max_line + 1:    # + 1: a final '\r'
            self._write(AdminReply.error('line too long (more than %d bytes)' % self.max_line))
            self._discarding = True
        if self._discarding:
            buffer.clear()
            self._scanned = 0

    def _line(self, raw: bytes) -> None:
        if self._discarding:
            self._discarding = False      # this newline ends the over-long line
            return
        if raw.endswith(b'\r'):
            raw = raw[:-1]
        if len(raw) > self.max_line:
            self._write(AdminReply.error('line too long (more than %d bytes)' % self.max_line))
            return
        text = raw.decode('utf-8', 'replace')
        reply = self.commands.execute(text) if self.gate.passed else self._authenticate(text)
        self._write(reply)
        if reply.close:
            self.close()

    def _authenticate(self, line: str) -> AdminReply:
        """The first line of a connection that needs the shared secret."""
        if not line.strip():
            return AdminReply()
        problem = self.gate.check(line)
        if problem is None:
            return AdminReply.ok()
        factory = getattr(self, 'factory', None)
        if factory is not None:
            factory.auth_refused(self.transport.getPeer() if self.transport else None)
        return AdminReply(AdminReply.error(problem).lines, close=True)

    def _write(self, reply: AdminReply) -> None:
        if reply.lines and self.transport is not None:
            self.transport.write(reply.text().encode('utf-8', 'replace'))
            self.touch()
        if reply.more is not None:
            self._stream = reply.more
            self._schedule_stream()
            self.update_reading()

    # --- streamed replies ------------------------------------------------------------------

    def _schedule_stream(self) -> None:
        if self._stream is None or self._stream_call is not None or self._closing \
                or self._write_blocked:
            return                   # resumeProducing schedules it once the client reads
        self._stream_call = self._reactor().callLater(0, self._stream_batch)

    def _reactor(self):
        if self._clock is not None:
            return self._clock
        from twisted.internet import reactor
        return reactor

    def _stream_batch(self) -> None:
        self._stream_call = None
        if self._stream is None or self._closing or self._write_blocked:
            return                   # resumeProducing schedules it again
        try:
            batch = next(self._stream)
        except StopIteration:
            self._finish_stream('OK')
            return
        except Exception as exc:
            self._finish_stream(stream_failure(exc))
            return
        if batch and self.transport is not None:
            text = ''.join(guard_line(line) + '\n' for line in batch)
            self.transport.write(text.encode('utf-8', 'replace'))
            self.touch()
        self._schedule_stream()

    def _finish_stream(self, last_line: str) -> None:
        self._stream = None
        self._write(AdminReply((last_line,)))
        self.process_input()
        self.update_reading()
        self.close_when_answered()

    def _end_stream(self) -> None:
        stream, self._stream = self._stream, None
        if self._stream_call is not None and self._stream_call.active():
            self._stream_call.cancel()
        self._stream_call = None
        if stream is not None:
            stream.close()


class AdminFactory(BoundedStreamFactory):
    """At most `max_connections` admin clients at a time (see streams.py for the bounds)."""

    def __init__(self, commands: AdminCommands, max_connections: int = MAX_CONNECTIONS,
                 max_line: int = MAX_LINE, secret: str | None = None, clock=None) -> None:
        super().__init__('admin socket', StreamLimits(max_connections=max_connections), clock)
        self.commands = commands
        self.secret = secret
        self.max_line = max_line
        self.auth_refusals = 0
        self._auth_logged_at: float | None = None

    def buildProtocol(self, addr) -> AdminProtocol:
        proto = AdminProtocol(self.commands, self.max_line, self.secret)
        proto.factory = self
        return proto

    def auth_refused(self, peer) -> None:
        """Count a connection refused for its secret; log it, at most every AUTH_LOG_INTERVAL."""
        self.auth_refusals += 1
        now = time.monotonic()
        if self._auth_logged_at is None or now - self._auth_logged_at >= AUTH_LOG_INTERVAL:
            self._auth_logged_at = now
            log.warn('admin: connection from {peer} refused: no or wrong secret '
                     '({n} refused so far)', peer=str(peer), n=self.auth_refusals)


def parse_admin_spec(spec: str) -> Endpoint:
    """'/path', 'unix:/path' or 'tcp:host:port' -> Endpoint; StartupError otherwise."""
    try:
        return parse_admin_socket(spec)
    except ValueError as exc:
        raise StartupError('admin socket: %s' % exc) from None


class AdminServer:
    """The admin socket of a Runtime: unix (mode 0660, owner `sock_owner`) or TCP.

    With a `secret`, every connection must send `auth SECRET` before any command.
    """

    def __init__(self, runtime, spec: str, sock_owner: tuple[int, int] | None = None, *,
                 max_connections: int = MAX_CONNECTIONS, max_line: int = MAX_LINE,
                 secret: str | None = None) -> None:
        self.endpoint = parse_admin_spec(spec)
        self.sock_owner = sock_owner
        self.commands = AdminCommands(runtime)
        self.factory = AdminFactory(self.commands, max_connections, max_line, secret)
        self.port = None

    def listen(self, reactor) -> None:
        """Bind the socket; StartupError (one line) when that is impossible."""
        endpoint = self.endpoint
        if endpoint.protocol == 'unix':
            self.port = listen_unix(reactor, endpoint.path, self.factory, self.sock_owner, 0o660)
        else:
            try:
                self.port = reactor.listenTCP(endpoint.port, self.factory, interface=endpoint.host)
            except CannotListenError as exc:
                raise StartupError('cannot listen on admin socket tcp %s port %d: %s'
                                   % (endpoint.host, endpoint.port, exc.socketError)) from None
        log.info('admin socket listening on {endpoint}', endpoint=str(endpoint))

    def stop(self) -> defer.Deferred | None:
        """Close the socket and every admin connection; a unix socket file is removed."""
        if self.port is None:
            return None
        port, self.port = self.port, None
        self.factory.disconnect_all()
        d = defer.maybeDeferred(port.stopListening)
        d.addErrback(lambda failure: log.failure('closing the admin socket', failure))
        if self.endpoint.protocol == 'unix':
            d.addCallback(lambda _: remove_socket_file(self.endpoint.path))
        return d


def remove_socket_file(path: str) -> None:
    """Remove `path` if it is still a socket file (some Twisted versions leave it)."""
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warn('cannot remove {path}: {error}', path=path, error=exc.strerror)
