"""Finding the Redis master through Sentinel, without I/O.

The adapters ask; this module decides: the <sentinel> configuration and its grammar, which
sentinel to ask next (the one that answered last first, then the others in the configured
order), what a `SENTINEL get-master-addr-by-name` reply means, what a `+switch-master`
message means for us, and when a data node is not (or no longer) the master: it answers
`READONLY`, or `INFO replication` says `role:slave`.  Any of these sends the writer, the
subscriber and the reader back to the sentinels.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Iterable

from .endpoints import check_host

__all__ = ['SentinelConfig', 'Address', 'SENTINEL_TEXT', 'parse_sentinel_addresses',
           'check_master_name', 'SentinelRing', 'Discovery', 'MasterReplyError',
           'parse_master_reply', 'parse_switch_master', 'is_readonly', 'replication_role',
           'not_master_reason', 'format_address', 'SWITCH_CHANNEL']

Address = tuple[str, int]
SENTINEL_TEXT = 'HOST:PORT or [IPV6]:PORT, separated by white space'
SWITCH_CHANNEL = '+switch-master'
DEFAULT_SENTINEL_PORT = 26379
MAX_SENTINELS = 64
_READONLY = re.compile(r'(?:^|: )READONLY\b')
_HOST_PORT = re.compile(r'(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:\[\]]+)):(?P<port>[0-9]{1,5})')


@dataclass(frozen=True)
class SentinelConfig:
    """<sentinel master="NAME" [db="N"] [tls="yes"]>HOST:PORT ...</sentinel>."""

    master: str
    addresses: tuple[Address, ...]
    db: int = 0
    tls: bool = False


def format_address(address: Address) -> str:
    host, port = address
    return '[%s]:%d' % (host, port) if ':' in host else '%s:%d' % (host, port)


def parse_sentinel_addresses(text: str) -> tuple[Address, ...]:
    """The sentinels of <sentinel>: HOST:PORT tokens, distinct; raises ValueError."""
    tokens = text.split()
    if not tokens:
        raise ValueError(f'no sentinel address; expected {SENTINEL_TEXT}')
    if len(tokens) > MAX_SENTINELS:
        raise ValueError(f'{len(tokens)} sentinels; expected at most {MAX_SENTINELS}')
    addresses: list[Address] = []
    for token in tokens:
        address = _parse_one(token)
        if address in addresses:
            raise ValueError(f'"{token}" is listed twice; expected distinct sentinels')
        addresses.append(address)
    return tuple(addresses)


def _parse_one(token: str) -> Address:
    match = _HOST_PORT.fullmatch(token)
    if match is None:
        raise ValueError(f'"{token[:60]}" is not HOST:PORT; expected {SENTINEL_TEXT} '
                         f'(sentinels usually listen on {DEFAULT_SENTINEL_PORT})')
    host = match.group('v6') or match.group('host')
    try:
        check_host(host)
    except ValueError as e:
        raise ValueError(f'"{token[:60]}": {e}') from None
    port = int(match.group('port'))
    if not 1 <= port <= 65535:
        raise ValueError(f'"{token[:60]}": the port is not valid; expected 1-65535')
    return host, port


def check_master_name(text: str) -> str:
    """The master name sentinels monitor: printable, no white space (it is a word of their
    protocol and of their configuration file)."""
    if not text:
        raise ValueError('the master name is empty; expected the name of the sentinels\' '
                         '"sentinel monitor NAME ..." line')
    if any(c.isspace() or unicodedata.category(c) == 'Cc' for c in text):
        raise ValueError(f'master name "{text[:40]}" contains white space or control '
                         'characters; expected one word')
    return text


# --- which sentinel to ask ------------------------------------------------------------------

class SentinelRing:
    """The sentinels in the order they are asked: the last one that answered first."""

    def __init__(self, addresses: Iterable[Address]) -> None:
        self.addresses = list(addresses)
        if not self.addresses:
            raise ValueError('no sentinel')

    def order(self) -> list[Address]:
        return list(self.addresses)

    def answered(self, address: Address) -> None:
        """`address` gave a usable answer: ask it first next time."""
        if address in self.addresses:
            self.addresses.remove(address)
            self.addresses.insert(0, address)


class MasterReplyError(ValueError):
    """A sentinel's answer that names no usable master."""


def parse_master_reply(reply: object, master: str) -> Address:
    """The (host, port) of a `SENTINEL get-master-addr-by-name` reply; MasterReplyError
    when the sentinel does not know `master` or the reply is not an address."""
    if reply is None:
        raise MasterReplyError(f'does not monitor a master named "{master}"')
    if isinstance(reply, Exception):
        raise MasterReplyError(f'refused the question: {reply}')
    if not isinstance(reply, list) or len(reply) != 2:
        raise MasterReplyError(f'answered {_show(reply)}; expected [host, port]')
    host, port = (_text(x) for x in reply)
    if host is None or port is None or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise MasterReplyError(f'answered {_show(reply)}; expected [host, port]')
    try:
        check_host(host)
    except ValueError as e:
        raise MasterReplyError(f'answered a bad host: {e}') from None
    return host, int(port)


class Discovery:
    """One round of asking the sentinels in turn until one names the master."""

    def __init__(self, ring: SentinelRing, master: str) -> None:
        self.ring = ring
        self.master = master
        self._left = ring.order()
        self.errors: list[str] = []

    def next(self) -> Address | None:
        """The sentinel to ask now, or None when every one was asked in this round."""
        return self._left.pop(0) if self._left else None

    def failed(self, sentinel: Address, why: str) -> None:
        self.errors.append('%s: %s' % (format_address(sentinel), why))

    def answered(self, sentinel: Address, reply: object) -> Address | None:
        """The master's address if `reply` names one (and `sentinel` is asked first from
        now on); None after recording why not."""
        try:
            address = parse_master_reply(reply, self.master)
        except MasterReplyError as e:
            self.failed(sentinel, str(e))
            return None
        self.ring.answered(sentinel)
        return address

    def summary(self) -> str:
        """Why the round found no master, for the log and `ls redis`."""
        return 'no sentinel named the master "%s" (%s)' % (self.master, '; '.join(self.errors))


# --- what the sentinels and the data nodes tell us ----------------------------------------

def parse_switch_master(data: str, master: str) -> Address | None:
    """The new master's address from a `+switch-master` message about `master`
    ("NAME OLD-IP OLD-PORT NEW-IP NEW-PORT"); None for another master or garbage."""
    words = data.split()
    if len(words) != 5 or words[0] != master:
        return None
    host, port = words[3], words[4]
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        return None
    try:
        check_host(host)
    except ValueError:
        return None
    return host, int(port)


def is_readonly(error: str) -> bool:
    """A write refused because the node is a replica: Redis's `-READONLY ...` error, maybe
    behind a prefix of ours ('write failed: READONLY ...')."""
    return _READONLY.search(error) is not None


def replication_role(info: str) -> str | None:
    """`role` of an `INFO replication` reply ('master', 'slave'), None if it has none."""
    for line in info.splitlines():
        if line.startswith('role:'):
            return line[5:].strip()
    return None


def not_master_reason(info: str) -> str | None:
    """Why a node whose `INFO replication` is `info` must not be written to; None if it is
    a master."""
    role = replication_role(info)
    if role == 'master':
        return None
    if role is None:
        return 'INFO replication names no role'
    return 'the node is a replica (role:%s), not the master' % role


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        return value.decode('latin-1')
    return value if isinstance(value, str) else None


def _show(value: object) -> str:
    return repr(value)[:80]
