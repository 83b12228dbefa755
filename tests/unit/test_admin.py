"""The admin command language (rtp_cluster/adapters/admin.py) without sockets.

Behaviour runs against a real `Runtime` on a `MemoryReactorClock`: clusters and members
use unix socket addresses, and a small simulated RTPproxy answers the member clients'
connections (V, VF, Ib), so members really go online, offline, drain and get removed.
Formatting of things a unix-only runtime cannot show (UDP addresses, unknown session
counts) uses real `Cluster`/`Member` objects with a stub member client.
"""
from __future__ import annotations

import json
import os

import pytest
from twisted.logger import globalLogPublisher

from rtp_cluster.adapters.admin import AdminCommands, AdminReply
from rtp_cluster.core.cluster import Cluster
from rtp_cluster.core.config import ClusterConfig, ConfigError, Endpoint, MemberConfig, load_config
from rtp_cluster.core.member import DRAINING, ONLINE, Member
from rtp_cluster.adapters.transports import StartupError
from tests.support.admin_world import (ADD, BAD_INPUT, DELAY, LS, LS_ALPHA, LS_BETA, M1, M2, M3,
                                      M4, World, config_xml, member_xml)


@pytest.fixture
def world(tmp_path):
    w = World(tmp_path, config_xml([M1, M2, M3], [M4]))
    yield w
    w.runtime.stop()


# --- ls -------------------------------------------------------------------------------------

def test_ls_lists_every_cluster_verbatim(world):
    assert world.run('ls') == LS


def test_ls_cluster_shows_online_then_offline_members_verbatim(world):
    assert world.run('ls alpha') == LS_ALPHA


def test_ls_cluster_without_offline_members_ends_with_an_empty_line(world):
    assert world.run('ls beta') == LS_BETA


def test_ls_unknown_cluster(world):
    assert world.run('ls gamma') == 'ERROR: gamma: cluster not found\n'


def test_ls_with_no_clusters_is_just_ok():
    runtime = type('R', (), {'clusters': {}})()
    assert AdminCommands(runtime).execute('ls').text() == 'OK\n'


def test_member_going_offline_and_back_moves_between_the_lists(world):
    world.rtpp.down('/nonexistent/m4.sock')
    world.reactor.advance(1.0)              # the heartbeat
    world.rtpp.pump()
    assert 'online members = 0 (0 active, 0 suspended, 0 draining)\n' \
        '    offline members = 1\nOK\n' in world.run('ls')
    assert world.run('ls beta') == (
        'Online members of the cluster #1:\n\nOffline members of the cluster #1:\n'
        '    RTPproxy: #0\n        name = m4\n        address = /nonexistent/m4.sock\n'
        '        weight = 100\n        capacity = 100\n        state = offline\nOK\n')
    world.rtpp.up('/nonexistent/m4.sock', 7)
    world.reactor.advance(2.0)              # the next probe
    world.rtpp.pump()
    assert '        active sessions = 7\n' in world.run('ls beta')


def test_ls_json(world):
    reply = world.commands.execute('ls --json')
    assert reply.lines[-1] == 'OK' and len(reply.lines) == 2
    assert json.loads(reply.lines[0]) == {'clusters': [
        {'index': 0, 'name': 'alpha', 'protocol': 'unix', 'address': '/nonexistent/alpha.sock',
         'online_members': 2, 'active': 1, 'suspended': 1, 'draining': 0,
         'offline_members': 1},
        {'index': 1, 'name': 'beta', 'protocol': 'unix', 'address': '/nonexistent/beta.sock',
         'online_members': 1, 'active': 1, 'suspended': 0, 'draining': 0,
         'offline_members': 0}]}


def test_ls_cluster_json(world):
    for line in ('ls alpha --json', 'ls --json alpha'):
        reply = world.commands.execute(line)
        assert reply.lines[-1] == 'OK' and len(reply.lines) == 2
        data = json.loads(reply.lines[0])
        assert (data['index'], data['name'], data['address']) == (0, 'alpha',
                                                                  '/nonexistent/alpha.sock')
        assert [m['name'] for m in data['online']] == ['m1', 'm2']
        m1 = data['online'][0]
        assert m1 == {'name': 'm1', 'protocol': 'unix', 'address': '/nonexistent/m1.sock',
                      'wan_address': '192.0.2.1', 'lan_address': '10.0.0.1',
                      'cmd_out_address': None, 'weight': 100, 'capacity': 2500,
                      'state': 'online', 'active_sessions': 12,
                      'capacity_utilization': pytest.approx(0.48),
                      'average_rtpc_delay': pytest.approx(DELAY), 'status': 'ACTIVE'}
        assert data['offline'] == [
            {'name': 'm3', 'protocol': 'unix', 'address': '/nonexistent/m3.sock',
             'wan_address': None, 'lan_address': None, 'cmd_out_address': '127.0.0.2',
             'weight': 50, 'capacity': 1000, 'state': 'offline', 'active_sessions': None,
             'capacity_utilization': None, 'average_rtpc_delay': None, 'status': 'ACTIVE'}]
    assert world.run('ls gamma --json') == 'ERROR: gamma: cluster not found\n'


# --- formatting of what a unix-only runtime cannot show ------------------------------------------

class StubClient:
    rtt = None

    def send(self, text, callback, timeout=None):
        pass

    def close(self):
        pass


def stub_cluster(endpoint: Endpoint, members: list[tuple[MemberConfig, str, dict | None]]):
    cluster = Cluster(ClusterConfig('edge', endpoint, tuple(m for m, _, _ in members)), None)
    for config, state, stats in members:
        member = Member(config, StubClient(), None)
        member.state, member.stats = state, stats
        cluster.add_member(member)
    return cluster


def test_udp_addresses_unknown_sessions_and_draining_status():
    udp = MemberConfig('b-udp', Endpoint('udp', '127.0.0.1', 22222), 10, 200)
    udp6 = MemberConfig('a-udp6', Endpoint('udp6', '::1', 22223), 20, 300, 'SUSPENDED')
    cluster = stub_cluster(Endpoint('udp', '127.0.0.1', 22222),
                           [(udp, ONLINE, None), (udp6, ONLINE, None)])
    cluster.members['b-udp'].status = DRAINING
    runtime = type('R', (), {'clusters': {'edge': cluster}})()
    commands = AdminCommands(runtime)
    assert commands.execute('ls').text() == (
        'Cluster: #0\n    name = edge\n    address = 127.0.0.1:22222\n'
        '    online members = 2 (0 active, 1 suspended, 1 draining)\n'
        '    offline members = 0\nOK\n')
    assert commands.execute('ls edge').text() == '''\
Online members of the cluster #0:
    RTPproxy: #0
        name = a-udp6
        address = [::1]:22223
        weight = 20
        capacity = 300
        state = online
        active sessions = UNKNOWN
        capacity utilization = 0.000000%
        average rtpc delay = 0.000000 sec
        status = SUSPENDED

    RTPproxy: #1
        name = b-udp
        address = 127.0.0.1:22222
        weight = 10
        capacity = 200
        state = online
        active sessions = UNKNOWN
        capacity utilization = 0.000000%
        average rtpc delay = 0.000000 sec
        status = DRAINING

Offline members of the cluster #0:

OK
'''
    member = json.loads(commands.execute('ls edge --json').lines[0])['online'][0]
    assert (member['address'], member['active_sessions']) == ('[::1]:22223', None)


# --- modify -----------------------------------------------------------------------------------

def test_add_member_which_then_comes_online(world):
    world.rtpp.up('/nonexistent/m5.sock', 3)
    line = ('modify alpha add name=m5,protocol=unix,address=/nonexistent/m5.sock,capacity=300,'
            'weight=7,lan_address=10.0.0.5')
    assert world.run(line) == 'OK\n'
    world.rtpp.pump()
    member = world.cluster().members['m5']
    assert (member.online, member.status, member.weight, member.capacity) == \
        (True, 'ACTIVE', 7, 300)
    assert world.run('ls alpha').split('\n\n')[2] == '''\
    RTPproxy: #2
        name = m5
        address = /nonexistent/m5.sock
        lan_address = 10.0.0.5
        weight = 7
        capacity = 300
        state = online
        active sessions = 3
        capacity utilization = 1.000000%
        average rtpc delay = 0.000312 sec
        status = ACTIVE'''
    assert 'online members = 3 (2 active, 1 suspended, 0 draining)' in world.run('ls')


def test_add_suspended_member_and_spaces_around_values(world):
    assert world.run('modify beta add name = m6 , protocol=UNIX, address=/nonexistent/m6.sock,'
                     'capacity=10,weight=1,status=suspended') == 'OK\n'
    assert world.cluster('beta').members['m6'].status == 'SUSPENDED'


def test_add_existing_member(world):
    assert world.run('modify alpha add name=m1,protocol=unix,address=/nonexistent/x.sock,'
                     'capacity=1,weight=1') == 'ERROR: m1: RTPproxy already exists\n'


def test_pause_and_resume(world):
    assert world.run('modify alpha pause m1') == 'OK\n'
    assert world.cluster().members['m1'].status == 'SUSPENDED'
    assert 'online members = 2 (0 active, 2 suspended, 0 draining)' in world.run('ls')
    assert world.run('modify alpha resume m2') == 'OK\n'
    assert world.run('modify alpha resume m1') == 'OK\n'
    assert 'online members = 2 (2 active, 0 suspended, 0 draining)' in world.run('ls')
    assert world.run('modify alpha suspend m2') == 'OK\n'     # the original README's word
    assert world.cluster().members['m2'].status == 'SUSPENDED'


def test_delete_member_without_sessions_removes_it_at_once(world):
    assert world.run('modify alpha delete m2') == 'OK\n'
    assert 'm2' not in world.cluster().members
    assert world.run('modify alpha remove m3') == 'OK\n'      # an offline one
    assert 'online members = 1 (1 active, 0 suspended, 0 draining)\n' \
        '    offline members = 0' in world.run('ls')
    assert world.run('modify alpha pause m2') == 'ERROR: m2: RTPproxy not found\n'


def test_delete_member_with_sessions_drains_it_until_they_end(world):
    store = world.cluster().store
    store.bind('call-1', 'm1')
    store.bind('call-2', 'm1')
    assert world.run('modify alpha delete m1') == 'OK\n'
    assert world.cluster().members['m1'].status == DRAINING
    assert 'online members = 2 (0 active, 1 suspended, 1 draining)' in world.run('ls')
    assert '        status = DRAINING\n' in world.run('ls alpha')
    assert world.run('modify alpha resume m1') == (
        'ERROR: m1: RTPproxy is being removed (draining); it cannot be paused or resumed\n')
    assert world.run('modify alpha delete m1') == 'OK\n'      # again: still draining
    store.unbind('call-1')
    world.reactor.advance(0)
    assert 'm1' in world.cluster().members
    store.unbind('call-2')
    world.reactor.advance(0)
    assert 'm1' not in world.cluster().members
    assert 'online members = 1 (0 active, 1 suspended, 0 draining)' in world.run('ls')


# --- reload -----------------------------------------------------------------------------------

def test_reload_applies_the_file(world):
    world.write(config_xml([M1, member_xml('m2', status='ACTIVE')], [M4, member_xml('m7')]))
    assert world.run('reload') == 'Loaded 2 clusters and 4 RTP proxies\nOK\n'
    world.rtpp.pump()
    assert world.cluster().members['m2'].status == 'ACTIVE'
    assert 'm3' not in world.cluster().members
    assert 'm7' in world.cluster('beta').members


def test_reload_restores_a_paused_member_from_the_file(world):
    world.run('modify alpha pause m1')
    assert world.run('reload') == 'Loaded 2 clusters and 4 RTP proxies\nOK\n'
    assert world.cluster().members['m1'].status == 'ACTIVE'


def test_reload_with_a_broken_file_keeps_the_running_configuration(world):
    before = world.run('ls') + world.run('ls alpha')
    world.write(config_xml([M1, member_xml('m2', weight=0)]))
    with pytest.raises(ConfigError) as expected:
        load_config(world.config_path)
    reply = world.run('reload')
    assert reply == 'ERROR: %s\n' % expected.value
    assert 'rtp_cluster.xml:1:' in reply and 'weight' in reply
    assert world.run('ls') + world.run('ls alpha') == before
    world.write('<rtp_cluster_config><broken')
    reply = world.commands.execute('reload')
    assert reply.is_error and len(reply.lines) == 1 and 'not well-formed' in reply.lines[0]
    os.unlink(world.config_path)
    reply = world.commands.execute('reload')
    assert reply.is_error and 'cannot read the configuration file' in reply.lines[0]
    assert world.run('ls') + world.run('ls alpha') == before


# --- help, quit, bad input ----------------------------------------------------------------------

def test_help(world):
    for word in ('help', 'h'):
        reply = world.commands.execute(word)
        assert reply.lines[0] == 'Supported commands:'
        assert '\tls [CLUSTER_NAME] [--json]' in reply.lines
        assert '\tmodify CLUSTER_NAME [add|remove|delete|pause|resume] ARGS' in reply.lines
        assert '\treload' in reply.lines and '\tquit' in reply.lines
        assert reply.lines[-1] == 'OK' and not reply.close


def test_auth_without_a_secret_says_none_is_needed(world):
    reply = world.commands.execute('auth some-secret-of-sixteen')
    assert reply.lines == ('ERROR: no authentication needed: this connection is authenticated '
                           'already, or the admin socket has no --admin-secret-file',)
    assert '\tauth SECRET' in world.commands.execute('help').lines


def test_quit_words_close_without_output(world):
    for word in ('quit', 'q', 'exit', '  quit  '):
        reply = world.commands.execute(word)
        assert reply == AdminReply((), close=True)


def test_empty_lines_get_no_reply(world):
    for line in ('', '   ', '\t'):
        assert world.commands.execute(line) == AdminReply()


@pytest.mark.parametrize('line,expected', BAD_INPUT, ids=[b[0][:40] for b in BAD_INPUT])
def test_bad_input_is_one_error_line(world, line, expected):
    before = world.run('ls alpha')
    reply = world.commands.execute(line)
    assert reply.lines == (expected,)
    assert not reply.close
    assert world.run('ls alpha') == before


def test_add_that_the_runtime_refuses_is_an_error(world, monkeypatch):
    def refuse(cluster, config):
        raise StartupError('cannot resolve nowhere.invalid: Name or service not known')
    monkeypatch.setattr(world.runtime, 'add_member', refuse)
    reply = world.run(ADD + 'name=x,protocol=udp,address=nowhere.invalid,capacity=1,weight=1')
    assert reply == ('ERROR: modify add: cannot resolve nowhere.invalid: Name or service '
                     'not known\n')


def test_unexpected_exception_is_an_internal_error_and_logged(world, monkeypatch):
    events = []
    globalLogPublisher.addObserver(events.append)

    def broken():
        raise RuntimeError('boom\nsecond line')
    monkeypatch.setattr(world.runtime, 'reload', broken)
    try:
        reply = world.commands.execute('reload')
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert reply.lines == ('ERROR: internal error: RuntimeError: boom second line',)
    failures = [e for e in events if e.get('log_failure') is not None]
    assert failures and 'boom' in failures[0]['log_failure'].getTraceback()
    assert world.run('ls beta') == LS_BETA


def test_add_checks_names_as_the_configuration_file_does(world):
    # the schema's check: control characters (C0, DEL and C1) are refused
    reply = world.run(ADD + 'name=a\x85b,protocol=unix,address=/nonexistent/x.sock,capacity=1,'
                      'weight=1')
    assert reply == 'ERROR: modify add: name "a?b" contains control characters\n'
    assert 'a\x85b' not in world.cluster().members
