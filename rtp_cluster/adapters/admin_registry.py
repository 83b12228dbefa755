"""The admin command registry: every admin command declared once, dispatched in one place.

A command (`AdminCommand`) declares its words (``('ls',)``, ``('ls', 'numsessions')``),
aliases, a synopsis for `help`, the usage shown after a usage error, an argument parser
(the rest of the line -> arguments) and a handler (runtime, arguments -> reply lines or an
`AdminReply`).  `AdminRegistry.execute(runtime, line)` finds the longest registered word
sequence that starts the line and runs it; `help_lines()` is generated from the
registrations.  Every reply is an `AdminReply`: lines ending with ``OK``, one
``ERROR: ...`` line, or nothing.

A reply too long for one reactor turn (a listing of every session) is streamed: its
`more` gives the rest a batch of lines at a time, and the admin connection writes one batch
per reactor turn, then ``OK`` (`AdminProtocol`); `complete()` gathers everything at once
for callers that cannot wait (tests).

Handlers signal problems with exceptions:

    AdminError('text')      -> ERROR: text
    UsageError('problem')   -> ERROR: problem; expected: <the command's usage>
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Generator, Iterable

from twisted.logger import Logger

from ..core.admin_text import guard_line

__all__ = ['AdminReply', 'AdminError', 'UsageError', 'AdminCommand', 'AdminRegistry',
           'MAX_ECHO', 'show_input', 'one_line', 'stream_failure', 'UNKNOWN_COMMAND']

MAX_ECHO = 200                  # characters of user input repeated in an error message
UNKNOWN_COMMAND = 'unknown command'      # the original's exact text (scripts match it)

log = Logger(namespace='rtp_cluster.admin')


@dataclass(frozen=True)
class AdminReply:
    """What one command line gets back; no lines means no reply (an empty line).

    With `more`, `lines` is the start of the reply and `more` yields the rest, a batch of
    lines per reactor turn (an empty batch just gives the turn back); ``OK`` follows the
    last batch.
    """

    lines: tuple[str, ...] = ()
    close: bool = False
    more: Generator[list[str], None, None] | None = field(default=None, compare=False)

    @classmethod
    def ok(cls, lines: Iterable[str] = ()) -> 'AdminReply':
        """`lines` then OK; a line that would end the reply early is escaped."""
        return cls(tuple(guard_line(line) for line in lines) + ('OK',))

    @classmethod
    def streamed(cls, first: Iterable[str],
                 more: Generator[list[str], None, None]) -> 'AdminReply':
        """`first`, then the batches of `more`, then OK (written across reactor turns)."""
        return cls(tuple(guard_line(line) for line in first), more=more)

    def complete(self) -> 'AdminReply':
        """The whole reply at once (every batch of a streamed one gathered now)."""
        if self.more is None:
            return self
        lines = list(self.lines)
        try:
            for batch in self.more:
                lines += [guard_line(line) for line in batch]
        except Exception as exc:
            return AdminReply(tuple(lines) + (stream_failure(exc),), self.close)
        return AdminReply(tuple(lines) + ('OK',), self.close)

    @classmethod
    def error(cls, message: str) -> 'AdminReply':
        return cls(('ERROR: ' + one_line(message),))

    @property
    def is_error(self) -> bool:
        return bool(self.lines) and self.lines[-1].startswith('ERROR')

    def text(self) -> str:
        return ''.join(line + '\n' for line in self.lines)


class AdminError(Exception):
    """A command that cannot be done; str(e) follows `ERROR: `."""


class UsageError(AdminError):
    """Bad arguments; the reply adds `; expected: ` and the command's usage."""


def stream_failure(exc: Exception) -> str:
    """The ERROR line that ends a streamed reply whose producer failed."""
    log.failure('admin reply stream failed')
    return AdminReply.error('internal error: %s: %s' % (type(exc).__name__, exc)).lines[0]


def one_line(text: str) -> str:
    return text.replace('\r\n', ' ').replace('\n', ' ').replace('\r', ' ')


def show_input(text: str) -> str:
    """User input fit to be repeated in a reply: printable and not too long."""
    clean = ''.join(c if c.isprintable() else '?' for c in text)
    return clean if len(clean) <= MAX_ECHO else clean[:MAX_ECHO] + '...'


Handler = Callable[[Any, Any], 'Iterable[str] | AdminReply']


def rest_of_line(text: str) -> str:
    return text


@dataclass(frozen=True)
class AdminCommand:
    """One admin command."""

    words: tuple[str, ...]                    # ('ls',) or ('ls', 'numsessions')
    synopsis: str                             # its line in `help`
    handler: Handler                          # (runtime, parsed arguments) -> reply
    parse: Callable[[str], Any] = rest_of_line     # the rest of the line -> arguments
    usage: str = ''                           # after a usage error; default: the synopsis
    aliases: tuple[tuple[str, ...], ...] = ()
    section: str = 'Supported commands:'      # the help section it is listed in
    details: tuple[str, ...] = ()             # more help lines, in a section of their own
    # `ls NAME` keeps meaning "list cluster NAME" when a cluster has that name
    yields_to_cluster: bool = False
    description: str = ''                     # what it does, for the man page

    @property
    def name(self) -> str:
        return ' '.join(self.words)

    @property
    def expected(self) -> str:
        return self.usage or self.synopsis


@dataclass
class AdminRegistry:
    """The admin command language: registrations and the one dispatch."""

    commands: dict[tuple[str, ...], AdminCommand] = field(default_factory=dict)
    _order: list[AdminCommand] = field(default_factory=list)
    _longest: int = 1

    def add(self, command: AdminCommand) -> AdminCommand:
        """Register `command` under its words and aliases; ValueError on a clash."""
        for words in (command.words,) + command.aliases:
            if words in self.commands:
                raise ValueError('admin command %r is registered twice' % ' '.join(words))
            self.commands[words] = command
            self._longest = max(self._longest, len(words))
        self._order.append(command)
        return command

    def __iter__(self):
        return iter(self._order)

    def resolve(self, runtime: Any, line: str) -> tuple[AdminCommand, str] | None:
        """The command that `line` starts with and the rest of the line, or None."""
        words = line.split(None, self._longest)
        for size in range(min(self._longest, len(words)), 0, -1):
            command = self.commands.get(tuple(words[:size]))
            if command is None or (size > 1 and command.yields_to_cluster
                                   and words[size - 1] in runtime.clusters):
                continue
            rest = line.split(None, size)
            return command, rest[size].strip() if len(rest) > size else ''
        return None

    def execute(self, runtime: Any, line: str) -> AdminReply:
        """Run one command line; never raises."""
        if not line.strip():
            return AdminReply()
        try:
            found = self.resolve(runtime, line)
            if found is None:
                raise AdminError(UNKNOWN_COMMAND)
            return self.run(runtime, *found)
        except AdminError as exc:
            return AdminReply.error(str(exc))
        except Exception as exc:
            log.failure('admin command {line!r} failed', line=line[:MAX_ECHO])
            return AdminReply.error('internal error: %s: %s' % (type(exc).__name__, exc))

    def run(self, runtime: Any, command: AdminCommand, rest: str) -> AdminReply:
        """Parse the arguments and run the handler; AdminError for refused commands."""
        try:
            result = command.handler(runtime, command.parse(rest))
        except UsageError as exc:
            raise AdminError('%s; expected: %s' % (exc, command.expected)) from None
        if isinstance(result, AdminReply):
            return result
        return AdminReply.ok(result)

    def help_lines(self) -> list[str]:
        """`help`: the synopsis of every command by section, then details and aliases."""
        sections: dict[str, list[str]] = {}
        for command in self._order:
            sections.setdefault(command.section, []).append('\t' + command.synopsis)
            if command.details:
                sections.setdefault('Arguments of %s:' % command.name, []).extend(
                    '\t' + line for line in command.details)
        lines = [line for title, body in sections.items() for line in [title] + body]
        aliases = ['%s for %s' % (' or '.join(' '.join(a) for a in c.aliases), c.name)
                   for c in self._order if c.aliases]
        if aliases:
            lines.append('Aliases: ' + ', '.join(aliases))
        return lines
