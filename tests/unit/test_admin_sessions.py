"""The session admin commands without Redis, paging, streaming and the paced terminate.

Clusters here are real `Cluster`s on in-memory stores with members whose clients record
what they are sent; time is a `task.Clock`, so every slice of background work is seen.
"""
from __future__ import annotations

from twisted.internet import task
from twisted.internet.testing import StringTransport

from rtp_cluster.adapters.admin import AdminCommands
from rtp_cluster.adapters.admin_socket import AdminFactory
from rtp_cluster.adapters.admin_sessions import (DEFAULT_PAGE, LIST_SLICE, TAKEOVER_SLICE,
                                                 TERMINATE_SLICE, TERMINATE_TICK, BulkWork)
from tests.support.session_tables import cluster_with, filled, shared


class Runtime:
    """What the session commands use of the daemon's runtime."""

    def __init__(self, clusters, clock, sharing=None) -> None:
        self.clusters = clusters
        self.sharing = sharing
        self.bulk = BulkWork(clock)


def world(n: int, names=('alpha',)):
    clock = task.Clock()
    clusters, clients = {}, {}
    for name in names:
        clusters[name], clients[name] = cluster_with(filled(n, name[0]), name, clock=clock)
    runtime = Runtime(clusters, clock)
    return runtime, AdminCommands(runtime), clock, clients


def one_turn(clock: task.Clock) -> None:
    """Run the earliest delayed call alone, as one reactor turn would (advance() also runs
    the calls that call schedules for the same time)."""
    call = clock.calls.pop(0)
    call.called = 1
    call.func(*call.args, **call.kw)


def streaming(clock: task.Clock) -> bool:
    """A batch of a streamed reply is scheduled."""
    return any(call.func.__name__ == '_stream_batch' for call in clock.getDelayedCalls())


def sent(clients) -> list[str]:
    return [line for per_cluster in clients.values() for client in per_cluster.values()
            for line in client.sent]


def test_counts_listing_and_details_without_sharing_have_no_ownership_columns():
    runtime, commands, clock, clients = world(3, ('alpha', 'beta'))
    runtime.clusters['alpha'].store.learn_to_tag('a1', 'tt1')
    assert commands.execute('ls numsessions').lines == ('Current sessions total: 6', 'OK')
    assert commands.execute('ls sessions').lines == (
        'a0 cluster=alpha member=m1', 'a1 cluster=alpha member=m2', 'a2 cluster=alpha member=m1',
        'b0 cluster=beta member=m1', 'b1 cluster=beta member=m2', 'b2 cluster=beta member=m1',
        'OK')
    assert commands.execute('ls sessions own 2').lines == (
        'a0 cluster=alpha member=m1', 'a1 cluster=alpha member=m2', 'OK')   # as many as asked
    assert commands.execute('ls sessions foreign').lines == ('OK',)
    details = commands.execute('ls session a1').lines
    assert details[:7] == ('Session a1:', '    cluster = alpha', '    member = m2',
                           '    member address = udp:127.0.0.1:7002', '    member online = yes',
                           '    from tag = ft1', '    to tag = tt1')
    assert details[7].startswith('    last used = ') and details[8:] == ('OK',)
    assert not any('owner' in line or 'OWN' in line for line in details)
    assert commands.execute('ls session nope').lines == ('ERROR: session "nope" not found',)


def test_terminate_one_session_without_sharing():
    runtime, commands, clock, clients = world(3)
    assert commands.execute('terminate a1').lines == ('Terminated: 1', 'OK')
    assert sent(clients) == ['D a1 ft1']
    assert 'a1' not in runtime.clusters['alpha'].store
    assert commands.execute('terminate a1').lines == ('ERROR: session "a1" not found',)


def test_ls_sessions_shows_a_page_by_default_and_says_how_many_more():
    runtime, commands, clock, clients = world(DEFAULT_PAGE + 500)
    reply = commands.execute('ls sessions')
    assert (reply.more is None) == (DEFAULT_PAGE <= LIST_SLICE)   # a page per slice at most
    lines = reply.complete().lines
    assert len(lines) == DEFAULT_PAGE + 2
    assert lines[-2:] == ('... 500 more (ls sessions all --all lists every one)', 'OK')
    assert commands.execute('ls sessions own').complete().lines[-2] == \
        '... 500 more (ls sessions own --all lists every one)'
    few = commands.execute('ls sessions 7')
    assert few.more is None and len(few.lines) == 8        # a LIMIT: no "more" line


def test_ls_sessions_all_is_streamed_a_slice_per_batch():
    total = 2 * LIST_SLICE + 10
    runtime, commands, clock, clients = world(total)
    reply = commands.execute('ls sessions --all')
    assert reply.more is not None and reply.lines[-1] != 'OK'
    assert len(reply.lines) == LIST_SLICE
    batches = list(reply.more)
    assert [len(b) for b in batches] == [LIST_SLICE, 10]
    lines = commands.execute('ls sessions all --all').complete().lines
    assert len(lines) == total + 1 and lines[-1] == 'OK'
    assert len({line.split()[0] for line in lines[:-1]}) == total
    assert commands.execute('ls sessions 5000').complete().lines == lines   # a LIMIT above
    for bad in ('ls sessions --all 5', 'ls sessions 5 --all', 'ls sessions --each'):
        assert commands.execute(bad).is_error, bad


def test_a_streamed_listing_is_written_a_batch_per_reactor_turn_and_only_to_a_reader():
    total = 3 * LIST_SLICE
    runtime, commands, clock, clients = world(total)
    factory = AdminFactory(commands, clock=clock)
    proto = factory.buildProtocol(None)
    transport = StringTransport()
    proto.makeConnection(transport)
    proto.dataReceived(b'ls sessions --all\nls numsessions\n')

    def lines() -> list[str]:
        return transport.value().decode().splitlines()
    assert len(lines()) == LIST_SLICE                   # the first batch; the next command waits
    assert transport.producerState == 'paused'          # no reading while the reply streams
    proto.pauseProducing()                              # the client stops reading
    one_turn(clock)
    assert len(lines()) == LIST_SLICE and not streaming(clock)
    proto.resumeProducing()
    one_turn(clock)
    assert len(lines()) == 2 * LIST_SLICE
    one_turn(clock)
    assert len(lines()) == 3 * LIST_SLICE
    one_turn(clock)
    assert lines()[-3:] == ['OK', 'Current sessions total: %d' % total, 'OK']
    assert len(lines()) == total + 3
    assert transport.producerState == 'producing'


def test_a_listing_stops_when_the_client_goes():
    runtime, commands, clock, clients = world(3 * LIST_SLICE)
    proto = AdminFactory(commands, clock=clock).buildProtocol(None)
    transport = StringTransport()
    proto.makeConnection(transport)
    proto.dataReceived(b'ls sessions --all\n')
    proto.connectionLost(None)
    assert not streaming(clock)
    written = len(transport.value())
    clock.advance(0)
    assert len(transport.value()) == written


def test_terminate_all_ends_a_slice_at_once_and_the_rest_paced_in_the_background():
    total = 10 * TERMINATE_SLICE + 30
    runtime, commands, clock, clients = world(total)
    reply = commands.execute('terminate all').lines
    assert reply == ('Terminated: %d' % TERMINATE_SLICE,
                     'Terminating the rest in the background: %d sessions left to look at '
                     '(ls numsessions shows the progress)' % (total - TERMINATE_SLICE), 'OK')
    assert len(sent(clients)) == TERMINATE_SLICE
    assert commands.execute('ls numsessions').lines == (
        'Current sessions total: %d' % (total - TERMINATE_SLICE),
        'Terminating all, sessions ended: %d' % TERMINATE_SLICE,
        'Terminating all, sessions left to look at: %d' % (total - TERMINATE_SLICE), 'OK')
    refused = commands.execute('terminate own').lines
    assert len(refused) == 1 and refused[0].startswith('ERROR: terminate all is running: ')
    assert commands.execute('terminate a%d' % (total - 1)).lines == ('Terminated: 1', 'OK')
    steps = []
    while runtime.bulk.job is not None:
        before = len(sent(clients))
        clock.advance(TERMINATE_TICK)
        steps.append(len(sent(clients)) - before)
    assert max(steps) == TERMINATE_SLICE and len(steps) == 10
    assert len(sent(clients)) == total and len(set(sent(clients))) == total
    assert commands.execute('ls numsessions').lines == ('Current sessions total: 0', 'OK')
    assert commands.execute('terminate all').lines == ('Terminated: 0', 'OK')


def test_terminate_foreign_in_the_background_keeps_the_sharing_output():
    clock = task.Clock()
    cluster, clients = cluster_with(shared(own=5, foreign=2 * TERMINATE_SLICE), 'c', clock=clock)

    class Sharing:
        instance_id = 'a'
    runtime = Runtime({'c': cluster}, clock, Sharing())
    commands = AdminCommands(runtime)
    reply = commands.execute('terminate foreign').lines
    assert reply[:2] == ('Terminated own: 0', 'Terminated foreign: %d' % (TERMINATE_SLICE - 5))
    assert commands.execute('ls numsessions').lines[3:6] == (
        'Terminating foreign, own sessions ended: 0',
        'Terminating foreign, foreign sessions ended: %d' % (TERMINATE_SLICE - 5),
        'Terminating foreign, sessions left to look at: %d' % (2 * TERMINATE_SLICE + 5
                                                              - TERMINATE_SLICE))
    clock.advance(TERMINATE_TICK)
    clock.advance(TERMINATE_TICK)
    assert runtime.bulk.job is None
    assert cluster.store.ownership_counts() == (5, 0)
    assert clients['m1'].sent == clients['m2'].sent == []


def test_stopping_the_runtime_stops_a_running_terminate():
    runtime, commands, clock, clients = world(5 * TERMINATE_SLICE)
    commands.execute('terminate all')
    runtime.bulk.stop()
    clock.advance(1.0)
    assert len(sent(clients)) == TERMINATE_SLICE


def test_a_large_takeover_runs_in_the_background_and_blocks_a_bulk_terminate():
    clock = task.Clock()
    store = shared(own=1, foreign=3 * TAKEOVER_SLICE)
    cluster, clients = cluster_with(store, 'c', clock=clock)

    class Sharing:
        instance_id = 'a'
        stores = {'c': store}
    runtime = Runtime({'c': cluster}, clock, Sharing())
    commands = AdminCommands(runtime)
    reply = commands.execute('takeover b').lines
    assert reply[0].startswith('Took over ') and reply[1].startswith(
        'Taking over the rest in the background: ')
    progress = commands.execute('ls numsessions').lines
    assert progress[3].startswith('Taking over b, sessions taken over: ')
    assert progress[4].startswith('Taking over b, sessions left to look at: ')
    assert all(int(line.split(':', 1)[1]) >= 0 for line in progress[:-1])   # LABEL: NUMBER
    refused = commands.execute('terminate all').lines[0]
    assert refused.startswith('ERROR: takeover b is running: ')
    while runtime.bulk.job is not None:
        clock.advance(TERMINATE_TICK)
    assert store.ownership_counts() == (3 * TAKEOVER_SLICE + 1, 0)
    assert commands.execute('ls numsessions').lines == (
        'Current sessions own: %d' % (3 * TAKEOVER_SLICE + 1), 'Current sessions foreign: 0',
        'Current sessions total: %d' % (3 * TAKEOVER_SLICE + 1), 'OK')


def test_a_late_tick_is_made_up_by_a_larger_step_up_to_twice_the_slice():
    runtime, commands, clock, clients = world(20 * TERMINATE_SLICE)
    commands.execute('terminate all')
    before = len(sent(clients))
    clock.advance(1.5 * TERMINATE_TICK)               # one tick, half a tick late
    assert len(sent(clients)) - before == round(1.5 * TERMINATE_SLICE)
    before = len(sent(clients))
    clock.advance(10 * TERMINATE_TICK)                # very late: at most twice the slice
    assert len(sent(clients)) - before == 2 * TERMINATE_SLICE
