"""The configuration schema: one table per element of the XML configuration file.

Each child of an element is one `Child` row: its tag, what a valid value looks like, the
help text, how the text is read (`parse`, raising ValueError) and written back, the
attribute of the configuration object it fills, whether it is required and its default,
and, for members, how it is given to the admin command ``modify CLUSTER add``.  The
reader, the writer, the structure checks, the ``modify add`` keys and the documentation
lists in `rtp_cluster.core.config` and the admin adapter are all driven by these rows; the
shipped ``rtp_cluster.dtd`` must declare the same elements (tests/unit/test_config_schema.py).

Adding a member, cluster or relay field: one `Child` row in `ELEMENTS['rtpproxy']`,
`ELEMENTS['rtp_cluster']` or `ELEMENTS['disconnect_notify']` and one DTD line; the
configuration classes (`config_class`) are generated from the rows.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from .config_values import (HTTP_ADDRESS_TEXT, IDENT_TEXT, LOG_LEVELS, LOG_LEVEL_TEXT,
                            MEMBER_STATUSES, REDIS_URL_TEXT, REPLY_CACHE_TEXT, check_abs_path,
                            check_env_name, check_host_text, check_ident, check_name,
                            check_protocol, check_redis_url, check_socket_prefix, check_status,
                            http_address, int_between, log_level_if_not_default,
                            non_negative_int, parse_inbound_address, parse_log_level,
                            parse_peers, positive_int, reply_cache_bytes, sentinel_db,
                            sentinel_master, sentinel_tls, whole, write_inbound,
                            write_peers, write_sentinels, write_yes_no, yes_no)
from .endpoints import Endpoint
from .replycache import DEFAULT_MAX_BYTES as DEFAULT_REPLY_CACHE_BYTES
from .sentinel import SentinelConfig, parse_sentinel_addresses

__all__ = [
    'Child', 'AddKey', 'Attribute', 'ELEMENTS', 'ATTRIBUTES', 'ROOT', 'children', 'child',
    'leaf_tags', 'expected', 'config_class', 'attribute_names', 'add_keys', 'required_add_keys',
    'add_usage', 'add_problem', 'describe',
    'render_text', 'render_man', 'local_host_name', 'MEMBER_STATUSES', 'CAPACITY_LIMITS',
    'LOG_LEVELS', 'parse_log_level', 'HTTP_ADDRESS_TEXT', 'holds_text', 'SENTINEL_ELEMENT_TEXT',
]

ROOT = 'rtp_cluster_config'
CAPACITY_LIMITS = ('soft', 'hard')
SENTINEL_ELEMENT_TEXT = '<sentinel master="NAME">HOST:PORT HOST:PORT ...</sentinel>'


def local_host_name() -> str:
    """This machine's host name, as gethostname(2) returns it (the default instance id)."""
    return os.uname().nodename


# --------------------------------------------------------------------------
# Rows

@dataclass(frozen=True)
class AddKey:
    """How a member field is given to ``modify CLUSTER add KEY=VALUE,...``."""

    rank: int                          # position in the key list (the original's order)
    placeholder: str                   # the value in the usage text
    required: bool
    problem: str = '{key}: {error}'    # the reply for a refused value ({key} {text} {error})


@dataclass(frozen=True)
class Child:
    """One child element: how it is checked, read, written back and documented."""

    tag: str
    expected: str                      # what a valid value looks like, for error messages
    help: str
    parse: Callable[[str], Any] | None = None    # text -> value; ValueError names the problem
    field: str | None = None           # attribute of the configuration object it fills
    type: Any = str                    # that attribute's type
    # instead of `field`: the parsed value is a tuple spread over these (attribute, type)s
    parts: tuple[tuple[str, Any], ...] = ()
    required: bool = False
    default: Any = None                # the attribute's value when the element is absent
    default_factory: Callable[[], Any] | None = None
    many: bool = False                 # may repeat
    container: bool = False            # has child elements or attributes, not text
    value_of: Callable[[Any], Any] | None = None   # config object -> value (default: field)
    write: Callable[[Any], str] = str  # value -> element text
    add: AddKey | None = None

    def text_of(self, obj: Any) -> str | None:
        """The element text written back for `obj`, or None when the element is omitted."""
        value = self.value_of(obj) if self.value_of else getattr(obj, self.field or '')
        return None if value is None else self.write(value)


@dataclass(frozen=True)
class Attribute:
    """An attribute of an element without content."""

    name: str
    expected: str
    help: str
    default: str
    value_of: Callable[[Any], Any] = str    # the element's value -> the attribute text


# --------------------------------------------------------------------------
# The tables

_NAME = 'a non-empty name'
_PROTOCOL = 'udp, udp6 or unix'
_ADDRESS = 'HOST[:PORT] or [IPV6][:PORT] for udp/udp6, an absolute path for unix'
_HOST = 'an IP address or host name'
_POSITIVE = 'a positive integer'
_ABS_PATH = 'an absolute path'
_INT_PROBLEM = '{key} "{text}" is not a positive integer'


def _endpoint_protocol(obj: Any) -> str:
    return obj.endpoint.protocol


def _endpoint_address(endpoint: Endpoint) -> str:
    return endpoint.address


def _name(help_text: str, add: AddKey | None = None) -> Child:
    return Child('name', _NAME, help_text, check_name, 'name', required=True, add=add)


def _protocol(help_text: str, add: AddKey | None = None) -> Child:
    return Child('protocol', _PROTOCOL, help_text, check_protocol, required=True,
                 value_of=_endpoint_protocol, write=str.upper, add=add)


def _address(help_text: str, add: AddKey | None = None) -> Child:
    # read together with <protocol> (the address grammar depends on it) into `endpoint`
    return Child('address', _ADDRESS, help_text, None, 'endpoint', Endpoint, required=True,
                 write=_endpoint_address, add=add)


def _host(tag: str, help_text: str, rank: int) -> Child:
    return Child(tag, _HOST, help_text, check_host_text, tag, str | None,
                 add=AddKey(rank, 'HOST', False))


def _tunable(tag: str, low: int, high: int, unit: str, help_text: str, default: int,
             write_default: bool = True) -> Child:
    return Child(tag, f'an integer from {low} to {high} ({unit})',
                 f'{help_text} (default: {default})', int_between(low, high), tag, int,
                 default=default,
                 value_of=None if write_default else _unless_default(tag, default))


def _unless_default(field: str, default: Any) -> Callable[[Any], Any]:
    """Written back only when set, so that a file of the original's format stays one."""
    def value_of(obj: Any) -> Any:
        value = getattr(obj, field)
        return None if value == default else value
    return value_of


ELEMENTS: dict[str, tuple[Child, ...]] = {
    ROOT: (
        Child('rtp_cluster', 'at least one <rtp_cluster>', 'one cluster', field='clusters',
              many=True, container=True),
        Child('redis', 'a <redis> element', 'session sharing through Redis', field='redis',
              container=True),
        Child('http', 'an <http> element',
              'HTTP listener: Prometheus /metrics, /health, the status page', field='http',
              container=True),
        Child('log_level', LOG_LEVEL_TEXT, 'the log level (default: info)', parse_log_level,
              'log_level', default='info', value_of=log_level_if_not_default),
    ),
    'rtp_cluster': (
        _name('the cluster name, unique among clusters'),
        _protocol('the control socket protocol: udp, udp6 or unix'),
        _address('the control socket: HOST[:PORT] (port 22222 if omitted) or /PATH'),
        Child('disconnect_notify', 'a <disconnect_notify> element',
              'relay of disconnect notifications to a B2BUA', field='disconnect_notify',
              type='DisconnectNotifyConfig | None', container=True),
        Child('capacity_limit', 'a <capacity_limit type="soft|hard" /> element',
              'type="soft" (default): a full member still takes calls when all are full; '
              'type="hard": they are refused', field='capacity_limit', default='soft',
              container=True),
        Child('reply_cache_bytes', REPLY_CACHE_TEXT,
              'udp/udp6 only: memory for the replies retransmitted commands get '
              f'(default: {DEFAULT_REPLY_CACHE_BYTES}, 64 MiB)', reply_cache_bytes,
              'reply_cache_bytes', int, default=DEFAULT_REPLY_CACHE_BYTES,
              # written back only when set: the element is refused in unix clusters
              value_of=_unless_default('reply_cache_bytes', DEFAULT_REPLY_CACHE_BYTES)),
        Child('max_sessions', _POSITIVE,
              'at most this many sessions in the cluster (own and, with <redis>, foreign): a '
              'new call beyond it is refused as by a full cluster (default: no limit; see the '
              'README for the memory a session takes)', positive_int, 'max_sessions',
              'int | None'),
        Child('rtpproxy', 'an <rtpproxy> element', 'a member RTPproxy', field='members',
              type='tuple[MemberConfig, ...]', many=True, container=True),
    ),
    'rtpproxy': (
        _name('the member name, unique within the cluster',
              AddKey(0, 'NAME', True, '{key} "{text}" contains control characters')),
        _protocol('the member control socket protocol: udp, udp6 or unix',
                  AddKey(1, 'udp|udp6|unix', True, '{error}')),
        _address('the member control socket: HOST[:PORT] (port 22222 if omitted) or /PATH',
                 AddKey(2, 'ADDRESS', True, '{error}')),
        Child('weight', _POSITIVE, 'relative share of new sessions', positive_int, 'weight',
              int, required=True, add=AddKey(4, 'N', True, _INT_PROBLEM)),
        Child('capacity', _POSITIVE, 'sessions the member is meant to carry', positive_int,
              'capacity', int, required=True, add=AddKey(3, 'N', True, _INT_PROBLEM)),
        Child('status', 'ACTIVE or SUSPENDED',
              'ACTIVE takes new sessions; SUSPENDED keeps only its existing ones',
              check_status, 'status', required=True, default='ACTIVE',
              add=AddKey(5, 'ACTIVE|SUSPENDED', False,
                         '{key} "{text}"; expected ACTIVE or SUSPENDED')),
        _host('wan_address', 'address the member announces on its WAN side', 6),
        _host('lan_address', 'address the member announces on its LAN side', 7),
        _host('cmd_out_address', 'address the member reaches the relay at', 8),
    ),
    'disconnect_notify': (
        Child('inbound_address', 'HOST:PORT',
              'TCP address the members send their notifications to', parse_inbound_address,
              parts=(('inbound_host', str), ('inbound_port', int)), required=True,
              value_of=whole, write=write_inbound),
        Child('dest_socket_prefix', 'an absolute socket path prefix such as /var/run/b2bua.sock',
              'prefix of the B2BUA unix sockets notifications are relayed to',
              check_socket_prefix, 'dest_socket_prefix', required=True),
        _tunable('max_destinations', 1, 100_000, 'sockets',
                 'client sockets the relay keeps at a time; notifications for another '
                 'are dropped', 256, write_default=False),
        _tunable('max_queued_bytes', 4096, 1 << 30, 'bytes',
                 'undelivered notifications the relay holds, all destinations together',
                 1 << 20, write_default=False),
        _tunable('idle_timeout', 1, 86_400, 'seconds',
                 'a destination without notifications this long is closed and forgotten',
                 300, write_default=False),
    ),
    'redis': (
        Child('url', REDIS_URL_TEXT, 'the Redis server (or <sentinel>: exactly one of them)',
              check_redis_url, 'url', str | None),
        Child('instance_id', IDENT_TEXT, 'this instance (default: the host name)', check_ident,
              'instance_id', default_factory=local_host_name),
        Child('namespace', IDENT_TEXT, 'prefix of every key (default: rtpc)', check_ident,
              'namespace', default='rtpc'),
        Child('password_file', _ABS_PATH, 'file holding the Redis password', check_abs_path,
              'password_file', str | None),
        Child('password_env', 'an environment variable name',
              'environment variable holding the Redis password', check_env_name,
              'password_env', str | None),
        Child('tls_ca', _ABS_PATH, 'CA certificates for rediss:// (and tls="yes" sentinels)',
              check_abs_path, 'tls_ca', str | None),
        Child('tls_cert', _ABS_PATH, 'client certificate for rediss:// (and tls="yes" sentinels)',
              check_abs_path, 'tls_cert', str | None),
        Child('tls_key', _ABS_PATH, 'client key for rediss:// (and tls="yes" sentinels)',
              check_abs_path, 'tls_key', str | None),
        Child('tls_verify_hostname', 'yes or no', 'check the server name (default: yes)',
              yes_no, 'tls_verify_hostname', bool, default=True, write=write_yes_no),
        Child('peers', 'auto or a whitespace-separated list of instance ids',
              'instances whose sessions are followed (default: auto, every one)', parse_peers,
              'peers', tuple, default=(), write=write_peers),
        Child('session_ttl', 'a positive integer (seconds)',
              'lifetime of a session key without activity (default: 86400)', positive_int,
              'session_ttl', int, default=86400),
        Child('final_timeout', 'a non-negative integer (seconds, 0 = off)',
              'end sessions older than this (default: 0, off)', non_negative_int,
              'final_timeout', int, default=0),
        Child('resync_interval', 'a positive integer (seconds)',
              'full resynchronisation period (default: 60)', positive_int, 'resync_interval',
              int, default=60),
        _tunable('command_timeout_ms', 10, 600_000, 'milliseconds',
                 'a reply missing this long drops the connection', 1000),
        _tunable('connect_timeout_ms', 10, 600_000, 'milliseconds',
                 'connecting (TCP, TLS) may take this long', 1000),
        _tunable('tcp_keepalive', 0, 7200, 'seconds, 0 = off',
                 'idle time before TCP keepalive probes a connection', 30),
        _tunable('reconnect_min_ms', 10, 600_000, 'milliseconds',
                 'first wait before reconnecting; doubled after each failure', 100),
        _tunable('reconnect_max_ms', 10, 600_000, 'milliseconds',
                 'longest wait between reconnects (at least reconnect_min_ms)', 5000),
        _tunable('degraded_after', 1, 1_000_000, 'consecutive errors',
                 'failed writes in a row before the instance reports itself degraded', 1),
        Child('configure_notifications', 'yes or no',
              'set notify-keyspace-events with CONFIG SET when it lacks classes sharing needs '
              '(default: no)', yes_no, 'configure_notifications', bool, default=False,
              write=write_yes_no),
        # last: the configuration class's first fields stay (url, instance_id, ...)
        Child('sentinel', SENTINEL_ELEMENT_TEXT,
              'instead of <url>: the sentinels that name the master; attributes master (the '
              'name they monitor it under), db (default: 0), tls (yes or no, default: no; '
              'for the sentinels and the data nodes)', parse_sentinel_addresses, 'sentinel',
              SentinelConfig | None, container=True, write=write_sentinels),
        Child('sentinel_password_file', _ABS_PATH,
              'file holding the password of the sentinels (the data nodes use <password_file> '
              'or <password_env>)', check_abs_path, 'sentinel_password_file', str | None),
    ),
    # after every element with an <address> of the endpoint grammar: expected('address')
    # finds theirs first
    'http': (
        # read by the http reader itself (its errors name HTTP_ADDRESS_TEXT): no parse here
        Child('address', HTTP_ADDRESS_TEXT, 'address to listen on; keep it on loopback or a '
              'management network', required=True, value_of=http_address),
    ),
}

ATTRIBUTES: dict[str, tuple[Attribute, ...]] = {
    'capacity_limit': (Attribute('type', 'soft or hard', 'soft or hard, case-insensitive',
                                 'soft'),),
    'sentinel': (Attribute('master', 'a name without white space',
                           'the name the sentinels monitor the master under', '',
                           sentinel_master),
                 Attribute('db', 'a database number', 'the database (default: 0)', '0',
                           sentinel_db),
                 Attribute('tls', 'yes or no', 'TLS to sentinels and data nodes (default: no)',
                           'no', sentinel_tls)),
}


# --------------------------------------------------------------------------
# Queries

def children(element: str) -> tuple[Child, ...]:
    """The rows of `element`, in the order of checks and of writing back."""
    return ELEMENTS[element]


def child(element: str, tag: str) -> Child:
    for row in ELEMENTS[element]:
        if row.tag == tag:
            return row
    raise KeyError(f'<{tag}> is not a child of <{element}>')


def holds_text(tag: str) -> bool:
    """Whether the element `tag` with attributes also holds text (<sentinel>), or is empty
    (<capacity_limit>)."""
    return any(row.tag == tag and row.container and row.parse is not None
               for rows in ELEMENTS.values() for row in rows)


def leaf_tags() -> set[str]:
    """Every element holding only text."""
    return {row.tag for rows in ELEMENTS.values() for row in rows if not row.container}


def expected(tag: str) -> str:
    """What a valid value of the text element `tag` looks like (the same in every parent)."""
    for rows in ELEMENTS.values():
        for row in rows:
            if row.tag == tag:
                return row.expected
    raise KeyError(tag)


def config_class(name: str, element: str, doc: str, leading: tuple[str, ...] = ()) -> type:
    """A frozen dataclass with one attribute per row of `element` that has a `field` (or
    `parts`), in table order; the attributes named in `leading` come first, in that order.

    An attribute has no default when its row is required without a default, or repeats
    (`many`: the tuple of the nested objects is always given).
    """
    fields = [spec for row in ELEMENTS[element] for spec in _dataclass_fields(row)]
    rank = {field: index for index, field in enumerate(leading)}
    fields.sort(key=lambda spec: rank.get(spec[0], len(rank)))   # stable: table order after
    cls = dataclasses.make_dataclass(name, fields, frozen=True,
                                     namespace={'__doc__': doc})
    cls.__module__ = 'rtp_cluster.core.config'
    return cls


def attribute_names(element: str) -> list[str]:
    """The configuration attributes the rows of `element` fill, in table order."""
    return [spec[0] for row in ELEMENTS[element] for spec in _dataclass_fields(row)]


def _dataclass_fields(row: Child) -> list[tuple[str, Any, Any]]:
    if row.parts:
        return [(name, kind, dataclasses.field() if row.required
                 else dataclasses.field(default=None)) for name, kind in row.parts]
    if row.field is None:
        return []
    if row.default_factory is not None:
        spec = dataclasses.field(default_factory=row.default_factory)
    elif row.default is None and (row.required or row.many):
        spec = dataclasses.field()
    else:
        spec = dataclasses.field(default=row.default)
    return [(row.field, row.type, spec)]


def add_keys() -> tuple[Child, ...]:
    """The member rows settable by ``modify add``, in the key order of its messages."""
    return tuple(sorted((row for row in ELEMENTS['rtpproxy'] if row.add is not None),
                        key=lambda row: _add_key(row).rank))


def required_add_keys() -> tuple[Child, ...]:
    return tuple(row for row in add_keys() if _add_key(row).required)


def add_usage(cluster: str = 'CLUSTER') -> str:
    """``modify CLUSTER add name=NAME,...[,status=...]``, generated from the table."""
    def item(row: Child) -> str:
        return f'{row.tag}={_add_key(row).placeholder}'
    required = [item(row) for row in add_keys() if _add_key(row).required]
    optional = [f'[,{item(row)}]' for row in add_keys() if not _add_key(row).required]
    return f'modify {cluster} add ' + ','.join(required) + ''.join(optional)


def add_problem(row: Child) -> str:
    """The reply template for a refused ``modify add`` value of `row`."""
    return _add_key(row).problem


def _add_key(row: Child) -> AddKey:
    if row.add is None:
        raise ValueError(f'<{row.tag}> is not a modify add key')
    return row.add


def describe(element: str) -> list[tuple[str, str, str]]:
    """(tag, "required"/"optional"/"any number", help) of every child of `element`."""
    rows = []
    for row in ELEMENTS[element]:
        how = 'any number' if row.many else 'required' if row.required else 'optional'
        rows.append((row.tag, how, row.help))
    return rows


def render_text(elements: Iterable[str] = tuple(ELEMENTS)) -> list[str]:
    """The element lists as plain text (README)."""
    lines: list[str] = []
    for element in elements:
        lines.append(f'<{element}>')
        lines += [f'    <{tag}> ({how}): {help_text}' for tag, how, help_text in describe(element)]
    return lines


def render_man(elements: Iterable[str] = tuple(ELEMENTS)) -> list[str]:
    """The element lists as man(7) paragraphs."""
    lines: list[str] = []
    for element in elements:
        lines += ['.SS <%s>' % element]
        for tag, how, help_text in describe(element):
            lines += ['.TP', '.B <%s>' % tag, '(%s) %s' % (how, help_text.replace('-', '\\-'))]
    return lines
