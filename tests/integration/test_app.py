"""The rtp_cluster daemon: command line, -d, foreground and daemon mode, signals, errors.

Daemon tests run `python -m rtp_cluster.app` in a child process with real rtp-io members
and talk to it over a real UDP control socket and the unix admin socket.
"""
from __future__ import annotations

import grp
import os
import pathlib
import pwd
import shlex
import signal
import socket
import shutil
import subprocess
import sys
import tempfile
import tomllib

import pytest

from tests.support import waiting
from tests.support.procs import control_command, free_udp_port
from rtp_cluster import __version__
from rtp_cluster import app
from rtp_cluster.core import protocol
from rtp_cluster.core.config import ConfigError, load_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WAIT = 15.0                   # seconds any single condition may take


# --- helpers -------------------------------------------------------------------------------

def member_xml(name: str, address: str) -> str:
    return ('<rtpproxy><name>%s</name><protocol>udp</protocol><address>%s</address>'
            '<weight>100</weight><capacity>1000</capacity><status>ACTIVE</status>'
            '</rtpproxy>' % (name, address))


def write_config(path, port: int, members: list[str]) -> str:
    body = ''.join(member_xml('m%d' % i, a) for i, a in enumerate(members))
    path.write_text('<?xml version="1.0"?>\n<rtp_cluster_config><rtp_cluster>'
                    '<name>main</name><protocol>udp</protocol><address>127.0.0.1:%d</address>'
                    '%s</rtp_cluster></rtp_cluster_config>\n' % (port, body))
    return str(path)


def wait_until(predicate, what: str, timeout: float = WAIT):
    return waiting.wait_until(predicate, what, timeout)


def answers_v(port: int) -> bool:
    try:
        return control_command('udp:127.0.0.1:%d' % port, 'V', 0.3).strip() == '20040107'
    except OSError:
        return False


def pid_running(pid: int) -> bool:
    """Alive and not a zombie (a daemon is not our child, nobody may reap it quickly)."""
    try:
        with open('/proc/%d/stat' % pid) as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except OSError:
        return False


def read(path) -> str:
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ''


def app_command(*args: str) -> list[str]:
    # RTPC_APP_PYTHON runs the daemon under another interpreter, e.g. Debian's python3
    # with python3-twisted 22.4: RTPC_APP_PYTHON=/usr/bin/python3 pytest tests/test_app.py
    python = os.environ.get('RTPC_APP_PYTHON', sys.executable)
    return [python, '-m', 'rtp_cluster.app', *args]


def child_env() -> dict[str, str]:
    paths = [ROOT] + [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(paths))


def run_app(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(app_command(*args), cwd=ROOT, env=child_env(), capture_output=True,
                          text=True, timeout=timeout)


def admin_ls(sock_path: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, os.path.join(ROOT, 'rtp_cluster_client.py'),
                           '-s', 'unix:' + sock_path, 'ls'],
                          capture_output=True, text=True, timeout=30)


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert 'Traceback' not in result.stderr + result.stdout
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture
def setup(tmp_path, procs):
    """Two real members and a config with a free cluster port."""
    members = [procs.member(), procs.member()]
    port = free_udp_port()
    config = write_config(tmp_path / 'rtp_cluster.xml', port, [m.address for m in members])
    return {'port': port, 'config': config, 'admin': str(tmp_path / 'admin.sock'),
            'pidfile': str(tmp_path / 'rtp_cluster.pid'), 'log': str(tmp_path / 'rtp_cluster.log'),
            'members': members, 'tmp': tmp_path}


@pytest.fixture
def daemon_pids():
    """Pids of processes that are not our children; any still running at teardown: SIGKILL."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if pid_running(pid):
            os.kill(pid, signal.SIGKILL)


def start_foreground(procs, s, *extra: str, preexec_fn=None) -> subprocess.Popen:
    out = open(s['tmp'] / 'stdout.txt', 'w')
    proc = procs.add(subprocess.Popen(
        app_command('-f', '-c', s['config'], '-s', 'unix:' + s['admin'], '-P', s['pidfile'],
                    *extra),
        cwd=ROOT, env=child_env(), stdout=out, stderr=subprocess.STDOUT, text=True,
        preexec_fn=preexec_fn))
    out.close()
    wait_until(lambda: answers_v(s['port']) or proc.poll() is not None, 'the cluster to answer V')
    assert proc.poll() is None, read(s['tmp'] / 'stdout.txt')
    return proc


def start_daemon(s, daemon_pids) -> int:
    result = run_app('-c', s['config'], '-s', 'unix:' + s['admin'], '-P', s['pidfile'],
                     '-L', s['log'])
    assert result.returncode == 0, result.stderr
    pid = int(wait_until(lambda: read(s['pidfile']).strip(), 'the pidfile'))
    daemon_pids.append(pid)
    return pid


def stop_daemon(pid: int) -> None:
    os.kill(pid, signal.SIGTERM)
    wait_until(lambda: not pid_running(pid), 'the daemon to exit')


# --- command line --------------------------------------------------------------------------

def test_check_valid_config(tmp_path, capsys):
    path = write_config(tmp_path / 'c.xml', 22222, ['127.0.0.1:22223', '127.0.0.1:22224'])
    assert app.main(['-d', '-c', path]) == 0
    out = capsys.readouterr().out
    assert out == '%s: configuration is valid (1 cluster, 2 members)\n' % path


def test_check_counts_in_the_right_number(tmp_path, capsys):
    path = tmp_path / 'two.xml'
    path.write_text('<?xml version="1.0"?>\n<rtp_cluster_config>'
                    '<rtp_cluster><name>a</name><protocol>udp</protocol><address>127.0.0.1:22222</address></rtp_cluster>'
                    '<rtp_cluster><name>b</name><protocol>udp</protocol><address>127.0.0.1:22232</address></rtp_cluster>'
                    '</rtp_cluster_config>\n')
    assert app.main(['-d', '-c', str(path)]) == 0
    assert capsys.readouterr().out == '%s: configuration is valid (2 clusters, 0 members)\n' % path


def test_check_invalid_config_prints_the_config_error(tmp_path, capsys):
    path = tmp_path / 'bad.xml'
    path.write_text('<rtp_cluster_config><rtp_cluster><name>x</name></rtp_cluster>'
                    '</rtp_cluster_config>\n')
    with pytest.raises(ConfigError) as expected:
        load_config(str(path))
    assert app.main(['-d', '-c', str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ''
    assert captured.err == 'rtp_cluster: %s\n' % expected.value


def test_check_sentinel_configuration(tmp_path, capsys):
    cluster = ('<rtp_cluster><name>a</name><protocol>udp</protocol>'
               '<address>127.0.0.1:22222</address></rtp_cluster>')
    good, bad = tmp_path / 'good.xml', tmp_path / 'bad.xml'
    good.write_text('<rtp_cluster_config>%s<redis><sentinel master="rtpc">10.0.0.1:26379 '
                    '10.0.0.2:26379</sentinel><instance_id>a</instance_id></redis>'
                    '</rtp_cluster_config>\n' % cluster)
    bad.write_text('<rtp_cluster_config>%s<redis>\n<sentinel master="rtpc">10.0.0.1:26379 '
                   '10.0.0.2</sentinel><instance_id>a</instance_id></redis>'
                   '</rtp_cluster_config>\n' % cluster)
    assert app.main(['-d', '-c', str(good)]) == 0
    assert capsys.readouterr().out == '%s: configuration is valid (1 cluster, 0 members)\n' % good
    assert app.main(['-d', '-c', str(bad)]) == 1
    assert capsys.readouterr().err == (
        'rtp_cluster: %s:2: <sentinel> of redis: "10.0.0.2" is not HOST:PORT; expected '
        'HOST:PORT or [IPV6]:PORT, separated by white space (sentinels usually listen on '
        '26379)\n' % bad)


def test_check_missing_file(tmp_path, capsys):
    path = str(tmp_path / 'missing.xml')
    assert app.main(['-d', '-c', path]) == 1
    err = capsys.readouterr().err
    assert path in err and len(err.strip().splitlines()) == 1


def test_check_as_a_command(tmp_path):
    path = write_config(tmp_path / 'c.xml', 22222, ['127.0.0.1:22223'])
    result = run_app('-d', '-c', path)
    assert result.returncode == 0
    assert result.stdout == '%s: configuration is valid (1 cluster, 1 member)\n' % path
    (tmp_path / 'bad.xml').write_text('not xml')
    assert_one_line_error(run_app('-d', '-c', str(tmp_path / 'bad.xml')), 'rtp_cluster: ', 'bad.xml')


def test_probe_interval_default_reads_the_same_in_help_and_readme(capsys):
    assert app.main(['--help']) == 0
    help_text = ' '.join(capsys.readouterr().out.split())
    with open(os.path.join(ROOT, 'README.md')) as f:
        row, = [line for line in f if line.startswith('| `--probe-interval')]
    readme_default = row.rstrip().rstrip('|').rsplit('|', 1)[1].strip()
    assert readme_default == '%g' % app.Options.probe_interval
    assert 'probed again (default: %s)' % readme_default in help_text


def test_help_lists_the_original_options(capsys):
    assert app.main(['--help']) == 0
    out = capsys.readouterr().out
    for option in ('-f', '-d', '-c conffile', '-s admin_socket', '-P pidfile', '-L logfile',
                   '-o user:group', '--version'):
        assert option in out
    for default in (app.DEFAULT_CONFIG, app.DEFAULT_ADMIN, app.DEFAULT_PIDFILE, app.DEFAULT_LOGFILE):
        assert default in out


def test_version(capsys):
    assert app.main(['--version']) == 0
    assert capsys.readouterr().out == 'rtp_cluster %s\n' % __version__


def test_unknown_option_exits_1(capsys):
    assert app.main(['-x']) == 1
    assert 'unrecognized arguments: -x' in capsys.readouterr().err


@pytest.mark.parametrize('owner, message', [
    ('no_such_user_rtpc:root', "unknown user 'no_such_user_rtpc'"),
    ('root:no_such_group_rtpc', "unknown group 'no_such_group_rtpc'"),
    ('rootonly', 'expected user:group'),
])
def test_bad_owner_is_one_line_exit_1(tmp_path, owner, message):
    path = write_config(tmp_path / 'c.xml', 22222, ['127.0.0.1:22223'])
    assert_one_line_error(run_app('-f', '-c', path, '-o', owner, '-P', str(tmp_path / 'p')),
                          message)
    assert not (tmp_path / 'p').exists()


@pytest.mark.parametrize('spec', ['udp:127.0.0.1:5000', 'tcp:127.0.0.1:port', 'tcp:', 'unix:',
                                  'bogus:x'])
def test_bad_admin_socket_is_one_line_exit_1(tmp_path, spec):
    path = write_config(tmp_path / 'c.xml', 22222, ['127.0.0.1:22223'])
    assert_one_line_error(run_app('-f', '-c', path, '-s', spec, '-P', str(tmp_path / 'p')), '-s')


def test_admin_spec_normalization(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert app.normalize_admin_spec('/run/x.sock') == 'unix:/run/x.sock'
    assert app.normalize_admin_spec('unix:/run/x.sock') == 'unix:/run/x.sock'
    assert app.normalize_admin_spec('rel.sock') == 'unix:%s/rel.sock' % tmp_path
    assert app.normalize_admin_spec('tcp:127.0.0.1:4000') == 'tcp:127.0.0.1:4000'


def test_owner_by_name_and_number():
    user = pwd.getpwuid(os.getuid()).pw_name
    group = grp.getgrgid(os.getgid()).gr_name
    assert app.parse_owner('%s:%s' % (user, group)) == (os.getuid(), os.getgid())
    assert app.parse_owner('123:456') == (123, 456)


def test_config_error_at_startup_is_one_line(tmp_path):
    (tmp_path / 'bad.xml').write_text('<rtp_cluster_config/>')
    assert_one_line_error(run_app('-f', '-c', str(tmp_path / 'bad.xml'),
                                  '-P', str(tmp_path / 'p')), 'bad.xml')
    assert_one_line_error(run_app('-c', str(tmp_path / 'missing.xml'), '-P', str(tmp_path / 'p'),
                                  '-L', str(tmp_path / 'log')), 'missing.xml')
    assert not (tmp_path / 'p').exists()


# --- foreground ----------------------------------------------------------------------------

def test_foreground_serves_and_stops_cleanly(setup, procs):
    s = setup
    user = pwd.getpwuid(os.getuid()).pw_name
    group = grp.getgrgid(os.getgid()).gr_name
    proc = start_foreground(procs, s, '-o', '%s:%s' % (user, group))
    assert read(s['pidfile']).strip() == str(proc.pid)
    assert os.path.exists(s['admin'])
    st = os.stat(s['admin'])
    assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid())
    assert control_command('udp:127.0.0.1:%d' % s['port'], 'VF 20040107', 1.0).strip() == '1'
    listing = admin_ls(s['admin'])
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.splitlines()[-1] == 'OK'
    assert 'main' in listing.stdout

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(WAIT) == 0
    assert not os.path.exists(s['pidfile'])
    assert not os.path.exists(s['admin'])
    out = read(s['tmp'] / 'stdout.txt')
    assert 'started' in out and 'stopped' in out
    assert 'started: 1 cluster, 2 members, admin socket unix:%s' % s['admin'] in out
    assert 'Traceback' not in out


def test_foreground_sigint_stops_cleanly(setup, procs):
    proc = start_foreground(procs, setup)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(WAIT) == 0
    assert not os.path.exists(setup['pidfile'])
    assert not os.path.exists(setup['admin'])


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def test_sigint_stops_a_daemon_that_inherited_sigint_ignored(setup, procs):
    """A POSIX shell starts background jobs (`rtp_cluster -f &` in a script) with SIGINT
    ignored; the daemon installs its own handler, so SIGINT still stops it cleanly."""
    proc = start_foreground(procs, setup, preexec_fn=_ignore_sigint)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(WAIT) == 0
    assert not os.path.exists(setup['pidfile'])
    assert not os.path.exists(setup['admin'])
    assert 'SIGINT: stopping' in read(setup['tmp'] / 'stdout.txt')


def test_sighup_reloads_and_survives_a_broken_config(setup, procs):
    s = setup
    proc = start_foreground(procs, s)
    out = s['tmp'] / 'stdout.txt'
    write_config(s['tmp'] / 'rtp_cluster.xml', s['port'], [s['members'][0].address])
    proc.send_signal(signal.SIGHUP)
    wait_until(lambda: 'Loaded 1 clusters and 1 RTP proxies' in read(out), 'the reload')

    (s['tmp'] / 'rtp_cluster.xml').write_text('<rtp_cluster_config><broken')
    proc.send_signal(signal.SIGHUP)
    wait_until(lambda: 'reload failed' in read(out), 'the reload error')
    assert 'rtp_cluster.xml' in read(out).split('reload failed', 1)[1].splitlines()[0]
    assert proc.poll() is None
    assert answers_v(s['port'])
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(WAIT) == 0


def test_port_in_use_is_one_line_exit_1(setup):
    s = setup
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(('127.0.0.1', s['port']))
        result = run_app('-f', '-c', s['config'], '-s', 'unix:' + s['admin'], '-P', s['pidfile'])
        assert_one_line_error(result, str(s['port']))
        daemon = run_app('-c', s['config'], '-s', 'unix:' + s['admin'], '-P', s['pidfile'],
                         '-L', s['log'])
        assert_one_line_error(daemon, str(s['port']))
    assert not os.path.exists(s['pidfile'])
    assert not os.path.exists(s['admin'])


def test_failed_start_leaves_no_socket_files(tmp_path):
    control = tmp_path / 'control.sock'
    config = tmp_path / 'c.xml'
    config.write_text('<rtp_cluster_config><rtp_cluster><name>u</name><protocol>unix</protocol>'
                      '<address>%s</address>%s</rtp_cluster></rtp_cluster_config>'
                      % (control, member_xml('m0', '127.0.0.1:22223')))
    with socket.socket() as busy:
        busy.bind(('127.0.0.1', 0))
        busy.listen()
        admin = 'tcp:127.0.0.1:%d' % busy.getsockname()[1]
        for mode in (['-f'], ['-L', str(tmp_path / 'log')]):
            result = run_app(*mode, '-c', str(config), '-s', admin, '-P', str(tmp_path / 'p'))
            assert_one_line_error(result, admin[4:].replace(':', ' port '))
            assert not control.exists()
            assert not (tmp_path / 'p').exists()


def test_unwritable_pidfile_is_one_line_exit_1(setup):
    s = setup
    pidfile = str(s['tmp'] / 'no' / 'such' / 'dir.pid')
    assert_one_line_error(run_app('-f', '-c', s['config'], '-s', 'unix:' + s['admin'],
                                  '-P', pidfile), pidfile)
    assert_one_line_error(run_app('-c', s['config'], '-s', 'unix:' + s['admin'], '-P', pidfile,
                                  '-L', s['log']), pidfile)
    assert not answers_v(s['port'])


def test_unwritable_log_file_is_one_line_exit_1(setup):
    s = setup
    logfile = str(s['tmp'] / 'no' / 'such' / 'file.log')
    assert_one_line_error(run_app('-c', s['config'], '-s', 'unix:' + s['admin'],
                                  '-P', s['pidfile'], '-L', logfile), logfile)


def test_second_instance_with_the_same_pidfile_refuses(setup, procs):
    s = setup
    first = start_foreground(procs, s)
    other_port = free_udp_port()
    other = write_config(s['tmp'] / 'other.xml', other_port, [s['members'][0].address])
    result = run_app('-f', '-c', other, '-s', 'unix:' + str(s['tmp'] / 'other.sock'),
                     '-P', s['pidfile'])
    assert_one_line_error(result, 'another rtp_cluster')
    assert read(s['pidfile']).strip() == str(first.pid)
    assert not answers_v(other_port)



def test_symlinked_pidfile_is_refused_and_its_target_untouched(setup):
    s = setup
    target = s['tmp'] / 'precious'
    target.write_text('keep me\n')
    os.symlink(target, s['pidfile'])
    for mode in (['-f'], ['-L', s['log']]):
        result = run_app(*mode, '-c', s['config'], '-s', 'unix:' + s['admin'], '-P', s['pidfile'])
        assert_one_line_error(result, s['pidfile'], 'symbolic link')
        assert target.read_text() == 'keep me\n'
        assert os.path.islink(s['pidfile'])
    assert not answers_v(s['port'])


def test_hard_linked_pidfile_is_refused_and_untouched(setup):
    s = setup
    target = s['tmp'] / 'precious'
    target.write_text('keep me\n')
    os.link(target, s['pidfile'])
    result = run_app('-f', '-c', s['config'], '-s', 'unix:' + s['admin'], '-P', s['pidfile'])
    assert_one_line_error(result, s['pidfile'], 'hard links')
    assert target.read_text() == 'keep me\n'
    assert not answers_v(s['port'])


def test_pidfile_is_created_0644_whatever_the_umask(setup, procs):
    s = setup
    out = open(s['tmp'] / 'stdout.txt', 'w')
    proc = procs.add(subprocess.Popen(
        app_command('-f', '-c', s['config'], '-s', 'unix:' + s['admin'], '-P', s['pidfile']),
        cwd=ROOT, env=child_env(), stdout=out, stderr=subprocess.STDOUT, umask=0o077))
    out.close()
    wait_until(lambda: answers_v(s['port']), 'the cluster to answer V')
    assert os.stat(s['pidfile']).st_mode & 0o7777 == 0o644
    assert read(s['pidfile']).strip() == str(proc.pid)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(WAIT) == 0
    assert not os.path.exists(s['pidfile'])


def test_pidfile_taken_over_by_another_pid_is_left_in_place(setup, procs):
    s = setup
    proc = start_foreground(procs, s)
    os.unlink(s['pidfile'])                    # a successor's file now lies at the path
    with open(s['pidfile'], 'w') as f:
        f.write('%d\n' % (proc.pid + 1))
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(WAIT) == 0
    assert read(s['pidfile']) == '%d\n' % (proc.pid + 1)


# --- daemon mode ---------------------------------------------------------------------------

def test_daemon_mode(setup, daemon_pids):
    s = setup
    pid = start_daemon(s, daemon_pids)
    assert pid_running(pid)
    assert os.getsid(pid) != os.getsid(0)         # setsid: a session of its own
    wait_until(lambda: answers_v(s['port']), 'the daemon to answer V')
    assert os.path.exists(s['admin'])
    assert os.readlink('/proc/%d/cwd' % pid) == '/'
    wait_until(lambda: 'started' in read(s['log']), 'the startup line in the log')
    listing = admin_ls(s['admin'])
    assert listing.returncode == 0 and listing.stdout.endswith('OK\n'), listing

    stop_daemon(pid)
    assert not os.path.exists(s['pidfile'])
    assert not os.path.exists(s['admin'])
    assert 'stopped' in read(s['log'])
    assert not answers_v(s['port'])


def test_daemon_sigusr1_reopens_the_log_file(setup, daemon_pids):
    s = setup
    pid = start_daemon(s, daemon_pids)
    wait_until(lambda: 'started' in read(s['log']), 'the startup line in the log')
    rotated = s['log'] + '.1'
    os.rename(s['log'], rotated)
    os.kill(pid, signal.SIGUSR1)
    wait_until(lambda: 'log file reopened' in read(s['log']), 'a new log file')
    os.kill(pid, signal.SIGHUP)
    wait_until(lambda: 'Loaded 1 clusters and 2 RTP proxies' in read(s['log']),
               'the reload line in the new log file')
    assert 'Loaded' not in read(rotated)
    stop_daemon(pid)
    assert 'stopped' in read(s['log'])
    assert 'stopped' not in read(rotated)


# --- the demo ------------------------------------------------------------------------------

def start_demo(procs, output, **env_overrides):
    """scripts/demo.py on free ports; (process, its output once it says Press Ctrl-C, ports)."""
    port, m1, m2 = free_udp_port(), free_udp_port(), free_udp_port()
    env = dict(child_env(), RTPC_DEMO_PORT=str(port), RTPC_DEMO_MEMBER_PORTS='%d %d' % (m1, m2),
               RTPC_DEMO_MEDIA_BASE='58000', **env_overrides)
    with open(output, 'w') as out:
        demo = procs.add(subprocess.Popen([sys.executable, os.path.join(ROOT, 'scripts', 'demo.py')],
                                          cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT))

    def started() -> str:
        assert demo.poll() is None, read(output)
        text = read(output)
        return text if 'Press Ctrl-C' in text else ''

    return demo, wait_until(started, 'the demo to start', timeout=60), (port, m1, m2)


def make_dry_run(target: str, venv: str) -> list[str]:
    """The commands `make TARGET` would run for a virtual environment that does not exist."""
    result = subprocess.run(['make', '--no-print-directory', '-n', '-C', ROOT, target, 'VENV=' + venv],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_make_demo_installs_no_test_tools_and_shows_progress(tmp_path):
    venv = str(tmp_path / 'no-venv')
    demo_pips = [line for line in make_dry_run('demo', venv) if ' -m pip install ' in line]
    assert demo_pips == [venv + "/bin/python -m pip install --disable-pip-version-check -e '.[demo]'"]
    test_pips = [line for line in make_dry_run('test', venv) if ' -m pip install ' in line]
    assert len(test_pips) == 1 and test_pips[0].endswith("-e '.[test]'")
    with open(os.path.join(ROOT, 'pyproject.toml'), 'rb') as f:
        extras = tomllib.load(f)['project']['optional-dependencies']
    assert [dep.split('>=')[0] for dep in extras['demo']] == ['rtp-io']
    assert 'rtp-io' in {dep.split('>=')[0] for dep in extras['test']}


def demo_member_pids(text: str) -> list[int]:
    return [int(line.split('(pid ')[1].split(')')[0]) for line in text.splitlines()
            if line.startswith('demo: member')]


def test_demo_serves_and_ctrl_c_stops_everything(tmp_path, procs, daemon_pids):
    output = tmp_path / 'demo.out'
    demo, text, (port, m1, m2) = start_demo(procs, output, RTPC_DEMO_DIR=str(tmp_path))
    pids = demo_member_pids(text)
    daemon_pids.extend(pids)                  # killed at teardown if the demo fails to
    assert len(pids) == 2
    assert 'modparam("rtpproxy", "rtpproxy_sock", "udp:127.0.0.1:%d")' % port in text
    assert answers_v(port)
    listing = admin_ls(str(tmp_path / 'admin.sock'))
    assert listing.returncode == 0 and 'demo' in listing.stdout

    # the engines' messages go to the log files the demo names, not to its terminal
    assert control_command('udp:127.0.0.1:%d' % m1, 'U too-few 127.0.0.1') == 'E1\n'
    log1 = tmp_path / 'rtpproxy1.log'
    assert 'engine messages in %s' % log1 in text
    wait_until(lambda: 'syntax error' in read(log1), 'the engine message in ' + str(log1))
    assert (tmp_path / 'rtpproxy1' / 'rtpproxy_acct.csv').exists()

    demo.send_signal(signal.SIGINT)
    assert demo.wait(30) == 0
    assert 'demo: stopped' in read(output)
    assert not any(pid_running(pid) for pid in pids)
    assert not answers_v(port)
    assert not (tmp_path / 'admin.sock').exists()
    assert 'ERR:' not in read(output) and 'syntax error' not in read(output)
    # a directory the user chose keeps the configuration and the logs, nothing else
    assert sorted(os.listdir(tmp_path)) == ['demo.out', 'rtp_cluster.xml', 'rtpproxy1.log',
                                            'rtpproxy2.log']


@pytest.fixture
def short_tmp():
    """A directory with a short path (tmp_path is too long for unix sockets inside a subdirectory)."""
    path = tempfile.mkdtemp(prefix='d-')
    yield pathlib.Path(path)
    shutil.rmtree(path, ignore_errors=True)


def test_demo_prints_a_call_that_works_and_removes_its_directory(tmp_path, short_tmp, procs,
                                                                 daemon_pids):
    system_tmp = short_tmp
    output = tmp_path / 'demo.out'
    demo, text, (port, _, _) = start_demo(procs, output, TMPDIR=str(system_tmp))
    daemon_pids.extend(demo_member_pids(text))
    directory, = os.listdir(system_tmp)
    assert 'demo: working directory %s' % (system_tmp / directory) in text

    # the example: U, L and D with their replies, each command runnable as printed
    lines = [line.strip() for line in text.splitlines()]
    commands = [line[2:] for line in lines if line.startswith('$ ')]
    example = [(line[2:], reply) for line, reply in zip(lines, lines[1:])
               if line.startswith('$ ') and shlex.split(line)[-1][:2] in ('U ', 'L ', 'D ')]
    assert [shlex.split(command)[-1][0] for command, _ in example] == ['U', 'L', 'D']
    assert [protocol.is_positive_ul_reply(reply) for _, reply in example] == [True, True, False]
    assert example[2][1] == '0'
    for command, reply in example:
        again = subprocess.run(shlex.split(command), cwd=ROOT, capture_output=True, text=True, timeout=30)
        assert again.returncode == 0, (command, again.stdout, again.stderr)
        assert protocol.is_positive_ul_reply(again.stdout) == protocol.is_positive_ul_reply(reply)
        assert again.stdout.count('\n') == 1
    assert again.stdout == '0\n'
    stats, = [c for c in commands if c.endswith('--stats')]
    again = subprocess.run(shlex.split(stats), cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert again.returncode == 0 and again.stdout.startswith('sessions created'), again.stdout

    demo.send_signal(signal.SIGTERM)
    assert demo.wait(30) == 0
    assert 'demo: stopped; %s removed' % (system_tmp / directory) in read(output)
    assert os.listdir(system_tmp) == []
