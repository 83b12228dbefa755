"""Control servers and member clients on real sockets.

Each test gets its own Twisted reactor (an EPollReactor that is not the global one) running
in a thread; the test drives it with blocking client sockets and `rt.call(...)`.  Members
are real rtp-io RTPproxies, or scripted fakes (in the test's reactor) for the faults a real
one cannot show: garbage, silence, wrong cookies, slowness, and for counting exact bytes.
"""
from __future__ import annotations

import os
import signal
import socket
import threading
import time

import pytest
from twisted.internet import protocol as tx_protocol

from tests.support.cluster_proc import FakeRtpp
from tests.support.reactor_thread import ReactorThread
from rtp_cluster.core import protocol
from rtp_cluster.core.cluster import Cluster
from rtp_cluster.core.config import ClusterConfig, Endpoint, MemberConfig, parse_endpoint
from rtp_cluster.core.member import OFFLINE, ONLINE, Member
from rtp_cluster.adapters.transports import (StreamControlFactory, UDPControlServer, UDPMemberClient,
                                    UnixMemberClient, listen_unix, make_member_client)

WAIT = 10.0


# --- harness ----------------------------------------------------------------------------------

def wait_for(predicate, timeout: float = WAIT, what: str = 'condition') -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError('timed out after %.1f s waiting for %s' % (timeout, what))
        time.sleep(0.01)
    return time.monotonic() - start


def member_config(name: str, member=None, *, endpoint: Endpoint | None = None,
                  **kwargs) -> MemberConfig:
    if endpoint is None:
        endpoint = parse_endpoint(member.protocol, member.address)
    return MemberConfig(name, endpoint, weight=kwargs.pop('weight', 100),
                        capacity=kwargs.pop('capacity', 1000), **kwargs)


def start_members(rt: ReactorThread, configs: list[MemberConfig], **timers) -> list[Member]:
    def build():
        members = []
        for config in configs:
            client = make_member_client(rt.reactor, config.endpoint)
            client.start()
            member = Member(config, client, rt.reactor, **timers)
            member.start()
            members.append(member)
        return members
    return rt.call(build)


class Reply:
    """Collects the answer of one asynchronous send."""

    def __init__(self) -> None:
        self.values: list = []
        self.event = threading.Event()

    def __call__(self, value) -> None:
        self.values.append(value)
        self.event.set()

    def wait(self, timeout: float = WAIT):
        assert self.event.wait(timeout), 'no callback'
        return self.values[0]


def send(rt: ReactorThread, client, text: str, timeout: float | None = None) -> Reply:
    reply = Reply()
    rt.reactor.callFromThread(client.send, text, reply, timeout)
    return reply


# --- scripted fake members -----------------------------------------------------------------------

class FakeUDPMember(tx_protocol.DatagramProtocol):
    """A UDP RTPproxy stand-in; `mode` picks the fault, `received` records every datagram."""

    noisy = False

    def __init__(self, reactor, mode: str = 'ok', delay: float = 0.0) -> None:
        self.reactor = reactor
        self.mode = mode
        self.delay = delay
        self.rtpp = FakeRtpp('fake')
        self.received: list[bytes] = []       # every datagram
        self.executed: list[str] = []         # commands run (retransmits excluded)
        self.cache: dict[str, bytes] = {}

    def datagramReceived(self, data: bytes, addr) -> None:
        self.received.append(data)
        cookie, _, text = data.decode('latin-1').partition(' ')
        mode = self.mode
        if mode == 'silent':
            return
        if mode == 'ok' and cookie in self.cache:    # like RTPproxy: retransmits not re-run
            self._send(self.cache[cookie], addr)
            return
        self.executed.append(text)
        if mode == 'garbage':
            replies = [b'\xff\xfe\x00garbage', b'', b'\n\n', os.urandom(64)]
        elif mode == 'wrong_cookie':
            replies = [('x%s %s\n' % (cookie, self.rtpp.answer(text))).encode('latin-1'),
                       ('%s %s\n' % (cookie[:-1], self.rtpp.answer(text))).encode('latin-1')]
        elif mode == 'bad_body':
            replies = [('%s what?\n' % cookie).encode('latin-1')]
        else:
            replies = [('%s %s\n' % (cookie, self.rtpp.answer(text))).encode('latin-1')]
            self.cache[cookie] = replies[0]
        for reply in replies:
            self._send(reply, addr)

    def _send(self, data: bytes, addr) -> None:
        if self.delay:
            self.reactor.callLater(self.delay, self._write, data, addr)
        else:
            self._write(data, addr)

    def _write(self, data: bytes, addr) -> None:
        if self.transport is not None:
            self.transport.write(data, addr)

    def attempts(self, command: str) -> int:
        """How many distinct cookies carried `command` (executed or not)."""
        return len({d.partition(b' ')[0] for d in self.received
                    if d.partition(b' ')[2] == command.encode('latin-1')})

    def commands(self) -> list[str]:
        """Commands executed: datagrams with a new cookie."""
        return list(self.executed)


def fake_udp_member(rt: ReactorThread, mode: str = 'ok', delay: float = 0.0):
    def build():
        fake = FakeUDPMember(rt.reactor, mode, delay)
        port = rt.reactor.listenUDP(0, fake, interface='127.0.0.1')
        return fake, port.getHost().port
    fake, port = rt.call(build)
    return fake, Endpoint('udp', host='127.0.0.1', port=port)


class _FakeStream(tx_protocol.Protocol):
    def dataReceived(self, data: bytes) -> None:
        fake = self.factory
        fake.received.append(data)
        mode = fake.mode
        if mode == 'silent':
            return
        if mode == 'close':
            self.transport.loseConnection()
            return
        body = b'\x00\xffnonsense' if mode == 'garbage' else \
            (fake.rtpp.answer(data.decode('latin-1')) + '\n').encode('latin-1')

        def reply():
            if self.transport is not None and self.connected:
                self.transport.write(body)
                self.transport.loseConnection()
        if fake.delay:
            fake.reactor.callLater(fake.delay, reply)
        else:
            reply()


class FakeUnixMember(tx_protocol.Factory):
    """A one-shot `unix:` RTPproxy stand-in."""

    protocol = _FakeStream
    noisy = False

    def __init__(self, reactor, mode: str = 'ok', delay: float = 0.0) -> None:
        self.reactor = reactor
        self.mode = mode
        self.delay = delay
        self.rtpp = FakeRtpp('fake')
        self.received: list[bytes] = []


def fake_unix_member(rt: ReactorThread, path: str, mode: str = 'ok', delay: float = 0.0):
    def build():
        fake = FakeUnixMember(rt.reactor, mode, delay)
        rt.reactor.listenUNIX(path, fake)
        return fake
    return rt.call(build), Endpoint('unix', path=path)


# --- the cluster in this process ----------------------------------------------------------------

class Stack:
    """Cluster + members + a UDP and a unix control server, all in the test's reactor."""

    def __init__(self, rt: ReactorThread, configs: list[MemberConfig], unix_path: str,
                 **timers) -> None:
        self.rt = rt
        config = ClusterConfig('c', Endpoint('udp', host='127.0.0.1', port=1), tuple(configs))

        def build():
            cluster = Cluster(config, rt.reactor)
            for member_config in configs:
                client = make_member_client(rt.reactor, member_config.endpoint)
                client.start()
                member = Member(member_config, client, rt.reactor, **timers)
                cluster.add_member(member)
                member.start()
            cluster.start()
            udp = UDPControlServer(cluster.handle, rt.reactor)
            udp.listen(rt.reactor, '127.0.0.1', 0)
            unix = listen_unix(rt.reactor, unix_path, StreamControlFactory(cluster.handle))
            return cluster, udp, unix
        self.cluster, self.udp, self.unix = rt.call(build)
        self.udp_address = ('127.0.0.1', self.udp.port.getHost().port)
        self.unix_path = unix_path
        wait_for(lambda: all(m.online for m in self.cluster.members.values()), WAIT,
                 'members online')

    def udp_socket(self, timeout: float = 2.0) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(timeout)
        s.connect(self.udp_address)
        return s

    def unix_socket(self, timeout: float = 2.0) -> socket.socket:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        s.connect(self.unix_path)
        return s

    def udp_command(self, cookie: str, command: str) -> str:
        with self.udp_socket() as s:
            s.send(('%s %s' % (cookie, command)).encode('latin-1'))
            return s.recv(65535).decode('latin-1')


def recv_lines(sock: socket.socket, count: int, timeout: float = 3.0) -> bytes:
    data = b''
    end = time.monotonic() + timeout
    while data.count(b'\n') < count and time.monotonic() < end:
        chunk = sock.recv(65535)
        if not chunk:
            break
        data += chunk
    return data


def recv_nothing(sock: socket.socket, wait: float) -> bool:
    sock.settimeout(wait)
    try:
        data = sock.recv(65535)
    except socket.timeout:
        return True
    raise AssertionError('unexpected datagram %r' % data)


# --- real members: online, capabilities, death and rebirth ----------------------------------------

def test_real_members_on_udp_udp6_and_unix_go_online_with_capabilities(rt, procs):
    real = [procs.member('udp'), procs.member('udp6'), procs.member('unix')]
    configs = [member_config('m%d' % i, m) for i, m in enumerate(real)]
    assert configs[1].endpoint.host == '::1'
    members = start_members(rt, configs)
    wait_for(lambda: all(m.state == ONLINE for m in members), WAIT, 'members online')
    for member in members:
        assert '20081224' in member.capabilities
        assert '20050322' in member.capabilities
        assert '20170313' not in member.capabilities
        assert member.stats == {'sessions created': 0, 'active sessions': 0, 'active streams': 0,
                                'packets received': 0, 'packets transmitted': 0}
    replies = [send(rt, m, 'U c%d 127.0.0.1 5000 ft' % i) for i, m in enumerate(members)]
    for reply in replies:
        port, address, _ = protocol.parse_ul_reply(reply.wait())
        assert port > 0 and address == '127.0.0.1'
    v6 = send(rt, members[1], 'U6 c6 ::1 5000 ft').wait()
    assert v6.endswith(' ::1 6')
    wait_for(lambda: all(m.stats['active sessions'] >= 1 for m in members), 3.0, 'heartbeat')
    assert all(m.client.rtt is not None and m.client.rtt < 1.0 for m in members)
    rt.call(lambda: [m.stop() for m in members])


@pytest.mark.slow
@pytest.mark.parametrize('kind', ['udp', 'unix'])
def test_killed_member_goes_offline_and_comes_back_on_the_same_address(rt, procs, kind):
    real = procs.member(kind)
    config = member_config('m1', real)
    member, = start_members(rt, [config], probe_interval=2.0)
    wait_for(lambda: member.online, WAIT, 'online')
    real.kill(signal.SIGKILL)
    took = wait_for(lambda: member.state == OFFLINE, 8.0, 'offline')
    assert took <= 5.0
    if kind == 'udp':
        again = procs.member(kind, port=config.endpoint.port)
    else:
        again = procs.member(kind, path=config.endpoint.path)
    assert again.command('V') == '20040107\n'         # answers now
    took = wait_for(lambda: member.online, 8.0, 'online again')
    assert took <= member.probe_interval + member.probe_timeout + 0.5
    assert '20081224' in member.capabilities
    reply = send(rt, member, 'U again 127.0.0.1 5000 ft').wait()
    assert protocol.parse_ul_reply(reply)
    rt.call(member.stop)


def test_command_to_a_killed_member_makes_it_offline_quickly(rt, procs):
    real = procs.member('udp')
    member, = start_members(rt, [member_config('m1', real)], heartbeat_interval=30.0)
    wait_for(lambda: member.online, WAIT, 'online')
    real.kill(signal.SIGKILL)
    assert send(rt, member, 'U c1 127.0.0.1 5000 ft', 0.3).wait() is None
    took = wait_for(lambda: member.state == OFFLINE, 5.0, 'offline')
    assert took <= 3.0                 # the V probe after a timeout, not the 30 s heartbeat
    rt.call(member.stop)


# --- member clients against faulty fakes ------------------------------------------------------------

@pytest.mark.parametrize('mode', ['garbage', 'wrong_cookie', 'silent'])
def test_udp_client_times_out_on_unusable_replies(rt, mode):
    fake, endpoint = fake_udp_member(rt, mode)
    client = rt.call(lambda: make_member_client(rt.reactor, endpoint))
    rt.call(client.start)
    started = time.monotonic()
    reply = send(rt, client, 'V', 0.6)
    assert reply.wait() is None
    assert 0.5 <= time.monotonic() - started < 2.0
    time.sleep(0.2)
    assert reply.values == [None]                       # called exactly once
    assert len(fake.received) >= 2                      # retransmitted ...
    assert len(set(fake.received)) == 1                 # ... with the same cookie and bytes
    if mode != 'silent':
        assert client.late_replies >= 1                 # what came back was not taken
    rt.call(client.close)


def test_udp_client_ignores_a_reply_from_another_address(rt):
    fake, endpoint = fake_udp_member(rt, 'silent')
    client = rt.call(lambda: make_member_client(rt.reactor, endpoint))
    rt.call(client.start)
    reply = send(rt, client, 'V', 0.6)
    wait_for(lambda: fake.received, 2.0, 'the command')
    cookie = fake.received[0].partition(b' ')[0]
    client_port = rt.call(lambda: client.transport.getHost().port)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
        stranger.sendto(cookie + b' 20040107\n', ('127.0.0.1', client_port))
    assert reply.wait() is None
    rt.call(client.close)


def test_udp_client_passes_a_wrong_body_and_member_stays_offline(rt):
    fake, endpoint = fake_udp_member(rt, 'bad_body')
    client = rt.call(lambda: make_member_client(rt.reactor, endpoint))
    rt.call(client.start)
    assert send(rt, client, 'V', 0.5).wait() == 'what?'
    rt.call(client.close)
    member, = start_members(rt, [member_config('m', endpoint=endpoint)], probe_interval=0.5)
    time.sleep(1.5)
    assert member.state != ONLINE
    assert fake.attempts('V') >= 2                      # re-probed
    rt.call(member.stop)


def test_udp_client_drops_a_reply_that_comes_after_the_timeout(rt):
    fake, endpoint = fake_udp_member(rt, 'ok', delay=0.8)
    client = rt.call(lambda: make_member_client(rt.reactor, endpoint))
    rt.call(client.start)
    reply = send(rt, client, 'U slow 127.0.0.1 5000 ft', 0.4)
    assert reply.wait() is None
    wait_for(lambda: client.late_replies >= 1, 3.0, 'the late reply')
    assert reply.values == [None]
    fake.delay = 0.0
    assert protocol.parse_ul_reply(send(rt, client, 'U fast 127.0.0.1 5000 ft', 1.0).wait())
    rt.call(client.close)


@pytest.mark.parametrize('kind', ['udp', 'unix'])
def test_closing_a_client_still_answers_commands_in_flight(rt, tmp_path, kind):
    """A drained member is closed right after its last D went out: that D must be answered."""
    if kind == 'udp':
        fake, endpoint = fake_udp_member(rt, 'ok', delay=0.3)
    else:
        fake, endpoint = fake_unix_member(rt, str(tmp_path / 'f.sock'), 'ok', delay=0.3)
    fake.rtpp.create('last', 'ft')
    client = rt.call(lambda: make_member_client(rt.reactor, endpoint))
    rt.call(client.start)

    def send_then_close(reply):
        client.send('D last ft', reply, 2.0)
        client.close()
    reply = Reply()
    rt.call(send_then_close, reply)
    assert reply.wait(3.0) == '0'
    late = Reply()
    rt.call(client.send, 'V', late, 1.0)               # a closed client takes nothing new
    assert late.wait(2.0) is None
    time.sleep(0.1)
    assert reply.values == ['0'] and late.values == [None]


@pytest.mark.parametrize('mode', ['garbage', 'wrong_cookie', 'silent', 'slow'])
def test_member_on_a_faulty_fake_never_goes_online(rt, mode):
    fake, endpoint = fake_udp_member(rt, 'ok' if mode == 'slow' else mode,
                                     delay=3.0 if mode == 'slow' else 0.0)
    member, = start_members(rt, [member_config('m', endpoint=endpoint)],
                            probe_interval=0.3, probe_timeout=0.2)
    time.sleep(1.0)
    assert member.state != ONLINE
    assert fake.attempts('V') >= 2                      # probed again and again
    rt.call(member.stop)


def test_online_member_goes_offline_when_its_fake_turns_silent_or_garbled(rt):
    fake, endpoint = fake_udp_member(rt, 'ok')
    member, = start_members(rt, [member_config('m', endpoint=endpoint)],
                            heartbeat_interval=0.3, heartbeat_timeout=0.4, probe_interval=0.5)
    wait_for(lambda: member.online, WAIT, 'online')
    fake.mode = 'garbage'
    wait_for(lambda: member.state == OFFLINE, 3.0, 'offline after garbage')
    fake.mode = 'ok'
    wait_for(lambda: member.online, 3.0, 'online again')
    fake.mode = 'slow'
    fake.delay = 2.0
    wait_for(lambda: member.state == OFFLINE, 3.0, 'offline after slowness')
    rt.call(member.stop)


@pytest.mark.parametrize('mode', ['close', 'silent', 'garbage', 'slow'])
def test_unix_client_copes_with_faulty_fakes(rt, tmp_path, mode):
    path = str(tmp_path / 'fake.sock')
    fake, endpoint = fake_unix_member(rt, path, 'ok' if mode == 'slow' else mode,
                                      delay=2.0 if mode == 'slow' else 0.0)
    client = rt.call(lambda: make_member_client(rt.reactor, endpoint))
    assert isinstance(client, UnixMemberClient)
    rt.call(client.start)
    started = time.monotonic()
    reply = send(rt, client, 'V', 0.5).wait()
    if mode == 'garbage':
        assert reply == '\x00\xffnonsense'
    else:
        assert reply is None
        assert time.monotonic() - started < 1.5
    assert fake.received == [b'V']                      # one write, no newline
    time.sleep(0.1)
    member, = start_members(rt, [member_config('m', endpoint=endpoint)],
                            probe_interval=0.5, probe_timeout=0.3)
    time.sleep(1.0)
    assert member.state != ONLINE
    rt.call(member.stop)
    rt.call(client.close)


def test_unix_client_to_a_missing_socket_answers_none(rt, tmp_path):
    client = UnixMemberClient(rt.reactor, str(tmp_path / 'nobody.sock'))
    rt.call(client.start)
    started = time.monotonic()
    assert send(rt, client, 'V', 1.0).wait() is None
    assert time.monotonic() - started < 0.9             # refused at once, no waiting
    rt.call(client.close)


def test_unix_client_serves_many_commands_with_a_connection_limit(rt, tmp_path):
    path = str(tmp_path / 'fake.sock')
    fake, endpoint = fake_unix_member(rt, path, 'ok', delay=0.05)
    client = rt.call(lambda: make_member_client(rt.reactor, endpoint))
    rt.call(client.start)
    replies = [send(rt, client, 'U q%d 127.0.0.1 5000 ft' % i, 3.0) for i in range(200)]
    answers = [r.wait() for r in replies]
    ports = [protocol.parse_ul_reply(a)[0] for a in answers]
    assert ports == [fake.rtpp.sessions['q%d' % i]['port'] for i in range(200)]
    rt.call(client.close)


def test_unix_client_bursts_to_a_real_member_lose_nothing(rt, procs):
    """RTPproxy listens with a backlog of 32: more connections at once fail to connect."""
    real = procs.member('unix')
    client = rt.call(lambda: make_member_client(rt.reactor, parse_endpoint('unix', real.address)))
    rt.call(client.start)
    for burst in range(5):
        replies = [send(rt, client, 'U burst 127.0.0.1 5000 ft', 3.0) for _ in range(100)]
        answers = [r.wait() for r in replies]
        assert answers.count(None) == 0, 'burst %d: %d of 100 failed' % (burst, answers.count(None))
        assert len(set(answers)) == 1 and protocol.parse_ul_reply(answers[0])
    rt.call(client.close)


# --- UDP control server: retransmits and reply routing -------------------------------------------

@pytest.fixture
def recorded_stack(rt, tmp_path):
    fake, endpoint = fake_udp_member(rt, 'ok')
    stack = Stack(rt, [member_config('m1', endpoint=endpoint)], str(tmp_path / 'ctl.sock'))
    return stack, fake


def test_retransmitted_cookie_gets_the_same_reply_and_runs_once(recorded_stack):
    stack, fake = recorded_stack
    with stack.udp_socket() as s:
        data = b'ck_1 U rtx1 127.0.0.1 5000 ft'
        s.send(data)
        first = s.recv(65535)
        s.send(data)
        second = s.recv(65535)
        s.send(b'ck_1 D rtx1 ft')                      # same cookie, other command: cached
        third = s.recv(65535)
    assert first == second == third
    assert first.startswith(b'ck_1 ') and first.endswith(b' 127.0.0.1\n')
    assert fake.commands().count('U rtx1 127.0.0.1 5000 ft') == 1
    assert not any(c.startswith('D') for c in fake.commands())
    assert stack.udp.duplicates == 2


def test_retransmit_while_the_first_copy_is_in_flight_is_not_executed_twice(recorded_stack):
    stack, fake = recorded_stack
    fake.delay = 0.4
    with stack.udp_socket() as s:
        data = b'inflight_7 U rtx2 127.0.0.1 5000 ft'
        s.send(data)
        time.sleep(0.1)
        s.send(data)                                   # the member has not answered yet
        time.sleep(0.1)
        s.send(data)
        reply = s.recv(65535)
        assert recv_nothing(s, 0.8)                    # one reply, not three
        s.settimeout(2.0)
        s.send(data)                                   # after the answer: from the cache
        assert s.recv(65535) == reply
    assert reply.startswith(b'inflight_7 ')
    assert fake.commands().count('U rtx2 127.0.0.1 5000 ft') == 1


def test_same_cookie_from_two_clients_are_two_commands(recorded_stack):
    stack, fake = recorded_stack
    fake.delay = 0.1
    sockets = [stack.udp_socket() for _ in range(20)]
    try:
        for i, s in enumerate(sockets):
            s.send(('same U who%d 127.0.0.1 5000 ft' % i).encode())
        replies = [s.recv(65535).decode() for s in sockets]
    finally:
        for s in sockets:
            s.close()
    for i, reply in enumerate(replies):
        cookie, body = reply.rstrip('\n').split(' ', 1)
        assert cookie == 'same'
        assert protocol.parse_ul_reply(body)[0] == fake.rtpp.sessions['who%d' % i]['port']
    assert len(fake.rtpp.sessions) == 20


def test_many_concurrent_clients_each_get_their_own_reply(recorded_stack):
    stack, fake = recorded_stack
    results: dict[int, list] = {}

    def client(n: int) -> None:
        got = []
        with stack.udp_socket(3.0) as s:
            for j in range(20):
                cid = 'k%d_%d' % (n, j)
                s.send(('c%d U %s 127.0.0.1 5000 ft' % (j, cid)).encode())
                cookie, body = s.recv(65535).decode().rstrip('\n').split(' ', 1)
                got.append((cookie == 'c%d' % j, cid, body))
        results[n] = got
    threads = [threading.Thread(target=client, args=(n,)) for n in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 10
    for got in results.values():
        for cookie_ok, cid, body in got:
            assert cookie_ok
            assert protocol.parse_ul_reply(body)[0] == fake.rtpp.sessions[cid]['port']


def test_malformed_datagrams_are_answered_locally(recorded_stack):
    stack, fake = recorded_stack
    before = len(fake.received)
    with stack.udp_socket() as s:
        for data, expected in [(b'', b'E5\n'), (b'only_cookie', b'only_cookie E5\n'),
                               (b'ck Y', b'ck E0\n'), (b'ck2 V 1', b'ck2 E1\n'),
                               (b'ck3 Dx c f', b'ck3 E8\n'), (b'ck4 V', b'ck4 20040107\n')]:
            s.send(data)
            assert s.recv(65535) == expected, data
    assert all(c in ('Ib', 'V') for c in fake.commands()[before:])


# --- unix control socket ------------------------------------------------------------------------

def test_unix_one_shot_style(recorded_stack):
    stack, _ = recorded_stack
    with stack.unix_socket() as s:
        s.sendall(b'VF 20081224')                       # no newline, like Kamailio
        assert recv_lines(s, 1) == b'0\n'               # remote member, no relay (issue 15)
        assert s.recv(100) == b''                       # the server closed the connection
    with stack.unix_socket() as s:
        s.sendall(b'U one 127.0.0.1 5000 ft')
        reply = recv_lines(s, 1)
        assert protocol.parse_ul_reply(reply.decode())
        assert s.recv(100) == b''


def test_unix_persistent_line_style(recorded_stack):
    stack, fake = recorded_stack
    with stack.unix_socket() as s:
        s.sendall(b'V\nVF 20040107\n')
        assert recv_lines(s, 2) == b'20040107\n1\n'
        s.sendall(b'\nY\n')
        assert recv_lines(s, 2) == b'E5\nE0\n'
        fake.delay = 0.3                                # replies stay in command order
        s.sendall(b'U ordered 127.0.0.1 5000 ft\nV\n')
        data = recv_lines(s, 2).decode()
        first, second = data.split('\n')[:2]
        assert protocol.parse_ul_reply(first) and second == '20040107'
        s.sendall(b'V\n')                               # still open
        assert recv_lines(s, 1) == b'20040107\n'


def test_client_disconnecting_mid_command_does_not_disturb_others(rt, recorded_stack):
    stack, fake = recorded_stack
    fake.delay = 0.3
    quitter = stack.unix_socket()
    quitter.sendall(b'U gone 127.0.0.1 5000 ft')
    line_quitter = stack.unix_socket()
    line_quitter.sendall(b'U gone2 127.0.0.1 5000 ft\nV\n')
    udp_quitter = stack.udp_socket()
    udp_quitter.send(b'q1 U gone3 127.0.0.1 5000 ft')
    quitter.close()
    line_quitter.close()
    udp_quitter.close()
    with stack.unix_socket() as s, stack.udp_socket() as u:
        s.sendall(b'U stays 127.0.0.1 5000 ft')
        u.send(b'u1 U stays2 127.0.0.1 5000 ft')
        assert protocol.parse_ul_reply(recv_lines(s, 1).decode())
        cookie, body = u.recv(65535).decode().split(' ', 1)
        assert cookie == 'u1' and protocol.parse_ul_reply(body)
    time.sleep(0.5)                                     # the orphaned replies have been written
    fake.delay = 0.0
    with stack.unix_socket() as s:
        s.sendall(b'V\n')
        assert recv_lines(s, 1) == b'20040107\n'
    assert stack.udp_command('after', 'V') == 'after 20040107\n'
    assert {'gone', 'gone2', 'gone3', 'stays', 'stays2'} <= set(fake.rtpp.sessions)


def test_unix_control_socket_refuses_to_replace_a_live_socket(rt, recorded_stack):
    stack, _ = recorded_stack
    from rtp_cluster.adapters.transports import StartupError
    with pytest.raises(StartupError):
        rt.call(listen_unix, rt.reactor, stack.unix_path, StreamControlFactory(lambda c, r: r('0')))
    assert stack.udp_command('x', 'V') == 'x 20040107\n'


# --- the whole path with real members ---------------------------------------------------------------

def test_cluster_over_real_members_on_all_transports(rt, procs, tmp_path):
    real = [procs.member('udp'), procs.member('udp6'), procs.member('unix')]
    stack = Stack(rt, [member_config('m%d' % i, m) for i, m in enumerate(real)],
                  str(tmp_path / 'ctl.sock'))
    for i in range(30):
        cid = 'all%d' % i
        u = stack.udp_command('u%d' % i, 'U %s 127.0.0.1 5000 ft' % cid)
        assert protocol.parse_ul_reply(u.split(' ', 1)[1])
        with stack.unix_socket() as s:
            s.sendall(('L %s 127.0.0.1 6000 ft tt' % cid).encode())
            assert protocol.parse_ul_reply(recv_lines(s, 1).decode())
        d = stack.udp_command('d%d' % i, 'D %s ft tt' % cid)
        assert d == 'd%d 0\n' % i
    created = [int(m.command('Ib').split('\n')[0].split(': ')[1]) for m in real]
    assert sum(created) == 30
    assert all(int(m.command('Ib').split('\n')[1].split(': ')[1]) == 0 for m in real)
    assert isinstance(stack.cluster.members['m0'].client, UDPMemberClient)
    rt.call(stack.cluster.stop)


# --- stream bounds (streams.py) ------------------------------------------------------------------

class HeldHandler:
    """Answers `V` at once and keeps every other command until `release()`."""

    def __init__(self, rt: ReactorThread) -> None:
        self.rt = rt
        self.held: list = []

    def __call__(self, command, respond) -> None:
        if command.letter == 'V':
            respond(protocol.PROTOCOL_VERSION)
        else:
            self.held.append((command.call_id, respond))

    def release(self, count: int | None = None) -> None:
        def answer():
            batch = self.held[:count]
            del self.held[:len(batch)]
            for call_id, respond in batch:
                respond('0 %s' % call_id)
        self.rt.call(answer)


def bounded_unix_server(rt, path: str, handler, **limits):
    from rtp_cluster.adapters.streams import StreamLimits
    factory = StreamControlFactory(handler, rt.reactor, StreamLimits(**limits))
    return rt.call(listen_unix, rt.reactor, path, factory)


def connect_unix(path: str, timeout: float = 3.0) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(path)
    return s


def test_idle_stream_connections_are_closed_unless_a_reply_is_due(rt, tmp_path):
    path = str(tmp_path / 'c.sock')
    handler = HeldHandler(rt)
    port = bounded_unix_server(rt, path, handler, max_connections=8, idle_timeout=0.4)
    try:
        silent, talker, waiter = connect_unix(path), connect_unix(path), connect_unix(path)
        started = time.monotonic()
        talker.sendall(b'V\n')
        assert recv_lines(talker, 1) == b'20040107\n'
        waiter.sendall(b'D held 1\n')
        assert silent.recv(10) == b''
        assert 0.3 < time.monotonic() - started < 2.0
        assert talker.recv(10) == b''
        time.sleep(0.6)                                 # its reply is due: not idle
        handler.release()
        assert recv_lines(waiter, 1) == b'0 held\n'
        assert waiter.recv(10) == b''                   # idle once answered
    finally:
        for s in (silent, talker, waiter):
            s.close()
        rt.call(port.stopListening)


def test_too_many_commands_in_flight_pause_reading_until_answered(rt, tmp_path, monkeypatch):
    from rtp_cluster.adapters.transports import StreamControlProtocol
    monkeypatch.setattr(StreamControlProtocol, 'MAX_IN_FLIGHT', 4)
    path = str(tmp_path / 'c.sock')
    handler = HeldHandler(rt)
    port = bounded_unix_server(rt, path, handler, max_connections=8)
    try:
        with connect_unix(path) as s:
            s.sendall(b''.join(b'D c%d 1\n' % i for i in range(10)))
            wait_for(lambda: len(handler.held) == 4, WAIT, 'four commands')
            time.sleep(0.2)
            assert len(handler.held) == 4               # the others wait unread
            handler.release(2)                          # two answered: two more are read
            wait_for(lambda: len(handler.held) == 4, WAIT, 'two more commands')
            data = b''
            while data.count(b'\n') < 10:
                assert len(handler.held) <= 4
                handler.release()
                data += recv_lines(s, 1)
            assert data == b''.join(b'0 c%d\n' % i for i in range(10))
    finally:
        rt.call(port.stopListening)


def test_stream_connection_limit_refuses_with_e992(rt, tmp_path):
    path = str(tmp_path / 'c.sock')
    port = bounded_unix_server(rt, path, HeldHandler(rt), max_connections=2)
    try:
        first, second = connect_unix(path), connect_unix(path)
        first.sendall(b'V\n')
        assert recv_lines(first, 1) == b'20040107\n'
        with connect_unix(path) as third:
            assert third.recv(100) == b'E992\n'
            assert third.recv(100) == b''
        second.close()
        wait_for(lambda: probe(path) == b'20040107\n', WAIT, 'a free slot')
        first.close()
    finally:
        rt.call(port.stopListening)


def probe(path: str) -> bytes:
    with connect_unix(path) as s:
        s.sendall(b'V\n')
        return s.recv(100)


def test_a_new_client_evicts_the_longest_idle_connection_but_not_a_busy_one(rt, tmp_path,
                                                                            monkeypatch):
    from rtp_cluster.adapters import streams
    monkeypatch.setattr(streams, 'EVICT_IDLE', 0.3)
    path = str(tmp_path / 'c.sock')
    handler = HeldHandler(rt)
    port = bounded_unix_server(rt, path, handler, max_connections=2)
    try:
        oldest, busy = connect_unix(path), connect_unix(path)
        busy.sendall(b'D held 1\n')                    # owed a reply: never evicted
        wait_for(lambda: len(handler.held) == 1, WAIT, 'the held command')
        time.sleep(0.4)
        assert probe(path) == b'20040107\n'            # took the place of `oldest`
        assert oldest.recv(10) == b''
        time.sleep(0.1)                                 # the probe's connection is gone
        other_busy = connect_unix(path)
        other_busy.sendall(b'D held2 1\n')
        wait_for(lambda: len(handler.held) == 2, WAIT, 'the second held command')
        time.sleep(0.4)                                 # both silent, but both owed a reply
        with connect_unix(path) as refused:
            assert refused.recv(100) == b'E992\n'
        handler.release()
        assert recv_lines(busy, 1) == b'0 held\n'
        assert recv_lines(other_busy, 1) == b'0 held2\n'
        for s in (oldest, busy, other_busy):
            s.close()
    finally:
        rt.call(port.stopListening)
