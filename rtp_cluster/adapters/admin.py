"""The admin interface: a line-based command language on a unix or TCP stream socket.

The language is an `AdminRegistry` (admin_registry.py): this module registers the
cluster commands, admin_sessions.py the session ones, admin_sharing.py the session-sharing
ones.  `AdminCommands.execute(line)`
runs one line and does no I/O: it reads the `Runtime`, changes it only through its and its
clusters' methods, and returns an `AdminReply` (lines ending with `OK`, or one
`ERROR: ...` line).  `AdminProtocol` and `AdminServer` (admin_socket.py) only move lines
between a socket and it.

The commands and their output are those of sippy's original rtp_cluster (operators'
scripts parse them): `ls`, `ls CLUSTER`, `modify CLUSTER add|delete|remove|pause|resume`,
`reload`, `help`, `quit`; `ls [CLUSTER] --json` is an addition.  Addresses are printed as
`HOST:PORT`, `[IPV6]:PORT` or `/path`, as the current original prints them.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

from twisted.logger import Logger

from ..core import config_schema
from ..core.admin_text import escape, json_line
from ..core.cluster import MemberDraining
from ..core.config import ConfigError, FieldError, MemberConfig, member_from_fields
from ..core.member import ACTIVE, DRAINING, SUSPENDED
from . import admin_sessions, admin_sharing
from .admin_registry import (
    AdminCommand, AdminError, AdminRegistry, AdminReply, UsageError, one_line, show_input,
)
from .transports import StartupError

__all__ = ['AdminReply', 'AdminError', 'AdminCommands', 'build_registry']

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
