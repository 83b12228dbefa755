"""The null forwarder: the floor a Python relay of the control protocol can reach here.

It does the least any RTPproxy-protocol proxy must do: read a client's datagram, send it
unchanged to a member, and send the member's reply back to the client that owns its cookie.
With several members the datagram goes to the member picked by a hash of its second word (the
call-id of session commands), so a call stays on one member as behind the cluster; beyond that
no parsing, no routing table, no sessions, no retransmits.  The benchmark runs it in
the same interleaved run as the cluster, so the cluster's figures can be read as multiples of
what Python itself costs on this machine.

It uses a bare epoll loop and drains every readable socket per wake-up: no framework, so the
figure is a floor for the language, not for Twisted.

    python -m bench.nullfwd --listen 127.0.0.1:23600 --member 127.0.0.1:23500 \
        --member 127.0.0.1:23502
"""
from __future__ import annotations

import argparse
import functools
import select
import signal
import socket
import sys

MAX_DATAGRAM = 65535
# Cookies of requests the member has not answered yet; the oldest go first past this bound, so a
# member that drops requests cannot make the forwarder grow.
MAX_PENDING = 1 << 16


def parse_addr(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(':')
    return host, int(port)


class NullForwarder:
    def __init__(self, listen: tuple[str, int], members: list[tuple[str, int]]) -> None:
        self.clients = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.clients.bind(listen)
        self.clients.setblocking(False)
        self.upstreams = []
        for member in members:
            upstream = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            upstream.connect(member)
            upstream.setblocking(False)
            self.upstreams.append(upstream)
        self.pending: dict[bytes, tuple[str, int]] = {}

    def from_clients(self) -> None:
        recv, pending = self.clients.recvfrom, self.pending
        sends = [u.send for u in self.upstreams]
        count = len(sends)
        while True:
            try:
                data, addr = recv(MAX_DATAGRAM)
            except BlockingIOError:
                return
            words = data.split(b' ', 3)
            pending[words[0]] = addr
            if len(pending) > MAX_PENDING:
                del pending[next(iter(pending))]
            sends[hash(words[2]) % count if len(words) > 2 else 0](data)

    def from_member(self, upstream: socket.socket) -> None:
        recv, sendto, pending = upstream.recv, self.clients.sendto, self.pending
        while True:
            try:
                data = recv(MAX_DATAGRAM)
            except BlockingIOError:
                return
            except ConnectionRefusedError:      # the member is gone for a moment
                continue
            addr = pending.pop(data.partition(b' ')[0], None)
            if addr is not None:
                sendto(data, addr)

    def serve(self) -> None:
        poller = select.epoll()
        handlers = {self.clients.fileno(): self.from_clients}
        for upstream in self.upstreams:
            handlers[upstream.fileno()] = functools.partial(self.from_member, upstream)
        for fd in handlers:
            poller.register(fd, select.EPOLLIN)
        while True:
            for fd, _ in poller.poll():
                handlers[fd]()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description='null forwarder: the Python floor of a relay')
    ap.add_argument('--listen', required=True, help='HOST:PORT for clients')
    ap.add_argument('--member', required=True, action='append',
                    help='HOST:PORT of a member (repeat for several)')
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    forwarder = NullForwarder(parse_addr(args.listen), [parse_addr(m) for m in args.member])
    print('READY', flush=True)
    try:
        forwarder.serve()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == '__main__':
    sys.exit(main())
