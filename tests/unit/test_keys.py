"""The Redis key grammar (rtp_cluster/core/keys.py): injective, round-trips any text."""
from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from rtp_cluster.core.keys import (SessionKey, cluster_prefix, escape_component,
                                   group_session_keys, key_owner, parse_presence_key,
                                   parse_session_key, presence_key, same_call_keys,
                                   session_key, session_prefix, unescape_component)

NS = 'rtpc'
IDENT = st.text(alphabet='abcdefghijklmnopqrstuvwxyzABC0123456789._-', min_size=1, max_size=12)
# latin-1 text: every byte value is one character (what the daemon reads from the network)
ANY_TEXT = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=255), max_size=20)
TRICKY = st.text(alphabet=':%3A25 a\x00\xff', max_size=8)
CLUSTER = st.one_of(ANY_TEXT, TRICKY)
CALL_ID = st.one_of(ANY_TEXT, TRICKY).filter(bool)


def test_plain_names_keep_the_format_of_earlier_versions():
    assert session_key(NS, 'a', 'test', 'c:1') == 'rtpc:s:a:test:c:1'
    assert session_prefix(NS, 'a') == 'rtpc:s:a:'
    assert cluster_prefix(NS, 'a', 'test') == 'rtpc:s:a:test:'
    assert presence_key(NS, 'a') == 'rtpc:n:a'


def test_the_colon_case_of_issue_14_gives_two_keys():
    """Call Q of cluster a:b and call b:Q of cluster a were one key."""
    first = session_key(NS, 'x', 'a:b', 'Q')
    second = session_key(NS, 'x', 'a', 'b:Q')
    assert first != second
    assert parse_session_key(NS, first) == SessionKey('x', 'a:b', 'Q')
    assert parse_session_key(NS, second) == SessionKey('x', 'a', 'b:Q')


def test_not_session_keys():
    for key in ('rtpc:n:a', 'other:s:a:test:c', 'rtpc:s::test:c', 'rtpc:s:a', 'rtpc:s:a:test',
                'rtpc:s:a:test:', 'rtpc:s:a:bad%escape:c', 'rtpc:s:a:%3a:c', 'rtpc:s:a:%41:c'):
        assert parse_session_key(NS, key) is None, key
        assert key_owner(NS, key) is None, key


def test_presence_keys():
    assert parse_presence_key(NS, presence_key(NS, 'b-1')) == 'b-1'
    for key in ('rtpc:n:', 'rtpc:s:a:test:c', 'rtpc:n:a:b', 'x:n:a'):
        assert parse_presence_key(NS, key) is None, key


@given(CLUSTER)
def test_escaping_round_trips_and_leaves_no_separator(text):
    escaped = escape_component(text)
    assert ':' not in escaped
    assert unescape_component(escaped) == text


@given(IDENT, CLUSTER, CALL_ID)
def test_session_keys_round_trip(owner, cluster, call_id):
    key = session_key(NS, owner, cluster, call_id)
    assert parse_session_key(NS, key) == (owner, cluster, call_id)
    assert key.startswith(session_prefix(NS, owner))
    assert key.startswith(cluster_prefix(NS, owner, cluster))
    key.encode('latin-1')                          # any byte string, nothing wider


@given(IDENT, CLUSTER, CALL_ID, IDENT, CLUSTER, CALL_ID)
def test_different_sessions_never_share_a_key(owner1, cluster1, cid1, owner2, cluster2, cid2):
    same = (owner1, cluster1, cid1) == (owner2, cluster2, cid2)
    assert (session_key(NS, owner1, cluster1, cid1)
            == session_key(NS, owner2, cluster2, cid2)) == same


@given(IDENT, IDENT)
def test_presence_and_session_keys_never_meet(instance, owner):
    assert parse_session_key(NS, presence_key(NS, instance)) is None
    assert parse_presence_key(NS, session_key(NS, owner, 'c', 'x')) is None


def test_resync_keys_are_grouped_by_owner_and_cluster_and_all_counted():
    keys = [session_key(NS, 'b', 'a:b', 'Q'), session_key(NS, 'b', 'a', 'b:Q'),
            session_key(NS, 'b', 'a', 'x'), session_key(NS, 'c', 'a', 'x'),
            presence_key(NS, 'b'), 'other:key']
    groups, count = group_session_keys(NS, iter(keys))
    assert count == 6
    assert groups == {('b', 'a:b'): {'Q'}, ('b', 'a'): {'b:Q', 'x'}, ('c', 'a'): {'x'}}


def test_the_same_call_under_other_owners_prefixes():
    key = session_key(NS, 'a', 'x:y', 'b:Q')
    assert same_call_keys(NS, 'a', key, {'c', 'b'}) == [
        session_key(NS, 'b', 'x:y', 'b:Q'), session_key(NS, 'c', 'x:y', 'b:Q')]
    assert same_call_keys(NS, 'a', key, ()) == []
