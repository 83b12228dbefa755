"""Fuzz regression: generated commands against the real daemon, over UDP, UDP6, unix and
the admin socket.

The daemon runs three clusters (UDP, UDP6 and unix control sockets) in front of two scripted
members (bench/fakemember.py, instant answers).  Every datagram must get exactly one
well-formed answer with its cookie (a bare `E5` when the cookie is unusable), every line
on a stream connection exactly one answer line, in order, locally detected errors the
E-code the parser gives; every admin line an `OK`-terminated reply or one `ERROR:` line,
never an internal error; and the daemon must stay up.  Sized to run in a few seconds.
"""
from __future__ import annotations

import itertools
import os
import re
import socket
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.cluster_proc import ClusterProc, member_xml
from tests.support.procs import ROOT, ProcessTracker, free_udp_port
from rtp_cluster.core import protocol
from rtp_cluster.core.protocol import parse_command, split_cookie

pytestmark = pytest.mark.slow

BODY = re.compile(r'[^\n]+')          # one line of reply body (I answers are several of them)


def well_formed(body: str, text: str) -> bool:
    """Lines of text; empty only for a `G` without names, as a real RTPproxy answers it."""
    if body == '':
        return parse_command(text).letter == 'G'
    return all(BODY.fullmatch(line) for line in body.split('\n'))


# --- the daemon ------------------------------------------------------------------------------

def start_fake_member(tracker: ProcessTracker) -> str:
    port = free_udp_port()
    proc = tracker.add(subprocess.Popen(
        [sys.executable, '-m', 'bench.fakemember', '--listen', '127.0.0.1:%d' % port],
        cwd=ROOT, stdout=subprocess.PIPE, text=True))
    assert proc.stdout.readline().startswith('READY')
    return '127.0.0.1:%d' % port


@pytest.fixture(scope='module')
def daemon(tmp_path_factory):
    tracker = ProcessTracker()
    tmp = tmp_path_factory.mktemp('fuzz')
    try:
        members = ''.join(member_xml('m%d' % i, protocol='udp', address=start_fake_member(tracker))
                          for i in range(2))
        udp_port, udp6_port = free_udp_port(), free_udp_port('::1')
        unix_path = str(tmp / 'control.sock')
        xml = ('<?xml version="1.0"?>\n<rtp_cluster_config>'
               '<rtp_cluster><name>u</name><protocol>udp</protocol>'
               '<address>127.0.0.1:%d</address>%s</rtp_cluster>'
               '<rtp_cluster><name>u6</name><protocol>udp6</protocol>'
               '<address>[::1]:%d</address>%s</rtp_cluster>'
               '<rtp_cluster><name>s</name><protocol>unix</protocol>'
               '<address>%s</address>%s</rtp_cluster></rtp_cluster_config>\n'
               % (udp_port, members, udp6_port, members, unix_path, members))
        cluster = ClusterProc.start(tracker, tmp, (xml, 'udp:127.0.0.1:%d' % udp_port),
                                    wait_online=['m0', 'm1'])
        cluster.unix_path = unix_path
        cluster.udp_addresses = {socket.AF_INET: ('127.0.0.1', udp_port),
                                 socket.AF_INET6: ('::1', udp6_port)}
        yield cluster
        assert cluster.proc.poll() is None, cluster.log()[-3000:]
        assert cluster.command('V') == '20040107'
        assert 'Traceback' not in cluster.log()
    finally:
        tracker.stop_all()


# --- generated input -------------------------------------------------------------------------

WORDS = ['U', 'L', 'D', 'V', 'VF', 'Q', 'P', 'S', 'R', 'C', 'N', 'G', 'Gv', 'X', 'I', 'Ib',
         'Uc0,8', 'Lz20', 'Ue', 'Ui', 'U6', 'Dw', 'Qv', 'Pplay', 'u', 'l', 'd', 'v', 'E', '&&']
ARGS = st.one_of(
    st.sampled_from(['20040107', '20081224', '20191015', '127.0.0.1', '::1', '5000', '0', '-1',
                     '65536', 'ft1', 'tt1', 'ft1;1', 'tt1;2', 'call-1', 'call-2', 'nsess_created',
                     'session', '&&', 'unix:/tmp/x', '%%CC_SELF%%:1', 'f' * 300]),
    st.text(st.characters(min_codepoint=1, max_codepoint=255, blacklist_characters='\n'),
            min_size=1, max_size=12),
)
SEPARATORS = st.sampled_from([' ', '  ', '\t', ' \r', '\r'])


@st.composite
def command_texts(draw) -> str:
    """A token soup that often looks like a command, sometimes like nothing at all."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=120)).decode('latin-1').replace('\n', ' ')
    tokens = [draw(st.sampled_from(WORDS))] + draw(st.lists(ARGS, max_size=26))
    return ''.join(t + draw(SEPARATORS) for t in tokens[:-1]) + tokens[-1]


_cookies = itertools.count()


@st.composite
def datagrams(draw) -> bytes:
    kind = draw(st.integers(0, 19))
    if kind == 0:
        return draw(st.binary(max_size=200))                      # anything at all
    if kind == 1:
        return b'k' * draw(st.integers(1000, 1100)) + b' V'        # around MAX_COOKIE_BYTES
    cookie = '%s%d_%d' % (draw(st.text(st.characters(min_codepoint=33, max_codepoint=126),
                                       max_size=8)), os.getpid(), next(_cookies))
    return ('%s %s' % (cookie, draw(command_texts()))).encode('latin-1')


def expected_error(text: str) -> str | None:
    return parse_command(text[:protocol.MAX_COMMAND_BYTES]).error


# --- UDP -------------------------------------------------------------------------------------

@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(datagrams(), st.sampled_from([socket.AF_INET, socket.AF_INET6]))
def test_every_generated_datagram_gets_one_well_formed_answer(daemon, datagram, family):
    with socket.socket(family, socket.SOCK_DGRAM) as s:           # a fresh source: no cache hit
        s.settimeout(5.0)
        s.sendto(datagram, daemon.udp_addresses[family])
        reply = s.recv(65535).decode('latin-1')
        s.settimeout(0.01)
        with pytest.raises(socket.timeout):
            s.recv(65535)                                          # one answer, not two
    cookie, text = split_cookie(datagram[:protocol.MAX_COMMAND_BYTES].decode('latin-1'))
    if cookie is None:
        assert reply == 'E5\n'
        return
    assert reply.startswith(cookie + ' ') and reply.endswith('\n'), reply
    body = reply[len(cookie) + 1:-1]
    assert text is None or well_formed(body, text), reply
    error = protocol.E_SYNTAX if text is None else expected_error(text)
    if error is not None:
        assert body == error


# --- unix ------------------------------------------------------------------------------------

def single_line_commands():
    """Commands whose answer is one line (`I` answers several)."""
    return command_texts().filter(lambda t: not t.lstrip(' \t\r').upper().startswith('I'))


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(single_line_commands(), min_size=1, max_size=20))
def test_generated_lines_on_a_stream_get_one_answer_each_in_order(daemon, lines):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5.0)
        s.connect(daemon.unix_path)
        s.sendall(''.join(line + '\n' for line in lines).encode('latin-1'))
        s.shutdown(socket.SHUT_WR)                    # every line is still answered
        chunks = []
        while data := s.recv(65536):
            chunks.append(data)
    replies = b''.join(chunks).decode('latin-1')
    assert replies.endswith('\n')
    answers = replies[:-1].split('\n')
    assert len(answers) == len(lines), (lines, answers)
    for line, answer in zip(lines, answers):
        assert well_formed(answer, line), (line, answer)
        error = expected_error(line)
        if error is not None:
            assert answer == error, (line, answer)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(command_texts().filter(lambda t: '\n' not in t and t.strip(' \t\r')))
def test_generated_one_shot_command_gets_one_answer_then_eof(daemon, text):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5.0)
        s.connect(daemon.unix_path)
        s.sendall(text.encode('latin-1'))
        chunks = []
        while data := s.recv(65536):
            chunks.append(data)
    reply = b''.join(chunks).decode('latin-1')
    assert reply.endswith('\n') and well_formed(reply[:-1], text), reply
    error = expected_error(text)
    if error is not None:
        assert reply == error + '\n'


# --- admin socket ----------------------------------------------------------------------------

ADMIN_WORDS = ['ls', 'ls u', 'ls s --json', 'ls --json', 'ls nosuch', 'modify', 'modify u',
               'modify u pause m0', 'modify u resume m0', 'modify u pause', 'modify nosuch add',
               'modify u add name=x,protocol=udp,address=127.0.0.1:9,capacity=1,weight=1',
               'modify u add name=,protocol=tcp', 'modify u delete nosuch', 'help', 'h',
               'ls sessions', 'ls numsessions', 'ls session c1', 'ls peers', 'ls redis',
               'terminate', 'terminate c1', 'takeover', 'resync', 'kslist', 'ksadd', 'ksrm',
               'reload now', '--json', '']
ADMIN_LINES = st.one_of(
    st.sampled_from(ADMIN_WORDS),
    st.tuples(st.sampled_from(ADMIN_WORDS), ARGS).map(' '.join),
    st.text(st.characters(min_codepoint=1, max_codepoint=0x2fff, blacklist_characters='\n'),
            max_size=40),
)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(ADMIN_LINES)
def test_generated_admin_lines_get_a_reply_or_an_error_line(daemon, line):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5.0)
        s.connect(daemon.admin)
        s.sendall(line.encode('utf-8', 'surrogatepass') + b'\n')
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while data := s.recv(65536):
            chunks.append(data)
    reply = b''.join(chunks).decode('utf-8')
    if not line.strip():
        assert reply == ''
        return
    assert reply.endswith('\n'), (line, reply)
    lines = reply[:-1].split('\n')
    if lines[-1] != 'OK':
        assert len(lines) == 1 and lines[0].startswith('ERROR: '), (line, reply)
    assert not reply.startswith('ERROR: internal error'), (line, reply)
