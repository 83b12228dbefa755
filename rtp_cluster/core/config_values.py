"""The values of the configuration: checks that turn an element's text into its value (or
raise ValueError with what was expected) and the writers that turn a value back into text.

`config_schema` names one of these per row of its tables.
"""
from __future__ import annotations

import re
import unicodedata
from typing import Any, Callable
from urllib.parse import SplitResult, parse_qsl, urlsplit

from .endpoints import CONFIG_PROTOCOLS, check_host, split_host_port, unix_path
from .log import LEVELS
from .replycache import MIN_MAX_BYTES as MIN_REPLY_CACHE_BYTES
from .sentinel import SentinelConfig, format_address

MEMBER_STATUSES = ('ACTIVE', 'SUSPENDED')
LOG_LEVELS = LEVELS        # the core log facade's levels
REPLY_CACHE_TEXT = f'a number of bytes, at least {MIN_REPLY_CACHE_BYTES}'
LOG_LEVEL_TEXT = 'debug, info, warn, error or critical'
HTTP_ADDRESS_TEXT = 'HOST:PORT or [IPV6]:PORT, e.g. 127.0.0.1:9180'

_DIGITS = re.compile(r'[0-9]+')
_IDENT = re.compile(r'[A-Za-z0-9._-]{1,64}')
_ENV_NAME = re.compile(r'[A-Za-z_][A-Za-z0-9_]*')
IDENT_TEXT = '1-64 characters of A-Z a-z 0-9 . _ -'
REDIS_URL_TEXT = 'redis://HOST[:PORT][/DB], rediss://HOST[:PORT][/DB] or unix:///PATH[?db=N]'

def shorten(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[:limit] + '...'


def check_name(text: str) -> str:
    # Names are printed on admin and log lines: a control character would break or forge one.
    if any(unicodedata.category(c) == 'Cc' for c in text):
        raise ValueError(f'{shorten(text)!r} contains control characters; expected printable text')
    return text


def check_protocol(text: str) -> str:
    proto = text.lower()
    if proto not in CONFIG_PROTOCOLS:
        raise ValueError(f'"{text}" is not a protocol; expected udp, udp6 or unix')
    return proto


def positive_int(text: str) -> int:
    value = non_negative_int(text)
    if value == 0:
        raise ValueError(f'"{text}" is not a positive integer')
    return value


def non_negative_int(text: str) -> int:
    if not _DIGITS.fullmatch(text):
        raise ValueError(f'"{shorten(text)}" is not a positive integer')
    significant = text.lstrip('0')
    # Also keeps int() away from its limit on very long digit strings.
    if len(significant) > 18:
        raise ValueError(f'"{shorten(text)}" is too large; expected at most 18 digits')
    return int(significant or '0')


def int_between(low: int, high: int) -> Callable[[str], int]:
    """A parser of whole numbers from `low` to `high` (a tunable's safe range)."""
    def parse(text: str) -> int:
        value = non_negative_int(text)
        if not low <= value <= high:
            raise ValueError(f'"{shorten(text)}" is out of range; expected {low} to {high}')
        return value
    return parse


def reply_cache_bytes(text: str) -> int:
    value = non_negative_int(text)
    if value < MIN_REPLY_CACHE_BYTES:
        raise ValueError(f'{value} is too small; expected {REPLY_CACHE_TEXT}')
    return value


def check_status(text: str) -> str:
    status = text.upper()
    if status not in MEMBER_STATUSES:
        raise ValueError(f'"{text}" is not a status; expected ACTIVE or SUSPENDED')
    return status


def check_host_text(text: str) -> str:
    check_host(text)
    return text


def check_socket_prefix(text: str) -> str:
    path = text[5:] if text[:5].lower() == 'unix:' else text
    if not path.startswith('/'):
        raise ValueError(f'"{text}" is not an absolute path; expected /PATH or unix:/PATH')
    return text


def check_abs_path(text: str) -> str:
    if not text.startswith('/'):
        raise ValueError(f'"{text}" is not an absolute path; expected /PATH')
    return text


def check_ident(text: str) -> str:
    if not _IDENT.fullmatch(text):
        raise ValueError(f'"{shorten(text)}" is not valid; expected {IDENT_TEXT}')
    return text


def check_env_name(text: str) -> str:
    if not _ENV_NAME.fullmatch(text):
        raise ValueError(f'"{text}" is not an environment variable name; '
                         'expected letters, digits and _ not starting with a digit')
    return text


def yes_no(text: str) -> bool:
    answer = text.lower()
    if answer not in ('yes', 'no'):
        raise ValueError(f'"{text}" is not yes or no')
    return answer == 'yes'


def parse_peers(text: str) -> tuple[str, ...]:
    tokens = text.split()
    if [t.lower() for t in tokens] == ['auto']:
        return ()
    seen: set[str] = set()
    for token in tokens:
        if token.lower() == 'auto':
            raise ValueError('"auto" mixed with instance ids; '
                             'expected either auto or a list of ids')
        check_ident(token)
        if token in seen:
            raise ValueError(f'instance id "{token}" is listed twice; expected distinct ids')
        seen.add(token)
    return tuple(tokens)


def check_redis_url(text: str) -> str:
    try:
        parts = urlsplit(text)
        scheme = parts.scheme.lower()
        if scheme in ('redis', 'rediss'):
            _check_redis_tcp_url(parts)
        elif scheme == 'unix':
            _check_redis_unix_url(parts)
        else:
            raise ValueError(f'scheme "{parts.scheme}" is not supported; '
                             f'expected {REDIS_URL_TEXT}')
        _check_redis_query(parts.query)
    except ValueError as e:
        raise ValueError(f'"{text}": {e}') from None
    return text


def _check_redis_tcp_url(parts: SplitResult) -> None:
    if parts.password is not None:
        raise ValueError('a password must not be written in the url; '
                         'expected <password_file> or <password_env>')
    check_host(parts.hostname or '')
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise ValueError('the port is not valid; expected 1-65535')
    if parts.path not in ('', '/') and not re.fullmatch(r'/[0-9]{1,5}', parts.path):
        raise ValueError(f'database "{parts.path[1:]}" is not valid; expected a number')


def _check_redis_unix_url(parts: SplitResult) -> None:
    if parts.netloc:
        raise ValueError(f'unexpected host "{parts.netloc}"; expected unix:///PATH')
    unix_path(parts.path)


def _check_redis_query(query: str) -> None:
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key != 'db':
            raise ValueError(f'query parameter "{key}" is not supported; expected only db')
        if not re.fullmatch(r'[0-9]{1,5}', value):
            raise ValueError(f'database "{value}" is not valid; expected a number')


def parse_log_level(text: str) -> str:
    """A log level name, any case (``warning`` is taken for ``warn``); raises ValueError."""
    level = text.strip().lower()
    level = 'warn' if level == 'warning' else level
    if level not in LOG_LEVELS:
        raise ValueError(f'unknown log level "{shorten(text)}"; expected {LOG_LEVEL_TEXT}')
    return level


def log_level_if_not_default(config: Any) -> str | None:
    return None if config.log_level == 'info' else config.log_level


def http_address(http: Any) -> str:
    return http.address


def write_yes_no(value: bool) -> str:
    return 'yes' if value else 'no'


def write_peers(peers: tuple[str, ...]) -> str:
    return ' '.join(peers) if peers else 'auto'


def whole(obj: Any) -> Any:
    return obj


def parse_inbound_address(text: str) -> tuple[str, int]:
    """`HOST:PORT` or `[IPV6]:PORT` of the notify relay: (host, port), the port mandatory."""
    return split_host_port(text, None)


def write_sentinels(sentinel: SentinelConfig) -> str:
    return ' '.join(format_address(address) for address in sentinel.addresses)


def sentinel_master(sentinel: SentinelConfig) -> str:
    return sentinel.master


def sentinel_db(sentinel: SentinelConfig) -> str:
    return str(sentinel.db)


def sentinel_tls(sentinel: SentinelConfig) -> str:
    return write_yes_no(sentinel.tls)


def write_inbound(notify: Any) -> str:
    host = notify.inbound_host
    return f'[{host}]:{notify.inbound_port}' if ':' in host else f'{host}:{notify.inbound_port}'
