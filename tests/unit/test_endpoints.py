"""rtp_cluster.core.endpoints: control socket specs, config addresses, the admin socket."""
from __future__ import annotations

import os
import socket

import pytest

from rtp_cluster import admin_client, app
from rtp_cluster.core.endpoints import (
    DEFAULT_ADMIN_TCP_PORT, Endpoint, parse_admin_socket, parse_endpoint, parse_socket_spec,
)


# --------------------------------------------------------------------------
# Control sockets: config <protocol>/<address> and command-line specs

@pytest.mark.parametrize('protocol, address, expected', [
    ('udp', '127.0.0.1:5000', Endpoint('udp', host='127.0.0.1', port=5000)),
    ('UDP', ' 127.0.0.1 ', Endpoint('udp', host='127.0.0.1', port=22222)),
    ('udp', 'rtpp.example.com:7', Endpoint('udp', host='rtpp.example.com', port=7)),
    ('udp6', '[::1]:5000', Endpoint('udp6', host='::1', port=5000)),
    ('udp6', '[::1]', Endpoint('udp6', host='::1', port=22222)),
    ('udp6', '::1', Endpoint('udp6', host='::1', port=22222)),
    ('udp6', '2001:db8::1', Endpoint('udp6', host='2001:db8::1', port=22222)),
    ('udp6', 'localhost:32322', Endpoint('udp6', host='localhost', port=32322)),
    ('unix', '/var/run/rtpp.sock', Endpoint('unix', path='/var/run/rtpp.sock')),
    ('UNIX', 'unix:/var/run/rtpp.sock', Endpoint('unix', path='/var/run/rtpp.sock')),
])
def test_parse_endpoint(protocol, address, expected):
    assert parse_endpoint(protocol, address) == expected


@pytest.mark.parametrize('protocol, address, message', [
    ('tcp', '127.0.0.1', 'unknown protocol "tcp"; expected udp, udp6 or unix'),
    ('udp', '', 'address is empty; expected HOST[:PORT]'),
    ('udp', 'host:', 'port "" is not a number; expected 1-65535'),
    ('udp', 'host:65536', 'port 65536 is out of range; expected 1-65535'),
    ('udp', 'bad host:1', '"bad host" is not an IP address or a host name'),
    ('udp', '::1', '"::1" is an IPv6 address; use protocol udp6'),
    ('udp6', '127.0.0.1', '"127.0.0.1" is an IPv4 address; use protocol udp'),
    ('udp6', '[::1', '"[::1" lacks the closing "]"; expected [IPV6]:PORT'),
    ('udp6', '[host]:5', '"host" is not an IPv6 address; expected [IPV6]:PORT'),
    ('udp6', '[::1]5', 'unexpected "5" after "]" in "[::1]5"; expected [IPV6]:PORT'),
    ('unix', 'rel.sock', 'unix socket path "rel.sock" is not absolute; expected /PATH'),
    ('unix', '', 'unix socket path is empty; expected an absolute path'),
    ('unix', '/' + 'x' * 107, f'unix socket path "/{"x" * 107}" is longer than 107 bytes'),
])
def test_parse_endpoint_errors(protocol, address, message):
    with pytest.raises(ValueError) as info:
        parse_endpoint(protocol, address)
    assert str(info.value) == message


@pytest.mark.parametrize('spec, expected', [
    ('udp:127.0.0.1:5000', Endpoint('udp', host='127.0.0.1', port=5000)),
    ('udp:127.0.0.1', Endpoint('udp', host='127.0.0.1', port=22222)),
    ('UDP:localhost:9', Endpoint('udp', host='localhost', port=9)),
    ('udp6:[::1]:5000', Endpoint('udp6', host='::1', port=5000)),
    ('udp6:::1:5000', Endpoint('udp6', host='::1', port=5000)),
    ('udp6:::1', Endpoint('udp6', host='::1', port=22222)),
    ('udp6:[fe80::1%eth0]:7', Endpoint('udp6', host='fe80::1%eth0', port=7)),
    ('unix:/run/rtpc.sock', Endpoint('unix', path='/run/rtpc.sock')),
    ('/run/rtpc.sock', Endpoint('unix', path='/run/rtpc.sock')),
    ('tcp:127.0.0.1:8000', Endpoint('tcp', host='127.0.0.1', port=8000)),
    ('tcp:[::1]:8000', Endpoint('tcp', host='::1', port=8000)),
])
def test_parse_socket_spec(spec, expected):
    assert parse_socket_spec(spec) == expected


@pytest.mark.parametrize('spec, message', [
    ('127.0.0.1:5000', '"127.0.0.1:5000" is not a socket; expected udp:HOST[:PORT], '
                       'udp6:HOST[:PORT], unix:/PATH, /PATH or tcp:HOST:PORT'),
    ('sctp:1.2.3.4:5', '"sctp:1.2.3.4:5" is not a socket; expected udp:HOST[:PORT], '
                       'udp6:HOST[:PORT], unix:/PATH, /PATH or tcp:HOST:PORT'),
    ('tcp:127.0.0.1', '"127.0.0.1" has no port; expected HOST:PORT'),
    ('unix:run/x.sock', 'unix socket path "run/x.sock" is not absolute; expected /PATH'),
    ('udp:1.2.3.4:99999', 'port 99999 is out of range; expected 1-65535'),
])
def test_parse_socket_spec_errors(spec, message):
    with pytest.raises(ValueError) as info:
        parse_socket_spec(spec)
    assert str(info.value) == message


@pytest.mark.parametrize('endpoint, address, text', [
    (Endpoint('udp', host='127.0.0.1', port=22222), '127.0.0.1:22222', 'udp:127.0.0.1:22222'),
    (Endpoint('udp6', host='::1', port=22222), '[::1]:22222', 'udp6:[::1]:22222'),
    (Endpoint('unix', path='/run/x.sock'), '/run/x.sock', 'unix:/run/x.sock'),
    (Endpoint('tcp', host='localhost', port=1), 'localhost:1', 'tcp:localhost:1'),
])
def test_endpoint_address_and_str(endpoint, address, text):
    assert (endpoint.address, str(endpoint)) == (address, text)
    assert parse_socket_spec(text) == endpoint


# --------------------------------------------------------------------------
# The admin socket: one grammar for the daemon's and the client's -s

@pytest.mark.parametrize('spec, expected', [
    ('/run/a.sock', Endpoint('unix', path='/run/a.sock')),
    ('unix:/run/a.sock', Endpoint('unix', path='/run/a.sock')),
    ('UNIX:/run/a.sock', Endpoint('unix', path='/run/a.sock')),
    ('rel.sock', Endpoint('unix', path=os.path.abspath('rel.sock'))),
    ('unix:rel.sock', Endpoint('unix', path=os.path.abspath('rel.sock'))),
    ('tcp:127.0.0.1:4000', Endpoint('tcp', host='127.0.0.1', port=4000)),
    ('tcp:127.0.0.1', Endpoint('tcp', host='127.0.0.1', port=DEFAULT_ADMIN_TCP_PORT)),
    ('tcp:localhost', Endpoint('tcp', host='localhost', port=12345)),
    ('tcp:[::1]:4000', Endpoint('tcp', host='::1', port=4000)),
    ('tcp:[::1]', Endpoint('tcp', host='::1', port=12345)),
])
def test_parse_admin_socket(spec, expected):
    assert parse_admin_socket(spec) == expected


ADMIN_FORMS = 'expected /PATH, unix:/PATH or tcp:HOST:PORT (port 12345 if omitted)'


@pytest.mark.parametrize('spec, message', [
    ('udp:127.0.0.1:22222',
     '"udp:127.0.0.1:22222": the admin socket must be unix: or tcp:; ' + ADMIN_FORMS),
    ('udp6:[::1]:22222', '"udp6:[::1]:22222": the admin socket must be unix: or tcp:; '
     + ADMIN_FORMS),
    ('sctp:1.2.3.4:5', '"sctp:1.2.3.4:5" is not a socket; ' + ADMIN_FORMS),
    ('unix:', '"unix:": the unix socket path is empty'),
    ('', '"": the unix socket path is empty'),
    ('tcp:', 'address is empty; expected HOST[:PORT]'),
    ('tcp:host:port', 'port "port" is not a number; expected 1-65535'),
    ('tcp:127.0.0.1:0', 'port 0 is out of range; expected 1-65535'),
    ('/' + 'x' * 107, f'unix socket path "/{"x" * 107}" is longer than 107 bytes'),
])
def test_parse_admin_socket_errors(spec, message):
    with pytest.raises(ValueError) as info:
        parse_admin_socket(spec)
    assert str(info.value) == message


@pytest.mark.parametrize('spec, port', [('tcp:127.0.0.1', 12345), ('tcp:127.0.0.1:4000', 4000)])
def test_daemon_and_client_read_tcp_specs_alike(spec, port):
    assert app.normalize_admin_spec(spec) == 'tcp:127.0.0.1:%d' % port
    assert admin_client.parse_address(spec) == (socket.AF_INET, ('127.0.0.1', port))


def test_daemon_refuses_the_control_socket_as_admin_socket():
    with pytest.raises(app.AppError) as info:
        app.parse_options(['-s', 'udp:127.0.0.1:22222'])
    assert str(info.value) == ('-s: "udp:127.0.0.1:22222": the admin socket must be unix: or '
                               'tcp:; ' + ADMIN_FORMS)


def test_client_refuses_the_control_socket_as_admin_socket(capsys):
    assert admin_client.main(['-s', 'udp:127.0.0.1:22222', 'ls']) == 2
    assert capsys.readouterr().err == (
        'rtp_cluster_client: "udp:127.0.0.1:22222": the admin socket must be unix: or tcp:; '
        + ADMIN_FORMS + '\n')
