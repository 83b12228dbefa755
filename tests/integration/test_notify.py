"""Disconnect-notification relay: real RTPproxy timeout notifications reach the B2BUA's socket."""
from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time
import urllib.request

import pytest
from twisted.internet.task import Clock

from tests.support.control_tap import UdpControlTap
from tests.support.daemon import Daemon, cluster_xml, member_xml
from tests.support.notify_tags import TEST_KEY, quoted_tag
from tests.support.procs import free_tcp_port
from tests.support.waiting import wait_until
from rtp_cluster.core import protocol
from rtp_cluster.core.cluster import Cluster
from rtp_cluster.core.config import ClusterConfig, DisconnectNotifyConfig, MemberConfig, parse_endpoint
from rtp_cluster.core.member import CAPABILITY_DATES, Member
from rtp_cluster.core.notify_auth import NotifyAuthenticator


class UnixListener:
    """Stands in for the B2BUA: a unix stream socket that records every line it gets."""

    def __init__(self, path: str | None, read: bool = True) -> None:
        self.path = path
        self.lines: list[bytes] = []
        self.read = read
        if path is None:            # Kamailio's timeout_socket: tcp:HOST:PORT
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.sock.bind(('127.0.0.1', 0))
            self.port = self.sock.getsockname()[1]
        else:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.bind(path)
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conns = []
        buf = b''
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
                conn.settimeout(0.2)
                conns.append(conn)
            except socket.timeout:
                pass
            if not self.read:
                continue
            for conn in conns:
                try:
                    data = conn.recv(65536)
                except socket.timeout:
                    continue
                buf += data
                *lines, buf = buf.split(b'\n')
                self.lines.extend(lines)
        for conn in conns:
            conn.close()

    def wait_lines(self, n: int, timeout: float) -> list[bytes]:
        deadline = time.monotonic() + timeout
        while len(self.lines) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.lines

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(5)
        self.sock.close()
        if self.path is not None:
            os.unlink(self.path)


def _start_relay_daemon(procs, tmp_path, relay_port: int, prefix: str, member_xml_text: str,
                        http_port: int | None = None) -> Daemon:
    notify = ('<disconnect_notify><inbound_address>127.0.0.1:%d</inbound_address>'
              '<dest_socket_prefix>unix:%s</dest_socket_prefix></disconnect_notify>'
              % (relay_port, prefix))
    xml, control = cluster_xml([member_xml_text], extra=notify)
    if http_port is not None:
        xml = xml.replace('</rtp_cluster_config>', '<http><address>127.0.0.1:%d</address>'
                          '</http></rtp_cluster_config>' % http_port)
    return Daemon.start(procs, tmp_path, (xml, control), wait_online=['m1'])


@pytest.fixture
def relay_setup(procs, tmp_path):
    relay_port = free_tcp_port()
    member = procs.member('udp', extra=['-n', 'tcp:%%CC_SELF%%:' + str(relay_port), '-T', '2', '-W', '2'])
    b2bua_dir = tempfile.mkdtemp(prefix='b2bua-')      # short: unix socket paths live here
    try:
        prefix = os.path.join(b2bua_dir, 'b2bua.sock')
        daemon = _start_relay_daemon(procs, tmp_path, relay_port, prefix, member_xml('m1', member))
        yield daemon, member, relay_port, prefix
    finally:
        shutil.rmtree(b2bua_dir, ignore_errors=True)


@pytest.fixture
def tapped_relay(procs, tmp_path):
    """The relay daemon with a tap between it and its member (to read the tags it issues) and
    an HTTP listener (to read the relay's counters)."""
    relay_port, http_port = free_tcp_port(), free_tcp_port()
    member = procs.member('udp', extra=['-n', 'tcp:%%CC_SELF%%:' + str(relay_port)])
    host, port = member.address.rsplit(':', 1)
    tap = UdpControlTap(host, int(port))
    b2bua_dir = tempfile.mkdtemp(prefix='b2bua-')
    try:
        prefix = os.path.join(b2bua_dir, 'b2bua.sock')
        daemon = _start_relay_daemon(procs, tmp_path, relay_port, prefix,
                                     member_xml('m1', protocol='udp', address=tap.spec[4:]),
                                     http_port)
        yield daemon, tap, relay_port, prefix, http_port
    finally:
        tap.close()
        shutil.rmtree(b2bua_dir, ignore_errors=True)


def issued_line(daemon: Daemon, tap: UdpControlTap, call: str, socket_spec: str, tag: str) -> bytes:
    """The line a member would write for `call`: the tag the cluster gave it, %-decoded.

    The session is deleted at once, so the member itself never sends it."""
    assert protocol.is_positive_ul_reply(
        daemon.command('U %s 127.0.0.1 5000 f %s %s' % (call, socket_spec, tag)))
    sent = [protocol.parse_command(c) for c in tap.commands if c.startswith('U %s ' % call)]
    assert len(sent) == 1 and sent[0].notify_socket.startswith('tcp:%%CC_SELF%%:')
    assert daemon.command('D %s f' % call) == '0\n'
    return protocol.percent_unquote(sent[0].notify_tag).encode('latin-1') + b'\n'


def relay_metrics(http_port: int) -> dict[str, float]:
    """The notify relay's samples of cluster "test" from /metrics, by metric name."""
    with urllib.request.urlopen('http://127.0.0.1:%d/metrics' % http_port, timeout=5) as reply:
        body = reply.read().decode()
    samples = {}
    for line in body.splitlines():
        name, _, value = line.partition('{cluster="test"} ')
        if name.startswith('rtp_cluster_notify_') and value:
            samples[name] = float(value)
    return samples


def cpu_seconds(pid: int) -> float:
    with open('/proc/%d/stat' % pid) as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


@pytest.mark.slow
def test_timeout_notification_reaches_b2bua_socket(relay_setup):
    daemon, member, relay_port, prefix = relay_setup
    listener = UnixListener(prefix + '-7')
    try:
        reply = daemon.command('U ncall1 127.0.0.1 5000 ftag unix:%s-7 tag%%20one' % prefix)
        assert protocol.is_positive_ul_reply(reply), reply
        lines = listener.wait_lines(1, 15)
        assert lines == [b'tag one'], 'B2BUA socket got %r' % lines
    finally:
        listener.close()


@pytest.mark.slow
def test_timeout_notification_reaches_a_tcp_notify_socket(relay_setup):
    """Kamailio's timeout_socket / OpenSIPS's rtpp_notify_socket: `tcp:HOST:PORT`."""
    daemon, member, relay_port, prefix = relay_setup
    assert daemon.command('VF 20081224') == '1\n'     # the relay delivers for remote members
    listener = UnixListener(None)
    try:
        reply = daemon.command('U tcall 127.0.0.1 5000 ftag tcp:127.0.0.1:%d k%%20tag'
                               % listener.port)
        assert protocol.is_positive_ul_reply(reply), reply
        assert listener.wait_lines(1, 15) == [b'k tag']
    finally:
        listener.close()


@pytest.mark.slow
def test_deleted_session_sends_nothing_and_other_destinations_are_separate(relay_setup):
    daemon, member, relay_port, prefix = relay_setup
    first, second = UnixListener(prefix + 'A'), UnixListener(prefix + 'B')
    try:
        daemon.command('U n2 127.0.0.1 5000 f2 %sA t2' % prefix)
        daemon.command('U n3 127.0.0.1 5002 f3 %sB t3' % prefix)
        daemon.command('U n4 127.0.0.1 5004 f4 %sB t4' % prefix)
        assert daemon.command('D n4 f4') == '0\n'
        assert first.wait_lines(1, 15) == [b't2']
        assert second.wait_lines(1, 5) == [b't3']
        time.sleep(1.0)
        assert second.lines == [b't3'], 'deleted session n4 must not notify'
    finally:
        first.close()
        second.close()


def _connect_from(source: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((source, 0))
    sock.settimeout(3)
    sock.connect(('127.0.0.1', port))
    return sock


@pytest.mark.slow
def test_stranger_is_refused_and_garbage_is_survived(tapped_relay):
    daemon, tap, relay_port, prefix, http_port = tapped_relay
    listener = UnixListener(prefix + 'G')
    stuck = UnixListener(prefix + 'S', read=False)
    try:
        try:
            stranger = _connect_from('127.0.0.2', relay_port)
            stranger.sendall(b'G stolen\n')
            assert stranger.recv(100) == b'', 'a stranger must be disconnected'
            stranger.close()
        except ConnectionResetError:
            pass        # the relay's reset may already hit connect() or send()
        daemon.wait_log('refused connection from 127.0.0.2')

        delivered = issued_line(daemon, tap, 'g1', prefix + 'G', 'delivered')
        flood = issued_line(daemon, tap, 's1', prefix + 'S', 'flood')
        missing = issued_line(daemon, tap, 'm1', prefix + 'missing-socket', 'tag')
        friend = _connect_from('127.0.0.1', relay_port)
        try:
            friend.sendall(b'nospace\n' + b'x' * 10000 + b'\n' + b'\xff\xfe\x00 bad\n'
                           + b'/../../etc/x evil\n' + b'missing-socket tag\n'
                           + b'tcp:127.0.0.1:%d never-registered\n' % relay_port
                           + b'G stolen\n' + delivered.replace(b'delivered', b'forged'))
            friend.sendall(missing + flood * 3000)
            friend.sendall(delivered)
            assert listener.wait_lines(1, 5) == [b'delivered']
        finally:
            friend.close()
        assert daemon.command('V') == '20040107\n', 'control path must keep serving'
        daemon.wait_log('malformed notification')
        daemon.wait_log('not issued by this cluster')
        daemon.wait_log('cannot reach')
        daemon.wait_log('queue for %sS full' % prefix)
        assert daemon.proc.poll() is None
        counters = relay_metrics(http_port)
        assert counters['rtp_cluster_notify_rejected_total'] == 8
        assert counters['rtp_cluster_notify_forged_total'] == 1
        assert counters['rtp_cluster_notify_destinations'] == 3       # G, S, missing-socket
        assert counters['rtp_cluster_notify_rejected_connections_total'] >= 1
    finally:
        listener.close()
        stuck.close()


@pytest.mark.slow
def test_a_local_flood_of_made_up_lines_creates_nothing_and_stays_quiet(tapped_relay):
    """Issue 16: 5,000 lines with made-up suffixes from a process on a member's address."""
    daemon, tap, relay_port, prefix, http_port = tapped_relay
    listener = UnixListener(prefix + 'real')
    try:
        real = issued_line(daemon, tap, 'r1', prefix + 'real', 'real-tag')
        mac = real.split(b' ', 1)[0]
        log_before = len(daemon.log())
        lines = [b'made-up-%d tag\n' % i for i in range(2500)]               # the old format
        lines += [b'%s .made-up-%d tag\n' % (mac, i) for i in range(2500)]   # a borrowed MAC
        intruder = _connect_from('127.0.0.1', relay_port)
        try:
            intruder.sendall(b''.join(lines))
            wait_until(lambda: relay_metrics(http_port).get(
                'rtp_cluster_notify_received_total') == 5000, 'the 5,000 lines read', 15)
        finally:
            intruder.close()
        counters = relay_metrics(http_port)
        assert counters['rtp_cluster_notify_destinations'] == 0
        assert counters['rtp_cluster_notify_rejected_total'] == 5000
        assert counters['rtp_cluster_notify_forged_total'] == 2500
        assert counters['rtp_cluster_notify_delivered_total'] == 0
        cpu_before = cpu_seconds(daemon.proc.pid)
        time.sleep(3.0)
        assert cpu_seconds(daemon.proc.pid) - cpu_before < 0.3, 'the daemon must stay idle'
        relay_lines = [line for line in daemon.log()[log_before:].splitlines()
                       if 'notify relay' in line]
        assert len(relay_lines) <= 2, relay_lines          # one warning of each kind at most
        with socket.create_connection(('127.0.0.1', relay_port), timeout=3) as member_side:
            member_side.sendall(real)                      # the relay still delivers
            assert listener.wait_lines(1, 5) == [b'real-tag']
        assert relay_metrics(http_port)['rtp_cluster_notify_destinations'] == 1
    finally:
        listener.close()


@pytest.mark.slow
def test_reload_applies_new_relay_bounds_and_keeps_the_key(tapped_relay):
    daemon, tap, relay_port, prefix, http_port = tapped_relay
    first, second = UnixListener(prefix + 'A'), UnixListener(prefix + 'B')
    try:
        to_first = issued_line(daemon, tap, 'a1', prefix + 'A', 'to-a')
        to_second = issued_line(daemon, tap, 'b1', prefix + 'B', 'to-b')
        with open(daemon.config_path) as f:
            text = f.read()
        with open(daemon.config_path, 'w') as f:
            f.write(text.replace('</disconnect_notify>',
                                 '<max_destinations>1</max_destinations></disconnect_notify>'))
        assert daemon.admin_command('reload').returncode == 0
        with socket.create_connection(('127.0.0.1', relay_port), timeout=3) as member_side:
            member_side.sendall(to_first + to_second)
            assert first.wait_lines(1, 5) == [b'to-a']     # issued before the reload
            wait_until(lambda: relay_metrics(http_port).get(
                'rtp_cluster_notify_received_total') == 2, 'both lines read', 5)
        counters = relay_metrics(http_port)
        assert counters['rtp_cluster_notify_destinations'] == 1
        assert counters['rtp_cluster_notify_dropped_total'] == 1
        assert second.lines == []
        daemon.wait_log('(max_destinations)')
    finally:
        first.close()
        second.close()


# --- what a member gets (sans-IO): rewrite, strip, untouched ---------------------------------------

class RecordingClient:
    rtt = 0.0

    def __init__(self) -> None:
        self.sent: list[str] = []

    def send(self, text, callback, timeout=None) -> None:
        self.sent.append(text)
        if text == 'V':
            callback('20040107')
        elif text.startswith('VF'):
            callback('1')
        elif text == 'Ib':
            callback(protocol.format_info({}))
        else:
            callback('40000 127.0.0.1')

    def close(self) -> None:
        pass


def _cluster_with(member_protocol: str, address: str, notify: DisconnectNotifyConfig | None,
                  capabilities=CAPABILITY_DATES):
    clock = Clock()
    config = ClusterConfig('c', parse_endpoint('udp', '127.0.0.1:1'), (), capacity_limit='soft',
                           disconnect_notify=notify)
    cluster = Cluster(config, clock)
    cluster.rewriter.notify_auth = NotifyAuthenticator(TEST_KEY, 'c')   # the runtime's part
    client = RecordingClient()
    member = Member(MemberConfig('m', parse_endpoint(member_protocol, address), 1, 100), client, clock)
    cluster.add_member(member)
    member.start()
    member.capabilities = frozenset(capabilities)
    member.capabilities_known = True
    client.sent.clear()
    return cluster, client


RELAY = DisconnectNotifyConfig('127.0.0.1', 8888, '/var/run/b2b')


def _route(cluster, text: str) -> str:
    replies = []
    cluster.handle(protocol.parse_command(text), replies.append)
    return replies[0]


def test_remote_member_with_capability_gets_relay_socket_and_folded_tag():
    cluster, client = _cluster_with('udp', '10.0.0.5:22222', RELAY)
    _route(cluster, 'U c1 1.2.3.4 5000 f1 unix:/var/run/b2b.7 tag%20x')
    assert client.sent == ['U c1 1.2.3.4 5000 f1 tcp:%%CC_SELF%%:8888 '
                           + quoted_tag('c', '.7', 'tag x')]
    assert quoted_tag('c', '.7', 'tag x').endswith('%20.7%20tag%20x')


def test_socket_equal_to_the_prefix_is_relayed_with_an_empty_destination():
    cluster, client = _cluster_with('udp', '10.0.0.5:22222', RELAY)
    _route(cluster, 'U c1 1.2.3.4 5000 f1 /var/run/b2b t')
    assert client.sent == ['U c1 1.2.3.4 5000 f1 tcp:%%CC_SELF%%:8888 ' + quoted_tag('c', '', 't')]


@pytest.mark.parametrize('tag', ['a%0Ab', 'a%0Db', 'a%00b'])
def test_a_tag_that_cannot_come_back_as_one_line_is_not_relayed(tag):
    cluster, client = _cluster_with('udp', '10.0.0.5:22222', RELAY)
    _route(cluster, 'U c1 1.2.3.4 5000 f1 unix:/var/run/b2b.7 ' + tag)
    assert client.sent == ['U c1 1.2.3.4 5000 f1']


def test_a_unix_suffix_the_relay_would_take_for_tcp_is_not_relayed():
    cluster, client = _cluster_with('udp', '10.0.0.5:22222', RELAY)
    _route(cluster, 'U c1 1.2.3.4 5000 f1 /var/run/b2btcp:192.0.2.7:9999 tag')
    assert client.sent == ['U c1 1.2.3.4 5000 f1']


def test_without_the_relay_authenticator_nothing_is_relayed():
    cluster, client = _cluster_with('udp', '10.0.0.5:22222', RELAY)
    cluster.rewriter.notify_auth = None
    _route(cluster, 'U c1 1.2.3.4 5000 f1 unix:/var/run/b2b.7 tag')
    assert client.sent == ['U c1 1.2.3.4 5000 f1']


def test_tcp_notify_socket_is_folded_whole_once_the_relay_accepts_it():
    cluster, client = _cluster_with('udp', '10.0.0.5:22222', RELAY)
    accepted: list[str] = []
    cluster.rewriter.allow_tcp_notify_target = lambda spec: accepted.append(spec) or True
    _route(cluster, 'U c1 1.2.3.4 5000 f1 tcp:192.0.2.7:9999 t%201')
    _route(cluster, 'U c2 1.2.3.4 5000 f1 tcp:%%CC_SELF%%:9999 t2')   # cannot be reached
    cluster.rewriter.allow_tcp_notify_target = lambda spec: False              # relay full
    _route(cluster, 'U c3 1.2.3.4 5000 f1 tcp:192.0.2.8:9999 t3')
    assert client.sent == ['U c1 1.2.3.4 5000 f1 tcp:%%CC_SELF%%:8888 '
                           + quoted_tag('c', 'tcp:192.0.2.7:9999', 't 1'),
                           'U c2 1.2.3.4 5000 f1', 'U c3 1.2.3.4 5000 f1']
    assert quoted_tag('c', 'tcp:192.0.2.7:9999', 't 1').endswith(
        '%20tcp%3A192.0.2.7%3A9999%20t%201')
    assert accepted == ['tcp:192.0.2.7:9999']


@pytest.mark.parametrize('member_protocol, address, relay, caps, answer', [
    ('unix', '/var/run/rtpproxy.sock', None, CAPABILITY_DATES, '1'),   # same host
    ('udp', '10.0.0.5:22222', None, CAPABILITY_DATES, '0'),            # nothing relays
    ('udp', '10.0.0.5:22222', RELAY, CAPABILITY_DATES, '1'),
    ('udp', '10.0.0.5:22222', RELAY, set(CAPABILITY_DATES) - {'20150617'}, '0'),
    ('unix', '/var/run/rtpproxy.sock', RELAY, set(CAPABILITY_DATES) - {'20081224'}, '0'),
])
def test_notification_capability_only_when_notifications_reach_the_client(
        member_protocol, address, relay, caps, answer):
    cluster, _ = _cluster_with(member_protocol, address, relay, caps)
    assert _route(cluster, 'VF 20081224') == answer


def test_remote_member_without_capability_gets_no_notify_arguments():
    cluster, client = _cluster_with('udp', '10.0.0.5:22222', RELAY, capabilities=())
    _route(cluster, 'U c1 1.2.3.4 5000 f1 unix:/var/run/b2b.7 tag')
    assert client.sent == ['U c1 1.2.3.4 5000 f1']


def test_remote_member_and_socket_outside_prefix_gets_no_notify_arguments():
    cluster, client = _cluster_with('udp', '10.0.0.5:22222', RELAY)
    _route(cluster, 'U c1 1.2.3.4 5000 f1 /elsewhere/sock tag')
    assert client.sent == ['U c1 1.2.3.4 5000 f1']


def test_no_relay_configured_strips_notify_for_remote_member():
    cluster, client = _cluster_with('udp', '10.0.0.5:22222', None)
    _route(cluster, 'U c1 1.2.3.4 5000 f1 /var/run/b2b.7 tag')
    assert client.sent == ['U c1 1.2.3.4 5000 f1']


def test_local_unix_member_gets_command_untouched():
    cluster, client = _cluster_with('unix', '/var/run/rtpproxy.sock', RELAY)
    _route(cluster, 'U c1 1.2.3.4 5000 f1 unix:/var/run/b2b.7 tag%20x')
    assert client.sent == ['U c1 1.2.3.4 5000 f1 unix:/var/run/b2b.7 tag%20x']
