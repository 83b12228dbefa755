"""core/loops: which member addresses would loop back into this process's control sockets."""
from __future__ import annotations

from rtp_cluster.core.config import parse_config
from rtp_cluster.core.endpoints import Endpoint
from rtp_cluster.core.loops import SocketAddress, config_loops, member_loop, own_sockets, same_socket

LOCAL = {'127.0.0.1', '192.0.2.10', '::1', '2001:db8::10'}


def ip(host: str, port: int = 22222) -> SocketAddress:
    return SocketAddress(host=host, port=port, local=host in LOCAL)


def fake_resolve(endpoint: Endpoint) -> list[SocketAddress]:
    """A resolver with a name that stands for two addresses and one that does not resolve."""
    if endpoint.protocol == 'unix':
        return [SocketAddress(path=endpoint.path.replace('/link/', '/real/'))]
    names = {'me.example': ['192.0.2.99', '127.0.0.1'], 'nowhere.example': []}
    return [ip(host, endpoint.port) for host in names.get(endpoint.host, [endpoint.host])]


def test_the_same_address_and_port_is_a_loop():
    assert same_socket(ip('127.0.0.1'), ip('127.0.0.1'))
    assert not same_socket(ip('127.0.0.1', 22223), ip('127.0.0.1'))
    assert not same_socket(ip('127.0.0.2'), ip('127.0.0.1'))      # another socket


def test_a_wildcard_listener_takes_every_local_address_of_its_family():
    assert same_socket(ip('192.0.2.10'), ip('0.0.0.0'))
    assert same_socket(ip('127.0.0.1'), ip('0.0.0.0'))
    assert not same_socket(ip('192.0.2.77'), ip('0.0.0.0'))       # another host
    assert not same_socket(ip('::1'), ip('0.0.0.0'))
    assert same_socket(ip('::1'), ip('::'))
    assert same_socket(ip('127.0.0.1'), ip('::'))                 # dual-stack
    assert same_socket(SocketAddress(host='::ffff:127.0.0.1', port=22222),
                       ip('127.0.0.1'))                           # IPv4-mapped


def test_unix_sockets_compare_by_resolved_path():
    assert same_socket(SocketAddress(path='/run/a.sock'), SocketAddress(path='/run/a.sock'))
    assert not same_socket(SocketAddress(path='/run/a.sock'), SocketAddress(path='/run/b.sock'))
    assert not same_socket(SocketAddress(path='/run/a.sock'), ip('127.0.0.1'))


def test_member_loop_names_the_member_and_the_cluster():
    own = own_sockets([('c1', Endpoint('udp', '0.0.0.0', 22222)),
                       ('c2', Endpoint('unix', path='/real/c2.sock'))], fake_resolve)
    problem = member_loop('m1', Endpoint('udp', 'me.example', 22222), own, fake_resolve)
    assert problem == ('member m1: udp:me.example:22222 is the control socket of cluster c1 '
                       '(udp:0.0.0.0:22222) of this rtp_cluster; commands forwarded to it '
                       'would loop back; give the address of an RTPproxy')
    assert 'cluster c2' in member_loop('m2', Endpoint('unix', path='/link/c2.sock'), own,
                                       fake_resolve)
    assert member_loop('m3', Endpoint('udp', '192.0.2.77', 22222), own, fake_resolve) is None
    assert member_loop('m4', Endpoint('udp', 'nowhere.example', 22222), own,
                       fake_resolve) is None


def member(name: str, address: str) -> str:
    return ('<rtpproxy><name>%s</name><protocol>udp</protocol><address>%s</address>'
            '<weight>100</weight><capacity>100</capacity><status>ACTIVE</status></rtpproxy>'
            % (name, address))


def cluster(name: str, address: str, members: list[str]) -> str:
    return ('<rtp_cluster><name>%s</name><protocol>udp</protocol><address>%s</address>%s'
            '</rtp_cluster>' % (name, address, ''.join(members)))


def test_config_loops_checks_members_against_every_cluster():
    xml = '<rtp_cluster_config>%s%s</rtp_cluster_config>' % (
        cluster('a', '127.0.0.1:5000', [member('ok', '127.0.0.1:6000'),
                                        member('to_b', '127.0.0.1:5001')]),
        cluster('b', '127.0.0.1:5001', [member('self', '127.0.0.1:5001')]))
    problems = config_loops(parse_config(xml.encode(), 'test.xml'), fake_resolve)
    assert [p.split(':', 1)[0] for p in problems] == ['cluster a', 'cluster b']
    assert 'member to_b: udp:127.0.0.1:5001 is the control socket of cluster b' in problems[0]
    assert 'member self: udp:127.0.0.1:5001 is the control socket of cluster b' in problems[1]
