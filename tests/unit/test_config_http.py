"""The <http> listener and <log_level> elements of the configuration file."""
from __future__ import annotations

import pytest

from rtp_cluster.core.config import (ConfigError, HttpConfig, config_to_xml, parse_config,
                                     parse_log_level)

SRC = 'test.xml'
CLUSTER = b"""<rtp_cluster><name>c</name><protocol>udp</protocol>
<address>127.0.0.1:22222</address></rtp_cluster>"""


def document(extra: bytes) -> bytes:
    return b'<rtp_cluster_config>' + CLUSTER + extra + b'</rtp_cluster_config>'


def test_http_is_optional_and_log_level_defaults_to_info():
    config = parse_config(document(b''), SRC)
    assert config.http is None
    assert config.log_level == 'info'


@pytest.mark.parametrize('text, host, port', [
    ('127.0.0.1:9180', '127.0.0.1', 9180),
    ('[::1]:9180', '::1', 9180),
    (' localhost:80 ', 'localhost', 80),
    ('0.0.0.0:9180', '0.0.0.0', 9180),
])
def test_http_address(text, host, port):
    config = parse_config(document(b'<http><address>%s</address></http>' % text.encode()), SRC)
    assert config.http == HttpConfig(host=host, port=port)


@pytest.mark.parametrize('text, problem', [
    ('127.0.0.1', 'has no port'),
    ('127.0.0.1:0', 'out of range'),
    ('127.0.0.1:http', 'not a number'),
    ('[::1', 'closing'),
    ('', 'address is empty'),
])
def test_bad_http_address_is_located_and_explained(text, problem):
    with pytest.raises(ConfigError) as info:
        parse_config(document(b'\n<http>\n<address>%s</address></http>' % text.encode()), SRC)
    message = str(info.value)
    assert message.startswith('%s:4: <address> of http: ' % SRC)
    assert problem in message
    assert 'expected HOST:PORT or [IPV6]:PORT' in message


def test_http_without_address():
    with pytest.raises(ConfigError, match=r'test.xml:3: <http>: missing <address>; expected HOST:PORT'):
        parse_config(document(b'\n<http></http>'), SRC)


def test_two_http_elements_are_refused():
    with pytest.raises(ConfigError, match='duplicate'):
        parse_config(document(b'<http><address>127.0.0.1:1</address></http>'
                              b'<http><address>127.0.0.1:2</address></http>'), SRC)


def test_unknown_child_of_http_is_refused():
    with pytest.raises(ConfigError, match='unknown element'):
        parse_config(document(b'<http><address>127.0.0.1:1</address><port>2</port></http>'), SRC)


@pytest.mark.parametrize('text, level', [('debug', 'debug'), ('WARN', 'warn'),
                                         ('warning', 'warn'), (' Error ', 'error')])
def test_log_level(text, level):
    config = parse_config(document(b'<log_level>%s</log_level>' % text.encode()), SRC)
    assert config.log_level == level


def test_bad_log_level():
    with pytest.raises(ConfigError, match='unknown log level "loud"; expected debug, info, warn'):
        parse_config(document(b'<log_level>loud</log_level>'), SRC)
    with pytest.raises(ValueError):
        parse_log_level('')


def test_http_and_log_level_are_written_back():
    config = parse_config(document(b'<http><address>[::1]:9180</address></http>'
                                   b'<log_level>debug</log_level>'), SRC)
    again = parse_config(config_to_xml(config), SRC)
    assert again == config
    assert b'<address>[::1]:9180</address>' in config_to_xml(config)


def test_defaults_are_not_written_back():
    xml = config_to_xml(parse_config(document(b''), SRC))
    assert b'<http>' not in xml and b'<log_level>' not in xml


def test_shipped_sample_listens_on_loopback():
    from pathlib import Path
    from rtp_cluster.core.config import load_config
    sample = load_config(str(Path(__file__).resolve().parents[2] / 'rtp_cluster.xml'))
    assert sample.http == HttpConfig(host='127.0.0.1', port=9180)
