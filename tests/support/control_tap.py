"""A UDP tap between an RTPproxy-protocol client and its control socket.

The client (Kamailio, the sippy B2BUA) is pointed at the tap; the tap forwards each
datagram to the real control socket and the reply back from its own address (clients use
connected sockets), and records every (command, reply) pair, so a test can compare the
`V`/`VF` answers a client got and the commands it sent afterwards.
"""
from __future__ import annotations

import select
import socket
import threading

from tests.support.procs import free_udp_port
from tests.support.waiting import wait_until


class UdpControlTap:
    def __init__(self, upstream_host: str, upstream_port: int, host: str = '127.0.0.1') -> None:
        self.port = free_udp_port(host)
        self.client_side = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.client_side.bind((host, self.port))
        self.upstream = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.upstream.bind((host, 0))
        self.upstream.connect((upstream_host, upstream_port))
        self.lock = threading.Lock()
        self.commands: list[str] = []                   # every command, in arrival order
        self.replies: dict[str, str] = {}               # cookie -> reply body
        self._sent: dict[str, tuple[tuple, str]] = {}   # cookie -> (client address, command)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @property
    def spec(self) -> str:
        return 'udp:127.0.0.1:%d' % self.port

    def _run(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.client_side, self.upstream], [], [], 0.1)
            for sock in ready:
                data, address = sock.recvfrom(65535)
                cookie, _, body = data.decode('latin-1').partition(' ')
                with self.lock:
                    if sock is self.client_side:
                        if cookie not in self._sent:
                            self.commands.append(body.strip())
                        self._sent[cookie] = (address, body.strip())
                        self.upstream.send(data)
                    elif cookie in self._sent:
                        self.replies[cookie] = body.rstrip('\n')
                        self.client_side.sendto(data, self._sent[cookie][0])

    def exchanges(self) -> list[tuple[str, str | None]]:
        """(command, reply or None) in the order the commands came."""
        with self.lock:
            return [(command, self.replies.get(cookie)) for cookie, (_, command)
                    in self._sent.items()]

    def capability_answers(self) -> dict[str, str]:
        """The last reply the client got to each `V`/`VF …` it asked."""
        out = {}
        for command, reply in self.exchanges():
            if command.split()[:1] in (['V'], ['VF']) and reply is not None:
                out[command] = reply
        return out

    def wait(self, predicate, timeout: float, what: str):
        return wait_until(predicate, what, timeout,
                          detail=lambda: 'exchanges: %r' % (self.exchanges()[-20:],))

    def close(self) -> None:
        self._stop.set()
        self.thread.join(5)
        self.client_side.close()
        self.upstream.close()
