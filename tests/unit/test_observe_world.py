"""A small running world for the status and metrics tests: real Cluster and Member objects,
fake RTPproxies answering through scripted clients, time on a twisted Clock."""
from __future__ import annotations

from twisted.internet.task import Clock

from rtp_cluster.core.cluster import Cluster, ClusterCounters
from rtp_cluster.core.config import ClusterConfig, Endpoint, MemberConfig
from rtp_cluster.adapters.transports import ControlCounters
from rtp_cluster.core.counters import CommandStats, CounterGroup, Histogram, Registry
from rtp_cluster.core.member import OFFLINE, Member, MemberCounters
from tests.support.cluster_proc import FakeRtpp, ScriptedClient


class World:
    """Shaped like the parts of Runtime that the collectors and the status snapshot read."""

    def __init__(self, layout: dict[str, list[str]]) -> None:
        self.clock = Clock()
        self.clock.advance(1000.0)
        self.started = self.clock.seconds()
        self.metrics = Registry()
        self.clusters: dict[str, Cluster] = {}
        self.clients: dict[tuple[str, str], ScriptedClient] = {}
        self.relays: dict = {}
        self.sharing = None
        for index, (name, members) in enumerate(layout.items()):
            endpoint = Endpoint('udp', host='127.0.0.1', port=22222 + index)
            configs = tuple(MemberConfig(m, Endpoint('udp', host='127.0.0.1', port=23000 + i),
                                         weight=10 * (i + 1), capacity=100)
                            for i, m in enumerate(members))
            cluster = Cluster(ClusterConfig(name, endpoint, configs), self.clock,
                              counters=self.metrics.group(ClusterCounters, cluster=name))
            for config in configs:
                client = ScriptedClient(self.clock, FakeRtpp(config.name))
                self.clients[name, config.name] = client
                counters = self.metrics.group(MemberCounters, cluster=name, member=config.name)
                cluster.add_member(Member(config, client, self.clock, counters=counters,
                                          cluster=name))
            self.clusters[name] = cluster
            cluster.start()
            for member in cluster.members.values():
                member.start()
        self.run(0.2)

    def run(self, seconds: float, step: float = 0.05) -> None:
        for _ in range(int(round(seconds / step))):
            self.clock.advance(step)

    def command_stats(self, cluster: str) -> CommandStats:
        return self.metrics.get('commands', CommandStats, cluster=cluster)

    def control_counters(self, cluster: str) -> CounterGroup:
        return self.metrics.group(ControlCounters, cluster=cluster)

    def rtt_histogram(self, cluster: str, member: str) -> Histogram:
        return self.metrics.histogram('rtt', cluster=cluster, member=member)

    def kill(self, cluster: str, member: str) -> None:
        """The member stops answering; runs the clock until its failed heartbeat takes it offline."""
        self.clients[cluster, member].silent = True
        for _ in range(200):
            self.clock.advance(0.05)
            if self.clusters[cluster].members[member].state == OFFLINE:
                return
        raise AssertionError('member %s did not go offline' % member)
