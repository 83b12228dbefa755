"""adapters/systemd.py: notifications on a test NOTIFY_SOCKET, the watchdog on a Clock."""
from __future__ import annotations

import os
import socket

import pytest
from twisted.internet.task import Clock

from rtp_cluster.adapters.systemd import STATUS_INTERVAL, SystemdNotifier, status_line
from tests.unit.test_observe_world import World


@pytest.fixture
def listener(tmp_path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / 'notify.sock')
    sock.bind(path)
    sock.setblocking(False)
    yield path, sock
    sock.close()


def received(sock) -> list[str]:
    messages = []
    while True:
        try:
            messages.append(sock.recv(4096).decode())
        except BlockingIOError:
            return messages


def test_not_under_systemd_nothing_is_sent():
    notifier = SystemdNotifier({})
    assert not notifier.enabled
    assert notifier.notify('READY=1') is False
    notifier.start(Clock(), lambda: 'x')      # no loops without a socket
    assert notifier._loops == []


def test_ready_status_reloading_stopping(listener):
    path, sock = listener
    notifier = SystemdNotifier({'NOTIFY_SOCKET': path})
    notifier.ready('1 clusters')
    notifier.reloading()
    notifier.ready()
    notifier.stopping()
    messages = received(sock)
    assert messages[0] == 'READY=1\nSTATUS=1 clusters'
    reloading = messages[1].split('\n')
    assert reloading[0] == 'RELOADING=1' and reloading[1].startswith('MONOTONIC_USEC=')
    assert int(reloading[1].split('=')[1]) > 0
    assert messages[2:] == ['READY=1', 'STOPPING=1']
    notifier.stop()


def test_abstract_socket_address(tmp_path):
    name = 'rtpc-test-%d' % os.getpid()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind('\0' + name)
    sock.settimeout(2)
    try:
        notifier = SystemdNotifier({'NOTIFY_SOCKET': '@' + name})
        assert notifier.notify('READY=1')
        assert sock.recv(100) == b'READY=1'
        notifier.stop()
    finally:
        sock.close()


def test_watchdog_cadence_is_half_the_interval(listener):
    path, sock = listener
    clock = Clock()
    notifier = SystemdNotifier({'NOTIFY_SOCKET': path, 'WATCHDOG_USEC': '2000000',
                                'WATCHDOG_PID': str(os.getpid())})
    assert notifier.watchdog_interval == 2.0
    notifier.start(clock, lambda: 'fine')
    first = received(sock)
    assert first == ['WATCHDOG=1', 'STATUS=fine']
    for _ in range(10):                  # 10 s: a ping every second
        clock.advance(1.0)
    messages = received(sock)
    assert messages.count('WATCHDOG=1') == 10
    assert 'STATUS=fine' not in messages         # an unchanged status is not repeated
    notifier.stop()
    clock.advance(5.0)
    assert received(sock) == []


def test_status_is_refreshed_when_it_changes(listener):
    path, sock = listener
    clock = Clock()
    text = ['a']
    notifier = SystemdNotifier({'NOTIFY_SOCKET': path})
    notifier.start(clock, lambda: text[0])
    assert received(sock) == ['STATUS=a']       # no watchdog without WATCHDOG_USEC
    text[0] = 'b'
    clock.advance(STATUS_INTERVAL)
    assert received(sock) == ['STATUS=b']
    notifier.stop()


@pytest.mark.parametrize('environ', [
    {'WATCHDOG_USEC': '0'}, {'WATCHDOG_USEC': 'abc'}, {'WATCHDOG_USEC': '1000000', 'WATCHDOG_PID': '1'},
])
def test_watchdog_not_meant_for_us(environ):
    assert SystemdNotifier(dict(environ, NOTIFY_SOCKET='/x')).watchdog_interval is None


def test_unusable_socket_address_disables():
    assert not SystemdNotifier({'NOTIFY_SOCKET': 'vsock:2:1234'}).enabled


def test_send_failure_is_reported_once_and_not_raised(tmp_path):
    notifier = SystemdNotifier({'NOTIFY_SOCKET': str(tmp_path / 'nobody-listens')})
    assert notifier.notify('READY=1') is False
    assert notifier.notify('READY=1') is False
    notifier.stop()


def test_status_line_counts_clusters_members_sessions():
    world = World({'a': ['m1', 'm2'], 'b': ['m3']})
    world.clusters['a'].store.bind('c1', 'm1')
    world.kill('b', 'm3')
    assert status_line(world.clusters.values()) == '2 clusters, 2/3 members online, 1 sessions'
