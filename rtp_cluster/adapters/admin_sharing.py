"""Admin commands for session sharing through Redis (rtpengine-ctl style).

`register(registry)` adds them to the admin command registry (admin_registry.py), which
dispatches them like every other admin command.  They do no I/O: they read and change
`runtime.sharing` (a `RedisSharing`) and the clusters' session stores on the reactor thread
and return their reply lines; the registry adds `OK`, or makes one `ERROR: ...` line.
The session commands (`ls numsessions`, `ls sessions`, `ls session`, `terminate`) work
without sharing too: admin_sessions.py.

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

from twisted.logger import Logger

from . import admin_sessions
from .admin_registry import AdminCommand, AdminError, AdminRegistry, UsageError
from .admin_sessions import SESSION_COMMANDS, show

__all__ = ['register', 'execute_sharing_command', 'SHARING_COMMANDS', 'SHARING_ONLY',
           'NOT_CONFIGURED', 'show']

NOT_CONFIGURED_TEXT = 'session sharing is not configured'
NOT_CONFIGURED = 'ERROR: ' + NOT_CONFIGURED_TEXT
SECTION = 'Session sharing (with <redis> configured):'
SHARING_ONLY = ('ls peers', 'ls redis', 'ksadd', 'ksrm', 'kslist', 'resync', 'takeover')
# every command on sessions and their sharing (the session ones work without sharing too)
SHARING_COMMANDS = SESSION_COMMANDS + SHARING_ONLY
_PEER = re.compile(r'[A-Za-z0-9._-]{1,64}')

log = Logger(namespace='rtp_cluster.admin')

USAGE = {
    'peers': 'ls peers (no arguments)',
    'redis': 'ls redis (no arguments)',
    'ksadd': 'ksadd PEER with PEER 1-64 characters of A-Z a-z 0-9 . _ -',
    'ksrm': 'ksrm PEER with PEER 1-64 characters of A-Z a-z 0-9 . _ -',
    'kslist': 'kslist (no arguments)',
    'resync': 'resync (no arguments)',
    'takeover': 'takeover PEER|all',
}
SYNOPSIS = {
    'peers': 'ls peers',
    'redis': 'ls redis',
    'ksadd': 'ksadd PEER',
    'ksrm': 'ksrm PEER',
    'kslist': 'kslist',
    'resync': 'resync',
    'takeover': 'takeover PEER|all',
}

DESCRIPTION = {
    'peers': 'The peer instances this one follows, with their presence state.',
    'redis': 'This instance\'s id, the Redis URL and state, the subscriber, the writer, '
             'the last resync, the tunables and the checks of Redis\'s configuration.',
    'ksadd': 'Follow the sessions of instance PEER.',
    'ksrm': 'Stop following instance PEER and forget its sessions.',
    'kslist': 'The instances followed.',
    'resync': 'Read every followed peer\'s sessions from Redis again now.',
    'takeover': 'Make the sessions of PEER (or of every peer) own ones, as after a failover: '
                'a slice at once, the rest in the background (ls numsessions shows the '
                'progress; no other takeover or terminate own|foreign|all until it is done).',
}


# The registry's dialect, under the names the handlers below use.
_Usage = UsageError       # bad arguments: the reply adds "; expected: " and the usage
_Failed = AdminError      # a well-formed command that cannot be done


def register(registry: AdminRegistry) -> None:
    """Add the sharing-only commands to `registry`, in the order `help` lists them."""
    for name in SHARING_ONLY:
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
    admin_sessions.register(registry)
    register(registry)
    return registry


def execute_sharing_command(runtime, words: list[str]) -> list[str] | None:
    """Reply lines for a session or sharing command, or None if `words` is not one (for
    tests; a streamed reply is gathered whole)."""
    line = ' '.join(words)
    if _sharing_only().resolve(runtime, line) is None:
        return None
    return list(_sharing_only().execute(runtime, line).complete().lines)


# --- helpers -------------------------------------------------------------------------------------

def _no_args(args: list[str]) -> None:
    if args:
        raise _Usage('unexpected argument "%s"' % show(args[0]))


def _peer(args: list[str]) -> str:
    if len(args) != 1:
        raise _Usage('%s' % ('missing PEER' if not args else 'too many arguments'))
    if not _PEER.fullmatch(args[0]):
        raise _Usage('"%s" is not a valid instance id' % show(args[0]))
    return args[0]


def _age(seconds: float) -> str:
    return '%.1fs' % max(0.0, seconds)


def _foreign_counts(runtime, sharing) -> dict[str, int]:
    """FOREIGN sessions per owning peer (from the counts the stores keep)."""
    counts: dict[str, int] = {}
    for cluster in runtime.clusters.values():
        for owner, n in cluster.store.foreign_counts().items():
            counts[owner] = counts.get(owner, 0) + n
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
    job = runtime.bulk.takeover(sharing.stores, None if target == 'all' else target)
    log.info('admin: takeover {target}: {n} sessions', target=target, n=job.total)
    if job.done:
        return ['Took over %d sessions' % job.taken]
    return ['Took over %d sessions' % job.taken,
            'Taking over the rest in the background: %d sessions left to look at '
            '(ls numsessions shows the progress)' % job.left()]


_HANDLERS = {
    'peers': _ls_peers, 'redis': _ls_redis, 'ksadd': _ksadd,
    'ksrm': _ksrm, 'kslist': _kslist, 'resync': _resync, 'takeover': _takeover,
}
