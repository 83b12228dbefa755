"""Redis operations (issue 18): the <redis> tunables and the checks of Redis's configuration,
with a real rtp_cluster daemon and a real redis-server started (and stopped) by each test.

The daemon has a cluster without members (one scripted member where V must be answered): what is observed is its Redis side only, through
its log, `ls redis` on its admin socket, Redis itself, and the kernel's view of its sockets.
"""
from __future__ import annotations

import socket
import subprocess
import time

import pytest
import redis

from rtp_cluster.adapters.redis_sharing import Backoff, connection_kwargs
from rtp_cluster.core.config import RedisConfig
from rtp_cluster.core.keys import presence_key, session_key
from rtp_cluster.core.records import Record
from tests.support.daemon import Daemon, cluster_xml, member_xml
from tests.support.procs import start_scripted_member
from tests.support.redis_server import RedisServer

pytestmark = [pytest.mark.redis, pytest.mark.slow]

NOTIFY_ERROR = ('redis: notify-keyspace-events is "", missing K g h x e: peers will not learn '
                'of changed sessions (session sharing needs Kghxe); set '
                '"notify-keyspace-events Kghxe" in redis.conf or '
                '<configure_notifications>yes</configure_notifications>')


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError('timed out after %.1f s waiting for %s' % (timeout, what))
        time.sleep(0.05)


@pytest.fixture
def servers():
    """Starts RedisServer(extra=...) on demand; stops every one at the end."""
    started: list[RedisServer] = []

    def start(*extra: str) -> RedisServer:
        server = RedisServer(extra=list(extra))
        started.append(server)
        return server.start()
    yield start
    for server in started:
        server.pause(False)              # a SIGSTOPped server must see its SIGTERM
        server.stop()


def start_daemon(procs, tmp_path, server: RedisServer, redis_extra: str = '',
                 members: list[str] = ()) -> Daemon:
    xml, spec = cluster_xml(list(members))
    redis_xml = ('<redis><url>%s</url><instance_id>ops</instance_id>%s</redis>'
                 % (server.url, redis_extra))
    xml = xml.replace('<rtp_cluster_config>', '<rtp_cluster_config>' + redis_xml, 1)
    return Daemon.start(procs, tmp_path, (xml, spec))


def admin(daemon: Daemon, command: str) -> list[str]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(daemon.admin)
        s.sendall(command.encode() + b'\n')
        data = b''
        while not data.endswith(b'OK\n') and b'ERROR' not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    lines = data.decode().splitlines()
    assert lines[-1] == 'OK', lines
    return lines[:-1]


def ls_redis(daemon: Daemon) -> list[str]:
    return admin(daemon, 'ls redis')


def foreign_sessions(daemon: Daemon) -> int:
    lines = dict(line.split(':', 1) for line in admin(daemon, 'ls numsessions'))
    return int(lines['Current sessions foreign'])


def resynced(daemon: Daemon) -> bool:
    return dict(x.split(': ', 1) for x in ls_redis(daemon))['last resync'] != 'never'


def peer_writes_a_session(server: RedisServer, cid: str) -> None:
    """Peer "b" publishes a session, as its writer would (HSET + PEXPIRE)."""
    now = time.time()
    record = Record(cid, 'test', 'm1', 'udp:127.0.0.1:7001', 'ft', '', now, now, 'b', 1, 1,
                    'active')
    key = session_key('rtpc', 'b', 'test', cid)
    server.client().hset(key, mapping=record.to_mapping())
    server.client().pexpire(key, 60_000)


def checks_of(daemon: Daemon) -> list[str]:
    return [line for line in ls_redis(daemon) if line.startswith('server check')]


def test_redis_without_keyspace_notifications_is_a_clear_error_at_start(procs, tmp_path,
                                                                        servers):
    server = servers('--notify-keyspace-events', '')
    # a scripted member, so that V has a probed member to answer for
    member = member_xml('m1', protocol='udp', address='127.0.0.1:%d' % start_scripted_member(procs))
    daemon = start_daemon(procs, tmp_path, server, '<peers>b</peers>', [member])
    daemon.wait_log(NOTIFY_ERROR)
    wait_for(lambda: checks_of(daemon) != ['server checks: not run yet'], 5, 'the check')
    assert checks_of(daemon) == ['server check: ERROR ' + NOTIFY_ERROR[len('redis: '):]]
    assert server.client().config_get('notify-keyspace-events') == {
        'notify-keyspace-events': ''}                    # left as it was
    assert daemon.command('V').strip() == '20040107'     # and the daemon goes on
    wait_for(lambda: resynced(daemon), 5, 'the first resync')
    peer_writes_a_session(server, 'unseen')
    time.sleep(1.5)
    assert foreign_sessions(daemon) == 0                 # what the error is about
    assert dict(x.split(': ', 1) for x in ls_redis(daemon))['events'] == '0'


def test_configure_notifications_sets_them_with_config_set(procs, tmp_path, servers):
    server = servers('--notify-keyspace-events', 'Kh')
    daemon = start_daemon(procs, tmp_path, server,
                          '<configure_notifications>yes</configure_notifications>'
                          '<peers>b</peers>')
    daemon.wait_log('redis: notify-keyspace-events set to "')
    flags = server.client().config_get('notify-keyspace-events')['notify-keyspace-events']
    assert set('Kghxe') <= set(flags.replace('A', 'g$lshzxet'))
    assert checks_of(daemon) == ['server check: INFO notify-keyspace-events set to "%s" '
                                 '(<configure_notifications>)' % flags]
    assert 'missing' not in daemon.log()
    wait_for(lambda: resynced(daemon), 5, 'the first resync')
    peer_writes_a_session(server, 'seen')               # learnt from its keyspace event
    wait_for(lambda: foreign_sessions(daemon) == 1, 1.5, 'the peer session')
    assert int(dict(x.split(': ', 1) for x in ls_redis(daemon))['events']) > 0


def test_checks_run_again_after_a_reconnect(procs, tmp_path, servers):
    """A restarted Redis (here: one that lost its notification setting) is checked again."""
    server = servers()
    daemon = start_daemon(procs, tmp_path, server)
    wait_for(lambda: checks_of(daemon) == ['server checks: ok'], 5, 'a clean check')
    server.client().config_set('notify-keyspace-events', '')
    server.client().client_kill_filter(_type='normal', skipme=True)   # drop every connection
    daemon.wait_log(NOTIFY_ERROR)
    assert checks_of(daemon)[0].startswith('server check: ERROR notify-keyspace-events is ""')
    assert 'redis: the configuration checks pass now' not in daemon.log()
    server.client().config_set('notify-keyspace-events', 'KA')     # the operator fixes it
    server.client().client_kill_filter(_type='normal', skipme=True)
    daemon.wait_log('redis: the configuration checks pass now')
    assert checks_of(daemon) == ['server checks: ok']


def test_config_disabled_says_the_check_could_not_run_and_goes_on(procs, tmp_path, servers):
    server = servers('--rename-command', 'CONFIG', '')
    daemon = start_daemon(procs, tmp_path, server,
                          '<configure_notifications>yes</configure_notifications>')
    daemon.wait_log('redis: could not check the Redis configuration (CONFIG GET '
                    "notify-keyspace-events: ERR unknown command 'CONFIG'")
    (line,) = checks_of(daemon)
    assert line.startswith('server check: WARN could not check the Redis configuration')
    assert line.endswith('make sure Redis publishes Kghxe keyspace events and does not evict '
                         'keys')
    status = dict(line.split(': ', 1) for line in ls_redis(daemon))
    wait_for(lambda: dict(x.split(': ', 1) for x in ls_redis(daemon))['last resync'] != 'never',
             10, 'sharing goes on (a resync)')
    assert status['state'] == 'connected'
    wait_for(lambda: server.client().hget(presence_key('rtpc', 'ops'), 'run_token'), 5,
             'the presence record written')


def test_an_evicting_maxmemory_policy_is_a_warning(procs, tmp_path, servers):
    server = servers('--maxmemory-policy', 'allkeys-lru')
    daemon = start_daemon(procs, tmp_path, server)
    text = ('maxmemory-policy is "allkeys-lru", not noeviction: a full Redis may evict live '
            'sessions; set noeviction')
    daemon.wait_log('redis: ' + text)
    assert checks_of(daemon) == ['server check: WARN ' + text]


def keepalive_timers(port: int, pid: int) -> list[str]:
    """The timer field `ss` shows for each of `pid`'s TCP connections to `port`."""
    out = subprocess.run(['ss', '-tnop', 'state', 'established', 'dport = :%d' % port],
                         capture_output=True, text=True, timeout=10).stdout
    return [line.split('timer:(')[1].split(',')[0] if 'timer:(' in line else '-'
            for line in out.splitlines() if 'pid=%d,' % pid in line]


def test_tunables_are_shown_and_applied(procs, tmp_path, servers):
    server = servers()
    daemon = start_daemon(procs, tmp_path, server, (
        '<command_timeout_ms>200</command_timeout_ms><connect_timeout_ms>300'
        '</connect_timeout_ms><tcp_keepalive>7</tcp_keepalive><reconnect_min_ms>50'
        '</reconnect_min_ms><reconnect_max_ms>400</reconnect_max_ms>'
        '<degraded_after>2</degraded_after>'))
    assert 'tunables: command_timeout_ms=200 connect_timeout_ms=300 tcp_keepalive=7 ' \
           'reconnect_min_ms=50 reconnect_max_ms=400 degraded_after=2' in ls_redis(daemon)
    # keepalive on the writer's, the subscriber's and the reader's connection
    wait_for(lambda: keepalive_timers(server.port, daemon.proc.pid).count('keepalive') >= 3,
             10, 'three connections with keepalive')
    server.pause()                  # hung: the presence write gets no reply
    started = time.monotonic()
    daemon.wait_log('redis: write failed, serving from memory (degraded): ', timeout=5)
    took = time.monotonic() - started
    server.pause(False)
    assert 'no reply within 0.2 s' in daemon.log()
    assert 'no reply within 1 s' not in daemon.log()
    assert took < 2.5, took         # presence tick (1 s) + two errors of 0.2-0.3 s
    wait_for(lambda: dict(x.split(': ', 1) for x in ls_redis(daemon))['state'] == 'connected',
             5, 'connected again')


def test_the_redis_py_threads_use_the_tunables(servers):
    """Subscriber and reader (redis-py): command timeout, keepalive and back-off bounds."""
    server = servers()
    config = RedisConfig(server.url, instance_id='x', command_timeout_ms=200,
                         connect_timeout_ms=300, tcp_keepalive=9, reconnect_min_ms=50,
                         reconnect_max_ms=300)
    kwargs = connection_kwargs(config)
    assert kwargs['socket_keepalive'] is True
    assert kwargs['socket_keepalive_options'][socket.TCP_KEEPIDLE] == 9
    assert kwargs['socket_connect_timeout'] == 0.3
    client = redis.Redis.from_url(config.url, **kwargs)
    assert client.ping()
    server.pause()
    started = time.monotonic()
    with pytest.raises(redis.TimeoutError):
        client.ping()
    assert 0.15 < time.monotonic() - started < 1.0
    server.pause(False)
    client.close()
    backoff = Backoff(config)
    assert [backoff.next() for _ in range(5)] == [0.05, 0.1, 0.2, 0.3, 0.3]
    backoff.reset()
    assert backoff.next() == 0.05
