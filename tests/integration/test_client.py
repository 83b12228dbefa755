"""rtp_cluster_client against a small fake admin server (a socketserver thread)."""
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

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class FakeAdmin:
    """Answers each command line with `replies[command]` (a list of byte chunks).

    A chunk None closes the connection at once.  Records every line it received.
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
