"""adapters/streams.py on in-memory transports and a fake clock: idle timeout, half-close,
eviction and rate-limited logging, for both protocols that use it."""
from __future__ import annotations

import pytest
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher

from rtp_cluster.adapters import streams
from rtp_cluster.adapters.streams import CLOSE_GRACE, EVICT_IDLE, IDLE_TIMEOUT, StreamLimits
from rtp_cluster.adapters.transports import StreamControlFactory


class Held:
    """A control handler that answers only when told to."""

    def __init__(self) -> None:
        self.respond = []

    def __call__(self, command, respond) -> None:
        self.respond.append(respond)


def connect(factory):
    proto = factory.buildProtocol(None)
    transport = StringTransport()
    proto.makeConnection(transport)
    return proto, transport


def control_factory(clock: Clock, handler=None, **limits) -> StreamControlFactory:
    limits.setdefault('max_connections', 4)
    return StreamControlFactory(handler or Held(), clock, StreamLimits(**limits))


@pytest.fixture
def warnings():
    seen: list[str] = []

    def observe(event):
        if event.get('log_namespace') == 'rtp_cluster.streams':
            seen.append(event['log_format'].format(**event))
    globalLogPublisher.addObserver(observe)
    yield seen
    globalLogPublisher.removeObserver(observe)


def test_an_idle_connection_is_closed_then_aborted_if_it_does_not_read():
    clock = Clock()
    proto, transport = connect(control_factory(clock))
    proto.dataReceived(b'V 1\n')                  # answered at once (E1): nothing owed
    clock.advance(IDLE_TIMEOUT - 1)
    assert not transport.disconnecting
    clock.advance(1)
    assert transport.disconnecting and not transport.disconnected
    clock.advance(CLOSE_GRACE)
    assert transport.disconnected                 # aborted: the client never took its reply


def test_activity_postpones_the_idle_timeout():
    clock = Clock()
    proto, transport = connect(control_factory(clock))
    clock.advance(IDLE_TIMEOUT / 2)
    proto.dataReceived(b'V 1\n')
    clock.advance(IDLE_TIMEOUT / 2 + 1)
    assert not transport.disconnecting
    clock.advance(IDLE_TIMEOUT / 2)
    assert transport.disconnecting


def test_a_connection_owed_a_reply_is_not_idle():
    clock, handler = Clock(), Held()
    proto, transport = connect(control_factory(clock, handler))
    proto.dataReceived(b'D c1 f1\n')
    clock.advance(IDLE_TIMEOUT * 3)
    assert not transport.disconnecting
    handler.respond[0]('0')
    assert transport.value() == b'0\n'
    clock.advance(IDLE_TIMEOUT)
    assert transport.disconnecting


def test_half_close_waits_for_forwarded_replies_then_closes():
    clock, handler = Clock(), Held()
    proto, transport = connect(control_factory(clock, handler))
    proto.dataReceived(b'U c1 127.0.0.1 5000 f1\nD c2 f1\nV 1\npartial')
    proto.readConnectionLost()
    assert not transport.disconnecting
    handler.respond[1]('E50')
    assert transport.value() == b''               # in order: the U is still owed
    handler.respond[0]('5000 127.0.0.1')
    assert transport.value() == b'5000 127.0.0.1\nE50\nE1\n'
    assert transport.disconnecting                # the unterminated line is not a command


def test_half_close_of_the_admin_protocol_closes_after_the_replies():
    from rtp_cluster.adapters.admin_socket import AdminFactory

    class Commands:
        def execute(self, line):
            from rtp_cluster.adapters.admin import AdminReply
            return AdminReply.ok([line])
    proto, transport = connect(AdminFactory(Commands(), clock=Clock()))
    proto.dataReceived(b'a\nb\n')
    proto.readConnectionLost()
    assert transport.value() == b'a\nOK\nb\nOK\n'
    assert transport.disconnecting


def test_a_full_gate_evicts_the_longest_silent_connection(warnings):
    clock = Clock()
    factory = control_factory(clock, max_connections=2)
    first, first_t = connect(factory)
    second, second_t = connect(factory)
    clock.advance(EVICT_IDLE)
    second.dataReceived(b'V 1\n')                 # second is active again
    third, third_t = connect(factory)
    assert first_t.disconnected and not second_t.disconnecting
    assert not third_t.disconnecting and third_t.value() == b''
    assert set(factory.connections) == {second, third}
    assert warnings == ['unix control socket: closed 1 idle connection(s) to make room for '
                        'new ones (at most 2 at a time)']


def test_a_gate_of_fresh_or_busy_connections_refuses(warnings):
    clock, handler = Clock(), Held()
    factory = control_factory(clock, handler, max_connections=2)
    busy, busy_t = connect(factory)
    busy.dataReceived(b'D c1 f1\n')
    clock.advance(EVICT_IDLE)
    fresh, fresh_t = connect(factory)             # room left: nothing evicted
    assert not busy_t.disconnecting and not fresh_t.disconnecting
    refused, refused_t = connect(factory)         # busy is owed a reply, fresh is fresh
    assert refused_t.value() == b'E992\n' and refused_t.disconnecting
    assert warnings == ['unix control socket: refused 1 connection(s): at most 2 at a time, '
                        'none idle']


def test_refusals_are_logged_once_per_interval_with_their_count(warnings, monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(streams.time, 'monotonic', lambda: now[0])
    factory = control_factory(Clock(), max_connections=1)
    connect(factory)
    for _ in range(5):
        connect(factory)
    now[0] += streams.LOG_INTERVAL
    connect(factory)
    assert warnings == [
        'unix control socket: refused 1 connection(s): at most 1 at a time, none idle',
        'unix control socket: refused 5 connection(s): at most 1 at a time, none idle']
    assert factory.gate.refusals.total == 6


def test_unread_replies_pause_reading_and_handling_until_drained():
    clock = Clock()
    proto, transport = connect(control_factory(clock, lambda cmd, respond: respond(cmd.text)))
    assert transport.bufferSize == streams.MAX_UNSENT
    proto.dataReceived(b'V\n')
    proto.pauseProducing()                        # what the transport does beyond MAX_UNSENT
    assert transport.producerState == 'paused'
    proto.dataReceived(b'V\nVF 20040107\n')       # already read: kept, not handled
    assert transport.value() == b'V\n'
    proto.resumeProducing()
    assert transport.producerState == 'producing'
    assert transport.value() == b'V\nV\nVF 20040107\n'
