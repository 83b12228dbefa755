"""adapters/reactor.py: marked UDP ports are read without the legacy log context; the rest
and every error keep Twisted's own handling.  On a private reactor, loopback sockets only."""
from __future__ import annotations

import socket

import pytest
from twisted.internet.protocol import DatagramProtocol
from twisted.python import log

from rtp_cluster.adapters.reactor import LeanEPollReactor, lean_dispatch


class Collect(DatagramProtocol):
    def __init__(self, fail: bool = False) -> None:
        self.datagrams: list[bytes] = []
        self.fail = fail

    def datagramReceived(self, data, addr) -> None:
        self.datagrams.append(data)
        if self.fail:
            raise RuntimeError('handler failed')


@pytest.fixture
def reactor():
    r = LeanEPollReactor()
    yield r
    for selectable in r.removeAll():
        selectable.socket.close()
    r._poller.close()


@pytest.fixture
def contexts(monkeypatch):
    """The descriptors Twisted built a log context for."""
    seen = []
    original = log.callWithLogger

    def spy(logger, func, *args, **kw):
        seen.append(logger)
        return original(logger, func, *args, **kw)
    monkeypatch.setattr(log, 'callWithLogger', spy)
    return seen


def send_to(port, data: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(data, ('127.0.0.1', port.getHost().port))


def test_a_marked_port_is_read_without_a_log_context_and_an_unmarked_one_with(reactor, contexts):
    lean, usual = Collect(), Collect()
    lean_port = reactor.listenUDP(0, lean, interface='127.0.0.1')
    usual_port = reactor.listenUDP(0, usual, interface='127.0.0.1')
    lean_dispatch(lean_port)
    send_to(lean_port, b'one')
    send_to(lean_port, b'two')
    send_to(usual_port, b'three')
    reactor.doPoll(1.0)
    assert lean.datagrams == [b'one', b'two']       # the whole queue, in one wake-up
    assert usual.datagrams == [b'three']
    assert contexts == [usual_port]


def test_an_error_in_a_marked_port_is_logged_and_the_port_keeps_reading(reactor, contexts):
    errors = []
    log.addObserver(errors.append)
    try:
        failing = Collect(fail=True)
        port = reactor.listenUDP(0, failing, interface='127.0.0.1')
        lean_dispatch(port)
        send_to(port, b'bad')
        reactor.doPoll(1.0)
        send_to(port, b'again')
        reactor.doPoll(1.0)
    finally:
        log.removeObserver(errors.append)
    assert failing.datagrams == [b'bad', b'again']
    assert [e['failure'].value.args for e in errors if e.get('isError')] == [('handler failed',)] * 2
    assert contexts == []


def test_the_poll_returns_when_its_timeout_passes_with_nothing_to_read(reactor):
    port = reactor.listenUDP(0, Collect(), interface='127.0.0.1')
    lean_dispatch(port)
    reactor.doPoll(0.01)
    assert port.protocol.datagrams == []


def test_garbage_collector_tuning_makes_young_passes_rarer_and_freezes_what_exists():
    import gc

    from rtp_cluster.adapters.gc_pauses import GC_PAUSES
    from rtp_cluster.adapters.reactor import GC_YOUNG_THRESHOLD, tune_garbage_collector
    before = gc.get_threshold()
    frozen_before = gc.get_freeze_count()
    try:
        tune_garbage_collector()
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, before[1], before[2])
        assert GC_YOUNG_THRESHOLD > before[0]
        assert gc.get_freeze_count() > frozen_before
        assert GC_PAUSES.installed                  # every collection is timed from now on
        full_passes = GC_PAUSES.histograms[2].count
        gc.collect()
        assert GC_PAUSES.histograms[2].count == full_passes + 1
    finally:
        GC_PAUSES.remove()
        gc.unfreeze()
        gc.set_threshold(*before)


class Addresses(DatagramProtocol):
    def __init__(self) -> None:
        self.seen: list[tuple] = []

    def datagramReceived(self, data, addr) -> None:
        self.seen.append(addr)


def test_one_wake_up_reads_at_most_a_batch_and_the_rest_comes_next(reactor):
    from rtp_cluster.adapters.reactor import LEAN_BATCH
    collect = Collect()
    port = reactor.listenUDP(0, collect, interface='127.0.0.1')
    lean_dispatch(port)
    for i in range(LEAN_BATCH + 10):
        send_to(port, b'%d' % i)
    reactor.doPoll(1.0)
    assert len(collect.datagrams) == LEAN_BATCH
    reactor.doPoll(1.0)
    assert collect.datagrams == [b'%d' % i for i in range(LEAN_BATCH + 10)]


def test_an_ipv6_port_hands_over_host_and_port_only(reactor):
    if not socket.has_ipv6:
        pytest.skip('no IPv6')
    addresses = Addresses()
    try:
        port = reactor.listenUDP(0, addresses, interface='::1')
    except Exception as exc:        # noqa: BLE001 - a host without ::1
        pytest.skip('no ::1: %s' % exc)
    lean_dispatch(port)
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
        s.bind(('::1', 0))
        s.sendto(b'six', ('::1', port.getHost().port))
        reactor.doPoll(1.0)
        assert addresses.seen == [('::1', s.getsockname()[1])]
