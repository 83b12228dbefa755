"""The sans-IO sharing core (rtp_cluster/core/sharing_state.py): events in, actions out.

No Redis, no reactor, no threads: the actions are collected in a list and a model of Redis
answers the reads, in every order the adapters may produce.
"""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from rtp_cluster.core.keys import session_key
from rtp_cluster.core.records import Record
from rtp_cluster.core.sharing_actions import (Barrier, Continue, Identity, ListOwn, LoadOwn, Log,
                                              Lookup, Read, Refresh, Resume, Resync,
                                              Subscribe, WhenFlushed, Write, WritePresence)
from rtp_cluster.core import sharing_state
from rtp_cluster.core.sharing_state import DUPLICATE_WINDOW, SharingState

NS = 'rtpc'


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Core:
    """A SharingState for instance `me` with fake clocks; `actions` is what it asked for.

    Sliced work (`Continue`) is carried out at once, every step, as the adapter does on
    the next reactor turns; `steps` counts them.  With `run_steps=False` the `Continue`
    actions are kept with the others instead.
    """

    def __init__(self, me: str = 'a', peers: tuple[str, ...] = (), ttl: float = 100.0,
                 resync_interval: float = 30.0, run_steps: bool = True) -> None:
        self.wall = Clock(1_700_000_000.0)
        self.mono = Clock(100.0)
        self.actions: list = []
        self.steps = 0
        self.run_steps = run_steps
        self.state = SharingState(Identity(me, NS, peers=peers, session_ttl=ttl,
                                           resync_interval=resync_interval),
                                  self.emit, wall_clock=self.wall,
                                  mono_clock=self.mono, run_token='ours')
        self.store = self.state.store_for('test', ttl)

    def emit(self, action) -> None:
        if not (self.run_steps and isinstance(action, Continue)):
            self.actions.append(action)
            return
        self.steps += 1
        while action.step():
            self.steps += 1

    def taken(self, kind=None) -> list:
        """The actions so far (of one type), forgetting them."""
        found = [a for a in self.actions if kind is None or isinstance(a, kind)]
        self.actions[:] = [a for a in self.actions if a not in found]
        return found


def record(cid='c1', owner='b', epoch=1, seq=1, state='active', member='m1') -> Record:
    return Record(cid, 'test', member, 'udp:127.0.0.1:7001', 'ft', '', 1.0, 1.0, owner, epoch,
                  seq, state)


def raw(rec: Record) -> tuple[str, dict]:
    return session_key(NS, rec.owner, rec.cluster, rec.cid), rec.to_mapping()


# --- start, ticks, writes ------------------------------------------------------------------

def test_start_subscribes_to_the_followed_peers_and_loads_the_own_prefix():
    core = Core(peers=('b', 'c'))
    core.state.start()
    subscribe, load = core.taken()
    assert subscribe == Subscribe(('rtpc:s:b:*', 'rtpc:s:c:*', 'rtpc:n:*'))
    assert load == LoadOwn()


def test_tick_writes_presence_and_refreshes_and_resyncs_when_due():
    core = Core(ttl=8.0, resync_interval=5.0)
    core.state.start()
    core.store.bind('own', 'm1', 'ft', address='udp:127.0.0.1:7001')
    core.taken()
    core.state.tick()
    assert [type(a) for a in core.taken()] == [WritePresence]
    core.state.tick()                                   # refresh every ttl / 4 = 2 ticks
    presence, refresh = core.taken()
    assert presence.mapping['own_sessions'] == '1' and presence.mapping['run_token'] == 'ours'
    assert refresh == Refresh(('rtpc:s:a:test:own',))
    for _ in range(3):
        core.state.tick()
    kinds = [type(a) for a in core.taken()]
    assert kinds.count(WritePresence) == 3 and kinds.count(Refresh) == 1
    assert kinds[-1] is Resync                          # resync every 5 ticks


def test_a_refresh_every_second_is_every_tick_whatever_the_clock_says():
    """session_ttl 2 s: the refresh period equals the tick; it must never skip one."""
    core = Core(ttl=2.0)
    core.store.bind('own', 'm1', 'ft')
    for _ in range(5):
        core.mono.now += 0.999                          # a tick that came a little early
        core.state.tick()
    assert len(core.taken(Refresh)) == 5


def test_own_changes_become_write_actions_and_tombstones_name_their_shadows():
    core = Core(peers=('b',))
    core.state.apply(record(cid='t', owner='d'))        # d: only ever seen in a record
    core.store.lookup('t')                              # taken over: epoch 2
    write = core.taken(Write)[-1]
    assert write.key == 'rtpc:s:a:test:t' and write.op().get('epoch') == '2'
    core.store.unbind('t')
    tombstone = core.taken(Write)[-1]
    assert tombstone.op()['state'] == 'deleted'
    assert tombstone.shadows == ('rtpc:s:b:test:t', 'rtpc:s:d:test:t')
    core.store.bind('fresh', 'm1', 'ft')
    core.store.unbind('fresh')                          # epoch 1: a plain delete
    assert core.taken(Write)[-1] == Write('rtpc:s:a:test:fresh', None)


def test_a_new_redis_server_rewrites_own_sessions_and_lists_own_keys():
    core = Core()
    core.store.bind('own', 'm1', 'ft')
    core.taken()
    core.state.on_server('run-1', None)
    actions = core.taken()
    assert [type(a) for a in actions[:3]] == [Write, WhenFlushed, ListOwn]
    assert actions[1] == WhenFlushed('run-1')
    core.state.on_server('run-1', 'ours')               # same server: nothing to do
    assert core.taken(Write) == []
    core.state.on_synced('run-1')
    assert core.state.presence_record()['synced_run_id'] == 'run-1'


def test_a_new_master_with_the_same_run_id_still_gets_every_own_session_again():
    """A node demoted to replica and promoted again keeps its run id but took the other
    node's data set meanwhile: READONLY, role:slave or +switch-master force the rewrite."""
    core = Core()
    core.store.bind('own', 'm1', 'ft')
    core.state.on_server('run-1', None)
    core.state.on_synced('run-1')
    core.taken()
    core.state.on_new_master('READONLY You can\'t write against a read only replica.')
    assert core.state.presence_record()['synced_run_id'] == ''   # no longer complete there
    [log] = core.taken(Log)
    assert log.level == 'warn' and 'READONLY' in log.fields['why']
    core.state.on_new_master('again')                   # one warning per search
    assert core.taken(Log) == []
    core.state.on_server('run-1', 'ours')
    actions = [a for a in core.taken() if not isinstance(a, Log)]
    assert [type(a) for a in actions] == [Write, WhenFlushed, ListOwn]
    assert actions[0].key == 'rtpc:s:a:test:own'
    core.state.on_server('run-1', 'ours')               # written: nothing more to do
    assert core.taken(Write) == []


def test_the_ttl_refresh_and_the_rewrite_walk_own_sessions_a_slice_per_step(monkeypatch):
    """At 200,000 own sessions one pass holds the reactor for tenths of a second: both go
    OWN_SLICE sessions per reactor turn (`Continue`), and the barrier comes after the last."""
    monkeypatch.setattr(sharing_state, 'OWN_SLICE', 2)
    core = Core(ttl=4.0, run_steps=False)                # refresh every tick
    for i in range(5):
        core.store.bind('own%d' % i, 'm1', 'ft')
    core.state.apply(record(cid='theirs'))               # FOREIGN: neither refreshed nor rewritten
    core.taken()
    core.state.tick()
    [refresh] = core.taken(Continue)
    assert [refresh.step(), refresh.step(), refresh.step()] == [True, True, False]
    assert [a.keys for a in core.taken(Refresh)] == [
        ('rtpc:s:a:test:own0', 'rtpc:s:a:test:own1'), ('rtpc:s:a:test:own2', 'rtpc:s:a:test:own3'),
        ('rtpc:s:a:test:own4',)]
    core.taken()
    core.state.on_server('run-1', None)
    [rewrite] = core.taken(Continue)
    assert rewrite.step() and [a.key for a in core.taken()] == ['rtpc:s:a:test:own0',
                                                                 'rtpc:s:a:test:own1']
    core.store.unbind('own2')                            # ended meanwhile: its delete, no rewrite
    assert rewrite.step() and [type(a) for a in core.taken()] == [Write, Write]
    assert not rewrite.step()
    assert [type(a) for a in core.taken() if not isinstance(a, Log)] == [Write, WhenFlushed,
                                                                        ListOwn]


def test_a_newer_server_cancels_the_rewrite_for_the_older_one(monkeypatch):
    monkeypatch.setattr(sharing_state, 'OWN_SLICE', 1)
    core = Core(run_steps=False)
    core.store.bind('x', 'm1', 'ft')
    core.store.bind('y', 'm1', 'ft')
    core.state.on_server('run-1', None)
    [old] = core.taken(Continue)
    assert old.step()
    core.state.on_server('run-2', 'ours')               # restarted again meanwhile
    [new] = core.taken(Continue)
    core.taken()
    while old.step():
        pass
    assert core.taken() == []                           # the old job wrote and said nothing
    while new.step():
        pass
    assert WhenFlushed('run-2') in core.taken()


def test_no_refresh_walk_without_own_sessions():
    core = Core(ttl=4.0, run_steps=False)
    core.state.apply(record(cid='theirs'))
    core.taken()
    core.state.tick()
    assert core.taken(Continue) == [] and core.taken(Refresh) == []


def test_duplicate_instance_window_follows_the_injected_clock():
    core = Core()
    core.state.on_server('run-1', 'previous-run')       # our first write: not a twin
    core.state.on_server('run-1', 'twin')
    assert core.state.duplicate_active
    assert core.state.presence_record()['state'] == 'duplicate-id'
    core.state.on_own_keys(['rtpc:s:a:test:unknown'])
    assert core.taken(Write) == []                      # maybe the twin's: kept
    core.wall.now += DUPLICATE_WINDOW - 0.1
    assert core.state.duplicate_active
    core.wall.now += 0.2
    assert not core.state.duplicate_active
    core.state.on_own_keys(['rtpc:s:a:test:unknown'])
    assert core.taken(Write) == [Write('rtpc:s:a:test:unknown', None)]


# --- reads and their order -----------------------------------------------------------------

def test_one_event_read_in_flight_and_changes_meanwhile_wait():
    core = Core()
    k1, r1 = raw(record('c1'))
    k2, r2 = raw(record('c2'))
    core.state.on_events([(k1, 'hset')])
    assert core.taken(Read) == [Read((k1,))]
    core.state.on_events([(k2, 'hset'), (k1, 'hset')])
    assert core.taken(Read) == []                       # the first is still in flight
    core.state.on_records([(k1, r1)], 'event')
    assert core.taken(Read) == [Read((k1, k2))]
    core.state.on_records([(k1, r1), (k2, r2)], 'event')
    assert 'c1' in core.store and 'c2' in core.store


def test_events_of_unfollowed_peers_and_our_own_keys_are_ignored():
    core = Core(me='a', peers=('b',))
    core.state.on_events([(raw(record(owner='c'))[0], 'hset'),
                          (raw(record(owner='a'))[0], 'hset')])
    assert core.taken(Read) == []
    core.state.on_events([('rtpc:n:c', 'hset')])        # presence: known, not followed
    assert core.state.peers_view.info['c']['alive'] and not core.state.peers_view.follows('c')


def test_presence_of_a_new_peer_makes_automatic_peers_follow_it():
    core = Core()
    core.state.on_events([('rtpc:n:b', 'hset')])
    assert core.taken(Subscribe) == [Subscribe(('rtpc:s:b:*', 'rtpc:n:*'))]
    core.state.on_events([('rtpc:n:b', 'hset')])
    assert core.taken(Subscribe) == []


class RedisModel:
    """One key of peer b: writes and deletes, each with its keyspace event."""

    def __init__(self) -> None:
        self.value: Record | None = None
        self.seq = 0
        self.events: list[tuple[str, str]] = []

    def write(self) -> None:
        self.seq += 1
        self.value = record('c1', seq=self.seq)
        self.events.append((KEY, 'hset'))

    def delete(self) -> None:
        if self.value is not None:
            self.value = None
            self.seq = 0                      # the call-id may be used again: seq 1 anew
            self.events.append((KEY, 'del'))

    def read(self) -> list[tuple[str, dict]]:
        return [(KEY, self.value.to_mapping() if self.value is not None else {})]


KEY = session_key(NS, 'b', 'test', 'c1')
STEPS = st.lists(st.sampled_from(['write', 'delete', 'event', 'execute', 'deliver']),
                 max_size=60)


@settings(max_examples=300, deadline=None)
@given(STEPS)
def test_any_interleaving_of_events_and_reads_converges_on_what_redis_holds(steps):
    """Events reach the core in order, reads run in order at any time after they were
    issued, and their results arrive in order at any time after they ran; once everything
    is delivered, the core's view is what Redis holds (a deleted call never comes back)."""
    core = Core()
    redis = RedisModel()
    issued: list[Read] = []
    executed: list[list] = []

    def step(kind: str) -> None:
        if kind == 'write':
            redis.write()
        elif kind == 'delete':
            redis.delete()
        elif kind == 'event' and redis.events:
            core.state.on_events([redis.events.pop(0)])
        elif kind == 'execute' and issued:
            issued.pop(0)
            executed.append(redis.read())
        elif kind == 'deliver' and executed:
            core.state.on_records(executed.pop(0), 'event')
        issued.extend(core.taken(Read))
    for kind in steps:
        step(kind)
    while redis.events or issued or executed:
        for kind in ('event', 'execute', 'deliver'):
            step(kind)
    session = core.store.get('c1')
    if redis.value is None:
        assert session is None
    else:
        assert session is not None and session.seq == redis.value.seq
    assert core.state.reads.pending_removals == {}


def test_a_resync_proves_deletions_only_for_peers_synced_with_this_redis():
    core = Core()
    core.state.apply(record('gone'))
    core.state.apply(record('kept'))
    core.mono.now += 10
    core.state.request_resync()
    since = core.taken(Resync)[0].since
    core.state.on_resync_done(since, [raw(record('kept'))[0]],
                              {'b': {'synced_run_id': 'old-run'}}, 'run-2', 0.1)
    assert 'gone' in core.store                         # b has not rewritten into run-2
    core.state.request_resync()
    core.state.on_resync_done(core.taken(Resync)[0].since, [raw(record('kept'))[0]],
                              {'b': {'synced_run_id': 'run-2'}}, 'run-2', 0.1)
    assert 'gone' not in core.store and 'kept' in core.store
    assert core.state.last_resync['removed'] == 1


def test_a_peer_not_yet_rewritten_gets_a_resync_at_its_next_presence_write():
    """After a Redis restart, calls b ended during the outage go as soon as b has rewritten
    its sessions (its presence names the run id), not at the next periodic resync."""
    core = Core()
    core.state.apply(record('ended-during-outage'))
    core.mono.now += 10
    core.state.request_resync()
    core.state.on_resync_done(core.taken(Resync)[0].since, [],
                              {'b': {'synced_run_id': 'old-run'}}, 'run-2', 0.1)
    assert 'ended-during-outage' in core.store and core.state.peers_view.unsynced == {'b'}
    core.state.on_events([('rtpc:n:b', 'expire')])      # not a write of the presence
    assert core.taken(Resync) == []
    core.state.on_events([('rtpc:n:b', 'hset')])
    [resync] = core.taken(Resync)
    core.state.on_resync_done(resync.since, [], {'b': {'synced_run_id': 'run-2'}}, 'run-2', 0.1)
    assert 'ended-during-outage' not in core.store and core.state.peers_view.unsynced == set()
    core.state.on_events([('rtpc:n:b', 'hset')])        # synced: presence writes cost nothing
    assert core.taken(Resync) == []


def test_a_peer_whose_presence_is_not_back_yet_gets_a_resync_when_it_is():
    """Our resync after the restart ran before b wrote anything into the new Redis."""
    core = Core()
    core.state.apply(record('ended-during-outage'))
    core.state.on_events([('rtpc:n:b', 'hset')])        # b known and alive before
    core.mono.now += 10
    core.state.request_resync()
    core.state.on_resync_done(core.taken(Resync)[0].since, [], {}, 'run-2', 0.1)
    assert 'ended-during-outage' in core.store and core.state.peers_view.unsynced == {'b'}
    core.state.on_events([('rtpc:n:b', 'hset')])        # b is back
    [resync] = core.taken(Resync)
    core.state.on_resync_done(resync.since, [], {'b': {'synced_run_id': 'run-2'}}, 'run-2', 0.1)
    assert 'ended-during-outage' not in core.store and core.state.peers_view.unsynced == set()


def test_a_resync_before_our_tombstone_is_written_does_not_revive_the_call():
    """b died owning c1; we took it over and deleted it: the tombstone waits in the writer
    (Redis busy or slow) while a resync reads only b's stale key."""
    core = Core(peers=('b',))
    stale = raw(record('c1', owner='b', epoch=1, seq=4))
    core.state.on_records([stale], 'resync')
    core.store.lookup('c1')                             # taken over: epoch 2
    core.store.unbind('c1')                             # tombstone (2, 2, a) queued
    for _ in range(2):
        core.state.request_resync()
        core.taken(Resync)
        core.state.on_records([stale], 'resync')
        assert 'c1' not in core.store, 'the stale key brought the deleted call back'
        core.state.on_resync_done(0.0, [stale[0]], {}, '', 0.0)
    core.state.tick()
    [barrier] = core.taken(Barrier)
    core.state.on_barrier(barrier.number)               # the tombstone is in Redis now
    core.state.tick()
    assert core.taken(Barrier) == []                    # nothing new to confirm
    core.state.request_resync()                         # this scan sees the tombstone
    core.state.on_resync_done(0.0, [], {}, '', 0.0)
    assert len(core.state.tombstones) == 0              # forgotten: bounded
    newer = raw(record('c1', owner='b', epoch=3, seq=1))    # b took it back later
    core.state.on_records([newer], 'resync')
    assert core.store.get('c1').epoch == 3


def test_a_resync_requested_while_one_runs_follows_it():
    core = Core()
    core.state.request_resync()
    core.state.request_resync()
    assert len(core.taken(Resync)) == 1
    core.state.on_resync_done(0.0, [], {}, '', 0.0)
    assert len(core.taken(Resync)) == 1


# --- lookup on miss and the own load ---------------------------------------------------------

def test_lookup_on_miss_only_while_stale_and_resumed_once():
    core = Core(peers=('b',))
    resumed = []
    core.state.subscriber_connected = True
    assert not core.store.resolve_unknown('x', lambda: resumed.append('x'))
    core.state.subscriber_connected = False
    assert core.store.resolve_unknown('x', lambda: resumed.append('x'))
    lookup = core.taken(Lookup)[0]
    assert lookup.keys == ('rtpc:s:b:test:x',)
    core.state.on_lookup_result(lookup.token, [raw(record('x'))])
    [resume] = core.taken(Resume)
    resume.then()
    core.state.on_lookup_deadline(lookup.token)         # too late: nothing more
    assert core.taken(Resume) == [] and resumed == ['x'] and 'x' in core.store


def test_a_call_deleted_while_the_own_prefix_loads_is_not_brought_back():
    """Issue 14: an instance answers commands before its own keys are loaded; a `D` for
    one of those calls goes out by broadcast, and the load must not revive the call."""
    core = Core()
    core.state.start()
    core.taken()
    assert not core.store.resolve_unknown('ended', lambda: None, ends_call=True)   # broadcast
    assert not core.store.resolve_unknown('reoffered', lambda: None, ends_call=True)
    core.store.bind('reoffered', 'm2', 'ft')            # offered again meanwhile: bound
    assert not core.store.resolve_unknown('asked', lambda: None)   # a U or L: not an end
    core.taken()
    core.state.on_records([raw(record('ended', owner='a')), raw(record('reoffered', owner='a')),
                           raw(record('asked', owner='a')),
                           raw(record('untouched', owner='a'))], 'own')
    assert 'ended' not in core.store
    assert core.taken(Write) == [Write('rtpc:s:a:test:ended', None)]
    assert core.store.get('reoffered').member == 'm2'   # the table's own binding stands
    assert core.store.get('asked').owner == 'a'         # its member may still have it
    assert core.store.get('untouched').owner == 'a'
    core.state.on_own_loaded()
    assert not core.store.resolve_unknown('later', lambda: None, ends_call=True)
    core.state.on_records([raw(record('later', owner='a'))], 'own')
    assert 'later' in core.store                        # only deletes seen while loading


def test_the_cluster_says_which_unknown_call_ids_a_delete_ends():
    """Cluster → store: `D` ends the call, `Dw` and a `;N` tag (one stream) do not."""
    from twisted.internet.task import Clock

    from rtp_cluster.core.cluster import Cluster
    from rtp_cluster.core.config import ClusterConfig, Endpoint
    from rtp_cluster.core.protocol import parse_command
    core = Core()
    seen = []
    core.state.lookup_unknown = lambda cluster, cid, then, ends: seen.append((cid, ends))
    cluster = Cluster(ClusterConfig('test', Endpoint('udp', '127.0.0.1', 1), ()), Clock(),
                      store=core.state.store_for('test'))
    for text in ('D c1 ft tt', 'Dw c2 ft', 'D c3 ft;1', 'U c4 127.0.0.1 5000 ft',
                 'L c5 1.2.3.4 5 ft tt'):
        cluster.handle(parse_command(text), lambda reply: None)
    assert seen == [('c1', True), ('c2', False), ('c3', False), ('c4', False), ('c5', False)]


# --- degraded after consecutive write errors ------------------------------------------------

def degrading_state(degraded_after: int) -> tuple[SharingState, list]:
    actions: list = []
    state = SharingState(Identity('a', NS, degraded_after=degraded_after), actions.append,
                         wall_clock=Clock(1_700_000_000.0), mono_clock=Clock(100.0))
    return state, actions


def test_degraded_by_default_at_the_first_failed_write():
    state, actions = degrading_state(1)
    state.on_write_failed('no reply within 1 s')
    assert state.link.degraded and state.last_error == 'no reply within 1 s'
    assert [a.level for a in actions if isinstance(a, Log)] == ['warn']


def test_degraded_only_after_the_configured_errors_in_a_row():
    state, actions = degrading_state(3)
    state.on_write_failed('e1')
    state.on_write_failed('e2')
    assert not state.link.degraded and state.last_error == 'e2'
    state.on_write_ok()                       # a success starts the count again
    state.on_write_failed('e3')
    state.on_write_failed('e4')
    assert not state.link.degraded
    assert not [a for a in actions if isinstance(a, Log)]
    state.on_write_failed('e5')
    assert state.link.degraded and state.presence_record()['state'] == 'degraded'
    state.on_write_ok()
    assert not state.link.degraded


# --- dead peers -------------------------------------------------------------------------------

def test_a_peer_silent_for_longer_than_the_presence_ttl_is_dead_without_an_expiry_event():
    core = Core()
    core.state.start()
    core.state.on_subscribed()
    core.state.on_events([('rtpc:n:b', 'hset'), ('rtpc:n:c', 'hset')])
    core.taken()
    for _ in range(5):                      # b keeps writing its presence, c fell silent
        core.wall.now += 1.0
        core.state.on_events([('rtpc:n:b', 'hset')])
        core.state.tick()
    peers = core.state.peers_view.info
    assert peers['b']['alive'] is True and peers['c']['alive'] is False
    warnings = [a for a in core.taken(Log) if a.fields.get('peer') == 'c']
    assert len(warnings) == 1 and 'taking it for dead' in warnings[0].text
    core.state.on_events([('rtpc:n:c', 'hset')])          # c is back
    assert peers['c']['alive'] is True


def test_silence_while_our_subscriber_was_down_kills_no_peer():
    core = Core()
    core.state.start()
    core.state.on_subscribed()
    core.state.on_events([('rtpc:n:b', 'hset')])
    core.state.on_subscriber_down('connection reset')
    for _ in range(10):
        core.wall.now += 1.0
        core.state.tick()
    assert core.state.peers_view.info['b']['alive'] is True
    core.state.on_subscribed()              # the events of the outage are lost, not silence
    core.wall.now += 2.0
    core.state.tick()
    assert core.state.peers_view.info['b']['alive'] is True
    core.wall.now += 2.0
    core.state.tick()
    assert core.state.peers_view.info['b']['alive'] is False


def test_a_key_deleted_between_the_resync_scan_and_its_read_is_no_bad_record():
    core = Core()
    core.state.start()
    key, mapping = raw(record('gone-meanwhile'))
    live_key, live = raw(record('still-here'))
    core.state.on_records([(key, {}), (live_key, live)], 'resync')
    assert core.state.counters.bad_records == 0
    assert not [a for a in core.taken(Log) if 'ignoring record' in a.text]
    assert 'still-here' in core.store and 'gone-meanwhile' not in core.store
    core.state.on_records([(key, {'cid': 'x'})], 'resync')       # a real bad record still is
    assert core.state.counters.bad_records == 1


# --- when the view is stale --------------------------------------------------------------------

def test_only_a_repair_resync_makes_the_view_stale_not_a_periodic_one():
    core = Core(resync_interval=2.0)
    core.state.start()
    assert core.state.stale                                # not subscribed yet
    core.state.on_subscribed()                             # events may have been lost
    repair = core.taken(Resync)
    assert len(repair) == 1 and core.state.stale
    core.state.on_resync_done(repair[0].since, [], {}, 'run-1', 0.5)
    assert not core.state.stale
    core.mono.now += 2.0
    core.state.tick()
    core.state.tick()                                      # the periodic resync is due
    periodic = core.taken(Resync)
    assert len(periodic) == 1 and core.state.reads.resync_running
    assert not core.state.stale                            # events keep the view current
    core.state.on_resync_done(periodic[0].since, [], {}, 'run-1', 0.5)
    assert not core.state.stale


def test_a_repair_asked_while_a_resync_runs_waits_for_the_next_resync():
    core = Core()
    core.state.start()
    core.state.on_subscribed()
    first = core.taken(Resync)[0]
    core.state.on_resync_done(first.since, [], {}, 'run-1', 0.1)
    core.mono.now += 1.0
    core.state.request_resync()                            # an operator's resync runs
    running = core.taken(Resync)[0]
    core.mono.now += 1.0
    core.state.on_subscriber_down('reset')
    core.state.on_subscribed()                             # reconnected during it
    assert core.taken(Resync) == [] and core.state.stale
    core.state.on_resync_done(running.since, [], {}, 'run-1', 2.0)
    assert core.state.stale                                # it started before the loss
    follow_up = core.taken(Resync)
    assert len(follow_up) == 1
    core.state.on_resync_done(follow_up[0].since, [], {}, 'run-1', 0.1)
    assert not core.state.stale


def test_ksrm_forgets_the_peers_sessions_a_slice_now_and_the_rest_a_slice_per_turn(monkeypatch):
    monkeypatch.setattr(sharing_state, 'OWN_SLICE', 3)
    core = Core(peers=('b', 'c'), run_steps=False)
    core.store.bind('mine', 'm1', 'ft')
    for i in range(7):
        core.state.apply(record(cid='b%d' % i, owner='b'))
    core.state.apply(record(cid='c0', owner='c'))
    core.taken()
    assert core.state.unsubscribe('b') == 7              # the count comes from kept counts
    [walk] = core.taken(Continue)
    assert core.store.foreign_counts() == {'b': 5, 'c': 1}  # looked at now: mine, b0, b1
    assert walk.step() and core.store.foreign_counts() == {'b': 2, 'c': 1}
    assert not walk.step() and core.store.foreign_counts() == {'c': 1}
    assert 'mine' in core.store and 'c0' in core.store


def test_ksrm_of_a_peer_with_few_sessions_is_done_at_once():
    core = Core(peers=('b',), run_steps=False)
    core.state.apply(record(cid='b0', owner='b'))
    core.taken()
    assert core.state.unsubscribe('b') == 1
    assert core.taken(Continue) == [] and 'b0' not in core.store
