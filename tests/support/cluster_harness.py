"""A sans-IO cluster of in-memory RTPproxies for the Cluster unit tests.

Real Member objects (health state machine included) talk to in-memory RTPproxies
(cluster_proc.FakeRtpp) through scripted clients; time is a twisted Clock.  Every fake
hands out ports in its own range, so a reply port names the member that made it.
"""
from __future__ import annotations

import random

from twisted.internet.task import Clock

from tests.support.cluster_proc import FakeRtpp, ScriptedClient
from rtp_cluster.core import protocol
from rtp_cluster.core.cluster import Cluster
from rtp_cluster.core.config import ClusterConfig, Endpoint, MemberConfig
from rtp_cluster.core.member import OFFLINE, ONLINE, Member

CONTROL = Endpoint('udp', host='127.0.0.1', port=22222)


def run(clock: Clock, seconds: float, step: float = 0.01) -> None:
    for _ in range(max(1, int(round(seconds / step)))):
        clock.advance(step)


class Harness:
    """A cluster of fake members; `cmd()` sends one command and returns the one reply."""

    def __init__(self, specs: list[dict], capacity_limit: str = 'soft', seed: int = 1,
                 rng=None, start: bool = True) -> None:
        self.clock = Clock()
        configs = []
        for i, spec in enumerate(specs):
            configs.append(MemberConfig(
                spec.get('name', 'm%d' % (i + 1)),
                Endpoint('udp', host='127.0.0.1', port=23000 + i),
                weight=spec.get('weight', 100), capacity=spec.get('capacity', 1000),
                status=spec.get('status', 'ACTIVE'), wan_address=spec.get('wan'),
                lan_address=spec.get('lan')))
        self.config = ClusterConfig('c', CONTROL, tuple(configs), capacity_limit=capacity_limit)
        self.cluster = Cluster(self.config, self.clock,
                               rng=rng or random.Random(seed).random)
        self.removed: list[str] = []
        self.cluster.on_member_removed = lambda member: self.removed.append(member.name)
        self.fakes: dict[str, FakeRtpp] = {}
        self.clients: dict[str, ScriptedClient] = {}
        for i, (spec, config) in enumerate(zip(specs, configs)):
            fake = FakeRtpp(config.name, port_base=20000 + 10000 * i,
                            capabilities=spec.get('caps', FakeRtpp().capabilities),
                            counters=spec.get('counters'))
            client = ScriptedClient(self.clock, fake)
            self.fakes[config.name] = fake
            self.clients[config.name] = client
            self.cluster.add_member(Member(config, client, self.clock))
        self.cluster.start()
        if start:
            for member in self.cluster.members.values():
                member.start()
            run(self.clock, 0.1)
            assert all(m.state == ONLINE for m in self.cluster.members.values())

    def member(self, name: str) -> Member:
        return self.cluster.members[name]

    def send(self, text: str) -> list[str]:
        """Hand one command to the cluster; the list its replies will be appended to."""
        cmd = protocol.parse_command(text)
        assert cmd.error is None, (text, cmd.error)
        replies: list[str] = []
        self.cluster.handle(cmd, replies.append)
        return replies

    def cmd(self, text: str, settle: float = 0.02) -> str:
        replies = self.send(text)
        run(self.clock, settle, min(settle, 0.01))
        assert len(replies) == 1, (text, replies)
        return replies[0]

    def owner_of(self, reply: str) -> str:
        port = int(reply.split()[0])
        owners = [name for name, fake in self.fakes.items() if fake.owns(port)]
        assert len(owners) == 1, reply
        return owners[0]

    def take_offline(self, name: str) -> None:
        self.clients[name].silent = True
        for _ in range(500):
            run(self.clock, 0.05)
            if self.member(name).state == OFFLINE:
                return
        raise AssertionError('%s did not go offline' % name)

    def bring_online(self, name: str) -> None:
        self.clients[name].silent = False
        for _ in range(500):
            run(self.clock, 0.05)
            if self.member(name).state == ONLINE:
                return
        raise AssertionError('%s did not come back' % name)


def three(**kwargs) -> Harness:
    return Harness([{}, {}, {}], **kwargs)


def session_calls(fake: FakeRtpp) -> set[str]:
    return {protocol.parse_command(text).call_id for text in fake.session_commands}
