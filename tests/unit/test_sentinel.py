"""rtp_cluster.core.sentinel: the <sentinel> grammar and the decisions of master discovery."""
from __future__ import annotations

import pytest

from rtp_cluster.core.resp import ReplyError
from rtp_cluster.core.sentinel import (
    Discovery, MasterReplyError, SentinelRing, check_master_name, is_readonly,
    not_master_reason, parse_master_reply, parse_sentinel_addresses, parse_switch_master,
    replication_role,
)

S1, S2, S3 = ('10.0.0.1', 26379), ('10.0.0.2', 26379), ('::1', 26380)


def test_addresses_in_order_with_ipv6_and_host_names():
    assert parse_sentinel_addresses(' 10.0.0.1:26379\n\t[::1]:26380 s-3.example:1 ') == (
        S1, S3, ('s-3.example', 1))


@pytest.mark.parametrize('text, problem', [
    ('', 'no sentinel address'),
    ('10.0.0.1', '"10.0.0.1" is not HOST:PORT'),
    ('::1:26379', '"::1:26379" is not HOST:PORT'),
    ('h:99999', '"h:99999": the port is not valid; expected 1-65535'),
    ('h:0', '"h:0": the port is not valid'),
    ('a..b:1', '"a..b:1": "a..b" is not an IP address or a host name'),
    ('h:1 h:1', '"h:1" is listed twice'),
    (' '.join('h%d:1' % i for i in range(65)), '65 sentinels; expected at most 64'),
])
def test_bad_addresses_say_what_is_wrong(text, problem):
    with pytest.raises(ValueError, match='^' + problem.replace('[', r'\[').replace('.', r'\.')):
        parse_sentinel_addresses(text)


@pytest.mark.parametrize('name', ['', 'my master', 'a\x07b'])
def test_master_names_are_one_printable_word(name):
    with pytest.raises(ValueError):
        check_master_name(name)
    assert check_master_name('rtpc-main.1') == 'rtpc-main.1'


def test_a_round_asks_each_sentinel_once_and_the_one_that_answered_comes_first_after():
    ring = SentinelRing([S1, S2, S3])
    first = Discovery(ring, 'm')
    assert first.next() == S1
    first.failed(S1, 'connection refused')
    assert first.next() == S2
    assert first.answered(S2, None) is None            # does not know the master
    assert first.next() == S3
    assert first.answered(S3, [b'127.0.0.1', b'6380']) == ('127.0.0.1', 6380)
    second = Discovery(ring, 'm')
    assert [second.next(), second.next(), second.next(), second.next()] == [S3, S1, S2, None]


def test_a_round_in_which_nobody_answers_sums_up_every_reason():
    ring = SentinelRing([S1, S2])
    round_ = Discovery(ring, 'm')
    round_.failed(round_.next(), 'connection refused')
    round_.answered(round_.next(), ReplyError('NOAUTH Authentication required.'))
    assert round_.next() is None
    assert round_.summary() == (
        'no sentinel named the master "m" (10.0.0.1:26379: connection refused; '
        '10.0.0.2:26379: refused the question: NOAUTH Authentication required.)')
    assert ring.order() == [S1, S2]                       # nobody moved ahead


@pytest.mark.parametrize('reply, problem', [
    (None, 'does not monitor a master named "m"'),
    ([b'127.0.0.1'], 'answered'),
    ([b'127.0.0.1', b'port'], 'answered'),
    ([b'127.0.0.1', b'0'], 'answered'),
    ([b'bad host!', b'6379'], 'answered a bad host'),
    (b'OK', 'answered'),
])
def test_master_replies_that_name_no_master_are_refused(reply, problem):
    with pytest.raises(MasterReplyError, match=problem):
        parse_master_reply(reply, 'm')


def test_switch_master_names_the_new_master_of_our_master_only():
    assert parse_switch_master('m 127.0.0.1 6379 127.0.0.1 6380', 'm') == ('127.0.0.1', 6380)
    assert parse_switch_master('other 127.0.0.1 6379 127.0.0.1 6380', 'm') is None
    assert parse_switch_master('m 127.0.0.1 6379 127.0.0.1', 'm') is None
    assert parse_switch_master('m 127.0.0.1 6379 127.0.0.1 x', 'm') is None
    assert parse_switch_master('m 127.0.0.1 6379 a..b 6380', 'm') is None


def test_readonly_is_recognised_with_or_without_our_prefix():
    assert is_readonly("READONLY You can't write against a read only replica.")
    assert is_readonly("write failed: READONLY You can't write against a read only replica.")
    assert not is_readonly('OOM command not allowed when used memory > maxmemory')
    assert not is_readonly('ERR unknown key READONLYX')


def test_role_from_info_replication():
    master = '# Replication\r\nrole:master\r\nconnected_slaves:1\r\n'
    replica = '# Replication\r\nrole:slave\r\nmaster_host:127.0.0.1\r\n'
    assert replication_role(master) == 'master' and not_master_reason(master) is None
    assert replication_role(replica) == 'slave'
    assert not_master_reason(replica) == 'the node is a replica (role:slave), not the master'
    assert not_master_reason('') == 'INFO replication names no role'
