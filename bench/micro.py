"""The cluster's own Python work per control command, without sockets or other processes.

The real hot path (UDPControlServer -> Cluster -> Member -> UDPMemberClient and back) runs
in this process against two in-memory members that answer every command at once: U and L
with a port, D with 0.  Datagrams go through stand-in sockets that only keep the last one
sent, so what is measured is the CPU the cluster's code spends per command, free of the
scheduler and of the other processes on a shared machine (unlike bench.runner, whose
figures also hold the kernel's and the event loop's share).

    python -m bench.micro                  # microseconds of CPU per command, best of 5
    python -m bench.micro --profile        # the same under cProfile, top functions

Beside the time it prints the Python function calls per command (cProfile's count): unlike
the time it does not depend on what else the machine runs, so small changes show in it.
"""
from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time

from twisted.internet import reactor

from rtp_cluster.adapters.transports import UDPControlServer, UDPMemberClient
from rtp_cluster.core.cluster import Cluster
from rtp_cluster.core.config import ClusterConfig, Endpoint, MemberConfig
from rtp_cluster.core.member import ONLINE, Member

CLIENT = ('127.0.0.1', 5060)


class LastDatagram:
    """A stand-in socket: keeps what was sent last."""

    def __init__(self) -> None:
        self.data = b''
        self.addr = None

    def sendto(self, data: bytes, addr) -> int:
        self.data, self.addr = data, addr
        return len(data)

    send = sendto


class Stand:
    """The cluster with two in-memory members, fed one command at a time."""

    def __init__(self) -> None:
        configs = tuple(MemberConfig('m%d' % i, Endpoint('udp', '127.0.0.1', 23000 + 2 * i),
                                     100, 100000) for i in (1, 2))
        self.cluster = Cluster(ClusterConfig('bench', Endpoint('udp', '127.0.0.1', 22222),
                                             configs), reactor)
        self.clients: dict[str, UDPMemberClient] = {}
        for config in configs:
            client = UDPMemberClient(reactor, config.endpoint.host, config.endpoint.port)
            client._listening = _Port(LastDatagram())
            member = Member(config, client, reactor)
            member.state = ONLINE
            member.capabilities_known = True
            self.cluster.add_member(member)
            self.clients[config.name] = client
        self.server = UDPControlServer(self.cluster.handle, reactor)
        self.server.port = _Port(LastDatagram())
        self.answers = {'U': b'35000 127.0.0.1\n', 'L': b'35002 127.0.0.1\n', 'D': b'0\n'}

    def command(self, datagram: bytes) -> bytes:
        """One command through the whole path; the reply datagram the client gets."""
        self.server.datagramReceived(datagram, CLIENT)
        for client in self.clients.values():
            sock = client._listening.socket
            if sock.data:
                sent, sock.data = sock.data, b''
                cookie, _, text = sent.partition(b' ')
                client.datagramReceived(cookie + b' ' + self.answers[text[:1].decode()],
                                        client.address)
        return self.server.port.socket.data

    def cycles(self, count: int, prefix: str = 'c') -> None:
        self.feed(self.command, datagrams(count, prefix))

    @staticmethod
    def feed(command, batch: list[bytes]) -> None:
        for i, datagram in enumerate(batch):
            command(datagram)
            if i % 3000 == 2999:
                reactor.runUntilCurrent()    # the timers an event loop would run meanwhile


def datagrams(count: int, prefix: str = 'c') -> list[bytes]:
    """`count` U/L/D cycles as a client sends them."""
    out = []
    for i in range(count):
        cid = '%s%d' % (prefix, i)
        out += [('a%d_U U %s 127.0.0.1 4000 ft' % (i, cid)).encode(),
                ('a%d_L L %s 127.0.0.1 4002 ft tt' % (i, cid)).encode(),
                ('a%d_D D %s ft tt' % (i, cid)).encode()]
    return out


class _Port:
    def __init__(self, sock) -> None:
        self.socket = sock


def check(stand: Stand) -> None:
    """The stand really runs the cluster: a cycle gets the members' answers back."""
    assert stand.command(b'k1 U chk 127.0.0.1 4000 ft') == b'k1 35000 127.0.0.1\n'
    assert stand.command(b'k2 L chk 127.0.0.1 4002 ft tt') == b'k2 35002 127.0.0.1\n'
    assert stand.command(b'k3 D chk ft tt') == b'k3 0\n'
    assert len(stand.cluster.store) == 0


def best_of(repeat: int, run) -> float:
    best = float('inf')
    for _ in range(repeat):
        started = time.process_time()
        count = run()
        best = min(best, (time.process_time() - started) / count)
    return best * 1e6


def layers(cycles: int, repeat: int) -> dict[str, float]:
    """Microseconds of CPU per command of each layer, from the same datagrams."""
    from rtp_cluster.core import protocol

    def parse() -> int:
        batch = datagrams(cycles, 'p')
        for datagram in batch:
            protocol.parse_command(protocol.split_cookie(datagram.decode('latin-1'))[1])
        return len(batch)

    def server_alone() -> int:
        server = UDPControlServer(lambda cmd, respond: respond('0'), reactor)
        server.port = _Port(LastDatagram())
        batch = datagrams(cycles, 's')
        Stand.feed(lambda d: server.datagramReceived(d, CLIENT), batch)
        return len(batch)

    def full() -> int:
        stand = Stand()
        batch = datagrams(cycles, 'f')
        Stand.feed(stand.command, batch)
        return len(batch)

    def cluster_alone() -> int:
        stand = Stand()
        answers = {'U': '35000 127.0.0.1', 'L': '35002 127.0.0.1', 'D': '0'}
        for member in stand.cluster.members.values():
            member.send = lambda text, callback, timeout=None: callback(answers[text[0]])
        commands = [protocol.parse_command(protocol.split_cookie(d.decode('latin-1'))[1])
                    for d in datagrams(cycles, 'k')]
        handle, ignore = stand.cluster.handle, lambda body: None
        Stand.feed(lambda cmd: handle(cmd, ignore), commands)
        return len(commands)

    def member_client_alone() -> int:
        client = Stand().clients['m1']
        sock, address = client._listening.socket, client.address
        texts = [d.split(b' ', 1)[1].decode('latin-1') for d in datagrams(cycles, 'm')]
        ignore, reply = (lambda body: None), b'0\n'

        def one(text: str) -> None:
            client.send(text, ignore)
            client.datagramReceived(sock.data.partition(b' ')[0] + b' ' + reply, address)
        Stand.feed(one, texts)
        return len(texts)

    figures = {'parse (split_cookie, parse_command)': best_of(repeat, parse),
               'cluster alone (parsed commands, members answer in the call)':
                   best_of(repeat, cluster_alone),
               'a member client alone (send, reply)': best_of(repeat, member_client_alone),
               'control server with an instant handler (parse included)': best_of(repeat,
                                                                                  server_alone),
               'whole path (server, cluster, member clients, stand-in member)':
                   best_of(repeat, full)}
    return figures


def measure(cycles: int, repeat: int) -> float:
    """Microseconds of CPU per command, the best of `repeat` runs."""
    best = float('inf')
    for run in range(repeat):
        stand = Stand()
        check(stand)
        started = time.process_time()
        stand.cycles(cycles, 'r%d-' % run)
        best = min(best, (time.process_time() - started) / (3 * cycles))
    return best * 1e6


def calls_per_command(cycles: int = 2000) -> float:
    """Python and builtin function calls per command (the stand's own included)."""
    stand = Stand()
    check(stand)
    profiler = cProfile.Profile()
    profiler.runcall(stand.cycles, cycles)
    return pstats.Stats(profiler).total_calls / (3 * cycles)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="the cluster's Python CPU per command")
    ap.add_argument('--cycles', type=int, default=20000, help='U/L/D cycles per run (20000)')
    ap.add_argument('--repeat', type=int, default=5, help='runs; the best is reported (5)')
    ap.add_argument('--profile', action='store_true', help='cProfile one run instead')
    ap.add_argument('--layers', action='store_true',
                    help='also time the parser and the control server alone')
    ap.add_argument('--top', type=int, default=30)
    args = ap.parse_args(argv)
    if args.profile:
        stand = Stand()
        check(stand)
        profiler = cProfile.Profile()
        profiler.runcall(stand.cycles, args.cycles)
        pstats.Stats(profiler).sort_stats('tottime').print_stats(args.top)
        return 0
    print('%.2f us of CPU per command (U/L/D cycles, best of %d runs of %d cycles); '
          '%.1f function calls per command' % (measure(args.cycles, args.repeat), args.repeat,
                                                args.cycles, calls_per_command()))
    if args.layers:
        for name, value in layers(args.cycles, args.repeat).items():
            print('%8.2f us  %s' % (value, name))
    return 0


if __name__ == '__main__':
    sys.exit(main())
