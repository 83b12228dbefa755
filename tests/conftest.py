import shutil
import tempfile

import pytest
from hypothesis import settings
from hypothesis.configuration import set_hypothesis_home_dir
from twisted.logger import globalLogPublisher

from tests.support.procs import ProcessTracker
from tests.support.reactor_thread import ReactorThread
from tests.support.redis_server import RedisServer

# a private temp directory per run; the run fails if a test leaves anything in it
pytest_plugins = ['tests.support.tempdir_guard']

# Hypothesis keeps an example database and caches in a .hypothesis directory, which would
# be left in the checkout: no database (CI starts from a fresh clone, where it would be
# empty anyway), and the caches in a directory of this run, removed at its end.
settings.register_profile('rtp_cluster', database=None)
settings.load_profile('rtp_cluster')
_HYPOTHESIS_HOME = tempfile.mkdtemp(prefix='rtpct-hypothesis-')
set_hypothesis_home_dir(_HYPOTHESIS_HOME)


def pytest_unconfigure(config):
    shutil.rmtree(_HYPOTHESIS_HOME, ignore_errors=True)


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
