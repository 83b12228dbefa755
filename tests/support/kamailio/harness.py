"""End-to-end harness: Kamailio 5.6 + SIPp 3.6 placing calls with RTP through an
RTPproxy-protocol control socket ("the relay endpoint").

Pieces (all on 127.0.0.1, free ports, every process stopped by PID):

- `RelayEndpoint`: what Kamailio's `rtpproxy_sock` points at, plus the real rtp-io members
  behind it.  `start_direct()` points Kamailio straight at the members (Kamailio balances
  over them itself); `start_cluster()` starts the rtp_cluster daemon in front of them.
- `Kamailio`: tests/e2e/kamailio.cfg run in the foreground with -A defines.
- `Sipp`: one SIPp instance (tests/e2e/uac.xml or uas.xml) with stat/message traces.
- `E2E.run_calls()`: one call run (UAS with RTP echo + UAC playing PCMA), with timed
  actions during the run, member counters before/after and a per-call view parsed from
  both SIPp message logs.
- `Checks`: collects named checks and fails with every failed one and its numbers.
"""
from __future__ import annotations

import csv
import datetime
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import pytest

from tests.support.procs import ROOT, Member, ProcessTracker, control_command, free_udp_port

E2E_DIR = os.path.dirname(os.path.abspath(__file__))
KAMAILIO_CFG = os.path.join(E2E_DIR, 'kamailio.cfg')
UAC_XML = os.path.join(E2E_DIR, 'uac.xml')
UAS_XML = os.path.join(E2E_DIR, 'uas.xml')
LATE_UAC_XML = os.path.join(E2E_DIR, 'late_uac.xml')      # INVITE without SDP
KAMAILIO_MODULES = '/usr/lib/x86_64-linux-gnu/kamailio/modules/'
PCAP = '/usr/share/sip-tester/g711a.pcap'
PCAP_PPS = 33.5            # g711a.pcap: 236 RTP packets over 7.05 s
CLUSTER_NAME = 'e2e'
HOST = '127.0.0.1'


# --------------------------------------------------------------------------- prerequisites

def skip_unless_ci(missing: str | None):
    """Skip when a prerequisite is `missing`, except in CI: CI installs every one, so there a
    missing one must fail the run instead of hiding it."""
    return pytest.mark.skipif(missing is not None and not os.environ.get('CI'),
                              reason=missing or '')


def missing_prerequisites() -> str | None:
    """Why the e2e tests cannot run here, or None."""
    for tool in ('kamailio', 'sipp', 'kamcmd'):
        if shutil.which(tool) is None:
            return '%s not installed' % tool
    if not os.path.isdir(KAMAILIO_MODULES):
        return 'no Kamailio modules in %s' % KAMAILIO_MODULES
    if not os.path.exists(PCAP):
        return 'no %s' % PCAP
    if os.geteuid() != 0:
        return 'SIPp play_pcap_audio needs root (raw socket)'
    return None


def _py_env() -> dict:
    env = dict(os.environ)
    env['PYTHONPATH'] = ROOT + (os.pathsep + env['PYTHONPATH'] if env.get('PYTHONPATH') else '')
    return env


# --------------------------------------------------------------------------- processes

def start_process(args: list[str], log_path: str, tracker: ProcessTracker,
                  cwd: str | None = None, env: dict | None = None) -> subprocess.Popen:
    """Start a child in its own session (so its own children can be reached by its PGID)."""
    log = open(log_path, 'ab')
    try:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                cwd=cwd, env=env, start_new_session=True)
    finally:
        log.close()
    tracker.add(proc)
    return proc


def stop_process(proc: subprocess.Popen | None, sig: int = signal.SIGTERM, timeout: float = 10) -> None:
    """Stop one child we started, by its PID; then anything left in its process group (PGID = PID)."""
    if proc is None:
        return
    if proc.poll() is None:
        try:
            os.kill(proc.pid, sig)
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout)
        except ProcessLookupError:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)     # leftovers (e.g. Kamailio workers) of this group only
    except (ProcessLookupError, PermissionError):
        pass


def tail(path: str, lines: int = 25) -> str:
    try:
        with open(path, 'rb') as f:
            data = f.read()[-20000:].decode('utf-8', 'replace')
    except OSError as e:
        return '(%s)' % e
    return '\n'.join(data.splitlines()[-lines:])


def port_bound(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def member_range(member: Member) -> tuple[int, int]:
    a = member.args
    return int(a[a.index('-m') + 1]), int(a[a.index('-M') + 1])


def free_port_outside(ranges: list[tuple[int, int]], span: int = 1) -> int:
    """A free UDP port (block) that does not overlap any member's media range."""
    for _ in range(50):
        p = free_udp_port(HOST, span)
        if all(p + span - 1 < lo or p > hi for lo, hi in ranges):
            return p
    raise RuntimeError('no free port outside the media ranges %r' % ranges)


# --------------------------------------------------------------------------- RTPproxy counters

def parse_info(reply: str) -> dict[str, int]:
    """`Ib` reply -> {'sessions created': n, 'active sessions': n, ...}."""
    out = {}
    for line in reply.splitlines():
        name, sep, value = line.partition(':')
        if sep:
            try:
                out[name.strip()] = int(value.strip())
            except ValueError:
                pass
    if 'sessions created' not in out:
        raise ValueError('not an I reply: %r' % reply)
    return out


def info(spec: str, timeout: float = 2.0) -> dict[str, int]:
    return parse_info(control_command(spec, 'Ib', timeout))


# --------------------------------------------------------------------------- relay endpoint

@dataclass
class RelayEndpoint:
    """The RTPproxy endpoint Kamailio talks to, and the real members behind it."""
    kind: str                              # 'direct' | 'cluster'
    rtpproxy_sock: str                     # value of Kamailio's modparam rtpproxy_sock
    control: str | None                    # where the test may send `Ib` to the endpoint itself
    members: dict[str, Member]
    detect_s: float                        # time the endpoint may need to notice a dead member
    workdir: str
    daemon: subprocess.Popen | None = None
    admin: str | None = None               # cluster admin socket spec
    log: str | None = None
    ranges: dict[str, tuple[int, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.ranges = {name: member_range(m) for name, m in self.members.items()}

    def member_of_port(self, port: int | None) -> str | None:
        for name, (lo, hi) in self.ranges.items():
            if port is not None and lo <= port <= hi:
                return name
        return None

    def member_stats(self, names=None) -> dict[str, dict[str, int]]:
        """`Ib` sent straight to each (living) member."""
        out = {}
        for name, m in self.members.items():
            if (names is None or name in names) and m.alive():
                out[name] = parse_info(m.command('Ib'))
        return out

    def release_members(self) -> None:
        """SIGCONT members held by start_cluster(hold_members=True)."""
        for m in self.members.values():
            os.kill(m.pid, signal.SIGCONT)

    def stop(self) -> None:
        stop_process(self.daemon)
        for m in self.members.values():
            if m.alive():
                os.kill(m.pid, signal.SIGCONT)    # a stopped process cannot act on SIGTERM
            m.stop()


def start_members(tracker: ProcessTracker, protocols: list[str]) -> dict[str, Member]:
    return {'m%d' % (i + 1): tracker.member(proto) for i, proto in enumerate(protocols)}


def start_direct(tracker: ProcessTracker, workdir: str, protocols: list[str]) -> RelayEndpoint:
    """Kamailio talks straight to the members (its own weighted call-id hash picks one)."""
    members = start_members(tracker, protocols)
    sock = ' '.join(m.control for m in members.values())
    control = next(iter(members.values())).control if len(members) == 1 else None
    # Kamailio notices a dead member on the first command to it: tout 1 s x retr 2.
    return RelayEndpoint('direct', sock, control, members, detect_s=4.0, workdir=workdir)


def cluster_config_xml(control_protocol: str, control_address: str, members: dict[str, Member]) -> str:
    parts = ['<rtp_cluster_config>', '<rtp_cluster>', '<name>%s</name>' % CLUSTER_NAME,
             '<protocol>%s</protocol>' % control_protocol, '<address>%s</address>' % control_address]
    for name, m in members.items():
        parts.append('<rtpproxy><name>%s</name><protocol>%s</protocol><address>%s</address>'
                     '<weight>100</weight><capacity>1000</capacity><status>ACTIVE</status></rtpproxy>'
                     % (name, m.protocol, m.address))
    parts += ['</rtp_cluster>', '</rtp_cluster_config>', '']
    return '\n'.join(parts)


def start_cluster(tracker: ProcessTracker, workdir: str, protocols: list[str],
                  control_protocol: str = 'udp', hold_members: bool = False) -> RelayEndpoint:
    """The rtp_cluster daemon in front of the members; Kamailio talks to the daemon.

    `hold_members`: the members are SIGSTOPped before the daemon starts (it cannot probe
    them) until `release_members()`: clients started meanwhile start before the members.
    """
    members = start_members(tracker, protocols)
    if hold_members:
        for m in members.values():
            os.kill(m.pid, signal.SIGSTOP)
    if control_protocol == 'udp':
        port = free_port_outside([member_range(m) for m in members.values()])
        address, control = '%s:%d' % (HOST, port), 'udp:%s:%d' % (HOST, port)
    elif control_protocol == 'unix':
        address = os.path.join(workdir, 'cluster.sock')
        control = 'unix:' + address
    else:
        raise ValueError(control_protocol)
    conf = os.path.join(workdir, 'rtp_cluster.xml')
    with open(conf, 'w') as f:
        f.write(cluster_config_xml(control_protocol, address, members))
    admin_path = os.path.join(workdir, 'admin.sock')
    log = os.path.join(workdir, 'rtp_cluster.log')
    args = [sys.executable, '-m', 'rtp_cluster.app', '-f', '-c', conf, '-s', 'unix:' + admin_path,
            '-P', os.path.join(workdir, 'rtp_cluster.pid'), '-L', log]
    if hold_members:
        args += ['--probe-interval', '0.3']       # notice the released members quickly
    daemon = start_process(args, os.path.join(workdir, 'rtp_cluster.out'), tracker, cwd=ROOT, env=_py_env())
    ep = RelayEndpoint('cluster', control, control, members, detect_s=4.0, workdir=workdir,
                       daemon=daemon, admin='unix:' + admin_path, log=log)
    deadline = time.monotonic() + 15
    while True:
        if daemon.poll() is not None:
            raise RuntimeError('rtp_cluster exited with %s at start-up:\n%s\n%s' % (
                daemon.returncode, tail(os.path.join(workdir, 'rtp_cluster.out')), tail(log)))
        try:
            # E999: no member probed yet (the cluster waits 2 s for one before answering)
            if control_command(control, 'V', 3.0).strip() in ('20040107', 'E999'):
                break
        except OSError:
            pass
        if time.monotonic() > deadline:
            ep.stop()
            raise RuntimeError('rtp_cluster does not answer V on %s:\n%s' % (control, tail(log)))
        time.sleep(0.1)
    if not hold_members:
        time.sleep(1.0)      # members are probed right after start-up; give them one heartbeat
    return ep


def cluster_admin(ep: RelayEndpoint, *words: str, timeout: float = 10) -> str:
    r = subprocess.run([sys.executable, '-m', 'rtp_cluster.admin_client', '-s', ep.admin] + list(words),
                       cwd=ROOT, env=_py_env(), capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError('rtp_cluster.client %s: rc %d: %s %s' % (' '.join(words), r.returncode,
                                                                     r.stdout.strip(), r.stderr.strip()))
    return r.stdout


# --------------------------------------------------------------------------- Kamailio

class Kamailio:
    """tests/e2e/kamailio.cfg in the foreground, stateful proxy with record-routing."""

    def __init__(self, workdir: str, rtpproxy_sock: str, tracker: ProcessTracker,
                 avoid: list[tuple[int, int]] = (), defines: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.extra_defines = dict(defines or {})     # e.g. {'RTPP_RETR': '2'}
        self.tracker = tracker
        self.port = free_port_outside(list(avoid))
        self.rtpproxy_sock = rtpproxy_sock
        self.ctl = os.path.join(workdir, 'kamailio-ctl.sock')
        self.log = os.path.join(workdir, 'kamailio.log')
        self.proc: subprocess.Popen | None = None

    def defines(self) -> list[str]:
        d = {'SIP_LISTEN': 'udp:%s:%d' % (HOST, self.port),
             'RTPP_SOCK': '"%s"' % self.rtpproxy_sock,
             'CTL_SOCK': '"unix:%s"' % self.ctl,
             'MPATH': '"%s"' % KAMAILIO_MODULES}
        d.update(self.extra_defines)
        out = []
        for k, v in d.items():
            out += ['-A', '%s=%s' % (k, v)]
        return out

    def check_config(self) -> None:
        r = subprocess.run(['kamailio', '-c', '-f', KAMAILIO_CFG] + self.defines(),
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError('kamailio -c failed (rc %d):\n%s' % (r.returncode, (r.stdout + r.stderr)[-3000:]))

    def start(self, timeout: float = 20) -> None:
        self.check_config()
        args = ['kamailio', '-f', KAMAILIO_CFG, '-DD', '-E', '-Y', self.workdir,
                '-P', os.path.join(self.workdir, 'kamailio.pid'), '-m', '48', '-M', '8'] + self.defines()
        self.proc = start_process(args, self.log, self.tracker, cwd=self.workdir)
        deadline = time.monotonic() + timeout
        n = 0
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((HOST, 0))
            s.settimeout(0.3)
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError('kamailio exited with %s at start-up:\n%s' % (self.proc.returncode, tail(self.log)))
                n += 1
                s.sendto(self._options(s.getsockname()[1], n), (HOST, self.port))
                try:
                    if s.recv(65535).startswith(b'SIP/2.0 '):
                        return
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError('kamailio does not answer OPTIONS on port %d:\n%s' % (self.port, tail(self.log)))

    def _options(self, lport: int, n: int) -> bytes:
        return ('OPTIONS sip:probe@%(h)s:%(p)d SIP/2.0\r\n'
                'Via: SIP/2.0/UDP %(h)s:%(l)d;branch=z9hG4bK-probe-%(n)d\r\n'
                'From: <sip:probe@%(h)s>;tag=probe%(n)d\r\nTo: <sip:probe@%(h)s>\r\n'
                'Call-ID: probe-%(n)d-%(l)d@%(h)s\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 5\r\n'
                'Content-Length: 0\r\n\r\n' % {'h': HOST, 'p': self.port, 'l': lport, 'n': n}).encode()

    def rpc(self, *words: str) -> str:
        r = subprocess.run(['kamcmd', '-s', 'unix:' + self.ctl] + list(words),
                           capture_output=True, text=True, timeout=10)
        if r.returncode != 0:
            raise RuntimeError('kamcmd %s: rc %d: %s %s' % (' '.join(words), r.returncode, r.stdout, r.stderr))
        return r.stdout

    def stop(self) -> None:
        stop_process(self.proc)


# --------------------------------------------------------------------------- SIPp

class Sipp:
    """One SIPp process with -trace_stat/-trace_msg into its own files."""

    def __init__(self, workdir: str, name: str, scenario: str, tracker: ProcessTracker,
                 avoid: list[tuple[int, int]]) -> None:
        self.workdir = workdir
        self.name = name
        self.tracker = tracker
        # the scenario (and the pcap it plays) live in the run directory
        self.scenario = os.path.join(workdir, os.path.basename(scenario))
        shutil.copy(scenario, self.scenario)
        if not os.path.exists(os.path.join(workdir, 'g711a.pcap')):
            shutil.copy(PCAP, os.path.join(workdir, 'g711a.pcap'))
        self.sip_port = free_port_outside(avoid)
        self.media_port = free_port_outside(avoid, span=4)
        self.control_port = free_port_outside(avoid)
        self.stat_file = os.path.join(workdir, name + '_stat.csv')
        self.msg_file = os.path.join(workdir, name + '_messages.log')
        self.err_file = os.path.join(workdir, name + '_errors.log')
        self.out_file = os.path.join(workdir, name + '.out')
        self.proc: subprocess.Popen | None = None

    def start(self, extra: list[str], remote: str | None = None) -> None:
        args = ['sipp'] + ([remote] if remote else []) + [
            '-sf', self.scenario, '-i', HOST, '-mi', HOST, '-ci', HOST,
            '-p', str(self.sip_port), '-mp', str(self.media_port), '-cp', str(self.control_port),
            '-nostdin', '-trace_stat', '-stf', self.stat_file, '-fd', '1',
            '-trace_msg', '-message_file', self.msg_file, '-trace_err', '-error_file', self.err_file,
            '-recv_timeout', '15000'] + extra
        self.args = args
        self.proc = start_process(args, self.out_file, self.tracker, cwd=self.workdir)
        deadline = time.monotonic() + 10
        while not port_bound(self.sip_port):
            if self.proc.poll() is not None:
                raise RuntimeError('sipp %s exited with %s:\n%s' % (self.name, self.proc.returncode, tail(self.out_file)))
            if time.monotonic() > deadline:
                raise RuntimeError('sipp %s did not bind port %d:\n%s' % (self.name, self.sip_port, tail(self.out_file)))
            time.sleep(0.05)

    def quit(self, timeout: float = 15) -> int:
        """Graceful quit through the control port ('q': no new calls, finish the open ones)."""
        if self.proc.poll() is None:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.sendto(b'q', (HOST, self.control_port))
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                stop_process(self.proc)
        return self.proc.returncode

    def stop(self) -> None:
        stop_process(self.proc)

    def stats(self) -> dict[str, int]:
        """Cumulative counters of the last row of the -trace_stat CSV."""
        keys = {'created': 'TotalCallCreated', 'successful': 'SuccessfulCall(C)',
                'failed': 'FailedCall(C)', 'current': 'CurrentCall',
                'outgoing': 'OutgoingCall(C)', 'incoming': 'IncomingCall(C)'}
        try:
            with open(self.stat_file, newline='') as f:
                rows = list(csv.reader(f, delimiter=';'))
            last = dict(zip(rows[0], rows[-1])) if len(rows) > 1 else {}
            return {k: int(last[v]) for k, v in keys.items()}
        except (OSError, KeyError, ValueError, IndexError):
            return {k: -1 for k in keys}      # no statistics: every check on them fails visibly


# --------------------------------------------------------------------------- SIPp message logs

@dataclass
class SipMsg:
    ts: float
    sent: bool
    first: str
    headers: dict[str, str]
    body: str

    @property
    def status(self) -> int | None:
        m = re.match(r'SIP/2\.0 (\d{3})', self.first)
        return int(m.group(1)) if m else None

    @property
    def method(self) -> str | None:
        return None if self.first.startswith('SIP/2.0') else self.first.split(' ', 1)[0]

    @property
    def cseq_method(self) -> str:
        return self.headers.get('cseq', '').split()[-1] if self.headers.get('cseq') else ''

    @property
    def call_id(self) -> str:
        return self.headers.get('call-id', '')


_SEP = re.compile(r'^-{20,} (\d{4}-\d\d-\d\d\s+\d\d:\d\d:\d\d\.\d+)\s*$')


def parse_messages(path: str) -> list[SipMsg]:
    """Blocks of a SIPp -trace_msg log: separator line with a timestamp, a direction line, the message."""
    msgs: list[SipMsg] = []
    try:
        with open(path, encoding='latin-1') as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return msgs
    blocks: list[tuple[str, list[str]]] = []
    for line in lines:
        m = _SEP.match(line)
        if m:
            blocks.append((m.group(1), []))
        elif blocks:
            blocks[-1][1].append(line)
    for stamp, body in blocks:
        if not body:
            continue
        direction = body[0]
        if 'message sent' not in direction and 'message received' not in direction:
            continue
        rest = body[1:]
        while rest and not rest[0].strip():
            rest = rest[1:]
        if not rest:
            continue
        first, headers, i = rest[0].strip(), {}, 1
        while i < len(rest) and rest[i].strip():
            name, _, value = rest[i].partition(':')
            headers.setdefault(name.strip().lower(), value.strip())
            i += 1
        ts = datetime.datetime.strptime(re.sub(r'\s+', ' ', stamp), '%Y-%m-%d %H:%M:%S.%f').timestamp()
        msgs.append(SipMsg(ts, 'message sent' in direction, first, headers, '\n'.join(rest[i + 1:])))
    return msgs


def sdp_media(body: str) -> tuple[str | None, int | None]:
    addr = re.search(r'^c=IN IP[46] (\S+)', body, re.M)
    port = re.search(r'^m=audio (\d+)', body, re.M)
    return (addr.group(1) if addr else None), (int(port.group(1)) if port else None)


@dataclass
class CallView:
    """One call as seen by both SIPp instances."""
    call_id: str
    started: float | None = None           # UAC sent the first INVITE
    invite_final: int | None = None        # final response to the INVITE at the UAC
    completed: bool = False                # UAC got 200 to its BYE
    ended: float | None = None             # ... at this time
    offer: tuple[str | None, int | None] = (None, None)    # SDP in the INVITE the UAS received
    offer_at: float | None = None
    answer: tuple[str | None, int | None] = (None, None)   # SDP in the 200 the UAC received
    answer_at: float | None = None
    offer_member: str | None = None
    answer_member: str | None = None

    @property
    def member(self) -> str | None:
        return self.offer_member or self.answer_member


def call_views(uac_log: str, uas_log: str, ep: RelayEndpoint) -> dict[str, CallView]:
    calls: dict[str, CallView] = {}
    for msg in parse_messages(uac_log):
        c = calls.setdefault(msg.call_id, CallView(msg.call_id))
        if msg.sent and msg.method == 'INVITE' and c.started is None:
            c.started = msg.ts
        elif not msg.sent and msg.status and msg.cseq_method == 'INVITE' and msg.status >= 200:
            if c.invite_final is None:
                c.invite_final = msg.status
                if msg.status == 200:
                    c.answer, c.answer_at = sdp_media(msg.body), msg.ts
        elif not msg.sent and msg.status == 200 and msg.cseq_method == 'BYE' and not c.completed:
            c.completed, c.ended = True, msg.ts
    for msg in parse_messages(uas_log):
        # the SDP the UAS gets: in the INVITE, or in the ACK after a late offer
        if not msg.sent and msg.method in ('INVITE', 'ACK') and 'm=audio' in msg.body:
            c = calls.setdefault(msg.call_id, CallView(msg.call_id))
            if c.offer_at is None:
                c.offer, c.offer_at = sdp_media(msg.body), msg.ts
    for c in calls.values():
        c.offer_member = ep.member_of_port(c.offer[1])
        c.answer_member = ep.member_of_port(c.answer[1])
    return calls


# --------------------------------------------------------------------------- checks

class Checks:
    """Named checks; `verify()` fails listing every failed check with the numbers seen."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.failed: list[str] = []
        self.passed: list[str] = []
        self.context: list[str] = []

    def check(self, name: str, ok: bool, seen) -> bool:
        (self.passed if ok else self.failed).append('%s: %s' % (name, seen))
        return ok

    def eq(self, name: str, seen, expected) -> bool:
        return self.check(name, seen == expected, 'seen %r, expected %r' % (seen, expected))

    def le(self, name: str, seen, bound) -> bool:
        return self.check(name, seen <= bound, 'seen %r, expected <= %r' % (seen, bound))

    def ge(self, name: str, seen, bound) -> bool:
        return self.check(name, seen >= bound, 'seen %r, expected >= %r' % (seen, bound))

    def note(self, text: str) -> None:
        self.context.append(text)

    def verify(self) -> None:
        print('[%s] %d checks passed, %d failed:\n  - %s' % (self.title, len(self.passed), len(self.failed),
                                                         '\n  - '.join(self.passed)))
        if self.failed:
            raise AssertionError('%s: %d check(s) failed:\n  - %s\npassed:\n  - %s\ncontext:\n%s' % (
                self.title, len(self.failed), '\n  - '.join(self.failed), '\n  - '.join(self.passed),
                '\n'.join(self.context)))


# --------------------------------------------------------------------------- one environment

@dataclass
class RunResult:
    calls: int
    rate: float
    duration_ms: int
    uac_rc: int
    uas_rc: int
    uac: dict[str, int]
    uas: dict[str, int]
    before: dict[str, dict[str, int]]
    after: dict[str, dict[str, int]]
    views: dict[str, CallView]
    t_start: float
    t_end: float
    events: dict[str, float]
    uac_sipp: Sipp
    uas_sipp: Sipp

    @property
    def elapsed(self) -> float:
        return self.t_end - self.t_start

    def summary(self) -> str:
        per_member: dict[str | None, int] = {}
        for c in self.views.values():
            per_member[c.member] = per_member.get(c.member, 0) + 1
        return ('calls %d at %g/s, %d ms: uac rc %d %r; uas rc %d %r; %.1f s; calls per member %r; events %r'
                % (self.calls, self.rate, self.duration_ms, self.uac_rc, self.uac, self.uas_rc, self.uas,
                   self.elapsed, per_member, {k: round(v - self.t_start, 2) for k, v in self.events.items()}))

    def calls_up_between(self, t0: float, t1: float) -> list[CallView]:
        """Calls whose relay session existed at some moment in [t0, t1]."""
        return [c for c in self.views.values()
                if c.offer_at is not None and c.offer_at <= t1 and (c.ended is None or c.ended >= t0)]


class E2E:
    """Members + relay endpoint + Kamailio; `run_calls()` runs SIPp through them."""

    def __init__(self, tracker: ProcessTracker, workdir: str, ep: RelayEndpoint,
                 kamailio_defines: dict[str, str] | None = None) -> None:
        self.tracker = tracker
        self.workdir = workdir
        self.ep = ep
        self.avoid = list(ep.ranges.values())
        self.kamailio = Kamailio(workdir, ep.rtpproxy_sock, tracker, self.avoid, kamailio_defines)
        self.kamailio.start()
        self.runs = 0
        self.sipps: list[Sipp] = []

    def pause(self, name: str) -> str:
        """No new sessions on member `name` from now on."""
        if self.ep.kind == 'cluster':
            return cluster_admin(self.ep, 'modify', CLUSTER_NAME, 'pause', name)
        # direct: tell Kamailio to stop using that relay
        return self.kamailio.rpc('rtpproxy.enable', self.ep.members[name].control, '0')

    def run_calls(self, calls: int, rate: float, duration_ms: int,
                  actions: list[tuple[float, str, Callable[[], object]]] = (),
                  uac_xml: str = UAC_XML) -> RunResult:
        """Place `calls` calls at `rate`/s, each with `duration_ms` of RTP; `actions` are
        (seconds after the UAC started, label, callable) run while the calls go on."""
        self.runs += 1
        rundir = os.path.join(self.workdir, 'run%d' % self.runs)
        os.makedirs(rundir)
        before = self.ep.member_stats()
        uas = Sipp(rundir, 'uas', UAS_XML, self.tracker, self.avoid)
        uac = Sipp(rundir, 'uac', uac_xml, self.tracker, self.avoid)
        self.sipps += [uas, uac]
        uas.start(['-rtp_echo'])
        budget = calls / rate + duration_ms / 1000.0 + 25
        t_start = time.time()
        uac.start(['-m', str(calls), '-r', str(rate), '-d', str(duration_ms), '-l', str(calls),
                   '-key', 'uas_hostport', '%s:%d' % (HOST, uas.sip_port),
                   '-timeout', '%ds' % int(budget)], remote='%s:%d' % (HOST, self.kamailio.port))
        events: dict[str, float] = {}
        pending = sorted(actions, key=lambda a: a[0])
        deadline = time.monotonic() + budget + 10
        while uac.proc.poll() is None:
            now = time.time()
            while pending and now - t_start >= pending[0][0]:
                _, label, fn = pending.pop(0)
                events[label] = time.time()
                fn()
                events[label + ' done'] = time.time()
            if time.monotonic() > deadline:
                uac.stop()
                break
            time.sleep(0.02)
        for _, label, fn in pending:       # the run ended early: still do them, for the checks
            events[label] = time.time()
            fn()
            events[label + ' done'] = time.time()
        uac_rc = uac.proc.wait(10)
        t_end = time.time()
        uas_rc = uas.quit()
        after = self.wait_idle(before)
        return RunResult(calls, rate, duration_ms, uac_rc, uas_rc, uac.stats(), uas.stats(), before, after,
                         call_views(uac.msg_file, uas.msg_file, self.ep), t_start, t_end, events, uac, uas)

    def wait_idle(self, before: dict[str, dict[str, int]], timeout: float = 5.0) -> dict[str, dict[str, int]]:
        """Member counters once active sessions are back to the values before the run (or timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            after = self.ep.member_stats()
            idle = all(after[n]['active sessions'] <= before[n]['active sessions'] for n in after if n in before)
            if idle or time.monotonic() > deadline:
                return after
            time.sleep(0.2)

    def close(self) -> None:
        for s in self.sipps:
            s.stop()
        self.kamailio.stop()
        self.ep.stop()

    def logs(self) -> str:
        out = ['--- kamailio.log', tail(self.kamailio.log, 15)]
        if self.ep.log:
            out += ['--- rtp_cluster log', tail(self.ep.log, 25),
                    '--- rtp_cluster.out', tail(os.path.join(self.workdir, 'rtp_cluster.out'), 10)]
        for s in self.sipps[-2:]:
            out += ['--- %s errors' % s.name, tail(s.err_file, 8)]
        return '\n'.join(out)
