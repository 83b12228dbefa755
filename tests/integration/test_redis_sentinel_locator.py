"""The reactor side of Sentinel (rtp_cluster/adapters/redis_sentinel.py) against real
sentinels: asking them in turn, passwords, and following +switch-master."""
from __future__ import annotations

import threading

import pytest
from twisted.internet import defer, task

from rtp_cluster.adapters.redis_sentinel import NoMasterError, SentinelLocator, SentinelWatch
from rtp_cluster.adapters.redis_sharing import (RedisSharing, read_sentinel_password,
                                                sentinel_client)
from rtp_cluster.core.config import RedisConfig, SentinelConfig
from tests.support.procs import free_tcp_port
from tests.support.redis_sentinel import MASTER_NAME, SentinelTopology
from tests.support.sharing import wait_for

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def config(addresses, master: str = MASTER_NAME, password_file: str | None = None):
    return RedisConfig(None, instance_id='t', sentinel=SentinelConfig(master, tuple(addresses)),
                       sentinel_password_file=password_file, connect_timeout_ms=500,
                       command_timeout_ms=500, reconnect_min_ms=50, reconnect_max_ms=200)


def locate(rt, locator: SentinelLocator):
    """The master's address, or the NoMasterError."""
    def no_master(failure):
        failure.trap(NoMasterError)
        return failure.value
    return rt.call(lambda: locator.locate().addErrback(no_master))


def test_the_sentinels_are_asked_in_turn_and_the_one_that_answered_first_next(rt):
    with SentinelTopology() as topo:
        dead = ('127.0.0.1', free_tcp_port())
        addresses = [dead] + topo.sentinel_addrs
        locator = SentinelLocator(config(addresses), rt.reactor, lambda: None)
        assert locate(rt, locator) == ('127.0.0.1', topo.master.port)
        assert locator.ring.order()[0] == topo.sentinel_addrs[0]   # asked first from now on

        lost = SentinelLocator(config(addresses, master='nope'), rt.reactor, lambda: None)
        problem = str(locate(rt, lost))
        assert problem.startswith('no sentinel named the master "nope" (127.0.0.1:%d: '
                                  % dead[1])
        assert 'Connection refused' in problem
        assert problem.count('does not monitor a master named "nope"') == 3


def test_a_sentinel_password_is_sent_and_a_wrong_one_is_named(rt, tmp_path):
    with SentinelTopology(sentinel_password='s3cret') as topo:
        right, wrong = tmp_path / 'right', tmp_path / 'wrong'
        right.write_text('s3cret\n')
        wrong.write_text('guess\n')
        for path, expected in ((right, ('127.0.0.1', topo.master.port)), (wrong, None)):
            cfg = config(topo.sentinel_addrs[:1], password_file=str(path))
            locator = SentinelLocator(cfg, rt.reactor, lambda c=cfg: read_sentinel_password(c))
            found = locate(rt, locator)
            if expected is not None:
                assert found == expected
            else:
                assert 'WRONGPASS' in str(found), found
        threads = sentinel_client(config(topo.sentinel_addrs, password_file=str(right)))
        assert threads.info('server')['tcp_port'] == topo.master.port   # redis-py's Sentinel
        cfg = config(topo.sentinel_addrs[:1])                     # none at all
        problem = str(locate(rt, SentinelLocator(cfg, rt.reactor, lambda: None)))
        assert 'NOAUTH' in problem, problem


def test_the_watch_reports_the_switch_and_moves_on_when_its_sentinel_dies(rt):
    with SentinelTopology() as topo:
        switches: list = []
        watching = threading.Event()
        watch = SentinelWatch(config(topo.sentinel_addrs), rt.reactor, password=lambda: None,
                              on_switch=switches.append, on_watching=watching.set)
        rt.call(watch.start)
        try:
            assert watching.wait(5)
            first = watch.watching
            watching.clear()
            next(s for s in topo.sentinels if ('127.0.0.1', s.port) == first).stop()
            assert watching.wait(5), 'no other sentinel subscribed'
            assert watch.watching != first
            topo.kill_master()
            topo.wait_promotion()
            wait_for(lambda: switches, 10, 'the +switch-master message')
            assert switches == [('127.0.0.1', topo.replica.port)]
        finally:
            rt.call(lambda: defer.succeed(watch.stop()))


def test_threads_leave_the_node_once_per_search_and_at_every_switch():
    """Each reconnect of the subscriber costs a resync: a writer that finds the same replica
    at every try must not make the threads reconnect every time; a switch always does."""
    sharing = RedisSharing(config([('127.0.0.1', 1)]), task.Clock(),
                           client_factory=lambda: None)
    moved = sharing._moved['subscriber']
    sharing._not_master('the node is a replica (role:slave), not the master')
    assert moved.is_set() and sharing.state.link.rewrite_due
    moved.clear()
    sharing._not_master('the node is a replica (role:slave), not the master')
    assert not moved.is_set()
    sharing._on_switch(('127.0.0.1', 6380))
    assert moved.is_set() and sharing._moved['reader'].is_set()
