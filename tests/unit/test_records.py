"""rtp_cluster.core.records: a shared session's Redis hash, validated; the newest of one
call's keys."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtp_cluster.core.keys import session_key
from rtp_cluster.core.records import (DELETED_STATE, MAX_CALL_ID, MAX_FIELD, BadRecord,
                                      decode_record, newest_records)
from tests.support.records import NS, encoded, record


def test_record_round_trip_bytes_and_str():
    rec = record(cid='call@host;x=1', ttag='tt', epoch=3, seq=7)
    key, raw = encoded(rec)
    assert decode_record(key, NS, raw) == rec
    assert decode_record(key, NS, rec.to_mapping()) == rec       # str values too
    tomb = record(state=DELETED_STATE, epoch=2, seq=4)
    assert decode_record(*encoded(tomb)[:1], NS, encoded(tomb)[1]).state == DELETED_STATE


def test_record_extra_fields_and_newer_version_accepted():
    rec = record()
    key, raw = encoded(rec, v='2', ports='127.0.0.1:4000', future='x')
    assert decode_record(key, NS, raw) == rec


@pytest.mark.parametrize('changes, why', [
    ({'member': None}, 'missing fields: member'),
    ({'epoch': None, 'seq': None}, 'missing fields: epoch, seq'),
    ({'epoch': 'two'}, 'bad number'),
    ({'seq': '1.5'}, 'bad number'),
    ({'created': 'yesterday'}, 'bad number'),
    ({'v': ''}, 'bad number'),
    ({'epoch': '0'}, 'must be positive'),
    ({'seq': '-1'}, 'must be positive'),
    ({'v': '0'}, 'must be positive'),
    ({'owner': 'c'}, 'does not match the key'),
    ({'owner': ''}, 'does not match the key'),
    ({'state': 'zombie'}, 'unknown state'),
    ({'state': 'ACTIVE'}, 'unknown state'),
    ({'member': ''}, 'bad call-id or member'),
    ({'cid': ''}, 'bad call-id or member'),
    ({'cid': 'other'}, 'do not match the key'),
    ({'cluster': 'other'}, 'do not match the key'),
    ({'ftag': 'x' * (MAX_FIELD + 1)}, 'bytes long'),
    ({'member': 'm' * 1_000_000}, 'bytes long'),
    ({'epoch': b'\xff\xfe'}, 'bad number'),
])
def test_bad_records_are_rejected_with_a_reason(changes, why):
    key, raw = encoded(record(), **changes)
    with pytest.raises(BadRecord, match=why):
        decode_record(key, NS, raw)


def test_bad_records_wrong_key_and_empty():
    rec = record()
    _, raw = encoded(rec)
    with pytest.raises(BadRecord, match='empty'):
        decode_record(session_key(NS, 'b', 'test', 'c1'), NS, {})
    with pytest.raises(BadRecord, match='does not match the key'):
        decode_record('rtpc:n:b', NS, raw)                        # not a session key
    with pytest.raises(BadRecord, match='does not match the key'):
        decode_record('other:s:b:test:c1', NS, raw)               # another namespace
    with pytest.raises(BadRecord, match='does not match the key'):
        decode_record(session_key(NS, 'c', 'test', 'c1'), NS, raw)  # planted in c's prefix


def test_huge_and_too_long_call_id():
    long_cid = 'x' * (MAX_CALL_ID + 1)
    key, raw = encoded(record(cid=long_cid))
    with pytest.raises(BadRecord):
        decode_record(key, NS, raw)
    key, raw = encoded(record(cid='x' * MAX_CALL_ID))
    assert decode_record(key, NS, raw).cid == 'x' * MAX_CALL_ID


def test_non_utf8_bytes_never_crash_and_stay_consistent_with_the_key():
    # redis-py hands keys and values over as bytes; both are read as latin-1, so a
    # non-UTF-8 call-id decodes the same way in the key and in the hash.
    cid_bytes = b'call-\xff\xfe-\xc3('
    key = b'rtpc:s:b:test:' + cid_bytes
    rec = record(cid=cid_bytes.decode('latin-1'))
    _, raw = encoded(rec)
    raw[b'cid'] = cid_bytes
    decoded = decode_record(key.decode('latin-1'), NS, raw)
    assert decoded.cid == cid_bytes.decode('latin-1')
    raw[b'member'] = b'\x80\x81'
    assert decode_record(key.decode('latin-1'), NS, raw).member == '\x80\x81'


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(['v', 'cid', 'cluster', 'member', 'maddr', 'ftag', 'ttag',
                                        'created', 'updated', 'owner', 'epoch', 'seq', 'state',
                                        'junk']),
                       st.one_of(st.binary(max_size=40), st.text(max_size=40),
                                 st.integers().map(str))),
       st.binary(max_size=30))
def test_fuzzed_records_either_decode_or_raise_bad_record(fields, key_tail):
    key = 'rtpc:s:b:test:' + key_tail.decode('latin-1')
    try:
        rec = decode_record(key, NS, fields)
    except BadRecord:
        return
    # whatever is accepted is self-consistent
    assert rec.owner == 'b' and rec.epoch >= 1 and rec.seq >= 1
    assert session_key(NS, rec.owner, rec.cluster, rec.cid) == key


# --- ordering -----------------------------------------------------------------------------------

def test_order_is_epoch_then_seq_then_owner():
    assert record(epoch=2, seq=1).order > record(epoch=1, seq=99).order
    assert record(epoch=2, seq=3).order > record(epoch=2, seq=2).order
    assert record(epoch=2, seq=2, owner='b').order > record(epoch=2, seq=2, owner='a').order
    ordered = sorted([record(epoch=1, seq=5, owner='z'), record(epoch=3, seq=1, owner='a'),
                      record(epoch=1, seq=5, owner='b'), record(epoch=2, seq=9, owner='a')],
                     key=lambda r: r.order)
    assert [(r.epoch, r.seq, r.owner) for r in ordered] == [
        (1, 5, 'b'), (1, 5, 'z'), (2, 9, 'a'), (3, 1, 'a')]


# --- the newest of one call's keys ----------------------------------------------------------

def test_newest_records_keeps_one_record_per_call_and_the_bad_ones():
    stale = encoded(record(cid='c1', owner='b', epoch=1, seq=1))
    tomb = encoded(record(cid='c1', owner='a', epoch=2, seq=2, state=DELETED_STATE))
    other = encoded(record(cid='c2', owner='b'))
    bad = ('rtpc:s:b:test:c3', {b'junk': b'1'})
    for order in ([stale, tomb, other, bad], [bad, other, tomb, stale]):
        kept = newest_records(NS, order)
        assert sorted(k for k, _ in kept) == sorted([tomb[0], other[0], bad[0]])
