"""Tests of rtp_cluster.config: validation, error messages, write-back."""

from __future__ import annotations

import os
from dataclasses import FrozenInstanceError, replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtp_cluster.core import config_document
from rtp_cluster.core.config import (
    ClusterConfig, Config, ConfigError, DisconnectNotifyConfig, Endpoint, MemberConfig,
    RedisConfig, SentinelConfig, config_to_xml, load_config, parse_config,
)

REPO = Path(__file__).resolve().parents[2]
SRC = 'bad.xml'

# The example of the issue, written like the original rtp_cluster's files.
ORIGINAL_EXAMPLE = b"""\
<rtp_cluster_config>
  <rtp_cluster>
    <name>Supercluster#1</name>
    <protocol>UDP</protocol>
    <address>192.168.50.4:44</address>
    <disconnect_notify>
      <inbound_address>192.168.222.1:12131</inbound_address>
      <dest_socket_prefix>/var/run/b2bua.sock</dest_socket_prefix>
    </disconnect_notify>
    <capacity_limit type="hard" />
    <rtpproxy>
      <name>RTPPROXY1</name>
      <protocol>UDP</protocol>
      <address>192.168.222.1:4444</address>
      <weight>100</weight>
      <capacity>2500</capacity>
      <status>ACTIVE</status>
      <wan_address>1.2.3.4</wan_address>
    </rtpproxy>
    <rtpproxy>
      <name>RTPPROXY2</name>
      <protocol>UNIX</protocol>
      <address>/var/run/pr2.sock</address>
      <weight>3</weight>
      <capacity>1500</capacity>
      <status>SUSPENDED</status>
    </rtpproxy>
  </rtp_cluster>
</rtp_cluster_config>
"""


# --------------------------------------------------------------------------
# Document builders for the invalid-file cases

def member(name='R1', protocol='UDP', address='127.0.0.1:22223', weight='100',
           capacity='2500', status='ACTIVE', omit=(), extra='') -> str:
    fields = {'name': name, 'protocol': protocol, 'address': address, 'weight': weight,
              'capacity': capacity, 'status': status}
    lines = [f'      <{tag}>{value}</{tag}>' for tag, value in fields.items() if tag not in omit]
    if extra:
        lines.append(f'      {extra}')
    return '\n'.join(['    <rtpproxy>', *lines, '    </rtpproxy>'])


def cluster(*members, name='C1', protocol='UDP', address='127.0.0.1:22222',
            omit=(), extra='') -> str:
    fields = {'name': name, 'protocol': protocol, 'address': address}
    lines = [f'    <{tag}>{value}</{tag}>' for tag, value in fields.items() if tag not in omit]
    if extra:
        lines.append(f'    {extra}')
    body = members if members else (member(),)
    return '\n'.join(['  <rtp_cluster>', *lines, *body, '  </rtp_cluster>'])


def document(*clusters: str, extra: str = '') -> bytes:
    parts = ['<rtp_cluster_config>', *(clusters or (cluster(),))]
    if extra:
        parts.append(extra)
    parts.append('</rtp_cluster_config>')
    return ('\n'.join(parts) + '\n').encode()


def redis(*children: str) -> str:
    return '\n'.join(['  <redis>', *(f'    {c}' for c in children), '  </redis>'])


def line_of(data: bytes, marker: str, occurrence: int = 1) -> int:
    seen = 0
    for number, line in enumerate(data.decode().splitlines(), 1):
        if marker in line:
            seen += 1
            if seen == occurrence:
                return number
    raise AssertionError(f'marker {marker!r} not in document')


def config_error(data: bytes) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(data, SRC)
    return str(info.value)


# Each case: (document, marker of the reported line, occurrence, expected text after "bad.xml:N: ")
INVALID = {
    'unknown element': (
        document(cluster(member(extra='<colour>red</colour>'))), '<colour>', 1,
        '<colour> in <rtpproxy>: unknown element; expected one of <name>, <protocol>, '
        '<address>, <weight>, <capacity>, <status>, <wan_address>, <lan_address>, '
        '<cmd_out_address>'),
    'unknown top-level element': (
        document(extra='<logging>yes</logging>'), '<logging>', 1,
        '<logging> in <rtp_cluster_config>: unknown element; '
        'expected one of <rtp_cluster>, <redis>, <http>, <log_level>'),
    'wrong root': (
        b'<rtp_clusters>\n</rtp_clusters>\n', '<rtp_clusters>', 1,
        '<rtp_clusters>: wrong root element; expected <rtp_cluster_config>'),
    'no cluster': (
        b'<rtp_cluster_config>\n</rtp_cluster_config>\n', '<rtp_cluster_config>', 1,
        '<rtp_cluster_config>: no <rtp_cluster>; expected at least one'),
    'missing member name': (
        document(cluster(member(omit=('name',)))), '<rtpproxy>', 1,
        '<rtpproxy> #1 of rtp_cluster "C1": missing <name>; expected a non-empty name'),
    'missing cluster name': (
        document(cluster(omit=('name',))), '<rtp_cluster>', 1,
        '<rtp_cluster> #1: missing <name>; expected a non-empty name'),
    'missing cluster protocol': (
        document(cluster(omit=('protocol',))), '<rtp_cluster>', 1,
        '<rtp_cluster> "C1": missing <protocol>; expected udp, udp6 or unix'),
    'missing member protocol': (
        document(cluster(member(omit=('protocol',)))), '<rtpproxy>', 1,
        '<rtpproxy> "R1": missing <protocol>; expected udp, udp6 or unix'),
    'missing address': (
        document(cluster(member(omit=('address',)))), '<rtpproxy>', 1,
        '<rtpproxy> "R1": missing <address>; expected HOST[:PORT] or [IPV6][:PORT] for '
        'udp/udp6, an absolute path for unix'),
    'missing weight': (
        document(cluster(member(omit=('weight',)))), '<rtpproxy>', 1,
        '<rtpproxy> "R1": missing <weight>; expected a positive integer'),
    'missing capacity': (
        document(cluster(member(omit=('capacity',)))), '<rtpproxy>', 1,
        '<rtpproxy> "R1": missing <capacity>; expected a positive integer'),
    'missing status': (
        document(cluster(member(omit=('status',)))), '<rtpproxy>', 1,
        '<rtpproxy> "R1": missing <status>; expected ACTIVE or SUSPENDED'),
    'empty name': (
        document(cluster(member(name='  '))), '<name>  </name>', 1,
        '<name> of rtpproxy #1 of rtp_cluster "C1": is empty; expected a non-empty name'),
    'duplicate weight': (
        document(cluster(member(extra='<weight>5</weight>'))), '<weight>', 2,
        '<weight> of rtpproxy "R1": duplicate (first at line 10); '
        'expected exactly one <weight> in <rtpproxy>'),
    'duplicate cluster name': (
        document(cluster(), cluster(address='127.0.0.1:22299')), '<name>C1</name>', 2,
        '<name> of rtp_cluster #2: duplicate rtp_cluster name "C1" (first at line 3); '
        'expected names unique among clusters'),
    'duplicate member name': (
        document(cluster(member(), member(address='127.0.0.1:22224'))), '<name>R1</name>', 2,
        '<name> of rtpproxy #2 of rtp_cluster "C1": duplicate rtpproxy name "R1" '
        '(first at line 7); expected names unique within rtp_cluster "C1"'),
    'duplicate control socket': (
        document(cluster(), cluster(name='C2')), '<rtp_cluster>', 2,
        '<rtp_cluster> "C2": control socket udp:127.0.0.1:22222 is already used by '
        'rtp_cluster "C1" (line 2); expected distinct addresses'),
    'bad member protocol': (
        document(cluster(member(protocol='tcp'))), '<protocol>tcp', 1,
        '<protocol> of rtpproxy "R1": "tcp" is not a protocol; expected udp, udp6 or unix'),
    'bad cluster protocol': (
        document(cluster(protocol='sctp')), '<protocol>sctp', 1,
        '<protocol> of rtp_cluster "C1": "sctp" is not a protocol; expected udp, udp6 or unix'),
    'weight zero': (
        document(cluster(member(weight='0'))), '<weight>', 1,
        '<weight> of rtpproxy "R1": "0" is not a positive integer'),
    'negative capacity': (
        document(cluster(member(capacity='-5'))), '<capacity>', 1,
        '<capacity> of rtpproxy "R1": "-5" is not a positive integer'),
    'non-integer weight': (
        document(cluster(member(weight='abc'))), '<weight>', 1,
        '<weight> of rtpproxy "R1": "abc" is not a positive integer'),
    'fractional capacity': (
        document(cluster(member(capacity='2.5'))), '<capacity>', 1,
        '<capacity> of rtpproxy "R1": "2.5" is not a positive integer'),
    'bad port': (
        document(cluster(member(address='127.0.0.1:abc'))), '127.0.0.1:abc', 1,
        '<address> of rtpproxy "R1": port "abc" is not a number; expected 1-65535'),
    'port out of range': (
        document(cluster(address='127.0.0.1:70000')), '70000', 1,
        '<address> of rtp_cluster "C1": port 70000 is out of range; expected 1-65535'),
    'port zero': (
        document(cluster(address='127.0.0.1:0')), ':0<', 1,
        '<address> of rtp_cluster "C1": port 0 is out of range; expected 1-65535'),
    'bad IPv4 address': (
        document(cluster(member(address='300.1.2.3:5000'))), '300.1.2.3', 1,
        '<address> of rtpproxy "R1": "300.1.2.3" is not a valid IPv4 address'),
    'IPv6 with udp': (
        document(cluster(member(address='[::1]:5000'))), '[::1]', 1,
        '<address> of rtpproxy "R1": "::1" is an IPv6 address; use protocol udp6'),
    'unbracketed IPv6 garbage': (
        document(cluster(member(protocol='UDP6', address='::zz:1'))), '::zz:1', 1,
        '<address> of rtpproxy "R1": "::zz:1" is neither HOST:PORT nor an IPv6 address; '
        'write IPv6 as [IPV6]:PORT'),
    'relative unix path': (
        document(cluster(member(protocol='UNIX', address='var/run/r1.sock'))), 'var/run/r1', 1,
        '<address> of rtpproxy "R1": unix socket path "var/run/r1.sock" is not absolute; '
        'expected /PATH'),
    'bad status': (
        document(cluster(member(status='BUSY'))), '<status>', 1,
        '<status> of rtpproxy "R1": "BUSY" is not a status; expected ACTIVE or SUSPENDED'),
    'bad capacity_limit type': (
        document(cluster(extra='<capacity_limit type="medium" />')), '<capacity_limit', 1,
        '<capacity_limit> of rtp_cluster "C1": type "medium" is not valid; expected soft or hard'),
    'capacity_limit with content': (
        document(cluster(extra='<capacity_limit type="soft">x</capacity_limit>')),
        '<capacity_limit', 1,
        '<capacity_limit>: is not empty; expected <capacity_limit type="soft|hard" />'),
    'unknown attribute': (
        document(cluster(extra='<capacity_limit kind="soft" />')), '<capacity_limit', 1,
        '<capacity_limit>: unknown attribute "kind"; expected only type'),
    'text inside container': (
        document(cluster(member(extra='stray words'))), '<rtpproxy>', 1,
        '<rtpproxy>: unexpected text "stray words"; expected only child elements'),
    'element inside leaf': (
        document(cluster(member(name='<b>R1</b>'))), '<b>R1', 1,
        '<b> in <name>: unexpected element; expected only text'),
    'bad inbound_address': (
        document(cluster(extra='<disconnect_notify><inbound_address>192.168.222.1'
                               '</inbound_address><dest_socket_prefix>/var/run/b2bua.sock'
                               '</dest_socket_prefix></disconnect_notify>')),
        '<inbound_address>', 1,
        '<inbound_address> of disconnect_notify of rtp_cluster "C1": "192.168.222.1" has no '
        'port; expected HOST:PORT'),
    'relative dest_socket_prefix': (
        document(cluster(extra='<disconnect_notify><inbound_address>127.0.0.1:12131'
                               '</inbound_address><dest_socket_prefix>unix:b2bua.sock'
                               '</dest_socket_prefix></disconnect_notify>')),
        '<dest_socket_prefix>', 1,
        '<dest_socket_prefix> of disconnect_notify of rtp_cluster "C1": "unix:b2bua.sock" is '
        'not an absolute path; expected /PATH or unix:/PATH'),
    'missing dest_socket_prefix': (
        document(cluster(extra='<disconnect_notify><inbound_address>127.0.0.1:12131'
                               '</inbound_address></disconnect_notify>')),
        '<disconnect_notify>', 1,
        '<disconnect_notify> of rtp_cluster "C1": missing <dest_socket_prefix>; expected an '
        'absolute socket path prefix such as /var/run/b2bua.sock'),
    'two redis elements': (
        document(cluster(), redis('<url>redis://127.0.0.1</url>'),
                 extra=redis('<url>redis://127.0.0.2</url>')),
        '<redis>', 2,
        '<redis> of rtp_cluster_config: duplicate (first at line 15); '
        'expected at most one <redis> in <rtp_cluster_config>'),
    'redis without url': (
        document(extra=redis('<namespace>x</namespace>')), '<redis>', 1,
        '<redis>: missing <url>; expected redis://HOST[:PORT][/DB], rediss://HOST[:PORT][/DB] '
        'or unix:///PATH[?db=N], or <sentinel master="NAME">HOST:PORT HOST:PORT ...</sentinel>'),
    'url and sentinel': (
        document(extra=redis('<url>redis://127.0.0.1</url>',
                             '<sentinel master="m">127.0.0.1:26379</sentinel>')), '<redis>', 1,
        '<redis>: both <url> and <sentinel>; expected one of them (with <sentinel>, the '
        'sentinels name the server)'),
    'sentinel without master': (
        document(extra=redis('<sentinel>127.0.0.1:26379</sentinel>')), '<sentinel>', 1,
        '<sentinel> of redis: missing attribute master; expected '
        '<sentinel master="NAME">HOST:PORT HOST:PORT ...</sentinel>'),
    'sentinel master with a space': (
        document(extra=redis('<sentinel master="my master">127.0.0.1:26379</sentinel>')),
        '<sentinel ', 1,
        '<sentinel> of redis: master name "my master" contains white space or control '
        'characters; expected one word'),
    'sentinel without port': (
        document(extra=redis('<sentinel master="m">127.0.0.1:26379 10.0.0.2</sentinel>')),
        '<sentinel ', 1,
        '<sentinel> of redis: "10.0.0.2" is not HOST:PORT; expected HOST:PORT or [IPV6]:PORT, '
        'separated by white space (sentinels usually listen on 26379)'),
    'sentinel listed twice': (
        document(extra=redis('<sentinel master="m">h1:26379 h1:26379</sentinel>')),
        '<sentinel ', 1,
        '<sentinel> of redis: "h1:26379" is listed twice; expected distinct sentinels'),
    'sentinel empty': (
        document(extra=redis('<sentinel master="m"> </sentinel>')), '<sentinel ', 1,
        '<sentinel> of redis: is empty; expected '
        '<sentinel master="NAME">HOST:PORT HOST:PORT ...</sentinel>'),
    'sentinel bad port': (
        document(extra=redis('<sentinel master="m">h1:0</sentinel>')), '<sentinel ', 1,
        '<sentinel> of redis: "h1:0": the port is not valid; expected 1-65535'),
    'sentinel bad db': (
        document(extra=redis('<sentinel master="m" db="x">h1:1</sentinel>')), '<sentinel ', 1,
        '<sentinel> of redis: "x" is not a positive integer'),
    'sentinel bad tls': (
        document(extra=redis('<sentinel master="m" tls="on">h1:1</sentinel>')), '<sentinel ', 1,
        '<sentinel> of redis: "on" is not yes or no'),
    'sentinel unknown attribute': (
        document(extra=redis('<sentinel master="m" quorum="2">h1:1</sentinel>')),
        '<sentinel ', 1,
        '<sentinel>: unknown attribute "quorum"; expected only master, db, tls'),
    'sentinel with a child': (
        document(extra=redis('<sentinel master="m"><url>x</url></sentinel>')), '<url>', 1,
        '<url> in <sentinel>: unexpected element; expected only text'),
    'sentinel password without sentinel': (
        document(extra=redis('<url>redis://127.0.0.1</url>',
                             '<sentinel_password_file>/etc/s</sentinel_password_file>')),
        '<redis>', 1,
        '<redis>: <sentinel_password_file> without <sentinel>; expected '
        '<sentinel master="NAME">HOST:PORT HOST:PORT ...</sentinel>'),
    'sentinel tls files without tls': (
        document(extra=redis('<sentinel master="m">h1:1</sentinel>', '<tls_ca>/etc/ca</tls_ca>')),
        '<redis>', 1,
        '<redis>: TLS files given but <sentinel> has no tls="yes"; expected '
        '<sentinel tls="yes" ...>'),
    'bad redis url scheme': (
        document(extra=redis('<url>http://127.0.0.1:6379</url>')), '<url>', 1,
        '<url> of redis: "http://127.0.0.1:6379": scheme "http" is not supported; expected '
        'redis://HOST[:PORT][/DB], rediss://HOST[:PORT][/DB] or unix:///PATH[?db=N]'),
    'password in redis url': (
        document(extra=redis('<url>redis://user:secret@127.0.0.1</url>')), '<url>', 1,
        '<url> of redis: "redis://user:secret@127.0.0.1": a password must not be written in '
        'the url; expected <password_file> or <password_env>'),
    'bad redis port': (
        document(extra=redis('<url>redis://127.0.0.1:99999</url>')), '<url>', 1,
        '<url> of redis: "redis://127.0.0.1:99999": the port is not valid; expected 1-65535'),
    'bad redis database': (
        document(extra=redis('<url>redis://127.0.0.1/zero</url>')), '<url>', 1,
        '<url> of redis: "redis://127.0.0.1/zero": database "zero" is not valid; '
        'expected a number'),
    'redis query password': (
        document(extra=redis('<url>unix:///run/r.sock?password=x</url>')), '<url>', 1,
        '<url> of redis: "unix:///run/r.sock?password=x": query parameter "password" is not '
        'supported; expected only db'),
    'bad instance_id': (
        document(extra=redis('<url>redis://127.0.0.1</url>', '<instance_id>node a!</instance_id>')),
        '<instance_id>', 1,
        '<instance_id> of redis: "node a!" is not valid; expected 1-64 characters of '
        'A-Z a-z 0-9 . _ -'),
    'bad tls_verify_hostname': (
        document(extra=redis('<url>rediss://127.0.0.1</url>',
                             '<tls_verify_hostname>maybe</tls_verify_hostname>')),
        '<tls_verify_hostname>', 1,
        '<tls_verify_hostname> of redis: "maybe" is not yes or no'),
    'tls files without rediss': (
        document(extra=redis('<url>redis://127.0.0.1</url>', '<tls_ca>/etc/ca.pem</tls_ca>')),
        '<redis>', 1,
        '<redis>: TLS files given but <url> is not rediss://; expected a rediss:// url'),
    'tls_cert without tls_key': (
        document(extra=redis('<url>rediss://127.0.0.1</url>', '<tls_cert>/etc/c.pem</tls_cert>')),
        '<redis>', 1,
        '<redis>: <tls_cert> without <tls_key> or vice versa; expected both or neither'),
    'both password sources': (
        document(extra=redis('<url>redis://127.0.0.1</url>', '<password_env>PW</password_env>',
                             '<password_file>/etc/pw</password_file>')),
        '<redis>', 1,
        '<redis>: both <password_file> and <password_env>; expected at most one of them'),
    'peers mixing auto': (
        document(extra=redis('<url>redis://127.0.0.1</url>', '<peers>auto node-b</peers>')),
        '<peers>', 1,
        '<peers> of redis: "auto" mixed with instance ids; expected either auto or a list of ids'),
    'negative final_timeout': (
        document(extra=redis('<url>redis://127.0.0.1</url>', '<final_timeout>-1</final_timeout>')),
        '<final_timeout>', 1,
        '<final_timeout> of redis: "-1" is not a positive integer'),
    'reconnect bounds reversed': (
        document(extra=redis('<url>redis://127.0.0.1</url>',
                             '<reconnect_min_ms>2000</reconnect_min_ms>',
                             '<reconnect_max_ms>500</reconnect_max_ms>')),
        '<redis>', 1,
        '<redis>: <reconnect_min_ms> 2000 is above <reconnect_max_ms> 500; expected min <= max'),
    'command timeout too short': (
        document(extra=redis('<url>redis://127.0.0.1</url>',
                             '<command_timeout_ms>5</command_timeout_ms>')),
        '<command_timeout_ms>', 1,
        '<command_timeout_ms> of redis: "5" is out of range; expected 10 to 600000'),
    'connect timeout not a number': (
        document(extra=redis('<url>redis://127.0.0.1</url>',
                             '<connect_timeout_ms>1s</connect_timeout_ms>')),
        '<connect_timeout_ms>', 1,
        '<connect_timeout_ms> of redis: "1s" is not a positive integer'),
    'keepalive too long': (
        document(extra=redis('<url>redis://127.0.0.1</url>',
                             '<tcp_keepalive>99999</tcp_keepalive>')),
        '<tcp_keepalive>', 1,
        '<tcp_keepalive> of redis: "99999" is out of range; expected 0 to 7200'),
    'degraded_after zero': (
        document(extra=redis('<url>redis://127.0.0.1</url>',
                             '<degraded_after>0</degraded_after>')),
        '<degraded_after>', 1,
        '<degraded_after> of redis: "0" is out of range; expected 1 to 1000000'),
    'bad configure_notifications': (
        document(extra=redis('<url>redis://127.0.0.1</url>',
                             '<configure_notifications>on</configure_notifications>')),
        '<configure_notifications>', 1,
        '<configure_notifications> of redis: "on" is not yes or no'),
    'zero session_ttl': (
        document(extra=redis('<url>redis://127.0.0.1</url>', '<session_ttl>0</session_ttl>')),
        '<session_ttl>', 1,
        '<session_ttl> of redis: "0" is not a positive integer'),
    'reply_cache_bytes below the minimum': (
        document(cluster(extra='<reply_cache_bytes>1048575</reply_cache_bytes>')),
        '<reply_cache_bytes>', 1,
        '<reply_cache_bytes> of rtp_cluster "C1": 1048575 is too small; '
        'expected a number of bytes, at least 1048576'),
    'reply_cache_bytes not a number': (
        document(cluster(extra='<reply_cache_bytes>64M</reply_cache_bytes>')),
        '<reply_cache_bytes>', 1,
        '<reply_cache_bytes> of rtp_cluster "C1": "64M" is not a positive integer'),
    'reply_cache_bytes of a unix cluster': (
        document(cluster(protocol='unix', address='/run/c.sock',
                         extra='<reply_cache_bytes>2000000</reply_cache_bytes>')),
        '<reply_cache_bytes>', 1,
        '<reply_cache_bytes> of rtp_cluster "C1": a unix control socket has no reply cache; '
        'expected it only in udp and udp6 clusters'),
    'max_sessions zero': (
        document(cluster(extra='<max_sessions>0</max_sessions>')),
        '<max_sessions>', 1,
        '<max_sessions> of rtp_cluster "C1": "0" is not a positive integer'),
    'max_sessions not a number': (
        document(cluster(extra='<max_sessions>200k</max_sessions>')),
        '<max_sessions>', 1,
        '<max_sessions> of rtp_cluster "C1": "200k" is not a positive integer'),
    'two max_sessions': (
        document(cluster(extra='<max_sessions>5</max_sessions><max_sessions>6</max_sessions>')),
        '<max_sessions>', 1,
        '<max_sessions> of rtp_cluster "C1": duplicate (first at line 6); '
        'expected at most one <max_sessions> in <rtp_cluster>'),
    'two reply_cache_bytes': (
        document(cluster(extra='<reply_cache_bytes>2000000</reply_cache_bytes>'
                               '<reply_cache_bytes>2000000</reply_cache_bytes>')),
        '<reply_cache_bytes>', 1,
        '<reply_cache_bytes> of rtp_cluster "C1": duplicate (first at line 6); '
        'expected at most one <reply_cache_bytes> in <rtp_cluster>'),
}


@pytest.mark.parametrize('case', sorted(INVALID))
def test_invalid_file_is_reported_with_line_element_and_expectation(case):
    data, marker, occurrence, expected = INVALID[case]
    assert config_error(data) == f'{SRC}:{line_of(data, marker, occurrence)}: {expected}'


def test_not_well_formed_xml_reports_line_and_reason():
    data = document(cluster(member(name='R1</nam>')))
    message = config_error(data)
    assert message.startswith(f'{SRC}:{line_of(data, "</nam>")}: not well-formed XML: '
                              'Opening and ending tag mismatch: name')
    assert '(column ' in message


def test_undefined_entity_is_not_well_formed():
    message = config_error(document(cluster(member(name='R&nope;'))))
    assert message.startswith(f'{SRC}:7: not well-formed XML: Entity \'nope\' not defined')


def test_internal_entity_is_not_expanded():
    data = (b'<!DOCTYPE rtp_cluster_config [<!ENTITY big "RRRRRRRR">]>\n'
            + document(cluster(member(name='&big;'))))
    assert config_error(data) == (f'{SRC}:8: entity reference &big;: not supported; '
                                  'expected plain text')


@pytest.mark.parametrize('data', [b'', b'  \n\t\n'])
def test_empty_file(data):
    assert config_error(data) == (f'{SRC}: file is empty; '
                                  'expected an <rtp_cluster_config> document')


def test_missing_file_names_file_and_os_reason(tmp_path):
    path = tmp_path / 'nowhere.xml'
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert str(info.value) == (f'{path}: cannot read the configuration file: '
                               'No such file or directory')


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(str(tmp_path))
    assert str(info.value) == f'{tmp_path}: cannot read the configuration file: Is a directory'


@pytest.mark.skipif(os.geteuid() == 0, reason='root reads unreadable files')
def test_unreadable_file(tmp_path):
    path = tmp_path / 'secret.xml'
    path.write_bytes(ORIGINAL_EXAMPLE)
    path.chmod(0)
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert str(info.value) == f'{path}: cannot read the configuration file: Permission denied'


def test_load_config_names_the_file_in_errors(tmp_path):
    path = tmp_path / 'rtp_cluster.xml'
    data = document(cluster(member(name='RTPPROXY1', weight='abc')))
    path.write_bytes(data)
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert str(info.value) == (f'{path}:{line_of(data, "<weight>")}: <weight> of rtpproxy '
                               '"RTPPROXY1": "abc" is not a positive integer')


def test_hostname_unusable_as_default_instance_id():
    data = document(extra=redis('<url>redis://127.0.0.1</url>'))
    with pytest.raises(ConfigError) as info:
        parse_config(data, SRC, host_name=lambda: 'x' * 65)
    assert str(info.value) == (
        f'{SRC}:{line_of(data, "<redis>")}: <redis>: no <instance_id> and the host name '
        f'"{"x" * 65}" is not usable as one; expected <instance_id> with 1-64 characters of '
        'A-Z a-z 0-9 . _ -')


def test_dtd_violation_is_reported_even_without_structure_explanation(monkeypatch):
    # Normally the structure checks explain DTD violations first; without
    # them the DTD alone must still reject the file, naming the line.
    monkeypatch.setattr(config_document, '_check_structure', lambda root, source: None)
    data = document(cluster(member(extra='<colour>red</colour>')))
    message = config_error(data)
    line = line_of(data, '<rtpproxy>')
    assert message.startswith(f'{SRC}:{line}: does not match rtp_cluster.dtd: ')
    assert 'colour' in message


def test_name_with_control_character():
    data = document(cluster(name='a&#9;b'))
    assert config_error(data) == (f"{SRC}:{line_of(data, 'a&#9;b')}: <name> of rtp_cluster #1: "
                                  "'a\\tb' contains control characters; expected printable text")


# --------------------------------------------------------------------------
# Valid files

def test_sample_config_validates():
    config = load_config(str(REPO / 'rtp_cluster.xml'))
    (main,) = config.clusters
    assert main.name == 'main'
    assert main.endpoint == Endpoint('udp', host='127.0.0.1', port=22222)
    assert [(m.name, str(m.endpoint), m.status) for m in main.members] == [
        ('rtpproxy1', 'udp:127.0.0.1:22223', 'ACTIVE'),
        ('rtpproxy2', 'udp:127.0.0.1:22224', 'SUSPENDED'),
    ]
    assert config.redis is None


def test_sample_config_commented_examples_validate():
    # Uncommenting the examples in the sample must give a valid file.
    text = (REPO / 'rtp_cluster.xml').read_text()
    for block in ('\n    <disconnect_notify>', '\n      <wan_address>', '\n  <redis>'):
        start = text.rindex('<!--', 0, text.index(block))
        end = text.index('-->', start)
        body = text[start + 4:end]
        xml_only = body[body.index(block):]
        text = text[:start] + xml_only + text[end + 3:]
    config = parse_config(text.encode(), 'uncommented.xml')
    (main,) = config.clusters
    assert main.disconnect_notify == DisconnectNotifyConfig('127.0.0.1', 12131,
                                                            '/var/run/b2bua.sock')
    assert main.members[1].cmd_out_address == '127.0.0.1'
    assert config.redis == RedisConfig(url='redis://127.0.0.1:6379/0', instance_id='node-a',
                                       password_env='RTPC_REDIS_PASSWORD')


_RELAY = ('<disconnect_notify><inbound_address>127.0.0.1:12131</inbound_address>'
          '<dest_socket_prefix>/var/run/b2bua.sock</dest_socket_prefix>%s</disconnect_notify>')


def test_relay_bounds_have_defaults_and_are_read():
    plain = parse_config(document(cluster(extra=_RELAY % '')), SRC).clusters[0].disconnect_notify
    assert (plain.max_destinations, plain.max_queued_bytes, plain.idle_timeout) == (
        256, 1048576, 300)
    bounds = ('<max_destinations>8</max_destinations><max_queued_bytes>65536</max_queued_bytes>'
              '<idle_timeout>30</idle_timeout>')
    config = parse_config(document(cluster(extra=_RELAY % bounds)), SRC)
    assert config.clusters[0].disconnect_notify == DisconnectNotifyConfig(
        '127.0.0.1', 12131, '/var/run/b2bua.sock', 8, 65536, 30)
    written = config_to_xml(config)
    assert b'<idle_timeout>30</idle_timeout>' in written
    assert b'idle_timeout' not in config_to_xml(parse_config(document(cluster(
        extra=_RELAY % '')), SRC))          # defaults are not written: the original's format
    assert parse_config(written, SRC) == config


@pytest.mark.parametrize('child, problem', [
    ('<max_destinations>0</max_destinations>',
     '<max_destinations> of disconnect_notify of rtp_cluster "C1": "0" is out of range; '
     'expected 1 to 100000'),
    ('<max_queued_bytes>100</max_queued_bytes>',
     '<max_queued_bytes> of disconnect_notify of rtp_cluster "C1": "100" is out of range; '
     'expected 4096 to 1073741824'),
    ('<idle_timeout>soon</idle_timeout>',
     '<idle_timeout> of disconnect_notify of rtp_cluster "C1": "soon" is not a positive '
     'integer'),
])
def test_relay_bounds_out_of_range_are_refused(child, problem):
    with pytest.raises(ConfigError) as info:
        parse_config(document(cluster(extra=_RELAY % child)), SRC)
    assert str(info.value).endswith(problem)


def test_original_example_validates():
    config = parse_config(ORIGINAL_EXAMPLE, 'original.xml')
    assert config == Config(clusters=(ClusterConfig(
        name='Supercluster#1',
        endpoint=Endpoint('udp', host='192.168.50.4', port=44),
        capacity_limit='hard',
        disconnect_notify=DisconnectNotifyConfig('192.168.222.1', 12131, '/var/run/b2bua.sock'),
        members=(
            MemberConfig('RTPPROXY1', Endpoint('udp', host='192.168.222.1', port=4444), 100, 2500,
                         'ACTIVE', wan_address='1.2.3.4'),
            MemberConfig('RTPPROXY2', Endpoint('unix', path='/var/run/pr2.sock'), 3, 1500,
                         'SUSPENDED'),
        )),))


def test_original_test_network_file_validates():
    data = b"""<rtp_cluster_config>

  <rtp_cluster>
    <name>basic_network</name>
    <protocol>UDP</protocol>
    <address>127.0.0.1:32324</address>

    <rtpproxy>
      <name>RTPPROXY2</name>
      <protocol>UDP6</protocol>
      <address>localhost:32322</address>
      <weight>100</weight>
      <capacity>2500</capacity>
      <status>active</status>
      <wan_address>1.2.3.4</wan_address>
      <lan_address>127.0.0.1</lan_address>
    </rtpproxy>

    <rtpproxy>
      <name>RTPPROXY3</name>
      <protocol>UDP6</protocol>
      <address>[::1]:32323</address>
      <weight>100</weight>
      <capacity>2500</capacity>
      <status>ACTIVE</status>
    </rtpproxy>

  </rtp_cluster>

</rtp_cluster_config>
"""
    (net,) = parse_config(data, 'basic_network.xml').clusters
    assert [str(m.endpoint) for m in net.members] == ['udp6:localhost:32322', 'udp6:[::1]:32323']
    assert [m.status for m in net.members] == ['ACTIVE', 'ACTIVE']
    assert net.members[0].lan_address == '127.0.0.1'


def test_any_child_order_comments_and_doctype_are_accepted():
    data = b"""<?xml version="1.0"?>
<!DOCTYPE rtp_cluster_config SYSTEM "http://example.invalid/rtp_cluster.dtd">
<rtp_cluster_config>
  <!-- redis may come first -->
  <redis><url>unix:///run/redis.sock?db=3</url><instance_id>a</instance_id></redis>
  <rtp_cluster>
    <rtpproxy>
      <status>suspended</status><capacity>7</capacity>

      <weight>2</weight><address>/tmp/r.sock</address>
      <protocol>unix</protocol><name>m</name>
    </rtpproxy>
    <capacity_limit type="HARD"/>
    <address>[::1]</address>
    <?ignored processing instruction?>
    <protocol>Udp6</protocol>
    <name> spaced </name>
  </rtp_cluster>
</rtp_cluster_config>
"""
    config = parse_config(data, 'x.xml')
    (c,) = config.clusters
    assert (c.name, str(c.endpoint), c.capacity_limit) == ('spaced', 'udp6:[::1]:22222', 'hard')
    assert c.members == (
        MemberConfig('m', Endpoint('unix', path='/tmp/r.sock'), 2, 7, 'SUSPENDED'),)
    assert config.redis == RedisConfig(url='unix:///run/redis.sock?db=3', instance_id='a')


def test_cluster_without_members_and_default_capacity_limit():
    data = b"""<rtp_cluster_config><rtp_cluster><name>empty</name><protocol>unix</protocol>
<address>unix:/run/rtpc.sock</address><capacity_limit /></rtp_cluster></rtp_cluster_config>"""
    (c,) = parse_config(data, 'x.xml').clusters
    assert (c.members, c.capacity_limit, c.endpoint.path) == ((), 'soft', '/run/rtpc.sock')


def test_reply_cache_bytes_defaults_to_64_mib_and_round_trips():
    (default,) = parse_config(document(), SRC).clusters
    assert default.reply_cache_bytes == 64 * 1024 * 1024
    data = document(cluster(extra='<reply_cache_bytes> 2000000 </reply_cache_bytes>'))
    config = parse_config(data, SRC)
    assert config.clusters[0].reply_cache_bytes == 2000000
    assert round_trip(config) == config
    assert b'reply_cache_bytes' not in config_to_xml(parse_config(document(), SRC))


def test_max_sessions_is_optional_and_round_trips():
    (default,) = parse_config(document(), SRC).clusters
    assert default.max_sessions is None
    config = parse_config(document(cluster(extra='<max_sessions> 200000 </max_sessions>')), SRC)
    assert config.clusters[0].max_sessions == 200000
    assert round_trip(config) == config
    assert b'max_sessions' not in config_to_xml(parse_config(document(), SRC))


def test_same_member_name_in_two_clusters_is_fine():
    data = document(cluster(member()), cluster(member(), name='C2', address='127.0.0.1:22299'))
    config = parse_config(data, SRC)
    assert [c.members[0].name for c in config.clusters] == ['R1', 'R1']


def test_latin1_file_with_non_ascii_name():
    data = ('<?xml version="1.0" encoding="ISO-8859-1"?>\n'
            + document(cluster(name='Zürich')).decode()).encode('latin-1')
    assert parse_config(data, SRC).clusters[0].name == 'Zürich'


def test_redis_defaults():
    config = parse_config(document(extra=redis('<url>rediss://[::1]:6380/2</url>')), SRC,
                          host_name=lambda: 'host-1.example')
    assert config.redis == RedisConfig(
        url='rediss://[::1]:6380/2', instance_id='host-1.example', namespace='rtpc',
        password_file=None, password_env=None, tls_ca=None, tls_cert=None, tls_key=None,
        tls_verify_hostname=True, peers=(), session_ttl=86400, final_timeout=0,
        resync_interval=60)


def test_redis_all_fields():
    data = document(extra=redis(
        '<url>rediss://cache.example:6390/1</url>', '<instance_id>node-a</instance_id>',
        '<namespace>prod.rtpc</namespace>', '<password_file>/etc/pw</password_file>',
        '<tls_ca>/etc/ca.pem</tls_ca>', '<tls_cert>/etc/c.pem</tls_cert>',
        '<tls_key>/etc/c.key</tls_key>', '<tls_verify_hostname>NO</tls_verify_hostname>',
        '<peers>\n node-b\n node-c </peers>', '<session_ttl>600</session_ttl>',
        '<final_timeout>7200</final_timeout>', '<resync_interval>30</resync_interval>'))
    assert parse_config(data, SRC).redis == RedisConfig(
        'rediss://cache.example:6390/1', 'node-a', 'prod.rtpc', '/etc/pw', None, '/etc/ca.pem',
        '/etc/c.pem', '/etc/c.key', False, ('node-b', 'node-c'), 600, 7200, 30)


def test_redis_tunables_default_to_the_former_constants():
    config = parse_config(document(extra=redis('<url>redis://127.0.0.1</url>')), SRC).redis
    assert (config.command_timeout_ms, config.connect_timeout_ms, config.tcp_keepalive,
            config.reconnect_min_ms, config.reconnect_max_ms, config.degraded_after,
            config.configure_notifications) == (1000, 1000, 30, 100, 5000, 1, False)


def test_redis_tunables_are_read():
    data = document(extra=redis(
        '<url>redis://127.0.0.1</url>', '<command_timeout_ms>250</command_timeout_ms>',
        '<connect_timeout_ms>0300</connect_timeout_ms>', '<tcp_keepalive>0</tcp_keepalive>',
        '<reconnect_min_ms>50</reconnect_min_ms>', '<reconnect_max_ms>50</reconnect_max_ms>',
        '<degraded_after>3</degraded_after>',
        '<configure_notifications>YES</configure_notifications>'))
    config = parse_config(data, SRC).redis
    assert (config.command_timeout_ms, config.connect_timeout_ms, config.tcp_keepalive,
            config.reconnect_min_ms, config.reconnect_max_ms, config.degraded_after,
            config.configure_notifications) == (250, 300, 0, 50, 50, 3, True)


def test_config_objects_are_frozen_and_hashable():
    config = parse_config(ORIGINAL_EXAMPLE, SRC)
    assert hash(config) == hash(parse_config(ORIGINAL_EXAMPLE, SRC))
    with pytest.raises(FrozenInstanceError):
        config.clusters[0].members[0].weight = 5


# --------------------------------------------------------------------------
# Write-back

def round_trip(config: Config) -> Config:
    return parse_config(config_to_xml(config), 'written.xml')


@pytest.mark.parametrize('data', [ORIGINAL_EXAMPLE, (REPO / 'rtp_cluster.xml').read_bytes(),
                                  document(cluster(member(protocol='udp6', address='[::1]:9')),
                                           extra=redis('<url>redis://h/1</url>',
                                                       '<instance_id>i</instance_id>',
                                                       '<peers>p q</peers>'))])
def test_parse_write_parse_gives_equal_config(data):
    config = parse_config(data, SRC)
    assert round_trip(config) == config


def test_written_xml_is_indented_in_original_order():
    text = config_to_xml(parse_config(ORIGINAL_EXAMPLE, SRC)).decode()
    lines = text.splitlines()
    assert lines[0] == "<?xml version='1.0' encoding='UTF-8'?>"
    tags = [line.strip().split('>')[0] + '>' for line in lines[1:12]]
    assert tags == ['<rtp_cluster_config>', '<rtp_cluster>', '<name>', '<protocol>', '<address>',
                    '<disconnect_notify>', '<inbound_address>', '<dest_socket_prefix>',
                    '</disconnect_notify>', '<capacity_limit type="hard"/>', '<rtpproxy>']
    assert '      <wan_address>1.2.3.4</wan_address>' in lines
    assert '    <address>192.168.50.4:44</address>' in lines


def test_written_names_are_escaped():
    config = parse_config(document(cluster(name='a&lt;b&amp;"c"')), SRC)
    assert config.clusters[0].name == 'a<b&"c"'
    assert round_trip(config) == config


def test_replace_then_write_keeps_the_change():
    config = parse_config(ORIGINAL_EXAMPLE, SRC)
    first = config.clusters[0]
    changed = replace(config, clusters=(replace(first, members=first.members[:1]),))
    assert round_trip(changed).clusters[0].members == first.members[:1]


# ---- property-based round trip

_names = st.text(st.characters(blacklist_categories=('Cc', 'Cs', 'Cn')), min_size=1,
                 max_size=12).filter(lambda s: s == s.strip())
_idents = st.from_regex(r'[A-Za-z0-9._-]{1,16}', fullmatch=True)
_hostnames = st.from_regex(r'[a-z]([a-z0-9-]{0,6}[a-z0-9])?(\.[a-z]([a-z0-9-]{0,6}[a-z0-9])?){0,2}',
                           fullmatch=True)
_ports = st.integers(1, 65535)
_paths = st.from_regex(r'/[A-Za-z0-9._-]{1,20}(/[A-Za-z0-9._-]{1,20}){0,2}', fullmatch=True)
_ipv4 = st.ip_addresses(v=4).map(str)
_ipv6 = st.ip_addresses(v=6).map(str)

_endpoints = st.one_of(
    st.builds(lambda h, p: Endpoint('udp', host=h, port=p), st.one_of(_ipv4, _hostnames), _ports),
    st.builds(lambda h, p: Endpoint('udp6', host=h, port=p), st.one_of(_ipv6, _hostnames), _ports),
    st.builds(lambda p: Endpoint('unix', path=p), _paths),
)
_members = st.builds(
    MemberConfig, name=_names, endpoint=_endpoints, weight=st.integers(1, 10**6),
    capacity=st.integers(1, 10**6), status=st.sampled_from(['ACTIVE', 'SUSPENDED']),
    wan_address=st.none() | _ipv4, lan_address=st.none() | _hostnames,
    cmd_out_address=st.none() | _ipv6)
_notify = st.builds(DisconnectNotifyConfig, inbound_host=_ipv4 | _ipv6 | _hostnames,
                    inbound_port=_ports,
                    dest_socket_prefix=_paths | _paths.map(lambda p: 'unix:' + p),
                    max_destinations=st.integers(1, 100_000),
                    max_queued_bytes=st.integers(4096, 1 << 30),
                    idle_timeout=st.integers(1, 86_400))
_clusters = st.builds(
    ClusterConfig, name=_names, endpoint=_endpoints,
    members=st.lists(_members, max_size=3, unique_by=lambda m: m.name).map(tuple),
    capacity_limit=st.sampled_from(['soft', 'hard']), disconnect_notify=st.none() | _notify)


@st.composite
def _redis_configs(draw):
    tls = draw(st.booleans())
    scheme = 'rediss' if tls else draw(st.sampled_from(['redis', 'unix']))
    if scheme == 'unix':
        url = f'unix://{draw(_paths)}?db={draw(st.integers(0, 15))}'
    else:
        url = f'{scheme}://{draw(_hostnames | _ipv4)}:{draw(_ports)}/{draw(st.integers(0, 15))}'
    key_pair = draw(st.none() | st.just(('/etc/c.pem', '/etc/c.key'))) if tls else None
    password = draw(st.sampled_from(['file', 'env', None]))
    return RedisConfig(
        url=url, instance_id=draw(_idents), namespace=draw(_idents),
        password_file='/etc/pw' if password == 'file' else None,
        password_env='PW_VAR' if password == 'env' else None,
        tls_ca=draw(st.none() | _paths) if tls else None,
        tls_cert=key_pair[0] if key_pair else None, tls_key=key_pair[1] if key_pair else None,
        tls_verify_hostname=draw(st.booleans()),
        peers=tuple(draw(st.lists(_idents, max_size=3, unique=True))),
        session_ttl=draw(st.integers(1, 10**7)), final_timeout=draw(st.integers(0, 10**7)),
        resync_interval=draw(st.integers(1, 3600)))


_configs = st.builds(
    Config,
    clusters=st.lists(_clusters, min_size=1, max_size=3,
                      unique_by=(lambda c: c.name, lambda c: c.endpoint)).map(tuple),
    redis=st.none() | _redis_configs())


@settings(max_examples=150, deadline=None)
@given(_configs)
def test_round_trip_property(config):
    assert round_trip(config) == config


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(ORIGINAL_EXAMPLE)), st.integers(0, 40),
       st.binary(max_size=20) | st.sampled_from([b'<', b'>', b'/', b':', b'&', b'"', b'<x/>']))
def test_corrupted_files_give_config_error_or_config(start, length, junk):
    data = ORIGINAL_EXAMPLE[:start] + junk + ORIGINAL_EXAMPLE[start + length:]
    try:
        result = parse_config(data, SRC)
    except ConfigError as e:
        assert str(e).startswith(f'{SRC}:')
    else:
        assert isinstance(result, Config)


def test_sentinel_instead_of_url_is_read_and_written_back_equal():
    data = document(extra=redis(
        '<sentinel master="rtpc-main" db="3" tls="yes">10.0.0.1:26379  [::1]:26380\n'
        ' sentinel-c.example:26381</sentinel>',
        '<sentinel_password_file>/etc/rtpc/sentinel.pw</sentinel_password_file>',
        '<password_file>/etc/rtpc/redis.pw</password_file>', '<tls_ca>/etc/ca.pem</tls_ca>',
        '<instance_id>a</instance_id>'))
    config = parse_config(data, SRC)
    assert config.redis.url is None
    assert config.redis.sentinel == SentinelConfig(
        master='rtpc-main', addresses=(('10.0.0.1', 26379), ('::1', 26380),
                                       ('sentinel-c.example', 26381)), db=3, tls=True)
    assert config.redis.sentinel_password_file == '/etc/rtpc/sentinel.pw'
    written = config_to_xml(config)
    assert (b'<sentinel master="rtpc-main" db="3" tls="yes">10.0.0.1:26379 [::1]:26380 '
            b'sentinel-c.example:26381</sentinel>') in written
    assert parse_config(written, 'y.xml') == config


def test_sentinel_defaults_database_0_without_tls():
    config = parse_config(document(extra=redis('<sentinel master="m">h:26379</sentinel>',
                                               '<instance_id>a</instance_id>')), SRC)
    assert config.redis.sentinel == SentinelConfig('m', (('h', 26379),), db=0, tls=False)
