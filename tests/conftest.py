import pytest
from twisted.logger import globalLogPublisher

from tests.support.procs import ProcessTracker
from tests.support.reactor_thread import ReactorThread
from tests.support.redis_server import RedisServer

# a private temp directory per run; the run fails if a test leaves anything in it
pytest_plugins = ['tests.support.tempdir_guard']


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


@pytest.fixture
def redis_server():
    """A private redis-server on a free loopback port, stopped after the test."""
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()
