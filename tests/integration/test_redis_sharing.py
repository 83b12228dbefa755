"""Session sharing between real rtp_cluster daemons through a real redis-server (issue 6).

Every test starts its own redis-server on a free loopback port, real rtp-io member
RTPproxies and two rtp_cluster daemons ("a" and "b") sharing one namespace, and stops all
of them (by PID) at the end.  Admin commands go over each daemon's unix admin socket,
control commands over its UDP control socket, and Redis is inspected with redis-py.
"""
from __future__ import annotations

import signal
import subprocess
import threading
import time

import pytest
import redis

from rtp_cluster.core.keys import session_key
from rtp_cluster.core.records import Record
from tests.support.daemon import Daemon, cluster_xml, member_xml
from tests.support.procs import free_tcp_port, media_port_range
from tests.support.redis_server import REDIS_SERVER, RedisServer
from tests.support.sharing import Instance, batch, is_port_reply, wait_for
from tests.support.tls_certs import make_certs

pytestmark = [pytest.mark.redis, pytest.mark.slow]

NS = 'rtpc'


# --- helpers ---------------------------------------------------------------------------------

class Env:
    """redis-server, two members and any number of rtp_cluster instances."""

    def __init__(self, procs, tmp_path, redis_server: RedisServer) -> None:
        self.procs = procs
        self.tmp_path = tmp_path
        self.redis = redis_server
        self.members = []
        for _ in range(2):
            lo, hi = media_port_range(2400)            # 4 ports per session, 500+ sessions
            if hi > 65000:                             # the helper wraps only after this one
                lo, hi = media_port_range(2400)
            self.members.append(procs.member('udp', extra=['-m', str(lo), '-M', str(hi)]))

    def instance(self, name: str, redis_extra: str = '', url: str | None = None,
                 resync_interval: int = 2, wait_connected: bool = True) -> Instance:
        directory = self.tmp_path / name
        directory.mkdir()
        members = [member_xml('m%d' % (i + 1), m) for i, m in enumerate(self.members)]
        xml, spec = cluster_xml(members)
        redis_xml = ('<redis><url>%s</url><instance_id>%s</instance_id>'
                     '<resync_interval>%d</resync_interval>%s</redis>'
                     % (url or self.redis.url, name, resync_interval, redis_extra))
        xml = xml.replace('<rtp_cluster_config>', '<rtp_cluster_config>' + redis_xml, 1)
        daemon = Daemon.start(self.procs, directory, (xml, spec), wait_online=['m1', 'm2'])
        instance = Instance(name, daemon)
        if wait_connected:
            wait_for(lambda: self._ready(instance), 10, '%s connected to redis' % name)
        return instance

    def _ready(self, instance: Instance) -> bool:
        """Connected, resynced, and its presence tells peers it rewrote into this Redis
        (until then peers may not take a key's absence as a deletion)."""
        status = instance.status()
        if (status['state'], status['subscriber']) != ('connected', 'connected') or (
                status['last resync'] == 'never' or status['synced run id'] == '-'):
            return False
        if self.redis is None:
            return True
        presence = self.redis.client().hget('%s:n:%s' % (NS, instance.name), 'synced_run_id')
        return presence is not None and presence.decode() == status['synced run id']

    def member_info(self) -> list[dict[str, int]]:
        infos = []
        for member in self.members:
            reply = member.command('I')
            infos.append({k.strip(): int(v) for k, v in
                          (line.split(':') for line in reply.strip().splitlines())})
        return infos

    def created(self) -> int:
        return sum(info['sessions created'] for info in self.member_info())

    def active(self) -> int:
        return sum(info['active sessions'] for info in self.member_info())

    def keys(self, owner: str) -> dict[str, dict[str, str]]:
        """Session hashes in `owner`'s prefix: call-id -> fields (cluster 'test')."""
        client = self.redis.client()
        prefix = '%s:s:%s:test:' % (NS, owner)
        result = {}
        for key in client.scan_iter(match=prefix + '*', count=1000):
            raw = client.hgetall(key)
            result[key.decode('latin-1')[len(prefix):]] = {
                k.decode(): v.decode('latin-1') for k, v in raw.items()}
        return result


@pytest.fixture
def env(procs, tmp_path, redis_server):
    return Env(procs, tmp_path, redis_server)


def create_calls(instance: Instance, calls: list[str], answer: bool = True):
    """U (and L with to-tag) for every call; {call: (offer reply, answer reply)}."""
    offers = batch(instance.control, ['U %s 127.0.0.1 %d ft-%s' % (c, 4000 + i, c)
                                      for i, c in enumerate(calls)])
    assert all(is_port_reply(r) for r in offers), [r for r in offers if not is_port_reply(r)][:5]
    answers = [''] * len(calls)
    if answer:
        answers = batch(instance.control, ['L %s 127.0.0.1 %d ft-%s tt-%s' % (c, 6000 + i, c, c)
                                           for i, c in enumerate(calls)])
        assert all(is_port_reply(r) for r in answers)
    return dict(zip(calls, zip(offers, answers)))


def view(sessions: dict[str, dict[str, str]]) -> dict[str, tuple[str, str, str]]:
    return {cid: (s['member'], s['owner'], s['epoch']) for cid, s in sessions.items()}


# --- (1) failover --------------------------------------------------------------------------------

def test_failover_peer_routes_directly_to_recorded_member(env):
    a, b = env.instance('a'), env.instance('b')
    calls = ['fo-%d' % i for i in range(500)]
    offers = create_calls(a, calls, answer=False)           # timed from the last offer's reply
    took = wait_for(lambda: b.counts() == (0, 500), 5, 'b knows 500 foreign sessions')
    assert took <= 1.0, 'b learned the 500 sessions only after %.2f s' % took
    answers = batch(a.control, ['L %s 127.0.0.1 %d ft-%s tt-%s' % (c, 6000 + i, c, c)
                                for i, c in enumerate(calls)])
    assert all(is_port_reply(r) for r in answers)
    ports = {c: (offers[c][0], answer) for c, answer in zip(calls, answers)}
    wait_for(lambda: all(s.get('ttag') for s in env.keys('a').values()), 2, 'to-tags written')
    assert a.counts() == (500, 0)
    assert view(b.sessions('foreign')) == view(a.sessions('own'))
    assert set(env.keys('a')) == set(calls)
    created_before = env.created()
    assert env.active() == 500
    assert b.status()['broadcasts'] == '0'

    a.kill()
    offers = batch(b.control, ['U %s 127.0.0.1 %d ft-%s' % (c, 4000 + i, c)
                               for i, c in enumerate(calls)])
    answers = batch(b.control, ['L %s 127.0.0.1 %d ft-%s tt-%s' % (c, 6000 + i, c, c)
                                for i, c in enumerate(calls)])
    assert offers == [ports[c][0] for c in calls]            # the same port, same member
    assert answers == [ports[c][1] for c in calls]
    assert env.created() == created_before                    # no duplicate session anywhere
    status = b.status()
    assert status['broadcasts'] == '0'                        # every command routed directly
    assert status['takeovers'] == '500'
    assert b.counts() == (500, 0)
    assert {s['epoch'] for s in b.sessions('own').values()} == {'2'}
    wait_for(lambda: len(env.keys('b')) == 500, 2, "b's 500 keys written")
    details = b.admin('ls session fo-7')
    assert '    state = OWN' in details and '    epoch = 2' in details

    client = env.redis.client()
    short = calls[:250]                    # a's keys of these expire soon (set by hand)
    for c in short:
        client.pexpire('%s:s:a:test:%s' % (NS, c), 5000)
    deletes = batch(b.control, ['D %s ft-%s tt-%s' % (c, c, c) for c in calls])
    assert deletes == ['0'] * 500
    assert env.active() == 0
    assert b.status()['broadcasts'] == '0'
    assert b.counts() == (0, 0)
    # b's prefix holds tombstones that outrank a's stale keys (a is dead, its keys stay),
    # each living as long as a's key of the call, not the whole session TTL
    wait_for(lambda: all(f.get('state') == 'deleted' for f in env.keys('b').values()), 2,
             'tombstones in b')
    assert len(env.keys('a')) == 500
    for c in calls[::25]:
        a_ttl, b_ttl = (client.pttl('%s:s:%s:test:%s' % (NS, who, c)) for who in 'ab')
        assert 0 < b_ttl - a_ttl <= 1100, (c, a_ttl, b_ttl)
        assert b_ttl <= 6000 if c in short else b_ttl > 80000_000
    b.resync_done()                                           # a's stale keys are read again
    assert b.counts() == (0, 0), 'a resync brought deleted sessions back'
    assert b.status()['broadcasts'] == '0'


def test_delete_after_takeover_from_a_live_owner_leaves_no_tombstone(env):
    """The old owner is alive: it demotes and deletes its key when it sees the takeover, so
    when the call ends there is nothing to outrank and the new owner just deletes."""
    a, b = env.instance('a'), env.instance('b')
    calls = ['lt-%d' % i for i in range(20)]
    create_calls(a, calls)
    wait_for(lambda: b.counts() == (0, 20), 5, 'b knows the calls')
    assert batch(b.control, ['U %s 127.0.0.1 4000 ft-%s' % (c, c) for c in calls])
    wait_for(lambda: env.keys('a') == {} and a.counts() == (0, 20), 5, 'a demoted itself')
    assert batch(b.control, ['D %s ft-%s tt-%s' % (c, c, c) for c in calls]) == ['0'] * 20
    wait_for(lambda: env.keys('b') == {}, 5, "b's keys deleted, no tombstone")
    wait_for(lambda: a.counts() == (0, 0), 5, 'a forgets the calls')


# --- (2) Redis crash and restart -----------------------------------------------------------------

class Traffic(threading.Thread):
    """Re-offers, new calls and deletes against one instance; records every failure."""

    def __init__(self, instance: Instance, initial: dict[str, tuple[str, str]], tag: str) -> None:
        super().__init__(daemon=True)
        self.instance = instance
        self.live = dict(initial)
        self.tag = tag
        self.stop_flag = threading.Event()
        self.failures: list[str] = []
        self.commands = 0

    def run(self) -> None:
        n = 0
        while not self.stop_flag.is_set() and n < 2000:
            n += 1
            old = sorted(self.live)[:5]
            new = ['%s-new-%d-%d' % (self.tag, n, j) for j in range(5)]
            cmds = (['U %s 127.0.0.1 4000 ft-%s' % (c, c) for c in old]
                    + ['U %s 127.0.0.1 4000 ft-%s' % (c, c) for c in new]
                    + ['D %s ft-%s' % (c, c) for c in old[:2]])
            try:
                replies = batch(self.instance.control, cmds, timeout=2.0)
            except OSError as exc:
                self.failures.append('no reply: %s' % exc)
                continue
            self.commands += len(cmds)
            for cmd, reply in zip(cmds, replies):
                letter, cid = cmd.split()[:2]
                if letter == 'U' and cid in self.live and reply != self.live[cid]:
                    self.failures.append('%s -> %r, was %r' % (cmd, reply, self.live[cid]))
                elif letter == 'U' and not is_port_reply(reply):
                    self.failures.append('%s -> %r' % (cmd, reply))
                elif letter == 'D' and reply != '0':
                    self.failures.append('%s -> %r' % (cmd, reply))
            for c, reply in zip(new, replies[5:10]):
                self.live[c] = reply
            for c in old[:2]:
                del self.live[c]
            time.sleep(0.01)


def test_redis_killed_and_restarted_empty_mid_traffic(env):
    a, b = env.instance('a'), env.instance('b')
    initial_a = {c: r[0] for c, r in create_calls(a, ['ra-%d' % i for i in range(100)],
                                                  answer=False).items()}
    initial_b = {c: r[0] for c, r in create_calls(b, ['rb-%d' % i for i in range(100)],
                                                  answer=False).items()}
    wait_for(lambda: a.counts() == (100, 100) and b.counts() == (100, 100), 5, 'initial sync')
    run_id = env.redis.client().info('server')['run_id']
    traffic = [Traffic(a, initial_a, 'ta'), Traffic(b, initial_b, 'tb')]
    restarted = None
    try:
        for t in traffic:
            t.start()
        time.sleep(0.5)
        env.redis.kill(signal.SIGKILL)
        wait_for(lambda: a.status()['state'] == 'degraded', 5, 'a notices the outage')
        time.sleep(0.5)
        restarted = RedisServer(port=env.redis.port).start()
        time.sleep(1.0)
    finally:
        for t in traffic:
            t.stop_flag.set()
        for t in traffic:
            t.join(10)
        if restarted is not None:
            env.redis = restarted
    try:
        for t in traffic:
            assert t.commands > 100 and t.failures == [], t.failures[:5]
        assert env.redis.client().info('server')['run_id'] != run_id
        live_a, live_b = traffic[0].live, traffic[1].live

        def converged():
            keys_a, keys_b = env.keys('a'), env.keys('b')
            return (set(keys_a) == set(live_a) and set(keys_b) == set(live_b)
                    and set(a.sessions('own')) == set(live_a)
                    and set(b.sessions('own')) == set(live_b)
                    and set(a.sessions('foreign')) == set(live_b)
                    and set(b.sessions('foreign')) == set(live_a))
        wait_for(converged, 15, 'both views and redis equal the live sessions', interval=0.2)
        assert env.active() == len(live_a) + len(live_b)       # nothing deleted by mistake
        for instance in (a, b):
            status = instance.status()
            assert status['state'] == 'connected' and status['subscriber'] == 'connected'
            assert status['redis run id'] == status['synced run id'] != '-'
        # a re-offer through the peer still reaches the same member port
        sample = sorted(live_a)[:20]
        assert batch(b.control, ['U %s 127.0.0.1 4000 ft-%s' % (c, c) for c in sample]) == [
            live_a[c] for c in sample]
    finally:
        if restarted is not None:
            restarted.stop()


def test_redis_frozen_every_command_answered_while_it_is_stopped(env):
    """SIGSTOP Redis (a hung server, not a dead one): the control path answers everything
    while it is still stopped; `degraded` shows; after SIGCONT every change is in Redis."""
    a = env.instance('a')
    before = ['fz-before-%d' % i for i in range(50)]
    create_calls(a, before)
    wait_for(lambda: len(env.keys('a')) == 50, 5, 'written before the freeze')
    env.redis.pause()
    try:
        during = ['fz-during-%d' % i for i in range(200)]
        create_calls(a, during)                             # all answered, Redis stopped
        gone = before[:25]
        assert batch(a.control, ['D %s ft-%s tt-%s' % (c, c, c) for c in gone]) == ['0'] * 25
        wait_for(lambda: a.status()['state'] == 'degraded', 5, 'a notices the hung Redis')
        assert env.redis.proc.poll() is None                # still stopped, not dead
        assert int(a.status()['queue depth']) >= 200
    finally:
        env.redis.pause(False)
    wait_for(lambda: set(env.keys('a')) == set(before[25:]) | set(during), 15,
             'every change written after the thaw', interval=0.1)
    wait_for(lambda: a.status()['state'] == 'connected', 5, 'a connected again')
    assert a.counts() == (225, 0)


def test_two_live_processes_with_one_instance_id_are_reported(env, tmp_path):
    """A copy-pasted config: two daemons both call themselves "a".  Each sees the other's
    run token in its presence record, logs it as an error, shows it in `ls redis`, and leaves
    own keys it does not know alone (they may be the other's calls)."""
    first = env.instance('a')
    create_calls(first, ['dup-first-%d' % i for i in range(10)])
    twin_dir = tmp_path / 'twin'
    twin_dir.mkdir()
    members = [member_xml('m%d' % (i + 1), m) for i, m in enumerate(env.members)]
    xml, spec = cluster_xml(members)
    xml = xml.replace('<rtp_cluster_config>', '<rtp_cluster_config><redis><url>%s</url>'
                      '<instance_id>a</instance_id><resync_interval>2</resync_interval></redis>'
                      % env.redis.url, 1)
    twin = Instance('a', Daemon.start(env.procs, twin_dir, (xml, spec), wait_online=['m1', 'm2']))
    text = 'another live process uses instance id'
    for instance in (first, twin):
        instance.daemon.wait_log(text, timeout=10)
        wait_for(lambda: instance.status()['duplicate instance id'].startswith('SEEN'), 5,
                 'duplicate shown in ls redis')
    create_calls(twin, ['dup-twin-%d' % i for i in range(10)])
    time.sleep(2.5)                  # resyncs and presence rounds of both have run meanwhile
    keys = set(env.keys('a'))
    assert {'dup-first-%d' % i for i in range(10)} <= keys      # nobody deleted the other's
    assert {'dup-twin-%d' % i for i in range(10)} <= keys
    assert first.daemon.proc.poll() is None and twin.daemon.proc.poll() is None
    twin.kill(signal.SIGTERM)
    wait_for(lambda: first.status()['duplicate instance id'] == 'no', 15,
             'the report clears once the twin is gone', interval=0.2)


# --- (3) lost notifications ----------------------------------------------------------------------

def test_killed_pubsub_connection_is_repaired_by_the_resync_on_resubscribe(env):
    # b's periodic resync is too slow to matter: only the resync on re-subscribe can fix b
    a, b = env.instance('a'), env.instance('b', resync_interval=600)
    calls = ['ps-%d' % i for i in range(400)]
    killed = []

    def kill_pubsub():
        time.sleep(0.05)
        killed.append(env.redis.client().client_kill_filter(_type='pubsub'))
    killer = threading.Thread(target=kill_pubsub)
    resync_before = b.resync_at()
    killer.start()
    create_calls(a, calls[:200], answer=False)
    killer.join(5)
    create_calls(a, calls[200:], answer=False)               # while b re-subscribes
    deleted = calls[::7]
    assert batch(a.control, ['D %s ft-%s' % (c, c) for c in deleted]) == ['0'] * len(deleted)
    assert killed and killed[0] >= 2                          # a's and b's subscribers
    wait_for(lambda: view(b.sessions('foreign')) == view(a.sessions('own')), 10,
             "b's view equals a's", interval=0.1)
    assert b.resync_at() != resync_before
    assert set(b.sessions('foreign')) == set(calls) - set(deleted)


def test_output_buffer_overflow_is_repaired_after_resubscribe(procs, tmp_path):
    redis_log = tmp_path / 'redis.log'
    server = RedisServer(extra=['--client-output-buffer-limit', 'pubsub 64kb 32kb 1',
                                '--logfile', str(redis_log)]).start()
    try:
        env = Env(procs, tmp_path, server)
        # explicit peers: only b follows the (fake) peer c whose key floods the events
        a = env.instance('a', redis_extra='<peers>b</peers>')
        b = env.instance('b', resync_interval=600, redis_extra='<peers>a c</peers>')
        calls = ['ob-%d' % i for i in range(600)]
        client = server.client()
        subscribers = {c['id'] for c in client.client_list(_type='pubsub')}
        assert len(subscribers) == 2
        resync_before = b.resync_at()
        b.kill(signal.SIGSTOP)                                # b's subscriber stops reading
        try:
            # the kernel's socket buffers hide MBs: flood b's pattern with long-named events
            flood = '%s:s:c:test:%s' % (NS, 'f' * 450)

            def still_subscribed() -> set:
                return subscribers & {c['id'] for c in client.client_list(_type='pubsub')}
            for _ in range(40):
                pipe = client.pipeline(transaction=False)
                for i in range(2000):
                    pipe.hset(flood, 'n', i)
                pipe.execute()
                if len(still_subscribed()) < 2:
                    break
            client.delete(flood)
            assert len(still_subscribed()) == 1, 'redis did not drop the stalled subscriber'
            assert 'output buffer limits' in redis_log.read_text(errors='replace')
            # b's subscription is gone: every event from now on is lost for b
            create_calls(a, calls)
            deleted = calls[::5]
            assert batch(a.control, ['D %s ft-%s tt-%s' % (c, c, c) for c in deleted]) == (
                ['0'] * len(deleted))
            assert b.daemon.proc.poll() is None
        finally:
            b.kill(signal.SIGCONT)
        wait_for(lambda: view(b.sessions('foreign')) == view(a.sessions('own')), 10,
                 "b's view equals a's", interval=0.1)
        assert set(b.sessions('foreign')) == set(calls) - set(deleted)
        assert b.counts() == (0, 480)
        assert b.resync_at() != resync_before                 # b re-subscribed and resynced
    finally:
        server.stop()


# --- (4) split brain -----------------------------------------------------------------------------

def test_split_brain_converges_to_one_owner(env):
    a, b = env.instance('a'), env.instance('b')
    calls = ['sb-%d' % i for i in range(40)]
    ports = create_calls(a, calls)
    wait_for(lambda: b.counts() == (0, 40), 5, 'b knows the calls')
    created = env.created()
    lookups = ['L %s 127.0.0.1 %d ft-%s tt-%s' % (c, 6000 + i, c, c) for i, c in enumerate(calls)]
    for _ in range(4):                                        # both get every call at once
        results = {}
        threads = [threading.Thread(target=lambda i=i: results.__setitem__(
            i.name, batch(i.control, lookups))) for i in (a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        for name in ('a', 'b'):
            assert results[name] == [ports[c][1] for c in calls], name
        time.sleep(0.05)

    def converged():
        va, vb = view(a.sessions()), view(b.sessions())
        if va != vb or set(va) != set(calls):
            return False
        keys = {owner: env.keys(owner) for owner in ('a', 'b')}
        for cid, (member, owner, epoch) in va.items():
            active = [o for o in keys if cid in keys[o] and keys[o][cid]['state'] == 'active']
            if active != [owner] or keys[owner][cid]['epoch'] != epoch:
                return False
        return True
    wait_for(converged, 10, 'one owner per call, agreed by both', interval=0.1)
    own_a, foreign_a = a.counts()
    own_b, foreign_b = b.counts()
    assert own_a + own_b == 40 and foreign_a == own_b and foreign_b == own_a
    assert int(a.status()['demotions']) + int(b.status()['demotions']) > 0
    assert max(int(s['epoch']) for s in a.sessions().values()) >= 2
    assert env.created() == created                           # the member kept one session
    assert batch(a.control, ['D %s ft-%s tt-%s' % (c, c, c) for c in calls]) == ['0'] * 40
    wait_for(lambda: a.counts() == (0, 0) and b.counts() == (0, 0), 2, 'all gone')
    assert env.active() == 0


# --- (5) deletes, TTL expiry ---------------------------------------------------------------------

def test_deletes_propagate_and_leaked_sessions_expire(env):
    a = env.instance('a', redis_extra='<session_ttl>2</session_ttl>')
    b = env.instance('b')
    calls = ['dx-%d' % i for i in range(100)]
    create_calls(a, calls)
    wait_for(lambda: b.counts() == (0, 100), 5, 'b knows the calls')
    deleted = calls[:50]
    assert batch(a.control, ['D %s ft-%s tt-%s' % (c, c, c) for c in deleted]) == ['0'] * 50
    took = wait_for(lambda: b.counts() == (0, 50), 5, 'b drops the deleted calls')
    assert took <= 1.0, 'deletes reached b after %.2f s' % took
    assert set(b.sessions()) == set(calls[50:])
    # live calls outlive their 2 s TTL while their owner refreshes them
    time.sleep(4.5)
    client = env.redis.client()
    ttl = client.pttl('%s:s:a:test:%s' % (NS, calls[60]))
    assert 0 < ttl <= 2000
    assert b.counts() == (0, 50) and len(env.keys('a')) == 50
    # the owner dies without deleting: its keys expire and the peer forgets them
    a.kill()
    took = wait_for(lambda: b.counts() == (0, 0), 8, 'b forgets the leaked calls')
    assert took > 0.5                                         # by expiry, not at once
    assert env.keys('a') == {}
    assert int(b.status()['removed by event']) >= 100


def test_call_id_bytes_that_are_not_utf8_survive_redis(env):
    a = env.instance('a')
    b = env.instance('b')
    call = 'nb\x85\xa0\xff@h'                        # latin-1 text of arbitrary bytes
    offer = batch(a.control, ['U %s 127.0.0.1 4000 ft' % call])[0]
    assert is_port_reply(offer)
    wait_for(lambda: b.counts() == (0, 1), 5, 'b knows the call')
    # the same port again through b: b routed to the member that holds the call
    assert batch(b.control, ['U %s 127.0.0.1 4000 ft' % call]) == [offer]
    assert batch(b.control, ['D %s ft' % call]) == ['0']
    wait_for(lambda: a.counts() == (0, 0) and b.counts() == (0, 0), 5, 'the call is gone')


def test_final_timeout_ends_calls_on_owner_and_peer(env):
    a = env.instance('a', redis_extra='<final_timeout>3</final_timeout>')
    b = env.instance('b', redis_extra='<final_timeout>3</final_timeout>')
    calls = ['ft-%d' % i for i in range(20)]
    create_calls(a, calls)
    wait_for(lambda: b.counts() == (0, 20), 5, 'b knows the calls')
    took = wait_for(lambda: a.counts() == (0, 0) and b.counts() == (0, 0), 10,
                    'both forget the calls after final_timeout')
    # 3 s after creation, checked every second (final_timeout / 10, at least 1 s)
    assert took < 6.0, 'calls ended %.1f s after creation' % took
    assert env.keys('a') == {}


# --- (6) TLS -------------------------------------------------------------------------------------

def start_tls_redis(procs, cert: str, ca: str, directory) -> int:
    port = free_tcp_port()
    procs.add(subprocess.Popen(
        [REDIS_SERVER, '--port', '0', '--tls-port', str(port), '--bind', '127.0.0.1',
         '--tls-cert-file', cert + '.pem', '--tls-key-file', cert + '.key',
         '--tls-ca-cert-file', ca + '.pem', '--tls-auth-clients', 'no', '--save', '',
         '--appendonly', 'no', '--notify-keyspace-events', 'Kghxe', '--dir', str(directory),
         '--loglevel', 'warning'], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    client = redis.Redis(host='127.0.0.1', port=port, ssl=True, ssl_cert_reqs='none',
                         socket_timeout=1)
    wait_for(lambda: _pings(client), 10, 'TLS redis on %d' % port, interval=0.05)
    return port


def _pings(client) -> bool:
    try:
        return client.ping()
    except redis.RedisError:
        return False


def test_tls_verified_server_accepted_wrong_name_and_untrusted_refused(procs, tmp_path):
    redis_dir = tmp_path / 'redis'
    redis_dir.mkdir()
    certs = make_certs(tmp_path)
    ports = {name: start_tls_redis(procs, certs[name], certs['ca'], redis_dir)
             for name in ('good', 'wrongname', 'rogue')}
    env = Env(procs, tmp_path, redis_server=None)
    tls = '<tls_ca>%s.pem</tls_ca>' % certs['ca']
    good = env.instance('good', url='rediss://127.0.0.1:%d/0' % ports['good'], redis_extra=tls)
    bad = {name: env.instance(name, url='rediss://127.0.0.1:%d/0' % ports[name],
                              redis_extra=tls, wait_connected=False)
           for name in ('wrongname', 'rogue')}
    create_calls(good, ['tls-%d' % i for i in range(10)])
    client = redis.Redis(host='127.0.0.1', port=ports['good'], ssl=True,
                         ssl_ca_certs=certs['ca'] + '.pem', socket_timeout=2)
    wait_for(lambda: len(list(client.scan_iter(match='%s:s:good:*' % NS))) == 10, 5,
             'sessions written over TLS')
    assert good.status()['state'] == 'connected'
    for name, instance in bad.items():
        instance.daemon.wait_log('redis: write failed, serving from memory (degraded)')
        log = instance.daemon.log()
        assert 'CERTIFICATE_VERIFY_FAILED' in log or 'certificate verify failed' in log, log[-2000:]
        if name == 'wrongname':
            assert 'mismatch' in log or 'not valid for' in log, log[-2000:]
        status = instance.status()
        assert status['state'] == 'degraded' and status['subscriber'] == 'disconnected'
        calls = ['%s-%d' % (name, i) for i in range(5)]
        create_calls(instance, calls)                        # the control path still works
        assert instance.counts() == (5, 0)
        assert instance.daemon.proc.poll() is None
        raw = redis.Redis(host='127.0.0.1', port=ports[name], ssl=True, ssl_cert_reqs='none',
                          socket_timeout=2)
        assert list(raw.scan_iter(match='%s:s:*' % NS)) == []   # nothing was written there


# --- (7) bad data in a peer's prefix -------------------------------------------------------------

def test_bad_data_in_peer_prefix_is_ignored_counted_and_never_written_back(env):
    a, b = env.instance('a'), env.instance('b')
    calls = ['bd-%d' % i for i in range(20)]
    ports = create_calls(a, calls)
    wait_for(lambda: b.counts() == (0, 20), 5, 'b knows the calls')
    client = env.redis.client()
    good = {k.encode(): v.encode() for k, v in env.keys('a')['bd-0'].items()}

    def planted(cid: bytes, **changes) -> dict:
        fields = dict(good, cid=cid)
        for name, value in changes.items():
            if value is None:
                fields.pop(name.encode(), None)
            else:
                fields[name.encode()] = value
        return {(k.encode() if isinstance(k, str) else k): v for k, v in fields.items()}

    prefix = b'rtpc:s:a:test:'
    bad = {
        prefix + b'p-string': None,                                    # not a hash
        prefix + b'p-nomember': planted(b'p-nomember', member=None),
        prefix + b'p-owner': planted(b'p-owner', owner=b'b'),
        prefix + b'p-huge': planted(b'p-huge', ftag=b'x' * 1_000_000),
        prefix + b'p-state': planted(b'p-state', state=b'zombie'),
        prefix + b'p-epoch': planted(b'p-epoch', epoch=b'\xff\xfe'),
        prefix + b'p-glob*?[x]': planted(b'p-glob*?[x]', seq=b'-3'),
        prefix + b'p-\xff\xfe-nonutf8': planted(b'p-\xff\xfe-other'),   # cid != key
        b'rtpc:s:a:nocluster:p-cluster': planted(b'p-cluster', cluster=b'nocluster'),
        b'rtpc:n:junk': None,                                          # presence, not a hash
    }
    before_bad = int(b.status()['bad records'])
    for key, fields in bad.items():
        if fields is None:
            client.set(key, b'garbage')
        else:
            client.hset(key, mapping=fields)
    snapshot = {key: client.dump(key) for key in client.scan_iter(match=b'rtpc:s:a:*')}
    assert len(snapshot) == 20 + 9
    a.resync_done()
    b.resync_done()                                           # the junk presence key included
    b.resync_done()
    bad_sessions = 9
    assert int(b.status()['bad records']) >= before_bad + bad_sessions
    assert b.counts() == (0, 20) and a.counts() == (20, 0)
    assert set(b.sessions()) == set(calls)
    assert batch(b.control, ['U %s 127.0.0.1 4000 ft-%s' % (c, c) for c in calls[:3]]) == [
        ports[c][0] for c in calls[:3]]                       # b still routes (takes over)
    time.sleep(0.3)
    after = {key: client.dump(key) for key in client.scan_iter(match=b'rtpc:s:a:*')}
    # a's prefix: the planted keys are untouched by anybody; a's 3 taken-over calls were
    # deleted by a itself when it saw b's newer records (demotion), nothing else changed
    taken = {prefix + c.encode() for c in calls[:3]}
    assert set(after) == set(snapshot) - taken
    assert all(after[k] == snapshot[k] for k in after)
    assert client.get(b'rtpc:n:junk') == b'garbage'
    assert a.daemon.proc.poll() is None and b.daemon.proc.poll() is None


# --- (issue 14) cluster names containing ':' -----------------------------------------------------

def colon_instance(env: Env, name: str) -> tuple[Instance, dict[str, str]]:
    """An instance serving clusters `a` and `a:b` (same members); their control specs."""
    directory = env.tmp_path / name
    directory.mkdir()
    members = [member_xml('m%d' % (i + 1), m) for i, m in enumerate(env.members)]
    xml, spec_a = cluster_xml(members, name='a')
    other, spec_ab = cluster_xml(members, name='a:b')
    body = other[other.index('<rtp_cluster>'):other.index('</rtp_cluster_config>')]
    xml = xml.replace('</rtp_cluster_config>', body + '</rtp_cluster_config>')
    xml = xml.replace('<rtp_cluster_config>', '<rtp_cluster_config><redis><url>%s</url>'
                      '<instance_id>%s</instance_id><resync_interval>1</resync_interval>'
                      '</redis>' % (env.redis.url, name), 1)
    instance = Instance(name, Daemon.start(env.procs, directory, (xml, spec_a),
                                           wait_online=['m1', 'm2']))
    wait_for(lambda: env._ready(instance), 10, '%s connected to redis' % name)
    return instance, {'a': spec_a, 'a:b': spec_ab}


def per_cluster(instance: Instance, which: str = 'all') -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for call_id, fields in instance.sessions(which).items():
        found.setdefault(fields['cluster'], set()).add(call_id)
    return found


def test_clusters_a_and_a_colon_b_share_creates_deletes_and_resyncs(env):
    """Issue 14: keys of `a:b` were read as cluster `a`, deletes of `a:b` calls never reached
    the peer, every other resync dropped them, and call Q of `a:b` and call b:Q of `a` were
    one Redis key."""
    x, specs = colon_instance(env, 'x')
    y, _ = colon_instance(env, 'y')
    in_ab = ['Q%d' % i for i in range(20)]
    in_a = ['b:Q%d' % i for i in range(20)]             # the same keys as in_ab, before
    offers_ab = batch(specs['a:b'], ['U %s 127.0.0.1 %d ft-%s' % (c, 4000 + i, c)
                                     for i, c in enumerate(in_ab)])
    offers_a = batch(specs['a'], ['U %s 127.0.0.1 %d ft-%s' % (c, 5000 + i, c)
                                  for i, c in enumerate(in_a)])
    assert all(is_port_reply(r) for r in offers_ab + offers_a)
    expected = {'a': set(in_a), 'a:b': set(in_ab)}
    assert per_cluster(x, 'own') == expected
    wait_for(lambda: per_cluster(y, 'foreign') == expected, 5, 'y knows both clusters')
    client = env.redis.client()
    assert len(list(client.scan_iter(match='%s:s:x:*' % NS))) == 40
    for _ in range(3):                                   # resyncs keep everything
        y.resync_done()
        assert per_cluster(y, 'foreign') == expected
    # deletes of a:b calls through x reach y; the a calls stay
    assert batch(specs['a:b'], ['D %s ft-%s' % (c, c) for c in in_ab]) == ['0'] * 20
    wait_for(lambda: per_cluster(y, 'foreign') == {'a': set(in_a)}, 5,
             'y forgets the deleted a:b calls')
    y.resync_done()
    assert per_cluster(y, 'foreign') == {'a': set(in_a)}
    assert per_cluster(x, 'own') == {'a': set(in_a)}
    keys = sorted(k.decode('latin-1') for k in client.scan_iter(match='%s:s:x:*' % NS))
    assert keys == sorted('%s:s:x:a:%s' % (NS, c) for c in in_a)


# --- (issue 14) commands answered while the own keys load ----------------------------------------

def test_deletes_answered_while_the_own_keys_load_are_not_undone_by_the_load(env):
    """Issue 14: an instance restarted with many keys in Redis answers commands before it has
    loaded them; a D sent meanwhile goes out by broadcast, and the load must not bring the
    call back (it did: the instance and Redis then held calls the members no longer had)."""
    client = env.redis.client()
    total = 60000
    calls = ['ld-%d' % i for i in range(total)]
    pipe = client.pipeline(transaction=False)
    for i, call in enumerate(calls):          # a's keys, as a previous run of a left them
        pipe.hset(session_key(NS, 'a', 'test', call), mapping=Record(
            call, 'test', 'm1', 'udp:127.0.0.1:1', 'ft-' + call, '', 1.0, 1.0, 'a', 1,
            1).to_mapping())
        if i % 5000 == 4999:
            pipe.execute()
    pipe.execute()
    directory = env.tmp_path / 'a'
    directory.mkdir()
    members = [member_xml('m%d' % (i + 1), m) for i, m in enumerate(env.members)]
    xml, spec = cluster_xml(members)
    xml = xml.replace('<rtp_cluster_config>', '<rtp_cluster_config><redis><url>%s</url>'
                      '<instance_id>a</instance_id></redis>' % env.redis.url, 1)
    a = Instance('a', Daemon.start(env.procs, directory, (xml, spec)))   # answers V: go
    deleted = calls[:300]
    replies = batch(spec, ['D %s ft-%s' % (c, c) for c in deleted])
    assert len(replies) == len(deleted)

    def own() -> int:                          # the reactor is busy loading: be patient
        return int(a.admin('ls numsessions', timeout=30)[0].split(':')[1])
    assert own() < total, 'the load finished before the deletes: nothing was tested'
    wait_for(lambda: own() == total - len(deleted), 30, 'a loaded its own keys', interval=0.5)
    wait_for(lambda: not any(client.exists(session_key(NS, 'a', 'test', c)) for c in deleted),
             5, 'the keys of the deleted calls are gone')
    assert client.exists(session_key(NS, 'a', 'test', calls[-1]))
    for call in deleted[:3]:
        assert a.admin('ls session %s' % call, check=False) == [
            'ERROR: session "%s" not found' % call]


# --- (issue 14) ghost calls after a takeover -----------------------------------------------------

def test_a_third_instance_keeps_no_ghost_of_calls_taken_over_and_deleted(env):
    """Issue 14: after a died, b took its calls over and deleted them; c kept some of them as
    b's live calls (a takeover's record and the delete right behind it were written with the
    same (epoch, seq) when the D came while the writer was encoding the record's batch).
    This is the symptom end to end; it shows only when c reads between the two writes, which
    this test does not force: test_redis_writer forces the race itself.  b itself must not
    revive a call from a's stale key in a resync that runs before its tombstone is written
    (seen here: 64 calls came back before that was fixed)."""
    a, b, c = env.instance('a'), env.instance('b'), env.instance('c')
    calls = ['gh-%d' % i for i in range(1000)]
    create_calls(a, calls)
    wait_for(lambda: b.counts() == (0, 1000) and c.counts() == (0, 1000), 10,
             'b and c know the calls')
    a.kill()
    # re-offers take every call over while Redis stalls, so that b's writer has a backlog of
    # takeover records when it comes back; the deletes arrive while it writes them
    env.redis.pause()
    try:
        offers = batch(b.control, ['U %s 127.0.0.1 %d ft-%s' % (call, 4000 + i, call)
                                   for i, call in enumerate(calls)], window=64)
    finally:
        env.redis.pause(False)
    deletes = batch(b.control, ['D %s ft-%s tt-%s' % (call, call, call) for call in calls],
                    window=64)
    assert all(is_port_reply(r) for r in offers) and deletes == ['0'] * 1000
    assert b.counts() == (0, 0) and int(b.status()['takeovers']) == 1000
    wait_for(lambda: c.counts() == (0, 0), 5, 'c forgets every call')
    c.resync_done()
    assert c.counts() == (0, 0), 'a resync brought calls back'


def test_a_killed_peer_shows_dead_in_ls_peers_within_its_presence_ttl(env):
    """Issue 18: a peer is dead in `ls peers` within its presence TTL (3 s) after a SIGKILL,
    whether or not Redis has expired its presence key by then."""
    a, b = env.instance('a'), env.instance('b')

    def b_alive() -> str:
        line = next(line for line in a.admin('ls peers') if line.startswith('b '))
        return line.split(' alive=')[1].split(' ')[0]

    wait_for(lambda: b_alive() == 'yes', 5, 'a sees b alive')
    b.kill()
    took = wait_for(lambda: b_alive() == 'no', 10, 'a takes b for dead')
    assert took <= 3.0 + 1.5, 'b shown alive for %.1f s after it was killed' % took


def test_terminate_foreign_stays_terminated_through_resyncs(env):
    """Issue 16: `terminate foreign` used to be undone by the next resync.  The peer's
    records are not written; the calls are remembered as terminated until their owner
    deletes them, and a call with the same id after that is learnt again."""
    a, b = env.instance('a'), env.instance('b')
    calls = ['tf-%d' % i for i in range(20)]
    create_calls(a, calls)
    wait_for(lambda: b.counts() == (0, 20), 5, 'b knows the calls')
    assert b.admin('terminate foreign') == ['Terminated own: 0', 'Terminated foreign: 20']
    assert b.counts() == (0, 0)
    b.resync_done()
    b.resync_done()
    assert b.counts() == (0, 0), 'a resync brought terminated calls back'
    assert set(env.keys('a')) == set(calls) and a.counts() == (20, 0)   # the owner's untouched
    assert batch(a.control, ['D %s ft-%s tt-%s' % (c, c, c) for c in calls]) == ['0'] * 20
    wait_for(lambda: env.keys('a') == {}, 5, "a's keys deleted")
    create_calls(a, calls[:5])
    wait_for(lambda: b.counts() == (0, 5), 5, 'b learns the new calls with the old ids')
