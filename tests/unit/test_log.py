"""rtp_cluster.core.log: the core's logging facade and its route to twisted.logger."""
from __future__ import annotations

import logging

import pytest
from twisted.logger import LogLevel, formatEvent, globalLogPublisher

import rtp_cluster.adapters  # noqa: F401  (installs the twisted.logger route)
from rtp_cluster.adapters._logging import twisted_sink
from rtp_cluster.core import log as core_log


class Thing:
    log = core_log.Logger()


@pytest.fixture
def captured():
    events = []
    core_log.install_sink(lambda *event: events.append(event))
    yield events
    core_log.install_sink(twisted_sink)


def test_class_attribute_logger_is_named_after_the_class_with_the_instance_as_source(captured):
    thing = Thing()
    thing.log.warn('member {name}: {why}', name='m1', why='no answer')
    assert captured == [('warn', 'tests.unit.test_log.Thing', thing, 'member {name}: {why}',
                         {'name': 'm1', 'why': 'no answer'})]


def test_every_level_reaches_the_sink(captured):
    log = core_log.Logger('ns')
    for level in core_log.LEVELS:
        getattr(log, level)('x')
    assert [event[0] for event in captured] == list(core_log.LEVELS)


def test_importing_the_adapters_routes_events_to_twisted_logger():
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        thing = Thing()
        thing.log.info('call {cid!r} found on {n} members', cid='c1', n=2)
    finally:
        globalLogPublisher.removeObserver(events.append)
    (event,) = [e for e in events if e.get('log_namespace') == 'tests.unit.test_log.Thing']
    assert event['log_level'] is LogLevel.info
    assert event['log_source'] is thing
    assert formatEvent(event) == "call 'c1' found on 2 members"


def test_without_adapters_events_go_to_standard_logging(caplog):
    core_log.install_sink(None)
    try:
        with caplog.at_level(logging.INFO, logger='tests.unit.test_log.Thing'):
            Thing().log.error('member {name} removed', name='m2')
    finally:
        core_log.install_sink(twisted_sink)
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [
        ('tests.unit.test_log.Thing', logging.ERROR, 'member m2 removed')]
