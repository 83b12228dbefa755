"""The daemon's event loop: Twisted's epoll reactor with a shorter dispatch for datagram sockets.

For every ready descriptor, Twisted's EPollReactor first builds a legacy logging context
(`log.callWithLogger`: the descriptor's log prefix, a copied context dictionary) and only then
dispatches the event.  At concurrency 1 every control command wakes the loop twice (the
client's datagram, the member's reply), each time for one datagram, and that context cost
about 5 µs of the 12 µs Twisted adds per wake-up (bench/profiles/).  The daemon's code logs
through `twisted.logger.Logger`, which does not read that context.

UDP ports marked with `lean_dispatch()` (the control and member sockets) therefore skip it:
on a plain read event their queue is drained by a small loop that hands each datagram to the
port's protocol (at most LEAN_BATCH per wake-up, so no socket starves the others), in place
of Twisted's `_doReadOrWrite` and `Port.doRead` with their per-datagram bookkeeping.  Any
other event on them (an error, a hang-up) and every other descriptor take Twisted's way.

`tune_garbage_collector()` fits the cyclic garbage collector to the same loop: every command
allocates a handful of container objects that die when it is answered, and with Python's
default (a young-generation pass every 700 allocations) the collector took about 5 % of
the daemon's Python time at concurrency 16.  It also starts timing every collection
(`gc_pauses.GC_PAUSES`, the `rtp_cluster_gc_pause_seconds` histogram).
"""
from __future__ import annotations

import errno
import gc
import select
import socket
import sys
from typing import Callable

from twisted.internet.epollreactor import EPollReactor
from twisted.logger import Logger
from twisted.python import log

from .gc_pauses import GC_PAUSES

_READ_ONLY = select.EPOLLIN
LEAN_BATCH = 64             # datagrams read from one socket per wake-up, at most
_log = Logger()
# Allocations between young-generation passes (Python: 700).  The objects of the commands in
# flight are what a pass finds alive, however rarely it runs, so rarer passes cost less;
# cyclic garbage waits at most this many allocations longer.
GC_YOUNG_THRESHOLD = 20000


class LeanEPollReactor(EPollReactor):
    """EPollReactor whose marked descriptors skip the legacy log context on read events."""

    def doPoll(self, timeout: float | None) -> None:
        if timeout is None:
            timeout = -1
        try:
            events = self._poller.poll(timeout, len(self._selectables))
        except OSError as err:
            if err.errno == errno.EINTR:
                return
            raise
        selectables = self._selectables
        dispatch = self._doReadOrWrite
        for fd, event in events:
            selectable = selectables.get(fd)
            if selectable is None:
                continue
            drain = getattr(selectable, 'lean_drain', None) if event == _READ_ONLY else None
            if drain is not None:
                drain()
            else:
                log.callWithLogger(selectable, dispatch, selectable, fd, event)

    doIteration = doPoll


def lean_dispatch(port) -> None:
    """Mark a Twisted UDP port for the short dispatch of LeanEPollReactor."""
    port.lean_drain = _drainer(port.socket, port.protocol.datagramReceived, port.maxPacketSize,
                               port.socket.family == socket.AF_INET6)


def _drainer(sock: socket.socket, deliver: Callable[[bytes, tuple], None], size: int,
             ipv6: bool) -> Callable[[], None]:
    """Read up to LEAN_BATCH datagrams of `sock`, each to `deliver(data, (host, port))`."""
    recvfrom = sock.recvfrom

    def drain() -> None:
        for _ in range(LEAN_BATCH):
            try:
                data, addr = recvfrom(size)
            except BlockingIOError:
                return
            except OSError as exc:      # e.g. an ICMP error reported on the socket: read on
                _log.debug('udp read: {error}', error=exc)
                continue
            try:
                deliver(data, addr[:2] if ipv6 else addr)
            except Exception:           # noqa: BLE001 - one bad datagram must not stop the loop
                _log.failure('while handling a datagram from {addr}', addr=addr)

    return drain


def install_reactor():
    """Install LeanEPollReactor as the global reactor; the installed one if there is one."""
    if 'twisted.internet.reactor' not in sys.modules:
        from twisted.internet.main import installReactor
        installReactor(LeanEPollReactor())
    from twisted.internet import reactor
    return reactor


def tune_garbage_collector() -> None:
    """Rarer young-generation passes; what exists after startup is never scanned again.

    Call it once the daemon has started: the modules, the configuration and the reactor
    live for the whole process, so `gc.freeze()` takes them out of every later full pass
    (which otherwise walks them each time the live sessions have grown by a quarter).  The
    price: a frozen object that later becomes cyclic garbage (a cluster or member of the
    startup configuration that a reload removes) stays in memory; at most once, and no
    larger than the startup configuration's objects.  From then on every collection is timed
    (`GC_PAUSES`).
    """
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)
    gc.freeze()
    GC_PAUSES.install()
