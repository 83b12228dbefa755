"""The admin interface of the real daemon, with real rtp-io members.

The walkthrough follows the regression test of sippy's original rtp_cluster: ls, sessions
created and deleted over the control socket, reload after suspending a member in the file,
pause, delete with and without sessions, a member killed and restarted, reload restoring.
Every `ls` output is compared verbatim, except the `average rtpc delay` lines, which are
measured round trips (checked for their format, then left out, as the original's test does).
"""
from __future__ import annotations

import os
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
import time

import pytest

from tests.support.procs import ROOT, control_command, free_tcp_port, free_udp_port
from rtp_cluster.admin_client import ClientError, run_command

pytestmark = pytest.mark.slow

WAIT = 15.0                     # seconds any single condition may take
DELAY_LINE = re.compile(r'        average rtpc delay = \d+\.\d{6} sec')
UTILIZATION_LINE = re.compile(r'        capacity utilization = (\d+\.\d{6})%')


# --- helpers -------------------------------------------------------------------------------

def member_xml(name: str, protocol: str, address: str, status: str = 'ACTIVE',
               extra: str = '') -> str:
    return ('<rtpproxy><name>%s</name><protocol>%s</protocol><address>%s</address>'
            '<weight>100</weight><capacity>2500</capacity><status>%s</status>%s</rtpproxy>'
            % (name, protocol, address, status, extra))


class Walk:
    """The daemon, its members and its files."""

    def __init__(self, procs, tmp_path) -> None:
        self.procs = procs
        self.tmp = tmp_path
        self.members = {
            'RTPPROXY0': procs.member('unix'),
            'RTPPROXY1': procs.member('udp'),
            'RTPPROXY2': procs.member('udp6'),
        }
        self.port = free_udp_port()
        self.rtpp3_address = '127.0.0.1:%d' % free_udp_port()    # nobody there: offline
        self.config = str(tmp_path / 'rtp_cluster.xml')
        self.admin_path = str(tmp_path / 'admin.sock')
        self.admin = 'unix:' + self.admin_path
        self.log = str(tmp_path / 'rtp_cluster.log')
        self.write_config('ACTIVE')

    def write_config(self, rtpp2_status: str) -> None:
        m = self.members
        members = [
            member_xml('RTPPROXY0', 'unix', m['RTPPROXY0'].address,
                       extra='<wan_address>1.2.3.4</wan_address>'),
            member_xml('RTPPROXY1', 'udp', m['RTPPROXY1'].address,
                       extra='<wan_address>1.2.3.4</wan_address>'
                             '<lan_address>127.0.0.1</lan_address>'),
            member_xml('RTPPROXY2', 'udp6', m['RTPPROXY2'].address, status=rtpp2_status),
            member_xml('RTPPROXY3', 'udp', self.rtpp3_address),
        ]
        with open(self.config, 'w') as f:
            f.write('<rtp_cluster_config><rtp_cluster><name>walk</name><protocol>udp</protocol>'
                    '<address>127.0.0.1:%d</address>%s</rtp_cluster></rtp_cluster_config>\n'
                    % (self.port, ''.join(members)))

    def start(self) -> None:
        out = open(self.log, 'w')
        self.proc = self.procs.add(subprocess.Popen(
            [sys.executable, '-m', 'rtp_cluster.app', '-f', '-c', self.config, '-s', self.admin,
             '-P', str(self.tmp / 'rtp_cluster.pid'), '-L', self.log],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT))
        out.close()
        self.wait(lambda: self.online_count() == 3, 'three members online')

    def log_text(self) -> str:
        with open(self.log, errors='replace') as f:
            return f.read()

    def wait(self, predicate, what: str, timeout: float = WAIT) -> float:
        start = time.monotonic()
        while True:
            if self.proc.poll() is not None:
                raise AssertionError('daemon exited (%s):\n%s' % (self.proc.returncode,
                                                                  self.log_text()[-3000:]))
            if predicate():
                return time.monotonic() - start
            if time.monotonic() - start > timeout:
                raise AssertionError('timed out after %.0f s waiting for %s; log:\n%s'
                                     % (timeout, what, self.log_text()[-3000:]))
            time.sleep(0.1)

    # --- the admin socket ---

    def ask(self, command: str) -> str:
        """One command in-process; the reply text (empty while the socket is not up yet)."""
        try:
            return ''.join(line + '\n' for line in run_command(self.admin, command, 5.0))
        except ClientError:
            return ''

    def cli(self, *words: str) -> subprocess.CompletedProcess:
        """The rtp_cluster_client program."""
        return subprocess.run([sys.executable, '-m', 'rtp_cluster.admin_client', '-s', self.admin,
                               *words], cwd=ROOT, capture_output=True, text=True, timeout=30)

    def ok(self, *words: str) -> str:
        result = self.cli(*words)
        assert result.returncode == 0, (words, result.stdout, result.stderr)
        return result.stdout

    def online_count(self) -> int:
        match = re.search(r'online members = (\d+)', self.ask('ls'))
        return int(match.group(1)) if match else -1

    def details(self, exact_utilization: bool = False) -> str:
        """`ls walk` with the measured delay lines checked and left out.

        Capacity utilization is a smoothed estimate that decays over many heartbeats once
        sessions end; unless `exact_utilization`, its value is checked and then shown as 0.
        """
        lines = self.ok('ls', 'walk').split('\n')
        kept = []
        for line in lines:
            if 'average rtpc delay' in line:
                assert DELAY_LINE.fullmatch(line), line
                continue
            match = UTILIZATION_LINE.fullmatch(line)
            if match and not exact_utilization:
                assert 0.0 <= float(match.group(1)) < 1.0, line
                line = line.replace(match.group(1), '0.000000')
            kept.append(line)
        return '\n'.join(kept)

    def summary(self, online: int, active: int, suspended: int, draining: int,
                offline: int) -> str:
        return ('Cluster: #0\n    name = walk\n    address = 127.0.0.1:%d\n'
                '    online members = %d (%d active, %d suspended, %d draining)\n'
                '    offline members = %d\nOK\n'
                % (self.port, online, active, suspended, draining, offline))

    def address(self, name: str) -> str:
        return self.rtpp3_address if name == 'RTPPROXY3' else self.members[name].address

    def active_sessions(self, name: str) -> int | None:
        text = self.ask('ls walk')
        block = text.split('name = %s\n' % name, 1)
        if len(block) < 2:
            return None
        match = re.search(r'active sessions = (\d+)', block[1].split('RTPproxy: #', 1)[0])
        return int(match.group(1)) if match else None

    # --- the control socket ---

    def control(self, command: str) -> str:
        return control_command('udp:127.0.0.1:%d' % self.port, command, 3.0).strip()


def online_block(index: int, name: str, address: str, status: str, extra: str = '',
                 weight: int = 100, capacity: int = 2500) -> str:
    return ('    RTPproxy: #%d\n        name = %s\n        address = %s\n%s'
            '        weight = %d\n        capacity = %d\n        state = online\n'
            '        active sessions = 0\n        capacity utilization = 0.000000%%\n'
            '        status = %s\n' % (index, name, address, extra, weight, capacity, status))


def offline_block(index: int, name: str, address: str, extra: str = '') -> str:
    return ('    RTPproxy: #%d\n        name = %s\n        address = %s\n%s'
            '        weight = 100\n        capacity = 2500\n        state = offline\n'
            % (index, name, address, extra))


WAN = '        wan_address = 1.2.3.4\n'
WAN_LAN = WAN + '        lan_address = 127.0.0.1\n'


def details_text(online: list[str], offline: list[str]) -> str:
    return ('Online members of the cluster #0:\n' + '\n'.join(online)
            + '\nOffline members of the cluster #0:\n' + ('\n'.join(offline) or '\n') + 'OK\n')


@pytest.fixture
def walk(procs, tmp_path):
    w = Walk(procs, tmp_path)
    w.start()
    return w


# --- the walkthrough ---------------------------------------------------------------------------

def test_walkthrough(walk, procs):
    w = walk
    a = w.address
    # 1. the listing
    assert w.ok('ls') == w.summary(3, 3, 0, 0, 1)
    assert w.details(exact_utilization=True) == details_text(
        [online_block(0, 'RTPPROXY0', a('RTPPROXY0'), 'ACTIVE', WAN),
         online_block(1, 'RTPPROXY1', a('RTPPROXY1'), 'ACTIVE', WAN_LAN),
         online_block(2, 'RTPPROXY2', a('RTPPROXY2'), 'ACTIVE')],
        [offline_block(0, 'RTPPROXY3', a('RTPPROXY3'))])

    # 2. sessions created, counted by the members' heartbeats, deleted
    calls = ['walk-call-%d' % i for i in range(6)]
    for call in calls:
        reply = w.control('U %s 127.0.0.1 %d ftag-%s' % (call, 30000 + 2 * calls.index(call), call))
        assert re.fullmatch(r'\d+( \S+)?', reply), reply
    names = ('RTPPROXY0', 'RTPPROXY1', 'RTPPROXY2')
    w.wait(lambda: sum(w.active_sessions(n) or 0 for n in names) == 6, 'six active sessions')
    for call in calls:
        assert w.control('D %s ftag-%s' % (call, call)) == '0'
    w.wait(lambda: sum(w.active_sessions(n) or 0 for n in names) == 0, 'no active sessions')

    # 3. reload after suspending RTPPROXY2 in the file
    w.write_config('SUSPENDED')
    assert w.ok('reload') == 'Loaded 1 clusters and 4 RTP proxies\nOK\n'
    assert w.ok('ls') == w.summary(3, 2, 1, 0, 1)

    # 4. pause: only RTPPROXY0 stays ACTIVE, so new sessions go there
    assert w.ok('modify', 'walk', 'pause', 'RTPPROXY1') == 'OK\n'
    assert w.ok('ls') == w.summary(3, 1, 2, 0, 1)
    for call in ('drain-1', 'drain-2'):
        assert re.fullmatch(r'\d+( \S+)?', w.control('U %s 127.0.0.1 31000 ft' % call))
    w.wait(lambda: w.active_sessions('RTPPROXY0') == 2, 'two sessions on RTPPROXY0')

    # 5. delete with sessions: draining until they are deleted, then gone
    assert w.ok('modify', 'walk', 'delete', 'RTPPROXY0') == 'OK\n'
    assert w.ok('ls') == w.summary(3, 0, 2, 1, 1)
    assert '        status = DRAINING\n' in w.ok('ls', 'walk').split('name = RTPPROXY1')[0]
    assert w.control('D drain-1 ft') == '0'
    assert w.ok('ls') == w.summary(3, 0, 2, 1, 1)
    assert w.control('D drain-2 ft') == '0'
    w.wait(lambda: w.ask('ls') == w.summary(2, 0, 2, 0, 1), 'RTPPROXY0 removed')
    assert w.details() == details_text(
        [online_block(0, 'RTPPROXY1', a('RTPPROXY1'), 'SUSPENDED', WAN_LAN),
         online_block(1, 'RTPPROXY2', a('RTPPROXY2'), 'SUSPENDED')],
        [offline_block(0, 'RTPPROXY3', a('RTPPROXY3'))])

    # 6. delete without sessions (an offline member): removed at once
    assert w.ok('modify', 'walk', 'delete', 'RTPPROXY3') == 'OK\n'
    assert w.ok('ls') == w.summary(2, 0, 2, 0, 0)
    assert w.details() == details_text(
        [online_block(0, 'RTPPROXY1', a('RTPPROXY1'), 'SUSPENDED', WAN_LAN),
         online_block(1, 'RTPPROXY2', a('RTPPROXY2'), 'SUSPENDED')], [])
    assert w.cli('modify', 'walk', 'delete', 'RTPPROXY3').stdout == \
        'ERROR: RTPPROXY3: RTPproxy not found\n'

    # 7. RTPPROXY1 killed: offline within ~5 s; restarted on its address: online within ~10 s
    rtpp1 = w.members['RTPPROXY1']
    rtpp1.kill(signal.SIGKILL)
    took = w.wait(lambda: w.ask('ls') == w.summary(1, 0, 1, 0, 1), 'RTPPROXY1 offline', 10)
    assert took < 5.5, took
    assert w.details() == details_text(
        [online_block(0, 'RTPPROXY2', a('RTPPROXY2'), 'SUSPENDED')],
        [offline_block(0, 'RTPPROXY1', a('RTPPROXY1'), WAN_LAN)])
    port = int(rtpp1.address.rsplit(':', 1)[1])
    w.members['RTPPROXY1'] = procs.member('udp', port=port)
    took = w.wait(lambda: w.ask('ls') == w.summary(2, 0, 2, 0, 0), 'RTPPROXY1 online', 15)
    assert took < 10, took
    assert w.details() == details_text(
        [online_block(0, 'RTPPROXY1', a('RTPPROXY1'), 'SUSPENDED', WAN_LAN),
         online_block(1, 'RTPPROXY2', a('RTPPROXY2'), 'SUSPENDED')], [])

    # 8. reload restores the file's members and statuses
    w.write_config('ACTIVE')
    assert w.ok('reload') == 'Loaded 1 clusters and 4 RTP proxies\nOK\n'
    w.wait(lambda: w.ask('ls') == w.summary(3, 3, 0, 0, 1), 'the file restored')
    assert w.details() == details_text(
        [online_block(0, 'RTPPROXY0', a('RTPPROXY0'), 'ACTIVE', WAN),
         online_block(1, 'RTPPROXY1', a('RTPPROXY1'), 'ACTIVE', WAN_LAN),
         online_block(2, 'RTPPROXY2', a('RTPPROXY2'), 'ACTIVE')],
        [offline_block(0, 'RTPPROXY3', a('RTPPROXY3'))])
    assert 'Traceback' not in w.log_text()


def test_add_resume_errors_and_client_exit_codes(walk, procs):
    w = walk
    extra = procs.member('udp')
    line = ('modify walk add name=RTPPROXY4,protocol=udp,address=%s,capacity=100,weight=5,'
            'status=SUSPENDED,wan_address=5.6.7.8' % extra.address)
    assert w.ok(line) == 'OK\n'
    w.wait(lambda: w.online_count() == 4, 'RTPPROXY4 online')
    assert w.ok('ls') == w.summary(4, 3, 1, 0, 1)
    assert online_block(3, 'RTPPROXY4', extra.address, 'SUSPENDED',
                        '        wan_address = 5.6.7.8\n', weight=5, capacity=100) \
        in w.details(exact_utilization=True)
    assert w.ok('modify', 'walk', 'resume', 'RTPPROXY4') == 'OK\n'
    assert w.ok('ls') == w.summary(4, 4, 0, 0, 1)

    result = w.cli(line)
    assert (result.returncode, result.stdout) == (1, 'ERROR: RTPPROXY4: RTPproxy already exists\n')
    result = w.cli('ls', 'nowhere')
    assert (result.returncode, result.stdout) == (1, 'ERROR: nowhere: cluster not found\n')
    result = w.cli('modify walk add name=x,protocol=udp,address=127.0.0.1:0,capacity=1,weight=1')
    assert (result.returncode, result.stdout) == (
        1, 'ERROR: modify add: port 0 is out of range; expected 1-65535\n')
    result = w.cli('bogus')
    assert (result.returncode, result.stdout) == (1, 'ERROR: unknown command\n')
    help_text = w.ok('help')
    assert help_text.startswith('Supported commands:\n') and help_text.endswith('\nOK\n')
    assert w.ok('ls', '--json').startswith('{"clusters":[{"index":0,"name":"walk",')

    # a broken file: reload refuses with the file's problem, the running state stays
    before = w.details()
    with open(w.config, 'w') as f:
        f.write('<rtp_cluster_config><rtp_cluster><name>walk</name></rtp_cluster>')
    result = w.cli('reload')
    assert result.returncode == 1 and result.stdout.startswith('ERROR: %s:' % w.config)
    assert result.stdout.count('\n') == 1
    assert w.details() == before
    assert w.ok('ls') == w.summary(4, 4, 0, 0, 1)

    mode = stat.S_IMODE(os.stat(w.admin_path).st_mode)
    assert mode == 0o660, oct(mode)
    w.proc.send_signal(signal.SIGTERM)
    assert w.proc.wait(WAIT) == 0
    assert not os.path.exists(w.admin_path)
    result = w.cli('ls')
    assert result.returncode == 2 and result.stdout == '' and 'cannot connect' in result.stderr
    assert 'Traceback' not in w.log_text()


# --- robustness on the real socket --------------------------------------------------------------

def connect(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(path)
    return sock


def read_reply(sock: socket.socket, buffer: bytearray) -> str:
    """Lines up to and including OK or an ERROR line."""
    lines = []
    for _ in range(100000):
        while b'\n' not in buffer:
            data = sock.recv(65536)
            if not data:
                raise AssertionError('connection closed after %r' % lines)
            buffer += data
        raw, _, rest = bytes(buffer).partition(b'\n')
        buffer[:] = rest
        line = raw.decode('utf-8')
        lines.append(line)
        if line == 'OK' or line.startswith('ERROR'):
            return '\n'.join(lines) + '\n'
    raise AssertionError('no end of reply')


def test_garbage_long_lines_and_half_lines(walk):
    w = walk
    summary = w.summary(3, 3, 0, 0, 1)
    sock = connect(w.admin_path)
    buffer = bytearray()
    try:
        sock.sendall(b'\x00\xff\xfe garbage \x1b[2J\r\n')
        assert read_reply(sock, buffer) == 'ERROR: unknown command\n'
        sock.sendall(b'\n\r\n   \nls\r\n')
        assert read_reply(sock, buffer) == summary
        sock.sendall(b'ls ' + b'x' * (70 * 1024) + b'\nls\n')
        assert read_reply(sock, buffer) == 'ERROR: line too long (more than 65536 bytes)\n'
        assert read_reply(sock, buffer) == summary
        for _ in range(3):
            sock.sendall(b'y' * 60000)
        sock.sendall(b'\nls\n')
        assert read_reply(sock, buffer) == 'ERROR: line too long (more than 65536 bytes)\n'
        assert read_reply(sock, buffer) == summary
        sock.sendall(b'quit\n')
        assert sock.recv(100) == b''
    finally:
        sock.close()
    half = connect(w.admin_path)
    half.sendall(b'modify walk pau')
    half.close()
    lazy = connect(w.admin_path)      # connects, sends nothing, goes away
    lazy.close()
    assert w.ok('ls') == summary


def test_many_concurrent_clients(walk):
    w = walk
    summary = w.summary(3, 3, 0, 0, 1)
    details = w.ok('ls', 'walk')
    errors: list[str] = []

    def client(n: int) -> None:
        try:
            sock = connect(w.admin_path)
            buffer = bytearray()
            try:
                for _ in range(10):
                    sock.sendall(b'ls\nls walk\n')
                    if read_reply(sock, buffer) != summary:
                        errors.append('client %d: bad ls' % n)
                    reply = read_reply(sock, buffer)
                    if not reply.startswith('Online members of the cluster #0:\n') or \
                            reply.count('RTPproxy: #') != details.count('RTPproxy: #'):
                        errors.append('client %d: bad ls walk' % n)
                sock.sendall(b'quit\n')
            finally:
                sock.close()
        except (OSError, AssertionError) as exc:
            errors.append('client %d: %s' % (n, exc))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(40)]
    clis = [subprocess.Popen([sys.executable, '-m', 'rtp_cluster.admin_client', '-s', w.admin, 'ls'],
                             cwd=ROOT, stdout=subprocess.PIPE, text=True) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    outputs = [p.communicate(timeout=60)[0] for p in clis]
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert [p.returncode for p in clis] == [0] * 5
    assert outputs == [summary] * 5


def test_tcp_admin_socket(procs, tmp_path):
    port, admin_port = free_udp_port(), free_tcp_port()
    config = tmp_path / 'rtp_cluster.xml'
    config.write_text('<rtp_cluster_config><rtp_cluster><name>empty</name><protocol>udp'
                      '</protocol><address>127.0.0.1:%d</address></rtp_cluster>'
                      '</rtp_cluster_config>\n' % port)
    spec = 'tcp:127.0.0.1:%d' % admin_port
    proc = procs.add(subprocess.Popen(
        [sys.executable, '-m', 'rtp_cluster.app', '-f', '-c', str(config), '-s', spec,
         '-P', str(tmp_path / 'pid')], cwd=ROOT, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL))
    expected = ('Cluster: #0\n    name = empty\n    address = 127.0.0.1:%d\n'
                '    online members = 0 (0 active, 0 suspended, 0 draining)\n'
                '    offline members = 0\nOK\n' % port)
    deadline = time.monotonic() + WAIT
    while True:
        assert proc.poll() is None
        try:
            lines = run_command(spec, 'ls', 2.0)
            break
        except ClientError:
            assert time.monotonic() < deadline, 'the TCP admin socket never answered'
            time.sleep(0.1)
    assert ''.join(line + '\n' for line in lines) == expected
    assert run_command(spec, 'ls empty') == ['Online members of the cluster #0:', '',
                                             'Offline members of the cluster #0:', '', 'OK']
