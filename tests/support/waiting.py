"""Polling with a deadline, for tests that wait on processes they started."""
from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar('T')


def wait_until(predicate: Callable[[], T], what: str, timeout: float,
               interval: float = 0.05, detail: Callable[[], str] | None = None) -> T:
    """Call `predicate` every `interval` s until it returns something true, and return that;
    AssertionError naming `what` (and `detail()`, if given) after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            message = 'timed out after %.0f s waiting for %s' % (timeout, what)
            raise AssertionError(message + ('; ' + detail() if detail else ''))
        time.sleep(interval)
