"""Test helpers: rtp_cluster in a child process, a pipelined control client, a fake RTPproxy.

    cl = ClusterProc.start(procs, tmp_path, cluster_xml([member_xml('m1', m)]), wait_online=['m1'])
    cl.command('V')
    replies = run_calls(cl.control, [['U c1 ...', 'L c1 ...', 'D c1 ...'], ...])

ClusterProc runs the real daemon (`python -m rtp_cluster.app -f ...`) with an admin socket
in the test's directory; the child is registered with the `procs` fixture and stopped by
PID.

FakeRtpp is an in-memory stand-in for one RTPproxy (sessions, ports, counters, capability
answers) used by the sans-IO tests and by the scripted fake members of the socket tests.
"""
from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

from tests.support.procs import ROOT, control_command, free_udp_port


# --- configuration text --------------------------------------------------------------------

def member_xml(name: str, member=None, *, protocol: str | None = None, address: str | None = None,
               weight: int = 100, capacity: int = 10000, status: str = 'ACTIVE',
               wan: str | None = None, lan: str | None = None, extra: str = '') -> str:
    """One <rtpproxy>; `member` is a procs.Member (its protocol and address are used)."""
    protocol = protocol or member.protocol
    address = address or member.address
    if wan:
        extra += '<wan_address>%s</wan_address>' % wan
    if lan:
        extra += '<lan_address>%s</lan_address>' % lan
    return ('<rtpproxy><name>%s</name><protocol>%s</protocol><address>%s</address>'
            '<weight>%d</weight><capacity>%d</capacity><status>%s</status>%s</rtpproxy>'
            % (name, protocol, address, weight, capacity, status, extra))


def cluster_xml(members: list[str], *, name: str = 'test', protocol: str = 'udp',
                address: str | None = None, port: int | None = None,
                capacity_limit: str | None = None, extra: str = '') -> tuple[str, str]:
    """(config XML, control socket spec for procs.control_command) of one cluster."""
    if address is None:
        address = '127.0.0.1:%d' % (port or free_udp_port())
    spec = ('unix:' if protocol == 'unix' else protocol + ':') + address
    if capacity_limit:
        extra += '<capacity_limit type="%s"/>' % capacity_limit
    xml = ('<?xml version="1.0"?>\n<rtp_cluster_config><rtp_cluster><name>%s</name>'
           '<protocol>%s</protocol><address>%s</address>%s%s</rtp_cluster>'
           '</rtp_cluster_config>\n' % (name, protocol, address, extra, ''.join(members)))
    return xml, spec


# --- the cluster in a child process ---------------------------------------------------------

@dataclass
class ClusterProc:
    proc: subprocess.Popen
    control: str
    admin: str
    config_path: str
    log_paths: tuple[str, ...]

    @classmethod
    def start(cls, procs, tmp_path, config: tuple[str, str], wait_online=(),
              timeout: float = 15.0, extra_args=()) -> 'ClusterProc':
        xml, control = config
        tmp = str(tmp_path)
        config_path = os.path.join(tmp, 'rtp_cluster.xml')
        with open(config_path, 'w') as f:
            f.write(xml)
        admin = os.path.join(tmp, 'admin.sock')
        log_path = os.path.join(tmp, 'rtp_cluster.log')
        out_path = os.path.join(tmp, 'rtp_cluster.out')
        argv = [sys.executable, '-m', 'rtp_cluster.app', '-f', '-c', config_path,
                '-s', 'unix:' + admin, '-P', os.path.join(tmp, 'rtp_cluster.pid'),
                '-L', log_path] + list(extra_args)
        with open(out_path, 'w') as out:
            proc = procs.add(subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.DEVNULL,
                                              stdout=out, stderr=subprocess.STDOUT))
        cluster = cls(proc, control, admin, config_path, (log_path, out_path))
        cluster.wait(cluster._answers_version, timeout, 'the control socket to answer V')
        for name in wait_online:
            cluster.wait_log('member %s: probing -> online' % name, timeout)
        return cluster

    def _answers_version(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError('cluster exited with %s:\n%s' % (self.proc.returncode, self.log()))
        try:
            # E999: no member finished a probe within the cluster's capability wait (2 s)
            return self.command('V', 3.0).strip() in ('20040107', 'E999')
        except OSError:
            return False

    def command(self, cmd: str, timeout: float = 3.0) -> str:
        """One command over the cluster's UDP control socket; the reply body without its newline."""
        reply = control_command(self.control, cmd, timeout)
        return reply[:-1] if reply.endswith('\n') else reply

    def log(self) -> str:
        text = []
        for path in self.log_paths:
            try:
                with open(path, errors='replace') as f:
                    text.append(f.read())
            except FileNotFoundError:
                pass
        return '\n'.join(text)

    def log_count(self, text: str) -> int:
        return self.log().count(text)

    def wait_log(self, text: str, timeout: float = 10.0, count: int = 1) -> float:
        return self.wait(lambda: self.log_count(text) >= count, timeout, 'log line %r' % text)

    def wait(self, predicate, timeout: float, what: str) -> float:
        start = time.monotonic()
        while not predicate():
            if time.monotonic() - start > timeout:
                raise AssertionError('timed out after %.1f s waiting for %s; log:\n%s'
                                     % (timeout, what, self.log()[-3000:]))
            time.sleep(0.05)
        return time.monotonic() - start

    def admin_command(self, *words: str) -> subprocess.CompletedProcess:
        """`rtp_cluster_client` against this daemon's admin socket."""
        return subprocess.run([sys.executable, '-m', 'rtp_cluster.admin_client', '-s', 'unix:' + self.admin]
                              + list(words), cwd=ROOT, capture_output=True, text=True, timeout=20)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


# --- many calls at once over one UDP socket --------------------------------------------------

def run_calls(spec: str, calls: list[list[str]], window: int = 64, retransmit: float = 1.0,
              tries: int = 5, deadline: float = 120.0) -> list[list[str | None]]:
    """Run each call's commands in order, `window` calls at a time; the reply bodies.

    Like a SIP proxy: every command has its own cookie and is retransmitted (same cookie)
    after `retransmit` seconds, at most `tries` times; an unanswered command is None and its
    call stops there.  Raises AssertionError if everything is not done within `deadline`.
    """
    kind, _, rest = spec.partition(':')
    host, _, port = rest.rpartition(':')
    family = socket.AF_INET6 if kind == 'udp6' else socket.AF_INET
    prefix = 'p%d_' % (time.monotonic_ns() % 10**9)
    results: list[list[str | None]] = [[None] * len(c) for c in calls]
    pending: dict[str, list] = {}       # cookie -> [call, step, data, sent_at, tries]
    next_call = 0
    active = 0
    end = time.monotonic() + deadline
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        sock.connect((host.strip('[]'), int(port)))
        sock.setblocking(False)

        def send(call: int, step: int) -> None:
            cookie = '%s%d_%d' % (prefix, call, step)
            data = ('%s %s' % (cookie, calls[call][step])).encode('latin-1')
            pending[cookie] = [call, step, data, time.monotonic(), 1]
            sock.send(data)

        last_scan = time.monotonic()
        while next_call < len(calls) or pending:
            now = time.monotonic()
            if now > end:
                raise AssertionError('%d calls not done after %.0f s (%d pending)'
                                     % (len(calls) - next_call + active, deadline, len(pending)))
            while active < window and next_call < len(calls):
                if calls[next_call]:
                    send(next_call, 0)
                    active += 1
                next_call += 1
            ready, _, _ = select.select([sock], [], [], 0.05)
            for _ in range(10000 if ready else 0):
                try:
                    data = sock.recv(65535)
                except BlockingIOError:
                    break
                cookie, _, body = data.decode('latin-1').partition(' ')
                entry = pending.pop(cookie, None)
                if entry is None:
                    continue            # a duplicate answer to a retransmit
                call, step = entry[0], entry[1]
                results[call][step] = body[:-1] if body.endswith('\n') else body
                if step + 1 < len(calls[call]):
                    send(call, step + 1)
                else:
                    active -= 1
            if now - last_scan >= 0.1:
                last_scan = now
                for cookie, entry in list(pending.items()):
                    if now - entry[3] < retransmit * entry[4]:
                        continue
                    if entry[4] >= tries:
                        del pending[cookie]
                        active -= 1
                    else:
                        entry[4] += 1
                        sock.send(entry[2])
    return results


# --- an in-memory RTPproxy -------------------------------------------------------------------

ALL_CAPABILITIES = frozenset((
    '20040107', '20050322', '20060704', '20071116', '20071218', '20080403', '20081102',
    '20081224', '20090810', '20140323', '20140617', '20141004', '20150330', '20150420',
    '20150617', '20191015', '20200226', '20230205', '20230314', '20230424', '20250523',
    '20251015', '20260306', '20260308', '20260309'))


class FakeRtpp:
    """Answers like an RTPproxy for the commands the cluster routes; remembers what it got.

    Ports handed out lie in [port_base, port_base + 10000): the reply names the member.
    `received` lists every command text; `session_commands` only U/L/D/Q/P/S/R/C/N.
    """

    def __init__(self, name: str = 'fake', port_base: int = 20000, address: str = '127.0.0.1',
                 capabilities=ALL_CAPABILITIES, counters: dict | None = None) -> None:
        self.name = name
        self.port_base = port_base
        self.address = address
        self.capabilities = frozenset(capabilities)
        self.sessions: dict[str, dict] = {}
        self.created = 0
        self.received: list[str] = []
        self.session_commands: list[str] = []
        self.counters = dict(counters or {})
        self.packets = (0, 0)

    def owns(self, port: int) -> bool:
        return self.port_base <= port < self.port_base + 10000

    def create(self, call_id: str, from_tag: str = 'f') -> int:
        """A session made directly on this RTPproxy (not through the cluster)."""
        self.created += 1
        port = self.port_base + 2 * (self.created % 5000)
        self.sessions[call_id] = {'tags': {from_tag}, 'port': port, 'port2': None}
        return port

    def answer(self, text: str) -> str:
        from rtp_cluster.core import protocol
        self.received.append(text)
        cmd = protocol.parse_command(text)
        if cmd.error:
            return cmd.error
        letter = cmd.letter
        if letter in protocol.SESSION_COMMANDS:
            self.session_commands.append(text)
        if letter == 'V':
            if not cmd.args:
                return protocol.PROTOCOL_VERSION
            return '1' if cmd.args[0] in self.capabilities else '0'
        if letter == 'I':
            info = {'sessions created': self.created, 'active sessions': len(self.sessions),
                    'active streams': 2 * len(self.sessions), 'packets received': self.packets[0],
                    'packets transmitted': self.packets[1]}
            return protocol.format_info(info, 'l' in cmd.mods.lower())
        if letter == 'G':
            values = []
            for name in cmd.args:
                if name not in self.counters:
                    return 'E68'
                values.append(self.counters[name])
            return protocol.format_stats(cmd.args, values, 'v' in cmd.mods.lower())
        if letter == 'X':
            self.sessions.clear()
            return '0'
        session = self.sessions.get(cmd.call_id)
        address = cmd.local_address or self.address
        if letter == 'U':
            if session is None:
                self.create(cmd.call_id, cmd.from_tag)
                session = self.sessions[cmd.call_id]
            session['tags'].add(cmd.from_tag)
            return '%d %s' % (session['port'], address)
        if session is None:
            return '0' if letter == 'L' else 'E50'
        if letter == 'L':
            if session['port2'] is None:
                session['port2'] = session['port'] + 5000
            return '%d %s' % (session['port2'], address)
        if letter == 'D':
            del self.sessions[cmd.call_id]
            return '0'
        if letter == 'Q':
            return '60 0 0 0 0'
        return '0'


class ScriptedClient:
    """A MemberClient whose answers come from `rtpp` after `delay` clock seconds.

    `silent` drops every command (the callback gets None when the timeout expires);
    `override(text)` may return a reply to use instead of the fake RTPproxy's.
    """

    default_timeout = 3.0

    def __init__(self, clock, rtpp: FakeRtpp | None = None, delay: float = 0.001) -> None:
        self.clock = clock
        self.rtpp = rtpp or FakeRtpp()
        self.delay = delay
        self.silent = False
        self.override = None
        self.sent: list[str] = []
        self.closed = False
        self.rtt = None
        self.on_timeout = None      # the MemberClient contract: called before callback(None)

    def _time_out(self, callback) -> None:
        if self.on_timeout is not None:
            self.on_timeout()
        callback(None)

    def send(self, text: str, callback, timeout: float | None = None) -> None:
        self.sent.append(text)
        timeout = timeout or self.default_timeout
        reply = None
        if not self.silent and not self.closed:
            reply = self.override(text) if self.override is not None else None
            if reply is None:
                reply = self.rtpp.answer(text)
        if reply is None or self.delay >= timeout:
            self.clock.callLater(timeout, self._time_out, callback)
        else:
            self.clock.callLater(self.delay, callback, reply)

    def close(self) -> None:
        self.closed = True

