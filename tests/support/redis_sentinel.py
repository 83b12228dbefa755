"""A replicated Redis behind Sentinel for tests: a master, a replica and three sentinels, all
real `redis-server` processes on free loopback ports, stopped by PID.

Sentinel rewrites its configuration file while it runs, so each sentinel gets its own file in
the topology's private directory, which `stop()` removes with everything else.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time

import redis

from tests.support.procs import free_tcp_port
from tests.support.redis_server import REDIS_SERVER, RedisServer
from tests.support.waiting import wait_until

MASTER_NAME = 'rtpc'


class Sentinel:
    def __init__(self, workdir: str, master_port: int, down_after_ms: int, quorum: int,
                 password: str | None = None) -> None:
        self.port = free_tcp_port()
        self.password = password           # clients' and the other sentinels' (requirepass)
        self.conf = os.path.join(workdir, 'sentinel-%d.conf' % self.port)
        auth = ['requirepass %s' % password, 'sentinel sentinel-pass %s' % password] \
            if password else []
        with open(self.conf, 'w') as f:
            f.write('\n'.join([
                'port %d' % self.port, 'bind 127.0.0.1', 'dir %s' % workdir, *auth,
                'sentinel monitor %s 127.0.0.1 %d %d' % (MASTER_NAME, master_port, quorum),
                'sentinel down-after-milliseconds %s %d' % (MASTER_NAME, down_after_ms),
                'sentinel failover-timeout %s %d' % (MASTER_NAME, max(3000, 3 * down_after_ms)),
                'sentinel parallel-syncs %s 1' % MASTER_NAME, '']))
        self.proc = subprocess.Popen([REDIS_SERVER, self.conf, '--sentinel', '--loglevel', 'warning'],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def client(self) -> redis.Redis:
        return redis.Redis(host='127.0.0.1', port=self.port, socket_timeout=2,
                           password=self.password)

    def master_addr(self) -> tuple[str, int] | None:
        try:
            reply = self.client().execute_command('SENTINEL', 'get-master-addr-by-name', MASTER_NAME)
        except redis.RedisError:
            return None
        if not reply:
            return None
        host, port = reply
        return (host.decode() if isinstance(host, bytes) else host), int(port)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


class SentinelTopology:
    """`with SentinelTopology() as topo:` a master, a replica and three sentinels that agree on
    the master; `kill_master()` and `wait_promotion()` drive a failover."""

    def __init__(self, down_after_ms: int = 1000, sentinels: int = 3,
                 sentinel_password: str | None = None) -> None:
        self.down_after_ms = down_after_ms
        self.sentinel_password = sentinel_password
        self.sentinel_count = sentinels
        self.dir = tempfile.mkdtemp(prefix='rtpc-sentinel-')
        self.master: RedisServer | None = None
        self.replica: RedisServer | None = None
        self.sentinels: list[Sentinel] = []

    def __enter__(self) -> 'SentinelTopology':
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *_) -> None:
        self.stop()

    @property
    def sentinel_addrs(self) -> list[tuple[str, int]]:
        return [('127.0.0.1', s.port) for s in self.sentinels]

    def start(self) -> None:
        self.master = RedisServer().start()
        self.replica = RedisServer(extra=['--replicaof', '127.0.0.1', str(self.master.port)]).start()
        self._wait(lambda: self.replica.client().info('replication').get('master_link_status') == 'up',
                   10, 'the replica did not sync with the master')
        quorum = self.sentinel_count // 2 + 1
        self.sentinels = [Sentinel(self.dir, self.master.port, self.down_after_ms, quorum,
                                   self.sentinel_password)
                          for _ in range(self.sentinel_count)]
        expected = ('127.0.0.1', self.master.port)
        self._wait(lambda: all(s.master_addr() == expected for s in self.sentinels), 10,
                   'the sentinels did not agree on the master')
        # a sentinel knows the replica and its peers only after a few hello rounds
        self._wait(lambda: all(self._knows_topology(s) for s in self.sentinels), 15,
                   'the sentinels did not discover the replica and each other')

    def _knows_topology(self, sentinel: Sentinel) -> bool:
        try:
            state = sentinel.client().execute_command('SENTINEL', 'master', MASTER_NAME)
        except redis.RedisError:
            return False
        # redis-py turns this reply into a dict of bytes
        return (int(state.get(b'num-slaves', 0)) >= 1
                and int(state.get(b'num-other-sentinels', 0)) >= self.sentinel_count - 1)

    def current_master(self) -> tuple[str, int] | None:
        """The master most sentinels name now (None while they disagree or are down)."""
        answers = [s.master_addr() for s in self.sentinels]
        for addr in answers:
            if addr is not None and answers.count(addr) > len(answers) // 2:
                return addr
        return None

    def kill_master(self) -> float:
        """SIGKILL the master; returns the moment (time.monotonic) it died."""
        self.master.kill()
        return time.monotonic()

    def wait_promotion(self, timeout: float = 20.0) -> float:
        """Wait until a majority of sentinels names the replica as master; returns the moment."""
        promoted = ('127.0.0.1', self.replica.port)
        self._wait(lambda: self.current_master() == promoted, timeout,
                   'the sentinels did not promote the replica')
        return time.monotonic()

    @staticmethod
    def _wait(condition, timeout: float, what: str) -> None:
        wait_until(condition, what, timeout)

    def stop(self) -> None:
        for sentinel in self.sentinels:
            sentinel.stop()
        for server in (self.replica, self.master):
            if server is not None:
                server.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
