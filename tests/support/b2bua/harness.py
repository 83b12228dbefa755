"""The sippy B2BUA (PyPI `sippy`, command `b2bua`) between two SIPp instances, with its
RTPproxy socket pointed at rtp_cluster (or at a tap in front of it).

    UAC (SIPp) -> B2BUA -> UAS (SIPp, -rtp_echo); B2BUA -> cluster -> rtp-io members

Every process is started in its own session and stopped by PID (kamailio.harness helpers).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

from tests.support.kamailio.harness import (HOST, Sipp, free_port_outside, parse_messages,
                                           port_bound, sdp_media, start_process, stop_process,
                                           tail)

B2BUA_DIR = os.path.dirname(os.path.abspath(__file__))
UAC_XML = os.path.join(B2BUA_DIR, 'uac.xml')
SILENT_UAC_XML = os.path.join(B2BUA_DIR, 'uac_silent.xml')
UAS_XML = os.path.join(B2BUA_DIR, 'uas.xml')


def b2bua_command() -> str | None:
    """The `b2bua` script of the environment running the tests (PyPI sippy), or None."""
    beside = os.path.join(os.path.dirname(sys.executable), 'b2bua')
    return beside if os.path.exists(beside) else shutil.which('b2bua')


class B2bua:
    """`b2bua -f` on 127.0.0.1 with a static route to the UAS and no auth/accounting."""

    def __init__(self, workdir: str, rtpproxy_sock: str, uas_port: int, tracker,
                 avoid: list[tuple[int, int]]) -> None:
        self.workdir = workdir
        self.port = free_port_outside(avoid)
        self.socket = os.path.join(workdir, 'b2bua.sock')      # where notifications arrive
        self.log = os.path.join(workdir, 'b2bua.log')
        args = [b2bua_command(), '-f', '-l', HOST, '-p', str(self.port),
                '-s', '%s:%d' % (HOST, uas_port), '-u', '-A', '0', '-c', self.socket,
                '-P', os.path.join(workdir, 'b2bua.pid'), '-L', self.log,
                '--rtp_proxy_clients=' + rtpproxy_sock]
        self.proc = start_process(args, os.path.join(workdir, 'b2bua.out'), tracker,
                                  cwd=workdir)
        deadline = time.monotonic() + 20
        while not port_bound(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError('b2bua did not start (rc %s):\n%s' % (
                    self.proc.poll(), tail(os.path.join(workdir, 'b2bua.out'))))
            time.sleep(0.05)

    def stop(self) -> None:
        stop_process(self.proc)

    def output(self) -> str:
        return tail(os.path.join(self.workdir, 'b2bua.out'), 40) + '\n' + tail(self.log, 40)


class CallRun:
    """One SIPp UAS + UAC pair through the B2BUA; the parsed message logs afterwards."""

    def __init__(self, workdir: str, tracker, avoid: list[tuple[int, int]]) -> None:
        self.workdir = workdir
        self.tracker = tracker
        self.avoid = avoid
        self.uas = Sipp(workdir, 'uas', UAS_XML, tracker, avoid)
        self.uac: Sipp | None = None

    def start_uas(self) -> None:
        self.uas.start(['-rtp_echo'])

    def run_uac(self, b2bua: B2bua, calls: int, rate: float, duration_ms: int,
                scenario: str = UAC_XML, budget: float = 30) -> int:
        self.uac = Sipp(self.workdir, 'uac', scenario, self.tracker, self.avoid)
        self.uac.start(['-m', str(calls), '-r', str(rate), '-d', str(duration_ms),
                        '-l', str(calls), '-timeout', '%ds' % int(budget)],
                       remote='%s:%d' % (HOST, b2bua.port))
        try:
            return self.uac.proc.wait(budget + 10)
        except subprocess.TimeoutExpired:
            self.uac.stop()
            return -1

    def finish(self) -> None:
        self.uas.quit()

    def stop(self) -> None:
        for sipp in (self.uac, self.uas):
            if sipp is not None:
                sipp.stop()

    def media_ports(self) -> tuple[list[int | None], list[int | None]]:
        """Ports in the SDP of the 200 OKs the UAC got and of the INVITEs the UAS got."""
        answers = [sdp_media(m.body)[1] for m in parse_messages(self.uac.msg_file)
                   if not m.sent and m.status == 200 and m.cseq_method == 'INVITE']
        offers = [sdp_media(m.body)[1] for m in parse_messages(self.uas.msg_file)
                  if not m.sent and m.method == 'INVITE']
        return answers, offers

    def bye_delays(self) -> list[float]:
        """Seconds from the UAC's ACK to the BYE it received (media-timeout case)."""
        acks, byes = {}, {}
        for m in parse_messages(self.uac.msg_file):
            if m.sent and m.method == 'ACK':
                acks.setdefault(m.call_id, m.ts)
            elif not m.sent and m.method == 'BYE':
                byes.setdefault(m.call_id, m.ts)
        return [byes[cid] - acks[cid] for cid in byes if cid in acks]

    def uas_got_bye(self) -> int:
        return sum(1 for m in parse_messages(self.uas.msg_file) if not m.sent and m.method == 'BYE')
