"""rtp_cluster_client: the admin mode against a small fake admin server (a socketserver
thread); --control against real RTPproxies, the cluster daemon and a scripted UDP socket."""
from __future__ import annotations

import os
import socket
import socketserver
import subprocess
import sys
import threading
import time

import pytest

from rtp_cluster import admin_client as client
from rtp_cluster.core import protocol
from tests.support.cluster_proc import ClusterProc, cluster_xml, member_xml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class FakeAdmin:
    """Answers each command line with `replies[command]` (a list of byte chunks).

    A chunk None closes the connection at once, a number waits that many seconds.  Records
    every line it received.
    """

    def __init__(self, replies: dict[str, list[bytes | None]]) -> None:
        self.replies = replies
        self.received: list[str] = []

    def handler(self):
        admin = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                self.request.settimeout(5)
                for _ in range(100):
                    line = self.rfile.readline()
                    if not line:
                        return
                    command = line.decode().rstrip('\n')
                    admin.received.append(command)
                    if command == 'quit':
                        return
                    for chunk in admin.replies.get(command, [b'ERROR: unknown command\n']):
                        if chunk is None:
                            return
                        if isinstance(chunk, float):
                            time.sleep(chunk)
                            continue
                        self.wfile.write(chunk)
                        self.wfile.flush()
        return Handler

    def wait_for_quit(self, timeout: float = 5.0) -> list[str]:
        """The lines received once `quit` arrived (the handler runs in its own thread)."""
        deadline = time.monotonic() + timeout
        while 'quit' not in self.received and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.received


@pytest.fixture
def serve(tmp_path):
    """serve(replies, tcp=False) -> (spec, FakeAdmin); servers are shut down afterwards."""
    servers = []

    def start(replies, tcp: bool = False):
        admin = FakeAdmin(replies)
        if tcp:
            server = socketserver.ThreadingTCPServer(('127.0.0.1', 0), admin.handler())
            spec = 'tcp:127.0.0.1:%d' % server.server_address[1]
        else:
            path = str(tmp_path / ('admin%d.sock' % len(servers)))
            server = socketserver.ThreadingUnixStreamServer(path, admin.handler())
            spec = 'unix:' + path
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, kwargs={'poll_interval': 0.05})
        thread.start()
        servers.append((server, thread))
        return spec, admin

    yield start
    for server, thread in servers:
        server.shutdown()
        server.server_close()
        thread.join(5)


LS_REPLY = b'Cluster: #0\n    name = main\n    address = 127.0.0.1:22222\nOK\n'


def test_ok_reply_is_printed_and_quit_sent(serve, capsys):
    spec, admin = serve({'ls': [LS_REPLY]})
    assert client.main(['-s', spec, 'ls']) == 0
    assert capsys.readouterr().out == LS_REPLY.decode()
    assert admin.wait_for_quit() == ['ls', 'quit']


def test_arguments_are_joined_into_one_command(serve, capsys):
    spec, admin = serve({'modify main pause rtpproxy1': [b'OK\n']})
    assert client.main(['-s', spec, 'modify', 'main', 'pause', 'rtpproxy1']) == 0
    assert capsys.readouterr().out == 'OK\n'
    assert admin.received[0] == 'modify main pause rtpproxy1'


def test_error_reply_exits_1(serve, capsys):
    spec, _ = serve({'ls nope': [b'ERROR: nope: cluster not found\n']})
    assert client.main(['-s', spec, 'ls', 'nope']) == 1
    assert capsys.readouterr().out == 'ERROR: nope: cluster not found\n'


def test_reply_split_across_packets(serve, capsys):
    spec, _ = serve({'reload': [b'Loaded 1 clus', b'ters and 2 RTP proxies\nO', b'K\n']})
    assert client.main(['-s', spec, 'reload']) == 0
    assert capsys.readouterr().out == 'Loaded 1 clusters and 2 RTP proxies\nOK\n'


def test_line_starting_with_ok_text_is_not_the_end(serve, capsys):
    spec, _ = serve({'ls': [b'OKAY is not the end\n', b'OK\n']})
    assert client.main(['-s', spec, 'ls']) == 0
    assert capsys.readouterr().out == 'OKAY is not the end\nOK\n'


def test_plain_path_and_tcp_specs(serve, capsys):
    spec, _ = serve({'ls': [b'OK\n']})
    assert client.main(['-s', spec[len('unix:'):], 'ls']) == 0
    tcp_spec, _ = serve({'ls': [b'OK\n']}, tcp=True)
    assert client.main(['-s', tcp_spec, 'ls']) == 0
    assert capsys.readouterr().out == 'OK\nOK\n'


def test_no_server_exits_2_naming_the_socket(tmp_path, capsys):
    path = str(tmp_path / 'missing.sock')
    assert client.main(['-s', 'unix:' + path, 'ls']) == 2
    err = capsys.readouterr().err
    assert path in err and 'No such file or directory' in err
    assert len(err.strip().splitlines()) == 1


def test_refused_tcp_exits_2(capsys):
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]            # bound but not listening: refused
        assert client.main(['-s', 'tcp:127.0.0.1:%d' % port, 'ls']) == 2
    assert 'Connection refused' in capsys.readouterr().err


def test_early_close_exits_2(serve, capsys):
    spec, _ = serve({'ls': [b'Cluster: #0\n', None]})
    assert client.main(['-s', spec, 'ls']) == 2
    captured = capsys.readouterr()
    assert 'closed before the end of the reply' in captured.err
    assert captured.out == ''


def test_timeout_exits_2(serve, capsys):
    spec, _ = serve({'ls': [b'no end line\n']})
    assert client.main(['-s', spec, '-t', '0.3', 'ls']) == 2
    assert 'no complete reply within 0.3 s' in capsys.readouterr().err


def test_a_streamed_reply_may_take_longer_than_t_while_data_keeps_coming(serve, capsys):
    batches = [b'c%d cluster=main member=m1\n' % i for i in range(6)]
    chunks = [part for batch in batches for part in (batch, 0.15)] + [b'OK\n']
    spec, _ = serve({'ls sessions --all': chunks})
    started = time.monotonic()
    assert client.main(['-s', spec, '-t', '0.5', 'ls', 'sessions', '--all']) == 0
    assert time.monotonic() - started > 0.8             # longer than -t in all
    assert capsys.readouterr().out == b''.join(batches).decode() + 'OK\n'


def test_a_paged_listing_with_its_more_line_exits_0(serve, capsys):
    reply = b'c1 cluster=main member=m1\n... 5 more (ls sessions all --all lists every one)\nOK\n'
    spec, _ = serve({'ls sessions': [reply]})
    assert client.main(['-s', spec, 'ls', 'sessions']) == 0
    assert capsys.readouterr().out == reply.decode()


@pytest.mark.parametrize('argv', [[], ['-s', '/x'], ['-t', 'abc', 'ls'], ['-t', '0', 'ls']])
def test_usage_errors_exit_2(argv, capsys):
    assert client.main(argv) == 2
    assert capsys.readouterr().err.strip()


@pytest.mark.parametrize('spec, expected', [
    ('/run/a.sock', (socket.AF_UNIX, '/run/a.sock')),
    ('unix:/run/a.sock', (socket.AF_UNIX, '/run/a.sock')),
    ('tcp:127.0.0.1:4000', (socket.AF_INET, ('127.0.0.1', 4000))),
    ('tcp:127.0.0.1', (socket.AF_INET, ('127.0.0.1', client.DEFAULT_TCP_PORT))),
    ('tcp:[::1]:4000', (socket.AF_INET6, ('::1', 4000))),
])
def test_parse_address(spec, expected):
    assert client.parse_address(spec) == expected


@pytest.mark.parametrize('spec', ['tcp:', 'tcp:host:port', 'unix:'])
def test_parse_address_rejects(spec):
    with pytest.raises(client.ClientError):
        client.parse_address(spec)


def test_top_level_script_runs_without_installation(serve, tmp_path):
    spec, admin = serve({'ls': [LS_REPLY]})
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    result = subprocess.run([sys.executable, os.path.join(ROOT, 'rtp_cluster_client.py'),
                             '-s', spec, 'ls'], cwd=str(tmp_path), env=env,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout == LS_REPLY.decode()
    assert admin.wait_for_quit() == ['ls', 'quit']


def test_admin_mode_needs_only_the_standard_library():
    probe = ('import sys, rtp_cluster.admin_client as c; c.build_parser(); '
             'print(sorted(m for m in sys.modules if m.split(".")[0] in ("lxml", "twisted", "redis")))')
    result = subprocess.run([sys.executable, '-c', probe], cwd=ROOT, capture_output=True,
                            text=True, timeout=30)
    assert (result.returncode, result.stdout) == (0, '[]\n'), result.stderr


# --- --control: RTPproxy control commands -------------------------------------------------------

def run_client(*argv: str | bytes, timeout: float = 30) -> subprocess.CompletedProcess:
    """rtp_cluster_client as a command; stdout and stderr as bytes."""
    return subprocess.run([sys.executable, '-m', 'rtp_cluster.admin_client'] + list(argv),
                          cwd=ROOT, capture_output=True, timeout=timeout)


def control(spec: str, command: str) -> tuple[int, str]:
    result = run_client('--control', spec, command)
    assert result.stderr == b'', result.stderr
    return result.returncode, result.stdout.decode('latin-1')


def assert_ul_cycle(spec: str, call_id: str) -> str:
    """U, L, D and a second D through `spec`: ports and exit codes; the repeated D's reply."""
    status, offer = control(spec, 'U %s 127.0.0.1 5000 ft1' % call_id)
    assert status == 0 and offer.endswith('\n') and offer.count('\n') == 1, offer
    offer_port = protocol.parse_ul_reply(offer)
    assert offer_port is not None and offer_port[1] == '127.0.0.1', offer
    status, answer = control(spec, 'L %s 127.0.0.1 5002 ft1 tt1' % call_id)
    answer_port = protocol.parse_ul_reply(answer)
    assert status == 0 and answer_port is not None, answer
    assert answer_port[0] != offer_port[0]            # one relay port per side
    assert control(spec, 'D %s ft1 tt1' % call_id) == (0, '0\n')
    status, repeated = control(spec, 'D %s ft1 tt1' % call_id)
    assert status == 1 and protocol.is_error(repeated) and repeated.count('\n') == 1, repeated
    return repeated


def stats_of(table: str) -> dict[str, int]:
    """The --stats table back into {name: value}; also checks that the values line up."""
    lines = table.splitlines()
    assert [line.rsplit(None, 1)[0].rstrip() for line in lines] == list(protocol.INFO_FIELDS)
    assert len({len(line) for line in lines}) == 1, 'values are not aligned:\n' + table
    return {line.rsplit(None, 1)[0].rstrip(): int(line.rsplit(None, 1)[1]) for line in lines}


@pytest.mark.parametrize('kind', ['udp', 'udp6', 'unix'])
def test_control_ul_cycle_against_a_real_rtpproxy(procs, kind):
    member = procs.member(kind)
    assert assert_ul_cycle(member.control, 'ctl-%s' % kind) == 'E50\n'
    assert control(member.control, 'V') == (0, '20040107\n')
    assert control(member.control, 'Vx') == (1, 'E2\n')


def test_control_stats_table_against_a_real_rtpproxy(procs):
    member = procs.member('udp')
    assert protocol.is_positive_ul_reply(member.command('U st1 127.0.0.1 5000 ft1'))
    result = run_client('--control', member.control, '--stats')
    assert result.returncode == 0, result.stderr
    table = result.stdout.decode()
    values = stats_of(table)
    assert values['active sessions'] == 1 and values['sessions created'] >= 1
    assert values == protocol.parse_info(member.command('Ib'))


@pytest.mark.parametrize('protocol_name', ['udp', 'unix'])
def test_control_against_the_cluster_daemon(procs, tmp_path, protocol_name):
    member = procs.member('udp')
    address = str(tmp_path / 'ctl.sock') if protocol_name == 'unix' else None
    config = cluster_xml([member_xml('m1', member)], protocol=protocol_name, address=address)
    cluster = ClusterProc.start(procs, tmp_path, config, wait_online=['m1'])
    assert_ul_cycle(cluster.control, 'through-cluster')      # the cluster's own E-code
    status, offer = control(cluster.control, 'U held 127.0.0.1 5000 ft1')
    assert status == 0 and protocol.is_positive_ul_reply(offer)
    # the cluster's Ib adds up the members' last heartbeats (one a second)
    deadline = time.monotonic() + 5
    while True:
        result = run_client('--control', cluster.control, '--stats')
        assert result.returncode == 0, result.stderr
        if stats_of(result.stdout.decode())['active sessions'] == 1:
            break
        assert time.monotonic() < deadline, result.stdout
        time.sleep(0.2)
    assert control(cluster.control, 'V') == (0, '20040107\n')


class FakeControl:
    """A UDP control socket that ignores the first `ignore` datagrams, then answers `reply`
    (or echoes the command when `reply` is None) with the datagram's cookie."""

    def __init__(self, ignore: int = 0, reply: bytes | None = b'20040107\n') -> None:
        self.ignore = ignore
        self.reply = reply
        self.received: list[tuple[float, bytes]] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(('127.0.0.1', 0))
        self.sock.settimeout(0.05)
        self.spec = 'udp:127.0.0.1:%d' % self.sock.getsockname()[1]
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.serve)
        self.thread.start()

    def serve(self) -> None:
        while not self.done.is_set():
            try:
                data, addr = self.sock.recvfrom(65535)
            except socket.timeout:
                continue
            self.received.append((time.monotonic(), data))
            if len(self.received) <= self.ignore:
                continue
            cookie, _, command = data.partition(b' ')
            self.sock.sendto(b'stale_cookie 1\n', addr)           # must be skipped
            self.sock.sendto(cookie + b' ' + (command + b'\n' if self.reply is None else self.reply), addr)

    def close(self) -> None:
        self.done.set()
        self.thread.join(5)
        self.sock.close()


@pytest.fixture
def fake_control():
    fakes: list[FakeControl] = []

    def make(**kwargs) -> FakeControl:
        fakes.append(FakeControl(**kwargs))
        return fakes[-1]
    yield make
    for fake in fakes:
        fake.close()


def test_control_retransmits_with_the_same_cookie_and_backs_off(fake_control):
    fake = fake_control(ignore=2)
    result = run_client('--control', fake.spec, 'V')
    assert (result.returncode, result.stdout, result.stderr) == (0, b'20040107\n', b'')
    times = [t for t, _ in fake.received]
    datagrams = {data for _, data in fake.received}
    assert len(times) == 3 and len(datagrams) == 1      # three sends, byte-identical
    cookie, _, command = datagrams.pop().partition(b' ')
    assert command == b'V' and cookie and b'\n' not in cookie
    first, second = times[1] - times[0], times[2] - times[1]
    assert 0.4 <= first <= 0.8 and 0.9 <= second <= 1.4, (first, second)


def test_control_no_reply_exits_2_after_the_timeout(fake_control):
    fake = fake_control(ignore=1000)
    start = time.monotonic()
    result = run_client('--control', fake.spec, '-t', '1', 'V')
    took = time.monotonic() - start
    assert result.returncode == 2 and result.stdout == b''
    assert result.stderr == ('rtp_cluster_client: %s: no reply within 1 s\n' % fake.spec).encode()
    assert 1.0 <= took < 3.0
    assert len(fake.received) == 2                      # at 0 and 0.5 s; the next would be at 1.5 s


def test_control_refused_exits_2_at_once():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(('127.0.0.1', 0))
        spec = 'udp:127.0.0.1:%d' % s.getsockname()[1]
    start = time.monotonic()
    result = run_client('--control', spec, 'V')
    assert result.returncode == 2
    assert b'Connection refused' in result.stderr and spec.encode() in result.stderr
    assert time.monotonic() - start < 2.5


def test_control_bytes_pass_through_unchanged(fake_control):
    fake = fake_control(reply=None)                     # echoes the command
    call_id = b'caf\xe9-\xff'                           # not UTF-8
    result = run_client('--control', fake.spec, b'U ' + call_id + b' 127.0.0.1 5000 ft1')
    assert result.returncode == 0, result.stderr
    assert result.stdout == b'U ' + call_id + b' 127.0.0.1 5000 ft1\n'
    assert fake.received[0][1].endswith(b' U ' + call_id + b' 127.0.0.1 5000 ft1')


def test_control_stats_with_a_reply_that_is_not_ib(fake_control):
    fake = fake_control(reply=b'E18\n')
    result = run_client('--control', fake.spec, '--stats')
    assert (result.returncode, result.stdout) == (1, b'E18\n')
    fake = fake_control(reply=b'garbage\n')
    result = run_client('--control', fake.spec, '--stats')
    assert (result.returncode, result.stdout) == (1, b'garbage\n')
    assert result.stderr == b'rtp_cluster_client: not an Ib reply\n'


def test_control_unix_server_that_closes_without_reply(tmp_path):
    path = str(tmp_path / 'mute.sock')
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(path)
        server.listen(1)

        def close_at_once() -> None:
            conn, _ = server.accept()
            conn.recv(100)
            conn.close()
        thread = threading.Thread(target=close_at_once)
        thread.start()
        result = run_client('--control', 'unix:' + path, 'V')
        thread.join(5)
    assert result.returncode == 2
    assert result.stderr == ('rtp_cluster_client: unix:%s: the connection was closed without '
                             'a reply\n' % path).encode()


@pytest.mark.parametrize('argv, message', [
    (['--stats'], '--stats needs --control SOCKET'),
    (['--control', 'udp:127.0.0.1:22222', '--stats', 'V'], '--stats sends Ib itself'),
    (['--control', 'udp:127.0.0.1:22222'], 'give one command, e.g. rtp_cluster_client --control'),
    (['--control', 'tcp:127.0.0.1:22222', 'V'], 'a control socket is udp:HOST[:PORT]'),
    (['--control', 'udp:127.0.0.1:99999', 'V'], '99999'),
    (['--control', 'udp:127.0.0.1:22222', 'U ' + 'x' * 9000], 'RTPproxy reads at most'),
    (['--control', 'udp:127.0.0.1:22222', '-s', '/x', 'V'], 'not allowed with argument'),
])
def test_control_usage_errors_exit_2(argv, message, capsys):
    assert client.main(argv) == 2
    captured = capsys.readouterr()
    assert message in captured.err and captured.out == ''


def test_control_command_length_limit_counts_the_cookie():
    from rtp_cluster import control_client
    limit = protocol.MAX_COMMAND_BYTES
    control_client.check_command(b'V' * limit, None)                 # unix: no cookie
    with pytest.raises(ValueError, match='RTPproxy reads at most %d' % limit):
        control_client.check_command(b'V' * (limit + 1), None)
    control_client.check_command(b'V' * (limit - 6), '12_ab')        # '12_ab V...' fills 8191
    with pytest.raises(ValueError, match='at most %d' % (limit - 6)):
        control_client.check_command(b'V' * (limit - 5), '12_ab')
    with pytest.raises(ValueError, match='empty'):
        control_client.check_command(b'  ', None)
