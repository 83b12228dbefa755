"""Outside text (call-ids, tags, peer and member names) made safe for admin output.

An admin reply is lines ending with one that is exactly ``OK`` or starts with ``ERROR``
(what rtp_cluster_client and operators' scripts look for).  Call-ids and tags arrive from
SIP proxies as arbitrary bytes, so a listing that printed them as they are could end a reply
early (a call-id ``ERROR:x`` at the start of a line) or split one line in two.  `escape`
writes them on one printable line that can never be taken for the end of a reply;
`guard_line` is the last defence for whole lines; `json_line` is one line of valid JSON
whatever the strings hold.
"""
from __future__ import annotations

import json
import math
from typing import Any

__all__ = ['escape', 'is_final_line', 'guard_line', 'json_line', 'OK_LINE', 'ERROR_PREFIX']

OK_LINE = 'OK'
ERROR_PREFIX = 'ERROR'


def is_final_line(line: str) -> bool:
    """True for the line that ends an admin reply: exactly OK, or one starting with ERROR."""
    return line == OK_LINE or line.startswith(ERROR_PREFIX)


def _escape_char(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return '\\x%02x' % code
    if code < 0x10000:
        return '\\u%04x' % code
    return '\\U%08x' % code


def escape(text: str) -> str:
    """`text` on one printable line: `\\` doubled, other non-printables as \\xNN/\\uNNNN.

    A result that would read as the end of a reply (``OK``, ``ERROR...``) has its first
    character escaped too, so it stays unambiguous wherever it is printed.
    """
    if text.isprintable() and '\\' not in text:
        return guard_line(text)      # the common case, without a Python loop per character
    out = ''.join(char if char.isprintable() and char != '\\' else
                  '\\\\' if char == '\\' else _escape_char(char) for char in text)
    return guard_line(out)


def guard_line(line: str) -> str:
    """`line`, with its first character escaped if it would end an admin reply."""
    if is_final_line(line):
        return _escape_char(line[0]) + line[1:]
    return line


def _clean(value: Any) -> Any:
    """`value` with lone surrogates (from undecodable bytes) replaced by U+FFFD and
    non-finite numbers (which JSON cannot express) by null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, str):
        return value.encode('utf-8', 'surrogatepass').decode('utf-8', 'replace')
    if isinstance(value, dict):
        return {_clean(key): _clean(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(item) for item in value]
    return value


def json_line(value: Any) -> str:
    """`value` as one line of strict JSON (ASCII, no lone surrogates, no NaN)."""
    return json.dumps(_clean(value), ensure_ascii=True, allow_nan=False, separators=(',', ':'))
