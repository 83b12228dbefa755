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

import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from io import BytesIO
from typing import Any, Callable, Mapping, TypeVar

from lxml import etree

from . import config_schema as schema
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

_SYNTAX_POSITION = re.compile(r', line \d+, column (\d+)$')


class ConfigError(Exception):
    """An unusable configuration; ``str()`` is ``FILE:LINE: <element>: problem; expected ...``."""


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

_CHILDREN = {element: tuple(row.tag for row in rows) for element, rows in schema.ELEMENTS.items()}
_ATTRIBUTES = {element: tuple(a.name for a in attrs)
               for element, attrs in schema.ATTRIBUTES.items()}


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
    root = _parse_xml(data, source)
    dtd = _load_dtd()
    dtd_valid = dtd.validate(root)
    # Explains most DTD violations more precisely than libxml2 does.
    _check_structure(root, source)
    if not dtd_valid:
        raise _dtd_error(dtd, source)
    return _Reader(source, host_name).config(root)


def _parse_xml(data: bytes, source: str) -> etree._Element:
    if not data.strip():
        raise ConfigError(f'{source}: file is empty; expected an <rtp_cluster_config> document')
    parser = etree.XMLParser(no_network=True, resolve_entities=False, load_dtd=False,
                             remove_comments=True, remove_pis=True)
    try:
        return etree.fromstring(data, parser)
    except etree.XMLSyntaxError as e:
        message = e.msg or 'syntax error'
        position = _SYNTAX_POSITION.search(message)
        if position:
            message = f'{message[:position.start()]} (column {position.group(1)})'
        raise ConfigError(f'{source}:{e.lineno or 1}: not well-formed XML: {message}') from None


@lru_cache(maxsize=1)
def _load_dtd() -> etree.DTD:
    data = resources.files('rtp_cluster').joinpath('rtp_cluster.dtd').read_bytes()
    return etree.DTD(BytesIO(data))


def _dtd_error(dtd: etree.DTD, source: str) -> ConfigError:
    errors = dtd.error_log.filter_from_errors()
    if not errors:
        return ConfigError(f'{source}: does not match rtp_cluster.dtd')
    first = errors[0]
    return ConfigError(f'{source}:{first.line}: does not match rtp_cluster.dtd: {first.message}')


def _check_structure(root: etree._Element, source: str) -> None:
    if root.tag != 'rtp_cluster_config':
        raise ConfigError(f'{source}:{root.sourceline}: <{root.tag}>: wrong root element; '
                          'expected <rtp_cluster_config>')
    for el in root.iter():
        if not isinstance(el.tag, str):
            raise ConfigError(f'{source}:{el.sourceline}: entity reference {el}: not supported; '
                              'expected plain text')
        found = _attribute_problem(el) or _content_problem(el)
        if found:
            subject, line, problem = found
            raise ConfigError(f'{source}:{line}: {subject}: {problem}')


_Problem = tuple[str, int, str]   # subject, line, what is wrong and expected


def _attribute_problem(el: etree._Element) -> _Problem | None:
    allowed = _ATTRIBUTES.get(el.tag, ())
    for attr in el.attrib:
        if attr not in allowed:
            expected = f'only {", ".join(allowed)}' if allowed else 'no attributes'
            return f'<{el.tag}>', el.sourceline, f'unknown attribute "{attr}"; expected {expected}'
    return None


def _content_problem(el: etree._Element) -> _Problem | None:
    children = [c for c in el if isinstance(c.tag, str)]
    if el.tag in _CHILDREN:
        return _container_problem(el, children)
    if el.tag in _ATTRIBUTES and schema.holds_text(el.tag):
        if children:
            return (f'<{children[0].tag}> in <{el.tag}>', children[0].sourceline,
                    'unexpected element; expected only text')
        return None
    if el.tag in _ATTRIBUTES:
        if children or (el.text or '').strip():
            return ('<capacity_limit>', el.sourceline,
                    'is not empty; expected <capacity_limit type="soft|hard" />')
        return None
    if children:
        return (f'<{children[0].tag}> in <{el.tag}>', children[0].sourceline,
                'unexpected element; expected only text')
    return None


def _container_problem(el: etree._Element, children: list[etree._Element]) -> _Problem | None:
    allowed = _CHILDREN[el.tag]
    for child in children:
        if child.tag not in allowed:
            names = ', '.join(f'<{t}>' for t in allowed)
            return (f'<{child.tag}> in <{el.tag}>', child.sourceline,
                    f'unknown element; expected one of {names}')
    stray = ' '.join(t.strip() for t in [el.text] + [c.tail for c in el] if t and t.strip())
    if stray:
        return (f'<{el.tag}>', el.sourceline,
                f'unexpected text "{_shorten(stray)}"; expected only child elements')
    return None


_shorten = schema.shorten


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
        name = self.value(name_el, owner, schema.check_name)
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
        protocol = self.value(protocol_el, owner, schema.check_protocol)
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
        name = self.value(name_el, owner, schema.check_name)
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
            db = schema.int_between(0, 99999)(el.get('db', '0').strip())
            tls = schema.yes_no(el.get('tls', 'no').strip())
        except ValueError as e:
            raise self.error(el, subject, str(e)) from None
        addresses = self.value(el, owner, schema.child('redis', 'sentinel').parse)
        return SentinelConfig(master=master, addresses=addresses, db=db, tls=tls)

    def default_instance_id(self, el: etree._Element, owner: _Owner) -> str:
        hostname = self.host_name()
        try:
            return schema.check_ident(hostname)
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
