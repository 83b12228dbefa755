"""core/status.py: the snapshot, the health decision and the status page."""
from __future__ import annotations

import json
import re

from rtp_cluster.core import status
from rtp_cluster.core.member import OFFLINE, ONLINE
from tests.unit.test_observe_world import World


def snap(world: World, sharing=None) -> dict:
    return status.snapshot(world.clusters.values(), world.clock.seconds(), world.started, sharing)


def test_snapshot_lists_every_member_with_its_state():
    world = World({'a': ['m1', 'm2'], 'b': ['m3']})
    world.clusters['a'].store.bind('call-1', 'm1')
    data = snap(world)
    assert [c['name'] for c in data['clusters']] == ['a', 'b']
    a = data['clusters'][0]
    assert a['address'] == 'udp:127.0.0.1:22222'
    assert [(m['name'], m['state'], m['status'], m['weight'], m['capacity'], m['sessions'])
            for m in a['members']] == [('m1', ONLINE, 'ACTIVE', 10, 100, 1),
                                      ('m2', ONLINE, 'ACTIVE', 20, 100, 0)]
    assert a['online'] == 2 and a['active_online'] == 2 and a['sessions'] == 1
    assert a['capacity'] == 200
    assert data['redis'] is None
    assert json.loads(json.dumps(data)) == data       # /status.json serves it as it is


def test_time_since_the_last_state_change_follows_the_clock():
    world = World({'a': ['m1']})
    before = snap(world)['clusters'][0]['members'][0]['since']
    world.run(3.0)
    after = snap(world)['clusters'][0]['members'][0]['since']
    assert after - before == 3.0 or abs(after - before - 3.0) < 1e-6


def both_healths(world: World) -> tuple[bool, list[str]]:
    """health() of the snapshot, checked equal to health_of() of the clusters (what /health uses)."""
    verdict = status.health(snap(world))
    assert status.health_of(world.clusters.values(), False) == verdict
    return verdict


def test_healthy_while_every_cluster_has_an_online_active_member():
    world = World({'a': ['m1', 'm2'], 'b': ['m3']})
    assert both_healths(world) == (True, [])
    world.kill('a', 'm1')
    assert both_healths(world) == (True, [])
    world.kill('a', 'm2')
    assert world.clusters['a'].members['m2'].state == OFFLINE
    assert both_healths(world) == (False, ['cluster a has no online ACTIVE member'])
    world.clients['a', 'm2'].silent = False
    world.run(5.0)
    assert both_healths(world) == (True, [])


def test_a_suspended_member_does_not_make_a_cluster_healthy():
    world = World({'a': ['m1']})
    world.clusters['a'].members['m1'].status = 'SUSPENDED'
    healthy, reasons = both_healths(world)
    assert not healthy and reasons == ['cluster a has no online ACTIVE member']


def test_duplicate_instance_id_is_unhealthy():
    world = World({'a': ['m1']})
    sharing = {'state': 'connected', 'subscriber': 'connected', 'queue_depth': 0, 'own': 0,
               'foreign': 0, 'duplicate': {'token': 'x'}, 'last_error': '', 'peers': {}}
    healthy, reasons = status.health(snap(world, sharing))
    assert not healthy and 'instance id' in reasons[0]
    assert status.health_of(world.clusters.values(), True) == (healthy, reasons)
    sharing['duplicate'] = {}
    assert status.health(snap(world, sharing)) == (True, [])


def test_page_has_a_row_per_member_with_its_state_and_refreshes_itself():
    world = World({'a': ['m1', 'm2']})
    world.kill('a', 'm2')
    page = status.render_html(snap(world), '1.2.3')
    assert '<meta http-equiv="refresh" content="%d">' % status.REFRESH_SECONDS in page
    rows = re.findall(r'<tr class="member (\w+)" data-member="(\w+)">', page)
    assert rows == [('online', 'm1'), ('offline', 'm2')]
    assert 'rtp_cluster 1.2.3' in page and 'class="health-ok"' in page
    assert '<script' not in page and 'http://' not in page and 'https://' not in page


def test_page_escapes_names():
    world = World({'<b>x</b>': ['m&1']})
    page = status.render_html(snap(world))
    assert '<b>x</b>' not in page and '&lt;b&gt;x&lt;/b&gt;' in page
    assert 'data-member="m&amp;1"' in page


def test_page_says_why_it_is_unhealthy():
    world = World({'a': ['m1']})
    world.kill('a', 'm1')
    page = status.render_html(snap(world))
    assert 'class="health-bad">unhealthy: cluster a has no online ACTIVE member' in page


def test_page_shows_redis_and_peers():
    world = World({'a': ['m1']})
    sharing = {'state': 'degraded', 'subscriber': 'connected', 'queue_depth': 7, 'own': 3,
               'foreign': 2, 'duplicate': {}, 'last_error': 'boom', 'peers': {'node-b': 'alive'}}
    page = status.render_html(snap(world, sharing))
    assert '<td class="name">write queue</td><td class="name">7</td>' in page
    assert '<td class="name">peer node-b</td><td class="name">alive</td>' in page
    assert '<td class="name">state</td><td class="name">degraded</td>' in page


def test_a_dead_members_probe_cycle_does_not_reset_its_down_time():
    world = World({'a': ['m1', 'm2']})
    world.kill('a', 'm2')
    before = snap(world)['clusters'][0]['members'][1]['since']
    world.run(6.0)          # offline -> probing -> offline ... every probe interval
    member = snap(world)['clusters'][0]['members'][1]
    assert member['state'] != ONLINE
    assert abs(member['since'] - before - 6.0) < 1e-6
    assert member['state_changes'] == 2
