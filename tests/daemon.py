"""The real rtp_cluster daemon in a child process, for tests.

    d = Daemon.start(procs, tmp_path, cluster_xml(...))
    d.command('V')                      # over the cluster's control socket
    d.wait_log('member m1: probing -> online')
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass

from procs import ROOT, Member, control_command, free_udp_port


def member_xml(name: str, member: Member | None = None, *, protocol: str | None = None,
               address: str | None = None, weight: int = 100, capacity: int = 10000,
               status: str = 'ACTIVE', extra: str = '') -> str:
    protocol = protocol or member.protocol
    address = address or member.address
    return ('<rtpproxy><name>%s</name><protocol>%s</protocol><address>%s</address>'
            '<weight>%d</weight><capacity>%d</capacity><status>%s</status>%s</rtpproxy>'
            % (name, protocol, address, weight, capacity, status, extra))


def cluster_xml(members: list[str], *, name: str = 'test', protocol: str = 'udp',
                address: str | None = None, extra: str = '') -> tuple[str, str]:
    """(config XML, control socket spec for control_command)."""
    if address is None:
        address = '127.0.0.1:%d' % free_udp_port()
    if protocol == 'unix':
        spec = 'unix:' + address
    elif protocol == 'udp6':
        spec = 'udp6:' + address
    else:
        spec = 'udp:' + address
    xml = ('<rtp_cluster_config><rtp_cluster><name>%s</name><protocol>%s</protocol>'
           '<address>%s</address>%s%s</rtp_cluster></rtp_cluster_config>'
           % (name, protocol, address, extra, ''.join(members)))
    return xml, spec


@dataclass
class Daemon:
    proc: subprocess.Popen
    control: str
    admin: str
    config_path: str
    log_path: str

    @classmethod
    def start(cls, procs, tmp_path, config: tuple[str, str], wait_online: list[str] = (),
              extra_args: list[str] = ()) -> 'Daemon':
        xml, control = config
        config_path = os.path.join(str(tmp_path), 'rtp_cluster.xml')
        with open(config_path, 'w') as f:
            f.write(xml)
        admin = os.path.join(str(tmp_path), 'admin.sock')
        log_path = os.path.join(str(tmp_path), 'rtp_cluster.log')
        log = open(log_path, 'w')
        proc = procs.add(subprocess.Popen(
            [sys.executable, '-m', 'rtp_cluster.app', '-f', '-c', config_path, '-s', 'unix:' + admin,
             '-P', os.path.join(str(tmp_path), 'rtp_cluster.pid')] + list(extra_args),
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT))
        log.close()
        daemon = cls(proc, control, admin, config_path, log_path)
        daemon.wait(lambda: daemon._answers_version(), 10, 'control socket answers V')
        for name in wait_online:
            daemon.wait_log('member %s: probing -> online' % name)
        return daemon

    def _answers_version(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError('daemon exited with %s:\n%s' % (self.proc.returncode, self.log()))
        try:
            return self.command('V', 0.3).strip() == '20040107'
        except OSError:
            return False

    def command(self, cmd: str, timeout: float = 3.0) -> str:
        return control_command(self.control, cmd, timeout)

    def log(self) -> str:
        with open(self.log_path, errors='replace') as f:
            return f.read()

    def log_count(self, text: str) -> int:
        return self.log().count(text)

    def wait_log(self, text: str, timeout: float = 10.0, count: int = 1) -> None:
        self.wait(lambda: self.log_count(text) >= count, timeout, 'log line %r' % text)

    def wait(self, predicate, timeout: float, what: str) -> float:
        start = time.monotonic()
        while not predicate():
            if time.monotonic() - start > timeout:
                raise AssertionError('timed out after %.1f s waiting for %s; log:\n%s'
                                     % (timeout, what, self.log()[-3000:]))
            time.sleep(0.05)
        return time.monotonic() - start

    def admin_command(self, *words: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, '-m', 'rtp_cluster.client', '-s', 'unix:' + self.admin]
                              + list(words), cwd=ROOT, capture_output=True, text=True, timeout=20)
