"""RESP codec (rtp_cluster/resp.py): encoding, incremental parsing, bad streams."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtp_cluster.core.resp import (MAX_BULK, MAX_LINE, ProtocolError, ReplyError, ReplyParser, encode,
                              encode_hset)


def parse_all(data: bytes, step: int | None = None) -> list:
    parser = ReplyParser()
    out = []
    chunks = [data] if step is None else [data[i:i + step] for i in range(0, len(data), step)]
    for chunk in chunks:
        parser.feed(chunk)
        out += parser.replies()
    return out


def test_encode_commands_as_arrays_of_bulk_strings():
    assert encode('SET', b'k\xff', 12) == b'*3\r\n$3\r\nSET\r\n$2\r\nk\xff\r\n$2\r\n12\r\n'
    assert encode('PING') == b'*1\r\n$4\r\nPING\r\n'
    assert encode('ECHO', '') == b'*2\r\n$4\r\nECHO\r\n$0\r\n\r\n'


def test_encode_hset_equals_the_generic_encoding_even_with_percent_and_latin1():
    mapping = {'v': '1', 'cid': 'c\xff%d\r\n', 'x%s': '', 'state': 'active'}
    flat = [x for pair in mapping.items() for x in pair]
    assert encode_hset(b'key', mapping) == encode('HSET', b'key', *flat)
    # a second call uses the cached template and must give the same bytes
    assert encode_hset(b'key', mapping) == encode('HSET', b'key', *flat)


@given(st.dictionaries(st.text(alphabet=st.characters(max_codepoint=255), min_size=1, max_size=8),
                       st.text(alphabet=st.characters(max_codepoint=255), max_size=20),
                       min_size=1, max_size=6))
def test_encode_hset_matches_generic_for_any_latin1_mapping(mapping):
    flat = [x for pair in mapping.items() for x in pair]
    assert encode_hset(b'k', mapping) == encode('HSET', b'k', *flat)


STREAM = (b'+OK\r\n+QUEUED\r\n:12\r\n:-3\r\n-ERR wrong type\r\n$3\r\na\r\n\r\n$-1\r\n'
          b'*3\r\n:1\r\n*1\r\n$0\r\n\r\n-WRONGTYPE x\r\n*-1\r\n*0\r\n')
EXPECTED = [b'OK', b'QUEUED', 12, -3, ReplyError('ERR wrong type'), b'a\r\n', None,
            [1, [b''], ReplyError('WRONGTYPE x')], None, []]


def test_every_reply_type():
    assert parse_all(STREAM) == EXPECTED


@pytest.mark.parametrize('step', [1, 2, 3, 7, 64])
def test_replies_split_anywhere_come_out_whole_and_in_order(step):
    assert parse_all(STREAM, step) == EXPECTED


def test_incomplete_reply_waits_for_the_rest():
    parser = ReplyParser()
    parser.feed(b'*2\r\n:1\r\n$5\r\nhel')
    assert parser.replies() == []
    parser.feed(b'lo\r\n+OK')
    assert parser.replies() == [[1, b'hello']]
    parser.feed(b'\r\n')
    assert parser.replies() == [b'OK']


@pytest.mark.parametrize('data, why', [
    (b'?what\r\n', 'unexpected reply type'),
    (b':12x\r\n', 'bad integer'),
    (b'$abc\r\n', 'bad length'),
    (b'$3\r\nabcXY', 'not terminated'),
    (b'$%d\r\n' % (MAX_BULK + 1), 'over'),
    (b'*99999999999\r\n', 'over'),
])
def test_not_resp_is_a_protocol_error(data, why):
    parser = ReplyParser()
    parser.feed(data)
    with pytest.raises(ProtocolError, match=why):
        parser.replies()


def test_endless_line_is_a_protocol_error_not_unbounded_buffering():
    parser = ReplyParser()
    parser.feed(b"+" + b"x" * (MAX_LINE + 10))
    with pytest.raises(ProtocolError, match='line longer'):
        parser.replies()


def test_reply_errors_compare_by_text():
    assert ReplyError('ERR a') == ReplyError('ERR a') and ReplyError('ERR a') != ReplyError('b')
    assert len({ReplyError('x'), ReplyError('x')}) == 1


def transaction_reply(results: bytes, count: int = 3, queued: bytes | None = None) -> bytes:
    queued = queued if queued is not None else b'+QUEUED\r\n' * count
    return b'+OK\r\n' + queued + b'*%d\r\n' % count + results


GOOD = transaction_reply(b':1\r\n:0\r\n:13\r\n')


@pytest.mark.parametrize('step', [1, 3, 8, len(GOOD)])
def test_integer_transaction_fast_path_waits_for_the_whole_reply_then_consumes_it(step):
    parser = ReplyParser()
    seen = []
    for i in range(0, len(GOOD), step):
        parser.feed(GOOD[i:i + step])
        seen.append(parser.take_integer_transaction(3))
    assert seen[-1] is True and set(seen[:-1]) <= {None}
    assert not parser.pending


@pytest.mark.parametrize('data', [
    transaction_reply(b'', queued=b'+QUEUED\r\n-ERR wrong number of arguments\r\n+QUEUED\r\n'),
    transaction_reply(b':1\r\n-WRONGTYPE Operation\r\n:1\r\n'),
    transaction_reply(b':1\r\n-WRO'),                       # an error, not complete yet
    b'+OK\r\n+QUEUED\r\n+QUEUED\r\n+QUEUED\r\n*-1\r\n',     # EXEC aborted
    b'-EXECABORT Transaction discarded\r\n',
])
def test_anything_but_all_integer_results_is_left_to_the_generic_parser(data):
    parser = ReplyParser()
    parser.feed(data)
    assert parser.take_integer_transaction(3) is False
    assert parser.pending                                    # nothing consumed


def test_fast_path_leaves_whatever_follows_the_transaction():
    parser = ReplyParser()
    parser.feed(GOOD + b'+PONG\r\n')
    assert parser.take_integer_transaction(3) is True
    assert parser.replies() == [b'PONG']


def test_replies_with_a_limit_leave_the_rest_for_later():
    parser = ReplyParser()
    parser.feed(b'+a\r\n+b\r\n+c\r\n')
    assert parser.replies(2) == [b'a', b'b'] and parser.pending
    assert parser.replies() == [b'c'] and not parser.pending
