"""Notification tags the cluster issues and the relay checks (core/notify_auth.py)."""
from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from rtp_cluster.core import protocol
from tests.support.notify_tags import expected_mac
from rtp_cluster.core.notify_auth import (
    MAC_CHARS, MAX_LINE, Notification, NotifyAuthenticator, Rejection,
)

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))

_latin1 = st.characters(min_codepoint=1, max_codepoint=255, blacklist_characters='\n\r')
destinations = st.text(_latin1.filter(lambda c: c != ' '), max_size=40)
tags = st.text(_latin1, min_size=1, max_size=60)
macs = st.text(st.sampled_from('ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz'
                               '0123456789-_'), min_size=MAC_CHARS, max_size=MAC_CHARS)


def test_issued_tag_is_the_truncated_hmac_then_destination_then_tag():
    issued = NotifyAuthenticator(KEY, 'c').issue('.7', 'tag x')
    assert issued == '%s .7 tag x' % expected_mac(KEY, 'c', '.7', 'tag x')
    assert len(issued.split(' ')[0]) == MAC_CHARS == 22


def test_authenticator_needs_nothing_quoted_on_the_way_through_rtpproxy():
    mac = NotifyAuthenticator(KEY, 'c').issue('tcp:192.0.2.7:9999', 't')[:MAC_CHARS]
    assert protocol.percent_quote(mac) == mac


@given(destinations, tags)
def test_round_trip_through_rtpproxy_percent_coding(destination, tag):
    auth = NotifyAuthenticator(KEY, 'cluster a')
    issued = auth.issue(destination, tag)
    assert issued is not None
    line = protocol.percent_unquote(protocol.percent_quote(issued))   # what the member writes
    assert auth.check(line) == Notification(destination, tag)


@given(destinations, tags, macs)
def test_a_made_up_authenticator_is_forged(destination, tag, mac):
    auth = NotifyAuthenticator(KEY, 'c')
    assume(mac != expected_mac(KEY, 'c', destination, tag))
    assert auth.check('%s %s %s' % (mac, destination, tag)) is Rejection.FORGED


@given(destinations, tags, destinations, tags)
def test_changing_destination_or_tag_of_an_issued_line_is_forged(dest, tag, other_dest,
                                                                  other_tag):
    assume((dest, tag) != (other_dest, other_tag))
    auth = NotifyAuthenticator(KEY, 'c')
    mac = auth.issue(dest, tag)[:MAC_CHARS]
    assert auth.check('%s %s %s' % (mac, other_dest, other_tag)) is Rejection.FORGED


@given(destinations, tags)
def test_another_process_or_cluster_cannot_use_the_line(destination, tag):
    issued = NotifyAuthenticator(KEY, 'c').issue(destination, tag)
    assert NotifyAuthenticator(OTHER_KEY, 'c').check(issued) is Rejection.FORGED
    assert NotifyAuthenticator(KEY, 'd').check(issued) is Rejection.FORGED


def test_space_boundaries_are_part_of_what_is_authenticated():
    auth = NotifyAuthenticator(KEY, 'c')
    mac = auth.issue('a', 'b c')[:MAC_CHARS]
    assert auth.check('%s a b c' % mac) == Notification('a', 'b c')
    assert auth.check('%s a b  c' % mac) is Rejection.FORGED
    assert auth.check('%s a  b c' % mac) is Rejection.FORGED


def test_an_empty_destination_is_the_prefix_socket_itself():
    auth = NotifyAuthenticator(KEY, 'c')
    issued = auth.issue('', 'tag')
    assert issued.endswith('  tag')
    assert auth.check(issued) == Notification('', 'tag')


@pytest.mark.parametrize('line', [
    '', 'x', 'nospace', 'G delivered', 'S flood1', 'A' * MAC_CHARS,
    'A' * MAC_CHARS + ' dest', 'A' * (MAC_CHARS - 1) + ' dest tag',
    'A' * (MAC_CHARS + 1) + ' dest tag', 'A' * MAC_CHARS + ' dest ',
    'A' * MAC_CHARS + ' dest t\x00ag', 'A' * MAC_CHARS + ' dest t\rag',
])
def test_lines_of_the_wrong_shape_are_malformed(line):
    assert NotifyAuthenticator(KEY, 'c').check(line) is Rejection.MALFORMED


@pytest.mark.parametrize('destination, tag', [
    ('a b', 'tag'), ('a', ''), ('a', 'line\nbreak'), ('a', 'cr\r'), ('a', 'nul\x00'),
    ('a\n', 'tag'), ('a', '\u0100 above latin-1'), ('a', 'x' * MAX_LINE),
])
def test_what_cannot_come_back_as_one_line_is_not_issued(destination, tag):
    assert NotifyAuthenticator(KEY, 'c').issue(destination, tag) is None


def test_the_longest_issued_line_fits_the_relay_line_limit():
    auth = NotifyAuthenticator(KEY, 'c')
    room = MAX_LINE - MAC_CHARS - len(' d ')
    assert len(auth.issue('d', 'x' * room)) == MAX_LINE
    assert auth.issue('d', 'x' * (room + 1)) is None


def test_a_short_key_is_refused():
    with pytest.raises(ValueError, match='at least 32 bytes'):
        NotifyAuthenticator(b'short', 'c')
