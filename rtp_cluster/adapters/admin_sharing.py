"""Admin commands for session sharing through Redis (rtpengine-ctl style).

`register(registry)` adds them to the admin command registry (admin_registry.py), which
dispatches them like every other admin command.  They do no I/O: they read and change
`runtime.sharing` (a `RedisSharing`) and the clusters' session stores on the reactor thread
and return their reply lines; the registry adds `OK`, or makes one `ERROR: ...` line.

    ls numsessions                       own / foreign / total counts
    ls sessions [all|own|foreign] [N]    one line per session (at most N lines)
    ls session CALLID                    details, including the Redis write state
    terminate CALLID|own|foreign|all     own: D to the member through the cluster (the
                                         key is deleted or tombstoned); foreign: the local
                                         entry only (a peer's keys are never written)
    ksadd PEER / ksrm PEER / kslist      follow / stop following (and forget the FOREIGN
                                         sessions of) a peer / list followed peers
    ls peers                             presence of the peers
    ls redis                             connection state, queue, resync, counters
    resync                               full resync now
    takeover PEER|all                    make FOREIGN sessions OWN

`ls NAME` keeps meaning "list cluster NAME" when a cluster has that name.
"""
from __future__ import annotations

import re
import time
from functools import lru_cache
from typing import Iterable

from twisted.logger import Logger

from ..core.admin_text import escape
from ..core.sessions import SessionInfo, Which
from .admin_registry import AdminCommand, AdminError, AdminRegistry, UsageError

__all__ = ['register', 'execute_sharing_command', 'SHARING_COMMANDS', 'NOT_CONFIGURED']

NOT_CONFIGURED_TEXT = 'session sharing is not configured'
NOT_CONFIGURED = 'ERROR: ' + NOT_CONFIGURED_TEXT
SECTION = 'Session sharing (with <redis> configured):'
SHARING_COMMANDS = ('ls numsessions', 'ls sessions', 'ls session', 'ls peers', 'ls redis',
                    'terminate', 'ksadd', 'ksrm', 'kslist', 'resync', 'takeover')
_PEER = re.compile(r'[A-Za-z0-9._-]{1,64}')
_MAX_ECHO = 200

log = Logger(namespace='rtp_cluster.admin')

USAGE = {
    'numsessions': 'ls numsessions (no arguments)',
    'sessions': 'ls sessions [all|own|foreign] [LIMIT] with LIMIT a positive integer',
    'session': 'ls session CALLID',
    'peers': 'ls peers (no arguments)',
    'redis': 'ls redis (no arguments)',
    'terminate': 'terminate CALLID|own|foreign|all',
    'ksadd': 'ksadd PEER with PEER 1-64 characters of A-Z a-z 0-9 . _ -',
    'ksrm': 'ksrm PEER with PEER 1-64 characters of A-Z a-z 0-9 . _ -',
    'kslist': 'kslist (no arguments)',
    'resync': 'resync (no arguments)',
    'takeover': 'takeover PEER|all',
}
SYNOPSIS = {
    'numsessions': 'ls numsessions',
    'sessions': 'ls sessions [all|own|foreign] [LIMIT]',
    'session': 'ls session CALLID',
    'peers': 'ls peers',
    'redis': 'ls redis',
    'terminate': 'terminate CALLID|own|foreign|all',
    'ksadd': 'ksadd PEER',
    'ksrm': 'ksrm PEER',
    'kslist': 'kslist',
    'resync': 'resync',
    'takeover': 'takeover PEER|all',
}

DESCRIPTION = {
    'numsessions': 'The number of sessions per cluster, own and foreign.',
    'sessions': 'The sessions, a line each (call-id, cluster, member, owner, epoch, OWN or '
                'FOREIGN): all, or only own or foreign ones, at most LIMIT of them.',
    'session': 'One session: its cluster, member and the member\'s address and state, tags, '
               'owner, epoch, and whether its record is queued or written to Redis.',
    'peers': 'The peer instances this one follows, with their presence state.',
    'redis': 'This instance\'s id, the Redis URL and state, the subscriber, the writer, '
             'the last resync, the tunables and the checks of Redis\'s configuration.',
    'terminate': 'End a session, or every own, foreign or known session: a D goes to the '
                 'member and the shared record is deleted.',
    'ksadd': 'Follow the sessions of instance PEER.',
    'ksrm': 'Stop following instance PEER and forget its sessions.',
    'kslist': 'The instances followed.',
    'resync': 'Read every followed peer\'s sessions from Redis again now.',
    'takeover': 'Make the sessions of PEER (or of every peer) own ones, as after a failover.',
}


# The registry's dialect, under the names the handlers below use.
_Usage = UsageError       # bad arguments: the reply adds "; expected: " and the usage
_Failed = AdminError      # a well-formed command that cannot be done


def register(registry: AdminRegistry) -> None:
    """Add every sharing command to `registry`, in the order `help` lists them."""
    for name in SHARING_COMMANDS:
        words = tuple(name.split())
        key = words[-1]
        registry.add(AdminCommand(words, SYNOPSIS[key], _on_sharing(_HANDLERS[key]),
                                  parse=str.split, usage=USAGE[key], section=SECTION,
                                  yields_to_cluster=words[0] == 'ls',
                                  description=DESCRIPTION[key]))


def _on_sharing(handler):
    def run(runtime, args: list[str]):
        if runtime.sharing is None:
            raise AdminError(NOT_CONFIGURED_TEXT)
        return handler(runtime, runtime.sharing, args)
    return run


@lru_cache(maxsize=1)
def _sharing_only() -> AdminRegistry:
    registry = AdminRegistry()
    register(registry)
    return registry


def execute_sharing_command(runtime, words: list[str]) -> list[str] | None:
    """Reply lines for a sharing command, or None if `words` is not one (for tests)."""
    line = ' '.join(words)
    if _sharing_only().resolve(runtime, line) is None:
        return None
    return list(_sharing_only().execute(runtime, line).lines)


# --- helpers -------------------------------------------------------------------------------------

def show(text: str) -> str:
    """Call-ids and other outside text on one printable line that cannot end a reply."""
    out = escape(text)
    return out if len(out) <= _MAX_ECHO else out[:_MAX_ECHO] + '...'


def _no_args(args: list[str]) -> None:
    if args:
        raise _Usage('unexpected argument "%s"' % show(args[0]))


def _peer(args: list[str]) -> str:
    if len(args) != 1:
        raise _Usage('%s' % ('missing PEER' if not args else 'too many arguments'))
    if not _PEER.fullmatch(args[0]):
        raise _Usage('"%s" is not a valid instance id' % show(args[0]))
    return args[0]


def _sessions(runtime, which: Which = 'all') -> Iterable[tuple[str, SessionInfo]]:
    """(cluster name, session) of every session, cluster by cluster."""
    for name, cluster in runtime.clusters.items():
        for info in cluster.store.listing(which):
            yield name, info


def _owner(sharing, info: SessionInfo) -> str:
    return info.owner or sharing.instance_id


def _age(seconds: float) -> str:
    return '%.1fs' % max(0.0, seconds)


# --- ls ------------------------------------------------------------------------------------------

def _ls_numsessions(runtime, sharing, args):
    _no_args(args)
    own = foreign = 0
    for cluster in runtime.clusters.values():
        counts = cluster.store.ownership_counts()
        own, foreign = own + counts[0], foreign + counts[1]
    return ['Current sessions own: %d' % own, 'Current sessions foreign: %d' % foreign,
            'Current sessions total: %d' % (own + foreign)]


def _ls_sessions(runtime, sharing, args):
    which, limit = 'all', None
    rest = list(args)
    if rest and rest[0] in ('all', 'own', 'foreign'):
        which = rest.pop(0)
    if rest:
        if not rest[0].isdigit() or len(rest[0]) > 9 or int(rest[0]) == 0:
            raise _Usage('"%s" is neither all, own, foreign nor a limit' % show(rest[0]))
        limit = int(rest.pop(0))
    if rest:
        raise _Usage('unexpected argument "%s"' % show(rest[0]))
    lines: list[str] = []
    for name, cluster in runtime.clusters.items():
        left = None if limit is None else limit - len(lines)
        if left == 0:
            break
        for info in cluster.store.listing(which, left):
            lines.append('%s cluster=%s member=%s owner=%s epoch=%s state=%s'
                         % (show(info.call_id), show(name), show(info.member),
                            show(_owner(sharing, info)), _or_dash(info.epoch),
                            'OWN' if info.own else 'FOREIGN'))
    return lines


def _or_dash(value) -> str:
    return '-' if value is None else str(value)


def _ls_session(runtime, sharing, args):
    if len(args) != 1:
        raise _Usage('missing CALLID' if not args else 'too many arguments')
    call_id = args[0]
    lines: list[str] = []
    for name, cluster in runtime.clusters.items():
        session = cluster.store.describe(call_id)
        if session is None:
            continue
        own = session.own
        member = cluster.members.get(session.member)
        key = session.key
        queued = sharing.queued_op(key)
        if not own:
            redis_state = ('queued', 'no'), ('written', 'by peer %s' % show(session.owner))
        else:
            written = 'no (queued)' if queued != 'no' else (
                'unknown (degraded)' if sharing.degraded else 'yes')
            redis_state = ('queued', queued), ('written', written)
        now_mono = time.monotonic()
        lines += ['Session %s:' % show(call_id),
                  '    cluster = %s' % show(name),
                  '    member = %s' % show(session.member),
                  '    member address = %s' % (str(member.config.endpoint) if member else
                                               '(not configured here)'),
                  '    member online = %s' % ('yes' if member is not None and member.online
                                              else 'no'),
                  '    from tag = %s' % show(session.from_tag or ''),
                  '    to tag = %s' % show(session.to_tag or ''),
                  '    state = %s' % ('OWN' if own else 'FOREIGN'),
                  '    owner = %s' % show(_owner(sharing, session)),
                  '    epoch = %s' % _or_dash(session.epoch),
                  '    seq = %s' % _or_dash(session.seq),
                  '    created = %.3f' % (session.created or 0.0),
                  '    updated = %.3f' % (session.updated or 0.0),
                  '    last used = %s ago' % _age(now_mono - session.last_used),
                  '    key = %s' % show(key)]
        lines += ['    %s = %s' % pair for pair in redis_state]
    if not lines:
        raise _Failed('session "%s" not found' % show(call_id))
    return lines


def _foreign_counts(runtime, sharing) -> dict[str, int]:
    """FOREIGN sessions per owning peer."""
    counts: dict[str, int] = {}
    for _, info in _sessions(runtime, 'foreign'):
        counts[info.owner] = counts.get(info.owner, 0) + 1
    return counts


def _ls_peers(runtime, sharing, args):
    _no_args(args)
    counts = _foreign_counts(runtime, sharing)
    now = time.time()
    lines = []
    for peer in sorted(set(sharing.peers) | set(counts)):
        info = sharing.peers.get(peer, {})
        presence = info.get('presence', {})
        seen = []
        if 'last_event' in info:
            seen.append(info['last_event'])
        try:
            seen.append(float(presence.get('last_seen', '')))
        except ValueError:
            pass
        last_seen = _age(now - max(seen)) + ' ago' if seen else 'never'
        lines.append('%s alive=%s last_seen=%s own_sessions=%s sessions_here=%d subscribed=%s '
                     'state=%s' % (show(peer), 'yes' if info.get('alive') else 'no', last_seen,
                                   show(presence.get('own_sessions', '?')), counts.get(peer, 0),
                                   'yes' if sharing.follows(peer) else 'no',
                                   show(presence.get('state', '?'))))
    return lines


def _ls_redis(runtime, sharing, args):
    _no_args(args)
    status = sharing.status()
    resync = status['last_resync']
    if resync:
        resync_text = '%s ago at %.3f (%.3f s, %d keys, %d removed)' % (
            _age(time.time() - resync['at']), resync['at'], resync['duration'], resync['keys'],
            resync['removed'])
    else:
        resync_text = 'never'
    broadcasts = sum(c.counters.broadcasts for c in runtime.clusters.values())
    lines = ['instance: %s' % show(status['instance_id']),
             'url: %s' % show(status['url']),
             *(['sentinel watch: %s' % status['sentinel_watch']]
               if status['sentinel_watch'] else []),
             'state: %s' % status['state'],
             'subscriber: %s' % status['subscriber'],
             'peers: %s' % ('auto' if sharing.auto_peers else
                            ' '.join(sorted(sharing.subscribed)) or '(none)'),
             'queue depth: %d' % status['queue_depth'],
             'writes: %d in %d transactions, last took %.1f ms' % (
                 status['writes'], status['transactions'], status['last_flush_ms']),
             'duplicate instance id: %s' % _duplicate_text(status['duplicate']),
             'last error: %s' % show(status['last_error'] or '-'),
             'last resync: %s' % resync_text,
             'resyncs: %d' % status['resyncs'],
             'events: %d' % status['events'],
             'bad events: %d' % status['bad_events'],
             'bad records: %d' % status['counters']['bad_records'],
             'own: %d' % status['own'],
             'foreign: %d' % status['foreign'],
             'broadcasts: %d' % broadcasts,
             'redis run id: %s' % (status['redis_run_id'] or '-'),
             'synced run id: %s' % (status['synced_run_id'] or '-'),
             'tunables: %s' % status['tunables']]
    lines += _check_lines(status['checks'])
    lines += ['%s: %d' % (name.replace('_', ' '), value)
              for name, value in status['counters'].items() if name != 'bad_records']
    return lines


def _check_lines(checks: list[tuple[str, str]] | None) -> list[str]:
    """The findings about Redis's configuration (notifications, eviction), or their absence."""
    if checks is None:
        return ['server checks: not run yet']
    if not checks:
        return ['server checks: ok']
    # whole, not cut at the echo limit: the fix is at the end of the text
    return ['server check: %s %s' % (level.upper(), text if text.isprintable() else show(text))
            for level, text in checks]


def _duplicate_text(duplicate: dict) -> str:
    if not duplicate:
        return 'no'
    return 'SEEN %s ago (run token %s): another process writes as this instance' % (
        _age(time.time() - duplicate['last_seen']), show(duplicate['token'][:16]))


# --- changing things -----------------------------------------------------------------------------

def _terminate(runtime, sharing, args):
    if len(args) != 1:
        raise _Usage('missing argument' if not args else 'too many arguments')
    what = args[0]
    own_done = foreign_done = 0
    for cluster in list(runtime.clusters.values()):
        store = cluster.store
        if what in ('own', 'foreign', 'all'):
            targets = store.listing(what)
        else:
            found = store.describe(what)
            targets = [found] if found is not None else []
        for info in targets:
            if info.own and what != 'foreign':
                # D to the member as a client's would be; the store then deletes the key
                own_done += cluster.terminate_session(info.call_id, _log_refusal)
            elif not info.own and what != 'own':
                # FOREIGN: forgotten here only, nothing is written to Redis
                foreign_done += store.unbind(info.call_id) is not None
    if what not in ('own', 'foreign', 'all') and own_done + foreign_done == 0:
        raise _Failed('session "%s" not found' % show(what))
    log.info('admin: terminate {what}: {own} own, {foreign} foreign sessions',
             what=show(what), own=own_done, foreign=foreign_done)
    return ['Terminated own: %d' % own_done, 'Terminated foreign: %d' % foreign_done]


def _log_refusal(command: str, reply: str) -> None:
    log.info('admin terminate: member answered {reply!r} to {cmd!r}', reply=reply,
             cmd=command[:200])


def _ksadd(runtime, sharing, args):
    peer = _peer(args)
    if peer == sharing.instance_id:
        raise _Usage('"%s" is this instance' % show(peer))
    sharing.subscribe(peer)
    log.info('admin: ksadd {peer}', peer=peer)
    return ['Subscribed to %s' % peer]


def _ksrm(runtime, sharing, args):
    peer = _peer(args)
    if peer == sharing.instance_id:
        raise _Usage('"%s" is this instance' % show(peer))
    dropped = sharing.unsubscribe(peer)
    log.info('admin: ksrm {peer}: {n} foreign sessions dropped', peer=peer, n=dropped)
    return ['Unsubscribed from %s, dropped %d foreign sessions' % (peer, dropped)]


def _kslist(runtime, sharing, args):
    _no_args(args)
    counts = _foreign_counts(runtime, sharing)
    if sharing.auto_peers:
        lines = ['mode: auto (every peer in namespace %s)' % show(sharing.namespace)]
        peers = sorted((set(sharing.peers) | set(counts) | set(sharing.subscribed))
                       - {sharing.instance_id})
    else:
        lines = ['mode: list']
        peers = sorted(sharing.subscribed)
    lines += ['%s sessions=%d' % (show(peer), counts.get(peer, 0)) for peer in peers]
    return lines


def _resync(runtime, sharing, args):
    _no_args(args)
    sharing.request_resync()
    log.info('admin: resync requested')
    return ['Resync requested']


def _takeover(runtime, sharing, args):
    if len(args) != 1:
        raise _Usage('missing PEER' if not args else 'too many arguments')
    target = args[0]
    if target != 'all' and not _PEER.fullmatch(target):
        raise _Usage('"%s" is neither all nor a valid instance id' % show(target))
    if target == sharing.instance_id:
        raise _Usage('"%s" is this instance' % show(target))
    taken = sharing.take_over(None if target == 'all' else target)
    log.info('admin: takeover {target}: {n} sessions', target=target, n=taken)
    return ['Took over %d sessions' % taken]


_HANDLERS = {
    'numsessions': _ls_numsessions, 'sessions': _ls_sessions, 'session': _ls_session,
    'peers': _ls_peers, 'redis': _ls_redis, 'terminate': _terminate, 'ksadd': _ksadd,
    'ksrm': _ksrm, 'kslist': _kslist, 'resync': _resync, 'takeover': _takeover,
}
