"""Hostile local clients against the real daemon: nothing grows without bound.

The UDP reply cache is bounded in bytes and refuses cookies a real RTPproxy cannot answer;
the unix control socket and the admin socket bound unsent replies, connections and idle
time, and answer every command received before a half-close.
"""
from __future__ import annotations

import os
import select
import socket
import time

import pytest

from tests.support.cluster_proc import cluster_xml, member_xml
from tests.support.daemon import Daemon
from tests.support.procs import free_udp_port

WAIT = 15.0


def rss_kib(pid: int) -> int:
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1])
    raise AssertionError('no VmRSS for %d' % pid)


def udp_address(spec: str) -> tuple[str, int]:
    host, _, port = spec.partition(':')[2].rpartition(':')
    return host.strip('[]'), int(port)


def exchange(address, datagram: bytes, timeout: float = 2.0, source: int = 0) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(('127.0.0.1', source))
        s.settimeout(timeout)
        s.sendto(datagram, address)
        try:
            return s.recv(65535)
        except socket.timeout:
            return None


def flood(address, datagrams, window: int = 32, timeout: float = 2.0, source: int = 0) -> int:
    """Send every datagram, at most `window` unanswered at a time; the number answered."""
    answered = 0
    outstanding = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        s.bind(('127.0.0.1', source))
        s.connect(address)
        for datagram in datagrams:
            s.send(datagram)
            outstanding += 1
            while outstanding >= window:
                if not select.select([s], [], [], timeout)[0]:
                    return answered                  # lost: the caller's assertion says so
                s.recv(65535)
                outstanding -= 1
                answered += 1
        while outstanding and select.select([s], [], [], timeout)[0]:
            s.recv(65535)
            outstanding -= 1
            answered += 1
    return answered


# --- the UDP reply cache -----------------------------------------------------------------------

def start_udp_daemon(procs, tmp_path, extra: str = '') -> Daemon:
    member = member_xml('m1', protocol='udp', address='127.0.0.1:%d' % free_udp_port())
    return Daemon.start(procs, tmp_path, cluster_xml([member], extra=extra))


def test_reply_cache_is_bounded_in_bytes_under_a_flood_of_unique_long_cookies(procs, tmp_path):
    """20,000 unique 1019-byte cookies (28 MB of replies and keys) against a 1 MiB cache."""
    daemon = start_udp_daemon(procs, tmp_path, '<reply_cache_bytes>1048576</reply_cache_bytes>')
    address = udp_address(daemon.control)
    warmup = [b'%s V' % ('w%d' % i).encode().rjust(1019, b'w') for i in range(2_000)]
    assert flood(address, warmup) == len(warmup)
    before = rss_kib(daemon.proc.pid)
    count = 20_000
    datagrams = (b'%s V' % ('%d' % i).encode().rjust(1019, b'k') for i in range(count))
    source = free_udp_port()
    assert flood(address, datagrams, source=source) == count
    grown = rss_kib(daemon.proc.pid) - before
    assert grown < 8 * 1024, 'RSS grew by %d KiB' % grown
    # the latest reply is still cached: a retransmit gets it (and is not executed again)
    last = ('%d' % (count - 1)).encode().rjust(1019, b'k')
    assert exchange(address, last + b' VF 20040107', source=source) == last + b' 20040107\n'
    first = ('%d' % 0).encode().rjust(1019, b'k')    # long pushed out: executed afresh
    assert exchange(address, first + b' VF 20040107', source=source) == first + b' 1\n'


def test_cookie_longer_than_the_engine_answers_gets_a_bare_e5(procs, tmp_path):
    daemon = start_udp_daemon(procs, tmp_path)
    address = udp_address(daemon.control)
    longest = b'k' * 1019
    assert exchange(address, longest) == longest + b' E5\n'
    assert exchange(address, longest + b' V') == longest + b' 20040107\n'
    for size in (1020, 4000, 8190):
        assert exchange(address, b'k' * size + b' V') == b'E5\n'
        assert exchange(address, b'k' * size) == b'E5\n'
    assert daemon.command('V') == '20040107\n'


def test_engine_answers_no_cookie_longer_than_1019_bytes(procs, tmp_path):
    """The fact behind MAX_COOKIE_BYTES, against a real RTPproxy: with a 1019-byte cookie it
    answers `E5` exactly as the cluster does; with 1020 bytes it answers nothing (rtp.io 1.1.1
    aborts on its reply buffer).  Members run their own processes: this one is thrown away."""
    member = procs.member('udp')
    daemon = start_udp_daemon(procs, tmp_path)
    longest = b'k' * 1019
    for datagram in (longest, longest[:-3] + b' abc'):
        engine = exchange(udp_address(member.control), datagram)
        assert engine is not None and engine == exchange(udp_address(daemon.control), datagram)
    assert exchange(udp_address(member.control), b'k' * 1020, timeout=1.0) is None
