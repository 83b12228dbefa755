"""The XML configuration file of rtp_cluster.

The format is the one of sippy's original rtp_cluster: a root
``<rtp_cluster_config>`` holding ``<rtp_cluster>`` elements, each with member
``<rtpproxy>`` elements, plus an optional ``<redis>`` element for session
sharing.  A file is first validated against ``rtp_cluster.dtd`` (shipped in
this package; a DOCTYPE in the file is neither needed nor loaded) and then
checked semantically.  Every problem is reported as a ``ConfigError`` whose
text names the file, the line, the element and what was expected.

A cluster may have no ``<rtpproxy>`` at all: members can be added at run time
with the admin command ``modify CLUSTER add``.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from io import BytesIO
from typing import Callable, Iterable, TypeVar
from urllib.parse import SplitResult, parse_qsl, urlsplit

from lxml import etree

__all__ = [
    'ConfigError', 'Endpoint', 'parse_endpoint', 'parse_socket_spec',
    'MemberConfig', 'DisconnectNotifyConfig', 'ClusterConfig', 'RedisConfig',
    'Config', 'load_config', 'parse_config', 'config_to_xml',
    'DEFAULT_PORT',
]

DEFAULT_PORT = 22222
CONFIG_PROTOCOLS = ('udp', 'udp6', 'unix')
SPEC_PROTOCOLS = CONFIG_PROTOCOLS + ('tcp',)
MEMBER_STATUSES = ('ACTIVE', 'SUSPENDED')
CAPACITY_LIMITS = ('soft', 'hard')
# sun_path holds 108 bytes on Linux, including the terminating NUL.
MAX_UNIX_PATH = 107
# Guards against pointing -c at something like /dev/zero.
MAX_CONFIG_BYTES = 16 * 1024 * 1024

_DIGITS = re.compile(r'[0-9]+')
_LABEL = r'[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?'
_HOSTNAME = re.compile(rf'{_LABEL}(?:\.{_LABEL})*\.?')
_IDENT = re.compile(r'[A-Za-z0-9._-]{1,64}')
_ENV_NAME = re.compile(r'[A-Za-z_][A-Za-z0-9_]*')
_SYNTAX_POSITION = re.compile(r', line \d+, column (\d+)$')


class ConfigError(Exception):
    """An unusable configuration; ``str()`` is ``FILE:LINE: <element>: problem; expected ...``."""


# --------------------------------------------------------------------------
# Endpoints

@dataclass(frozen=True)
class Endpoint:
    """A socket address: ``udp``/``udp6``/``tcp`` host and port, or a ``unix`` path."""

    protocol: str
    host: str = ''
    port: int = 0
    path: str = ''

    @property
    def address(self) -> str:
        """``host:port``, ``[ipv6]:port`` or ``/path``, as written in the config file."""
        if self.protocol == 'unix':
            return self.path
        host = f'[{self.host}]' if ':' in self.host else self.host
        return f'{host}:{self.port}'

    def __str__(self) -> str:
        return f'{self.protocol}:{self.address}'


def parse_endpoint(protocol: str, address: str) -> Endpoint:
    """Build an Endpoint from a config ``<protocol>`` and ``<address>``.

    udp/udp6 addresses are ``HOST[:PORT]`` (default port 22222) with IPv6
    literals written ``[ADDR][:PORT]``; an unbracketed IPv6 literal is split
    at its last colon only if what follows is a port number and what
    precedes is itself an IPv6 address.  unix addresses are absolute paths,
    optionally prefixed with ``unix:``.  Raises ValueError.
    """
    proto = protocol.strip().lower()
    if proto not in CONFIG_PROTOCOLS:
        raise ValueError(f'unknown protocol "{protocol.strip()}"; expected udp, udp6 or unix')
    text = address.strip()
    if proto == 'unix':
        if text[:5].lower() == 'unix:':
            text = text[5:]
        return Endpoint('unix', path=_unix_path(text))
    return _net_endpoint(proto, text, DEFAULT_PORT)


def parse_socket_spec(spec: str) -> Endpoint:
    """Parse a command-line socket.

    Accepts ``udp:H[:P]``, ``udp6:H[:P]``, ``unix:/P``, ``/P`` and ``tcp:H:P``.

    Raises ValueError.
    """
    text = spec.strip()
    if text.startswith('/'):
        return Endpoint('unix', path=_unix_path(text))
    proto, colon, rest = text.partition(':')
    proto = proto.lower()
    if not colon or proto not in SPEC_PROTOCOLS:
        raise ValueError(
            f'"{spec}" is not a socket; expected udp:HOST[:PORT], udp6:HOST[:PORT], '
            'unix:/PATH, /PATH or tcp:HOST:PORT')
    if proto == 'unix':
        return Endpoint('unix', path=_unix_path(rest))
    # The admin TCP socket has no conventional port, so one must be given.
    default_port = None if proto == 'tcp' else DEFAULT_PORT
    return _net_endpoint(proto, rest, default_port)


_SCHEME = re.compile(r'^[A-Za-z][A-Za-z0-9]*:')


def parse_admin_socket(spec: str) -> Endpoint:
    """The admin socket (`-s`): `/path`, a relative path, `unix:path` or `tcp:host:port`.

    Relative unix paths are made absolute (the daemon changes to /).  Raises ValueError.
    """
    text = spec.strip()
    path = text[5:] if text.startswith('unix:') else None if _SCHEME.match(text) else text
    if path is not None:
        if not path:
            raise ValueError(f'"{spec}": the unix socket path is empty')
        text = 'unix:' + os.path.abspath(path)
    endpoint = parse_socket_spec(text)
    if endpoint.protocol not in ('unix', 'tcp'):
        raise ValueError(f'"{spec}": expected /PATH, unix:/PATH or tcp:HOST:PORT')
    return endpoint


def _net_endpoint(proto: str, text: str, default_port: int | None) -> Endpoint:
    host, port = split_host_port(text, default_port)
    if proto == 'udp' and _is_ipv6(host):
        raise ValueError(f'"{host}" is an IPv6 address; use protocol udp6')
    if proto == 'udp6' and _is_ipv4(host):
        raise ValueError(f'"{host}" is an IPv4 address; use protocol udp')
    return Endpoint(proto, host=host, port=port)


def split_host_port(text: str, default_port: int | None) -> tuple[str, int]:
    """Split ``HOST[:PORT]`` / ``[IPV6][:PORT]``; ``default_port=None`` makes the port mandatory."""
    if not text:
        raise ValueError('address is empty; expected HOST[:PORT]')
    if text.startswith('['):
        host, port_text = _split_bracketed(text)
    elif text.count(':') == 1:
        host, port_text = text.split(':')
    elif ':' not in text:
        host, port_text = text, None
    else:
        host, port_text = _split_bare_ipv6(text)
    check_host(host)
    if port_text is not None:
        return host, parse_port(port_text)
    if default_port is None:
        raise ValueError(f'"{text}" has no port; expected HOST:PORT')
    return host, default_port


def _split_bracketed(text: str) -> tuple[str, str | None]:
    host, bracket, rest = text[1:].partition(']')
    if not bracket:
        raise ValueError(f'"{text}" lacks the closing "]"; expected [IPV6]:PORT')
    if not _is_ipv6(host):
        raise ValueError(f'"{host}" is not an IPv6 address; expected [IPV6]:PORT')
    if not rest:
        return host, None
    if not rest.startswith(':'):
        raise ValueError(f'unexpected "{rest}" after "]" in "{text}"; expected [IPV6]:PORT')
    return host, rest[1:]


def _split_bare_ipv6(text: str) -> tuple[str, str | None]:
    head, _, tail = text.rpartition(':')
    if _DIGITS.fullmatch(tail) and _is_ipv6(head):
        return head, tail
    if _is_ipv6(text):
        return text, None
    raise ValueError(f'"{text}" is neither HOST:PORT nor an IPv6 address; '
                     'write IPv6 as [IPV6]:PORT')


def parse_port(text: str) -> int:
    """A port number 1-65535 written in decimal digits; raises ValueError."""
    if not _DIGITS.fullmatch(text):
        raise ValueError(f'port "{text}" is not a number; expected 1-65535')
    if len(text) > 5 or not 1 <= int(text) <= 65535:
        raise ValueError(f'port {text} is out of range; expected 1-65535')
    return int(text)


def check_host(host: str) -> None:
    """Accept an IPv4/IPv6 literal or a DNS host name; raise ValueError otherwise."""
    if not host:
        raise ValueError('host is empty; expected an IP address or a host name')
    if _is_ipv4(host) or _is_ipv6(host):
        return
    if re.fullmatch(r'[0-9.]+', host):
        raise ValueError(f'"{host}" is not a valid IPv4 address')
    if len(host) > 253 or not _HOSTNAME.fullmatch(host):
        raise ValueError(f'"{host}" is not an IP address or a host name')


def _is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _unix_path(path: str) -> str:
    if not path:
        raise ValueError('unix socket path is empty; expected an absolute path')
    if not path.startswith('/'):
        raise ValueError(f'unix socket path "{path}" is not absolute; expected /PATH')
    if len(path.encode('utf-8', 'surrogateescape')) > MAX_UNIX_PATH:
        raise ValueError(f'unix socket path "{path}" is longer than {MAX_UNIX_PATH} bytes')
    return path


# --------------------------------------------------------------------------
# Configuration objects

def _default_instance_id() -> str:
    return socket.gethostname()


@dataclass(frozen=True)
class MemberConfig:
    """One member RTPproxy of a cluster."""

    name: str
    endpoint: Endpoint
    weight: int
    capacity: int
    status: str = 'ACTIVE'
    wan_address: str | None = None
    lan_address: str | None = None
    cmd_out_address: str | None = None


@dataclass(frozen=True)
class DisconnectNotifyConfig:
    """Relay of disconnect notifications: TCP listen address and destination socket prefix."""

    inbound_host: str
    inbound_port: int
    dest_socket_prefix: str


@dataclass(frozen=True)
class ClusterConfig:
    """One cluster: its control socket and its members, in file order."""

    name: str
    endpoint: Endpoint
    members: tuple[MemberConfig, ...]
    capacity_limit: str = 'soft'
    disconnect_notify: DisconnectNotifyConfig | None = None


@dataclass(frozen=True)
class RedisConfig:
    """Session sharing through Redis; ``peers == ()`` means discover peers automatically."""

    url: str
    instance_id: str = field(default_factory=_default_instance_id)
    namespace: str = 'rtpc'
    password_file: str | None = None
    password_env: str | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_verify_hostname: bool = True
    peers: tuple[str, ...] = ()
    session_ttl: int = 86400
    final_timeout: int = 0
    resync_interval: int = 60


@dataclass(frozen=True)
class Config:
    """The whole configuration file."""

    clusters: tuple[ClusterConfig, ...]
    redis: RedisConfig | None = None


# --------------------------------------------------------------------------
# Loading and structural validation

_CHILDREN = {
    'rtp_cluster_config': ('rtp_cluster', 'redis'),
    'rtp_cluster': ('name', 'protocol', 'address', 'disconnect_notify', 'capacity_limit',
                    'rtpproxy'),
    'rtpproxy': ('name', 'protocol', 'address', 'weight', 'capacity', 'status',
                 'wan_address', 'lan_address', 'cmd_out_address'),
    'disconnect_notify': ('inbound_address', 'dest_socket_prefix'),
    'redis': ('url', 'instance_id', 'namespace', 'password_file', 'password_env', 'tls_ca',
              'tls_cert', 'tls_key', 'tls_verify_hostname', 'peers', 'session_ttl',
              'final_timeout', 'resync_interval'),
}
_ATTRIBUTES = {'capacity_limit': ('type',)}

_EXPECTED = {
    'name': 'a non-empty name',
    'protocol': 'udp, udp6 or unix',
    'address': 'HOST[:PORT] or [IPV6][:PORT] for udp/udp6, an absolute path for unix',
    'weight': 'a positive integer',
    'capacity': 'a positive integer',
    'status': 'ACTIVE or SUSPENDED',
    'wan_address': 'an IP address or host name',
    'lan_address': 'an IP address or host name',
    'cmd_out_address': 'an IP address or host name',
    'inbound_address': 'HOST:PORT',
    'dest_socket_prefix': 'an absolute socket path prefix such as /var/run/b2bua.sock',
    'url': 'redis://HOST[:PORT][/DB], rediss://HOST[:PORT][/DB] or unix:///PATH[?db=N]',
    'instance_id': '1-64 characters of A-Z a-z 0-9 . _ -',
    'namespace': '1-64 characters of A-Z a-z 0-9 . _ -',
    'password_file': 'an absolute path',
    'password_env': 'an environment variable name',
    'tls_ca': 'an absolute path',
    'tls_cert': 'an absolute path',
    'tls_key': 'an absolute path',
    'tls_verify_hostname': 'yes or no',
    'peers': 'auto or a whitespace-separated list of instance ids',
    'session_ttl': 'a positive integer (seconds)',
    'final_timeout': 'a non-negative integer (seconds, 0 = off)',
    'resync_interval': 'a positive integer (seconds)',
}


def load_config(path: str) -> Config:
    """Read and validate the configuration file at ``path``; raises ConfigError."""
    try:
        with open(path, 'rb') as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as e:
        reason = e.strerror or str(e)
        raise ConfigError(f'{path}: cannot read the configuration file: {reason}') from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f'{path}: file is larger than {MAX_CONFIG_BYTES} bytes; '
                          'expected an rtp_cluster configuration')
    return parse_config(data, path)


def parse_config(data: bytes, source: str) -> Config:
    """Validate the XML document ``data``; ``source`` names it in error messages."""
    root = _parse_xml(data, source)
    dtd = _load_dtd()
    dtd_valid = dtd.validate(root)
    # Explains most DTD violations more precisely than libxml2 does.
    _check_structure(root, source)
    if not dtd_valid:
        raise _dtd_error(dtd, source)
    return _Reader(source).config(root)


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
    if el.tag == 'capacity_limit':
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


def _shorten(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[:limit] + '...'


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

    def __init__(self, source: str) -> None:
        self.source = source

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
                             f'missing <{tag}>; expected {_EXPECTED[tag]}')
        return found[0]

    def text(self, el: etree._Element, owner: _Owner) -> str:
        value = (el.text or '').strip()
        if not value:
            raise self.error(el, owner.child_subject(el.tag),
                             f'is empty; expected {_EXPECTED[el.tag]}')
        return value

    def value(self, el: etree._Element, owner: _Owner, convert: Callable[[str], T]) -> T:
        """Converts the element text, turning a ValueError into a located ConfigError."""
        text = self.text(el, owner)
        try:
            return convert(text)
        except ValueError as e:
            raise self.error(el, owner.child_subject(el.tag), str(e)) from None

    def optional_value(self, groups: dict[str, list[etree._Element]], tag: str, owner: _Owner,
                       convert: Callable[[str], T], default: T) -> T:
        el = self.optional(groups, tag, owner)
        return default if el is None else self.value(el, owner, convert)

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
        return Config(clusters=clusters, redis=redis)

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
        name = self.value(name_el, owner, _check_name)
        self.unique_name(name_el, owner, name, names, 'among clusters')
        owner = _Owner('rtp_cluster', f'"{name}"')
        endpoint = self.endpoint(el, groups, owner)
        limit_el = self.optional(groups, 'capacity_limit', owner)
        notify_el = self.optional(groups, 'disconnect_notify', owner)
        return ClusterConfig(
            name=name,
            endpoint=endpoint,
            members=self.members(groups.get('rtpproxy', []), name),
            capacity_limit='soft' if limit_el is None else self.capacity_limit(limit_el, owner),
            disconnect_notify=(None if notify_el is None
                               else self.disconnect_notify(notify_el, name)),
        )

    def endpoint(self, el: etree._Element, groups: dict[str, list[etree._Element]],
                 owner: _Owner) -> Endpoint:
        protocol_el = self.required(el, groups, 'protocol', owner)
        protocol = self.value(protocol_el, owner, _check_protocol)
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
        inbound_el = self.required(el, groups, 'inbound_address', owner)
        host, port = self.value(inbound_el, owner, lambda text: split_host_port(text, None))
        prefix_el = self.required(el, groups, 'dest_socket_prefix', owner)
        prefix = self.value(prefix_el, owner, _check_socket_prefix)
        return DisconnectNotifyConfig(inbound_host=host, inbound_port=port,
                                      dest_socket_prefix=prefix)

    def members(self, elements: list[etree._Element], cluster: str) -> tuple[MemberConfig, ...]:
        names: dict[str, int] = {}
        return tuple(self.member(el, index, cluster, names) for index, el in enumerate(elements, 1))

    def member(self, el: etree._Element, index: int, cluster: str,
               names: dict[str, int]) -> MemberConfig:
        groups = self.group(el)
        owner = _Owner('rtpproxy', f'#{index} of rtp_cluster "{cluster}"')
        name_el = self.required(el, groups, 'name', owner)
        name = self.value(name_el, owner, _check_name)
        self.unique_name(name_el, owner, name, names, f'within rtp_cluster "{cluster}"')
        owner = _Owner('rtpproxy', f'"{name}"')
        endpoint = self.endpoint(el, groups, owner)
        return MemberConfig(
            name=name,
            endpoint=endpoint,
            weight=self.value(self.required(el, groups, 'weight', owner), owner, _positive_int),
            capacity=self.value(self.required(el, groups, 'capacity', owner), owner, _positive_int),
            status=self.value(self.required(el, groups, 'status', owner), owner, _check_status),
            wan_address=self.optional_value(groups, 'wan_address', owner, _check_host_text, None),
            lan_address=self.optional_value(groups, 'lan_address', owner, _check_host_text, None),
            cmd_out_address=self.optional_value(groups, 'cmd_out_address', owner,
                                                _check_host_text, None),
        )

    def redis(self, el: etree._Element) -> RedisConfig:
        groups = self.group(el)
        owner = _Owner('redis')
        url_el = self.required(el, groups, 'url', owner)
        url = self.value(url_el, owner, _check_redis_url)
        instance_id = self.optional_value(groups, 'instance_id', owner, _check_ident, None)
        if instance_id is None:
            instance_id = self.default_instance_id(el, owner)

        def path(tag: str) -> str | None:
            return self.optional_value(groups, tag, owner, _check_abs_path, None)

        config = RedisConfig(
            url=url,
            instance_id=instance_id,
            namespace=self.optional_value(groups, 'namespace', owner, _check_ident, 'rtpc'),
            password_file=path('password_file'),
            password_env=self.optional_value(groups, 'password_env', owner, _check_env_name, None),
            tls_ca=path('tls_ca'),
            tls_cert=path('tls_cert'),
            tls_key=path('tls_key'),
            tls_verify_hostname=self.optional_value(groups, 'tls_verify_hostname', owner,
                                                    _yes_no, True),
            peers=self.optional_value(groups, 'peers', owner, _parse_peers, ()),
            session_ttl=self.optional_value(groups, 'session_ttl', owner, _positive_int, 86400),
            final_timeout=self.optional_value(groups, 'final_timeout', owner,
                                              _non_negative_int, 0),
            resync_interval=self.optional_value(groups, 'resync_interval', owner,
                                                _positive_int, 60),
        )
        self.check_redis_combination(el, owner, config)
        return config

    def default_instance_id(self, el: etree._Element, owner: _Owner) -> str:
        hostname = _default_instance_id()
        if not _IDENT.fullmatch(hostname):
            raise self.error(el, owner.subject(),
                             f'no <instance_id> and the host name "{hostname}" is not usable as '
                             f'one; expected <instance_id> with {_EXPECTED["instance_id"]}')
        return hostname

    def check_redis_combination(self, el: etree._Element, owner: _Owner,
                                config: RedisConfig) -> None:
        if config.password_file and config.password_env:
            raise self.error(el, owner.subject(), 'both <password_file> and <password_env>; '
                             'expected at most one of them')
        if (config.tls_cert is None) != (config.tls_key is None):
            raise self.error(el, owner.subject(), '<tls_cert> without <tls_key> or vice versa; '
                             'expected both or neither')
        uses_tls_files = config.tls_ca or config.tls_cert
        if uses_tls_files and not config.url.lower().startswith('rediss:'):
            raise self.error(el, owner.subject(), 'TLS files given but <url> is not rediss://; '
                             'expected a rediss:// url')


# ---- value checks: each returns the normalised value or raises ValueError

def _check_name(text: str) -> str:
    if any(ord(c) < 0x20 or ord(c) == 0x7f for c in text):
        raise ValueError(f'{_shorten(text)!r} contains control characters; expected printable text')
    return text


def _check_protocol(text: str) -> str:
    proto = text.lower()
    if proto not in CONFIG_PROTOCOLS:
        raise ValueError(f'"{text}" is not a protocol; expected udp, udp6 or unix')
    return proto


def _positive_int(text: str) -> int:
    value = _non_negative_int(text)
    if value == 0:
        raise ValueError(f'"{text}" is not a positive integer')
    return value


def _non_negative_int(text: str) -> int:
    if not _DIGITS.fullmatch(text):
        raise ValueError(f'"{_shorten(text)}" is not a positive integer')
    significant = text.lstrip('0')
    # Also keeps int() away from its limit on very long digit strings.
    if len(significant) > 18:
        raise ValueError(f'"{_shorten(text)}" is too large; expected at most 18 digits')
    return int(significant or '0')


def _check_status(text: str) -> str:
    status = text.upper()
    if status not in MEMBER_STATUSES:
        raise ValueError(f'"{text}" is not a status; expected ACTIVE or SUSPENDED')
    return status


def _check_host_text(text: str) -> str:
    check_host(text)
    return text


def _check_socket_prefix(text: str) -> str:
    path = text[5:] if text[:5].lower() == 'unix:' else text
    if not path.startswith('/'):
        raise ValueError(f'"{text}" is not an absolute path; expected /PATH or unix:/PATH')
    return text


def _check_abs_path(text: str) -> str:
    if not text.startswith('/'):
        raise ValueError(f'"{text}" is not an absolute path; expected /PATH')
    return text


def _check_ident(text: str) -> str:
    if not _IDENT.fullmatch(text):
        raise ValueError(f'"{_shorten(text)}" is not valid; expected {_EXPECTED["instance_id"]}')
    return text


def _check_env_name(text: str) -> str:
    if not _ENV_NAME.fullmatch(text):
        raise ValueError(f'"{text}" is not an environment variable name; '
                         'expected letters, digits and _ not starting with a digit')
    return text


def _yes_no(text: str) -> bool:
    answer = text.lower()
    if answer not in ('yes', 'no'):
        raise ValueError(f'"{text}" is not yes or no')
    return answer == 'yes'


def _parse_peers(text: str) -> tuple[str, ...]:
    tokens = text.split()
    if [t.lower() for t in tokens] == ['auto']:
        return ()
    seen: set[str] = set()
    for token in tokens:
        if token.lower() == 'auto':
            raise ValueError('"auto" mixed with instance ids; '
                             'expected either auto or a list of ids')
        _check_ident(token)
        if token in seen:
            raise ValueError(f'instance id "{token}" is listed twice; expected distinct ids')
        seen.add(token)
    return tuple(tokens)


def _check_redis_url(text: str) -> str:
    try:
        parts = urlsplit(text)
        scheme = parts.scheme.lower()
        if scheme in ('redis', 'rediss'):
            _check_redis_tcp_url(parts)
        elif scheme == 'unix':
            _check_redis_unix_url(parts)
        else:
            raise ValueError(f'scheme "{parts.scheme}" is not supported; '
                             f'expected {_EXPECTED["url"]}')
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
    _unix_path(parts.path)


def _check_redis_query(query: str) -> None:
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key != 'db':
            raise ValueError(f'query parameter "{key}" is not supported; expected only db')
        if not re.fullmatch(r'[0-9]{1,5}', value):
            raise ValueError(f'database "{value}" is not valid; expected a number')


# --------------------------------------------------------------------------
# Writing back

def config_to_xml(config: Config) -> bytes:
    """Serialise ``config`` as an indented document that parse_config reads back equal."""
    root = etree.Element('rtp_cluster_config')
    for cluster in config.clusters:
        _cluster_xml(etree.SubElement(root, 'rtp_cluster'), cluster)
    if config.redis is not None:
        _redis_xml(etree.SubElement(root, 'redis'), config.redis)
    return etree.tostring(root, pretty_print=True, xml_declaration=True, encoding='UTF-8')


def _leaf(parent: etree._Element, tag: str, text: object) -> None:
    etree.SubElement(parent, tag).text = str(text)


def _leaves(parent: etree._Element, pairs: Iterable[tuple[str, object]]) -> None:
    for tag, text in pairs:
        if text is not None:
            _leaf(parent, tag, text)


def _cluster_xml(el: etree._Element, cluster: ClusterConfig) -> None:
    _leaves(el, [('name', cluster.name), ('protocol', cluster.endpoint.protocol.upper()),
                 ('address', cluster.endpoint.address)])
    notify = cluster.disconnect_notify
    if notify is not None:
        dn = etree.SubElement(el, 'disconnect_notify')
        host = f'[{notify.inbound_host}]' if ':' in notify.inbound_host else notify.inbound_host
        _leaves(dn, [('inbound_address', f'{host}:{notify.inbound_port}'),
                     ('dest_socket_prefix', notify.dest_socket_prefix)])
    etree.SubElement(el, 'capacity_limit', type=cluster.capacity_limit)
    for member in cluster.members:
        _member_xml(etree.SubElement(el, 'rtpproxy'), member)


def _member_xml(el: etree._Element, member: MemberConfig) -> None:
    _leaves(el, [
        ('name', member.name), ('protocol', member.endpoint.protocol.upper()),
        ('address', member.endpoint.address), ('weight', member.weight),
        ('capacity', member.capacity), ('status', member.status),
        ('wan_address', member.wan_address), ('lan_address', member.lan_address),
        ('cmd_out_address', member.cmd_out_address),
    ])


def _redis_xml(el: etree._Element, redis: RedisConfig) -> None:
    _leaves(el, [
        ('url', redis.url), ('instance_id', redis.instance_id), ('namespace', redis.namespace),
        ('password_file', redis.password_file), ('password_env', redis.password_env),
        ('tls_ca', redis.tls_ca), ('tls_cert', redis.tls_cert), ('tls_key', redis.tls_key),
        ('tls_verify_hostname', 'yes' if redis.tls_verify_hostname else 'no'),
        ('peers', ' '.join(redis.peers) if redis.peers else 'auto'),
        ('session_ttl', redis.session_ttl), ('final_timeout', redis.final_timeout),
        ('resync_interval', redis.resync_interval),
    ])
