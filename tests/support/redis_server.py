"""A real redis-server for tests, on a free loopback port, stopped by PID."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time

import redis

from tests.support.procs import free_tcp_port

REDIS_SERVER = shutil.which('redis-server') or '/usr/bin/redis-server'


class RedisServer:
    def __init__(self, port: int | None = None, extra: list[str] | None = None,
                 password: str | None = None) -> None:
        self.port = port or free_tcp_port()
        self.extra = extra or []
        self.password = password          # the default user's (--requirepass in `extra`)
        self.dir = tempfile.mkdtemp(prefix='rtpc-redis-')
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return 'redis://127.0.0.1:%d/0' % self.port

    def start(self) -> 'RedisServer':
        args = [REDIS_SERVER, '--port', str(self.port), '--bind', '127.0.0.1', '--save', '',
                '--appendonly', 'no', '--notify-keyspace-events', 'Kghxe', '--dir', self.dir,
                '--daemonize', 'no', '--loglevel', 'warning'] + self.extra
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                if self.client().ping():
                    return self
            except redis.RedisError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError('redis-server did not start on port %d' % self.port)
            time.sleep(0.05)

    def client(self, **kwargs) -> redis.Redis:
        kwargs.setdefault('password', self.password)
        return redis.Redis(host='127.0.0.1', port=self.port, socket_timeout=2, **kwargs)

    def pause(self, paused: bool = True) -> None:
        """SIGSTOP (a hung server: connections stay open, nothing answers) or SIGCONT."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGSTOP if paused else signal.SIGCONT)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            self.proc.wait(10)

    def stop(self) -> None:
        self.kill(signal.SIGTERM)
        shutil.rmtree(self.dir, ignore_errors=True)
