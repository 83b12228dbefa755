"""Operators' view of the real daemon: Prometheus scraping /metrics, /health, the status page
in headless Chromium, systemd notifications on a test NOTIFY_SOCKET, JSON log lines.

Members are real RTPproxies (rtp-io) in child processes; Prometheus and Chromium are the
Debian packages (scripts/debian-deps.sh test).  Every process is stopped by the test.
"""
from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from rtp_cluster.core.status import REFRESH_SECONDS
from tests.support.chromium import Chromium
from tests.support.cluster_proc import ClusterProc, member_xml, run_calls
from tests.support.procs import ROOT, free_tcp_port, free_udp_port
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow
WAIT = 30.0


# --- helpers -------------------------------------------------------------------------------

def config_xml(clusters: dict[str, list], http_port: int | None, extra: str = '') -> tuple[str, str]:
    """(XML, control spec of the first cluster) with one UDP cluster per entry of `clusters`."""
    body, first = [], None
    for name, members in clusters.items():
        port = free_udp_port()
        first = first or 'udp:127.0.0.1:%d' % port
        body.append('<rtp_cluster><name>%s</name><protocol>udp</protocol>'
                    '<address>127.0.0.1:%d</address>%s</rtp_cluster>'
                    % (name, port, ''.join(member_xml(n, m) for n, m in members)))
    if http_port is not None:
        extra += '<http><address>127.0.0.1:%d</address></http>' % http_port
    return ('<?xml version="1.0"?>\n<rtp_cluster_config>%s%s</rtp_cluster_config>\n'
            % (''.join(body), extra)), first


def http_get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen('http://127.0.0.1:%d%s' % (port, path), timeout=5) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_for(predicate, what: str, timeout: float = WAIT):
    return wait_until(predicate, what, timeout, interval=0.1)


def member_state(port: int, cluster: str, member: str) -> str:
    data = json.loads(http_get(port, '/status.json')[1])
    found = [m for c in data['clusters'] if c['name'] == cluster
             for m in c['members'] if m['name'] == member]
    return found[0]['state'] if found else ''


def restart_member(procs, old) -> object:
    """A new RTPproxy on the control address of one that was killed."""
    port = int(old.address.rsplit(':', 1)[1])
    return procs.member('udp', port=port)


# --- /metrics scraped by a real Prometheus -----------------------------------------------------

class Prometheus:
    def __init__(self, procs, tmp_path, target_port: int) -> None:
        self.port = free_tcp_port()
        config = tmp_path / 'prometheus.yml'
        config.write_text('global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n'
                          'scrape_configs:\n  - job_name: rtp_cluster\n'
                          '    static_configs:\n      - targets: ["127.0.0.1:%d"]\n' % target_port)
        self.log = open(tmp_path / 'prometheus.log', 'w')
        self.proc = procs.add(subprocess.Popen(
            ['prometheus', '--config.file=%s' % config,
             '--storage.tsdb.path=%s' % (tmp_path / 'tsdb'),
             '--web.listen-address=127.0.0.1:%d' % self.port, '--log.level=warn'],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT))
        wait_for(self.ready, 'prometheus to be ready')

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError('prometheus exited with %s' % self.proc.returncode)
        try:
            return http_get(self.port, '/-/ready')[0] == 200
        except OSError:
            return False

    def query(self, promql: str) -> list[dict]:
        status, body = http_get(self.port, '/api/v1/query?' + urllib.parse.urlencode(
            {'query': promql}))
        assert status == 200, body
        data = json.loads(body)
        assert data['status'] == 'success', data
        return data['data']['result']

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self.log.close()


@pytest.mark.skipif(shutil.which('prometheus') is None, reason='Debian package prometheus')
def test_prometheus_scrapes_member_up_and_command_rate(procs, tmp_path):
    m1, m2 = procs.member(), procs.member()
    http_port = free_tcp_port()
    cluster = ClusterProc.start(procs, tmp_path, config_xml({'main': [('m1', m1), ('m2', m2)]},
                                                           http_port),
                                wait_online=['m1', 'm2'], extra_args=['--probe-interval', '0.5'])
    prometheus = Prometheus(procs, tmp_path, http_port)
    try:
        def member_up() -> dict[str, float]:
            return {r['metric']['member']: float(r['value'][1])
                    for r in prometheus.query('rtp_cluster_member_up{cluster="main"}')}
        wait_for(lambda: member_up() == {'m1': 1.0, 'm2': 1.0}, 'both members up in prometheus')
        assert member_up() == {'m1': 1.0, 'm2': 1.0}

        calls = [['U call-%d 127.0.0.1 %d from-%d' % (i, 4000 + 2 * i, i),
                  'D call-%d from-%d' % (i, i)] for i in range(200)]
        for _ in range(3):          # traffic over a few scrapes
            replies = run_calls(cluster.control, calls)
            assert all(r is not None and not r[0].startswith('E') for r in replies), replies[:3]
            time.sleep(1.0)

        def command_rate() -> float:
            result = prometheus.query('sum(rate(rtp_cluster_commands_total{cluster="main"}[10s]))')
            return float(result[0]['value'][1]) if result else 0.0
        wait_for(lambda: command_rate() > 0, 'a command rate above zero')
        assert command_rate() > 0

        def counted(command: str) -> float:
            query = 'rtp_cluster_commands_total{cluster="main",command="%s"}' % command
            result = prometheus.query(query)
            return float(result[0]['value'][1]) if result else 0.0
        wait_for(lambda: counted('U') == 600 and counted('D') == 600, 'all 600 U and D counted')

        m2.kill()
        wait_for(lambda: member_up() == {'m1': 1.0, 'm2': 0.0}, 'm2 down in prometheus')
        assert member_up() == {'m1': 1.0, 'm2': 0.0}
    finally:
        prometheus.close()
        cluster.stop()


# --- /health -------------------------------------------------------------------------------------

def test_health_goes_503_when_the_last_member_of_a_cluster_dies_and_back(procs, tmp_path):
    a1, b1 = procs.member(), procs.member()
    http_port = free_tcp_port()
    cluster = ClusterProc.start(procs, tmp_path, config_xml({'a': [('a1', a1)], 'b': [('b1', b1)]},
                                                           http_port),
                                wait_online=['a1', 'b1'], extra_args=['--probe-interval', '0.5'])
    try:
        assert http_get(http_port, '/health') == (200, b'{"status":"ok"}\n')
        a1.kill()
        status, body = wait_for(lambda: (lambda r: r if r[0] == 503 else None)(
            http_get(http_port, '/health')), '/health to fail')
        assert json.loads(body) == {'status': 'unhealthy',
                                    'reasons': ['cluster a has no online ACTIVE member']}
        restart_member(procs, a1)
        assert wait_for(lambda: http_get(http_port, '/health')[0] == 200, '/health back to 200')
        assert http_get(http_port, '/health') == (200, b'{"status":"ok"}\n')
        # a suspended member serves no new calls: not healthy either
        assert cluster.admin_command('modify', 'b', 'pause', 'b1').returncode == 0
        status, body = http_get(http_port, '/health')
        assert status == 503 and b'cluster b has no online ACTIVE member' in body
    finally:
        cluster.stop()


def test_http_errors_and_methods(procs, tmp_path):
    m1 = procs.member()
    http_port = free_tcp_port()
    cluster = ClusterProc.start(procs, tmp_path, config_xml({'main': [('m1', m1)]}, http_port),
                                wait_online=['m1'])
    try:
        assert http_get(http_port, '/nothing')[0] == 404
        assert http_get(http_port, '/metrics/deeper')[0] == 404
        request = urllib.request.Request('http://127.0.0.1:%d/health' % http_port, data=b'x',
                                         method='POST')
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=5)
        assert info.value.code == 405
        status, body = http_get(http_port, '/metrics')
        assert status == 200 and b'rtp_cluster_member_up{cluster="main",member="m1"} 1.0' in body
        rtt_count = re.search(rb'^rtp_cluster_member_rtt_seconds_count\{cluster="main",member="m1"\} '
                              rb'([0-9.e+]+)$', body, re.M)
        assert rtt_count and float(rtt_count.group(1)) >= 3      # V, VF..., Ib of the probe
        data = json.loads(http_get(http_port, '/status.json')[1])
        assert [m['name'] for m in data['clusters'][0]['members']] == ['m1']
        assert cluster.command('V') == '20040107'      # the control path is unaffected
        for path in ('/metrics', '/health', '/'):
            head = urllib.request.Request('http://127.0.0.1:%d%s' % (http_port, path),
                                          method='HEAD')
            with urllib.request.urlopen(head, timeout=5) as reply:
                assert reply.status == 200 and reply.read() == b''
        # a scraper that hangs up before the text is formatted
        with socket.create_connection(('127.0.0.1', http_port)) as conn:
            conn.sendall(b'GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n')
        assert http_get(http_port, '/metrics')[0] == 200
        assert 'Traceback' not in cluster.log() and 'Unhandled' not in cluster.log()
    finally:
        cluster.stop()



def test_metrics_carry_the_garbage_collectors_pauses_by_generation(procs, tmp_path):
    """The daemon times its collections from start-up on (rtp_cluster_gc_pause_seconds)."""
    m1 = procs.member()
    http_port = free_tcp_port()
    cluster = ClusterProc.start(procs, tmp_path, config_xml({'main': [('m1', m1)]}, http_port),
                                wait_online=['m1'])
    try:
        body = http_get(http_port, '/metrics')[1]
        assert b'# TYPE rtp_cluster_gc_pause_seconds histogram' in body
        counts = dict(re.findall(rb'^rtp_cluster_gc_pause_seconds_count\{generation="(\d)"\} '
                                 rb'([0-9.e+]+)$', body, re.M))
        assert sorted(counts) == [b'0', b'1', b'2']
        for generation in counts:
            infinite = re.search(rb'^rtp_cluster_gc_pause_seconds_bucket\{generation="%s",'
                                 rb'le="\+Inf"\} ([0-9.e+]+)$' % generation, body, re.M)
            assert infinite and float(infinite.group(1)) == float(counts[generation])
    finally:
        cluster.stop()

# --- the status page in headless Chromium ------------------------------------------------------

def member_rows(dom: str) -> dict[str, str]:
    return dict((name, state) for state, name in
                re.findall(r'<tr class="member (\w+)" data-member="([\w-]+)">', dom))


@pytest.mark.skipif(shutil.which('chromium') is None, reason='Debian package chromium')
def test_status_page_in_chromium_shows_members_and_a_killed_one_goes_down(procs, tmp_path):
    m1, m2 = procs.member(), procs.member()
    http_port = free_tcp_port()
    cluster = ClusterProc.start(procs, tmp_path, config_xml({'main': [('m1', m1), ('m2', m2)]},
                                                           http_port),
                                wait_online=['m1', 'm2'], extra_args=['--probe-interval', '0.5'])
    browser = Chromium(width=1280, height=480)
    try:
        browser.open('http://127.0.0.1:%d/' % http_port)
        wait_for(lambda: member_rows(browser.dom()) == {'m1': 'online', 'm2': 'online'},
                 'both members online on the page')
        dom = browser.dom()
        assert 'class="health-ok">healthy' in dom
        assert '<td class="state">online</td>' in dom
        png = browser.screenshot()
        assert png[:8] == b'\x89PNG\r\n\x1a\n' and len(png) > 10_000
        width, height = int.from_bytes(png[16:20], 'big'), int.from_bytes(png[20:24], 'big')
        assert (width, height) == (1280, 480)

        first_load = browser.load_id()
        m2.kill()
        # the test does not reload: the page's own refresh must bring the new state
        wait_for(lambda: member_rows(browser.dom()).get('m2') in ('offline', 'probing'),
                 'm2 shown down after the page refreshed itself', timeout=REFRESH_SECONDS * 4)
        assert browser.load_id() != first_load
        rows = member_rows(browser.dom())
        assert rows['m1'] == 'online' and rows['m2'] in ('offline', 'probing')
        assert len(browser.screenshot()) > 10_000
    finally:
        browser.close()
        cluster.stop()


# --- systemd notifications -----------------------------------------------------------------------

class NotifySocket:
    def __init__(self, tmp_path) -> None:
        self.path = str(tmp_path / 'notify.sock')
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages: list[tuple[float, str]] = []

    def collect(self, seconds: float) -> None:
        self.sock.settimeout(0.05)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                self.messages.append((time.monotonic(), self.sock.recv(4096).decode()))
            except socket.timeout:
                pass

    def wait(self, text: str, timeout: float = WAIT) -> float:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for at, message in self.messages:
                if text in message.split('\n'):
                    return at
            self.collect(0.1)
        raise AssertionError('no %r among %r' % (text, self.messages))

    def close(self) -> None:
        self.sock.close()


def test_systemd_ready_status_watchdog_and_reloading(procs, tmp_path, monkeypatch):
    m1 = procs.member()
    notify = NotifySocket(tmp_path)
    monkeypatch.setenv('NOTIFY_SOCKET', notify.path)
    monkeypatch.setenv('WATCHDOG_USEC', '1000000')      # 1 s: a ping every 0.5 s
    monkeypatch.delenv('WATCHDOG_PID', raising=False)
    xml, control = config_xml({'main': [('m1', m1)]}, None)
    try:
        cluster = ClusterProc.start(procs, tmp_path, (xml, control), wait_online=['m1'])
        notify.wait('READY=1')
        ready = [m for _, m in notify.messages if 'READY=1' in m.split('\n')][0]
        assert re.search(r'^STATUS=1 clusters, [01]/1 members online, 0 sessions$', ready, re.M)
        assert cluster.command('V') == '20040107'

        notify.messages.clear()
        notify.collect(3.0)
        pings = [at for at, m in notify.messages if m == 'WATCHDOG=1']
        assert 4 <= len(pings) <= 8, notify.messages
        gaps = [b - a for a, b in zip(pings, pings[1:])]
        assert max(gaps) < 0.9, gaps
        notify.wait('STATUS=1 clusters, 1/1 members online, 0 sessions', 10)

        for trigger in ('sighup', 'admin'):
            notify.messages.clear()
            if trigger == 'sighup':
                cluster.proc.send_signal(signal.SIGHUP)
            else:
                assert cluster.admin_command('reload').returncode == 0
            reloading_at = notify.wait('RELOADING=1')
            ready_at = notify.wait('READY=1')
            assert reloading_at <= ready_at
            texts = [m for _, m in notify.messages]
            first = next(i for i, m in enumerate(texts) if m.startswith('RELOADING=1'))
            assert re.match(r'RELOADING=1\nMONOTONIC_USEC=\d+$', texts[first])
            assert any(m.startswith('READY=1') for m in texts[first + 1:]), texts

        notify.messages.clear()
        cluster.stop()
        notify.wait('STOPPING=1', 10)
    finally:
        notify.close()


def test_without_notify_socket_nothing_breaks(procs, tmp_path, monkeypatch):
    monkeypatch.delenv('NOTIFY_SOCKET', raising=False)
    m1 = procs.member()
    cluster = ClusterProc.start(procs, tmp_path, config_xml({'main': [('m1', m1)]}, None),
                                wait_online=['m1'])
    try:
        assert cluster.command('V') == '20040107'
        assert 'systemd' not in cluster.log()
    finally:
        cluster.stop()


# --- logs -------------------------------------------------------------------------------------------

def test_json_log_lines_and_structured_member_events(procs, tmp_path):
    m1 = procs.member()
    xml, control = config_xml({'main': [('m1', m1)]}, None, '<log_level>info</log_level>')
    cluster = ClusterProc.start(procs, tmp_path, (xml, control),
                                extra_args=['--log-format', 'json', '--probe-interval', '0.5'])
    try:
        def events() -> list[dict]:
            lines = [line for line in open(cluster.log_paths[1]).read().splitlines() if line]
            return [json.loads(line) for line in lines]

        def state_events() -> list[dict]:
            return [e for e in events() if e.get('event') == 'member_state']
        wait_for(lambda: any(e['new'] == 'online' for e in state_events()), 'm1 online event')
        m1.kill()
        wait_for(lambda: any(e['new'] == 'offline' for e in state_events()), 'm1 offline event')
        offline = [e for e in state_events() if e['new'] == 'offline'][0]
        assert (offline['cluster'], offline['member'], offline['old']) == ('main', 'm1', 'online')
        assert offline['reason']
        assert offline['log_level']['name'] == 'warn'
        assert cluster.admin_command('reload').returncode == 0
        wait_for(lambda: any(e.get('event') == 'reload' for e in events()), 'reload event')
    finally:
        cluster.stop()


def test_set_loglevel_and_config_log_level(procs, tmp_path):
    m1 = procs.member()
    xml, control = config_xml({'main': [('m1', m1)]}, None, '<log_level>warn</log_level>')
    cluster = ClusterProc.start(procs, tmp_path, (xml, control), extra_args=['--probe-interval', '0.5'])
    try:
        wait_for(lambda: cluster.command('V') == '20040107', 'the control socket')
        time.sleep(1.0)
        assert 'probing -> online' not in cluster.log()         # info: filtered at warn
        result = cluster.admin_command('set', 'loglevel', 'info')
        assert (result.returncode, result.stdout) == (0, 'log level: info\nOK\n')
        m1.kill()
        cluster.wait_log('member m1: online -> offline')
        restart_member(procs, m1)
        cluster.wait_log('member m1: probing -> online', WAIT)
        bad = cluster.admin_command('set', 'loglevel', 'loud')
        assert bad.returncode != 0 and 'unknown log level "loud"' in bad.stdout + bad.stderr
    finally:
        cluster.stop()


# --- the listener follows the configuration ----------------------------------------------------

def test_reload_starts_moves_and_stops_the_http_listener(procs, tmp_path):
    m1 = procs.member()
    xml, control = config_xml({'main': [('m1', m1)]}, None)
    cluster = ClusterProc.start(procs, tmp_path, (xml, control), wait_online=['m1'])

    def write(http_address: str | None) -> None:
        extra = '<http><address>%s</address></http>' % http_address if http_address else ''
        with open(cluster.config_path, 'w') as f:
            f.write(xml.replace('</rtp_cluster_config>', extra + '</rtp_cluster_config>'))

    def refused(port: int) -> bool:
        try:
            http_get(port, '/health')
        except urllib.error.URLError:
            return True
        return False
    try:
        first, second = free_tcp_port(), free_tcp_port()
        write('127.0.0.1:%d' % first)
        assert cluster.admin_command('reload').returncode == 0
        assert http_get(first, '/health') == (200, b'{"status":"ok"}\n')
        write('127.0.0.1:%d' % second)
        assert cluster.admin_command('reload').returncode == 0
        assert http_get(second, '/health')[0] == 200
        assert wait_for(lambda: refused(first), 'the old address to be closed')
        write(None)
        assert cluster.admin_command('reload').returncode == 0
        assert wait_for(lambda: refused(second), 'the listener to be gone')
        assert cluster.command('V') == '20040107'
    finally:
        cluster.stop()


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(('::1', 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason='no IPv6 loopback')
def test_http_listener_on_ipv6_loopback(procs, tmp_path):
    m1 = procs.member()
    port = free_tcp_port('::1')
    xml, control = config_xml({'main': [('m1', m1)]}, None,
                              '<http><address>[::1]:%d</address></http>' % port)
    cluster = ClusterProc.start(procs, tmp_path, (xml, control), wait_online=['m1'])
    try:
        with urllib.request.urlopen('http://[::1]:%d/health' % port, timeout=5) as reply:
            assert (reply.status, reply.read()) == (200, b'{"status":"ok"}\n')
        with pytest.raises(urllib.error.URLError):
            http_get(port, '/health')        # not on IPv4
    finally:
        cluster.stop()


def test_http_address_in_use_is_a_startup_error(procs, tmp_path):
    m1 = procs.member()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(('127.0.0.1', 0))
        busy.listen()
        port = busy.getsockname()[1]
        xml, _ = config_xml({'main': [('m1', m1)]}, port)
        path = tmp_path / 'busy.xml'
        path.write_text(xml)
        result = subprocess.run([sys.executable, '-m', 'rtp_cluster.app', '-f', '-c', str(path),
                                 '-s', 'unix:%s' % (tmp_path / 'admin.sock'),
                                 '-P', str(tmp_path / 'pid')],
                                cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert 'http listener cannot listen on 127.0.0.1:%d' % port in result.stderr
    assert not (tmp_path / 'admin.sock').exists()


# --- with Redis sharing ----------------------------------------------------------------------------

def metric_value(body: bytes, sample: str) -> float | None:
    found = re.search(rb'^' + re.escape(sample.encode()) + rb' ([0-9.e+-]+)$', body, re.M)
    return float(found.group(1)) if found else None


@pytest.mark.redis
def test_redis_metrics_and_duplicate_instance_health(procs, tmp_path):
    from tests.support.redis_server import RedisServer
    server = RedisServer().start()
    try:
        m1 = procs.member()
        redis_xml = ('<redis><url>%s</url><instance_id>obs</instance_id>'
                     '<resync_interval>1</resync_interval></redis>' % server.url)
        http_port = free_tcp_port()
        xml, control = config_xml({'main': [('m1', m1)]}, http_port, redis_xml)
        first_dir = tmp_path / 'first'
        first_dir.mkdir()
        cluster = ClusterProc.start(procs, first_dir, (xml, control), wait_online=['m1'])
        assert cluster.command('U obs-call 127.0.0.1 4000 ft').split()[0].isdigit()

        def scrape() -> bytes:
            return http_get(http_port, '/metrics')[1]
        wait_for(lambda: (metric_value(scrape(), 'rtp_cluster_redis_resyncs_total') or 0) >= 1,
                 'a finished resync counted')
        body = scrape()
        assert metric_value(body, 'rtp_cluster_redis_up') == 1
        assert metric_value(body, 'rtp_cluster_redis_subscriber_up') == 1
        assert metric_value(body, 'rtp_cluster_sessions{cluster="main",ownership="own"}') == 1
        wait_for(lambda: (metric_value(scrape(), 'rtp_cluster_redis_writes_total') or 0) >= 1,
                 'the record written to Redis')
        assert http_get(http_port, '/health')[0] == 200

        # a second process with the same instance id: both must report it, /health fails
        twin_dir = tmp_path / 'twin'
        twin_dir.mkdir()
        twin_xml, twin_control = config_xml({'main': [('m1', m1)]}, None, redis_xml)
        twin = ClusterProc.start(procs, twin_dir, (twin_xml, twin_control), wait_online=['m1'])
        status, body = wait_for(lambda: (lambda r: r if r[0] == 503 else None)(
            http_get(http_port, '/health')), '/health to report the duplicate instance id')
        assert json.loads(body)['reasons'] == [
            'another process writes to Redis with this instance id']
        assert metric_value(scrape(), 'rtp_cluster_redis_duplicate_instance') == 1
        twin.stop()
        cluster.stop()
    finally:
        server.stop()
