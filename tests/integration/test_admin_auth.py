"""The TCP admin socket: loopback only unless opted in, then a shared secret (issue 16, item 6).

The real daemon and the real rtp_cluster_client: refused command lines, then a daemon
whose TCP admin socket requires `auth SECRET` (with --admin-allow-remote, on a loopback
address: tests send nothing off the host).
"""
from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from tests.support.daemon import Daemon, cluster_xml, member_xml
from tests.support.procs import ROOT, free_tcp_port

pytestmark = pytest.mark.slow

SECRET = 'sixteen-or-more-characters-secret'


def run(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-m', module] + list(args), cwd=ROOT,
                          capture_output=True, text=True, timeout=30)


def secret_file(tmp_path, name: str, text: str, mode: int = 0o600) -> str:
    path = tmp_path / name
    path.write_text(text + '\n')
    path.chmod(mode)
    return str(path)


def daemon_args(tmp_path, *args: str) -> list[str]:
    config = tmp_path / 'c.xml'
    if not config.exists():
        config.write_text(cluster_xml([member_xml('m1', protocol='udp',
                                                  address='127.0.0.1:9')])[0])
    return ['-f', '-c', str(config), '-P', str(tmp_path / 'pid'),
            '-L', str(tmp_path / 'log')] + list(args)


@pytest.mark.parametrize('args, problem', [
    (('-s', 'tcp:0.0.0.0:{port}'), '0.0.0.0 is not a loopback address'),
    (('-s', 'tcp:0.0.0.0:{port}', '--admin-allow-remote'), 'needs --admin-secret-file'),
    (('-s', 'tcp:127.0.0.1:{port}', '--admin-allow-remote'), 'needs --admin-secret-file'),
    (('-s', 'tcp:127.0.0.1:{port}', '--admin-secret-file', '{readable}'),
     'other users can read or write it'),
    (('-s', 'tcp:127.0.0.1:{port}', '--admin-secret-file', '{short}'), 'shorter than 16'),
    (('-s', 'tcp:127.0.0.1:{port}', '--admin-secret-file', '{missing}'),
     'No such file or directory'),
    (('-s', 'unix:{tmp}/admin.sock', '--admin-secret-file', '{good}'), 'for a tcp: admin socket'),
])
def test_an_exposed_or_unprotected_admin_socket_is_refused(tmp_path, args, problem):
    names = {'port': free_tcp_port(), 'tmp': str(tmp_path),
             'good': secret_file(tmp_path, 'good', SECRET),
             'readable': secret_file(tmp_path, 'readable', SECRET, 0o644),
             'short': secret_file(tmp_path, 'short', 'tiny'),
             'missing': str(tmp_path / 'missing')}
    started = run('rtp_cluster.app', *daemon_args(tmp_path, *(a.format(**names) for a in args)))
    assert started.returncode == 1
    assert problem in started.stderr, started.stderr
    assert not (tmp_path / 'pid').exists()


def test_remote_admin_needs_the_secret_before_any_command(procs, tmp_path):
    port = free_tcp_port()
    good = secret_file(tmp_path, 'good', SECRET)
    wrong = secret_file(tmp_path, 'wrong', SECRET + '-not')
    member = procs.member('udp')
    daemon = Daemon.start(procs, tmp_path, cluster_xml([member_xml('m1', member)]),
                          wait_online=['m1'], extra_args=[
        '-s', 'tcp:127.0.0.1:%d' % port, '--admin-allow-remote', '--admin-secret-file', good])
    spec = 'tcp:127.0.0.1:%d' % port

    anonymous = run('rtp_cluster.admin_client', '-s', spec, 'ls')
    assert (anonymous.returncode, anonymous.stdout) == (
        1, 'ERROR: authentication required: send "auth SECRET" first\n')
    refused = run('rtp_cluster.admin_client', '-s', spec, '--secret-file', wrong, 'ls')
    assert (refused.returncode, refused.stdout) == (1, 'ERROR: authentication failed\n')
    allowed = run('rtp_cluster.admin_client', '-s', spec, '--secret-file', good, 'ls')
    assert allowed.returncode == 0, allowed
    assert '    name = test' in allowed.stdout.splitlines()
    assert allowed.stdout.endswith('\nOK\n')

    # the connection of a wrong secret is closed: nothing after it is run
    with socket.create_connection(('127.0.0.1', port), timeout=5) as s:
        s.sendall(b'auth guess-guess-guess-guess\nmodify test pause m1\n')
        received = b''
        while True:
            data = s.recv(4096)
            if not data:
                break
            received += data
    assert received == b'ERROR: authentication failed\n'
    status = run('rtp_cluster.admin_client', '-s', spec, '--secret-file', good, 'ls', 'test')
    assert status.returncode == 0, status
    assert '        status = ACTIVE' in status.stdout.splitlines()     # the pause never ran
    assert daemon.proc.poll() is None
    # refusals are logged, at most one line per 10 s however many there are
    assert daemon.log_count('refused: no or wrong secret') == 1
    assert '(1 refused so far)' in daemon.log()
