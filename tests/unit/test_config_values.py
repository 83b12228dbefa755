"""rtp_cluster.core.config_values: the value checks the schema rows name (text → value, or a
ValueError saying what was expected), tested on their own."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtp_cluster.core import config_values as values


@pytest.mark.parametrize('text, expected', [('1', 1), ('007', 7), ('0' * 40 + '5', 5),
                                            ('999999999999999999', 999999999999999999)])
def test_positive_int_reads_digits_with_leading_zeros(text, expected):
    assert values.positive_int(text) == expected


@pytest.mark.parametrize('text, why', [('0', 'not a positive integer'),
                                       ('-1', 'not a positive integer'),
                                       ('1.5', 'not a positive integer'),
                                       (' 1', 'not a positive integer'),
                                       ('', 'not a positive integer'),
                                       ('1' * 19, 'too large'),
                                       ('9' * 5000, 'too large')])
def test_positive_int_rejects_with_the_reason(text, why):
    with pytest.raises(ValueError, match=why):
        values.positive_int(text)


def test_non_negative_int_takes_zero():
    assert values.non_negative_int('0') == 0
    assert values.non_negative_int('000') == 0


def test_int_between_names_its_range():
    parse = values.int_between(2, 10)
    assert parse('2') == 2 and parse('10') == 10
    with pytest.raises(ValueError, match='expected 2 to 10'):
        parse('11')
    with pytest.raises(ValueError, match='expected 2 to 10'):
        parse('1')


def test_reply_cache_bytes_has_a_floor():
    low = values.MIN_REPLY_CACHE_BYTES
    assert values.reply_cache_bytes(str(low)) == low
    with pytest.raises(ValueError, match='too small'):
        values.reply_cache_bytes(str(low - 1))


@pytest.mark.parametrize('text, expected', [('udp', 'udp'), ('UDP6', 'udp6'), ('Unix', 'unix')])
def test_protocol_is_case_insensitive(text, expected):
    assert values.check_protocol(text) == expected


def test_protocol_rejects_others():
    with pytest.raises(ValueError, match='expected udp, udp6 or unix'):
        values.check_protocol('tcp')


def test_status_is_upper_cased_and_limited():
    assert values.check_status('suspended') == 'SUSPENDED'
    with pytest.raises(ValueError, match='expected ACTIVE or SUSPENDED'):
        values.check_status('DRAINING')       # a state the daemon sets, never configured


@pytest.mark.parametrize('text', ['a\nb', 'x\x00', 'tab\there', '\x7f'])
def test_names_with_control_characters_are_refused(text):
    with pytest.raises(ValueError, match='control characters'):
        values.check_name(text)


def test_names_may_hold_any_printable_text():
    assert values.check_name('media: east/1 ü') == 'media: east/1 ü'


def test_a_long_bad_value_is_shortened_in_the_message():
    with pytest.raises(ValueError) as caught:
        values.check_ident('x' * 500)
    assert len(str(caught.value)) < 120 and '...' in str(caught.value)


@pytest.mark.parametrize('text, ok', [('a', True), ('node-1.east_2', True), ('x' * 64, True),
                                      ('x' * 65, False), ('', False), ('a b', False),
                                      ('a:b', False)])
def test_instance_ids(text, ok):
    if ok:
        assert values.check_ident(text) == text
    else:
        with pytest.raises(ValueError, match='expected 1-64 characters'):
            values.check_ident(text)


def test_peers_auto_or_distinct_ids():
    assert values.parse_peers('auto') == ()
    assert values.parse_peers('AUTO') == ()
    assert values.parse_peers(' b  c ') == ('b', 'c')
    with pytest.raises(ValueError, match='listed twice'):
        values.parse_peers('b c b')
    with pytest.raises(ValueError, match='mixed'):
        values.parse_peers('auto b')
    assert values.write_peers(('b', 'c')) == 'b c'


def test_yes_no():
    assert values.yes_no('YES') is True and values.yes_no('no') is False
    with pytest.raises(ValueError, match='not yes or no'):
        values.yes_no('true')
    assert values.write_yes_no(True) == 'yes'


@pytest.mark.parametrize('text', ['/run/x.sock', 'unix:/run/x', 'UNIX:/run/x'])
def test_socket_prefix_absolute(text):
    assert values.check_socket_prefix(text) == text


@pytest.mark.parametrize('text', ['run/x', 'unix:run/x', ''])
def test_socket_prefix_relative_is_refused(text):
    with pytest.raises(ValueError, match='absolute path'):
        values.check_socket_prefix(text)


@pytest.mark.parametrize('url', ['redis://127.0.0.1', 'redis://127.0.0.1:6379/2',
                                 'rediss://[::1]:6380/0', 'unix:///run/redis.sock',
                                 'unix:///run/redis.sock?db=3', 'redis://localhost/'])
def test_redis_urls_accepted(url):
    assert values.check_redis_url(url) == url


@pytest.mark.parametrize('url, why', [
    ('http://127.0.0.1', 'scheme "http" is not supported'),
    ('redis://:secret@127.0.0.1', 'password must not be written'),
    ('redis://127.0.0.1:0', 'port is not valid'),
    ('redis://127.0.0.1:99999', 'port is not valid'),
    ('redis://127.0.0.1/db1', 'database "db1" is not valid'),
    ('redis://127.0.0.1?timeout=3', 'query parameter "timeout"'),
    ('unix://host/run/x.sock', 'unexpected host'),
])
def test_redis_urls_refused_with_the_reason(url, why):
    with pytest.raises(ValueError, match=why) as caught:
        values.check_redis_url(url)
    assert str(caught.value).startswith('"%s"' % url)


@pytest.mark.parametrize('text, level', [('DEBUG', 'debug'), (' warning ', 'warn'),
                                         ('Error', 'error')])
def test_log_levels(text, level):
    assert values.parse_log_level(text) == level


def test_unknown_log_level():
    with pytest.raises(ValueError, match='unknown log level "loud"'):
        values.parse_log_level('loud')


@given(st.text(max_size=60))
def test_every_check_answers_a_value_or_a_value_error(text):
    """Whatever an operator writes, a check returns or raises ValueError, nothing else."""
    for check in (values.positive_int, values.non_negative_int, values.check_protocol,
                  values.check_status, values.check_ident, values.check_name, values.yes_no,
                  values.parse_peers, values.check_redis_url, values.parse_log_level,
                  values.check_socket_prefix, values.check_env_name):
        try:
            check(text)
        except ValueError:
            pass
