"""protocol.parse_command against a real RTPproxy (rtp-io) over UDP.

One member is started for the whole module.  For every malformed command of the table in
test_protocol.py the engine must answer the tabulated E-code (this validates the table), and
parse_command must report the same code.  For commands parse_command accepts, the engine
must not answer a parse-level error (E0, E1, E2, E3, E5).  Known disagreements carry
xfail(strict=True) marks (defined in test_protocol.py) and are reported to the lead.

The member has no IPv6 listen address, so `U6` answers E36.  `X` deletes every session and
is sent only by the last test of this module.
"""
from __future__ import annotations

import itertools
import os
import re
import socket

import pytest
from hypothesis import HealthCheck, assume, given, settings

from tests.support.procs import control_command, start_member
from rtp_cluster.core import protocol
from rtp_cluster.core.protocol import parse_command, split_cookie
from tests.unit.test_protocol import (EXISTS, MALFORMED, MALFORMED_ROWS, MEMBER_CHECKED, NAMES22,
                           valid_commands)

PARSE_LEVEL = frozenset(['E0', 'E1', 'E2', 'E3', 'E5'])


@pytest.fixture(scope='module')
def member():
    m = start_member('udp')
    try:
        reply = m.command('U %s 127.0.0.1 5000 f1 t1' % EXISTS)
        assert protocol.is_positive_ul_reply(reply), reply
        yield m
    finally:
        m.stop()
    assert not m.alive()


def send(member, text: str) -> str:
    reply = control_command(member.control, text)
    assert reply.endswith('\n')
    return reply[:-1]


def assert_agrees(text: str, real: str) -> None:
    error = parse_command(text).error
    if error is not None:
        assert real == error, 'parse_command: %s, engine: %s' % (error, real)
    else:
        assert real not in PARSE_LEVEL, 'parse_command accepts, engine: %s' % real


# --- malformed commands ----------------------------------------------------------------------

@pytest.mark.parametrize('text,code', [pytest.param(t, c, id=p.id)
                                       for (t, c, _), p in zip(MALFORMED_ROWS, MALFORMED)])
def test_engine_answers_the_tabulated_code(member, text, code):
    """The table in test_protocol.py is what the real engine answers."""
    assert send(member, text) == code


@pytest.mark.parametrize('text,code', MALFORMED)
def test_parse_command_agrees_with_engine(member, text, code):
    real = send(member, text)
    assert real == code
    assert parse_command(text).error == real


# U/L modifier and address errors are left to the member on purpose: protocol.py must pass
# modifiers it does not know through verbatim (new RTPproxy versions add some), so it
# accepts these commands and the member answers the specific code, which is not a
# parse-level one.
@pytest.mark.parametrize('text,code', MEMBER_CHECKED, ids=[t for t, _ in MEMBER_CHECKED])
def test_ul_modifier_errors_come_from_the_member(member, text, code):
    real = send(member, text)
    assert real == code
    assert real not in PARSE_LEVEL
    assert parse_command(text).error is None


def test_subcommand_values_are_left_to_the_member(member):
    # protocol.py checks the shape of `&&` subcommands; which `S name=value` settings exist
    # depends on the RTPproxy version, so the member answers for those.
    text = 'U c1 127.0.0.1 5000 f1 t1 && S bogus=1'
    assert parse_command(text).error is None
    assert send(member, text) == 'E3'


# --- valid, harmless commands -----------------------------------------------------------------

VF_DATES = ['20040107', '20050322', '20060704', '20071116', '20071218', '20080403', '20081102',
            '20081224', '20090810', '20140323', '20140617', '20141004', '20150330', '20150420',
            '20150617', '20191015', '20200226', '20230205', '20230314', '20230424', '20250523',
            '20251015', '20260306', '20260308', '20260309']
NUMBERS = r'[0-9]+(\.[0-9]+)?( [0-9]+(\.[0-9]+)?)*'
INFO = ('sessions created: [0-9]+\nactive sessions: [0-9]+\nactive streams: [0-9]+\n'
        'packets received: [0-9]+\npackets transmitted: [0-9]+')

HARMLESS = [
    ('V', '20040107'), ('v', '20040107'), ('\t V\r\n', '20040107'), ('V\n', '20040107'),
    ('VF 20170313', '0'), ('VF 19990101', '0'), ('vf 20081224', '1'), ('vF 20040107', '1'),
    ('I', INFO), ('Ib', INFO), ('IB', INFO), ('i', INFO), ('Il', INFO + '\naverage load: [0-9.]+'),
    ('Ibl', INFO + '\naverage load: [0-9.]+'),
    ('G', ''), ('Gv', ''), ('Gvv', ''),
    ('P+1 nosess p s f', 'E50'), ('P+0 nosess p s f', 'E50'),   # strtol takes the "+"
    ('G nsess_created nsess_destroyed total_duration', NUMBERS),
    ('Gv nsess_created pps_in', r'nsess_created=[0-9]+ pps_in=[0-9.]+'),
    ('GV nsess_created', r'nsess_created=[0-9]+'),
    ('G ' + ' '.join(NAMES22), NUMBERS),                      # 23 tokens: the limit
    ('G nosuchstat', 'E68'),
    ('Q nosess f1 t1', 'E50'), ('Q nosess f1', 'E50'), ('Qv nosess f1 t1 ttl', 'E50'),
    ('Q nosess f1 t1 && D', 'E50'),
    ('Q nosess f1 t1' + ' && D' * 15, 'E50'),                  # 16 sections: the limit
    ('Q %s f1 t1' % EXISTS, NUMBERS), ('Q %s f1' % EXISTS, NUMBERS),
    ('Qv %s f1 t1 ttl npkts_ina rtpa_nlost' % EXISTS, r'ttl=[0-9]+ npkts_ina=0 rtpa_nlost=0'),
    ('Q %s f1 t1 nosuchname' % EXISTS, 'E62'),
    ('D nosess f1', 'E50'), ('D nosess f1 t1', 'E50'), ('Dw nosess f1', 'E50'),
    ('DW nosess f1', 'E50'), ('dW nosess f1', 'E50'), ('Dww nosess f1', 'E50'),
    ('D no\x85sess f1', 'E50'), ('D no\xa0sess f1', 'E50'), ('D nosess f1&&D', 'E50'),
    ('S nosess f1', 'E50'), ('S nosess f1 t1', 'E50'),
    ('R nosess f1', 'E50'), ('Rs nosess f1', 'E50'), ('RS nosess f1', 'E50'),
    ('Rss nosess f1', 'E50'),
    ('C nosess /tmp/x f1', 'E50'), ('Cs nosess /tmp/x f1', 'E50'),
    ('CP nosess udp:127.0.0.1:9 f1', 'E50'), ('CpP nosess t f1', 'E50'),
    ('Csp nosess t f1 t1', 'E50'),
    ('N nosess f1', 'E50'), ('Na nosess f1', 'E50'), ('NA nosess f1', 'E50'),
    ('P nosess p session f1', 'E50'), ('P nosess p s f1 t1', 'E50'),
    ('P-1 nosess p s f1', 'E50'), ('P0 nosess p s f1', 'E50'), ('p1 nosess p s f1', 'E50'),
    ('P01 nosess p s f1', 'E50'), ('P-0 nosess p s f1', 'E50'),
    ('P99999999999999999999 nosess p s f1', 'E50'),
    ('L nosess 127.0.0.1 5000 f1 t1', '0'), ('L nosess 127.0.0.1 5000 f1', '0'),
    ('Lc0,101 nosess 127.0.0.1 5000 f1 t1', '0'),
    ('P %s /nonexistent/prompt 0 f1' % EXISTS, 'E60'),
    ('U %s 127.0.0.1 5000 f1 t1' % EXISTS, r'[0-9]+ 127\.0\.0\.1'),
    ('L %s 127.0.0.1 6000 f1 t1' % EXISTS, r'[0-9]+ 127\.0\.0\.1'),
    ('Uc0,8,101 d1@h 127.0.0.1 49170 as8d7f;1', r'[0-9]+ 127\.0\.0\.1'),
    ('UAZ20c0,8,101 d2@h 127.0.0.1 49170 ft;1', r'[0-9]+ 127\.0\.0\.1'),
    ('Ul127.0.0.1r127.0.0.1 d3@h 127.0.0.1 5000 f1', r'[0-9]+ 127\.0\.0\.1'),
    ('U\td4@h\t127.0.0.1\t5000\tf1', r'[0-9]+ 127\.0\.0\.1'),
    ('U d5@h 127.0.0.1 5000 f1 t1 tcp:127.0.0.1:9 ok%41', r'[0-9]+ 127\.0\.0\.1'),
    ('U d6\x85\xa0@h 127.0.0.1 5000 f1 unix:/nonexistent tag%20one', r'[0-9]+ 127\.0\.0\.1'),
    ('U d7@h 127.0.0.1 5000 fA tB && L 127.0.0.1 6000',
     r'[0-9]+ 127\.0\.0\.1 && [0-9]+ 127\.0\.0\.1'),
    ('Q d7@h fA tB && D', NUMBERS),
    ('Q d7@h fA tB', 'E50'),                                   # deleted by `&& D`
    ('D d1@h as8d7f;1', '0'), ('D d1@h as8d7f;1', 'E50'),
] + [('VF ' + d, '1') for d in VF_DATES]


@pytest.mark.parametrize('text,pattern', HARMLESS,
                         ids=['%03d-%s' % (i, ascii(t)[1:40]) for i, (t, _) in enumerate(HARMLESS)])
def test_accepted_commands_get_no_parse_level_error(member, text, pattern):
    cmd = parse_command(text)
    assert cmd.error is None
    assert cmd.serialize() == text
    real = send(member, text)
    assert_agrees(text, real)
    assert re.fullmatch(pattern, real), real


# --- datagram framing: cookies, NUL, input limit -----------------------------------------------

_cookies = itertools.count(1)


def exchange(member, datagram: bytes) -> bytes:
    host, _, port = member.control.partition(':')[2].rpartition(':')
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2.0)
        s.connect((host, int(port)))
        s.send(datagram)
        return s.recv(65535)


def model_reply(datagram: bytes) -> tuple[str | None, str | None]:
    """(cookie, E-code or None) as the cluster's transport would derive it from protocol.py."""
    cookie, text = split_cookie(datagram[:protocol.MAX_COMMAND_BYTES].decode('latin-1'))
    if cookie is None:
        return None, 'E5'
    if text is None:
        return cookie, 'E5'
    return cookie, parse_command(text).error


def assert_datagram_agrees(member, datagram: bytes) -> None:
    reply = exchange(member, datagram).decode('latin-1')
    assert reply.endswith('\n')
    cookie, code = model_reply(datagram)
    if cookie is None:
        assert reply == code + '\n'
        return
    assert reply.startswith(cookie + ' '), reply
    body = reply[len(cookie) + 1:-1]
    if code is not None:
        assert body == code
    else:
        assert body not in PARSE_LEVEL


def unique(prefix: bytes) -> bytes:
    return b'%s%06d' % (prefix, next(_cookies) + os.getpid() % 1000 * 10000)


R_NUL_COOKIE = ('a NUL byte inside the cookie makes the engine answer a bare "E5\\n" (no cookie); '
                'split_cookie returns the NUL-carrying cookie and the command is executed')

DATAGRAMS = [
    pytest.param(lambda: b'', id='empty'),
    pytest.param(lambda: b'   ', id='spaces'),
    pytest.param(lambda: b'\t\r\n', id='separators'),
    pytest.param(lambda: unique(b'ck'), id='cookie-only'),
    pytest.param(lambda: unique(b'ck') + b'   ', id='cookie-and-spaces'),
    pytest.param(lambda: b'  ' + unique(b'ck') + b' V', id='leading-spaces'),
    pytest.param(lambda: b'\t' + unique(b'ck') + b'\tV', id='tabs'),
    pytest.param(lambda: b'\r\n' + unique(b'ck') + b'\nV\n', id='newlines'),
    pytest.param(lambda: unique(b'ck') + b'\x0bV', id='vtab-is-not-a-separator'),
    pytest.param(lambda: unique(b'\x85c') + b' V', id='latin1-cookie'),
    pytest.param(lambda: unique(b'ck') + b' V\x00', id='nul-in-command'),
    pytest.param(lambda: unique(b'ck') + b' \x00', id='nul-command'),
    pytest.param(lambda: unique(b'ck') + b' V 1', id='error-with-cookie'),
    pytest.param(lambda: unique(b'ck') + b'\x00 V', id='nul-ends-cookie'),
    pytest.param(lambda: b'\x00' + unique(b'ck') + b' V', id='nul-starts-cookie'),
    pytest.param(lambda: b'c\x00' + unique(b'k') + b' V', id='nul-inside-cookie'),
    pytest.param(lambda: b'\x00', id='nul-only'),
]


@pytest.mark.parametrize('make', DATAGRAMS)
def test_datagram_framing_agrees(member, make):
    assert_datagram_agrees(member, make())


@pytest.mark.parametrize('position', [8188, 8189, 8190, 8191, 8192, 9000])
@pytest.mark.parametrize('last', [b'1', b'\x00'], ids=['token', 'nul'])
def test_input_limit(member, position, last):
    """The engine reads 8191 bytes of a datagram (cookie included): a token or a NUL at byte
    index 8190 counts, one at 8191 is dropped.  The transport truncates the datagram to
    MAX_COMMAND_BYTES before split_cookie/parse_command; parse_command itself does not
    truncate, so the untruncated text is rejected by it."""
    head = unique(b'k') + b' V'
    datagram = head + b' ' * (position - len(head)) + last
    assert datagram.rindex(last) == position
    reply = exchange(member, datagram).decode('latin-1')
    cookie = head[:-2].decode()
    seen = position < protocol.MAX_COMMAND_BYTES
    assert reply == '%s %s\n' % (cookie, ('E1' if last == b'1' else 'E5') if seen else '20040107')
    assert_datagram_agrees(member, datagram)
    assert parse_command(datagram.decode('latin-1').partition(' ')[2]).error is not None


# --- generated commands --------------------------------------------------------------------------

@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(valid_commands())
def test_generated_valid_commands_are_accepted_by_engine(member, generated):
    text, exp = generated
    # X would delete the module's sessions; C with a file target on an existing session
    # would write files.
    assume(exp['letter'] not in ('X', 'C'))
    assert parse_command(text).error is None
    assert_agrees(text, send(member, text))


# --- X last --------------------------------------------------------------------------------------

def test_x_deletes_everything_last(member):
    assert parse_command('X').error is None
    assert send(member, 'Q %s f1 t1' % EXISTS) != 'E50'
    assert send(member, 'X') == '0'
    assert send(member, 'Q %s f1 t1' % EXISTS) == 'E50'


# --- session commands: one real RTPproxy vs the cluster (issue 15) ------------------------------

# Every session command the clients send, for call-ids nobody knows and for calls set up
# before; the same script goes to one RTPproxy and to a cluster of two.  Each call-id is
# used by one block only, so a block's first command meets an unknown call-id.
SESSION_SCRIPT = [
    # unknown call-ids
    'L nx1@h 127.0.0.1 6000 ft tt', 'D nx2@h ft', 'D nx3@h ft tt', 'S nx4@h ft tt',
    'P nx5@h /nonexistent/prompt session ft tt', 'R nx6@h ft tt', 'Q nx7@h ft tt',
    'Qv nx8@h ft tt ttl', 'C nx9@h udp:127.0.0.1:9 ft tt', 'Dw nx10@h ft',
    # an early-offer call: U without to-tag, then everything on the known call
    'Uc8 k1@h 127.0.0.1 5000 ft;1', 'Lc8 k1@h 127.0.0.1 6000 ft;1 tt;1',
    'Uc8 k1@h 127.0.0.1 5000 ft;1 tt;1', 'Q k1@h ft;1 tt', 'Qv k1@h ft;1 tt;1 ttl npkts_ina',
    'S k1@h ft;1 tt;1', 'P k1@h /nonexistent/prompt 8 ft;1 tt;1', 'R k1@h ft tt',
    'C k1@h udp:127.0.0.1:9 ft;1 tt;1', 'D k1@h ft;1', 'D k1@h ft tt', 'D k1@h ft tt',
    'Q k1@h ft;1 tt;1', 'L k1@h 127.0.0.1 6000 ft;1 tt;1',
    # a late-offer call (Kamailio: offer in the 200 OK, answer in the ACK)
    'Uc8 k2@h 127.0.0.1 5000 tt;1 ft;1', 'Lc8 k2@h 127.0.0.1 6000 tt;1 ft;1',
    'Q k2@h tt;1 ft;1', 'D k2@h ft', 'D k2@h ft tt',
    # the sippy B2BUA's callee side of a call set up elsewhere, with notify arguments
    'U k3@h-0 127.0.0.1 5000 tt ft unix:/nonexistent/b2bua.sock r%201', 'D k3@h-0 ft tt',
]


def _normalized(command: str, reply: str) -> str:
    """A U/L reply with its port replaced (the members allocate from different ranges)."""
    if parse_command(command).letter in ('U', 'L') and protocol.is_positive_ul_reply(reply):
        return 'PORT' + reply[reply.index(' '):] if ' ' in reply else 'PORT'
    return reply


@pytest.mark.slow
def test_session_commands_get_the_replies_of_one_rtpproxy(procs, tmp_path):
    from tests.support.cluster_proc import ClusterProc, cluster_xml, member_xml
    single = procs.member('udp')
    behind = [procs.member('udp'), procs.member('udp')]
    cluster = ClusterProc.start(procs, tmp_path, cluster_xml(
        [member_xml('m%d' % i, m) for i, m in enumerate(behind)]), wait_online=['m0', 'm1'])
    direct = [_normalized(c, send(single, c)) for c in SESSION_SCRIPT]
    clustered = [_normalized(c, cluster.command(c)) for c in SESSION_SCRIPT]
    assert list(zip(SESSION_SCRIPT, clustered)) == list(zip(SESSION_SCRIPT, direct))
    assert 'E50' in direct and 'PORT 127.0.0.1' in direct      # the script meets both
    idle = [protocol.parse_info(m.command('Ib'))['active sessions'] for m in [single] + behind]
    assert idle == [0, 0, 0]
