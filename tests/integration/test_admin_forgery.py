"""Admin output cannot be forged (issue 16, item 7), through the real daemon.

A SIP proxy chooses call-ids and tags; one that reads as `ERROR:x` or `OK` once made
`rtp_cluster_client ls sessions` stop at that line and exit 1.  Here such calls are created
over UDP through rtp_cluster (with a real rtp-io member and a real redis-server, which the
sharing commands need) and listed with the real client.
"""
from __future__ import annotations

import pytest

from tests.support.daemon import Daemon, cluster_xml, member_xml
from tests.support.redis_server import RedisServer

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def start_sharing_daemon(procs, tmp_path, redis_server: RedisServer) -> Daemon:
    member = procs.member('udp')
    xml, spec = cluster_xml([member_xml('m1', member)])
    redis_xml = ('<redis><url>%s</url><instance_id>a</instance_id></redis>' % redis_server.url)
    xml = xml.replace('<rtp_cluster_config>', '<rtp_cluster_config>' + redis_xml, 1)
    return Daemon.start(procs, tmp_path, (xml, spec), wait_online=['m1'])


def test_call_ids_that_read_as_reply_ends_are_escaped_in_ls_sessions(procs, tmp_path,
                                                                      redis_server):
    daemon = start_sharing_daemon(procs, tmp_path, redis_server)
    forged = {'ERROR:x': '\\x45RROR:x', 'OK': '\\x4fK', 'back\\slash': 'back\\\\slash'}
    for index, call_id in enumerate(list(forged) + ['plain']):
        reply = daemon.command('U %s 127.0.0.1 %d ft%d' % (call_id, 4000 + index, index))
        assert reply.split()[0].isdigit(), reply

    listing = daemon.admin_command('ls', 'sessions')

    assert listing.returncode == 0, listing
    lines = listing.stdout.splitlines()
    assert lines[-1] == 'OK'
    listed = {line.split(' ', 1)[0] for line in lines[:-1]}
    assert listed == set(forged.values()) | {'plain'}
    detail = daemon.admin_command('ls', 'session', 'ERROR:x')
    assert detail.returncode == 0, detail
    assert detail.stdout.splitlines()[0] == 'Session \\x45RROR:x:'
