"""The XML configuration file of rtp_cluster.

The format is the one of sippy's original rtp_cluster: a root
``<rtp_cluster_config>`` holding ``<rtp_cluster>`` elements, each with member
``<rtpproxy>`` elements, plus an optional ``<redis>`` element for session
sharing.  A file is first validated against ``rtp_cluster.dtd`` (shipped in
this package; a DOCTYPE in the file is neither needed nor loaded) and then
checked semantically, element by element, following the tables of
`rtp_cluster.core.config_schema`.  Every problem is reported as a
``ConfigError`` whose text names the file, the line, the element and what was
expected.

A cluster may have no ``<rtpproxy>`` at all: members can be added at run time
with the admin command ``modify CLUSTER add`` (`member_from_fields`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, TypeVar

from lxml import etree

from . import config_schema as schema
from . import config_values
from .config_document import ConfigError, validated_root
from .config_schema import (CAPACITY_LIMITS, LOG_LEVELS, MEMBER_STATUSES, local_host_name,
                            parse_log_level)
from .endpoints import (
    CONFIG_PROTOCOLS, DEFAULT_PORT, MAX_UNIX_PATH, Endpoint, check_host, parse_admin_socket,
    parse_endpoint, parse_port, parse_socket_spec, split_host_port,
)
from .sentinel import SentinelConfig, check_master_name

__all__ = [
    'ConfigError', 'Endpoint', 'parse_endpoint', 'parse_socket_spec', 'parse_admin_socket',
    'MemberConfig', 'DisconnectNotifyConfig', 'ClusterConfig', 'RedisConfig', 'HttpConfig',
    'Config', 'load_config', 'parse_config', 'config_to_xml', 'member_from_fields',
    'FieldError', 'DEFAULT_PORT', 'CONFIG_PROTOCOLS', 'MEMBER_STATUSES', 'CAPACITY_LIMITS',
    'MAX_UNIX_PATH', 'check_host', 'parse_port', 'split_host_port', 'LOG_LEVELS',
    'parse_log_level', 'SentinelConfig',
]

# Guards against pointing -c at something like /dev/zero.
MAX_CONFIG_BYTES = 16 * 1024 * 1024

# --------------------------------------------------------------------------
# Configuration objects

MemberConfig = schema.config_class('MemberConfig', 'rtpproxy', """One member RTPproxy of a cluster.

    name, endpoint, weight, capacity, status ('ACTIVE' | 'SUSPENDED'), wan_address,
    lan_address, cmd_out_address: one attribute per row of config_schema.ELEMENTS['rtpproxy'].
    """)

RedisConfig = schema.config_class('RedisConfig', 'redis', """Session sharing through Redis.

    One attribute per row of config_schema.ELEMENTS['redis']; ``peers == ()`` means
    discover peers automatically.
    """)


DisconnectNotifyConfig = schema.config_class('DisconnectNotifyConfig', 'disconnect_notify', """\
Relay of disconnect notifications: TCP listen address, destination socket prefix, bounds.

    One attribute per row of config_schema.ELEMENTS['disconnect_notify'] (<inbound_address>
    fills inbound_host and inbound_port).
    """)

ClusterConfig = schema.config_class('ClusterConfig', 'rtp_cluster', """\
One cluster: its control socket and its members, in file order.

    One attribute per row of config_schema.ELEMENTS['rtp_cluster'] that fills one (<protocol>
    and <address> make `endpoint`); name, endpoint and members come first.
    """, leading=('name', 'endpoint', 'members'))


@dataclass(frozen=True)
class HttpConfig:
    """The optional HTTP listener (metrics, health, status page)."""

    host: str
    port: int

    @property
    def address(self) -> str:
        host = f'[{self.host}]' if ':' in self.host else self.host
        return f'{host}:{self.port}'


@dataclass(frozen=True)
class Config:
    """The whole configuration file."""

    clusters: tuple[ClusterConfig, ...]
    redis: RedisConfig | None = None
    http: HttpConfig | None = None
    log_level: str = 'info'


# --------------------------------------------------------------------------
# Loading and structural validation

HostName = Callable[[], str]


def load_config(path: str, *, host_name: HostName = local_host_name) -> Config:
    """Read and validate the configuration file at ``path``; raises ConfigError.

    ``host_name`` gives the default ``<instance_id>`` of ``<redis>``.
    """
    try:
        with open(path, 'rb') as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as e:
        reason = e.strerror or str(e)
        raise ConfigError(f'{path}: cannot read the configuration file: {reason}') from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f'{path}: file is larger than {MAX_CONFIG_BYTES} bytes; '
                          'expected an rtp_cluster configuration')
    return parse_config(data, path, host_name=host_name)


def parse_config(data: bytes, source: str, *, host_name: HostName = local_host_name) -> Config:
    """Validate the XML document ``data``; ``source`` names it in error messages."""
    return _Reader(source, host_name).config(validated_root(data, source))


_shorten = config_values.shorten


# --------------------------------------------------------------------------
# Semantic reading

T = TypeVar('T')


@dataclass(frozen=True)
class _Owner:
    """The element whose children are being read, for messages: tag plus an identification."""

    tag: str
    ident: str = ''

    def subject(self) -> str:
        return f'<{self.tag}> {self.ident}'.rstrip()

    def child_subject(self, tag: str) -> str:
        return f'<{tag}> of {self.tag} {self.ident}'.rstrip()


class _Reader:
    """Turns a structurally valid tree into Config, raising ConfigError on bad values."""

    def __init__(self, source: str, host_name: HostName) -> None:
        self.source = source
        self.host_name = host_name

    def error(self, el: etree._Element, subject: str, problem: str) -> ConfigError:
        return ConfigError(f'{self.source}:{el.sourceline}: {subject}: {problem}')

    # ---- generic helpers

    def group(self, el: etree._Element) -> dict[str, list[etree._Element]]:
        groups: dict[str, list[etree._Element]] = {}
        for child in el:
            groups.setdefault(child.tag, []).append(child)
        return groups

    def optional(self, groups: dict[str, list[etree._Element]], tag: str,
                 owner: _Owner) -> etree._Element | None:
        found = groups.get(tag, [])
        if len(found) > 1:
            raise self.error(found[1], owner.child_subject(tag),
                             f'duplicate (first at line {found[0].sourceline}); '
                             f'expected at most one <{tag}> in <{owner.tag}>')
        return found[0] if found else None

    def required(self, el: etree._Element, groups: dict[str, list[etree._Element]], tag: str,
                 owner: _Owner) -> etree._Element:
        found = groups.get(tag, [])
        if len(found) > 1:
            raise self.error(found[1], owner.child_subject(tag),
                             f'duplicate (first at line {found[0].sourceline}); '
                             f'expected exactly one <{tag}> in <{owner.tag}>')
        if not found:
            raise self.error(el, owner.subject(),
                             f'missing <{tag}>; expected {schema.expected(tag)}')
        return found[0]

    def text(self, el: etree._Element, owner: _Owner) -> str:
        value = (el.text or '').strip()
        if not value:
            raise self.error(el, owner.child_subject(el.tag),
                             f'is empty; expected {schema.expected(el.tag)}')
        return value

    def value(self, el: etree._Element, owner: _Owner, convert: Callable[[str], T]) -> T:
        """Converts the element text, turning a ValueError into a located ConfigError."""
        text = self.text(el, owner)
        try:
            return convert(text)
        except ValueError as e:
            raise self.error(el, owner.child_subject(el.tag), str(e)) from None

    def fields(self, el: etree._Element, groups: dict[str, list[etree._Element]],
               owner: _Owner, element: str, done: tuple[str, ...] = ()) -> dict[str, Any]:
        """The attributes that the rows of `element` read from text, in table order.

        Rows in `done` (read already) and rows without `parse` or `field` (composed by the
        element's own reader) are skipped; absent optional elements are left out, so the
        configuration class gives them their default.
        """
        values: dict[str, Any] = {}
        for row in schema.children(element):
            if row.tag in done or row.parse is None or not (row.field or row.parts):
                continue
            if row.required:
                found = self.required(el, groups, row.tag, owner)
            else:
                found = self.optional(groups, row.tag, owner)
                if found is None:
                    continue
            value = self.value(found, owner, row.parse)
            if row.parts:
                values.update(zip((name for name, _ in row.parts), value))
            else:
                values[row.field] = value
        return values

    def nested(self, el: etree._Element, groups: dict[str, list[etree._Element]],
               owner: _Owner, element: str, readers: Mapping[str, Callable[..., Any]],
               ) -> dict[str, Any]:
        """The attributes that the container rows of `element` fill, each read by
        `readers[tag](elements)`; an absent optional container is left to its default."""
        values: dict[str, Any] = {}
        for row in schema.children(element):
            if not row.container or row.field is None:
                continue
            if row.many:
                values[row.field] = readers[row.tag](groups.get(row.tag, []))
            else:
                found = self.optional(groups, row.tag, owner)
                if found is not None:
                    values[row.field] = readers[row.tag](found)
        return values

    def unique_name(self, name_el: etree._Element, owner: _Owner, name: str,
                    seen: dict[str, int], scope: str) -> None:
        if name in seen:
            raise self.error(name_el, owner.child_subject('name'),
                             f'duplicate {owner.tag} name "{name}" (first at line {seen[name]}); '
                             f'expected names unique {scope}')
        seen[name] = name_el.sourceline

    # ---- elements

    def config(self, root: etree._Element) -> Config:
        groups = self.group(root)
        owner = _Owner('rtp_cluster_config')
        redis_el = self.optional(groups, 'redis', owner)
        cluster_els = groups.get('rtp_cluster', [])
        if not cluster_els:
            raise self.error(root, owner.subject(),
                             'no <rtp_cluster>; expected at least one')
        clusters = self.clusters(cluster_els)
        redis = self.redis(redis_el) if redis_el is not None else None
        http_el = self.optional(groups, 'http', owner)
        return Config(clusters=clusters, redis=redis,
                      http=self.http(http_el) if http_el is not None else None,
                      **self.fields(root, groups, owner, schema.ROOT))

    def http(self, el: etree._Element) -> HttpConfig:
        groups = self.group(el)
        owner = _Owner('http')
        address_el = self.optional(groups, 'address', owner)
        if address_el is None:
            raise self.error(el, owner.subject(),
                             f'missing <address>; expected {schema.HTTP_ADDRESS_TEXT}')
        try:
            host, port = split_host_port((address_el.text or '').strip(), None)
        except ValueError as e:
            raise self.error(address_el, owner.child_subject('address'),
                             f'{e} (expected {schema.HTTP_ADDRESS_TEXT})') from None
        return HttpConfig(host=host, port=port)

    def clusters(self, elements: list[etree._Element]) -> tuple[ClusterConfig, ...]:
        names: dict[str, int] = {}
        endpoints: dict[Endpoint, tuple[str, int]] = {}
        result = []
        for index, el in enumerate(elements, 1):
            cluster = self.cluster(el, index, names)
            if cluster.endpoint in endpoints:
                other, line = endpoints[cluster.endpoint]
                raise self.error(el, f'<rtp_cluster> "{cluster.name}"',
                                 f'control socket {cluster.endpoint} is already used by '
                                 f'rtp_cluster "{other}" (line {line}); '
                                 'expected distinct addresses')
            endpoints[cluster.endpoint] = (cluster.name, el.sourceline)
            result.append(cluster)
        return tuple(result)

    def cluster(self, el: etree._Element, index: int, names: dict[str, int]) -> ClusterConfig:
        groups = self.group(el)
        owner = _Owner('rtp_cluster', f'#{index}')
        name_el = self.required(el, groups, 'name', owner)
        name = self.value(name_el, owner, config_values.check_name)
        self.unique_name(name_el, owner, name, names, 'among clusters')
        owner = _Owner('rtp_cluster', f'"{name}"')
        endpoint = self.endpoint(el, groups, owner)
        cache_el = self.optional(groups, 'reply_cache_bytes', owner)
        if cache_el is not None and endpoint.protocol == 'unix':
            raise self.error(cache_el, owner.child_subject('reply_cache_bytes'),
                             'a unix control socket has no reply cache; expected it only '
                             'in udp and udp6 clusters')
        readers = {
            'rtpproxy': lambda els: self.members(els, name),
            'capacity_limit': lambda limit_el: self.capacity_limit(limit_el, owner),
            'disconnect_notify': lambda notify_el: self.disconnect_notify(notify_el, name),
        }
        return ClusterConfig(name=name, endpoint=endpoint,
                             **self.fields(el, groups, owner, 'rtp_cluster', ('name',)),
                             **self.nested(el, groups, owner, 'rtp_cluster', readers))

    def endpoint(self, el: etree._Element, groups: dict[str, list[etree._Element]],
                 owner: _Owner) -> Endpoint:
        protocol_el = self.required(el, groups, 'protocol', owner)
        protocol = self.value(protocol_el, owner, config_values.check_protocol)
        address_el = self.required(el, groups, 'address', owner)
        return self.value(address_el, owner, lambda text: parse_endpoint(protocol, text))

    def capacity_limit(self, el: etree._Element, owner: _Owner) -> str:
        kind = el.get('type')
        if kind is None:
            return 'soft'
        if kind.strip().lower() not in CAPACITY_LIMITS:
            raise self.error(el, owner.child_subject('capacity_limit'),
                             f'type "{kind}" is not valid; expected soft or hard')
        return kind.strip().lower()

    def disconnect_notify(self, el: etree._Element, cluster: str) -> DisconnectNotifyConfig:
        groups = self.group(el)
        owner = _Owner('disconnect_notify', f'of rtp_cluster "{cluster}"')
        return DisconnectNotifyConfig(**self.fields(el, groups, owner, 'disconnect_notify'))

    def members(self, elements: list[etree._Element], cluster: str) -> tuple[MemberConfig, ...]:
        names: dict[str, int] = {}
        return tuple(self.member(el, index, cluster, names) for index, el in enumerate(elements, 1))

    def member(self, el: etree._Element, index: int, cluster: str,
               names: dict[str, int]) -> MemberConfig:
        groups = self.group(el)
        owner = _Owner('rtpproxy', f'#{index} of rtp_cluster "{cluster}"')
        name_el = self.required(el, groups, 'name', owner)
        name = self.value(name_el, owner, config_values.check_name)
        self.unique_name(name_el, owner, name, names, f'within rtp_cluster "{cluster}"')
        owner = _Owner('rtpproxy', f'"{name}"')
        endpoint = self.endpoint(el, groups, owner)
        return MemberConfig(name=name, endpoint=endpoint,
                            **self.fields(el, groups, owner, 'rtpproxy', ('name',)))

    def redis(self, el: etree._Element) -> RedisConfig:
        groups = self.group(el)
        owner = _Owner('redis')
        values = self.fields(el, groups, owner, 'redis', ('sentinel',))
        sentinel_el = self.optional(groups, 'sentinel', owner)
        if sentinel_el is not None:
            values['sentinel'] = self.sentinel(sentinel_el, owner)
        if 'instance_id' not in values:
            values['instance_id'] = self.default_instance_id(el, owner)
        config = RedisConfig(**values)
        self.check_redis_combination(el, owner, config)
        return config

    def sentinel(self, el: etree._Element, owner: _Owner) -> SentinelConfig:
        subject = owner.child_subject('sentinel')
        master = el.get('master')
        if master is None:
            raise self.error(el, subject, 'missing attribute master; expected '
                             + schema.SENTINEL_ELEMENT_TEXT)
        try:
            master = check_master_name(master.strip())
            db = config_values.int_between(0, 99999)(el.get('db', '0').strip())
            tls = config_values.yes_no(el.get('tls', 'no').strip())
        except ValueError as e:
            raise self.error(el, subject, str(e)) from None
        addresses = self.value(el, owner, schema.child('redis', 'sentinel').parse)
        return SentinelConfig(master=master, addresses=addresses, db=db, tls=tls)

    def default_instance_id(self, el: etree._Element, owner: _Owner) -> str:
        hostname = self.host_name()
        try:
            return config_values.check_ident(hostname)
        except ValueError:
            raise self.error(el, owner.subject(),
                             f'no <instance_id> and the host name "{hostname}" is not usable as '
                             f'one; expected <instance_id> with {schema.IDENT_TEXT}') from None

    def check_redis_combination(self, el: etree._Element, owner: _Owner,
                                config: RedisConfig) -> None:
        if config.url is None and config.sentinel is None:
            raise self.error(el, owner.subject(),
                             f'missing <url>; expected {schema.expected("url")}, or '
                             f'{schema.SENTINEL_ELEMENT_TEXT}')
        if config.url is not None and config.sentinel is not None:
            raise self.error(el, owner.subject(), 'both <url> and <sentinel>; expected one of '
                             'them (with <sentinel>, the sentinels name the server)')
        if config.sentinel_password_file and config.sentinel is None:
            raise self.error(el, owner.subject(), '<sentinel_password_file> without '
                             f'<sentinel>; expected {schema.SENTINEL_ELEMENT_TEXT}')
        if config.password_file and config.password_env:
            raise self.error(el, owner.subject(), 'both <password_file> and <password_env>; '
                             'expected at most one of them')
        if (config.tls_cert is None) != (config.tls_key is None):
            raise self.error(el, owner.subject(), '<tls_cert> without <tls_key> or vice versa; '
                             'expected both or neither')
        if config.reconnect_min_ms > config.reconnect_max_ms:
            raise self.error(el, owner.subject(), f'<reconnect_min_ms> {config.reconnect_min_ms} '
                             f'is above <reconnect_max_ms> {config.reconnect_max_ms}; expected '
                             'min <= max')
        uses_tls_files = config.tls_ca or config.tls_cert
        if config.sentinel is not None:
            if uses_tls_files and not config.sentinel.tls:
                raise self.error(el, owner.subject(), 'TLS files given but <sentinel> has no '
                                 'tls="yes"; expected <sentinel tls="yes" ...>')
        elif uses_tls_files and not config.url.lower().startswith('rediss:'):
            raise self.error(el, owner.subject(), 'TLS files given but <url> is not rediss://; '
                             'expected a rediss:// url')


# --------------------------------------------------------------------------
# Members added at run time (admin `modify CLUSTER add`)

class FieldError(ValueError):
    """A refused ``modify add`` value; `row.add.problem` says how the admin reports it."""

    def __init__(self, row: schema.Child, text: str, reason: str) -> None:
        super().__init__(reason)
        self.row = row
        self.text = text
        self.reason = reason


def member_from_fields(values: Mapping[str, str]) -> MemberConfig:
    """A MemberConfig from ``modify add`` values, checked as the configuration file's are.

    `values` maps keys of `config_schema.add_keys()` to stripped, non-empty texts and holds
    every required key.  Raises FieldError for the first refused value.
    """
    fields: dict[str, Any] = {}
    for row in schema.children('rtpproxy'):
        text = values.get(row.tag)
        if text is None or row.field is None:
            continue                      # <protocol> is read with <address>
        # <address> has no parse of its own: its grammar depends on <protocol>
        parse = row.parse or (lambda address: parse_endpoint(values['protocol'], address))
        try:
            fields[row.field] = parse(text)
        except ValueError as e:
            raise FieldError(row, text, str(e)) from None
    return MemberConfig(**fields)


# --------------------------------------------------------------------------
# Writing back

def config_to_xml(config: Config) -> bytes:
    """Serialise ``config`` as an indented document that parse_config reads back equal."""
    root = etree.Element(schema.ROOT)
    _write_element(root, schema.ROOT, config)
    return etree.tostring(root, pretty_print=True, xml_declaration=True, encoding='UTF-8')


def _write_element(el: etree._Element, element: str, obj: Any) -> None:
    """The children of `el` in table order: text rows from `obj`, then nested elements."""
    for row in schema.children(element):
        if row.container:
            for value in _nested(row, obj):
                _write_nested(etree.SubElement(el, row.tag), row.tag, value)
            continue
        text = row.text_of(obj)
        if text is not None:
            etree.SubElement(el, row.tag).text = text


def _nested(row: schema.Child, obj: Any) -> tuple[Any, ...]:
    """The configuration objects written as `<row.tag>` elements inside `obj`'s element."""
    value = getattr(obj, row.field or '')
    if isinstance(value, tuple):
        return value
    return () if value is None else (value,)


def _write_nested(el: etree._Element, tag: str, value: Any) -> None:
    if tag in schema.ATTRIBUTES:
        for attribute in schema.ATTRIBUTES[tag]:
            el.set(attribute.name, attribute.value_of(value))
        if schema.holds_text(tag):
            el.text = schema.child('redis', tag).write(value)
    else:
        _write_element(el, tag, value)
