"""Hostile local clients against the real daemon: nothing grows without bound.

The UDP reply cache is bounded in bytes and refuses cookies a real RTPproxy cannot answer;
the unix control socket and the admin socket bound unsent replies, connections and idle
time, and answer every command received before a half-close.
"""
from __future__ import annotations

import select
import socket
import time

from tests.support.cluster_proc import cluster_xml, member_xml
from tests.support.daemon import Daemon
from tests.support.procs import free_udp_port, start_scripted_member

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

def fake_member(procs) -> str:
    """A scripted member (bench/fakemember.py): `V`/`VF` are answered once one is probed."""
    port = start_scripted_member(procs)
    return member_xml('m1', protocol='udp', address='127.0.0.1:%d' % port)


def start_udp_daemon(procs, tmp_path, extra: str = '') -> Daemon:
    return Daemon.start(procs, tmp_path, cluster_xml([fake_member(procs)], extra=extra),
                        wait_online=['m1'])


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


def test_reload_applies_a_new_reply_cache_budget(procs, tmp_path):
    """A retransmit with another command shows whether the first copy's reply was cached."""
    member = fake_member(procs)
    port = free_udp_port()
    daemon = Daemon.start(procs, tmp_path, cluster_xml([member], port=port), wait_online=['m1'])
    address, source = ('127.0.0.1', port), free_udp_port()

    def flood_from(first: int, count: int) -> list[bytes]:
        cookies = [('%d' % i).encode().rjust(1019, b'k') for i in range(first, first + count)]
        assert flood(address, (c + b' V' for c in cookies), source=source) == count
        return cookies

    def cached(cookie: bytes) -> bool:
        reply = exchange(address, cookie + b' VF 20040107', source=source)
        assert reply in (cookie + b' 20040107\n', cookie + b' 1\n'), reply
        return reply == cookie + b' 20040107\n'

    early = flood_from(0, 3_000)                  # 7 MB of entries: the 64 MiB default keeps all
    assert cached(early[0])
    xml, _ = cluster_xml([member], port=port,
                         extra='<reply_cache_bytes>1048576</reply_cache_bytes>')
    with open(daemon.config_path, 'w') as f:
        f.write(xml)
    assert daemon.admin_command('reload').returncode == 0
    assert not cached(early[1])                   # dropped: over the new budget
    late = flood_from(10_000, 3_000)
    assert not cached(late[0]) and cached(late[-1])


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


# --- the unix control socket -------------------------------------------------------------------

def start_unix_daemon(procs, tmp_path, member=None) -> Daemon:
    members = [member_xml('m1', member) if member is not None else fake_member(procs)]
    path = str(tmp_path / 'control.sock')
    daemon = Daemon.start(procs, tmp_path, cluster_xml(members, protocol='unix', address=path),
                          wait_online=['m1'])
    return daemon


def unix_connect(path: str, timeout: float = 5.0) -> socket.socket:
    """A connected client; waits while the listen backlog is full (EAGAIN on unix sockets)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    deadline = time.monotonic() + timeout
    while True:
        try:
            s.connect(path)
            break
        except BlockingIOError:
            if time.monotonic() > deadline:
                s.close()
                raise
            time.sleep(0.01)
    s.settimeout(timeout)
    return s


def read_to_eof(s: socket.socket) -> bytes:
    chunks = []
    while True:
        data = s.recv(65536)
        if not data:
            return b''.join(chunks)
        chunks.append(data)


def fill_without_reading(s: socket.socket, line: bytes, seconds: float) -> int:
    """Write `line` again and again for `seconds` without reading; the complete lines sent
    (the last one may be cut: a line without its newline is never a command)."""
    s.setblocking(False)
    chunk = line * 4096
    sent = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            sent += s.send(chunk[sent % len(line):])
        except BlockingIOError:
            select.select([], [s], [], 0.05)
    return sent // len(line)


def test_unix_client_that_never_reads_is_paused_and_then_gets_every_reply(procs, tmp_path):
    daemon = start_unix_daemon(procs, tmp_path)
    path = daemon.control.partition(':')[2]
    before = rss_kib(daemon.proc.pid)
    hog = unix_connect(path)
    hog.sendall(b'V\n')                       # line mode
    assert hog.recv(100) == b'20040107\n'
    lines = fill_without_reading(hog, b'VF 20040107\n', 4.0)
    grown = rss_kib(daemon.proc.pid) - before
    # without backpressure the daemon reads everything: hundreds of MB in 4 s
    assert grown < 24 * 1024, 'RSS grew by %d KiB' % grown
    assert lines < 2_000_000, 'the daemon kept reading (%d lines)' % lines
    assert daemon.command('VF 20040107') == '1\n'        # others are served meanwhile
    admin = daemon.admin_command('ls')
    assert admin.returncode == 0 and admin.stdout.splitlines()[-1] == 'OK', admin.stderr
    hog.settimeout(10)
    hog.shutdown(socket.SHUT_WR)
    replies = read_to_eof(hog)
    assert replies == b'1\n' * lines
    hog.close()


def test_half_closed_one_shot_and_line_clients_get_forwarded_replies(procs, tmp_path):
    member = procs.member('udp')
    daemon = start_unix_daemon(procs, tmp_path, member)
    path = daemon.control.partition(':')[2]
    with unix_connect(path) as s:                             # one-shot, as Kamailio writes it
        s.sendall(b'U hc-1 127.0.0.1 5000 ft1')
        s.shutdown(socket.SHUT_WR)
        reply = read_to_eof(s)
    port = int(reply.split()[0])
    assert reply == b'%d 127.0.0.1\n' % port
    with unix_connect(path) as s:                             # pipelined lines, then half-close
        s.sendall(b'L hc-1 127.0.0.1 5002 ft1 tt1\nV\nD hc-1 ft1\nD hc-1 ft1\n')
        s.shutdown(socket.SHUT_WR)
        lines = read_to_eof(s).split(b'\n')
    # the second D is broadcast to the members; none knows the call any more: E50, as from
    # one RTPproxy
    assert lines[1:] == [b'20040107', b'0', b'E50', b'']
    assert lines[0].endswith(b' 127.0.0.1') and int(lines[0].split()[0]) > 0


def test_half_closed_one_shot_agrees_with_a_real_rtpproxy(procs, tmp_path):
    member = procs.member('unix')
    with unix_connect(member.address) as s:
        s.sendall(b'U hc-2 127.0.0.1 5000 ft1')
        s.shutdown(socket.SHUT_WR)
        engine = read_to_eof(s)
    assert engine.endswith(b' 127.0.0.1\n') and int(engine.split()[0]) > 0


def test_unix_control_socket_limits_connections_with_a_refusal(procs, tmp_path):
    """Refusals while every connection is fresh; later a new client evicts an idle one."""
    from rtp_cluster.adapters.streams import EVICT_IDLE, connection_limit
    from rtp_cluster.adapters.transports import MAX_CONTROL_CONNECTIONS
    limit = connection_limit(MAX_CONTROL_CONNECTIONS, 4)
    daemon = start_unix_daemon(procs, tmp_path)
    path = daemon.control.partition(':')[2]
    opened = time.monotonic()
    idle = [unix_connect(path) for _ in range(limit)]
    extra = [unix_connect(path) for _ in range(50)]
    assert time.monotonic() - opened < EVICT_IDLE, 'too slow to test refusals'
    for s in extra:
        assert read_to_eof(s) == b'E992\n'
        s.close()
    admin = daemon.admin_command('ls')
    assert admin.returncode == 0 and admin.stdout.splitlines()[-1] == 'OK', admin.stderr
    daemon.wait_log('unix control socket: refused 1 connection(s): at most %d at a time, '
                    'none idle' % limit, WAIT)
    assert daemon.log_count('unix control socket: refused') == 1      # rate-limited
    time.sleep(max(0.0, opened + EVICT_IDLE + 0.5 - time.monotonic()))
    assert daemon.command('VF 20040107') == '1\n'                      # one idle one made room
    daemon.wait_log('unix control socket: closed 1 idle connection(s) to make room', WAIT)
    assert idle[0].recv(10) == b''                                     # the longest idle one
    for s in idle:
        s.close()


def probe_line(path: str) -> bytes:
    with unix_connect(path) as s:
        s.sendall(b'V\n')
        return s.recv(100)


def test_admin_socket_limits_connections_with_a_refusal(procs, tmp_path):
    from rtp_cluster.adapters.admin_socket import MAX_CONNECTIONS
    from rtp_cluster.adapters.streams import EVICT_IDLE
    daemon = start_udp_daemon(procs, tmp_path)
    opened = time.monotonic()
    idle = [unix_connect(daemon.admin) for _ in range(MAX_CONNECTIONS)]
    with unix_connect(daemon.admin) as s:
        assert read_to_eof(s) == (b'ERROR: too many admin connections (at most %d); '
                                  b'try again later\n' % MAX_CONNECTIONS)
    assert time.monotonic() - opened < EVICT_IDLE, 'too slow to test refusals'
    assert daemon.command('V') == '20040107\n'
    daemon.wait_log('admin socket: refused 1 connection(s): at most %d at a time'
                    % MAX_CONNECTIONS, WAIT)
    time.sleep(max(0.0, opened + EVICT_IDLE + 0.5 - time.monotonic()))
    ls = daemon.admin_command('ls')
    assert ls.returncode == 0 and ls.stdout.splitlines()[-1] == 'OK', ls.stderr
    assert idle[0].recv(10) == b''                                     # made room
    for s in idle:
        s.close()


def test_admin_half_close_gets_every_reply(procs, tmp_path):
    daemon = start_udp_daemon(procs, tmp_path)
    with unix_connect(daemon.admin) as s:
        s.sendall(b'ls\n' * 200 + b'help\n')
        s.shutdown(socket.SHUT_WR)
        text = read_to_eof(s).decode()
    assert text.count('\nOK\n') + text.startswith('OK\n') >= 201, text[-300:]
    assert text.endswith('OK\n')
