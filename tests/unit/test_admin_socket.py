"""The admin socket (rtp_cluster/adapters/admin_socket.py) without real clients: the line
protocol on a StringTransport, the connection factory, and the server on real sockets."""
from __future__ import annotations

import os
import socket

import pytest
from twisted.internet.error import CannotListenError
from twisted.internet.testing import MemoryReactorClock, StringTransport

from rtp_cluster.adapters import admin_socket
from rtp_cluster.adapters.admin import AdminCommands
from rtp_cluster.adapters.admin_socket import AdminFactory, AdminProtocol, AdminServer
from rtp_cluster.adapters.runtime import Runtime
from rtp_cluster.adapters.transports import StartupError
from rtp_cluster.core.config import Endpoint, load_config
from tests.support.admin_world import (BAD_INPUT, LS, LS_ALPHA, LS_BETA, M1, M2, M3, M4, World,
                                      config_xml)


@pytest.fixture
def world(tmp_path):
    w = World(tmp_path, config_xml([M1, M2, M3], [M4]))
    yield w
    w.runtime.stop()


# --- the line protocol ------------------------------------------------------------------------

class Conn:
    """One AdminProtocol on a StringTransport, optionally through an AdminFactory."""

    def __init__(self, commands: AdminCommands, factory: AdminFactory | None = None,
                 max_line: int = admin_socket.MAX_LINE) -> None:
        if factory is not None:
            self.proto = factory.buildProtocol(None)
        else:
            self.proto = AdminProtocol(commands, max_line)
        self.transport = StringTransport()
        self.proto.makeConnection(self.transport)

    def send(self, data: bytes) -> str:
        self.proto.dataReceived(data)
        return self.take()

    def take(self) -> str:
        out = self.transport.value().decode('utf-8')
        self.transport.clear()
        return out

    @property
    def closed(self) -> bool:
        return self.transport.disconnecting


def test_protocol_crlf_pipelining_and_empty_lines(world):
    conn = Conn(world.commands)
    out = conn.send(b'ls\r\n\r\n\nls beta\n  \nhelp')
    assert out == LS + LS_BETA
    assert conn.send(b'\r\n').startswith('Supported commands:\n')
    assert not conn.closed


def test_protocol_byte_by_byte(world):
    conn = Conn(world.commands)
    for byte in b'ls alpha\r\n':
        conn.proto.dataReceived(bytes([byte]))
    assert conn.take() == LS_ALPHA


def test_protocol_quit_closes_and_ignores_the_rest(world):
    conn = Conn(world.commands)
    assert conn.send(b'ls beta\nquit\nls\n') == LS_BETA
    assert conn.closed
    assert conn.send(b'ls\n') == ''


def test_protocol_every_bad_input_then_still_serves(world):
    conn = Conn(world.commands)
    data = b''.join(line.encode('utf-8') + b'\n' for line, _ in BAD_INPUT) + b'ls beta\n'
    expected = ''.join(line + '\n' for _, line in BAD_INPUT) + LS_BETA
    assert conn.send(data) == expected
    assert not conn.closed


def test_protocol_binary_garbage(world):
    conn = Conn(world.commands)
    out = conn.send(bytes(range(256)).replace(b'\n', b'') + b'\n\xff\xfe ls\nls beta\n')
    lines = out.split('\n')
    assert lines[0] == 'ERROR: unknown command'
    assert lines[1] == 'ERROR: unknown command'
    assert '\n'.join(lines[2:]) == LS_BETA
    out = conn.send(b'ls \xff\xfe\x1b[31m\n')
    assert out == 'ERROR: \ufffd\ufffd?[31m: cluster not found\n'


def test_protocol_too_long_line_in_one_piece(world):
    conn = Conn(world.commands, max_line=100)
    out = conn.send(b'ls ' + b'x' * 200 + b'\nls beta\n')
    assert out == 'ERROR: line too long (more than 100 bytes)\n' + LS_BETA


def test_protocol_too_long_line_in_pieces_is_answered_once(world):
    conn = Conn(world.commands, max_line=100)
    assert conn.send(b'x' * 60) == ''
    assert conn.send(b'x' * 60) == 'ERROR: line too long (more than 100 bytes)\n'
    for _ in range(5):
        assert conn.send(b'y' * 1000) == ''
    assert conn.send(b'still the long line\nls beta\n') == LS_BETA
    assert conn.proto._buffer == bytearray()


def test_protocol_line_at_the_limit_is_served(world):
    conn = Conn(world.commands, max_line=100)
    line = b'ls ' + b'z' * 97
    assert conn.send(line + b'\r\n') == 'ERROR: %s: cluster not found\n' % ('z' * 97)
    assert conn.send(line + b'z\n') == 'ERROR: line too long (more than 100 bytes)\n'


def test_protocol_default_limit_is_64_kib(world):
    conn = Conn(world.commands)
    assert conn.send(b'ls ' + b'a' * (64 * 1024 - 3) + b'\n').endswith(': cluster not found\n')
    assert conn.send(b'a' * (64 * 1024 + 10)) == 'ERROR: line too long (more than 65536 bytes)\n'
    assert conn.send(b'\nls beta\n') == LS_BETA


def test_protocol_pauses_while_the_client_does_not_read(world):
    conn = Conn(world.commands)
    conn.proto.pauseProducing()
    assert conn.transport.producerState == 'paused'
    assert conn.send(b'ls beta\nls beta\n') == ''
    conn.proto.resumeProducing()
    assert conn.transport.producerState == 'producing'
    assert conn.take() == LS_BETA + LS_BETA


def test_protocol_half_line_then_disconnect(world):
    conn = Conn(world.commands)
    assert conn.send(b'modify alpha pau') == ''
    conn.proto.connectionLost(None)
    assert conn.send(b'se m1\n') == ''
    assert world.cluster().members['m1'].status == 'ACTIVE'


def test_protocol_internal_error_keeps_the_connection(world, monkeypatch):
    monkeypatch.setattr(world.runtime, 'reload', lambda: 1 / 0)
    conn = Conn(world.commands)
    out = conn.send(b'reload\nls beta\n')
    assert out == 'ERROR: internal error: ZeroDivisionError: division by zero\n' + LS_BETA


def test_factory_limits_and_counts_connections(world):
    factory = AdminFactory(world.commands, max_connections=2)
    first, second = Conn(None, factory), Conn(None, factory)
    third = Conn(None, factory)
    assert third.take() == 'ERROR: too many admin connections (at most 2); try again later\n'
    assert third.closed
    assert not first.closed and not second.closed
    assert second.send(b'ls beta\n') == LS_BETA
    first.proto.connectionLost(None)
    fourth = Conn(None, factory)
    assert fourth.send(b'ls beta\n') == LS_BETA
    factory.disconnect_all()
    assert second.closed and fourth.closed


# --- the server -------------------------------------------------------------------------------

def test_server_listens_on_unix_socket_0660(world):
    reactor = MemoryReactorClock()
    server = AdminServer(world.runtime, '/nonexistent/admin.sock')
    server.listen(reactor)
    path, factory, _backlog, mode, _pid = reactor.unixServers[0]
    assert (path, mode) == ('/nonexistent/admin.sock', 0o660)
    assert isinstance(factory, AdminFactory) and factory.commands.runtime is world.runtime
    assert server.stop() is not None
    assert server.stop() is None


def test_server_socket_owner_failure_is_a_startup_error(world):
    # a MemoryReactor makes no file, so the chown to sock_owner fails: one clear line
    server = AdminServer(world.runtime, '/nonexistent/admin.sock', (os.getuid(), os.getgid()))
    with pytest.raises(StartupError, match='^cannot chown /nonexistent/admin.sock: '):
        server.listen(MemoryReactorClock())


@pytest.mark.parametrize('spec,path', [('unix:/tmp/x.sock', '/tmp/x.sock'),
                                       ('/tmp/y.sock', '/tmp/y.sock'),
                                       ('rel.sock', os.path.abspath('rel.sock'))])
def test_server_unix_specs(world, spec, path):
    assert AdminServer(world.runtime, spec).endpoint == Endpoint('unix', path=path)


def test_server_tcp(world):
    reactor = MemoryReactorClock()
    server = AdminServer(world.runtime, 'tcp:127.0.0.1:12345')
    server.listen(reactor)
    port, factory, _backlog, interface = reactor.tcpServers[0]
    assert (port, interface, type(factory)) == (12345, '127.0.0.1', AdminFactory)
    server.stop()


def test_server_tcp_default_port_is_the_clients(world):
    # issue 20: the daemon reads `tcp:HOST` as rtp_cluster_client does, port 12345
    assert AdminServer(world.runtime, 'tcp:127.0.0.1').endpoint == Endpoint(
        'tcp', host='127.0.0.1', port=12345)


def test_server_tcp_port_in_use(world):
    class Busy(MemoryReactorClock):
        def listenTCP(self, port, factory, backlog=50, interface=''):
            raise CannotListenError(interface, port, OSError(98, 'Address already in use'))
    server = AdminServer(world.runtime, 'tcp:127.0.0.1:12345')
    with pytest.raises(StartupError) as error:
        server.listen(Busy())
    assert str(error.value).startswith('cannot listen on admin socket tcp 127.0.0.1 port 12345: ')
    assert '\n' not in str(error.value)


@pytest.mark.parametrize('spec,fragment', [
    ('udp:127.0.0.1:5000', 'expected /PATH, unix:/PATH or tcp:HOST:PORT'),
    ('udp:127.0.0.1:5000', 'the admin socket must be unix: or tcp:'),
    ('tcp:127.0.0.1:port', 'is not a number'),
    ('tcp:127.0.0.1:0', 'out of range'),
    ('unix:', 'path is empty'),
    ('sctp:1.2.3.4:5', 'is not a socket'),
])
def test_server_bad_specs(world, spec, fragment):
    with pytest.raises(StartupError) as error:
        AdminServer(world.runtime, spec)
    assert fragment in str(error.value) and '\n' not in str(error.value)


def test_server_replaces_a_stale_socket_and_refuses_other_files(world, tmp_path):
    path = str(tmp_path / 'a.sock')
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()                      # the file stays, nobody listens
    server = AdminServer(world.runtime, path)
    server.listen(MemoryReactorClock())
    assert not os.path.exists(path)    # removed; a real reactor would bind a fresh one
    with open(path, 'w') as f:
        f.write('not a socket')
    with pytest.raises(StartupError, match='exists and is not a socket'):
        AdminServer(world.runtime, path).listen(MemoryReactorClock())
    assert os.path.exists(path)


def test_server_refuses_a_live_socket(world, tmp_path):
    path = str(tmp_path / 'b.sock')
    live = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        live.bind(path)
        live.listen(1)
        with pytest.raises(StartupError, match='another process is already listening'):
            AdminServer(world.runtime, path).listen(MemoryReactorClock())
    finally:
        live.close()


def test_stop_removes_a_left_over_socket_file_only(tmp_path):
    path = str(tmp_path / 'c.sock')
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.close()
    admin_socket.remove_socket_file(path)
    assert not os.path.exists(path)
    admin_socket.remove_socket_file(path)            # already gone: fine
    (tmp_path / 'd').write_text('x')
    admin_socket.remove_socket_file(str(tmp_path / 'd'))
    assert (tmp_path / 'd').exists()


def test_runtime_starts_and_stops_the_admin_socket(tmp_path):
    config_path = str(tmp_path / 'rtp_cluster.xml')
    with open(config_path, 'w') as f:
        f.write(config_xml([M1]))
    reactor = MemoryReactorClock()
    runtime = Runtime(load_config(config_path), config_path, reactor,
                      admin_spec='unix:/nonexistent/admin.sock')
    runtime.start()
    servers = {path: (factory, mode) for path, factory, _b, mode, _p in reactor.unixServers}
    factory, mode = servers['/nonexistent/admin.sock']
    assert isinstance(factory, AdminFactory) and mode == 0o660
    assert factory.commands.execute('ls').lines[1] == '    name = alpha'
    fired = []
    runtime.stop().addCallback(fired.append)
    assert fired and runtime.admin is None
