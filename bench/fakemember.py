"""A scripted RTPproxy stand-in for the benchmarks (UDP control protocol only, no media).

One real RTPproxy holds only a few thousand sessions, so the memory benchmark puts these behind
the cluster instead.  It answers at once, from a plain non-blocking socket loop:

    V -> 20040107        VF <date> -> 1          U/L -> <port> <addr> (stable per call-id and tag)
    D -> 0               Q -> 60 0 0 0 0         I/Ib/Il -> the five (six) info lines
    G/Gv -> 0 per name   X -> 0                  anything else -> E0

It keeps the set of live call-ids so that `Ib` reports plausible session counts.

    python -m bench.fakemember --listen 127.0.0.1:23500
"""
from __future__ import annotations

import argparse
import os
import selectors
import signal
import socket
import sys
import zlib


class FakeMember:
    def __init__(self, addr: str = '127.0.0.1') -> None:
        self.addr = addr.encode('latin-1')
        self.sessions: set[bytes] = set()
        self.created = 0

    def answer(self, data: bytes) -> bytes:
        """The reply datagram for one request datagram."""
        cookie, _, rest = data.partition(b' ')
        tokens = rest.split()
        if not tokens:
            return (cookie + b' E5\n') if cookie else b'E5\n'
        return cookie + b' ' + self.body(tokens) + b'\n'

    def body(self, tokens: list[bytes]) -> bytes:
        word = tokens[0].upper()
        letter = word[:1]
        if letter in b'UL':
            if len(tokens) < 5 or (letter == b'L' and len(tokens) < 6):
                return b'E1'
            cid = tokens[1]
            if letter == b'U' and cid not in self.sessions:
                self.sessions.add(cid)
                self.created += 1
            port = 20000 + 2 * (zlib.crc32(cid + b' ' + tokens[4]) % 20000)
            return b'%d %s' % (port, self.addr)
        if letter == b'D':
            if len(tokens) < 3:
                return b'E1'
            self.sessions.discard(tokens[1])
            return b'0'
        if word == b'V':
            return b'20040107'
        if word == b'VF':
            return b'1' if len(tokens) == 2 else b'E1'
        if letter == b'I':
            n = len(self.sessions)
            lines = b'sessions created: %d\nactive sessions: %d\nactive streams: %d\n' \
                    b'packets received: 0\npackets transmitted: 0' % (self.created, n, 2 * n)
            if b'L' in word:
                lines += b'\naverage load: 0.000000'
            return lines
        if letter == b'Q':
            return b'60 0 0 0 0' if len(tokens) >= 3 else b'E1'
        if letter == b'G':
            if word == b'GV':
                return b' '.join(b'%s=0' % name for name in tokens[1:])
            return b' '.join(b'0' for _ in tokens[1:])
        if word == b'X':
            self.sessions.clear()
            return b'0'
        return b'E0'


def serve(sock: socket.socket, member: FakeMember, stop: list[bool]) -> None:
    """Answer datagrams until stop[0] becomes true (checked at least twice a second)."""
    sock.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ)
    recvfrom, sendto, answer = sock.recvfrom, sock.sendto, member.answer
    while not stop[0]:
        if not sel.select(0.5):
            continue
        for _ in range(1000):                  # drain a burst, then look at `stop` again
            try:
                data, peer = recvfrom(65535)
            except BlockingIOError:
                break
            try:
                sendto(answer(data), peer)
            except (BlockingIOError, ConnectionRefusedError):
                pass                            # the client retransmits, like with a real member
    sel.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--listen', default='127.0.0.1:23500', help='HOST:PORT (default %(default)s)')
    ap.add_argument('--addr', default=None, help='address in U/L replies (default: listen host)')
    args = ap.parse_args(argv)
    host, _, port = args.listen.rpartition(':')
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind((host, int(port)))
    stop = [False]
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))
    signal.signal(signal.SIGINT, lambda *_: stop.__setitem__(0, True))
    print('READY %d' % os.getpid(), flush=True)
    serve(sock, FakeMember(args.addr or host), stop)
    sock.close()
    return 0


if __name__ == '__main__':
    sys.exit(main())
