import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from procs import ProcessTracker  # noqa: E402
from reactor_thread import ReactorThread  # noqa: E402
from twisted.logger import globalLogPublisher  # noqa: E402


@pytest.fixture
def procs():
    tracker = ProcessTracker()
    try:
        yield tracker
    finally:
        tracker.stop_all()


@pytest.fixture
def rt():
    """A private reactor in a thread (reactor_thread.py); fails the test on logged failures."""
    thread = ReactorThread()

    def observe(event):
        if event.get('log_failure') is not None:
            thread.failures.append(event)
    globalLogPublisher.addObserver(observe)
    try:
        yield thread
    finally:
        globalLogPublisher.removeObserver(observe)
        thread.stop()
    assert thread.failures == [], [e['log_failure'].getTraceback() for e in thread.failures]
