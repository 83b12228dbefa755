"""End-to-end: Kamailio 5.6 + SIPp calls with RTP through an RTPproxy-protocol control socket.

Every case runs against two relay endpoints (fixture `relay_kind`):

- direct:  Kamailio's rtpproxy_sock lists the real rtp-io members itself (Kamailio
           balances by its call-id hash; "pause" = kamcmd rtpproxy.enable URL 0);
- cluster: Kamailio talks to the rtp_cluster daemon, which fans out to the members
           ("pause" = rtp_cluster.admin_client modify e2e pause NAME).

Media: the UAC plays g711a.pcap (PCMA, ~33 packets/s) for the call length, the UAS echoes it.
"""
from __future__ import annotations

import shutil
import signal
import tempfile
import time

import pytest

from tests.support.control_tap import UdpControlTap
from tests.support.kamailio.harness import (E2E, HOST, LATE_UAC_XML, PCAP_PPS, Checks, RunResult,
                                           info, missing_prerequisites, skip_unless_ci, start_cluster,
                                           start_direct, tail)
from tests.support.procs import control_command

_missing = missing_prerequisites()
pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(120),
              skip_unless_ci(_missing)]


@pytest.fixture(params=['direct', 'cluster'])
def relay_kind(request):
    return request.param


@pytest.fixture
def e2e(procs, relay_kind, request):
    """Factory: e2e(member_protocols, control_protocol) -> a started E2E environment."""
    envs: list[E2E] = []
    workdirs: list[str] = []
    failed_before = request.session.testsfailed

    def make(protocols: list[str], control: str = 'udp', kamailio_defines: dict | None = None) -> E2E:
        workdir = tempfile.mkdtemp(prefix='rtpc-e2e-')      # short: unix socket paths live here
        workdirs.append(workdir)
        if relay_kind == 'direct':
            ep = start_direct(procs, workdir, protocols)
        else:
            ep = start_cluster(procs, workdir, protocols, control)
        try:
            env = E2E(procs, workdir, ep, kamailio_defines)
        except BaseException:
            ep.stop()
            raise
        envs.append(env)
        return env

    try:
        yield make
    finally:
        for env in envs:
            env.close()
        # the call phase's report is already counted when fixtures are torn down
        passed = request.session.testsfailed == failed_before
        for d in workdirs:
            if passed:
                shutil.rmtree(d, ignore_errors=True)
            else:
                print('e2e work directory kept: %s' % d)


# --------------------------------------------------------------------------- shared checks

def delta(run: RunResult, name: str, key: str) -> int:
    return run.after[name][key] - run.before[name][key]


def calls_per_member(run: RunResult) -> dict[str | None, int]:
    out: dict[str | None, int] = {}
    for c in run.views.values():
        out[c.member] = out.get(c.member, 0) + 1
    return out


def check_sip(ck: Checks, run: RunResult, ok_calls: int) -> None:
    ck.eq('UAC exit code', run.uac_rc, 0)
    ck.eq('UAC successful calls', run.uac['successful'], ok_calls)
    ck.eq('UAC failed calls', run.uac['failed'], 0)
    ck.eq('UAS successful calls', run.uas['successful'], ok_calls)
    ck.eq('UAS failed calls', run.uas['failed'], 0)
    ck.eq('calls seen in the UAC message log', len(run.views), run.calls)
    ck.eq('calls completed (200 to BYE) per message log', sum(c.completed for c in run.views.values()), ok_calls)


def check_sdp(ck: Checks, run: RunResult, exempt: set[str] = frozenset()) -> None:
    """Each side got the relay's address and a port of the same member, never the other endpoint's."""
    bad = []
    uac_mp, uas_mp = run.uac_sipp.media_port, run.uas_sipp.media_port
    for c in run.views.values():
        if c.call_id in exempt or c.offer_at is None or c.answer_at is None:
            continue
        why = []
        if c.offer[0] != HOST or c.answer[0] != HOST:
            why.append('address offer %s answer %s' % (c.offer[0], c.answer[0]))
        if c.offer[1] in (uac_mp, uas_mp) or c.answer[1] in (uac_mp, uas_mp):
            why.append('endpoint media port leaked (offer %s answer %s, uac %d uas %d)'
                       % (c.offer[1], c.answer[1], uac_mp, uas_mp))
        if c.offer_member is None or c.answer_member is None or c.offer_member != c.answer_member:
            why.append('relay ports %s (%s) / %s (%s) not from one member'
                       % (c.offer[1], c.offer_member, c.answer[1], c.answer_member))
        if why:
            bad.append('%s: %s' % (c.call_id, '; '.join(why)))
    checked = sum(1 for c in run.views.values()
                  if c.call_id not in exempt and c.offer_at is not None and c.answer_at is not None)
    ck.check('SDP on both sides points at one member relay (%d calls checked, %d exempt)'
             % (checked, len(exempt)), not bad, '%d bad: %s' % (len(bad), bad[:5]))


def check_media(ck: Checks, run: RunResult, names) -> None:
    """Members that carried calls relayed RTP both ways (UAC stream + UAS echo)."""
    per = calls_per_member(run)
    secs = run.duration_ms / 1000.0
    for name in names:
        n = per.get(name, 0)
        if not n:
            continue
        need = int(0.6 * n * 2 * PCAP_PPS * secs)
        ck.ge('%s packets received (%d calls)' % (name, n), delta(run, name, 'packets received'), need)
        ck.ge('%s packets transmitted (%d calls)' % (name, n), delta(run, name, 'packets transmitted'), need)


def check_idle(ck: Checks, run: RunResult, names) -> None:
    for name in names:
        ck.eq('%s active sessions after the BYEs' % name, run.after[name]['active sessions'],
              run.before[name]['active sessions'])


def check_leftovers(ck: Checks, run: RunResult, names, bound: int, what: str) -> None:
    left = {n: run.after[n]['active sessions'] - run.before[n]['active sessions'] for n in names}
    ck.le('sessions left active on %s %r (direct: <= %s)' % ('+'.join(names), left, what),
          sum(left.values()), bound)


def check_endpoint_info(ck: Checks, env: E2E) -> None:
    """The endpoint's own `Ib` equals the members' sum (only where the endpoint has its own socket)."""
    if env.ep.control is None:
        ck.note('endpoint Ib: not applicable (Kamailio talks to the members directly)')
        return
    deadline = time.monotonic() + 4      # the cluster may aggregate heartbeat statistics
    while True:
        own = info(env.ep.control)
        members = env.ep.member_stats()
        total = {k: sum(m[k] for m in members.values()) for k in ('sessions created', 'active sessions')}
        seen = {k: own.get(k) for k in total}
        if seen == total or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    ck.eq('endpoint Ib sessions created == members sum', seen['sessions created'], total['sessions created'])
    ck.eq('endpoint Ib active sessions == members sum', seen['active sessions'], total['active sessions'])


def report(ck: Checks, env: E2E, run: RunResult) -> None:
    ck.note(run.summary())
    ck.note('member counters before %r' % run.before)
    ck.note('member counters after  %r' % run.after)
    ck.note('work directory %s' % env.workdir)
    ck.note(env.logs())
    print('\n[e2e %s] %s' % (env.ep.kind, run.summary()))


# --------------------------------------------------------------------------- cases

def test_udp_control_60_calls(e2e):
    """(1) UDP control socket: 60 calls at 10/s, 3 s RTP each; all succeed, every member has a share."""
    env = e2e(['udp', 'udp', 'udp'], control='udp')
    run = env.run_calls(60, 10, 3000)
    ck = Checks('udp control, %s' % env.ep.kind)
    report(ck, env, run)
    names = list(env.ep.members)
    per = calls_per_member(run)
    check_sip(ck, run, 60)
    check_sdp(ck, run)
    ck.eq('sum of members sessions created', sum(delta(run, n, 'sessions created') for n in names), 60)
    for n in names:
        ck.ge('%s share of the calls' % n, delta(run, n, 'sessions created'), 1)
        ck.eq('%s sessions created == calls relayed by it' % n, delta(run, n, 'sessions created'), per.get(n, 0))
    check_media(ck, run, names)
    check_idle(ck, run, names)
    check_endpoint_info(ck, env)
    ck.verify()


def test_unix_control(e2e):
    """(2) unix control socket (Kamailio: one connection per command), fewer calls."""
    env = e2e(['unix', 'unix'], control='unix')
    run = env.run_calls(20, 10, 2000)
    ck = Checks('unix control, %s' % env.ep.kind)
    report(ck, env, run)
    names = list(env.ep.members)
    per = calls_per_member(run)
    check_sip(ck, run, 20)
    check_sdp(ck, run)
    ck.eq('sum of members sessions created', sum(delta(run, n, 'sessions created') for n in names), 20)
    for n in names:
        ck.eq('%s sessions created == calls relayed by it' % n, delta(run, n, 'sessions created'), per.get(n, 0))
    check_media(ck, run, names)
    check_idle(ck, run, names)
    check_endpoint_info(ck, env)
    ck.verify()


def test_member_killed_during_run(e2e):
    """(3) A member is SIGKILLed mid-run: calls on survivors complete, new calls after detection
    go to survivors only, failures <= calls whose media was on the dead member."""
    env = e2e(['udp', 'udp', 'udp'], control='udp')
    dead, kill_at = 'm2', 2.5
    survivors = [n for n in env.ep.members if n != dead]
    run = env.run_calls(80, 10, 3000, actions=[(kill_at, 'kill', lambda: env.ep.members[dead].kill(signal.SIGKILL))])
    ck = Checks('member killed, %s' % env.ep.kind)
    report(ck, env, run)
    t_kill = run.events['kill']
    detected = t_kill + env.ep.detect_s
    views = list(run.views.values())
    failed = [c for c in views if not c.completed]
    on_dead = [c for c in views if c.member == dead]
    on_survivors = [c for c in views if c.member in survivors]
    # an offer that failed at the relay never reaches the UAS: its relay is unknown; before
    # detection it can only be the dead member's doing
    unplaced = [c for c in views if c.member is None]
    unplaced_late = [c for c in unplaced if c.started is not None and c.started >= detected]
    after_detection = [c for c in views if c.started is not None and c.started >= detected]
    ck.note('calls: %d on %s, %d on survivors, %d never reached the UAS (%d after detection), %d failed; '
            '%d started after kill+%.1f s' % (len(on_dead), dead, len(on_survivors), len(unplaced),
                                              len(unplaced_late), len(failed), len(after_detection),
                                              env.ep.detect_s))

    ck.ge('calls relayed by %s before it was killed (precondition)' % dead, len(on_dead), 1)
    ck.ge('calls started after detection (precondition)', len(after_detection), 5)
    ck.eq('UAC exit code is 0 or 1', run.uac_rc in (0, 1), True)
    ck.eq('calls seen in the UAC message log', len(views), 80)
    ck.eq('failed calls relayed by survivors', [c.call_id for c in on_survivors if not c.completed], [])
    ck.le('failed calls <= calls whose media was on %s (relayed by it + unplaced before detection)' % dead,
          len(failed), len(on_dead) + len(unplaced) - len(unplaced_late))
    ck.eq('calls started after detection that failed',
          [c.call_id for c in after_detection if not c.completed], [])
    ck.eq('calls started after detection relayed by a non-survivor',
          [(c.call_id, c.member) for c in after_detection if c.member not in survivors], [])
    ck.eq('UAC successful + failed', run.uac['successful'] + run.uac['failed'], 80)
    ck.eq('UAC successful calls == completed per message log', run.uac['successful'],
          sum(c.completed for c in views))
    check_sdp(ck, run, exempt={c.call_id for c in on_dead})
    survivor_sessions = sum(delta(run, n, 'sessions created') for n in survivors)
    ck.ge('survivors sessions created >= calls relayed by survivors', survivor_sessions, len(on_survivors))
    for n in survivors:
        ck.ge('%s got new calls after detection' % n, sum(1 for c in after_detection if c.member == n), 1)
    check_media(ck, run, survivors)
    if env.ep.kind == 'direct':
        # Kamailio re-hashes every call-id over the relays still enabled once it has disabled
        # the dead one: deletes of calls that were up meanwhile go to another relay (E50), so
        # their sessions stay on the survivor until its TTL.  A cluster must not leak any.
        up = [c for c in run.calls_up_between(t_kill, detected) if c.member in survivors]
        check_leftovers(ck, run, survivors, len(up), 'calls on survivors up while the death was noticed')
    else:
        check_idle(ck, run, survivors)
    ck.eq('%s is dead' % dead, env.ep.members[dead].alive(), False)
    ck.verify()


def test_member_paused_during_run(e2e):
    """(4) A member paused during a run gets no new sessions afterwards."""
    env = e2e(['udp', 'unix', 'udp'], control='udp')
    paused, pause_at, settle = 'm1', 2.0, 0.3
    snap: dict[str, int] = {}

    def snapshot():
        snap.update(env.ep.member_stats([paused])[paused])

    run = env.run_calls(60, 10, 3000, actions=[(pause_at, 'pause', lambda: env.pause(paused)),
                                               (pause_at + settle, 'snapshot', snapshot)])
    ck = Checks('member paused, %s' % env.ep.kind)
    report(ck, env, run)
    ck.note('snapshot of %s after the pause: %r' % (paused, snap))
    names = list(env.ep.members)
    others = [n for n in names if n != paused]
    views = list(run.views.values())
    t_snap = run.events['snapshot']
    later = [c for c in views if c.started is not None and c.started >= t_snap]
    before_pause = [c for c in views if c.member == paused]
    check_sip(ck, run, 60)
    ck.ge('calls relayed by %s before the pause (precondition)' % paused, len(before_pause), 1)
    ck.ge('calls started after the pause (precondition)', len(later), 10)
    ck.eq('%s sessions created after the pause' % paused,
          run.after[paused]['sessions created'] - snap['sessions created'], 0)
    ck.eq('calls started after the pause relayed by %s' % paused,
          [c.call_id for c in later if c.member == paused], [])
    for n in others:
        ck.ge('%s got calls after the pause' % n, sum(1 for c in later if c.member == n), 1)
    ck.eq('sum of members sessions created', sum(delta(run, n, 'sessions created') for n in names), 60)
    exempt: set[str] = set()
    if env.ep.kind == 'direct':
        # Disabling a relay makes Kamailio re-hash every call-id over the enabled ones, so the
        # answer (L) or delete (D) of a call that was up at that moment may go to another relay:
        # a call in setup then keeps the UAS's own SDP, and a call that was up leaks its
        # session until the member's TTL.  A cluster remembers the member of each call.
        t0, t1 = run.events['pause'], run.events['pause done']
        exempt = {c.call_id for c in views if c.offer_at is not None and c.answer_at is not None
                  and c.offer_at <= t1 + 0.1 and c.answer_at >= t0}
        check_leftovers(ck, run, names, len(run.calls_up_between(t0, t1)), 'calls up at the pause')
    else:
        check_idle(ck, run, names)
        check_endpoint_info(ck, env)
    check_sdp(ck, run, exempt=exempt)
    check_media(ck, run, others)
    ck.verify()


@pytest.mark.parametrize('relay_kind', ['cluster'], indirect=True)
@pytest.mark.parametrize('manage', [False, True], ids=['offer-answer', 'manage'])
def test_late_offer_is_anchored(e2e, manage):
    """(5) Late offer (issue 15): INVITE without SDP, offer in the 200 OK, answer in the ACK.
    Kamailio's first command for the call is `Uc8 CALLID IP PORT TTAG;1 FTAG;1`; the cluster
    must create the session (one RTPproxy does) instead of answering 0."""
    defines = {'LATE_OFFER': '1'}
    if manage:
        defines['MANAGE'] = '1'
    env = e2e(['udp', 'udp'], control='udp', kamailio_defines=defines)
    run = env.run_calls(4, 4, 2000, uac_xml=LATE_UAC_XML)
    ck = Checks('late offer, %s' % ('rtpproxy_manage' if manage else 'rtpproxy_offer/answer'))
    report(ck, env, run)
    names = list(env.ep.members)
    check_sip(ck, run, 4)
    check_sdp(ck, run)
    ck.eq('SDP checked on every call', sum(1 for c in run.views.values()
                                           if c.offer_at is not None and c.answer_at is not None), 4)
    ck.eq('sum of members sessions created', sum(delta(run, n, 'sessions created') for n in names), 4)
    check_media(ck, run, names)
    check_idle(ck, run, names)
    log = tail(env.kamailio.log, 100000)
    ck.check('Kamailio got a port for every offer', 'incorrect port' not in log,
             [line for line in log.splitlines() if 'incorrect port' in line][:3])
    ck.verify()


def _kamailio_capabilities_and_commands(procs, clients_first: bool) -> tuple[dict, set[str]]:
    """Kamailio (offer flag z20) started after or before the members: its V/VF answers
    and the command words of one call, seen by a tap between Kamailio and the cluster."""
    workdir = tempfile.mkdtemp(prefix='rtpc-e2e-')
    ep = start_cluster(procs, workdir, ['udp', 'udp'], 'udp', hold_members=clients_first)
    host, _, port = ep.control.partition(':')[2].rpartition(':')
    tap = UdpControlTap(host, int(port))
    ep.rtpproxy_sock = tap.spec
    env = None
    try:
        # disabled after a failed start-up check, the relay is tested again 1 s later
        env = E2E(procs, workdir, ep, {'OFFER_FLAGS': '"z20"', 'RTPP_DISABLE_TOUT': '1'})
        if clients_first:
            assert tap.capability_answers().get('V') == 'E999', tap.exchanges()
            ep.release_members()
            deadline = time.monotonic() + 10
            while control_command(ep.control, 'V', 3.0).strip() != '20040107':
                assert time.monotonic() < deadline, 'the members did not come up'
                time.sleep(0.2)
            time.sleep(1.5)       # Kamailio's 1 s disable time of the relay is over
        run = env.run_calls(1, 1, 1000)
        ck = Checks('kamailio started %s the members' % ('before' if clients_first else 'after'))
        report(ck, env, run)
        check_sip(ck, run, 1)
        check_sdp(ck, run)
        ck.verify()
    finally:
        if env is not None:
            env.close()
        else:
            ep.stop()
        tap.close()
    shutil.rmtree(workdir, ignore_errors=True)
    words = {command.split()[0] for command in tap.commands if command[:1] in 'UL'}
    return tap.capability_answers(), words


@pytest.mark.parametrize('relay_kind', ['cluster'], indirect=True)
def test_kamailio_started_before_the_members_gets_the_same_answers(procs, relay_kind):
    """Start order (issue 15): each Kamailio process asks V and VF 20050322, 20071116,
    20081102 at start-up and keeps the answers; started before the members it first finds
    the relay not ready (as one RTPproxy not yet started) and later gets what a Kamailio
    started after the members gets, so it sends the same `UZ20c8`/`Lc8`."""
    last_answers, last_words = _kamailio_capabilities_and_commands(procs, clients_first=False)
    first_answers, first_words = _kamailio_capabilities_and_commands(procs, clients_first=True)
    assert last_answers == {'V': '20040107', 'VF 20050322': '1', 'VF 20071116': '1',
                            'VF 20081102': '1'}
    assert first_answers == last_answers
    assert last_words == {'UZ20c8', 'Lc8'} and first_words == last_words
