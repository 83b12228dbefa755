"""`I` and `G` summed over the members; counters that never decrease (core/stats.py).

Real Member objects talk to in-memory RTPproxies (tests/support/cluster_harness.py);
time is a twisted Clock.
"""
from __future__ import annotations

from tests.support.cluster_harness import Harness, run, three
from rtp_cluster.core import protocol


# --- aggregation -------------------------------------------------------------------------------------

def test_info_is_the_sum_of_online_members():
    h = three()
    for i, fake in enumerate(h.fakes.values()):
        for j in range(i + 1):
            fake.create('i%d_%d' % (i, j))
        fake.packets = (100 * (i + 1), 10 * (i + 1))
    run(h.clock, 1.1)
    info = protocol.parse_info(h.cmd('Ib'))
    assert info == {'sessions created': 6, 'active sessions': 6, 'active streams': 12,
                    'packets received': 600, 'packets transmitted': 60}
    assert h.cmd('Il').endswith('\naverage load: 0.000000')
    assert protocol.parse_info(h.cmd('I')) == info
    h.take_offline('m3')
    info = protocol.parse_info(h.cmd('Ib'))
    # gauges drop with the member; counters keep its last values (issue 15)
    assert info['active sessions'] == 3 and info['packets received'] == 600
    assert info['sessions created'] == 6


def test_stats_sum_ints_and_doubles_in_request_order():
    h = Harness([{'counters': {'nsess_created': 5, 'total_duration': 1.5, 'pps_in': 0.25}},
                 {'counters': {'nsess_created': 7, 'total_duration': 2.25, 'pps_in': 0.5}}])
    assert h.cmd('G nsess_created total_duration') == '12 3.750000'
    assert h.cmd('Gv total_duration nsess_created pps_in') == \
        'total_duration=3.750000 nsess_created=12 pps_in=0.750000'
    assert h.cmd('G') == ''
    assert h.cmd('G nosuch') == 'E68'
    # the members are asked with the plain form and the cluster formats the reply itself
    assert 'G total_duration nsess_created pps_in' in h.fakes['m1'].received


def test_stats_use_cached_values_of_a_member_that_does_not_answer():
    h = Harness([{'counters': {'nsess_created': 5, 'total_duration': 1.5}},
                 {'counters': {'nsess_created': 7, 'total_duration': 2.25}}])
    assert h.cmd('Gv nsess_created total_duration') == 'nsess_created=12 total_duration=3.750000'
    h.fakes['m1'].counters['nsess_created'] = 6
    h.clients['m2'].silent = True
    replies = h.send('G nsess_created total_duration')
    run(h.clock, 1.5)
    assert replies == ['13 3.750000']
    h.clients['m2'].silent = False
    h.clients['m2'].override = lambda text: 'garbage' if text.startswith('G') else None
    assert h.cmd('G nsess_created total_duration') == '13 3.750000'


def test_stats_with_one_member_offline_count_only_online_members():
    h = Harness([{'counters': {'nsess_created': 5}}, {'counters': {'nsess_created': 7}}])
    h.take_offline('m1')
    assert h.cmd('G nsess_created') == '7'


# --- member failures around new sessions -------------------------------------------------------------

def test_stats_with_every_member_silent_and_nothing_cached():
    h = Harness([{'counters': {'nsess_created': 1}}, {'counters': {'nsess_created': 2}}])
    for client in h.clients.values():
        client.silent = True
    replies = h.send('G nsess_created')
    run(h.clock, 1.5)
    assert replies == [protocol.E_STATS_ALL_FAILED]


# --- counters never decrease (issue 15) -------------------------------------------------------------

def test_counters_survive_offline_removed_and_restarted_members():
    h = Harness([{'counters': {'nsess_created': 5, 'total_duration': 1.5, 'pps_in': 2.0}},
                 {'counters': {'nsess_created': 7, 'total_duration': 2.0, 'pps_in': 3.0}}])
    for i, fake in enumerate(h.fakes.values()):
        for j in range(3 + i):
            fake.create('c%d_%d' % (i, j))
        fake.packets = (100, 50)
    run(h.clock, 1.1)
    seen = [protocol.parse_info(h.cmd('Ib'))]
    assert h.cmd('G nsess_created total_duration pps_in') == '12 3.500000 5.000000'
    h.take_offline('m2')
    seen.append(protocol.parse_info(h.cmd('Ib')))
    assert h.cmd('G nsess_created total_duration pps_in') == '12 3.500000 2.000000'  # rate drops
    h.cluster.drain_member('m2')                       # no sessions bound: removed at once
    assert h.removed == ['m2']
    seen.append(protocol.parse_info(h.cmd('Ib')))
    fake = h.fakes['m1']                               # m1 restarts: its counters begin anew
    fake.sessions.clear()
    fake.created, fake.packets, fake.counters['nsess_created'] = 1, (10, 5), 1
    fake.create('after-restart')
    run(h.clock, 1.1)
    seen.append(protocol.parse_info(h.cmd('Ib')))
    assert h.cmd('G nsess_created') == '13'
    for name in protocol.INFO_COUNTERS:
        values = [info[name] for info in seen]
        assert values == sorted(values), (name, values)
    assert [info['sessions created'] for info in seen] == [7, 7, 7, 9]
    assert [info['active sessions'] for info in seen] == [7, 3, 3, 1]  # a gauge
