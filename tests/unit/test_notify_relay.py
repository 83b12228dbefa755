"""The notify relay adapter (adapters/notify.py) on a memory reactor with a task.Clock.

Connections are played by hand: a destination's connection attempt is found in the
reactor's records, and made to succeed (a StringTransport) or fail.
"""
from __future__ import annotations

from dataclasses import replace

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import Logger
from twisted.python.failure import Failure

from rtp_cluster.adapters.notify import INBOUND_MAX, LOG_INTERVAL, RECONNECT_MAX, NotifyRelay
from rtp_cluster.core.config import DisconnectNotifyConfig
from rtp_cluster.core.notify_auth import NotifyAuthenticator
from tests.support.notify_tags import TEST_KEY

PREFIX = '/run/b2b.sock'
AUTH = NotifyAuthenticator(TEST_KEY, 'c')


class Relay:
    """A relay listening on a memory reactor, its log lines collected."""

    def __init__(self, **bounds) -> None:
        self.reactor = MemoryReactorClock()
        self.config = DisconnectNotifyConfig('127.0.0.1', 12131, PREFIX, **bounds)
        self.relay = NotifyRelay(self.config, self.reactor, AUTH)
        self.events: list[dict] = []
        self.relay.log = Logger(observer=self.events.append)
        self.relay.listen()
        self.relay.set_allowed(['10.0.0.5'])

    def member_writes(self, data: bytes) -> StringTransport:
        factory = self.reactor.tcpServers[0][1]
        inbound = factory.buildProtocol(None)
        transport = StringTransport(peerAddress=IPv4Address('TCP', '10.0.0.5', 40000))
        inbound.makeConnection(transport)
        inbound.dataReceived(data)
        return transport

    def notify(self, destination: str, tag: str) -> None:
        self.relay.dispatch(AUTH.issue(destination, tag))

    def attempts(self, path: str) -> list:
        return [c for c in self.reactor.unixClients if c[0] == path]

    def connect(self, path: str) -> StringTransport:
        factory = self.attempts(path)[-1][1]
        transport = StringTransport()
        factory.buildProtocol(None).makeConnection(transport)
        return transport

    def refuse(self, path: str) -> None:
        self.attempts(path)[-1][1].clientConnectionFailed(None, Failure(ConnectionRefusedError()))

    def warnings(self, text: str) -> list[dict]:
        return [e for e in self.events if text in e['log_format']]

    @property
    def counters(self):
        return self.relay.counters


def test_an_issued_line_is_delivered_as_the_clients_tag():
    r = Relay()
    r.member_writes(AUTH.issue('.7', 'tag one').encode('latin-1') + b'\r\n')
    transport = r.connect(PREFIX + '.7')
    assert transport.value() == b'tag one\n'
    assert (r.counters.received, r.counters.delivered, r.counters.bad_lines) == (1, 1, 0)


def test_a_tcp_destination_is_reached_over_tcp():
    r = Relay()
    r.notify('tcp:192.0.2.7:9999', 'k tag')
    (host, port, factory, timeout, _), = r.reactor.tcpClients
    assert (host, port) == ('192.0.2.7', 9999)
    transport = StringTransport()
    factory.buildProtocol(None).makeConnection(transport)
    assert transport.value() == b'k tag\n'


def test_made_up_lines_create_nothing_are_counted_and_logged_once():
    r = Relay()
    r.member_writes(b''.join(b'flood%d tag\n' % i for i in range(2500))
                    + b''.join(b'%s x%d tag\n' % (b'A' * 22, i) for i in range(2500)))
    assert r.relay.destinations == {} and r.reactor.unixClients == []
    assert (r.counters.received, r.counters.bad_lines, r.counters.forged) == (5000, 5000, 2500)
    assert r.counters.destinations == 0
    assert len(r.warnings('malformed notification')) == 1
    assert len(r.warnings('not issued by this cluster')) == 1
    r.reactor.advance(LOG_INTERVAL)
    r.member_writes(b'%s y tag\n' % (b'B' * 22))
    (later,) = r.warnings('not issued by this cluster')[1:]
    assert later['count'] == 2500           # the 2,499 not logged and this one


def test_a_line_changed_on_the_way_is_forged():
    r = Relay()
    issued = AUTH.issue('.7', 'tag')
    r.relay.dispatch(issued.replace('.7', '.8'))
    r.relay.dispatch(issued + 'x')
    assert r.relay.destinations == {} and r.counters.forged == 2


def test_unauthenticated_relative_paths_are_impossible_and_authenticated_ones_refused():
    r = Relay()
    r.notify('/../../etc/x', 'evil')
    assert r.relay.destinations == {} and r.counters.bad_lines == 1
    assert r.warnings('malformed notification')


def test_a_stranger_is_refused_and_counted():
    r = Relay()
    inbound = r.reactor.tcpServers[0][1].buildProtocol(None)
    transport = StringTransport(peerAddress=IPv4Address('TCP', '10.0.0.9', 1))
    inbound.makeConnection(transport)
    assert transport.disconnecting and r.counters.refused_connections == 1
    assert r.warnings('refused connection from {host}')[0]['host'] == '10.0.0.9'


def test_member_connections_are_bounded_the_least_recently_active_goes_first():
    r = Relay()
    first = r.member_writes(b'')
    others = [r.member_writes(b'') for _ in range(INBOUND_MAX - 1)]
    first_protocol = next(iter(r.relay.inbound))
    first_protocol.dataReceived(b'')            # active again: the second is now the oldest
    newcomer = r.member_writes(AUTH.issue('.7', 't').encode() + b'\n')
    assert others[0].disconnecting and not first.disconnecting
    assert not newcomer.disconnecting and r.attempts(PREFIX + '.7')
    assert len(r.relay.inbound) == INBOUND_MAX and r.counters.evicted_connections == 1
    assert len(r.warnings('to make room')) == 1
    for _ in range(3 * INBOUND_MAX):
        r.member_writes(b'')
    assert len(r.relay.inbound) == INBOUND_MAX


def test_over_long_lines_are_dropped_and_the_connection_kept():
    r = Relay()
    transport = r.member_writes(b'x' * 5000 + b'\n' + b'y' * 5000)
    r.member_writes(AUTH.issue('.7', 't').encode() + b'\n')
    assert r.counters.bad_lines == 2 and not transport.disconnecting
    assert r.attempts(PREFIX + '.7')


def test_reconnects_back_off_exponentially_up_to_the_maximum_and_log_rarely():
    r = Relay(idle_timeout=86_400)
    r.notify('.7', 't')
    delays = []
    for _ in range(12):
        r.refuse(PREFIX + '.7')
        attempts = len(r.attempts(PREFIX + '.7'))
        retry = r.relay.destinations[PREFIX + '.7'].retry
        delays.append(round(retry.getTime() - r.reactor.seconds(), 3))
        r.reactor.advance(delays[-1] - 0.001)
        assert len(r.attempts(PREFIX + '.7')) == attempts      # not before its time
        r.reactor.advance(retry.getTime() - r.reactor.seconds())
        assert len(r.attempts(PREFIX + '.7')) == attempts + 1
    assert delays[:5] == [0.1, 0.2, 0.4, 0.8, 1.6]
    assert max(delays) == RECONNECT_MAX and delays[-2:] == [RECONNECT_MAX] * 2
    logged = r.warnings('cannot reach')
    assert 2 <= len(logged) <= 1 + r.reactor.seconds() // LOG_INTERVAL + 1
    assert r.counters.connect_failures == 12
    transport = r.connect(PREFIX + '.7')
    assert transport.value() == b't\n'
    r.relay.destinations[PREFIX + '.7'].protocol.transport.loseConnection()


def test_backoff_starts_again_after_a_connection():
    r = Relay()
    r.notify('.7', 'a')
    for _ in range(3):
        r.refuse(PREFIX + '.7')
        r.reactor.advance(1)
    first = r.connect(PREFIX + '.7')
    first.loseConnection()
    r.relay.destinations[PREFIX + '.7'].protocol.connectionLost(None)
    r.notify('.7', 'b')
    r.refuse(PREFIX + '.7')
    before = len(r.attempts(PREFIX + '.7'))
    r.reactor.advance(0.1)
    assert len(r.attempts(PREFIX + '.7')) == before + 1


def test_destinations_are_bounded():
    r = Relay(max_destinations=2)
    for suffix in ('.1', '.2', '.3', '.3'):
        r.notify(suffix, 't')
    assert sorted(r.relay.destinations) == [PREFIX + '.1', PREFIX + '.2']
    assert (r.counters.destinations, r.counters.dropped) == (2, 2)
    assert len(r.warnings('max_destinations')) == 1


def test_queued_bytes_are_bounded_over_all_destinations():
    r = Relay(max_queued_bytes=4096)
    tag = 'x' * 1023                        # 1 KiB a line with its newline
    for index in range(6):
        r.notify('.%d' % (index % 2), tag)
    assert r.counters.queued_bytes == 4096
    assert r.counters.dropped == 2
    assert r.warnings('full')
    r.connect(PREFIX + '.0')
    assert r.counters.queued_bytes == 2048
    r.notify('.1', tag)
    assert (r.counters.queued_bytes, r.counters.dropped) == (3072, 2)


def test_a_client_that_does_not_read_pauses_writing_and_the_queue_stays_bounded():
    r = Relay()
    r.notify('.7', 'first')
    transport = r.connect(PREFIX + '.7')
    destination = r.relay.destinations[PREFIX + '.7']
    assert transport.producer is destination and transport.streaming
    destination.pauseProducing()                # what the transport does when its buffer fills
    for index in range(1200):
        r.notify('.7', 'n%d' % index)
    assert transport.value() == b'first\n'
    assert len(destination.queue) == 1000 and r.counters.dropped == 200
    destination.resumeProducing()
    assert transport.value().count(b'\n') == 1001 and r.counters.queued_bytes == 0


def test_idle_destinations_are_forgotten_with_their_queue():
    r = Relay(idle_timeout=40)
    r.notify('.1', 'delivered')
    connection = r.connect(PREFIX + '.1')
    r.notify('.2', 'waits')                     # never connects
    r.reactor.advance(30)
    r.notify('.3', 'recent')
    r.reactor.advance(20)                       # .1 and .2 idle for 50 s, .3 for 20 s
    assert sorted(r.relay.destinations) == [PREFIX + '.3']
    assert connection.disconnecting
    assert (r.counters.forgotten, r.counters.destinations) == (2, 1)
    assert r.counters.dropped == 1 and r.counters.queued_bytes == len(b'recent\n')
    r.refuse(PREFIX + '.2')                     # a late failure of a forgotten one: no retry
    r.reactor.advance(60)
    assert len(r.attempts(PREFIX + '.2')) == 1


def test_a_connection_that_completes_after_the_destination_was_forgotten_is_closed():
    r = Relay(idle_timeout=4)
    r.notify('.1', 't')
    r.reactor.advance(5)                        # forgotten while its connect is pending
    assert r.relay.destinations == {}
    late = r.connect(PREFIX + '.1')
    assert late.disconnecting and late.value() == b''


def test_reload_applies_new_bounds_and_prefix():
    r = Relay()
    for suffix in ('.1', '.2', '.3'):
        r.notify(suffix, 't')
        r.reactor.advance(1)
    r.relay.reconfigure(replace(r.config, max_destinations=1, idle_timeout=5,
                                dest_socket_prefix='/run/other'))
    assert list(r.relay.destinations) == [PREFIX + '.3']
    assert r.counters.forgotten == 2
    r.notify('.4', 't')
    assert PREFIX + '.4' not in r.relay.destinations and r.counters.dropped >= 1
    r.reactor.advance(6)
    assert r.relay.destinations == {}
    r.notify('.4', 't')
    assert list(r.relay.destinations) == ['/run/other.4']


def test_stop_closes_everything_and_keeps_the_gauges_true():
    r = Relay()
    r.notify('.1', 't')
    connection = r.connect(PREFIX + '.1')
    r.notify('.2', 'waits')
    r.relay.stop()
    assert connection.disconnecting and r.relay.destinations == {}
    assert (r.counters.destinations, r.counters.queued_bytes) == (0, 0)
    assert r.reactor.getDelayedCalls() == []


@pytest.mark.parametrize('line', [b'', b'G delivered', b'nospace', b'\xff\xfe\x00 bad'])
def test_garbage_is_counted_not_delivered(line):
    r = Relay()
    r.member_writes(line + b'\n')
    assert r.relay.destinations == {} and r.counters.bad_lines == 1
