#!/usr/bin/env python3
"""`make demo`: two real RTPproxies (rtp-io) behind one rtp_cluster, all on loopback.

Starts the members (tools/rtpp_member.py) on udp:127.0.0.1:22223 and :22224, writes a
configuration into the demo directory and runs the rtp_cluster daemon in the foreground
on udp:127.0.0.1:22222 with the admin socket unix:DIR/admin.sock; then it sets up and
tears down one call with `rtp_cluster_client --control` and prints the commands with
their replies.  The members' engine messages go to DIR/rtpproxyN.log, their working
files (the accounting CSV) to DIR/rtpproxyN/.  Ctrl-C stops everything the demo started
and removes the directory (kept, with its logs, when something failed).

Environment overrides: RTPC_DEMO_PORT (22222), RTPC_DEMO_MEMBER_PORTS ("22223 22224"),
RTPC_DEMO_DIR (a new temporary directory; a directory given here is kept, with the
configuration and the logs), RTPC_DEMO_MEDIA_BASE (40000: member N relays RTP on ports
BASE + 1000 * N to BASE + 1000 * N + 999).  `--seconds N` stops the demo after N seconds.
"""
from __future__ import annotations

import argparse
import json
import os
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MEMBER_SCRIPT = os.path.join(ROOT, 'tools', 'rtpp_member.py')
HOST = '127.0.0.1'
STARTUP_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0


class DemoError(Exception):
    """The demo cannot run; str(e) says why."""


@dataclass(frozen=True)
class Settings:
    port: int
    members: list[int]
    directory: str | None          # None: a temporary directory the demo removes
    media_base: int


def settings() -> Settings:
    env = os.environ.get
    try:
        port = int(env('RTPC_DEMO_PORT', '22222'))
        members = [int(p) for p in env('RTPC_DEMO_MEMBER_PORTS', '22223 22224').split()]
        media_base = int(env('RTPC_DEMO_MEDIA_BASE', '40000'))
    except ValueError:
        raise DemoError('RTPC_DEMO_PORT, RTPC_DEMO_MEMBER_PORTS and RTPC_DEMO_MEDIA_BASE '
                        'must be numbers') from None
    if not members:
        raise DemoError('RTPC_DEMO_MEMBER_PORTS names no port')
    if not 1024 <= media_base <= 65535 - 1000 * len(members):
        raise DemoError('RTPC_DEMO_MEDIA_BASE leaves no room for %d members' % len(members))
    return Settings(port, members, env('RTPC_DEMO_DIR') or None, media_base)


def check_free(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((HOST, port))
        except OSError as exc:
            raise DemoError('udp %s:%d is not free (%s); set RTPC_DEMO_PORT / '
                            'RTPC_DEMO_MEMBER_PORTS' % (HOST, port, exc.strerror)) from None


def rtpp_command(port: int, command: str, timeout: float = 0.5) -> str | None:
    """One RTPproxy command over UDP; the reply body or None."""
    cookie = 'demo%d' % time.monotonic_ns()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.sendto(('%s %s' % (cookie, command)).encode(), (HOST, port))
            data, _ = s.recvfrom(65535)
        except OSError:
            return None
    got, _, body = data.decode('latin-1').partition(' ')
    return body.strip() if got == cookie else None


def wait_for(what: str, ready, proc: subprocess.Popen, goal: str = 'start') -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while not ready():
        if proc.poll() is not None:
            raise DemoError('%s exited with status %d' % (what, proc.returncode))
        if time.monotonic() > deadline:
            raise DemoError('%s did not %s within %d s' % (what, goal, STARTUP_TIMEOUT))
        time.sleep(0.1)


def start_member(index: int, port: int, media_base: int, directory: str,
                 procs: list[subprocess.Popen]) -> None:
    name = 'rtpproxy%d' % (index + 1)
    workdir = os.path.join(directory, name)
    os.makedirs(workdir, exist_ok=True)
    log_path = os.path.join(directory, name + '.log')
    low = media_base + 1000 * index
    args = [sys.executable, MEMBER_SCRIPT, '--die-with-stdin', '--workdir', workdir,
            '-s', 'udp:%s:%d' % (HOST, port), '-l', HOST, '-m', str(low), '-M', str(low + 999)]
    with open(log_path, 'ab') as log:
        proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                text=True, start_new_session=True)
    procs.append(proc)
    ready, _, _ = select.select([proc.stdout], [], [], STARTUP_TIMEOUT)
    line = proc.stdout.readline() if ready else ''
    if not line.startswith('READY'):
        raise DemoError('member on udp:%s:%d did not start (is rtp-io installed?); see %s'
                        % (HOST, port, log_path))
    wait_for('member on port %d' % port, lambda: rtpp_command(port, 'V') == '20040107', proc)
    print('demo: member %s (pid %d) on udp:%s:%d, engine messages in %s'
          % (name, proc.pid, HOST, port, log_path))


def member_xml(index: int, port: int) -> str:
    return ('    <rtpproxy>\n'
            '      <name>rtpproxy%d</name>\n'
            '      <protocol>udp</protocol>\n'
            '      <address>%s:%d</address>\n'
            '      <weight>100</weight>\n'
            '      <capacity>1000</capacity>\n'
            '      <status>ACTIVE</status>\n'
            '    </rtpproxy>\n' % (index + 1, HOST, port))


def write_config(path: str, port: int, members: list[int]) -> None:
    text = ('<?xml version="1.0" encoding="UTF-8"?>\n'
            '<!-- written by scripts/demo.py -->\n'
            '<rtp_cluster_config>\n'
            '  <rtp_cluster>\n'
            '    <name>demo</name>\n'
            '    <protocol>udp</protocol>\n'
            '    <address>%s:%d</address>\n' % (HOST, port)
            + ''.join(member_xml(i, p) for i, p in enumerate(members))
            + '  </rtp_cluster>\n'
            '</rtp_cluster_config>\n')
    with open(path, 'w') as f:
        f.write(text)


def start_cluster(directory: str, port: int, procs: list[subprocess.Popen]) -> str:
    config = os.path.join(directory, 'rtp_cluster.xml')
    admin = 'unix:' + os.path.join(directory, 'admin.sock')
    args = [sys.executable, '-m', 'rtp_cluster.app', '-f', '-c', config, '-s', admin,
            '-P', os.path.join(directory, 'rtp_cluster.pid')]
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    proc = subprocess.Popen(args, cwd=ROOT, env=env, start_new_session=True)
    procs.append(proc)
    wait_for('rtp_cluster', lambda: rtpp_command(port, 'V') == '20040107', proc)
    return admin


def client_command() -> list[str]:
    """How to run rtp_cluster_client: the script pip installed next to this Python, or the
    source tree's wrapper."""
    installed = os.path.join(os.path.dirname(sys.executable), 'rtp_cluster_client')
    if os.access(installed, os.X_OK):
        return [installed]
    return [sys.executable, os.path.join(ROOT, 'rtp_cluster_client.py')]


def shown(argv: list[str]) -> str:
    """A command line as the user would type it from the current directory."""
    words = []
    for word in argv:
        if os.path.isabs(word) and os.path.exists(word):
            relative = os.path.relpath(word)
            word = relative if relative.startswith('..') else os.path.join('.', relative)
        words.append(shlex.quote(word))
    return ' '.join(words)


def online_members(admin: str) -> int:
    """How many members the cluster has online (admin `ls --json`); 0 when it cannot tell."""
    result = subprocess.run(client_command() + ['-s', admin, '-t', '2', 'ls', '--json'],
                            capture_output=True, text=True, timeout=30)
    try:
        return json.loads(result.stdout.splitlines()[0])['clusters'][0]['online_members']
    except (IndexError, KeyError, ValueError):
        return 0


def example_call(port: int) -> list[str]:
    """Offer, answer and delete one call through the cluster; the commands and their replies."""
    client = client_command() + ['--control', 'udp:%s:%d' % (HOST, port)]
    call_id = 'demo-call-%d' % os.getpid()
    lines = []
    for command in ('U %s 127.0.0.1 5000 ft1' % call_id, 'L %s 127.0.0.1 5002 ft1 tt1' % call_id,
                    'D %s ft1 tt1' % call_id):
        result = subprocess.run(client + [command], capture_output=True, text=True, timeout=30)
        if result.returncode != 0:
            raise DemoError('the example call failed: %s: %s'
                            % (command, (result.stdout + result.stderr).strip()))
        lines += ['    $ ' + shown(client + [command]), '    ' + result.stdout.strip()]
    return lines


def instructions(port: int, admin: str, example: list[str]) -> str:
    admin_client = shown(client_command() + ['-s', admin])
    control = shown(client_command() + ['--control', 'udp:%s:%d' % (HOST, port)])
    return '\n'.join([
        '',
        'rtp_cluster is serving udp:%s:%d; its log goes to this terminal.' % (HOST, port),
        '',
        'A call through the cluster, set up and torn down just now with the control client',
        '(U = offer, L = answer, D = delete; the reply to U and L is the relay port and address):',
    ] + example + [
        'Counters (through the cluster: the members\' last heartbeats, up to a second old):',
        '    $ %s --stats' % control,
        '',
        'Admin socket:',
        '    $ %s ls' % admin_client,
        '    $ %s ls demo' % admin_client,
        '',
        'Kamailio (kamailio.cfg):',
        '    loadmodule "rtpproxy.so"',
        '    modparam("rtpproxy", "rtpproxy_sock", "udp:%s:%d")' % (HOST, port),
        'OpenSIPS (opensips.cfg):',
        '    loadmodule "rtpproxy.so"',
        '    modparam("rtpproxy", "rtpproxy_sock", "udp:%s:%d")' % (HOST, port),
        '',
        'Press Ctrl-C to stop the cluster and the members.',
        '',
    ])


def stop_all(procs: list[subprocess.Popen]) -> None:
    """Stop, by PID and newest first, every process the demo started."""
    for proc in reversed(procs):
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(STOP_TIMEOUT)
        if proc.stdin:
            proc.stdin.close()
        if proc.stdout:
            proc.stdout.close()


def run(seconds: float | None) -> int:
    conf = settings()
    for p in [conf.port] + conf.members:
        check_free(p)
    directory = conf.directory or tempfile.mkdtemp(prefix='rtp_cluster-demo-')
    os.makedirs(directory, exist_ok=True)
    print('demo: working directory %s' % directory, flush=True)
    procs: list[subprocess.Popen] = []
    status = 1
    try:
        for index, member_port in enumerate(conf.members):
            start_member(index, member_port, conf.media_base, directory, procs)
        write_config(os.path.join(directory, 'rtp_cluster.xml'), conf.port, conf.members)
        admin = start_cluster(directory, conf.port, procs)
        wait_for('rtp_cluster', lambda: online_members(admin) == len(conf.members), procs[-1],
                 'bring every member online')
        print(instructions(conf.port, admin, example_call(conf.port)), flush=True)
        status = supervise(procs, seconds)
        return status
    except KeyboardInterrupt:
        status = 0                 # Ctrl-C during the start: stopped, not failed
        raise
    finally:
        stop_all(procs)
        clean_up(directory, temporary=conf.directory is None, failed=status != 0,
                 members=len(conf.members))


def clean_up(directory: str, temporary: bool, failed: bool, members: int) -> None:
    """Remove what the demo wrote; the logs stay when something failed or the user chose the
    directory."""
    for index in range(members):
        shutil.rmtree(os.path.join(directory, 'rtpproxy%d' % (index + 1)), ignore_errors=True)
    if failed:
        print('demo: stopped; the logs are in %s' % directory, flush=True)
    elif temporary:
        shutil.rmtree(directory, ignore_errors=True)
        print('demo: stopped; %s removed' % directory, flush=True)
    else:
        print('demo: stopped; the configuration and the logs stay in %s' % directory, flush=True)


def supervise(procs: list[subprocess.Popen], seconds: float | None) -> int:
    """Wait for Ctrl-C (or `seconds`); 1 if a child died on its own."""
    deadline = None if seconds is None else time.monotonic() + seconds
    try:
        while deadline is None or time.monotonic() < deadline:
            dead = [p for p in procs if p.poll() is not None]
            if dead:
                print('demo: process %d exited unexpectedly' % dead[0].pid, file=sys.stderr)
                return 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    return 0


def _interrupt(_signum: int, _frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description='Run rtp_cluster with two real RTPproxies.')
    parser.add_argument('--seconds', type=float, help='stop after this many seconds')
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)      # also when started with SIGINT ignored
    try:
        return run(args.seconds)
    except DemoError as exc:
        print('demo: %s' % exc, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0


if __name__ == '__main__':
    sys.exit(main())
