"""RESP, the Redis wire protocol, without I/O: commands out, replies in.

Only what the session writer needs: RESP2 requests and every RESP2 reply type.  Text is
latin-1 as everywhere in the daemon, so any byte of a call-id survives the round trip.
"""
from __future__ import annotations

from typing import Union

MAX_BULK = 64 << 20          # a reply this large is not one the writer asked for
MAX_ITEMS = 1 << 20
MAX_LINE = 1 << 20           # status, error and length lines are short

Reply = Union[bytes, int, None, list, 'ReplyError']


class ReplyError(Exception):
    """An error reply (`-ERR ...`): returned in place of the reply, never raised by the parser."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ReplyError) and self.args == other.args

    def __hash__(self) -> int:
        return hash(self.args)


class ProtocolError(ValueError):
    """The byte stream is not RESP: the connection must be dropped."""


def _arg(value: bytes | str | int) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode('latin-1')
    return b'%d' % value


def encode(*args: bytes | str | int) -> bytes:
    """One command as a RESP array of bulk strings."""
    parts = [b'*%d\r\n' % len(args)]
    for value in args:
        data = _arg(value)
        parts += (b'$%d\r\n' % len(data), data, b'\r\n')
    return b''.join(parts)


_HSET_TEMPLATES: dict[tuple[str, ...], str] = {}


def _hset_template(names: tuple[str, ...]) -> str:
    """`$len\r\nname\r\n$%d\r\n%s\r\n` per field: only the values are formatted later."""
    template = _HSET_TEMPLATES.get(names)
    if template is None:
        template = ''.join('$%d\r\n%s\r\n$%%d\r\n%%s\r\n' % (len(n), n.replace('%', '%%'))
                           for n in names)
        if len(_HSET_TEMPLATES) < 64:           # records have one layout; bound it anyway
            _HSET_TEMPLATES[names] = template
    return template


def encode_hset(key: bytes, mapping: dict[str, str]) -> bytes:
    """HSET key field value ...: the writer's hot path, formatted in one go from a template
    per field layout.  Text is latin-1, so a str's length is its length in bytes."""
    template = _hset_template(tuple(mapping))
    values = []
    for value in mapping.values():
        values += (len(value), value)
    head = b'*%d\r\n$4\r\nHSET\r\n$%d\r\n%s\r\n' % (2 + 2 * len(mapping), len(key), key)
    return head + (template % tuple(values)).encode('latin-1')


class _Incomplete(Exception):
    pass


class ReplyParser:
    """Feed bytes as they arrive; `replies()` returns every reply complete so far."""

    def __init__(self) -> None:
        self._buf = b''
        self._pos = 0

    def feed(self, data: bytes) -> None:
        if self._pos:
            self._buf = self._buf[self._pos:] + data
            self._pos = 0
        else:
            self._buf += data

    @property
    def pending(self) -> bool:
        """Bytes fed and not consumed yet."""
        return self._pos < len(self._buf)

    def replies(self, limit: int = -1) -> list[Reply]:
        """Complete replies in order (at most `limit`, if given); ProtocolError if the
        stream is not RESP."""
        out: list[Reply] = []
        buf, pos, size = self._buf, self._pos, len(self._buf)
        while pos < size and len(out) != limit:
            kind = buf[pos]
            if kind == 43 or kind == 58:          # '+' or ':': most replies, so inline
                end = buf.find(b'\r\n', pos)
                if end < 0:
                    self._check_line_length(pos)
                    break
                if kind == 43:
                    out.append(buf[pos + 1:end])
                else:
                    try:
                        out.append(int(buf[pos + 1:end]))
                    except ValueError:
                        raise ProtocolError('bad integer %r' % buf[pos + 1:end][:20]) from None
                pos = end + 2
                continue
            try:
                reply, pos = self._parse(pos)
            except _Incomplete:
                break
            out.append(reply)
        self._pos = pos
        return out

    def _line(self, pos: int) -> tuple[bytes, int]:
        end = self._buf.find(b'\r\n', pos)
        if end < 0:
            self._check_line_length(pos)
            raise _Incomplete()
        return self._buf[pos:end], end + 2

    def take_integer_transaction(self, count: int) -> bool | None:
        """The replies to MULTI, `count` commands and EXEC, if every command was queued and
        every result is an integer (a writer's HSET/PEXPIRE/DEL batch): consumed, True.
        None: what arrived so far fits but is incomplete.  False: anything else is there
        (an error, another type): leave it to `replies()`.

        Compared as bytes, without building a reply object per command: for a 60-key batch
        this is 240 replies the reactor does not parse one by one.
        """
        head = b'+OK\r\n' + b'+QUEUED\r\n' * count + b'*%d\r\n' % count
        buf, pos = self._buf, self._pos
        available = len(buf) - pos
        if available < len(head):
            return None if head.startswith(buf[pos:]) else False
        if not buf.startswith(head, pos):
            return False
        start = pos + len(head)
        lines = buf[start:].split(b'\r\n', count)
        complete = len(lines) > count
        results = lines[:count] if complete else lines[:-1]
        if results and (b'\r\n' + b'\r\n'.join(results)).count(b'\r\n:') != len(results):
            return False
        if lines[len(results)][:1] not in (b'', b':') and not complete:
            return False
        if not complete:
            return None
        self._pos = len(buf) - len(lines[count])
        return True

    def _check_line_length(self, pos: int) -> None:
        if len(self._buf) - pos > MAX_LINE:
            raise ProtocolError('line longer than %d bytes' % MAX_LINE)

    def _number(self, text: bytes, limit: int) -> int:
        try:
            value = int(text)
        except ValueError:
            raise ProtocolError('bad length %r' % text[:20]) from None
        if value > limit:
            raise ProtocolError('length %d over %d' % (value, limit))
        return value

    def _parse(self, pos: int) -> tuple[Reply, int]:
        line, pos = self._line(pos)
        kind, rest = line[:1], line[1:]
        if kind == b'+':
            return rest, pos
        if kind == b':':
            try:
                return int(rest), pos
            except ValueError:
                raise ProtocolError('bad integer %r' % rest[:20]) from None
        if kind == b'-':
            return ReplyError(rest.decode('latin-1')), pos
        if kind == b'$':
            size = self._number(rest, MAX_BULK)
            if size < 0:
                return None, pos
            end = pos + size
            if len(self._buf) < end + 2:
                raise _Incomplete()
            if self._buf[end:end + 2] != b'\r\n':
                raise ProtocolError('bulk string not terminated')
            return self._buf[pos:end], end + 2
        if kind == b'*':
            count = self._number(rest, MAX_ITEMS)
            if count < 0:
                return None, pos
            items = []
            for _ in range(count):
                item, pos = self._parse(pos)
                items.append(item)
            return items, pos
        raise ProtocolError('unexpected reply type %r' % line[:20])
