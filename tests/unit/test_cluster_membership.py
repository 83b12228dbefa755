"""Cluster.pause_member / resume_member / drain_member: the state changes the admin uses."""
from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from rtp_cluster.core.cluster import Cluster, MemberDraining
from rtp_cluster.core.config import ClusterConfig, Endpoint, MemberConfig
from rtp_cluster.core.member import ACTIVE, DRAINING, SUSPENDED, Member


class SilentClient:
    rtt = None
    on_timeout = None

    def send(self, text, callback, timeout=None):
        pass

    def close(self):
        pass


def cluster_with(*names: str) -> Cluster:
    clock = Clock()
    configs = tuple(MemberConfig(n, Endpoint('unix', path='/m/' + n), 1, 10) for n in names)
    cluster = Cluster(ClusterConfig('c', Endpoint('unix', path='/c'), configs), clock)
    for config in configs:
        cluster.add_member(Member(config, SilentClient(), clock))
    return cluster


def test_pause_and_resume_change_the_status_and_return_the_member():
    cluster = cluster_with('a', 'b')
    assert cluster.pause_member('a') is cluster.members['a']
    assert [m.status for m in cluster.members.values()] == [SUSPENDED, ACTIVE]
    assert cluster.resume_member('a').status == ACTIVE


def test_unknown_member_is_a_key_error():
    with pytest.raises(KeyError):
        cluster_with('a').pause_member('zz')


def test_a_draining_member_cannot_be_paused_or_resumed():
    cluster = cluster_with('a')
    cluster.store.bind('call-1', 'a')
    assert cluster.drain_member('a')
    for change in (cluster.pause_member, cluster.resume_member):
        with pytest.raises(MemberDraining):
            change('a')
    assert cluster.members['a'].status == DRAINING
