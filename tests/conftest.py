import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from procs import ProcessTracker  # noqa: E402


@pytest.fixture
def procs():
    tracker = ProcessTracker()
    try:
        yield tracker
    finally:
        tracker.stop_all()
