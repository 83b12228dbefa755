"""Log level control (`<log_level>`, `set loglevel`) and JSON log lines."""
from __future__ import annotations

import io
import json

import pytest
from twisted.logger import LogLevel, LogPublisher, Logger

from rtp_cluster.adapters.admin import AdminCommands
from rtp_cluster.adapters.logcontrol import LogLevels, file_observer


def publish(levels: LogLevels, log_format: str = 'text') -> tuple[Logger, io.StringIO]:
    stream = io.StringIO()
    publisher = LogPublisher(levels.filtered(file_observer(stream, log_format)))
    return Logger(namespace='test', observer=publisher), stream


def test_level_filters_and_can_change_at_run_time():
    levels = LogLevels('warn')
    log, stream = publish(levels)
    log.info('hidden info')
    log.warn('shown warning')
    assert 'hidden info' not in stream.getvalue() and 'shown warning' in stream.getvalue()
    assert levels.set('DEBUG') == 'debug'
    log.debug('now shown')
    assert 'now shown' in stream.getvalue()
    assert levels.level == 'debug'


def test_bad_level_is_refused_and_changes_nothing():
    levels = LogLevels('info')
    with pytest.raises(ValueError, match='unknown log level "chatty"'):
        levels.set('chatty')
    assert levels.predicate.defaultLogLevel is LogLevel.info


def test_json_lines_carry_the_event_fields():
    log, stream = publish(LogLevels('info'), 'json')
    log.warn('member {name}: {old} -> {new}', name='m1', old='online', new='offline',
             event='member_state', cluster='a', member='m1', reason='heartbeat failed')
    log.info('second')
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    event = json.loads(lines[0])
    assert (event['event'], event['cluster'], event['member'], event['old'], event['new'],
            event['reason']) == ('member_state', 'a', 'm1', 'online', 'offline', 'heartbeat failed')
    assert event['log_level']['name'] == 'warn'


class _Runtime:
    def __init__(self) -> None:
        self.log_levels = LogLevels('info')
        self.clusters = {}
        self.sharing = None


def test_admin_set_loglevel():
    runtime = _Runtime()
    commands = AdminCommands(runtime)
    assert commands.execute('set loglevel debug').lines == ('log level: debug', 'OK')
    assert runtime.log_levels.level == 'debug'
    assert commands.execute('set loglevel Warning').lines == ('log level: warn', 'OK')
    assert runtime.log_levels.level == 'warn'


@pytest.mark.parametrize('line, message', [
    ('set loglevel', 'ERROR: one log level expected; expected: set loglevel '
                     'debug|info|warn|error|critical'),
    ('set loglevel a b', 'ERROR: one log level expected; expected: set loglevel '
                         'debug|info|warn|error|critical'),
    ('set colour red', 'ERROR: unknown command'),
    ('set loglevel loud', 'ERROR: unknown log level "loud"; expected debug, info, warn, error '
                          'or critical'),
])
def test_admin_set_loglevel_errors(line, message):
    runtime = _Runtime()
    assert AdminCommands(runtime).execute(line).lines == (message,)
    assert runtime.log_levels.level == 'info'


def test_admin_help_lists_set_loglevel():
    assert '\tset loglevel debug|info|warn|error|critical' in AdminCommands(_Runtime()).execute(
        'help').lines
