"""RTPproxy control protocol: commands and replies as plain Python objects (no I/O).

Text is handled as `str` decoded with latin-1, which maps every byte to one character and
back, so call-ids and tags that are not UTF-8 survive a round trip unchanged.

`parse_command` never raises: a malformed command comes back with `error` set to the
E-code a real RTPproxy answers for it, and the caller replies with that code.
"""
from __future__ import annotations

import re
from typing import Iterable, Sequence

PROTOCOL_VERSION = '20040107'
MAX_TOKENS = 23            # per section, command word included
MAX_SECTIONS = 16          # main command + 15 `&&` subcommands
MAX_COMMAND_BYTES = 8191   # what a real RTPproxy reads of one datagram/one-shot command
# The longest cookie a real RTPproxy answers at all.  Its reply buffer holds 1023 bytes, so
# `COOKIE E5\n` fits with a cookie of up to 1019 bytes; with a longer one every reply
# overflows and the engine aborts (rtp.io 1.1.1, observed).  Such a cookie is unusable, as
# one holding a NUL is: the answer is a bare `E5`.
MAX_COOKIE_BYTES = 1019

# E-codes produced by RTPproxy itself (see the reference, section 4)
E_UNKNOWN_COMMAND = 'E0'
E_ARG_COUNT = 'E1'
E_NO_MODIFIERS = 'E2'
E_SUBCOMMAND = 'E3'
E_SYNTAX = 'E5'
E_R_MODIFIER_P = 'E6'
E_RCN_MODIFIER = 'E7'
E_D_MODIFIER = 'E8'
E_G_MODIFIER = 'E9'
E_NOTIFY_TAG = 'E10'
E_P_COUNT = 'E17'
E_I_MODIFIER = 'E18'
E_Q_MODIFIER = 'E19'
E_SESSION_NOT_FOUND = 'E50'

# Codes synthesised by the cluster (the original rtp_cluster's numbering)
E_NO_MEMBER_ONLINE = 'E999'
E_NO_CAPACITY = 'E998'
E_MEMBER_TIMEOUT = 'E997'
E_BROADCAST_MEMBER_TIMEOUT = 'E996'
E_BROADCAST_AMBIGUOUS = 'E995'
E_STATS_MEMBER_FAILED = 'E994'
E_STATS_ALL_FAILED = 'E993'
E_TOO_MANY_CONNECTIONS = 'E992'     # a stream control socket refuses one connection too many

SESSION_COMMANDS = frozenset('ULDPSRCQN')
SUBCOMMAND_HOSTS = frozenset('ULQ')

# (min, max) number of tokens in the main section, command word included
_ARG_LIMITS = {
    'U': (5, 8), 'L': (5, 6), 'D': (3, 4), 'Q': (3, 15), 'P': (5, 6), 'S': (3, 4),
    'R': (3, 4), 'C': (4, 5), 'N': (3, 4), 'I': (1, 1), 'G': (1, MAX_TOKENS), 'X': (1, 1),
}

# Separators are exactly space, TAB, CR and LF.  str.split() would also split on
# characters such as \x85 and \xa0, which are ordinary bytes in a latin-1 decoded call-id.
_SEPARATORS = re.compile('[ \t\r\n]+')
_SEPARATOR_CHARS = frozenset(' \t\r\n')
_NON_PROTOCOL_SPACE = re.compile('[\x0b\x0c\x1c-\x1f\x85\xa0]')


def tokenize(text: str) -> list[str]:
    """Split on RTPproxy's separators (runs of space, TAB, CR, LF)."""
    # Printable text holds no whitespace but the space (the common case: one C call).
    if text.isprintable() or _NON_PROTOCOL_SPACE.search(text) is None:
        return text.split()
    return [t for t in _SEPARATORS.split(text) if t]


def split_cookie(datagram: str) -> tuple[str | None, str | None]:
    """Split a datagram into (cookie, command text).

    Returns (None, None) for an empty datagram or an unusable cookie (a NUL in it, or longer
    than MAX_COOKIE_BYTES) and (cookie, None) for a cookie without a command; the answer is
    `E5` in all these cases (with the cookie when it is usable).
    """
    cookie, _, command = datagram.partition(' ')
    # The common case, a printable cookie and one space before the command: no regex needed.
    if (command and command[0] not in _SEPARATOR_CHARS and cookie.isprintable()
            and 0 < len(cookie) <= MAX_COOKIE_BYTES):
        return cookie, command
    text = datagram.lstrip(' \t\r\n')
    if not text:
        return None, None
    match = _SEPARATORS.search(text)
    cookie = text if match is None else text[:match.start()]
    if '\x00' in cookie or len(cookie) > MAX_COOKIE_BYTES:
        return None, None          # a bare E5: no usable cookie
    if match is None:
        return text, None
    command = text[match.end():]
    return cookie, (command if command else None)


# position of the from-tag in a session command's args (1 for the others)
_FROM_TAG_INDEX = {'U': 3, 'L': 3, 'P': 3, 'C': 2}


class Command:
    """One parsed control command.

    `word` is the first token as written (letter + modifiers), `args` the rest of the main
    section, `subcommands` the token lists of each `&&` section.  Until one of the
    modifying methods is used, `serialize()` returns the text exactly as received.
    """

    __slots__ = ('text', 'letter', 'mods', 'args', 'subcommands', 'error', '_dirty')

    def __init__(self, text: str, letter: str, mods: str, args: list[str],
                 subcommands: list[list[str]], error: str | None = None) -> None:
        self.text = text
        self.letter = letter
        self.mods = mods
        self.args = args
        self.subcommands = subcommands
        self.error = error
        self._dirty = False

    # --- fields -------------------------------------------------------------------------

    @property
    def call_id(self) -> str | None:
        if self.letter in SESSION_COMMANDS and self.args:
            return self.args[0]
        return None

    @property
    def _tag_index(self) -> int:
        return _FROM_TAG_INDEX.get(self.letter, 1)

    @property
    def from_tag(self) -> str | None:
        i = self._tag_index
        return self.args[i] if self.letter in SESSION_COMMANDS and len(self.args) > i else None

    @property
    def to_tag(self) -> str | None:
        if self.letter not in SESSION_COMMANDS:
            return None
        if self.letter == 'U':
            return self.args[4] if len(self.args) in (5, 7) else None
        i = self._tag_index + 1
        return self.args[i] if len(self.args) > i else None

    @property
    def remote_address(self) -> str | None:
        return self.args[1] if self.letter in ('U', 'L') and len(self.args) > 1 else None

    @property
    def notify_socket(self) -> str | None:
        if self.letter == 'U' and len(self.args) >= 6:
            return self.args[-2]
        return None

    @property
    def notify_tag(self) -> str | None:
        if self.letter == 'U' and len(self.args) >= 6:
            return self.args[-1]
        return None

    @property
    def is_new_session_offer(self) -> bool:
        """A `U` without to-tag: the command that creates a session."""
        return self.letter == 'U' and len(self.args) in (4, 6)

    # --- U/L modifiers --------------------------------------------------------------------

    def modifier_value(self, letter: str) -> str | None:
        """The value of a value-bearing U/L modifier (`l`/`r`), case-insensitively."""
        if self.letter not in ('U', 'L'):
            return None
        for mod in split_ul_modifiers(self.mods):
            if mod[0].lower() == letter:
                return strip_address_brackets(mod[1:])
        return None

    @property
    def local_address(self) -> str | None:
        return self.modifier_value('l')

    @property
    def route_address(self) -> str | None:
        return self.modifier_value('r')

    # --- modifications ------------------------------------------------------------------

    def copy(self) -> 'Command':
        return Command(self.text, self.letter, self.mods, list(self.args),
                       [list(s) for s in self.subcommands], self.error)

    def with_local_address(self, address: str) -> 'Command':
        """A copy that asks the member to allocate on `address` (its LAN address).

        Any `l`/`r` modifier of the client is dropped, as the original cluster did.
        """
        new = self.copy()
        kept = [m for m in split_ul_modifiers(self.mods) if m[0] not in 'lLrR']
        # single letters first: a digit such as `6` must not run into a value (`c0,8` + `6`)
        kept.sort(key=len)
        kept = [m for m in kept if len(m) == 1] + [m for m in kept if len(m) > 1]
        value = '[%s]' % address if ':' in address else address
        new.mods = ''.join(kept) + 'L' + value
        new._dirty = True
        return new

    def without_notify(self) -> 'Command':
        new = self.copy()
        if new.notify_socket is not None:
            del new.args[-2:]
            new._dirty = True
        return new

    def with_notify(self, socket: str, tag: str) -> 'Command':
        new = self.without_notify()
        new.args += [socket, tag]
        new._dirty = True
        return new

    def as_lookup(self) -> 'Command':
        """`U cid addr port F T` as the equivalent lookup `L cid addr port T F`.

        Notify arguments and subcommands are dropped: a lookup must not change anything.
        """
        cid, addr, port, ftag, ttag = self.args[:5]
        new = Command('', 'L', self.mods, [cid, addr, port, ttag, ftag], [])
        new._dirty = True
        return new

    def serialize(self) -> str:
        if not self._dirty:
            return self.text
        parts = [self.letter + self.mods] + self.args
        for sub in self.subcommands:
            parts.append('&&')
            parts.extend(sub)
        return ' '.join(parts)

    def __repr__(self) -> str:
        return 'Command(%r)' % (self.serialize() if self.error is None else self.error)


def parse_command(text: str) -> Command:
    """Parse one command (without cookie).  Never raises; see `Command.error`."""
    if '\x00' in text:
        return _failed(text, E_SYNTAX)
    tokens = tokenize(text)
    if not tokens:
        return _failed(text, E_SYNTAX)
    sections = _split_sections(tokens)
    if sections is None:
        return _failed(text, E_SYNTAX)
    main = sections[0]
    word = main[0]
    letter = word[0].upper()
    cmd = Command(text, letter, word[1:], main[1:], sections[1:])
    cmd.error = _check(cmd)
    return cmd


def _failed(text: str, code: str) -> Command:
    return Command(text, '', '', [], [], code)


def _split_sections(tokens: list[str]) -> list[list[str]] | None:
    if '&&' not in tokens:
        return [tokens] if len(tokens) <= MAX_TOKENS else None
    sections: list[list[str]] = [[]]
    for token in tokens:
        if token == '&&':
            sections.append([])
        else:
            sections[-1].append(token)
    if (len(sections) > MAX_SECTIONS or any(not s for s in sections)
            or any(len(s) > MAX_TOKENS for s in sections)):
        return None
    return sections


def _check(cmd: Command) -> str | None:
    """The E-code RTPproxy gives, checked in its order: letter, count, modifiers, `&&`."""
    letter, mods, ntokens = cmd.letter, cmd.mods, len(cmd.args) + 1
    if letter == 'V':
        wanted = 2 if mods[:1] in ('F', 'f') else 1
        if ntokens != wanted:
            return E_ARG_COUNT
        if mods[wanted - 1:]:
            return E_NO_MODIFIERS
        return E_SUBCOMMAND if cmd.subcommands else None
    limits = _ARG_LIMITS.get(letter)
    if limits is None:
        return E_UNKNOWN_COMMAND
    if not limits[0] <= ntokens <= limits[1]:
        return E_ARG_COUNT
    if letter in _NO_MODIFIER_COMMANDS and mods:
        return E_NO_MODIFIERS
    if cmd.subcommands and (letter not in SUBCOMMAND_HOSTS or not _subcommands_valid(cmd)):
        return E_SUBCOMMAND
    mod_error = _MODIFIER_CHECKS[letter](mods)
    if mod_error:
        return mod_error
    if letter == 'U' and ntokens >= 7 and not _valid_percent_encoding(cmd.args[-1]):
        return E_NOTIFY_TAG
    return None


_NO_MODIFIER_COMMANDS = frozenset('SX')


def _subcommands_valid(cmd: Command) -> bool:
    """The shape of each `&&` subcommand (its values are checked by the member)."""
    dual_leg = cmd.letter == 'U' and len(cmd.args) in (5, 7)    # U with a to-tag
    for sub in cmd.subcommands:
        word, args = sub[0], sub[1:]
        kind, mods = word[0].upper(), word[1:]
        if kind == 'D':
            ok = mods in ('', 'w', 'W') and not args
        elif kind == 'S':
            ok = mods in ('', 'r', 'R') and len(args) == 1 and '=' in args[0]
        elif kind in ('L', 'C'):
            ok = dual_leg
        else:
            ok = kind == 'M'
        if not ok:
            return False
    return True


def _only(allowed: str, code: str):
    allowed_set = frozenset(allowed)

    def check(mods: str) -> str | None:
        return None if allowed_set.issuperset(mods) else code
    return check


def _check_r_modifiers(mods: str) -> str | None:
    for c in mods:                     # the first bad letter decides, as in RTPproxy
        if c in 'pP':
            return E_R_MODIFIER_P
        if c not in 'sS':
            return E_RCN_MODIFIER
    return None


def _check_n_modifiers(mods: str) -> str | None:
    if mods in ('', 'a', 'A'):
        return None
    return E_R_MODIFIER_P if mods[0] in 'aA' else E_RCN_MODIFIER


def _check_p_count(mods: str) -> str | None:
    if mods == '':
        return None
    return None if _SIGNED_INT.fullmatch(mods) else E_P_COUNT


def _no_check(mods: str) -> str | None:
    return None


_MODIFIER_CHECKS = {
    # U/L modifiers are checked by the member: new RTPproxy versions add modifiers and
    # the cluster must pass unknown ones through verbatim.
    'U': _no_check, 'L': _no_check,
    'D': _only('wW', E_D_MODIFIER),
    'Q': _only('vV', E_Q_MODIFIER),
    'P': _check_p_count,
    'S': _no_check,            # S and X take no modifiers: checked earlier (E2)
    'R': _check_r_modifiers,
    'C': _only('sSpP', E_RCN_MODIFIER),
    'N': _check_n_modifiers,
    'I': _only('bBlL', E_I_MODIFIER),
    'G': _only('vV', E_G_MODIFIER),
    'X': _no_check,
}

_SIGNED_INT = re.compile('[-+]?[0-9]+')
_UNSIGNED_INT = re.compile('[0-9]+')
_PERCENT_ESCAPE = re.compile('%(?![0-9A-Fa-f]{2})')


def _valid_percent_encoding(tag: str) -> bool:
    return '%' not in tag or _PERCENT_ESCAPE.search(tag) is None


_UL_MODIFIER = re.compile(
    r'[lLrR](?:\[[^\]]*\]|\{[^}]*\}|[0-9.]*)'   # local / route address: [v6], {label}, v4
    r'|[zZ][0-9]*'                              # re-packetization
    r'|[cC][0-9,]*'                             # codecs
    r'|.', re.S)                                # any other single letter, kept verbatim


def split_ul_modifiers(mods: str) -> list[str]:
    """Split a U/L modifier string into its modifiers (`'Uc0,8Z20L1.2.3.4'` → c0,8 / Z20 / L1.2.3.4)."""
    return _UL_MODIFIER.findall(mods)


def notify_socket_path(spec: str) -> str:
    """`unix:/path` and `/path` name the same notification socket."""
    return spec[5:] if spec.startswith('unix:') else spec


_TCP_NOTIFY_SOCKET = re.compile(r'tcp:(\[[0-9A-Fa-f:.]+\]|[0-9A-Za-z.-]+):([0-9]{1,5})')


def parse_tcp_notify_socket(spec: str) -> tuple[str, int] | None:
    """`tcp:HOST:PORT` (IPv6 in brackets) → (host, port); None for anything else.

    `tcp:%%CC_SELF%%:PORT` is not a target the cluster can reach: None as well.
    """
    match = _TCP_NOTIFY_SOCKET.fullmatch(spec)
    if match is None:
        return None
    port = int(match.group(2))
    if not 0 < port < 65536:
        return None
    return strip_address_brackets(match.group(1)), port


def strip_address_brackets(value: str) -> str:
    if value.startswith('[') and value.endswith(']'):
        return value[1:-1]
    return value


# --- replies ------------------------------------------------------------------------------

def is_error(body: str) -> bool:
    return body[:1] in ('E', 'e')


def is_positive_ul_reply(body: str) -> bool:
    """A U/L reply that names a port (not an error, not `0` = session not found)."""
    if not body or is_error(body):
        return False
    tokens = tokenize(body)
    return bool(tokens) and _UNSIGNED_INT.fullmatch(tokens[0]) is not None and int(tokens[0]) != 0


def parse_ul_reply(body: str) -> tuple[int, str | None, bool] | None:
    """`port [addr [6]]` → (port, addr, ipv6); None for `0`, errors and garbage."""
    tokens = tokenize(body)
    if not tokens or _UNSIGNED_INT.fullmatch(tokens[0]) is None:
        return None
    port = int(tokens[0])
    if port == 0 or port > 65535:
        return None
    addr = tokens[1] if len(tokens) > 1 else None
    ipv6 = len(tokens) > 2 and tokens[2].startswith('6')
    return port, addr, ipv6


INFO_FIELDS = ('sessions created', 'active sessions', 'active streams',
               'packets received', 'packets transmitted')
# `I` fields that only grow on one RTPproxy; the other two are gauges (they go up and down).
INFO_COUNTERS = ('sessions created', 'packets received', 'packets transmitted')
INFO_GAUGES = ('active sessions', 'active streams')
# `G` names that are rates, not running totals (every other `G` name only grows).
STATS_GAUGES = frozenset({'pps_in'})


def parse_info(body: str) -> dict[str, int] | None:
    """Parse the `I`/`Ib` reply; None unless every one of the five counters is present."""
    values: dict[str, int] = {}
    for line in body.splitlines():
        name, sep, value = line.partition(':')
        value = value.strip()
        if sep and name in INFO_FIELDS and _SIGNED_INT.fullmatch(value):
            values[name] = int(value)
    return values if len(values) == len(INFO_FIELDS) else None


def format_info(values: dict[str, int], with_load: bool = False, load: float = 0.0) -> str:
    lines = ['%s: %d' % (name, values.get(name, 0)) for name in INFO_FIELDS]
    if with_load:
        lines.append('average load: %f' % load)
    return '\n'.join(lines)


Number = int | float


def parse_stats_reply(names: Sequence[str], body: str, verbose: bool) -> list[Number] | None:
    """Values of a `G`/`Gv` reply in request order; None if the reply does not match the names."""
    tokens = tokenize(body)
    if len(tokens) != len(names):
        return None
    values: list[Number] = []
    for name, token in zip(names, tokens):
        if verbose:
            got_name, sep, token = token.partition('=')
            if not sep or got_name != name:
                return None
        value = _parse_number(token)
        if value is None:
            return None
        values.append(value)
    return values


_DECIMAL = re.compile('-?[0-9]+(?:\\.[0-9]*)?')


def _parse_number(token: str) -> Number | None:
    if _DECIMAL.fullmatch(token) is None:
        return None
    return float(token) if '.' in token else int(token)


def format_stats(names: Sequence[str], values: Iterable[Number], verbose: bool) -> str:
    texts = [('%f' % v) if isinstance(v, float) else str(v) for v in values]
    if verbose:
        return ' '.join('%s=%s' % pair for pair in zip(names, texts))
    return ' '.join(texts)


def sum_stats(rows: Iterable[Sequence[Number]]) -> list[Number]:
    total: list[Number] | None = None
    for row in rows:
        total = list(row) if total is None else [a + b for a, b in zip(total, row)]
    return total or []


def percent_unquote(text: str) -> str:
    """%-decoding as RTPproxy does for notify tags (latin-1 safe)."""
    if '%' not in text:
        return text
    return re.sub('%([0-9A-Fa-f]{2})', lambda m: chr(int(m.group(1), 16)), text)


_SAFE_CHARS = frozenset('ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~/')


def percent_quote(text: str) -> str:
    return ''.join(c if c in _SAFE_CHARS else '%%%02X' % ord(c) for c in text)
