"""Session tables and clusters in memory for the tests of bulk admin work (no sockets)."""
from __future__ import annotations

from twisted.internet import task

from rtp_cluster.core.cluster import Cluster
from rtp_cluster.core.config import ClusterConfig, Endpoint, MemberConfig
from rtp_cluster.core.member import ONLINE, Member
from rtp_cluster.core.sessions import MemorySessionStore
from rtp_cluster.core.records import Record
from rtp_cluster.core.sharing import SharedSessionStore


class RecordingClient:
    """A member client that answers every D with 0 and records what it is sent."""
    rtt = None

    def __init__(self) -> None:
        self.sent: list[str] = []

    def send(self, text, callback, timeout=None):
        self.sent.append(text)
        callback('0' if text.startswith('D') else 'E1')

    def close(self):
        pass


def cluster_with(store=None, name='c', members=('m1', 'm2'), clock=None,
                 client=lambda: RecordingClient(), capacity: int = 10 ** 6):
    """A cluster on `store` with online members whose clients (`client()`, by default
    recording what they are sent and answering D with 0) are returned by member name."""
    clock = clock or task.Clock()
    configs = tuple(MemberConfig(m, Endpoint('udp', '127.0.0.1', 7001 + i), 100, capacity)
                    for i, m in enumerate(members))
    cluster = Cluster(ClusterConfig(name, Endpoint('udp', '127.0.0.1', 7000), configs), clock,
                      store=store)
    clients = {}
    for config in configs:
        clients[config.name] = client()
        member = Member(config, clients[config.name], clock)
        member.state = ONLINE
        cluster.add_member(member)
    return cluster, clients


def filled(n: int, prefix='c') -> MemorySessionStore:
    store = MemorySessionStore()
    for i in range(n):
        store.bind('%s%d' % (prefix, i), 'm%d' % (1 + i % 2), 'ft%d' % i, None)
    return store


def shared(own: int, foreign: int) -> SharedSessionStore:
    store = SharedSessionStore('c', 'a', 'ns', lambda key, op: None)
    for i in range(own):
        store.bind('own%d' % i, 'm1', 'ft', None)
    for i in range(foreign):
        store.apply_record(Record('f%d' % i, 'c', 'm2', '', 'ft', '', 1.0, 1.0, 'b', 1, 1))
    return store
