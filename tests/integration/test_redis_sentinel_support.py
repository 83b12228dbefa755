"""The Sentinel topology the failover tests stand on (tests/support/redis_sentinel.py): real
master, replica and three sentinels; SIGKILL of the master promotes the replica."""
import time

import pytest
import redis

from tests.support.redis_sentinel import SentinelTopology

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def test_killing_the_master_promotes_the_replica_and_writes_go_there():
    with SentinelTopology(down_after_ms=500) as topo:
        assert topo.current_master() == ('127.0.0.1', topo.master.port)
        topo.master.client().set('k', 'before')
        deadline = time.monotonic() + 5
        while topo.replica.client().get('k') != b'before':
            assert time.monotonic() < deadline, 'the write never reached the replica'
            time.sleep(0.02)
        with pytest.raises(redis.exceptions.ReadOnlyError):     # the server's READONLY
            topo.replica.client().set('k', 'on a replica')
        killed = topo.kill_master()
        promoted = topo.wait_promotion(timeout=20)
        assert 0.5 <= promoted - killed < 20
        assert topo.replica.client().info('replication')['role'] == 'master'
        topo.replica.client().set('k', 'after')
        assert topo.replica.client().get('k') == b'after'
    assert topo.sentinels and all(s.proc.poll() is not None for s in topo.sentinels)
