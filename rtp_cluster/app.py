"""The `rtp_cluster` daemon: command line, daemonizing, pidfile, logging and signals.

Command line (compatible with sippy's original rtp_cluster):

    rtp_cluster [-fd] [-c conffile] [-s admin_socket] [-P pidfile] [-L logfile] [-o user:group]
                [--admin-allow-remote] [--admin-secret-file file] [--log-format text|json]

Startup problems (bad configuration, a socket that cannot be bound, an unwritable
pidfile or log file) are reported as one line on stderr with exit status 1.  In daemon
mode the detached process does the whole startup itself and reports the outcome to the
waiting parent through a pipe, so those errors still reach the terminal; the parent
never imports the Twisted reactor, so nothing of it is shared across the fork.
"""
from __future__ import annotations

import argparse
import grp
import os
import pwd
import select
import signal
import sys
import traceback
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Callable, NoReturn

from twisted.logger import Logger, globalLogBeginner

from . import __version__
from .process_files import AppError, LogFile, PidFile

if TYPE_CHECKING:
    from .core.config import Config
    from .adapters.logcontrol import LogLevels
    from .adapters.runtime import Runtime

PROG = 'rtp_cluster'
DEFAULT_CONFIG = '/usr/local/etc/rtp_cluster.xml'
DEFAULT_ADMIN = '/var/run/rtp_cluster.sock'
DEFAULT_PIDFILE = '/var/run/rtp_cluster.pid'
DEFAULT_LOGFILE = '/var/log/rtp_cluster.log'
STARTUP_WAIT = 60.0          # seconds the terminal waits for the daemon to report
STOP_TIMEOUT = 10.0          # seconds Runtime.stop() may take at shutdown

log = Logger(namespace=PROG)


@dataclass(frozen=True)
class Options:
    foreground: bool
    check_only: bool
    config: str
    admin: str
    pidfile: str
    logfile: str
    owner: tuple[int, int] | None
    probe_interval: float = 2.0
    admin_secret: str | None = field(default=None, repr=False)   # never in a log line
    log_format: str = 'text'


# --- command line ----------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    """argparse with the original's exit status 1 for usage errors."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(1, '%s: error: %s\n' % (self.prog, message))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description='RTPproxy cluster proxy: one RTPproxy control '
                     'socket in front of several real RTPproxies.')
    parser.add_argument('-f', dest='foreground', action='store_true',
                        help='stay in the foreground and log to stdout')
    parser.add_argument('-d', dest='check_only', action='store_true',
                        help='check the configuration file and exit')
    parser.add_argument('-c', dest='config', metavar='conffile', default=DEFAULT_CONFIG,
                        help='configuration file (default: %(default)s)')
    parser.add_argument('-s', dest='admin', metavar='admin_socket', default=DEFAULT_ADMIN,
                        help='admin socket: /path, unix:/path or tcp:host[:port] (port 12345 if omitted) '
                        '(default: %(default)s)')
    parser.add_argument('--admin-allow-remote', dest='admin_allow_remote', action='store_true',
                        help='let a tcp: admin socket listen on an address other than loopback '
                        '(needs --admin-secret-file)')
    parser.add_argument('--admin-secret-file', dest='admin_secret_file', metavar='file',
                        help='tcp: admin socket: every connection must first send "auth SECRET", '
                        'SECRET being the first line of this file')
    parser.add_argument('-P', dest='pidfile', metavar='pidfile', default=DEFAULT_PIDFILE,
                        help='pid file (default: %(default)s)')
    parser.add_argument('-L', dest='logfile', metavar='logfile', default=DEFAULT_LOGFILE,
                        help='log file in daemon mode (default: %(default)s)')
    parser.add_argument('-o', dest='owner', metavar='user:group',
                        help='owner of the unix sockets rtp_cluster creates')
    parser.add_argument('--probe-interval', dest='probe_interval', metavar='seconds',
                        type=_probe_interval, default=2.0,
                        help='how often an offline member is probed again (default: %(default)g)')
    parser.add_argument('--log-format', dest='log_format', choices=('text', 'json'),
                        default='text', help='log lines as text or as JSON objects, one per '
                        'line, for log shippers (default: %(default)s)')
    parser.add_argument('--version', action='version', version='%(prog)s ' + __version__)
    return parser


def _probe_interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.1 <= value <= 600:
        raise argparse.ArgumentTypeError('expected seconds between 0.1 and 600, got %r' % text)
    return value


def parse_owner(spec: str) -> tuple[int, int]:
    """'user:group' (names or numbers) -> (uid, gid); AppError when unknown."""
    user, sep, group = spec.partition(':')
    if not sep or not user or not group:
        raise AppError('-o %s: expected user:group' % spec)
    return _lookup(user, 'user', pwd.getpwnam, 'pw_uid'), _lookup(group, 'group', grp.getgrnam, 'gr_gid')


def _lookup(name: str, kind: str, getter: Callable, attr: str) -> int:
    if name.isdigit():
        return int(name)
    try:
        return getattr(getter(name), attr)
    except KeyError:
        raise AppError('-o: unknown %s %r' % (kind, name)) from None


def normalize_admin_spec(spec: str) -> str:
    """Check the admin socket spec; make unix paths absolute (the daemon changes to /)."""
    from .core.endpoints import parse_admin_socket
    try:
        return str(parse_admin_socket(spec))
    except ValueError as exc:
        raise AppError('-s: %s' % exc) from None


def admin_secret(admin: str, allow_remote: bool, secret_file: str | None) -> str | None:
    """Check how far the admin socket `admin` is exposed; the secret it requires, if any.

    A tcp: socket listens on loopback only, unless the operator passes --admin-allow-remote,
    which needs --admin-secret-file: the admin socket controls the daemon and `modify add`
    makes it send to any address.
    """
    from .core.endpoints import parse_admin_socket
    endpoint = parse_admin_socket(admin)
    if endpoint.protocol != 'tcp':
        if allow_remote or secret_file:
            raise AppError('--admin-allow-remote and --admin-secret-file are for a tcp: admin '
                           'socket; a unix socket is guarded by its file mode (see -o)')
        return None
    if allow_remote and not secret_file:
        raise AppError('--admin-allow-remote needs --admin-secret-file FILE: clients on other '
                       'hosts must authenticate')
    if not allow_remote and not _is_loopback(endpoint.host):
        raise AppError('-s %s: %s is not a loopback address; the admin socket controls the '
                       'daemon, so it listens on 127.0.0.1 or ::1 unless you pass '
                       '--admin-allow-remote with --admin-secret-file FILE'
                       % (admin, endpoint.host))
    return read_secret_file(secret_file) if secret_file else None


def _is_loopback(host: str) -> bool:
    """Does every address of `host` belong to the loopback interface?"""
    import ipaddress
    import socket
    try:
        infos = socket.getaddrinfo(host, None, socket.AF_UNSPEC, socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise AppError('-s: cannot resolve %s: %s' % (host, getattr(exc, 'strerror', exc))) from None
    return all(ipaddress.ip_address(str(info[4][0]).split('%', 1)[0]).is_loopback
               for info in infos)


def read_secret_file(path: str) -> str:
    """The admin secret: the first line of `path`, a file that others cannot read."""
    from .core.admin_auth import parse_secret
    try:
        with open(path, 'rb') as f:
            if os.fstat(f.fileno()).st_mode & 0o007:
                raise AppError('--admin-secret-file %s: other users can read or write it; '
                               'chmod o-rwx it' % path)
            return parse_secret(f.read(4096))
    except OSError as exc:
        raise AppError('--admin-secret-file %s: %s' % (path, exc.strerror or exc)) from None
    except ValueError as exc:
        raise AppError('--admin-secret-file %s: %s' % (path, exc)) from None


def parse_options(argv: list[str]) -> Options:
    args = build_parser().parse_args(argv)
    admin = normalize_admin_spec(args.admin)
    return Options(
        foreground=args.foreground or args.check_only,
        check_only=args.check_only,
        config=args.config,
        admin=admin,
        pidfile=os.path.abspath(args.pidfile),
        logfile=os.path.abspath(args.logfile),
        owner=parse_owner(args.owner) if args.owner else None,
        probe_interval=args.probe_interval,
        admin_secret=admin_secret(admin, args.admin_allow_remote, args.admin_secret_file),
        log_format=args.log_format,
    )


# --- configuration ---------------------------------------------------------------------------

def load(path: str) -> Config:
    """Load and validate the configuration file (forwarding loops included); AppError with
    the ConfigError text."""
    from .core.config import ConfigError, load_config
    try:
        config = load_config(path)
    except ConfigError as exc:
        raise AppError(str(exc)) from None
    except OSError as exc:
        raise AppError('%s: %s' % (path, exc.strerror or exc)) from None
    refuse_forwarding_loops(path, config)
    return config


def refuse_forwarding_loops(path: str, config: Config) -> None:
    """AppError if a member's address is one of the configuration's own control sockets."""
    from .adapters.local_sockets import forwarding_loops
    problems = forwarding_loops(config)
    if problems:
        raise AppError('%s: %s' % (path, '; '.join(problems)))


def count(config: Config) -> tuple[int, int]:
    """(clusters, members) of a Config."""
    return len(config.clusters), sum(len(c.members) for c in config.clusters)


def counted(number: int, noun: str) -> str:
    """'1 cluster', '2 clusters', '0 members'."""
    return '%d %s%s' % (number, noun, '' if number == 1 else 's')


def check_config(path: str) -> int:
    """`-d`: validate the file, report on stdout (valid) or stderr (invalid)."""
    try:
        nclusters, nmembers = count(load(path))
    except AppError as exc:
        print('%s: %s' % (PROG, exc), file=sys.stderr)
        return 1
    print('%s: configuration is valid (%s, %s)'
          % (path, counted(nclusters, 'cluster'), counted(nmembers, 'member')))
    return 0


def start_logging(stream: IO[str], log_format: str = 'text') -> LogLevels:
    """twisted.logger output to `stream` (stdout: the terminal or the log file), filtered by
    the returned LogLevels (`<log_level>`, `set loglevel`)."""
    from .adapters.logcontrol import LogLevels, file_observer
    levels = LogLevels()
    globalLogBeginner.beginLoggingTo([levels.filtered(file_observer(stream, log_format))],
                                     redirectStandardIO=False)
    return levels


# --- running ---------------------------------------------------------------------------------

def start_runtime(opts: Options, config: Config, reactor, log_levels: LogLevels | None = None,
                  notifier=None) -> Runtime:
    """Create the Runtime and bind every socket; AppError (one line) on failure."""
    from .adapters.runtime import Runtime
    try:
        runtime = Runtime(config, os.path.abspath(opts.config), reactor,
                          sock_owner=opts.owner, admin_spec=opts.admin,
                          probe_interval=opts.probe_interval, admin_secret=opts.admin_secret,
                          log_levels=log_levels, notifier=notifier)
        runtime.start()
    except Exception as exc:
        if not isinstance(exc, (OSError, ValueError)) and type(exc).__name__ not in _EXPECTED:
            log.failure('startup failed')        # a bug: keep the details in the log
        _settle(reactor)
        raise AppError(_one_line(exc)) from None
    return runtime


def _settle(reactor) -> None:
    """Run the clean-up a failed start scheduled (closing ports removes unix socket files)."""
    for _ in range(3):
        reactor.iterate(0)


_EXPECTED = ('StartupError', 'ConfigError')


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return ' '.join(text.split('\n'))


def install_signals(reactor, runtime: Runtime, logfile: LogFile | None) -> None:
    """SIGHUP reloads, SIGUSR1 reopens the log file, SIGTERM and SIGINT stop.

    SIGTERM and SIGINT are installed here rather than left to the reactor: a POSIX shell
    starts background jobs with SIGINT ignored, and Twisted keeps an inherited "ignore".
    """
    def on_signal(signum: int, _frame) -> None:
        action = reload if signum == signal.SIGHUP else reopen
        reactor.callFromThread(action)

    def on_stop_signal(signum: int, _frame) -> None:
        reactor.callFromThread(stop, signal.Signals(signum).name)

    def stop(name: str) -> None:
        if reactor.running:
            log.info('{signal}: stopping', signal=name)
            reactor.stop()

    def reload() -> None:
        log.info('SIGHUP: reloading the configuration')
        try:
            nclusters, nmembers = runtime.reload()
        except Exception as exc:
            log.error('reload failed, keeping the running configuration: {error}',
                      error=_one_line(exc))
            return
        log.info('Loaded {nclusters} clusters and {nmembers} RTP proxies',
                 nclusters=nclusters, nmembers=nmembers)

    def reopen() -> None:
        if logfile is None:
            log.info('SIGUSR1: logging to stdout, nothing to reopen')
            return
        try:
            logfile.reopen()
        except OSError as exc:
            log.error('cannot reopen log file {path}: {error}', path=logfile.path, error=exc.strerror)
            return
        log.info('SIGUSR1: log file reopened')

    signal.signal(signal.SIGHUP, on_signal)
    signal.signal(signal.SIGUSR1, on_signal)
    signal.signal(signal.SIGTERM, on_stop_signal)
    signal.signal(signal.SIGINT, on_stop_signal)


def serve(opts: Options, config: Config, logfile: LogFile | None, ready: Callable[[str | None], None],
          log_levels: LogLevels | None = None) -> int:
    """Start everything, report through `ready(error_or_None)`, run until SIGTERM/SIGINT."""
    from .adapters.reactor import install_reactor, tune_garbage_collector
    reactor = install_reactor()
    from .adapters.systemd import SystemdNotifier
    notifier = SystemdNotifier()
    pidfile = PidFile(opts.pidfile)
    try:
        pidfile.acquire()
        runtime = start_runtime(opts, config, reactor, log_levels, notifier)
    except AppError as exc:
        pidfile.remove()
        if logfile is not None:            # the terminal gets the line too, through ready()
            log.error('startup failed: {error}', error=str(exc))
        ready(str(exc))
        return 1
    reactor.addSystemEventTrigger('before', 'shutdown', _stop_runtime, runtime, reactor)
    # Report success only once the reactor runs: a stop signal is handled from then on.
    reactor.callWhenRunning(install_signals, reactor, runtime, logfile)
    reactor.callWhenRunning(_started, opts, config, ready)
    reactor.callWhenRunning(_notify_systemd, notifier, runtime, reactor)
    tune_garbage_collector()
    try:
        reactor.run()
    finally:
        pidfile.remove()
    log.info('rtp_cluster stopped')
    return 0


def _started(opts: Options, config, ready: Callable[[str | None], None]) -> None:
    nclusters, nmembers = count(config)
    log.info('rtp_cluster {version} started: {clusters}, {members}, admin socket {admin}, '
             'pid {pid}', version=__version__, clusters=counted(nclusters, 'cluster'),
             members=counted(nmembers, 'member'), admin=opts.admin, pid=os.getpid())
    ready(None)


def _notify_systemd(notifier, runtime, reactor) -> None:
    """READY=1 (every socket is bound by now), then STATUS= and WATCHDOG=1 from the reactor."""
    from .adapters.systemd import status_line
    notifier.ready(status_line(runtime.clusters.values()))
    notifier.start(reactor, lambda: status_line(runtime.clusters.values()))


def _stop_runtime(runtime, reactor):
    log.info('shutting down')
    runtime.notifier.stopping()
    runtime.notifier.stop()
    try:
        d = runtime.stop()
    except Exception:
        log.failure('error while stopping')
        return None
    if d is None:
        return None
    d.addTimeout(STOP_TIMEOUT, reactor)
    d.addErrback(lambda f: log.failure('error while stopping', f))
    return d


def run_foreground(opts: Options, config: Config) -> int:
    log_levels = start_logging(sys.stdout, opts.log_format)

    def ready(error: str | None) -> None:
        if error:
            print('%s: %s' % (PROG, error), file=sys.stderr)

    return serve(opts, config, None, ready, log_levels)


# --- daemon mode -----------------------------------------------------------------------------

def run_daemon(opts: Options, config: Config) -> int:
    """Double fork; the daemon reports 'OK' or the startup error through a pipe."""
    logfile = LogFile(opts.logfile)
    logfile.check()
    sys.stdout.flush()
    sys.stderr.flush()
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(rfd)
        _daemon_child(opts, config, logfile, wfd)   # never returns
    os.close(wfd)
    os.waitpid(pid, 0)
    return _wait_ready(rfd, opts.logfile)


def _wait_ready(rfd: int, logpath: str) -> int:
    chunks = []
    with os.fdopen(rfd, 'rb') as pipe:
        while True:
            readable, _, _ = select.select([pipe], [], [], STARTUP_WAIT)
            if not readable:
                print('%s: no startup report from the daemon in %d s; see %s'
                      % (PROG, STARTUP_WAIT, logpath), file=sys.stderr)
                return 1
            data = os.read(pipe.fileno(), 4096)
            if not data:
                break
            chunks.append(data)
    report = b''.join(chunks).decode('utf-8', 'replace').strip()
    if report == 'OK':
        return 0
    if report.startswith('ERROR '):
        print('%s: %s' % (PROG, report[6:]), file=sys.stderr)
    else:
        print('%s: the daemon exited during startup; see %s' % (PROG, logpath), file=sys.stderr)
    return 1


def _daemon_child(opts: Options, config, logfile: LogFile, wfd: int) -> NoReturn:
    status = 1
    try:
        os.setsid()
        if os.fork() != 0:
            os._exit(0)
        sys.path[:] = [os.path.abspath(p) for p in sys.path]   # '' would mean / after chdir
        os.chdir('/')
        _redirect_stdio(logfile)
        log_levels = start_logging(sys.stdout, opts.log_format)
        status = serve(opts, config, logfile, _pipe_reporter(wfd), log_levels)
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


def _pipe_reporter(wfd: int) -> Callable[[str | None], None]:
    """ready() for the daemon: one report line to the waiting terminal, then close."""
    def ready(error: str | None) -> None:
        os.write(wfd, b'OK\n' if error is None else ('ERROR %s\n' % error).encode())
        os.close(wfd)
    return ready


def _redirect_stdio(logfile: LogFile) -> None:
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    logfile.reopen()


# --- entry point -----------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        opts = parse_options(argv)
    except SystemExit as exc:               # --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else 1
    except AppError as exc:
        print('%s: %s' % (PROG, exc), file=sys.stderr)
        return 1
    if opts.check_only:
        return check_config(opts.config)
    try:
        config = load(opts.config)
        if opts.foreground:
            return run_foreground(opts, config)
        return run_daemon(opts, config)
    except AppError as exc:
        print('%s: %s' % (PROG, exc), file=sys.stderr)
        return 1


if __name__ == '__main__':
    sys.exit(main())
