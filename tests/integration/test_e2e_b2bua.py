"""End-to-end: the sippy B2BUA (the client the original rtp_cluster was written for) with
rtp_cluster as its RTPproxy (issue 15).

SIPp UAC -> b2bua -> SIPp UAS (-rtp_echo); the B2BUA's `--rtp_proxy_clients` is the
cluster's UDP or unix control socket; two rtp-io members behind the cluster, whose relay
(`<disconnect_notify>`) carries their timeout notifications to the B2BUA's socket.
"""
from __future__ import annotations

import os
import shutil
import signal
import tempfile

import pytest

from tests.support.b2bua.harness import SILENT_UAC_XML, B2bua, CallRun, b2bua_command
from tests.support.cluster_proc import ClusterProc, cluster_xml, member_xml
from tests.support.control_tap import UdpControlTap
from tests.support.kamailio.harness import (Checks, member_range, missing_prerequisites,
                                            skip_unless_ci)
from tests.support.procs import free_tcp_port, free_udp_port

_missing = missing_prerequisites() or (None if b2bua_command() else 'sippy b2bua not installed')
pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(120),
              skip_unless_ci(_missing)]


class Setup:
    """Members, the cluster (with its notify relay) and a work directory for one test."""

    def __init__(self, procs, member_args: list[str] = (), control: str = 'udp',
                 hold_members: bool = False) -> None:
        self.procs = procs
        self.workdir = tempfile.mkdtemp(prefix='rtpc-b2b-')     # short: unix socket paths
        self.relay_port = free_tcp_port()
        notify_args = ['-n', 'tcp:%%CC_SELF%%:' + str(self.relay_port)]
        self.members = {'m%d' % i: procs.member('udp', extra=notify_args + list(member_args))
                        for i in (1, 2)}
        if hold_members:      # reachable only later: the clients start before the members
            for member in self.members.values():
                os.kill(member.pid, signal.SIGSTOP)
        self.ranges = {n: member_range(m) for n, m in self.members.items()}
        relay = ('<disconnect_notify><inbound_address>127.0.0.1:%d</inbound_address>'
                 '<dest_socket_prefix>unix:%s/b2bua</dest_socket_prefix></disconnect_notify>'
                 % (self.relay_port, self.workdir))
        address = (os.path.join(self.workdir, 'cluster.sock') if control == 'unix'
                   else '127.0.0.1:%d' % free_udp_port())
        config = cluster_xml([member_xml(n, m) for n, m in self.members.items()],
                             protocol=control, address=address, extra=relay)
        os.mkdir(os.path.join(self.workdir, 'cluster'))
        self.cluster = ClusterProc.start(
            procs, os.path.join(self.workdir, 'cluster'), config,
            wait_online=[] if hold_members else list(self.members),
            extra_args=['--probe-interval', '0.2'])

    def release_members(self) -> None:
        for member in self.members.values():
            os.kill(member.pid, signal.SIGCONT)

    def member_of(self, port: int | None) -> str | None:
        return next((n for n, (lo, hi) in self.ranges.items()
                     if port is not None and lo <= port <= hi), None)

    def counters(self) -> dict[str, dict[str, int]]:
        from tests.support.kamailio.harness import parse_info
        return {n: parse_info(m.command('Ib')) for n, m in self.members.items()}

    def close(self, keep: bool) -> None:
        self.cluster.stop()
        if keep:
            print('b2bua work directory kept: %s' % self.workdir)
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)


@pytest.fixture
def setups(procs, request):
    made: list[Setup] = []
    failed_before = request.session.testsfailed

    def make(*args, **kwargs) -> Setup:
        made.append(Setup(procs, *args, **kwargs))
        return made[-1]
    yield make
    for setup in made:
        setup.close(keep=request.session.testsfailed != failed_before)


def _calls_through(setup: Setup, rtpproxy_sock: str, calls: int, duration_ms: int,
                   scenario: str | None = None):
    avoid = list(setup.ranges.values())
    run = CallRun(setup.workdir, setup.procs, avoid)
    run.start_uas()
    b2bua = B2bua(setup.workdir, rtpproxy_sock, run.uas.sip_port, setup.procs, avoid)
    return run, b2bua


@pytest.mark.parametrize('control', ['udp', 'unix'])
def test_b2bua_calls_with_rtp_through_the_cluster(setups, control):
    setup = setups(control=control)
    spec = setup.cluster.control
    run, b2bua = _calls_through(setup, spec, 3, 2000)
    before = setup.counters()
    try:
        rc = run.run_uac(b2bua, 3, 3, 2000)
        run.finish()
    finally:
        run.stop()
        b2bua.stop()
    after = setup.counters()
    ck = Checks('b2bua over %s' % control)
    ck.note(b2bua.output())
    ck.note(setup.cluster.log()[-3000:])
    ck.eq('UAC exit code', rc, 0)
    ck.eq('UAC successful calls', run.uac.stats()['successful'], 3)
    ck.eq('UAS successful calls', run.uas.stats()['successful'], 3)
    answers, offers = run.media_ports()
    ck.eq('UAC got relay ports of a member', [setup.member_of(p) is not None for p in answers],
          [True] * 3)
    ck.eq('UAS got relay ports of a member', [setup.member_of(p) is not None for p in offers],
          [True] * 3)
    created = {n: after[n]['sessions created'] - before[n]['sessions created'] for n in after}
    ck.eq('sessions created on the members', sum(created.values()), 3)
    for name, count in created.items():
        if count:
            ck.ge('%s packets relayed' % name, after[name]['packets transmitted']
                  - before[name]['packets transmitted'], 60 * count)
    ck.eq('active sessions after the calls', [after[n]['active sessions'] for n in after], [0, 0])
    ck.verify()


def test_b2bua_hangs_up_on_the_media_timeout_notification(setups):
    """Members time sessions out after 3 s; the caller sends no RTP.  With one RTPproxy the
    B2BUA gets the notification and sends BYE to both legs; through the cluster too."""
    setup = setups(member_args=['-T', '3', '-W', '3'])
    run, b2bua = _calls_through(setup, setup.cluster.control, 1, 0)
    try:
        rc = run.run_uac(b2bua, 1, 1, 0, scenario=SILENT_UAC_XML, budget=25)
        run.finish()
    finally:
        run.stop()
        b2bua.stop()
    ck = Checks('b2bua media timeout')
    ck.note(b2bua.output())
    ck.note(setup.cluster.log()[-3000:])
    ck.eq('UAC exit code (its scenario ends with the BYE it received)', rc, 0)
    delays = run.bye_delays()
    ck.eq('BYEs the UAC got', len(delays), 1)
    ck.check('BYE after the members\' 3 s timeout, not before', all(2.5 <= d <= 12 for d in delays),
             delays)
    ck.eq('BYEs the UAS got', run.uas_got_bye(), 1)
    ck.eq('UAS successful calls', run.uas.stats()['successful'], 1)
    ck.verify()


def _capabilities_and_offers(setups, clients_first: bool) -> tuple[dict, list[str]]:
    """Start the B2BUA before or after the members; its V/VF answers and its `U` commands."""
    setup = setups(hold_members=clients_first)
    host, _, port = setup.cluster.control.partition(':')[2].rpartition(':')
    tap = UdpControlTap(host, int(port))
    avoid = list(setup.ranges.values())
    run = CallRun(setup.workdir, setup.procs, avoid)
    b2bua = None
    try:
        run.start_uas()
        b2bua = B2bua(setup.workdir, tap.spec, run.uas.sip_port, setup.procs, avoid)
        if clients_first:
            tap.wait(lambda: 'V' in tap.commands, 15, "the B2BUA's V")
            setup.release_members()
        tap.wait(lambda: len([c for c in tap.capability_answers() if c.startswith('VF')]) == 6,
                 15, 'the answers to the six VF questions')
        assert run.run_uac(b2bua, 1, 1, 1000) == 0, b2bua.output()
        run.finish()
    finally:
        run.stop()
        if b2bua is not None:
            b2bua.stop()
        tap.close()
    offers = [c for c in tap.commands if c.startswith('U')]
    assert len(offers) == 2, tap.exchanges()
    return tap.capability_answers(), offers


def _shape(offer: str) -> tuple:
    """A `U` without its call-specific values: word, argument count, notify socket name."""
    word, *args = offer.split()
    return word, len(args), os.path.basename(args[-2]) if len(args) in (6, 7) else None


def test_b2bua_started_before_the_members_gets_the_same_answers(setups):
    """Start order (issue 15): the B2BUA asks V and six VF dates once for its lifetime.
    Started before the members it must end up with what it gets when started after them."""
    last_answers, last_offers = _capabilities_and_offers(setups, clients_first=False)
    first_answers, first_offers = _capabilities_and_offers(setups, clients_first=True)
    assert last_answers['V'] == '20040107' and last_answers['VF 20081224'] == '1'
    assert first_answers == last_answers
    shapes = [_shape(o) for o in last_offers]
    assert [_shape(o) for o in first_offers] == shapes
    # R<ip> (20090810) and the notify pair (20081224) are there: caller and callee side
    assert [s[0][:2] for s in shapes] == ['UR', 'UR'] and [s[1] for s in shapes] == [6, 7]
    assert [s[2] for s in shapes] == ['b2bua.sock', 'b2bua.sock']
