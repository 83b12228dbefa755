"""The admin interface without real sockets.

Behaviour runs against a real `Runtime` on a `MemoryReactorClock`: clusters and members
use unix socket addresses, and a small simulated RTPproxy answers the member clients'
connections (V, VF, Ib), so members really go online, offline, drain and get removed.
Formatting of things a unix-only runtime cannot show (UDP addresses, unknown session
counts) uses real `Cluster`/`Member` objects with a stub member client.
"""
from __future__ import annotations

import json
import os
import socket

import pytest
from twisted.internet.error import CannotListenError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import globalLogPublisher

from rtp_cluster.adapters import admin
from rtp_cluster.adapters.admin import AdminCommands, AdminFactory, AdminProtocol, AdminReply, AdminServer
from rtp_cluster.core.cluster import Cluster
from rtp_cluster.core.config import ClusterConfig, ConfigError, Endpoint, MemberConfig, load_config
from rtp_cluster.core.member import DRAINING, ONLINE, Member
from rtp_cluster.adapters.runtime import Runtime
from rtp_cluster.adapters.transports import StartupError

DELAY = 0.000312          # simulated member round trip, seconds
INFO = ('sessions created: %d\nactive sessions: %d\nactive streams: 0\n'
        'packets received: 0\npackets transmitted: 0\n')


# --- a simulated RTPproxy behind every unix member address -------------------------------------

class FakeRtpproxies:
    """Answers UnixMemberClient connections made on a MemoryReactorClock."""

    def __init__(self, reactor: MemoryReactorClock) -> None:
        self.reactor = reactor
        self.active: dict[str, int] = {}      # path -> active sessions; absent = down
        self.commands: list[tuple[str, str]] = []
        self._seen = 0

    def up(self, path: str, active: int = 0) -> None:
        self.active[path] = active

    def down(self, path: str) -> None:
        self.active.pop(path, None)

    def reply(self, path: str, command: str) -> str:
        self.commands.append((path, command))
        if command == 'V':
            return '20040107\n'
        if command.startswith('VF '):
            return '1\n'
        if command == 'Ib':
            return INFO % (self.active[path], self.active[path])
        return 'E1\n'

    def pump(self, rounds: int = 50) -> None:
        """Answer every pending connection (and those the answers start), batch by batch."""
        for _ in range(rounds):
            batch = self.reactor.unixClients[self._seen:]
            if not batch:
                return
            self._seen += len(batch)
            self.reactor.advance(DELAY)
            for path, factory, _timeout, _pid in batch:
                self._answer(path, factory)
        raise AssertionError('member clients never stopped connecting')

    def _answer(self, path: str, factory) -> None:
        if path not in self.active:
            factory.clientConnectionFailed(None, None)
            return
        proto = factory.buildProtocol(None)
        transport = StringTransport()
        proto.makeConnection(transport)
        proto.dataReceived(self.reply(path, transport.value().decode()).encode())
        proto.connectionLost(None)


def member_xml(name: str, weight: int = 100, capacity: int = 2500, status: str = 'ACTIVE',
               extra: str = '') -> str:
    return ('<rtpproxy><name>%s</name><protocol>unix</protocol>'
            '<address>/nonexistent/%s.sock</address><weight>%d</weight>'
            '<capacity>%d</capacity><status>%s</status>%s</rtpproxy>'
            % (name, name, weight, capacity, status, extra))


def config_xml(alpha_members: list[str], beta_members: list[str] = ()) -> str:
    def cluster(name: str, members) -> str:
        return ('<rtp_cluster><name>%s</name><protocol>unix</protocol>'
                '<address>/nonexistent/%s.sock</address>%s</rtp_cluster>'
                % (name, name, ''.join(members)))
    return ('<rtp_cluster_config>%s%s</rtp_cluster_config>'
            % (cluster('alpha', alpha_members), cluster('beta', beta_members)))


M1 = member_xml('m1', extra='<wan_address>192.0.2.1</wan_address><lan_address>10.0.0.1'
                '</lan_address>')
M2 = member_xml('m2', status='SUSPENDED')
M3 = member_xml('m3', weight=50, capacity=1000, extra='<cmd_out_address>127.0.0.2'
                '</cmd_out_address>')
M4 = member_xml('m4', capacity=100)


class World:
    def __init__(self, tmp_path, xml: str) -> None:
        self.config_path = str(tmp_path / 'rtp_cluster.xml')
        self.write(xml)
        self.reactor = MemoryReactorClock()
        self.rtpp = FakeRtpproxies(self.reactor)
        self.rtpp.up('/nonexistent/m1.sock', 12)
        self.rtpp.up('/nonexistent/m2.sock', 0)
        self.rtpp.up('/nonexistent/m4.sock', 50)
        self.runtime = Runtime(load_config(self.config_path), self.config_path, self.reactor)
        self.runtime.start()
        self.rtpp.pump()
        self.commands = AdminCommands(self.runtime)

    def write(self, xml: str) -> None:
        with open(self.config_path, 'w') as f:
            f.write(xml)

    def run(self, line: str) -> str:
        return self.commands.execute(line).text()

    def cluster(self, name: str = 'alpha') -> Cluster:
        return self.runtime.clusters[name]


@pytest.fixture
def world(tmp_path):
    w = World(tmp_path, config_xml([M1, M2, M3], [M4]))
    yield w
    w.runtime.stop()


# --- ls -------------------------------------------------------------------------------------

LS = '''\
Cluster: #0
    name = alpha
    address = /nonexistent/alpha.sock
    online members = 2 (1 active, 1 suspended, 0 draining)
    offline members = 1

Cluster: #1
    name = beta
    address = /nonexistent/beta.sock
    online members = 1 (1 active, 0 suspended, 0 draining)
    offline members = 0
OK
'''

LS_ALPHA = '''\
Online members of the cluster #0:
    RTPproxy: #0
        name = m1
        address = /nonexistent/m1.sock
        wan_address = 192.0.2.1
        lan_address = 10.0.0.1
        weight = 100
        capacity = 2500
        state = online
        active sessions = 12
        capacity utilization = 0.480000%
        average rtpc delay = 0.000312 sec
        status = ACTIVE

    RTPproxy: #1
        name = m2
        address = /nonexistent/m2.sock
        weight = 100
        capacity = 2500
        state = online
        active sessions = 0
        capacity utilization = 0.000000%
        average rtpc delay = 0.000312 sec
        status = SUSPENDED

Offline members of the cluster #0:
    RTPproxy: #0
        name = m3
        address = /nonexistent/m3.sock
        cmd_out_address = 127.0.0.2
        weight = 50
        capacity = 1000
        state = offline
OK
'''

LS_BETA = '''\
Online members of the cluster #1:
    RTPproxy: #0
        name = m4
        address = /nonexistent/m4.sock
        weight = 100
        capacity = 100
        state = online
        active sessions = 50
        capacity utilization = 50.000000%
        average rtpc delay = 0.000312 sec
        status = ACTIVE

Offline members of the cluster #1:

OK
'''


def test_ls_lists_every_cluster_verbatim(world):
    assert world.run('ls') == LS


def test_ls_cluster_shows_online_then_offline_members_verbatim(world):
    assert world.run('ls alpha') == LS_ALPHA


def test_ls_cluster_without_offline_members_ends_with_an_empty_line(world):
    assert world.run('ls beta') == LS_BETA


def test_ls_unknown_cluster(world):
    assert world.run('ls gamma') == 'ERROR: gamma: cluster not found\n'


def test_ls_with_no_clusters_is_just_ok():
    runtime = type('R', (), {'clusters': {}})()
    assert AdminCommands(runtime).execute('ls').text() == 'OK\n'


def test_member_going_offline_and_back_moves_between_the_lists(world):
    world.rtpp.down('/nonexistent/m4.sock')
    world.reactor.advance(1.0)              # the heartbeat
    world.rtpp.pump()
    assert 'online members = 0 (0 active, 0 suspended, 0 draining)\n' \
        '    offline members = 1\nOK\n' in world.run('ls')
    assert world.run('ls beta') == (
        'Online members of the cluster #1:\n\nOffline members of the cluster #1:\n'
        '    RTPproxy: #0\n        name = m4\n        address = /nonexistent/m4.sock\n'
        '        weight = 100\n        capacity = 100\n        state = offline\nOK\n')
    world.rtpp.up('/nonexistent/m4.sock', 7)
    world.reactor.advance(2.0)              # the next probe
    world.rtpp.pump()
    assert '        active sessions = 7\n' in world.run('ls beta')


def test_ls_json(world):
    reply = world.commands.execute('ls --json')
    assert reply.lines[-1] == 'OK' and len(reply.lines) == 2
    assert json.loads(reply.lines[0]) == {'clusters': [
        {'index': 0, 'name': 'alpha', 'protocol': 'unix', 'address': '/nonexistent/alpha.sock',
         'online_members': 2, 'active': 1, 'suspended': 1, 'draining': 0,
         'offline_members': 1},
        {'index': 1, 'name': 'beta', 'protocol': 'unix', 'address': '/nonexistent/beta.sock',
         'online_members': 1, 'active': 1, 'suspended': 0, 'draining': 0,
         'offline_members': 0}]}


def test_ls_cluster_json(world):
    for line in ('ls alpha --json', 'ls --json alpha'):
        reply = world.commands.execute(line)
        assert reply.lines[-1] == 'OK' and len(reply.lines) == 2
        data = json.loads(reply.lines[0])
        assert (data['index'], data['name'], data['address']) == (0, 'alpha',
                                                                  '/nonexistent/alpha.sock')
        assert [m['name'] for m in data['online']] == ['m1', 'm2']
        m1 = data['online'][0]
        assert m1 == {'name': 'm1', 'protocol': 'unix', 'address': '/nonexistent/m1.sock',
                      'wan_address': '192.0.2.1', 'lan_address': '10.0.0.1',
                      'cmd_out_address': None, 'weight': 100, 'capacity': 2500,
                      'state': 'online', 'active_sessions': 12,
                      'capacity_utilization': pytest.approx(0.48),
                      'average_rtpc_delay': pytest.approx(DELAY), 'status': 'ACTIVE'}
        assert data['offline'] == [
            {'name': 'm3', 'protocol': 'unix', 'address': '/nonexistent/m3.sock',
             'wan_address': None, 'lan_address': None, 'cmd_out_address': '127.0.0.2',
             'weight': 50, 'capacity': 1000, 'state': 'offline', 'active_sessions': None,
             'capacity_utilization': None, 'average_rtpc_delay': None, 'status': 'ACTIVE'}]
    assert world.run('ls gamma --json') == 'ERROR: gamma: cluster not found\n'


# --- formatting of what a unix-only runtime cannot show ------------------------------------------

class StubClient:
    rtt = None

    def send(self, text, callback, timeout=None):
        pass

    def close(self):
        pass


def stub_cluster(endpoint: Endpoint, members: list[tuple[MemberConfig, str, dict | None]]):
    cluster = Cluster(ClusterConfig('edge', endpoint, tuple(m for m, _, _ in members)), None)
    for config, state, stats in members:
        member = Member(config, StubClient(), None)
        member.state, member.stats = state, stats
        cluster.add_member(member)
    return cluster


def test_udp_addresses_unknown_sessions_and_draining_status():
    udp = MemberConfig('b-udp', Endpoint('udp', '127.0.0.1', 22222), 10, 200)
    udp6 = MemberConfig('a-udp6', Endpoint('udp6', '::1', 22223), 20, 300, 'SUSPENDED')
    cluster = stub_cluster(Endpoint('udp', '127.0.0.1', 22222),
                           [(udp, ONLINE, None), (udp6, ONLINE, None)])
    cluster.members['b-udp'].status = DRAINING
    runtime = type('R', (), {'clusters': {'edge': cluster}})()
    commands = AdminCommands(runtime)
    assert commands.execute('ls').text() == (
        'Cluster: #0\n    name = edge\n    address = 127.0.0.1:22222\n'
        '    online members = 2 (0 active, 1 suspended, 1 draining)\n'
        '    offline members = 0\nOK\n')
    assert commands.execute('ls edge').text() == '''\
Online members of the cluster #0:
    RTPproxy: #0
        name = a-udp6
        address = [::1]:22223
        weight = 20
        capacity = 300
        state = online
        active sessions = UNKNOWN
        capacity utilization = 0.000000%
        average rtpc delay = 0.000000 sec
        status = SUSPENDED

    RTPproxy: #1
        name = b-udp
        address = 127.0.0.1:22222
        weight = 10
        capacity = 200
        state = online
        active sessions = UNKNOWN
        capacity utilization = 0.000000%
        average rtpc delay = 0.000000 sec
        status = DRAINING

Offline members of the cluster #0:

OK
'''
    member = json.loads(commands.execute('ls edge --json').lines[0])['online'][0]
    assert (member['address'], member['active_sessions']) == ('[::1]:22223', None)


# --- modify -----------------------------------------------------------------------------------

def test_add_member_which_then_comes_online(world):
    world.rtpp.up('/nonexistent/m5.sock', 3)
    line = ('modify alpha add name=m5,protocol=unix,address=/nonexistent/m5.sock,capacity=300,'
            'weight=7,lan_address=10.0.0.5')
    assert world.run(line) == 'OK\n'
    world.rtpp.pump()
    member = world.cluster().members['m5']
    assert (member.online, member.status, member.weight, member.capacity) == \
        (True, 'ACTIVE', 7, 300)
    assert world.run('ls alpha').split('\n\n')[2] == '''\
    RTPproxy: #2
        name = m5
        address = /nonexistent/m5.sock
        lan_address = 10.0.0.5
        weight = 7
        capacity = 300
        state = online
        active sessions = 3
        capacity utilization = 1.000000%
        average rtpc delay = 0.000312 sec
        status = ACTIVE'''
    assert 'online members = 3 (2 active, 1 suspended, 0 draining)' in world.run('ls')


def test_add_suspended_member_and_spaces_around_values(world):
    assert world.run('modify beta add name = m6 , protocol=UNIX, address=/nonexistent/m6.sock,'
                     'capacity=10,weight=1,status=suspended') == 'OK\n'
    assert world.cluster('beta').members['m6'].status == 'SUSPENDED'


def test_add_existing_member(world):
    assert world.run('modify alpha add name=m1,protocol=unix,address=/nonexistent/x.sock,'
                     'capacity=1,weight=1') == 'ERROR: m1: RTPproxy already exists\n'


def test_pause_and_resume(world):
    assert world.run('modify alpha pause m1') == 'OK\n'
    assert world.cluster().members['m1'].status == 'SUSPENDED'
    assert 'online members = 2 (0 active, 2 suspended, 0 draining)' in world.run('ls')
    assert world.run('modify alpha resume m2') == 'OK\n'
    assert world.run('modify alpha resume m1') == 'OK\n'
    assert 'online members = 2 (2 active, 0 suspended, 0 draining)' in world.run('ls')
    assert world.run('modify alpha suspend m2') == 'OK\n'     # the original README's word
    assert world.cluster().members['m2'].status == 'SUSPENDED'


def test_delete_member_without_sessions_removes_it_at_once(world):
    assert world.run('modify alpha delete m2') == 'OK\n'
    assert 'm2' not in world.cluster().members
    assert world.run('modify alpha remove m3') == 'OK\n'      # an offline one
    assert 'online members = 1 (1 active, 0 suspended, 0 draining)\n' \
        '    offline members = 0' in world.run('ls')
    assert world.run('modify alpha pause m2') == 'ERROR: m2: RTPproxy not found\n'


def test_delete_member_with_sessions_drains_it_until_they_end(world):
    store = world.cluster().store
    store.bind('call-1', 'm1')
    store.bind('call-2', 'm1')
    assert world.run('modify alpha delete m1') == 'OK\n'
    assert world.cluster().members['m1'].status == DRAINING
    assert 'online members = 2 (0 active, 1 suspended, 1 draining)' in world.run('ls')
    assert '        status = DRAINING\n' in world.run('ls alpha')
    assert world.run('modify alpha resume m1') == (
        'ERROR: m1: RTPproxy is being removed (draining); it cannot be paused or resumed\n')
    assert world.run('modify alpha delete m1') == 'OK\n'      # again: still draining
    store.unbind('call-1')
    world.reactor.advance(0)
    assert 'm1' in world.cluster().members
    store.unbind('call-2')
    world.reactor.advance(0)
    assert 'm1' not in world.cluster().members
    assert 'online members = 1 (0 active, 1 suspended, 0 draining)' in world.run('ls')


# --- reload -----------------------------------------------------------------------------------

def test_reload_applies_the_file(world):
    world.write(config_xml([M1, member_xml('m2', status='ACTIVE')], [M4, member_xml('m7')]))
    assert world.run('reload') == 'Loaded 2 clusters and 4 RTP proxies\nOK\n'
    world.rtpp.pump()
    assert world.cluster().members['m2'].status == 'ACTIVE'
    assert 'm3' not in world.cluster().members
    assert 'm7' in world.cluster('beta').members


def test_reload_restores_a_paused_member_from_the_file(world):
    world.run('modify alpha pause m1')
    assert world.run('reload') == 'Loaded 2 clusters and 4 RTP proxies\nOK\n'
    assert world.cluster().members['m1'].status == 'ACTIVE'


def test_reload_with_a_broken_file_keeps_the_running_configuration(world):
    before = world.run('ls') + world.run('ls alpha')
    world.write(config_xml([M1, member_xml('m2', weight=0)]))
    with pytest.raises(ConfigError) as expected:
        load_config(world.config_path)
    reply = world.run('reload')
    assert reply == 'ERROR: %s\n' % expected.value
    assert 'rtp_cluster.xml:1:' in reply and 'weight' in reply
    assert world.run('ls') + world.run('ls alpha') == before
    world.write('<rtp_cluster_config><broken')
    reply = world.commands.execute('reload')
    assert reply.is_error and len(reply.lines) == 1 and 'not well-formed' in reply.lines[0]
    os.unlink(world.config_path)
    reply = world.commands.execute('reload')
    assert reply.is_error and 'cannot read the configuration file' in reply.lines[0]
    assert world.run('ls') + world.run('ls alpha') == before


# --- help, quit, bad input ----------------------------------------------------------------------

def test_help(world):
    for word in ('help', 'h'):
        reply = world.commands.execute(word)
        assert reply.lines[0] == 'Supported commands:'
        assert '\tls [CLUSTER_NAME] [--json]' in reply.lines
        assert '\tmodify CLUSTER_NAME [add|remove|delete|pause|resume] ARGS' in reply.lines
        assert '\treload' in reply.lines and '\tquit' in reply.lines
        assert reply.lines[-1] == 'OK' and not reply.close


def test_auth_without_a_secret_says_none_is_needed(world):
    reply = world.commands.execute('auth some-secret-of-sixteen')
    assert reply.lines == ('ERROR: no authentication needed: this connection is authenticated '
                           'already, or the admin socket has no --admin-secret-file',)
    assert '\tauth SECRET' in world.commands.execute('help').lines


def test_quit_words_close_without_output(world):
    for word in ('quit', 'q', 'exit', '  quit  '):
        reply = world.commands.execute(word)
        assert reply == AdminReply((), close=True)


def test_empty_lines_get_no_reply(world):
    for line in ('', '   ', '\t'):
        assert world.commands.execute(line) == AdminReply()


ADD = 'modify alpha add '
USAGE = admin.ADD_USAGE
BAD_INPUT = [
    ('frobnicate', 'ERROR: unknown command'),
    ('LS', 'ERROR: unknown command'),
    ('modify', 'ERROR: usage: modify CLUSTER add|delete|remove|pause|resume ARGS'),
    ('modify alpha', 'ERROR: usage: modify CLUSTER add|delete|remove|pause|resume ARGS'),
    ('modify gamma pause m1', 'ERROR: gamma: cluster not found'),
    ('modify alpha explode m1', 'ERROR: modify: unknown action "explode"; expected add, delete, '
     'remove, pause or resume'),
    ('modify alpha pause', 'ERROR: usage: modify CLUSTER pause NAME'),
    ('modify alpha delete', 'ERROR: usage: modify CLUSTER delete NAME'),
    ('modify alpha resume nobody', 'ERROR: nobody: RTPproxy not found'),
    ('modify alpha remove nobody', 'ERROR: nobody: RTPproxy not found'),
    (ADD.strip(), 'ERROR: usage: ' + USAGE),
    (ADD + 'name', 'ERROR: modify add: "name" is not KEY=VALUE; usage: ' + USAGE),
    (ADD + 'name=x,protocol=unix,address=/a.sock,capacity=1,weight=1,',
     'ERROR: modify add: "" is not KEY=VALUE; usage: ' + USAGE),
    (ADD + '=x', 'ERROR: modify add: "=x" is not KEY=VALUE; usage: ' + USAGE),
    (ADD + 'name=x,colour=red', 'ERROR: modify add: unknown key "colour"; expected name, protocol, '
     'address, capacity, weight, status, wan_address, lan_address, cmd_out_address'),
    (ADD + 'name=x,name=y', 'ERROR: modify add: duplicate key "name"'),
    (ADD + 'name=,protocol=udp', 'ERROR: modify add: name is empty; usage: ' + USAGE),
    (ADD + 'name=x,protocol=udp,address=127.0.0.1', 'ERROR: modify add: missing capacity, weight; '
     'usage: ' + USAGE),
    (ADD + 'name=x,protocol=tcp,address=127.0.0.1,capacity=1,weight=1',
     'ERROR: modify add: unknown protocol "tcp"; expected udp, udp6 or unix'),
    (ADD + 'name=x,protocol=udp,address=127.0.0.1:99999,capacity=1,weight=1',
     'ERROR: modify add: port 99999 is out of range; expected 1-65535'),
    (ADD + 'name=x,protocol=udp,address=127.0.0.1:http,capacity=1,weight=1',
     'ERROR: modify add: port "http" is not a number; expected 1-65535'),
    (ADD + 'name=x,protocol=udp,address=::1,capacity=1,weight=1',
     'ERROR: modify add: "::1" is an IPv6 address; use protocol udp6'),
    (ADD + 'name=x,protocol=unix,address=rel.sock,capacity=1,weight=1',
     'ERROR: modify add: unix socket path "rel.sock" is not absolute; expected /PATH'),
    (ADD + 'name=x,protocol=udp,address=127.0.0.1,capacity=1,weight=0',
     'ERROR: modify add: weight "0" is not a positive integer'),
    (ADD + 'name=x,protocol=udp,address=127.0.0.1,capacity=-5,weight=1',
     'ERROR: modify add: capacity "-5" is not a positive integer'),
    (ADD + 'name=x,protocol=udp,address=127.0.0.1,capacity=1e3,weight=1',
     'ERROR: modify add: capacity "1e3" is not a positive integer'),
    (ADD + 'name=x,protocol=udp,address=127.0.0.1,capacity=1,weight=' + '9' * 5000,
     'ERROR: modify add: weight "' + '9' * 200 + '..." is not a positive integer'),
    (ADD + 'name=x,protocol=udp,address=127.0.0.1,capacity=1,weight=1,status=BUSY',
     'ERROR: modify add: status "BUSY"; expected ACTIVE or SUSPENDED'),
    (ADD + 'name=x,protocol=udp,address=127.0.0.1,capacity=1,weight=1,wan_address=a..b',
     'ERROR: modify add: wan_address: "a..b" is not an IP address or a host name'),
    (ADD + 'name=m1,protocol=unix,address=/a.sock,capacity=1,weight=1',
     'ERROR: m1: RTPproxy already exists'),
    ('reload now', 'ERROR: usage: reload (it takes no arguments)'),
    ('ls \x00\x01bad', 'ERROR: ??bad: cluster not found'),
]


@pytest.mark.parametrize('line,expected', BAD_INPUT, ids=[b[0][:40] for b in BAD_INPUT])
def test_bad_input_is_one_error_line(world, line, expected):
    before = world.run('ls alpha')
    reply = world.commands.execute(line)
    assert reply.lines == (expected,)
    assert not reply.close
    assert world.run('ls alpha') == before


def test_add_that_the_runtime_refuses_is_an_error(world, monkeypatch):
    def refuse(cluster, config):
        raise StartupError('cannot resolve nowhere.invalid: Name or service not known')
    monkeypatch.setattr(world.runtime, 'add_member', refuse)
    reply = world.run(ADD + 'name=x,protocol=udp,address=nowhere.invalid,capacity=1,weight=1')
    assert reply == ('ERROR: modify add: cannot resolve nowhere.invalid: Name or service '
                     'not known\n')


def test_unexpected_exception_is_an_internal_error_and_logged(world, monkeypatch):
    events = []
    globalLogPublisher.addObserver(events.append)

    def broken():
        raise RuntimeError('boom\nsecond line')
    monkeypatch.setattr(world.runtime, 'reload', broken)
    try:
        reply = world.commands.execute('reload')
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert reply.lines == ('ERROR: internal error: RuntimeError: boom second line',)
    failures = [e for e in events if e.get('log_failure') is not None]
    assert failures and 'boom' in failures[0]['log_failure'].getTraceback()
    assert world.run('ls beta') == LS_BETA


# --- the line protocol ------------------------------------------------------------------------

class Conn:
    """One AdminProtocol on a StringTransport, optionally through an AdminFactory."""

    def __init__(self, commands: AdminCommands, factory: AdminFactory | None = None,
                 max_line: int = admin.MAX_LINE) -> None:
        if factory is not None:
            self.proto = factory.buildProtocol(None)
        else:
            self.proto = AdminProtocol(commands, max_line)
        self.transport = StringTransport()
        self.proto.makeConnection(self.transport)

    def send(self, data: bytes) -> str:
        self.proto.dataReceived(data)
        return self.take()

    def take(self) -> str:
        out = self.transport.value().decode('utf-8')
        self.transport.clear()
        return out

    @property
    def closed(self) -> bool:
        return self.transport.disconnecting


def test_protocol_crlf_pipelining_and_empty_lines(world):
    conn = Conn(world.commands)
    out = conn.send(b'ls\r\n\r\n\nls beta\n  \nhelp')
    assert out == LS + LS_BETA
    assert conn.send(b'\r\n').startswith('Supported commands:\n')
    assert not conn.closed


def test_protocol_byte_by_byte(world):
    conn = Conn(world.commands)
    for byte in b'ls alpha\r\n':
        conn.proto.dataReceived(bytes([byte]))
    assert conn.take() == LS_ALPHA


def test_protocol_quit_closes_and_ignores_the_rest(world):
    conn = Conn(world.commands)
    assert conn.send(b'ls beta\nquit\nls\n') == LS_BETA
    assert conn.closed
    assert conn.send(b'ls\n') == ''


def test_protocol_every_bad_input_then_still_serves(world):
    conn = Conn(world.commands)
    data = b''.join(line.encode('utf-8') + b'\n' for line, _ in BAD_INPUT) + b'ls beta\n'
    expected = ''.join(line + '\n' for _, line in BAD_INPUT) + LS_BETA
    assert conn.send(data) == expected
    assert not conn.closed


def test_protocol_binary_garbage(world):
    conn = Conn(world.commands)
    out = conn.send(bytes(range(256)).replace(b'\n', b'') + b'\n\xff\xfe ls\nls beta\n')
    lines = out.split('\n')
    assert lines[0] == 'ERROR: unknown command'
    assert lines[1] == 'ERROR: unknown command'
    assert '\n'.join(lines[2:]) == LS_BETA
    out = conn.send(b'ls \xff\xfe\x1b[31m\n')
    assert out == 'ERROR: \ufffd\ufffd?[31m: cluster not found\n'


def test_protocol_too_long_line_in_one_piece(world):
    conn = Conn(world.commands, max_line=100)
    out = conn.send(b'ls ' + b'x' * 200 + b'\nls beta\n')
    assert out == 'ERROR: line too long (more than 100 bytes)\n' + LS_BETA


def test_protocol_too_long_line_in_pieces_is_answered_once(world):
    conn = Conn(world.commands, max_line=100)
    assert conn.send(b'x' * 60) == ''
    assert conn.send(b'x' * 60) == 'ERROR: line too long (more than 100 bytes)\n'
    for _ in range(5):
        assert conn.send(b'y' * 1000) == ''
    assert conn.send(b'still the long line\nls beta\n') == LS_BETA
    assert conn.proto._buffer == bytearray()


def test_protocol_line_at_the_limit_is_served(world):
    conn = Conn(world.commands, max_line=100)
    line = b'ls ' + b'z' * 97
    assert conn.send(line + b'\r\n') == 'ERROR: %s: cluster not found\n' % ('z' * 97)
    assert conn.send(line + b'z\n') == 'ERROR: line too long (more than 100 bytes)\n'


def test_protocol_default_limit_is_64_kib(world):
    conn = Conn(world.commands)
    assert conn.send(b'ls ' + b'a' * (64 * 1024 - 3) + b'\n').endswith(': cluster not found\n')
    assert conn.send(b'a' * (64 * 1024 + 10)) == 'ERROR: line too long (more than 65536 bytes)\n'
    assert conn.send(b'\nls beta\n') == LS_BETA


def test_protocol_pauses_while_the_client_does_not_read(world):
    conn = Conn(world.commands)
    conn.proto.pauseProducing()
    assert conn.transport.producerState == 'paused'
    assert conn.send(b'ls beta\nls beta\n') == ''
    conn.proto.resumeProducing()
    assert conn.transport.producerState == 'producing'
    assert conn.take() == LS_BETA + LS_BETA


def test_protocol_half_line_then_disconnect(world):
    conn = Conn(world.commands)
    assert conn.send(b'modify alpha pau') == ''
    conn.proto.connectionLost(None)
    assert conn.send(b'se m1\n') == ''
    assert world.cluster().members['m1'].status == 'ACTIVE'


def test_protocol_internal_error_keeps_the_connection(world, monkeypatch):
    monkeypatch.setattr(world.runtime, 'reload', lambda: 1 / 0)
    conn = Conn(world.commands)
    out = conn.send(b'reload\nls beta\n')
    assert out == 'ERROR: internal error: ZeroDivisionError: division by zero\n' + LS_BETA


def test_factory_limits_and_counts_connections(world):
    factory = AdminFactory(world.commands, max_connections=2)
    first, second = Conn(None, factory), Conn(None, factory)
    third = Conn(None, factory)
    assert third.take() == 'ERROR: too many admin connections (at most 2); try again later\n'
    assert third.closed
    assert not first.closed and not second.closed
    assert second.send(b'ls beta\n') == LS_BETA
    first.proto.connectionLost(None)
    fourth = Conn(None, factory)
    assert fourth.send(b'ls beta\n') == LS_BETA
    factory.disconnect_all()
    assert second.closed and fourth.closed


# --- the server -------------------------------------------------------------------------------

def test_server_listens_on_unix_socket_0660(world):
    reactor = MemoryReactorClock()
    server = AdminServer(world.runtime, '/nonexistent/admin.sock')
    server.listen(reactor)
    path, factory, _backlog, mode, _pid = reactor.unixServers[0]
    assert (path, mode) == ('/nonexistent/admin.sock', 0o660)
    assert isinstance(factory, AdminFactory) and factory.commands.runtime is world.runtime
    assert server.stop() is not None
    assert server.stop() is None


def test_server_socket_owner_failure_is_a_startup_error(world):
    # a MemoryReactor makes no file, so the chown to sock_owner fails: one clear line
    server = AdminServer(world.runtime, '/nonexistent/admin.sock', (os.getuid(), os.getgid()))
    with pytest.raises(StartupError, match='^cannot chown /nonexistent/admin.sock: '):
        server.listen(MemoryReactorClock())


@pytest.mark.parametrize('spec,path', [('unix:/tmp/x.sock', '/tmp/x.sock'),
                                       ('/tmp/y.sock', '/tmp/y.sock'),
                                       ('rel.sock', os.path.abspath('rel.sock'))])
def test_server_unix_specs(world, spec, path):
    assert AdminServer(world.runtime, spec).endpoint == Endpoint('unix', path=path)


def test_server_tcp(world):
    reactor = MemoryReactorClock()
    server = AdminServer(world.runtime, 'tcp:127.0.0.1:12345')
    server.listen(reactor)
    port, factory, _backlog, interface = reactor.tcpServers[0]
    assert (port, interface, type(factory)) == (12345, '127.0.0.1', AdminFactory)
    server.stop()


def test_server_tcp_default_port_is_the_clients(world):
    # issue 20: the daemon reads `tcp:HOST` as rtp_cluster_client does, port 12345
    assert AdminServer(world.runtime, 'tcp:127.0.0.1').endpoint == Endpoint(
        'tcp', host='127.0.0.1', port=12345)


def test_server_tcp_port_in_use(world):
    class Busy(MemoryReactorClock):
        def listenTCP(self, port, factory, backlog=50, interface=''):
            raise CannotListenError(interface, port, OSError(98, 'Address already in use'))
    server = AdminServer(world.runtime, 'tcp:127.0.0.1:12345')
    with pytest.raises(StartupError) as error:
        server.listen(Busy())
    assert str(error.value).startswith('cannot listen on admin socket tcp 127.0.0.1 port 12345: ')
    assert '\n' not in str(error.value)


@pytest.mark.parametrize('spec,fragment', [
    ('udp:127.0.0.1:5000', 'expected /PATH, unix:/PATH or tcp:HOST:PORT'),
    ('udp:127.0.0.1:5000', 'the admin socket must be unix: or tcp:'),
    ('tcp:127.0.0.1:port', 'is not a number'),
    ('tcp:127.0.0.1:0', 'out of range'),
    ('unix:', 'path is empty'),
    ('sctp:1.2.3.4:5', 'is not a socket'),
])
def test_server_bad_specs(world, spec, fragment):
    with pytest.raises(StartupError) as error:
        AdminServer(world.runtime, spec)
    assert fragment in str(error.value) and '\n' not in str(error.value)


def test_server_replaces_a_stale_socket_and_refuses_other_files(world, tmp_path):
    path = str(tmp_path / 'a.sock')
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()                      # the file stays, nobody listens
    server = AdminServer(world.runtime, path)
    server.listen(MemoryReactorClock())
    assert not os.path.exists(path)    # removed; a real reactor would bind a fresh one
    with open(path, 'w') as f:
        f.write('not a socket')
    with pytest.raises(StartupError, match='exists and is not a socket'):
        AdminServer(world.runtime, path).listen(MemoryReactorClock())
    assert os.path.exists(path)


def test_server_refuses_a_live_socket(world, tmp_path):
    path = str(tmp_path / 'b.sock')
    live = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        live.bind(path)
        live.listen(1)
        with pytest.raises(StartupError, match='another process is already listening'):
            AdminServer(world.runtime, path).listen(MemoryReactorClock())
    finally:
        live.close()


def test_stop_removes_a_left_over_socket_file_only(tmp_path):
    path = str(tmp_path / 'c.sock')
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.close()
    admin.remove_socket_file(path)
    assert not os.path.exists(path)
    admin.remove_socket_file(path)            # already gone: fine
    (tmp_path / 'd').write_text('x')
    admin.remove_socket_file(str(tmp_path / 'd'))
    assert (tmp_path / 'd').exists()


def test_runtime_starts_and_stops_the_admin_socket(tmp_path):
    config_path = str(tmp_path / 'rtp_cluster.xml')
    with open(config_path, 'w') as f:
        f.write(config_xml([M1]))
    reactor = MemoryReactorClock()
    runtime = Runtime(load_config(config_path), config_path, reactor,
                      admin_spec='unix:/nonexistent/admin.sock')
    runtime.start()
    servers = {path: (factory, mode) for path, factory, _b, mode, _p in reactor.unixServers}
    factory, mode = servers['/nonexistent/admin.sock']
    assert isinstance(factory, AdminFactory) and mode == 0o660
    assert factory.commands.execute('ls').lines[1] == '    name = alpha'
    fired = []
    runtime.stop().addCallback(fired.append)
    assert fired and runtime.admin is None


def test_add_checks_names_as_the_configuration_file_does(world):
    # the schema's check: control characters (C0, DEL and C1) are refused
    reply = world.run(ADD + 'name=a\x85b,protocol=unix,address=/nonexistent/x.sock,capacity=1,'
                      'weight=1')
    assert reply == 'ERROR: modify add: name "a?b" contains control characters\n'
    assert 'a\x85b' not in world.cluster().members
