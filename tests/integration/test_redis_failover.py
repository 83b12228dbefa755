"""Session sharing through a replicated Redis behind Sentinel, and after Redis comes back.

Real processes only: a master, a replica and three sentinels (`redis-server --sentinel`,
tests/support/redis_sentinel.py), rtp-io members, rtp_cluster daemons configured with
<sentinel>.  The master is SIGKILLed while calls arrive (issue 18); a node is turned into a
replica under a connected instance (READONLY); a plain redis-server is restarted empty while
a peer ends calls (issue 16, item 9).
"""
from __future__ import annotations

import signal
import subprocess
import threading
import time

import pytest
import redis

from tests.support.daemon import Daemon, cluster_xml, member_xml
from tests.support.procs import free_tcp_port, media_port_range
from tests.support.redis_sentinel import MASTER_NAME, SentinelTopology
from tests.support.redis_server import REDIS_SERVER, RedisServer
from tests.support.sharing import Instance, batch, is_port_reply, wait_for
from tests.support.tls_certs import make_certs

pytestmark = [pytest.mark.redis, pytest.mark.slow]

NS = 'rtpc'


def start_members(procs, count: int = 2) -> list:
    members = []
    for _ in range(count):
        lo, hi = media_port_range(2400)            # 4 ports per session, 600 sessions
        if hi > 65000:
            lo, hi = media_port_range(2400)
        members.append(procs.member('udp', extra=['-m', str(lo), '-M', str(hi)]))
    return members


def start_instance(procs, tmp_path, members, name: str, server_xml: str,
                   extra: str = '') -> Instance:
    directory = tmp_path / name
    directory.mkdir()
    xml, spec = cluster_xml([member_xml('m%d' % (i + 1), m) for i, m in enumerate(members)])
    redis_xml = ('<redis>%s<instance_id>%s</instance_id><resync_interval>60</resync_interval>'
                 '<reconnect_max_ms>1000</reconnect_max_ms>%s</redis>'
                 % (server_xml, name, extra))
    xml = xml.replace('<rtp_cluster_config>', '<rtp_cluster_config>' + redis_xml, 1)
    daemon = Daemon.start(procs, directory, (xml, spec), wait_online=['m1', 'm2'])
    return Instance(name, daemon)


def sentinel_xml(topo: SentinelTopology) -> str:
    return '<sentinel master="%s">%s</sentinel>' % (
        MASTER_NAME, ' '.join('%s:%d' % address for address in topo.sentinel_addrs))


def wait_ready(instance: Instance, server, timeout: float = 15.0) -> None:
    """Connected, subscribed, resynced, and its presence in `server` says it rewrote there."""
    def ready() -> bool:
        status = instance.status()
        if (status['state'], status['subscriber']) != ('connected', 'connected') or (
                status['last resync'] == 'never' or status['synced run id'] == '-'):
            return False
        presence = server.client().hget('%s:n:%s' % (NS, instance.name), 'synced_run_id')
        return presence is not None and presence.decode() == status['synced run id']
    wait_for(ready, timeout, '%s connected to redis' % instance.name, interval=0.1)


def own_keys(server, owner: str) -> set[str]:
    """The call-ids `owner` has in `server` (cluster 'test')."""
    prefix = '%s:s:%s:test:' % (NS, owner)
    client = server.client()
    return {key.decode('latin-1')[len(prefix):]
            for key in client.scan_iter(match=prefix + '*', count=1000)}


def offer_and_answer(instance: Instance, calls: list[str], timeout: float = 5.0) -> dict:
    """U then L for every call: {call: L reply}; AssertionError unless all got ports."""
    offers = batch(instance.control, ['U %s 127.0.0.1 4000 ft-%s' % (c, c) for c in calls],
                   timeout=timeout)
    answers = batch(instance.control, ['L %s 127.0.0.1 6000 ft-%s tt-%s' % (c, c, c)
                                       for c in calls], timeout=timeout)
    bad = [(c, o, a) for c, o, a in zip(calls, offers, answers)
           if not (is_port_reply(o) and is_port_reply(a))]
    assert bad == [], bad[:5]
    return dict(zip(calls, answers))


class NewCalls(threading.Thread):
    """New calls at `instance`, `per_batch` every `pause` s, until stopped; every control
    command must be answered (a missing reply or an error is recorded)."""

    def __init__(self, instance: Instance, tag: str, per_batch: int = 5,
                 pause: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.instance = instance
        self.tag = tag
        self.per_batch = per_batch
        self.pause = pause
        self.stop_flag = threading.Event()
        self.answers: dict[str, str] = {}
        self.failures: list[str] = []
        self.commands = 0
        self.slowest = 0.0

    def run(self) -> None:
        n = 0
        while not self.stop_flag.is_set():
            calls = ['%s-%d-%d' % (self.tag, n, j) for j in range(self.per_batch)]
            n += 1
            started = time.monotonic()
            try:
                self.answers.update(offer_and_answer(self.instance, calls, timeout=2.0))
            except (OSError, AssertionError) as exc:
                self.failures.append('%s: %s' % (calls[0], exc))
            self.commands += 2 * len(calls)
            self.slowest = max(self.slowest, time.monotonic() - started)
            self.stop_flag.wait(self.pause)


def test_sentinel_failover_loses_no_session_and_the_peer_routes_all_without_broadcast(
        procs, tmp_path):
    with SentinelTopology(down_after_ms=1000) as topo:
        members = start_members(procs)
        a = start_instance(procs, tmp_path, members, 'a', sentinel_xml(topo))
        b = start_instance(procs, tmp_path, members, 'b', sentinel_xml(topo))
        for instance in (a, b):
            wait_ready(instance, topo.master)
        assert a.status()['url'] == 'sentinel %s@%s (master 127.0.0.1:%d)' % (
            MASTER_NAME, ','.join('127.0.0.1:%d' % p for _, p in topo.sentinel_addrs),
            topo.master.port)
        answers = offer_and_answer(a, ['fo-%d' % i for i in range(300)])
        wait_for(lambda: b.counts() == (0, 300), 10, 'b knows the 300 calls')

        traffic = NewCalls(a, 'during')
        traffic.start()
        try:
            time.sleep(0.5)
            topo.kill_master()
            promoted = topo.wait_promotion(timeout=20)
            # everything answered until the promotion, while new calls keep arriving
            before = set(answers) | set(traffic.answers)
            rewritten = wait_for(lambda: before <= own_keys(topo.replica, 'a'), 5,
                                 'the sessions of a on the new master', interval=0.05)
            time.sleep(max(0.0, 1.0 - rewritten))
        finally:
            traffic.stop_flag.set()
            traffic.join(10)
        assert traffic.failures == [], traffic.failures[:5]
        assert traffic.commands >= 100 and len(traffic.answers) >= 50
        answers.update(traffic.answers)
        live = set(answers)

        took = wait_for(lambda: live <= own_keys(topo.replica, 'a'), 15,
                        "the new master holds every live session of a", interval=0.1)
        complete_after = time.monotonic() - promoted
        assert complete_after <= 5.0, 'the new master was complete %.1f s after the ' \
                                      'promotion' % complete_after
        wait_for(lambda: set(b.sessions('foreign')) >= live, 5, 'b knows every call of a')
        assert b.status()['broadcasts'] == '0'
        status = a.status()
        assert status['url'].endswith('(master 127.0.0.1:%d)' % topo.replica.port)
        assert status['sentinel watch'] in ['127.0.0.1:%d (switches seen: 1)' % port
                                            for _, port in topo.sentinel_addrs]
        assert 'the sentinels switched the master of rtpc to 127.0.0.1:%d' % (
            topo.replica.port) in a.daemon.log()

        a.kill(signal.SIGKILL)
        calls = sorted(live)
        assert batch(b.control, ['L %s 127.0.0.1 6000 ft-%s tt-%s' % (c, c, c)
                                 for c in calls]) == [answers[c] for c in calls]
        assert batch(b.control, ['D %s ft-%s tt-%s' % (c, c, c) for c in calls]) == (
            ['0'] * len(calls))
        status = b.status()
        assert status['broadcasts'] == '0'
        assert status['takeovers'] == str(len(calls))
        print('failover: %d live calls (%d during the failover); the %d answered until the '
              'promotion were on the new master %.2f s after it, all %.2f s after it (%.2f s '
              'after the traffic stopped); slowest batch %.0f ms'
              % (len(calls), len(traffic.answers), len(before), rewritten, complete_after,
                 took, traffic.slowest * 1000))


def test_an_instance_on_a_node_that_becomes_a_replica_gets_readonly_and_recovers(
        procs, tmp_path):
    """FAILOVER on the master makes it a replica without closing its clients: a's writes
    are answered READONLY.  The sentinels still name the old node until they fail over;
    meanwhile a must not take it for the master (INFO replication: role:slave), and
    afterwards every session of a, including those created meanwhile, is on the master."""
    with SentinelTopology(down_after_ms=1000) as topo:
        members = start_members(procs)
        a = start_instance(procs, tmp_path, members, 'a', sentinel_xml(topo))
        wait_ready(a, topo.master)
        answers = offer_and_answer(a, ['ro-%d' % i for i in range(50)])
        wait_for(lambda: own_keys(topo.master, 'a') == set(answers), 5, 'written to the master')

        assert topo.master.client().execute_command('FAILOVER') == b'OK'
        wait_for(lambda: topo.master.client().info('replication')['role'] == 'slave', 10,
                 'the old master turned into a replica')
        assert topo.current_master() == ('127.0.0.1', topo.master.port)   # not yet
        answers.update(offer_and_answer(a, ['ro-replica-%d' % i for i in range(50)]))
        a.daemon.wait_log('redis: looking for the master (READONLY', 5)
        # asked again, the sentinels name the same node: a sees it is a replica
        wait_for(lambda: a.status()['last error'] == (
            'the node is a replica (role:slave), not the master'), 5, 'a refuses the replica')
        assert a.status()['state'] == 'degraded'
        assert own_keys(topo.replica, 'a') == {'ro-%d' % i for i in range(50)}

        sentinel = topo.sentinels[0].client()
        assert sentinel.execute_command('SENTINEL', 'FAILOVER', MASTER_NAME) == b'OK'
        topo.wait_promotion(timeout=20)
        wait_for(lambda: own_keys(topo.replica, 'a') == set(answers), 10,
                 'every session of a on the new master')
        wait_for(lambda: a.status()['state'] == 'connected', 5, 'a connected again')
        more = offer_and_answer(a, ['ro-after-%d' % i for i in range(20)])
        wait_for(lambda: own_keys(topo.replica, 'a') == set(answers) | set(more), 5,
                 'new calls written to the new master')


def test_calls_a_peer_ended_while_redis_was_away_go_within_seconds_of_its_return(
        procs, tmp_path, redis_server):
    """Issue 16, item 9: Redis restarts empty; b ended calls meanwhile (its deletes found
    nothing to delete, so no event tells anyone).  a drops them as soon as b has rewritten
    its sessions into the new Redis, not at the periodic resync (60 s here)."""
    members = start_members(procs)
    server_xml = '<url>%s</url>' % redis_server.url
    a = start_instance(procs, tmp_path, members, 'a', server_xml)
    b = start_instance(procs, tmp_path, members, 'b', server_xml)
    for instance in (a, b):
        wait_ready(instance, redis_server)
    calls = ['back-%d' % i for i in range(40)]
    offer_and_answer(b, calls)
    wait_for(lambda: a.counts() == (0, 40), 5, 'a knows the calls of b')
    ended, kept = calls[:20], calls[20:]

    redis_server.kill(signal.SIGKILL)
    wait_for(lambda: b.status()['state'] == 'degraded', 5, 'b notices the outage')
    assert batch(b.control, ['D %s ft-%s tt-%s' % (c, c, c) for c in ended]) == ['0'] * 20
    restarted = RedisServer(port=redis_server.port).start()
    try:
        back = time.monotonic()
        wait_for(lambda: set(a.sessions('foreign')) == set(kept), 10,
                 'a forgets the calls b ended during the outage', interval=0.1)
        took = time.monotonic() - back
        assert took <= 5.0, 'a dropped them %.1f s after Redis came back' % took
        assert own_keys(restarted, 'b') == set(kept)
        assert a.counts() == (0, 20)
        print('calls ended during the outage dropped %.2f s after Redis came back' % took)
    finally:
        restarted.stop()


def test_tls_applies_to_the_sentinel_and_the_data_node(procs, tmp_path):
    """<sentinel tls="yes">: the writer's question to the sentinel, its +switch-master
    subscription, the data connection and redis-py's threads all go over verified TLS."""
    certs = make_certs(tmp_path)
    data_dir = tmp_path / 'redis'
    data_dir.mkdir()
    tls = ['--tls-cert-file', certs['good'] + '.pem', '--tls-key-file', certs['good'] + '.key',
           '--tls-ca-cert-file', certs['ca'] + '.pem', '--tls-auth-clients', 'no']
    master_port, sentinel_port = free_tcp_port(), free_tcp_port()
    procs.add(subprocess.Popen(
        [REDIS_SERVER, '--port', '0', '--tls-port', str(master_port), '--bind', '127.0.0.1',
         *tls, '--save', '', '--appendonly', 'no', '--notify-keyspace-events', 'Kghxe',
         '--dir', str(data_dir), '--loglevel', 'warning'],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    conf = tmp_path / 'sentinel.conf'
    conf.write_text('\n'.join([
        'port 0', 'tls-port %d' % sentinel_port, 'bind 127.0.0.1', 'dir %s' % data_dir,
        'tls-replication yes', *('%s %s' % (tls[i][2:], tls[i + 1]) for i in range(0, 8, 2)),
        'sentinel monitor %s 127.0.0.1 %d 1' % (MASTER_NAME, master_port), '']))
    procs.add(subprocess.Popen([REDIS_SERVER, str(conf), '--sentinel', '--loglevel', 'warning'],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def tls_client(port: int) -> redis.Redis:
        return redis.Redis(host='127.0.0.1', port=port, ssl=True,
                           ssl_ca_certs=certs['ca'] + '.pem', socket_timeout=2)

    def sentinel_knows_master() -> bool:
        try:
            return tls_client(sentinel_port).execute_command(
                'SENTINEL', 'get-master-addr-by-name', MASTER_NAME) == [
                    b'127.0.0.1', str(master_port).encode()]
        except redis.RedisError:
            return False
    wait_for(sentinel_knows_master, 10, 'the TLS sentinel monitors the TLS master')

    members = start_members(procs)
    server_xml = ('<sentinel master="%s" tls="yes">127.0.0.1:%d</sentinel><tls_ca>%s.pem'
                  '</tls_ca>' % (MASTER_NAME, sentinel_port, certs['ca']))
    a = start_instance(procs, tmp_path, members, 'a', server_xml)
    master = tls_client(master_port)
    wait_for(lambda: a.status()['last resync'] != 'never'
             and a.status()['subscriber'] == 'connected', 10, 'the threads over TLS')
    offer_and_answer(a, ['tls-%d' % i for i in range(10)])
    wait_for(lambda: len(list(master.scan_iter(match='%s:s:a:*' % NS))) == 10, 5,
             'sessions written over TLS')
    status = a.status()
    assert status['state'] == 'connected'
    assert status['url'] == 'sentinel %s@127.0.0.1:%d (master 127.0.0.1:%d)' % (
        MASTER_NAME, sentinel_port, master_port)
    clients = tls_client(sentinel_port).execute_command('CLIENT', 'LIST').decode()
    assert ' sub=1 ' in clients                  # the +switch-master watch, over TLS
