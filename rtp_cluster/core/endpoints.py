"""Socket addresses: the endpoint grammar of the configuration file and the command line.

Control sockets (cluster and member) are ``udp``, ``udp6`` or ``unix``; the admin socket
is ``unix`` or ``tcp``.  Host names are only checked for their form here: resolving them
is the adapters' business.  Every parser raises ValueError with a message that names the
problem and what was expected.
"""
from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass

__all__ = [
    'Endpoint', 'parse_endpoint', 'parse_socket_spec', 'parse_admin_socket', 'split_host_port',
    'parse_port', 'check_host', 'unix_path', 'DEFAULT_PORT', 'DEFAULT_ADMIN_TCP_PORT',
    'CONFIG_PROTOCOLS', 'MAX_UNIX_PATH',
]

DEFAULT_PORT = 22222
DEFAULT_ADMIN_TCP_PORT = 12345       # as the original rtp_cluster_client
CONFIG_PROTOCOLS = ('udp', 'udp6', 'unix')
SPEC_PROTOCOLS = CONFIG_PROTOCOLS + ('tcp',)
# sun_path holds 108 bytes on Linux, including the terminating NUL.
MAX_UNIX_PATH = 107

_DIGITS = re.compile(r'[0-9]+')
_LABEL = r'[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?'
_HOSTNAME = re.compile(rf'{_LABEL}(?:\.{_LABEL})*\.?')


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
        return Endpoint('unix', path=unix_path(text))
    return _net_endpoint(proto, text, DEFAULT_PORT)


def parse_socket_spec(spec: str) -> Endpoint:
    """Parse a command-line socket.

    Accepts ``udp:H[:P]``, ``udp6:H[:P]``, ``unix:/P``, ``/P`` and ``tcp:H:P``.

    Raises ValueError.
    """
    text = spec.strip()
    if text.startswith('/'):
        return Endpoint('unix', path=unix_path(text))
    proto, colon, rest = text.partition(':')
    proto = proto.lower()
    if not colon or proto not in SPEC_PROTOCOLS:
        raise ValueError(
            f'"{spec}" is not a socket; expected udp:HOST[:PORT], udp6:HOST[:PORT], '
            'unix:/PATH, /PATH or tcp:HOST:PORT')
    if proto == 'unix':
        return Endpoint('unix', path=unix_path(rest))
    # The admin TCP socket has no conventional port, so one must be given.
    default_port = None if proto == 'tcp' else DEFAULT_PORT
    return _net_endpoint(proto, rest, default_port)


_SCHEME = re.compile(r'^[A-Za-z][A-Za-z0-9]*:')
_ADMIN_FORMS = '/PATH, unix:/PATH or tcp:HOST:PORT (port %d if omitted)' % DEFAULT_ADMIN_TCP_PORT


def parse_admin_socket(spec: str) -> Endpoint:
    """The admin socket of the daemon's and the client's ``-s``.

    ``/path``, a relative path, ``unix:path`` or ``tcp:HOST[:PORT]`` (port 12345, the
    original client's, if omitted).  Relative unix paths are made absolute (the daemon
    changes to /).  Raises ValueError.
    """
    text = spec.strip()
    scheme = _SCHEME.match(text)
    if scheme is None or text[:5].lower() == 'unix:':
        path = text[5:] if scheme else text
        if not path:
            raise ValueError(f'"{spec}": the unix socket path is empty')
        return Endpoint('unix', path=unix_path(os.path.abspath(path)))
    proto = scheme.group()[:-1].lower()
    if proto in CONFIG_PROTOCOLS:
        raise ValueError(f'"{spec}": the admin socket must be unix: or tcp:; '
                         f'expected {_ADMIN_FORMS}')
    if proto != 'tcp':
        raise ValueError(f'"{spec}" is not a socket; expected {_ADMIN_FORMS}')
    return _net_endpoint('tcp', text[scheme.end():], DEFAULT_ADMIN_TCP_PORT)


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


def unix_path(path: str) -> str:
    """An absolute unix socket path that fits sun_path; raises ValueError."""
    if not path:
        raise ValueError('unix socket path is empty; expected an absolute path')
    if not path.startswith('/'):
        raise ValueError(f'unix socket path "{path}" is not absolute; expected /PATH')
    if len(path.encode('utf-8', 'surrogateescape')) > MAX_UNIX_PATH:
        raise ValueError(f'unix socket path "{path}" is longer than {MAX_UNIX_PATH} bytes')
    return path
