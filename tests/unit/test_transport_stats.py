"""The control servers time every command and count its reply (CommandStats), on a Clock."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from rtp_cluster.adapters.transports import StreamControlProtocol, UDPControlServer
from rtp_cluster.core.counters import INVALID, CommandStats


def test_stream_server_times_each_command_until_its_reply():
    clock, stats, pending = Clock(), CommandStats(), []
    proto = StreamControlProtocol(lambda cmd, respond: pending.append(respond), stats, clock)
    proto.makeConnection(StringTransport())
    proto.dataReceived(b'V\nU call-1 127.0.0.1 4000 ft\n')
    clock.advance(0.003)
    pending[0]('20040107')
    clock.advance(0.2)
    pending[1]('E8')
    assert stats.commands() == {'V': 1, 'U': 1}
    assert stats.durations['V'].sum == pytest.approx(0.003)
    assert stats.durations['U'].sum == pytest.approx(0.203)
    assert stats.replies.values == {'ok': 1, 'E8': 1}


def test_stream_server_counts_what_does_not_parse():
    clock, stats = Clock(), CommandStats()
    proto = StreamControlProtocol(lambda cmd, respond: pytest.fail('handled'), stats, clock)
    transport = StringTransport()
    proto.makeConnection(transport)
    proto.dataReceived(b'\n')
    assert transport.value().startswith(b'E')
    assert stats.commands() == {INVALID: 1}
    assert list(stats.replies.values) == [transport.value().strip().decode()]


class _Socket:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple]] = []

    def sendto(self, data: bytes, addr) -> None:
        self.sent.append((data, addr))


def test_udp_server_counts_once_per_command_not_per_retransmit():
    clock, stats, pending = Clock(), CommandStats(), []
    server = UDPControlServer(lambda cmd, respond: pending.append(respond), clock, stats=stats)
    server.port = SimpleNamespace(socket=_Socket())
    peer = ('127.0.0.1', 5060)
    server.datagramReceived(b'c1 U call-1 127.0.0.1 4000 ft', peer)
    server.datagramReceived(b'c1 U call-1 127.0.0.1 4000 ft', peer)     # in flight: dropped
    clock.advance(0.01)
    pending[0]('35000 127.0.0.1')
    server.datagramReceived(b'c1 U call-1 127.0.0.1 4000 ft', peer)     # cached reply
    server.datagramReceived(b'c2 Q', peer)                              # parse error (E-code)
    assert len(pending) == 1
    assert server.counters.duplicates == 2 == server.duplicates
    assert stats.commands() == {'U': 1, 'Q': 1}
    assert stats.durations['U'].sum == pytest.approx(0.01)
    assert sum(stats.replies.values.values()) == 2 and stats.replies.values['ok'] == 1
    assert [data for data, _ in server.port.socket.sent][:2] == [b'c1 35000 127.0.0.1\n'] * 2
