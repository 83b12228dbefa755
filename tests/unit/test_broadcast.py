"""Judging the members' answers to a broadcast lookup (rtp_cluster/core/broadcast.py)."""
from __future__ import annotations

from typing import NamedTuple

from rtp_cluster.core import protocol
from rtp_cluster.core.broadcast import Answer, Verdict, common_reply, judge, knows_session


class M(NamedTuple):
    name: str


def cmd(text: str) -> protocol.Command:
    parsed = protocol.parse_command(text)
    assert parsed.error is None
    return parsed


LOOKUP = cmd('L call-1 192.0.2.9 4000 ft tt')
LATE_OFFER = cmd('U call-1 192.0.2.9 4000 ft tt')
DELETE = cmd('D call-1 ft tt')
QUERY = cmd('Q call-1 ft tt')


def answers(*replies: str | None) -> list[Answer]:
    return [Answer(M('m%d' % i), LOOKUP, reply) for i, reply in enumerate(replies)]


def test_the_one_member_that_has_the_call_owns_it():
    verdict = judge(LOOKUP, answers('0', '35000 192.0.2.1', protocol.E_SESSION_NOT_FOUND))
    assert verdict.owner is not None and verdict.owner.member == M('m1')
    assert verdict.reply is None and verdict.late_offer is None and verdict.holders == 0


def test_a_delete_is_answered_by_the_first_member_that_had_the_call():
    assert judge(DELETE, answers('E50', '0', '0')) == Verdict(reply='0')


def test_nobody_has_it_a_late_offer_is_placed_avoiding_silent_members():
    verdict = judge(LATE_OFFER, answers('0', None, '0'))
    assert verdict == Verdict(late_offer=frozenset({'m1'}))
    assert judge(LATE_OFFER, answers('0', '0')) == Verdict(late_offer=frozenset())


def test_nobody_has_it_other_commands_get_the_common_reply_or_a_timeout():
    assert judge(LOOKUP, answers('0', '0')) == Verdict(reply='0')
    assert judge(QUERY, answers('E50', 'E50')) == Verdict(reply='E50')
    assert judge(LOOKUP, answers('0', None)) == Verdict(reply=protocol.E_MEMBER_TIMEOUT)


def test_several_holders_are_ambiguous_unless_all_failed_alike():
    assert judge(LOOKUP, answers('35000', '36000')) == Verdict(reply='0', holders=2)
    assert judge(QUERY, answers('1 2 3', '4 5 6')) == Verdict(
        reply=protocol.E_BROADCAST_AMBIGUOUS, holders=2)
    # the command itself failed on every member: that error, whoever has the call
    assert judge(QUERY, answers('E8', 'E8')) == Verdict(reply='E8')


def test_what_shows_a_member_has_the_call():
    assert knows_session('U', '35000 192.0.2.1') and not knows_session('L', '0')
    assert not knows_session('L', 'E8')
    assert knows_session('Q', 'E8') and not knows_session('D', protocol.E_SESSION_NOT_FOUND)
    assert common_reply(['0', '0']) == '0' and common_reply(['0', None]) is None
