"""No forwarding loops (issue 16, item 5).

A member whose address is the cluster's own control socket once made one `U` bounce
thousands of times.  The real daemon refuses such a member in `-d`, at startup, on `reload`
and on `modify add`; and a datagram its own member clients sent is never handled as a
client command (checked with the real UDP control server and member client, the runtime's
check bypassed).
"""
from __future__ import annotations

import subprocess
import sys

import pytest

from rtp_cluster.adapters.local_sockets import is_local_ip, resolve_socket
from rtp_cluster.adapters.transports import UDPControlServer, UDPMemberClient
from rtp_cluster.core.endpoints import Endpoint
from tests.support.daemon import Daemon, cluster_xml, member_xml
from tests.support.procs import ROOT, free_udp_port

pytestmark = pytest.mark.slow

LOOP = 'is the control socket of cluster test'


def looping_config(port: int, extra_members: list[str] = ()) -> tuple[str, str]:
    own = '127.0.0.1:%d' % port
    return cluster_xml(list(extra_members) + [member_xml('loop', protocol='udp', address=own)],
                       port=port)


def run_app(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-m', 'rtp_cluster.app'] + list(args), cwd=ROOT,
                          capture_output=True, text=True, timeout=30)


def test_check_and_startup_refuse_a_member_at_the_clusters_own_socket(tmp_path):
    config = tmp_path / 'loop.xml'
    config.write_text(looping_config(free_udp_port())[0])

    checked = run_app('-d', '-c', str(config))
    assert checked.returncode == 1
    assert 'member loop: udp:127.0.0.1:' in checked.stderr and LOOP in checked.stderr
    assert 'would loop back' in checked.stderr

    started = run_app('-f', '-c', str(config), '-s', str(tmp_path / 'admin.sock'),
                      '-P', str(tmp_path / 'pid'), '-L', str(tmp_path / 'log'))
    assert started.returncode == 1
    assert LOOP in started.stderr
    assert not (tmp_path / 'admin.sock').exists()


def test_unix_member_at_the_clusters_own_unix_socket_is_refused(tmp_path):
    path = str(tmp_path / 'cluster.sock')
    xml, _ = cluster_xml([member_xml('loop', protocol='unix', address=path)],
                         protocol='unix', address=path)
    config = tmp_path / 'loop.xml'
    config.write_text(xml)
    checked = run_app('-d', '-c', str(config))
    assert checked.returncode == 1 and LOOP in checked.stderr


def test_running_daemon_refuses_the_loop_on_modify_add_and_reload(procs, tmp_path):
    member = procs.member('udp')
    port = free_udp_port()
    good = member_xml('m1', member)
    daemon = Daemon.start(procs, tmp_path, cluster_xml([good], port=port), wait_online=['m1'])

    added = daemon.admin_command('modify', 'test', 'add', 'name=loop,protocol=udp,address='
                                 '127.0.0.1:%d,capacity=100,weight=100' % port)
    assert added.returncode == 1
    assert added.stdout.startswith('ERROR: modify add: member loop: udp:127.0.0.1:%d %s'
                                   % (port, LOOP)), added.stdout

    with open(daemon.config_path, 'w') as f:
        f.write(looping_config(port, [good])[0])
    reloaded = daemon.admin_command('reload')
    assert reloaded.returncode == 1
    assert reloaded.stdout.startswith('ERROR: ') and LOOP in reloaded.stdout

    listing = daemon.admin_command('ls', 'test').stdout
    assert 'name = loop' not in listing and 'name = m1' in listing
    # the cluster still forwards to its real member, exactly once
    assert daemon.command('U call1 127.0.0.1 4000 ft1').split()[0].isdigit()
    created = dict(line.split(':') for line in member.command('I').strip().splitlines())
    assert int(created['sessions created']) == 1
    assert daemon.log_count('commands sent by this rtp_cluster itself') == 0


def test_local_addresses_are_recognised():
    assert is_local_ip('127.0.0.1')
    assert not is_local_ip('192.0.2.1')           # TEST-NET-1: never this host's
    addresses = resolve_socket(Endpoint('udp', 'localhost', 5060))
    assert '127.0.0.1' in {address.host for address in addresses}
    assert all(address.local and address.port == 5060 for address in addresses)
    assert resolve_socket(Endpoint('udp', 'no-such-host.invalid', 5060)) == []


def test_a_datagram_from_our_own_member_client_is_dropped_not_forwarded(rt):
    handled = []
    port = free_udp_port()
    ports: set[int] = set()

    def own_source(addr) -> bool:
        return addr[1] in ports and is_local_ip(addr[0])

    def handler(command, respond):
        handled.append(command)
        respond('0')

    server = UDPControlServer(handler, rt.reactor, is_own_source=own_source)
    rt.call(server.listen, rt.reactor, '127.0.0.1', port)
    looped = UDPMemberClient(rt.reactor, '127.0.0.1', port)   # a member "at" our own socket
    rt.call(looped.start)
    ports.add(looped.local_port)
    other = UDPMemberClient(rt.reactor, '127.0.0.1', port)    # an ordinary client
    rt.call(other.start)
    try:
        replies = []
        done = rt.call(_send, rt.reactor, looped, 'V', replies)
        assert done == [None]                      # nobody answered: dropped, not handled
        assert handled == [] and server.own_datagrams >= 1
        assert rt.call(_send, rt.reactor, other, 'V', []) == ['0']
        assert len(handled) == 1
    finally:
        rt.call(looped.close)
        rt.call(other.close)
        rt.call(server.stop)


def _send(reactor, client, text: str, replies: list):
    from twisted.internet import defer
    d = defer.Deferred()

    def got(reply):
        replies.append(reply)
        d.callback(replies)
    client.send(text, got, timeout=0.3)
    return d
