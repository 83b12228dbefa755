"""rtp_cluster.adapters.admin_registry: declaration, dispatch, replies and generated help."""
from __future__ import annotations

import pytest
from twisted.logger import globalLogPublisher

from rtp_cluster.adapters.admin import build_registry
from rtp_cluster.adapters.admin_registry import (
    AdminCommand, AdminError, AdminRegistry, AdminReply, UsageError,
)
from rtp_cluster.adapters.admin_sharing import SHARING_COMMANDS


class FakeRuntime:
    def __init__(self, clusters=()) -> None:
        self.clusters = {name: object() for name in clusters}
        self.sharing = None


def echo(runtime, args):
    return ['args=%r' % (args,)]


def small_registry() -> AdminRegistry:
    registry = AdminRegistry()
    registry.add(AdminCommand(('ls',), 'ls [NAME]', echo))
    registry.add(AdminCommand(('ls', 'peers'), 'ls peers', lambda r, a: ['peers', *a],
                              parse=str.split, usage='ls peers (no arguments)',
                              yields_to_cluster=True, section='Sharing:'))
    registry.add(AdminCommand(('go',), 'go N', lambda r, a: ['went %d' % a], parse=_number,
                              usage='go N with N a number', aliases=(('g',),)))
    return registry


def _number(text: str) -> int:
    if not text.isdigit():
        raise UsageError('"%s" is not a number' % text)
    return int(text)


def test_the_longest_registered_words_win_and_the_rest_is_parsed():
    registry = small_registry()
    runtime = FakeRuntime()
    assert registry.execute(runtime, 'ls  peers a b').lines == ('peers', 'a', 'b', 'OK')
    assert registry.execute(runtime, 'ls alpha  --json ').lines == (
        "args='alpha  --json'", 'OK')
    assert registry.execute(runtime, '\tls').lines == ("args=''", 'OK')


def test_a_cluster_name_wins_over_a_second_word():
    registry = small_registry()
    assert registry.execute(FakeRuntime(['peers']), 'ls peers').lines == ("args='peers'", 'OK')


def test_aliases_run_the_same_command():
    registry = small_registry()
    assert registry.execute(FakeRuntime(), 'g 3') == registry.execute(FakeRuntime(), 'go 3')
    assert registry.execute(FakeRuntime(), 'go 3').lines == ('went 3', 'OK')


def test_usage_errors_add_the_declared_usage():
    reply = small_registry().execute(FakeRuntime(), 'go x')
    assert reply == AdminReply(('ERROR: "x" is not a number; expected: go N with N a number',))


def test_admin_errors_are_one_line():
    registry = AdminRegistry()

    def refuse(runtime, args):
        raise AdminError('no\nway')
    registry.add(AdminCommand(('x',), 'x', refuse))
    assert registry.execute(FakeRuntime(), 'x').lines == ('ERROR: no way',)


def test_unknown_commands_and_empty_lines():
    registry = small_registry()
    assert registry.execute(FakeRuntime(), 'frobnicate').lines == (
        'ERROR: unknown command',)          # the original's text, exactly
    assert registry.execute(FakeRuntime(), 'peers').is_error
    assert registry.execute(FakeRuntime(), '  \t') == AdminReply()


def test_a_failing_handler_is_an_internal_error_and_logged():
    registry = AdminRegistry()
    registry.add(AdminCommand(('boom',), 'boom', lambda r, a: 1 / 0))
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        reply = registry.execute(FakeRuntime(), 'boom')
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert reply.lines == ('ERROR: internal error: ZeroDivisionError: division by zero',)
    assert [e for e in events if e.get('log_failure') is not None]


def test_registering_a_word_twice_is_refused():
    registry = small_registry()
    with pytest.raises(ValueError, match="'g' is registered twice"):
        registry.add(AdminCommand(('g',), 'g', echo))


def test_help_is_generated_from_the_registrations():
    assert small_registry().help_lines() == [
        'Supported commands:', '\tls [NAME]', '\tgo N', 'Sharing:', '\tls peers',
        'Aliases: g for go']


def test_the_daemon_help_lists_every_command_and_alias():
    registry = build_registry()
    help_lines = registry.execute(FakeRuntime(), 'help').lines
    listed = '\n'.join(help_lines)
    for command in registry:
        assert '\t' + command.synopsis in help_lines
        for alias in command.aliases:
            assert ' '.join(alias) in listed
    assert {c.name for c in registry} == {'ls', 'modify', 'reload', 'set loglevel', 'help',
                                          'quit', 'auth', *SHARING_COMMANDS}
    assert '\thelp' in help_lines and 'suspend' in listed
    assert help_lines[-1] == 'OK'
