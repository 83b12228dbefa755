"""A private Twisted reactor running in a thread, for tests on real sockets.

Each test gets its own EPollReactor (not the global one), so tests never share reactor
state; the test thread drives it with `call` (blocks until the result, Deferreds included).
The `rt` fixture (conftest.py) also fails the test if anything logged a failure.
"""
from __future__ import annotations

import threading

from twisted.internet.epollreactor import EPollReactor
from twisted.internet.threads import blockingCallFromThread


class ReactorThread:
    def __init__(self) -> None:
        self.reactor = EPollReactor()
        self.failures: list[dict] = []
        self._thread = threading.Thread(target=self.reactor.run,
                                        kwargs={'installSignalHandlers': False}, daemon=True)
        self._thread.start()

    def call(self, f, *args, **kwargs):
        """Run f in the reactor thread and return its result (waits for a Deferred)."""
        return blockingCallFromThread(self.reactor, f, *args, **kwargs)

    def later(self, delay: float, f, *args) -> None:
        self.reactor.callFromThread(self.reactor.callLater, delay, f, *args)

    def stop(self) -> None:
        if self._thread.is_alive():
            self.reactor.callFromThread(self.reactor.stop)
            self._thread.join(10)
        waker = self.reactor.waker
        self.reactor.removeReader(waker)
        waker.connectionLost(None)
        self.reactor._poller.close()
