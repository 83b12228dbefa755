"""A real `Runtime` on a `MemoryReactorClock` for the admin tests: unix-socket members that a
small simulated RTPproxy answers (V, VF, Ib), and the expected replies of the commands."""
from __future__ import annotations

from twisted.internet.testing import MemoryReactorClock, StringTransport

from rtp_cluster.adapters import admin
from rtp_cluster.adapters.admin import AdminCommands
from rtp_cluster.adapters.runtime import Runtime
from rtp_cluster.core.cluster import Cluster
from rtp_cluster.core.config import load_config

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
