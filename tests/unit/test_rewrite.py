"""Commands and replies rewritten between client and member: LAN/WAN addresses, errors (core/rewrite.py).

Real Member objects talk to in-memory RTPproxies (tests/support/cluster_harness.py);
time is a twisted Clock.
"""
from __future__ import annotations

import pytest

from tests.support.cluster_harness import Harness


# --- address rewriting ------------------------------------------------------------------------------

@pytest.mark.parametrize('client_cmd, member_cmd', [
    ('U c1 127.0.0.1 5000 ft', 'UL10.0.0.5 c1 127.0.0.1 5000 ft'),
    ('UAc0,8R192.0.2.1 c1 127.0.0.1 5000 ft', 'UAc0,8L10.0.0.5 c1 127.0.0.1 5000 ft'),
    ('Ul192.0.2.7 c1 127.0.0.1 5000 ft', 'UL10.0.0.5 c1 127.0.0.1 5000 ft'),
])


def test_lan_address_is_forced_on_offers(client_cmd, member_cmd):
    h = Harness([{'lan': '10.0.0.5'}])
    reply = h.cmd(client_cmd)
    assert h.fakes['m1'].session_commands == [member_cmd]
    assert reply.endswith(' 10.0.0.5')
    h.cmd('L c1 127.0.0.1 6000 ft tt')
    h.cmd('D c1 ft tt')
    assert h.fakes['m1'].session_commands[1:] == ['LL10.0.0.5 c1 127.0.0.1 6000 ft tt',
                                                  'D c1 ft tt']


def test_ipv6_lan_address_is_bracketed():
    h = Harness([{'lan': 'fd00::5'}])
    h.cmd('U6 c1 ::1 5000 ft')
    assert h.fakes['m1'].session_commands == ['U6L[fd00::5] c1 ::1 5000 ft']


def test_wan_address_replaces_the_reply_address():
    h = Harness([{'wan': '203.0.113.9', 'lan': '10.0.0.5'}, {'wan': '198.51.100.1'}],
                rng=lambda: 0.0)
    reply = h.cmd('U c1 127.0.0.1 5000 ft')
    assert reply == '20002 203.0.113.9'
    assert h.cmd('L c1 127.0.0.1 6000 ft tt') == '25002 203.0.113.9'
    assert h.cmd('Q c1 ft tt') == '60 0 0 0 0'      # other replies untouched
    h.take_offline('m1')
    assert h.cmd('U c2 127.0.0.1 5000 ft') == '30002 198.51.100.1'


def test_lookup_through_broadcast_gets_the_wan_address_too():
    h = Harness([{'wan': '203.0.113.9'}, {}])
    port = h.fakes['m1'].create('x@h', 'ft')
    assert h.cmd('L x@h 127.0.0.1 6000 ft tt') == '%d 203.0.113.9' % (port + 5000)


@pytest.mark.parametrize('code', ['E7', 'E8', 'E9', 'E10'])
def test_node_disabling_error_codes_are_not_passed_to_the_client(code):
    h = Harness([{}])
    h.clients['m1'].override = lambda text: code if text.startswith(('U', 'L')) else None
    reply = h.cmd('U c1 127.0.0.1 5000 ft')
    assert reply.startswith('E') and reply not in ('E7', 'E8', 'E9', 'E10')
    assert h.cluster.store.lookup('c1') is None     # a failed offer binds nothing


def test_member_error_on_offer_is_passed_and_not_bound():
    h = Harness([{}])
    h.clients['m1'].override = lambda text: 'E72' if text.startswith('U') else None
    assert h.cmd('U c1 127.0.0.1 5000 ft') == 'E72'
    assert len(h.cluster.store) == 0
