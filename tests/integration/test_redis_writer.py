"""The session writer (rtp_cluster/redis_writer.py).

First without sockets: a fake clock and a scripted Redis on an in-memory transport, for
the timing and failure logic (coalescing, one transaction in flight, put-back on failure,
timeouts, reconnect back-off, barriers, presence).  Then against a real redis-server on a
private reactor: authentication with a password file and an ACL user, TTLs, any byte in a
key, and a frozen server.
"""
from __future__ import annotations

import time

import pytest
from twisted.internet import defer, error, task
from twisted.internet.testing import StringTransport
from twisted.logger import Logger
from twisted.python.failure import Failure

from rtp_cluster.core.config import RedisConfig
from rtp_cluster.adapters.redis_writer import (COMMAND_TIMEOUT, ENCODE_SLICE, FLUSH_INTERVAL, MAX_BACKOFF,
                                      MIN_BACKOFF,
                                      TombstoneWrite,
                                      WRITE_BATCH, RedisWriter, database_number,
                                      describe_failure, handshake_commands)
from rtp_cluster.core.resp import ReplyParser, encode
from rtp_cluster.core.records import Record, decode_record
from rtp_cluster.core.sharing import SharedSessionStore, Tombstone
from tests.support.redis_server import RedisServer


# --- a scripted Redis on an in-memory transport -------------------------------------------

class FakeTransport(StringTransport):
    def __init__(self, proto) -> None:
        super().__init__()
        self.proto = proto
        self.closed = False

    def _close(self, reason) -> None:
        if not self.closed:
            self.closed = True
            self.proto.connectionLost(Failure(reason))

    def loseConnection(self) -> None:
        self._close(error.ConnectionDone())

    def abortConnection(self) -> None:
        self._close(error.ConnectionAborted())


_WRITES = (b'HSET', b'PEXPIRE', b'DEL', b'EVAL')
_READONLY = b"-READONLY You can't write against a read only replica.\r\n"


class FakeRedis:
    """Answers what the writer sends, as Redis would, unless told to hold replies back.

    `data` is the keyspace ({key: {field: value}}), `ttl` the PEXPIREs, `requests` every
    command received; `fail_exec` makes EXEC answer an error in its first result.
    """

    def __init__(self) -> None:
        self.data: dict[bytes, dict[bytes, bytes]] = {}
        self.ttl: dict[bytes, int] = {}
        self.requests: list[list[bytes]] = []
        self.connections: list[FakeTransport] = []
        self.refuse: Exception | None = None
        self.auto = True
        self.fail_exec = False
        self.password = None
        self.run_id = b'run-1'
        self.role = b'master'                  # b'slave': writes are answered READONLY
        self._parsers: dict[int, ReplyParser] = {}
        self._queued: dict[int, list | None] = {}

    # the endpoint the writer connects through
    def connect(self, factory):
        if self.refuse is not None:
            return defer.fail(self.refuse)
        proto = factory.buildProtocol(None)
        transport = FakeTransport(proto)
        proto.makeConnection(transport)
        self.connections.append(transport)
        return defer.succeed(proto)

    @property
    def transport(self) -> FakeTransport:
        return self.connections[-1]

    def pump(self) -> None:
        """Answer everything sent so far on the live connection."""
        transport = self.transport
        data = transport.value()
        transport.clear()
        parser = self._parsers.setdefault(id(transport), ReplyParser())
        parser.feed(data)
        out = b''.join(self._answer(id(transport), cmd) for cmd in parser.replies())
        if out and not transport.closed:
            transport.proto.dataReceived(out)

    def _answer(self, conn: int, cmd: list[bytes]) -> bytes:
        self.requests.append(cmd)
        name = cmd[0].upper()
        queued = self._queued.get(conn)
        if name == b'MULTI':
            self._queued[conn] = []
            return b'+OK\r\n'
        if name == b'EXEC':
            results = [self._run(c) for c in queued or []]
            self._queued[conn] = None
            if self.fail_exec and results:
                results[0] = b'-OOM command not allowed\r\n'
            return b'*%d\r\n' % len(results) + b''.join(results)
        if queued is not None:
            if self.role != b'master' and name in _WRITES:   # refused when queued, as Redis
                self._queued[conn] = [[b'EXECABORT']]
                return _READONLY
            queued.append(cmd)
            return b'+QUEUED\r\n'
        return self._run(cmd)

    def _run(self, cmd: list[bytes]) -> bytes:
        name = cmd[0].upper()
        if name == b'AUTH':
            return b'+OK\r\n' if cmd[-1] == self.password else b'-WRONGPASS invalid password\r\n'
        if name in (b'SELECT', b'CLIENT'):
            return b'+OK\r\n'
        if name == b'EXECABORT':
            return b'-EXECABORT Transaction discarded because of previous errors.\r\n'
        if name == b'INFO' and cmd[1:] == [b'replication']:
            text = b'# Replication\r\nrole:' + self.role + b'\r\n'
            return b'$%d\r\n%s\r\n' % (len(text), text)
        if name == b'INFO':
            text = b'# Server\r\nredis_version:7.0\r\nrun_id:' + self.run_id + b'\r\n'
            return b'$%d\r\n%s\r\n' % (len(text), text)
        if self.role != b'master' and name in _WRITES:
            return _READONLY
        if name == b'HSET':
            fields = self.data.setdefault(cmd[1], {})
            fields.update(zip(cmd[2::2], cmd[3::2]))
            return b':1\r\n'
        if name == b'HGET':
            value = self.data.get(cmd[1], {}).get(cmd[2])
            return b'$-1\r\n' if value is None else b'$%d\r\n%s\r\n' % (len(value), value)
        if name == b'PEXPIRE':
            self.ttl[cmd[1]] = int(cmd[2])
            return b':1\r\n'
        if name == b'DEL':
            existed = self.data.pop(cmd[1], None) is not None
            return b':%d\r\n' % existed
        if name == b'EVAL':                    # the tombstone script: recorded, not run
            return b':1\r\n'
        return b'-ERR unknown command\r\n'

    def commands(self, name: bytes) -> list[list[bytes]]:
        return [c for c in self.requests if c[0].upper() == name]


class Harness:
    def __init__(self, url='redis://127.0.0.1:6379/0', password=None, start=True,
                 check_role=False, **tunables) -> None:
        self.clock = task.Clock()
        self.redis = FakeRedis()
        self.events: list[tuple] = []
        self.config = RedisConfig(url, instance_id='a', session_ttl=100, **tunables)
        self.writer = RedisWriter(
            self.config, self.clock, on_ok=lambda: self.events.append(('ok',)),
            on_failed=lambda why: self.events.append(('failed', why)),
            on_server=lambda run_id, token: self.events.append(('server', run_id, token)),
            on_not_master=lambda why: self.events.append(('not master', why)),
            endpoint_factory=lambda: self.redis, password=lambda: password,
            check_role=check_role)
        if start:
            self.start()

    def start(self) -> None:
        self.writer.start()
        self.redis.pump()                      # the handshake

    def step(self, seconds: float = FLUSH_INTERVAL) -> None:
        """Let `seconds` pass, answering whatever the writer sent meanwhile."""
        self.clock.advance(seconds)
        if self.redis.auto and self.redis.connections and not self.redis.transport.closed:
            self.redis.pump()
            self.clock.advance(0)
            self.redis.pump()

    def failures(self) -> list[str]:
        return [e[1] for e in self.events if e[0] == 'failed']


def mapping(**fields) -> dict:
    return {'state': 'active', **fields}


# --- without sockets ---------------------------------------------------------------------

def test_changes_coalesce_and_the_record_is_built_once_when_written():
    h = Harness()
    built = []

    def thunk(version):
        def build():
            built.append(version)
            return mapping(version=str(version))
        return build
    for version in range(3):
        h.writer.queue('k1', thunk(version))
    h.writer.queue('k2', lambda: mapping())
    h.writer.queue('k2', None)                 # deleted before it was ever written
    assert h.redis.commands(b'MULTI') == []    # nothing before the interval
    h.step()
    assert built == [2]                        # only the latest state, built once
    assert h.redis.data == {b'k1': {b'state': b'active', b'version': b'2'}}
    assert h.redis.ttl == {b'k1': 100000}
    assert [c[1] for c in h.redis.commands(b'DEL')] == [b'k2']
    assert len(h.redis.commands(b'EXEC')) == 1 and h.writer.depth == 0
    assert ('ok',) in h.events and h.failures() == []


def _published(h: Harness, key: bytes) -> list[Record]:
    """Every record written to `key`, in order: HSETs and tombstone scripts alike."""
    out = []
    for cmd in h.redis.requests:
        name = cmd[0].upper()
        if name == b'HSET' and cmd[1] == key:
            fields = cmd[2:]
        elif name == b'EVAL' and cmd[3] == key:
            fields = cmd[3 + int(cmd[2]) + 1:]      # after the keys and the TTL
        else:
            continue
        raw = dict(zip(fields[0::2], fields[1::2]))
        out.append(decode_record(key.decode('latin-1'), 'rtpc', raw))
    return out


def test_a_delete_while_the_batch_is_encoded_cannot_leave_a_ghost_after_a_takeover():
    """Issue 14: after a takeover, the record and the tombstone that follows it are two
    writes; the record must carry the state it had when its batch was taken, or a D landing
    between two encode slices gives both the same (epoch, seq) and the tombstone does not
    outrank the active record on the peers that read them."""
    h = Harness()

    def write(key: str, op) -> None:
        if isinstance(op, Tombstone):
            op = TombstoneWrite(op, ['rtpc:s:old:test:' + key.rsplit(':', 1)[1]])
        h.writer.queue(key, op)
    store = SharedSessionStore('test', 'a', 'rtpc', write)
    for i in range(ENCODE_SLICE * 2):              # the call sits in the third slice
        store.bind('other%d' % i, 'm1', 'ft', address='udp:127.0.0.1:7001')
    store.apply_record(Record('ghost', 'test', 'm1', 'udp:127.0.0.1:7001', 'ft', '', 1.0, 1.0,
                              'old', 1, 3))
    assert store.lookup('ghost') == 'm1'           # taken over: epoch 2, seq 1
    sent_at_d = []

    def delete() -> None:                          # the D, between two encode slices
        sent_at_d.append(h.redis.transport.value())
        store.unbind('ghost')
    # due with the flush, after it: runs once the first slice is encoded, before the next
    h.clock.callLater(FLUSH_INTERVAL, delete)
    for _ in range(5):
        h.step()
    assert sent_at_d == [b'']                      # the transaction was not complete yet
    active, tombstone = _published(h, b'rtpc:s:a:test:ghost')
    assert (active.state, tombstone.state) == ('active', 'deleted')
    assert (active.epoch, active.seq) == (2, 1)
    assert tombstone.order > active.order          # every peer drops the call


def test_one_transaction_in_flight_and_a_backlog_goes_out_in_batches_at_once():
    h = Harness()
    h.redis.auto = False
    for i in range(WRITE_BATCH * 2 + 10):
        h.writer.queue('k%d' % i, lambda: mapping())
    h.clock.advance(FLUSH_INTERVAL)
    h.clock.advance(FLUSH_INTERVAL * 5)        # no reply yet: nothing more is sent
    h.redis.pump()
    assert len(h.redis.commands(b'MULTI')) == 1 and len(h.redis.commands(b'HSET')) == WRITE_BATCH
    h.clock.advance(0)                         # a full batch waiting goes out at once
    h.redis.pump()
    h.clock.advance(0)
    h.redis.pump()
    assert len(h.redis.commands(b'HSET')) == WRITE_BATCH * 2
    h.clock.advance(FLUSH_INTERVAL)            # the rest is no backlog: it may coalesce
    h.redis.pump()
    assert len(h.redis.commands(b'HSET')) == WRITE_BATCH * 2 + 10
    assert len(h.redis.commands(b'EXEC')) == 3 and h.writer.depth == 0


def test_error_reply_puts_the_batch_back_and_a_newer_change_of_a_key_wins():
    h = Harness()
    h.redis.auto = False
    h.redis.fail_exec = True
    h.writer.queue('k1', lambda: mapping(v='old'))
    h.writer.queue('k2', lambda: mapping(v='2'))
    h.clock.advance(FLUSH_INTERVAL)            # the transaction is on its way
    h.writer.queue('k1', None)                 # k1 deleted while it is in flight
    h.redis.pump()                             # EXEC answers with an error
    assert h.failures() == ['write failed: OOM command not allowed']
    assert h.writer.queued('k1') is None       # the delete stayed, the old write did not win
    assert callable(h.writer.queued('k2'))
    h.redis.fail_exec = False
    h.redis.auto = True
    h.step(MAX_BACKOFF)
    assert h.redis.data.get(b'k2') == {b'state': b'active', b'v': b'2'}
    assert b'k1' not in h.redis.data and h.writer.depth == 0
    assert h.events[-1] == ('ok',)


def test_no_reply_within_the_timeout_drops_the_connection_keeps_the_batch_and_reconnects():
    h = Harness()
    h.redis.auto = False
    h.writer.queue('k1', lambda: mapping())
    h.clock.advance(FLUSH_INTERVAL)
    first = h.redis.transport
    h.clock.advance(COMMAND_TIMEOUT)           # Redis frozen: no reply
    assert first.closed
    assert h.failures() == ['no reply within %g s' % COMMAND_TIMEOUT]
    assert callable(h.writer.queued('k1'))     # back in the map, not lost
    h.clock.advance(MIN_BACKOFF)               # reconnect after the back-off
    assert len(h.redis.connections) == 2
    h.redis.auto = True
    h.redis.pump()                             # handshake
    h.step(0)
    assert b'k1' in h.redis.data and h.writer.depth == 0


def test_the_configured_command_timeout_and_back_off_bounds_apply():
    h = Harness(start=False, command_timeout_ms=250, reconnect_min_ms=40, reconnect_max_ms=150)
    h.writer.start()
    h.redis.auto = False                       # the handshake is never answered
    h.clock.advance(0.249)
    assert h.failures() == []
    h.clock.advance(0.001)
    assert h.failures() == ['no reply within 0.25 s']
    delays = []
    for _ in range(4):
        before = h.clock.seconds()
        h.clock.advance(h.writer._retry_call.getTime() - before)    # reconnects
        delays.append(round(h.clock.seconds() - before, 3))
        h.clock.advance(0.25)                                        # times out again
    assert delays == [0.04, 0.08, 0.15, 0.15]


def test_a_check_command_gets_its_reply_even_an_error():
    h = Harness()
    replies = []
    h.writer.command('CONFIG', 'GET', 'maxmemory-policy').addCallback(replies.append)
    h.redis.pump()
    assert [str(r) for r in replies] == ['ERR unknown command']
    h.writer.stop()
    failed = []
    h.writer.command('PING').addErrback(failed.append)
    assert failed and 'not connected' in str(failed[0].value)


def test_garbage_from_the_server_drops_the_connection_and_nothing_is_lost():
    h = Harness()
    h.redis.auto = False
    h.writer.queue('k1', lambda: mapping())
    h.clock.advance(FLUSH_INTERVAL)
    h.redis.transport.proto.dataReceived(b'?this is not redis\r\n')
    assert h.redis.transport.closed
    assert h.failures() and h.failures()[-1].startswith('not a Redis reply')
    assert callable(h.writer.queued('k1'))


def test_reply_nobody_asked_for_drops_the_connection():
    h = Harness()
    h.redis.transport.proto.dataReceived(b'+OK\r\n')
    assert h.redis.transport.closed and h.failures() == ['a reply nobody asked for']


def test_refused_connections_back_off_exponentially_up_to_the_maximum():
    h = Harness(start=False)
    h.redis.refuse = error.ConnectionRefusedError('refused')
    h.writer.start()
    attempts = [h.clock.seconds()]
    delays = []
    for _ in range(10):
        before = len(h.failures())
        h.clock.advance(h.writer._retry_call.getTime() - h.clock.seconds())
        assert len(h.failures()) == before + 1
        delays.append(round(h.clock.seconds() - attempts[-1], 3))
        attempts.append(h.clock.seconds())
    assert delays[:4] == [MIN_BACKOFF, MIN_BACKOFF * 2, MIN_BACKOFF * 4, MIN_BACKOFF * 8]
    assert max(delays) == MAX_BACKOFF and delays[-1] == MAX_BACKOFF
    assert 'refused' in h.failures()[0]
    h.redis.refuse = None                      # Redis is back
    h.clock.advance(MAX_BACKOFF)
    h.redis.pump()
    h.writer.queue('k', lambda: mapping())
    h.step()
    assert b'k' in h.redis.data


def test_barrier_fires_only_when_what_was_queued_before_it_is_written():
    h = Harness()
    h.redis.auto = False
    fired = []
    h.writer.queue('k1', lambda: mapping())
    h.writer.when_flushed(lambda: fired.append('b1'))
    h.writer.queue('k2', lambda: mapping())    # after the barrier: not waited for
    h.clock.advance(0)
    h.redis.pump()                             # k1 and k2 written in one transaction
    assert fired == ['b1']
    h.writer.queue('k3', lambda: mapping())
    h.writer.when_flushed(lambda: fired.append('b2'))
    h.redis.fail_exec = True
    h.clock.advance(0)
    h.redis.pump()                             # failed: b2 must wait for the retry
    assert fired == ['b1']
    h.redis.fail_exec = False
    h.redis.auto = True
    h.step(MAX_BACKOFF)
    assert fired == ['b1', 'b2']


def test_barrier_with_nothing_queued_fires_once_connected():
    h = Harness(start=False)
    fired = []
    h.writer.when_flushed(lambda: fired.append(1))
    h.writer.start()
    assert fired == []                         # not connected yet (handshake pending)
    h.redis.pump()
    h.clock.advance(0)
    assert fired == [1]


def test_presence_write_reports_run_id_and_the_token_it_replaced():
    h = Harness()
    h.writer.write_presence('ns:n:a', {'run_token': 'mine', 'state': 'ok'}, 3000)
    h.step(0)
    assert h.events[-1] == ('server', 'run-1', None)
    assert h.redis.data[b'ns:n:a'] == {b'run_token': b'mine', b'state': b'ok'}
    assert h.redis.ttl[b'ns:n:a'] == 3000
    h.redis.data[b'ns:n:a'][b'run_token'] = b'theirs'     # someone else writes our record
    h.redis.run_id = b'run-2'
    h.writer.write_presence('ns:n:a', {'run_token': 'mine', 'state': 'ok'}, 3000)
    h.step(0)
    assert h.events[-1] == ('server', 'run-2', 'theirs')


def test_refresh_sends_pexpires_a_slice_per_transaction():
    h = Harness()
    keys = ['r%d' % i for i in range(2500)]
    h.writer.refresh(keys)
    for _ in range(5):
        h.step()
    assert sorted(c[1] for c in h.redis.commands(b'PEXPIRE')) == sorted(k.encode() for k in keys)
    assert len(h.redis.commands(b'EXEC')) == 3 and h.writer.depth == 0


def test_queue_before_start_is_kept_and_written_after_connecting():
    h = Harness(start=False)
    h.writer.queue('early', lambda: mapping())
    assert h.clock.getDelayedCalls() == []     # nothing scheduled before start()
    h.start()
    h.step(0)
    assert b'early' in h.redis.data


def test_stop_closes_the_connection_and_cancels_timers():
    h = Harness()
    h.writer.queue('k', lambda: mapping())
    h.writer.stop()
    assert h.redis.transport.closed and h.clock.getDelayedCalls() == []
    assert h.failures() == []                  # a requested stop is not a failure


def test_a_write_answered_readonly_leaves_the_node_and_nothing_is_lost():
    h = Harness()
    h.writer.queue('k1', lambda: mapping())
    h.redis.role = b'slave'                    # demoted under the open connection
    h.step()
    assert h.redis.transport.closed            # left at once, not retried on the replica
    assert h.events[-2][0] == 'not master' and 'READONLY' in h.events[-2][1]
    assert h.failures()[-1].startswith('write failed: READONLY')
    assert h.writer.depth == 1 and h.redis.data == {}
    h.redis.role = b'master'                   # the sentinels (here: the test) fixed it
    h.step(MIN_BACKOFF)
    h.redis.pump()
    h.step()
    assert h.redis.data == {b'k1': {b'state': b'active'}} and h.writer.depth == 0


def test_a_replica_is_refused_at_connect_when_the_role_is_checked():
    h = Harness(check_role=True, start=False)
    h.redis.role = b'slave'
    h.writer.queue('k1', lambda: mapping())
    h.start()
    assert h.events[:2] == [('not master', 'the node is a replica (role:slave), not the master'),
                            ('failed', 'the node is a replica (role:slave), not the master')]
    assert h.redis.transport.closed and h.writer.conn is None
    assert [c for c in h.redis.requests if c[0] == b'INFO'] == [[b'INFO', b'replication']]
    h.redis.role = b'master'
    h.step(MIN_BACKOFF)
    h.redis.pump()
    h.step()
    assert h.redis.data == {b'k1': {b'state': b'active'}}


def test_a_master_switch_reconnects_at_once_without_waiting_out_the_back_off():
    h = Harness(reconnect_min_ms=2000, reconnect_max_ms=8000)
    h.writer.master_switched('the sentinels switched the master to 127.0.0.1:6380')
    assert h.redis.transport.closed
    assert ('not master', 'the sentinels switched the master to 127.0.0.1:6380') in h.events
    h.step(2.0)                                # the shortest back-off, not a doubled one
    assert len(h.redis.connections) == 2
    h.redis.refuse = error.ConnectionRefusedError()
    h.redis.pump()
    h.writer.conn.transport.abortConnection()  # lost; the retry waits 2 s, then 4 s ...
    h.step(2.0)
    assert len(h.redis.connections) == 2
    h.redis.refuse = None
    h.writer.master_switched('switched again')     # ... but a switch connects now
    assert len(h.redis.connections) == 3


def test_handshake_authenticates_selects_and_names_the_connection():
    assert handshake_commands(RedisConfig('redis://127.0.0.1:1/3'), 'pw', 'rtpc-a') == [
        encode('AUTH', 'pw'), encode('SELECT', 3), encode('CLIENT', 'SETNAME', 'rtpc-a')]
    assert handshake_commands(RedisConfig('redis://alice@127.0.0.1:1'), 'pw', 'n')[0] == encode(
        'AUTH', 'alice', 'pw')
    assert handshake_commands(RedisConfig('unix:///run/redis.sock?db=2'), None, 'n') == [
        encode('SELECT', 2), encode('CLIENT', 'SETNAME', 'n')]
    assert database_number('redis://h:1') == 0 and database_number('rediss://h:1/7') == 7


def test_wrong_password_is_reported_and_retried_nothing_written():
    h = Harness(password='wrong', start=False)
    h.redis.password = b'right'
    h.writer.queue('k', lambda: mapping())
    h.start()
    assert h.failures() == ['WRONGPASS invalid password']
    assert h.redis.transport.closed and h.redis.data == {}
    assert h.writer._retry_call is not None


def test_a_record_that_cannot_be_built_costs_that_key_only_and_is_logged():
    h = Harness()
    logged = []
    h.writer.log = Logger(observer=logged.append)
    h.writer.queue('bad', lambda: 1 / 0)
    h.writer.queue('good', lambda: mapping())
    h.step()
    assert b'good' in h.redis.data and b'bad' not in h.redis.data
    assert [e['key'] for e in logged if e.get('log_failure')] == [b'bad']
    assert h.failures() == []


def test_failure_texts_say_what_to_fix():
    class VerificationError(Exception):
        pass
    assert 'name mismatch' in describe_failure(Failure(VerificationError('x')))
    ssl_text = "[('SSL routines', '', 'certificate verify failed')]"
    assert describe_failure(Failure(Exception(ssl_text))).startswith(
        'TLS: certificate verify failed (untrusted')
    assert describe_failure(Failure(error.ConnectionDone())) == 'connection closed by Redis'


# --- against a real redis-server ------------------------------------------------------------

@pytest.fixture
def acl_redis():
    server = RedisServer(extra=['--requirepass', 'top secret',
                                '--user', 'rtpc', 'on', '>rtpc-pw', '~*', '+@all'],
                         password='top secret').start()
    try:
        yield server
    finally:
        server.stop()


def real_writer(rt, url: str, password_file: str | None = None):
    config = RedisConfig(url, instance_id='w', session_ttl=60, password_file=password_file)
    events: list[tuple] = []
    from rtp_cluster.adapters.redis_sharing import read_password
    writer = RedisWriter(config, rt.reactor, on_ok=lambda: events.append(('ok',)),
                         on_failed=lambda why: events.append(('failed', why)),
                         on_server=lambda *a: events.append(('server',) + a),
                         password=lambda: read_password(config), name='rtpc-test')
    return writer, events


def wait_until(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, 'timed out'
        time.sleep(0.02)


@pytest.mark.redis
@pytest.mark.parametrize('user', ['', 'rtpc@'])
def test_real_redis_password_file_acl_user_ttl_and_any_byte(rt, acl_redis, tmp_path, user):
    password = tmp_path / 'pw'
    password.write_text(('rtpc-pw' if user else 'top secret') + '\n')
    writer, events = real_writer(rt, 'redis://%s127.0.0.1:%d/2' % (user, acl_redis.port),
                                 str(password))
    key = 'rtpc:s:w:test:\x85\xa0\xff call'
    rt.call(writer.start)
    rt.call(writer.queue, key, lambda: {'cid': '\x85\xa0\xff call', 'state': 'active'})
    client = acl_redis.client(db=2)
    wait_until(lambda: client.exists(key.encode('latin-1')))
    assert client.hgetall(key.encode('latin-1')) == {b'cid': b'\x85\xa0\xff call',
                                                     b'state': b'active'}
    assert 0 < client.pttl(key.encode('latin-1')) <= 60000
    names = [c['name'] for c in client.client_list()]
    assert 'rtpc-test' in names
    rt.call(writer.queue, key, None)
    wait_until(lambda: not client.exists(key.encode('latin-1')))
    assert not [e for e in events if e[0] == 'failed']
    rt.call(writer.stop)


@pytest.mark.redis
def test_real_redis_wrong_password_is_a_clear_failure(rt, acl_redis, tmp_path):
    password = tmp_path / 'pw'
    password.write_text('nope')
    writer, events = real_writer(rt, 'redis://127.0.0.1:%d' % acl_redis.port, str(password))
    rt.call(writer.start)
    rt.call(writer.queue, 'k', lambda: {'state': 'active'})
    wait_until(lambda: any(e[0] == 'failed' for e in events))
    failed = [e[1] for e in events if e[0] == 'failed']
    assert 'WRONGPASS' in failed[0] or 'invalid' in failed[0], failed
    assert acl_redis.client().dbsize() == 0
    rt.call(writer.stop)


@pytest.mark.redis
def test_real_redis_frozen_then_thawed_every_change_arrives(rt, tmp_path):
    server = RedisServer().start()
    try:
        writer, events = real_writer(rt, server.url)
        rt.call(writer.start)
        rt.call(writer.queue, 'before', lambda: {'state': 'active'})
        client = server.client()
        wait_until(lambda: client.exists('before'))
        server.pause()
        try:
            for i in range(50):
                rt.call(writer.queue, 'frozen-%d' % i, lambda: {'state': 'active'})
            rt.call(writer.queue, 'before', None)
            wait_until(lambda: any(e[0] == 'failed' for e in events))
            assert [e[1] for e in events if e[0] == 'failed'][0] == (
                'no reply within %g s' % COMMAND_TIMEOUT)
        finally:
            server.pause(False)
        wait_until(lambda: rt.call(lambda: writer.depth) == 0 and client.dbsize() == 50, 20)
        assert not client.exists('before')
        assert events[-1] == ('ok',)
        rt.call(writer.stop)
    finally:
        server.stop()


@pytest.mark.redis
def test_real_redis_tombstone_lives_as_long_as_the_longest_older_key(rt):
    """A deleted taken-over call: its tombstone must outrank the older keys other instances
    still hold for the call, and only while they live (not the whole session TTL)."""
    server = RedisServer().start()
    try:
        writer, events = real_writer(rt, server.url)          # session TTL 60 s
        client = server.client()
        record = {'cid': 'c', 'state': 'deleted', 'epoch': '2'}
        client.hset('old:short', 'x', '1')
        client.pexpire('old:short', 5000)
        client.hset('old:long', 'x', '1')
        client.pexpire('old:long', 20000)
        client.hset('old:forever', 'x', '1')                  # no TTL: count the session TTL
        client.hset('mine:gone', 'stale', '1')                # a tombstone nobody needs
        rt.call(writer.start)
        cases = {'mine:two': ['old:short', 'old:long', 'old:missing'],
                 'mine:forever': ['old:forever'],
                 'mine:gone': ['old:missing', 'old:missing-too']}
        for key, shadows in cases.items():
            rt.call(writer.queue, key, TombstoneWrite(lambda: record, shadows))
        wait_until(lambda: client.exists('mine:two') and not client.exists('mine:gone'))
        assert 20000 < client.pttl('mine:two') <= 21000
        assert 60000 < client.pttl('mine:forever') <= 61000
        assert client.hgetall('mine:two') == {k.encode(): v.encode() for k, v in record.items()}
        assert not [e for e in events if e[0] == 'failed']
        rt.call(writer.stop)
    finally:
        server.stop()


def test_a_batch_is_encoded_in_slices_with_the_reactor_free_in_between():
    """Between two slices the reactor returns to its sockets (a callLater(0) per slice); the
    transaction goes out once, when the last slice is encoded."""
    h = Harness()
    h.redis.auto = False
    h.redis.transport.clear()
    for i in range(ENCODE_SLICE * 3):
        h.writer.queue('k%d' % i, lambda: mapping())
    h.writer._flush_call.cancel()
    h.writer._flush_call = None
    h.writer._flush()                            # the first slice only
    assert h.redis.transport.value() == b''
    assert [c.getTime() for c in h.clock.getDelayedCalls()] == [h.clock.seconds()]
    h.writer.queue('k0', None)                   # changed while its batch is being encoded
    h.clock.advance(0)                           # the remaining slices, then one transaction
    h.redis.pump()
    assert len(h.redis.commands(b'MULTI')) == 1
    assert len(h.redis.commands(b'HSET')) == ENCODE_SLICE * 3
    h.redis.auto = True
    h.step()
    assert b'k0' not in h.redis.data and len(h.redis.data) == ENCODE_SLICE * 3 - 1


def test_connection_lost_while_encoding_keeps_the_batch():
    h = Harness()
    for i in range(ENCODE_SLICE * 2):
        h.writer.queue('k%d' % i, lambda: mapping())
    h.writer._flush_call.cancel()
    h.writer._flush_call = None
    h.writer._flush()
    h.redis.transport.loseConnection()           # before the second slice
    h.clock.advance(0)
    assert h.writer.depth == ENCODE_SLICE * 2 and h.redis.commands(b'MULTI') == []
    h.clock.advance(MIN_BACKOFF)                 # reconnects and writes everything
    h.redis.pump()
    h.step(0)
    assert len(h.redis.data) == ENCODE_SLICE * 2
