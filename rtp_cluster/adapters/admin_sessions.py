"""Admin commands on sessions, for every cluster, with or without session sharing.

    ls numsessions                              the number of sessions (kept, not counted)
    ls sessions [all|own|foreign] [LIMIT|--all] a line per session: the first DEFAULT_PAGE
                                                unless LIMIT or --all says otherwise
    ls session CALLID                           one session in detail
    terminate CALLID|own|foreign|all            end sessions (see below)

With `<redis>` configured the lines show ownership (owner, epoch, OWN or FOREIGN) and the
Redis write state; without it every session is this instance's own and those columns are
left out.  The commands read the clusters' stores only through the `SessionStore` interface.

Nothing here holds the reactor for long at 200,000 sessions (issue 16):
- counts come from the counters the stores keep;
- a listing looks at LIST_SLICE call-ids per reactor turn and is streamed to the client
  (the admin connection writes a batch per turn, and only while the client reads);
- `terminate own|foreign|all` ends TERMINATE_SLICE sessions at once and the rest in the
  background, TERMINATE_SLICE every TERMINATE_TICK seconds (the `D`s are paced so members
  and the control path keep up); `ls numsessions` shows the progress, and a second bulk
  terminate is refused while one runs.  An own session gets the `D` a client would send,
  through its cluster; a FOREIGN one is forgotten here and stays forgotten (a resync does
  not bring it back), and nothing is written to its owner's record.
"""
from __future__ import annotations

import time
from typing import Generator

from twisted.logger import Logger

from ..core.admin_text import escape
from ..core.bulk import WHICH, SessionWalk, TakeoverJob, TerminateJob, count_sessions
from ..core.sessions import SessionInfo, SessionStore, Which
from .admin_registry import AdminCommand, AdminError, AdminRegistry, AdminReply, UsageError

__all__ = ['register', 'SESSION_COMMANDS', 'BulkWork', 'show', 'DEFAULT_PAGE', 'LIST_SLICE',
           'TERMINATE_SLICE', 'TERMINATE_TICK', 'TAKEOVER_SLICE']

SESSION_COMMANDS = ('ls numsessions', 'ls sessions', 'ls session', 'terminate')
SECTION = 'Sessions (ownership columns with <redis> configured):'
DEFAULT_PAGE = 1000        # lines of `ls sessions` without LIMIT or --all
LIST_SLICE = 250           # call-ids a listing looks at per reactor turn (~10 us each)
TERMINATE_SLICE = 100      # sessions a bulk terminate ends per step
TERMINATE_TICK = 0.02      # s between its steps: 5,000 sessions/s, 200,000 in 40 s
TAKEOVER_SLICE = 1000      # call-ids a takeover looks at per step (no D: only Redis writes)
CATCH_UP = 2               # a step after a late tick does at most this many slices
REFUSALS_LOGGED = 10       # member error replies to a terminate's D logged one by one
_MAX_ECHO = 200

log = Logger(namespace='rtp_cluster.admin')

USAGE = {
    'numsessions': 'ls numsessions (no arguments)',
    'sessions': 'ls sessions [all|own|foreign] [LIMIT] with LIMIT a positive integer, or '
                'ls sessions [all|own|foreign] --all',
    'session': 'ls session CALLID',
    'terminate': 'terminate CALLID|own|foreign|all',
}
SYNOPSIS = {
    'numsessions': 'ls numsessions',
    'sessions': 'ls sessions [all|own|foreign] [LIMIT|--all]',
    'session': 'ls session CALLID',
    'terminate': 'terminate CALLID|own|foreign|all',
}
DESCRIPTION = {
    'numsessions': 'The number of sessions of every cluster (own and foreign ones with '
                   '<redis>), and the progress of a running terminate.',
    'sessions': 'The sessions, a line each (call-id, cluster, member; with <redis> also '
                'owner, epoch, OWN or FOREIGN): all, or only own or foreign ones.  At most '
                'LIMIT; without LIMIT the first %d and, if there are more, a last line '
                '"... N more"; --all lists every one (streamed: the daemon keeps answering '
                'meanwhile).' % DEFAULT_PAGE,
    'session': 'One session: its cluster, member and the member\'s address and state, tags, '
               'when it was last used; with <redis> also owner, epoch, and whether its record '
               'is queued or written to Redis.',
    'terminate': 'End a session, or every own, foreign or known session: an own session gets '
                 'the D a client would send (and its shared record is deleted); a foreign one '
                 'is forgotten here and stays forgotten.  %d sessions are ended at once, the '
                 'rest in the background at %d a second; ls numsessions shows the progress, '
                 'and another terminate own|foreign|all is refused until it is done.'
                 % (TERMINATE_SLICE, round(TERMINATE_SLICE / TERMINATE_TICK)),
}


def register(registry: AdminRegistry) -> None:
    """Add the session commands to `registry`, in the order `help` lists them."""
    for name in SESSION_COMMANDS:
        words = tuple(name.split())
        key = words[-1]
        registry.add(AdminCommand(words, SYNOPSIS[key], _HANDLERS[key], parse=str.split,
                                  usage=USAGE[key], section=SECTION,
                                  yields_to_cluster=words[0] == 'ls',
                                  description=DESCRIPTION[key]))


# --- helpers -------------------------------------------------------------------------------------

def show(text: str) -> str:
    """Call-ids and other outside text on one printable line that cannot end a reply."""
    out = escape(text)
    return out if len(out) <= _MAX_ECHO else out[:_MAX_ECHO] + '...'


def _no_args(args: list[str]) -> None:
    if args:
        raise UsageError('unexpected argument "%s"' % show(args[0]))


def _or_dash(value) -> str:
    return '-' if value is None else str(value)


def _age(seconds: float) -> str:
    return '%.1fs' % max(0.0, seconds)


def _stores(runtime) -> list[tuple[str, SessionStore]]:
    return [(name, cluster.store) for name, cluster in runtime.clusters.items()]


def _count(runtime, which: Which) -> int:
    return sum(count_sessions(cluster.store, which) for cluster in runtime.clusters.values())


# --- ls numsessions ------------------------------------------------------------------------------

def _ls_numsessions(runtime, args: list[str]) -> list[str]:
    _no_args(args)
    own, foreign = _count(runtime, 'own'), _count(runtime, 'foreign')
    if runtime.sharing is None:
        lines = ['Current sessions total: %d' % (own + foreign)]
    else:
        lines = ['Current sessions own: %d' % own, 'Current sessions foreign: %d' % foreign,
                 'Current sessions total: %d' % (own + foreign)]
    return lines + runtime.bulk.progress_lines(runtime.sharing is not None)


# --- ls sessions ---------------------------------------------------------------------------------

def _parse_listing(args: list[str]) -> tuple[Which, int | None, bool]:
    """[all|own|foreign] [LIMIT|--all] -> (which, limit: None for every session, paged:
    neither LIMIT nor --all was given, so the limit is DEFAULT_PAGE)."""
    rest = list(args)
    which: Which = rest.pop(0) if rest and rest[0] in WHICH else 'all'   # type: ignore
    if not rest:
        return which, DEFAULT_PAGE, True
    word = rest.pop(0)
    if rest:
        raise UsageError('unexpected argument "%s"' % show(rest[0]))
    if word == '--all':
        return which, None, False
    if word.isdigit() and len(word) <= 9 and int(word) > 0:
        return which, int(word), False
    raise UsageError('"%s" is neither all, own, foreign, --all nor a limit' % show(word))


def _ls_sessions(runtime, args: list[str]) -> AdminReply | list[str]:
    which, limit, paged = _parse_listing(args)
    listing = Listing(runtime, which, limit, paged)
    first = listing.batch()
    if listing.finished:
        return first                 # one slice was enough: answered in this turn
    return AdminReply.streamed(first, listing.rest())


class Listing:
    """`ls sessions`: a batch of lines per LIST_SLICE call-ids looked at; when the default
    page (`paged`) cut it short, a last line says how many more there are."""

    def __init__(self, runtime, which: Which, limit: int | None, paged: bool = False) -> None:
        self.runtime = runtime
        self.paged = paged
        self.which = which
        self.limit = limit
        self.line = _sharing_line if runtime.sharing is not None else _plain_line
        self.walk = SessionWalk(_stores(runtime), which)
        self.shown = 0
        self.finished = False

    def batch(self) -> list[str]:
        """The next lines (possibly none); `finished` once the last batch was given."""
        found = self.walk.next_slice(LIST_SLICE)
        if self.limit is not None:
            found = found[:self.limit - self.shown]
        self.shown += len(found)
        lines = [self.line(self.runtime, name, info) for name, info in found]
        if self.limit is not None and self.shown >= self.limit:
            self.finished = True
            more = _count(self.runtime, self.which) - self.shown
            if more > 0 and self.paged:
                lines.append('... %d more (ls sessions %s --all lists every one)'
                             % (more, self.which))
        elif self.walk.done:
            self.finished = True
        return lines

    def rest(self) -> Generator[list[str], None, None]:
        while not self.finished:
            yield self.batch()


def _plain_line(runtime, cluster: str, info: SessionInfo) -> str:
    return '%s cluster=%s member=%s' % (show(info.call_id), show(cluster), show(info.member))


def _sharing_line(runtime, cluster: str, info: SessionInfo) -> str:
    return '%s cluster=%s member=%s owner=%s epoch=%s state=%s' % (
        show(info.call_id), show(cluster), show(info.member),
        show(info.owner or runtime.sharing.instance_id), _or_dash(info.epoch),
        'OWN' if info.own else 'FOREIGN')


# --- ls session ----------------------------------------------------------------------------------

def _ls_session(runtime, args: list[str]) -> list[str]:
    if len(args) != 1:
        raise UsageError('missing CALLID' if not args else 'too many arguments')
    call_id = args[0]
    lines: list[str] = []
    for name, cluster in runtime.clusters.items():
        session = cluster.store.describe(call_id)
        if session is not None:
            lines += _session_lines(runtime, name, cluster, session)
    if not lines:
        raise AdminError('session "%s" not found' % show(call_id))
    return lines


def _session_lines(runtime, name: str, cluster, session: SessionInfo) -> list[str]:
    member = cluster.members.get(session.member)
    sharing = runtime.sharing
    head = ['Session %s:' % show(session.call_id),
            '    cluster = %s' % show(name),
            '    member = %s' % show(session.member),
            '    member address = %s' % (str(member.config.endpoint) if member else
                                         '(not configured here)'),
            '    member online = %s' % ('yes' if member is not None and member.online
                                        else 'no'),
            '    from tag = %s' % show(session.from_tag or ''),
            '    to tag = %s' % show(session.to_tag or '')]
    last_used = '    last used = %s ago' % _age(time.monotonic() - session.last_used)
    if sharing is None:
        return head + [last_used]
    return head + [
        '    state = %s' % ('OWN' if session.own else 'FOREIGN'),
        '    owner = %s' % show(session.owner or sharing.instance_id),
        '    epoch = %s' % _or_dash(session.epoch),
        '    seq = %s' % _or_dash(session.seq),
        '    created = %.3f' % (session.created or 0.0),
        '    updated = %.3f' % (session.updated or 0.0),
        last_used,
        '    key = %s' % show(session.key)] + [
        '    %s = %s' % pair for pair in _redis_state(sharing, session)]


def _redis_state(sharing, session: SessionInfo) -> tuple[tuple[str, str], ...]:
    if not session.own:
        return ('queued', 'no'), ('written', 'by peer %s' % show(session.owner))
    queued = sharing.queued_op(session.key)
    written = 'no (queued)' if queued != 'no' else (
        'unknown (degraded)' if sharing.degraded else 'yes')
    return ('queued', queued), ('written', written)


# --- terminate -----------------------------------------------------------------------------------

def _terminate(runtime, args: list[str]) -> list[str]:
    if len(args) != 1:
        raise UsageError('missing argument' if not args else 'too many arguments')
    what = args[0]
    if what in WHICH:
        job = runtime.bulk.terminate(runtime.clusters, what)
        return _ended_lines(runtime, job.own_done, job.foreign_done) + (
            [] if job.done else ['Terminating the rest in the background: %d sessions left '
                                 'to look at (ls numsessions shows the progress)' % job.left()])
    own = foreign = 0
    for cluster in list(runtime.clusters.values()):
        found = cluster.store.describe(what)
        if found is None:
            continue
        if found.own:
            # D to the member as a client's would be; the store then deletes the key
            own += cluster.terminate_session(found.call_id, runtime.bulk.refused)
        else:
            foreign += cluster.store.forget_foreign(found.call_id)
    if own + foreign == 0:
        raise AdminError('session "%s" not found' % show(what))
    log.info('admin: terminate {what}: {own} own, {foreign} foreign sessions',
             what=show(what), own=own, foreign=foreign)
    return _ended_lines(runtime, own, foreign)


def _ended_lines(runtime, own: int, foreign: int) -> list[str]:
    if runtime.sharing is None:
        return ['Terminated: %d' % (own + foreign)]
    return ['Terminated own: %d' % own, 'Terminated foreign: %d' % foreign]


class BulkWork:
    """The runtime's background admin work: one sliced job at a time (a bulk terminate or a
    takeover), its first slice at once and then a slice per `tick` on the reactor."""

    def __init__(self, reactor, tick: float = TERMINATE_TICK) -> None:
        self.reactor = reactor
        self.tick = tick
        self.job: TerminateJob | TakeoverJob | None = None      # the one running
        self.refusals = 0
        self._slice = TERMINATE_SLICE
        self._started = 0.0
        self._stepped_at = 0.0
        self._call = None

    def terminate(self, clusters, which: Which) -> TerminateJob:
        """Start `terminate which`; AdminError while a job runs."""
        self._refuse_while_running()
        self.refusals = 0
        job = TerminateJob(clusters, which, self.refused)
        log.info('admin: terminate {which}: {n} sessions', which=which, n=job.total)
        self._start(job, TERMINATE_SLICE)
        return job

    def takeover(self, stores, peer: str | None) -> TakeoverJob:
        """Start `takeover PEER|all` on the shared stores; AdminError while a job runs."""
        self._refuse_while_running()
        job = TakeoverJob(stores, peer)
        self._start(job, TAKEOVER_SLICE)
        return job

    def _refuse_while_running(self) -> None:
        if self.job is not None:
            raise AdminError('%s is running: %s; wait for it (ls numsessions shows the '
                             'progress)' % (self.job.name, _progress(self.job, False)))

    def _start(self, job, slice_size: int) -> None:
        self._slice = slice_size
        self._started = time.monotonic()
        self._stepped_at = self.reactor.seconds()
        if job.step(slice_size):
            self.job = job
            self._call = self.reactor.callLater(self.tick, self._step)
        else:
            self._finished(job)

    def _step(self) -> None:
        self._call = None
        job = self.job
        if job is None:
            return
        if job.step(self._catch_up_size()):
            self._call = self.reactor.callLater(self.tick, self._step)
        else:
            self.job = None
            self._finished(job)

    def _catch_up_size(self) -> int:
        """A slice for the time since the last step: on a busy reactor the ticks come late,
        and the pace (a slice per tick) is kept by larger steps, up to CATCH_UP slices."""
        now = self.reactor.seconds()
        elapsed, self._stepped_at = now - self._stepped_at, now
        slices = min(float(CATCH_UP), max(1.0, elapsed / self.tick))
        return round(self._slice * slices)

    def _finished(self, job) -> None:
        seconds = time.monotonic() - self._started
        if isinstance(job, TakeoverJob):
            log.info('admin: {name} done in {seconds:.1f} s: {n} sessions', name=job.name,
                     seconds=seconds, n=job.taken)
            return
        log.info('admin: {name} done in {seconds:.1f} s: {own} own, {foreign} foreign '
                 'sessions ended, {refused} D refused by members', name=job.name,
                 seconds=seconds, own=job.own_done, foreign=job.foreign_done,
                 refused=self.refusals)

    def refused(self, command: str, reply: str) -> None:
        """A member's error reply to a terminate's D: the first few are logged."""
        self.refusals += 1
        if self.refusals <= REFUSALS_LOGGED:
            log.info('admin terminate: member answered {reply!r} to {cmd!r}', reply=reply,
                     cmd=command[:200])

    def progress_lines(self, sharing: bool) -> list[str]:
        """`ls numsessions` while a job runs: `LABEL: NUMBER` lines, like the counts, so
        that scripts reading those keep working."""
        job = self.job
        if job is None:
            return []
        if isinstance(job, TakeoverJob):
            doing = 'Taking over %s' % (job.peer or 'all')
            done = [('sessions taken over', job.taken)]
        else:
            doing = 'Terminating %s' % job.which
            done = ([('own sessions ended', job.own_done),
                     ('foreign sessions ended', job.foreign_done)] if sharing else
                    [('sessions ended', job.ended)])
        return ['%s, %s: %d' % (doing, what, n)
                for what, n in done + [('sessions left to look at', job.left())]]

    def stop(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        self.job = None


def _progress(job, sharing: bool) -> str:
    if isinstance(job, TakeoverJob):
        done = '%d sessions taken over' % job.taken
    elif sharing:
        done = '%d own and %d foreign sessions ended' % (job.own_done, job.foreign_done)
    else:
        done = '%d sessions ended' % job.ended
    return '%s, %d left to look at' % (done, job.left())


_HANDLERS = {
    'numsessions': _ls_numsessions, 'sessions': _ls_sessions, 'session': _ls_session,
    'terminate': _terminate,
}
