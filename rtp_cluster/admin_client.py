"""`rtp_cluster_client`: one command to the rtp_cluster admin socket or to a control socket.

    rtp_cluster_client [-s unix:/path|/path|tcp:host[:port]] [--secret-file FILE] [-t seconds] COMMAND [ARG...]
    rtp_cluster_client --control udp:HOST:PORT|udp6:HOST:PORT|unix:/path [-t seconds] COMMAND [ARG...]
    rtp_cluster_client --control SOCKET [-t seconds] --stats

The admin protocol is line based: each command is one line; its reply is any number of
lines ending with a line that is exactly `OK` or one line starting with `ERROR`.  The
connection stays open until the client sends `quit`.  A long reply (`ls sessions --all`)
comes in batches while the daemon keeps serving calls: `-t` is how long the client waits
for more of it, not for all of it.  With `--secret-file` the client
first sends `auth SECRET` (the file's first line), which a daemon started with
`--admin-secret-file` requires on its TCP admin socket.

With `--control` the command is an RTPproxy control command (`V`, `U`, `L`, `D`, `Ib`, ...)
sent as a SIP proxy sends it (control_client.py); the reply body is printed alone on a
line.  `--stats` sends `Ib` and prints the counters as a table.

Exit status: 0 the reply ended with OK (admin) or is not an error (control), 1 it ended
with ERROR (admin) or is an `E` code (control), 2 no reply (cannot connect, timeout,
connection closed early) or a usage error.
"""
from __future__ import annotations

import argparse
import os
import socket
import sys
from typing import NoReturn

from .core.admin_auth import auth_line, parse_secret
from .core.admin_text import is_final_line
from .core.endpoints import DEFAULT_ADMIN_TCP_PORT, parse_admin_socket

PROG = 'rtp_cluster_client'
DEFAULT_SOCKET = 'unix:/var/run/rtp_cluster.sock'
DEFAULT_TCP_PORT = DEFAULT_ADMIN_TCP_PORT
DEFAULT_TIMEOUT = 10.0           # s without a byte of the reply (admin); for all of it (control)
DEFAULT_CONTROL_TIMEOUT = 3.0    # a SIP proxy gives up after a few seconds too
# bytes; a reply larger than this is a broken server (ls sessions --all with sharing columns
# is about 100 bytes a session: 2.5 million sessions)
MAX_REPLY = 256 * 1024 * 1024

EXIT_OK, EXIT_ERROR, EXIT_FAILURE = 0, 1, 2


class ClientError(Exception):
    """No complete reply; str(e) is one line for the user."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_FAILURE, '%s: error: %s\n' % (self.prog, message))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description='Send one command to the rtp_cluster admin socket, '
                     'or (--control) one RTPproxy control command to rtp_cluster or an RTPproxy.',
                     epilog='Through rtp_cluster, Ib and --stats add up the counters of the '
                     "members' last heartbeats (one a second): a session created a moment ago "
                     'may not be counted yet.')
    target = parser.add_mutually_exclusive_group()
    target.add_argument('-s', dest='socket', metavar='socket', default=None,
                        help='admin socket: /path, unix:/path or tcp:host[:port] '
                        '(default: %s)' % DEFAULT_SOCKET)
    target.add_argument('--control', metavar='socket',
                        help='send an RTPproxy control command instead, to udp:HOST[:PORT], '
                        'udp6:HOST[:PORT] or unix:/path (a cookie is added; UDP is retransmitted)')
    parser.add_argument('--secret-file', metavar='file', default=None,
                        help='authenticate first with the secret on the first line of this file '
                        '(a daemon started with --admin-secret-file requires it)')
    parser.add_argument('--stats', action='store_true',
                        help='with --control: send Ib and print the counters as a table')
    parser.add_argument('-t', dest='timeout', metavar='seconds', type=float, default=None,
                        help='give up when the admin socket sends nothing more for this many '
                        'seconds (default: %g), or, with --control, when the reply has not come '
                        'after this many seconds (default: %g)'
                        % (DEFAULT_TIMEOUT, DEFAULT_CONTROL_TIMEOUT))
    parser.add_argument('command', nargs=argparse.REMAINDER,
                        help='the command, e.g. "ls" or "ls CLUSTER"; with --control e.g. '
                        '"U call1 127.0.0.1 5000 ft1"')
    return parser


def parse_address(spec: str) -> tuple[int, str | tuple[str, int]]:
    """The admin socket `spec` (the daemon's `-s` grammar) -> (address family, address)."""
    try:
        endpoint = parse_admin_socket(spec)
    except ValueError as exc:
        raise ClientError(str(exc)) from None
    if endpoint.protocol == 'unix':
        return socket.AF_UNIX, endpoint.path
    family = socket.AF_INET6 if ':' in endpoint.host else socket.AF_INET
    return family, (endpoint.host, endpoint.port)


def is_final(line: str) -> bool:
    """The last line of a reply: exactly OK, or an ERROR line."""
    return is_final_line(line)


def read_reply(sock: socket.socket, patience: float) -> list[str]:
    """Reply lines up to and including the final OK/ERROR line; socket.timeout when nothing
    arrives for `patience` seconds (a streamed listing may take longer as a whole)."""
    lines: list[str] = []
    buffer = b''
    received = 0
    sock.settimeout(patience)
    while True:
        data = sock.recv(65536)
        if not data:
            raise ClientError('connection closed before the end of the reply')
        received += len(data)
        if received > MAX_REPLY:
            raise ClientError('reply too long (more than %d bytes)' % MAX_REPLY)
        buffer += data
        *complete, buffer = buffer.split(b'\n')
        for raw in complete:
            line = raw.rstrip(b'\r').decode('utf-8', 'replace')
            lines.append(line)
            if is_final(line):
                return lines


def run_command(spec: str, command: str, timeout: float = DEFAULT_TIMEOUT,
                secret: str | None = None) -> list[str]:
    """Send `command` to the admin socket `spec` (after `auth` with `secret`); the reply
    lines.  ClientError on failure; a refused `auth` is its ERROR line."""
    family, address = parse_address(spec)
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(address)
        except OSError as exc:
            raise ClientError('cannot connect to %s: %s' % (spec, _reason(exc))) from None
        try:
            if secret is not None:
                sock.sendall(auth_line(secret).encode('utf-8') + b'\n')
                refused = read_reply(sock, timeout)
                if refused[-1] != 'OK':
                    return refused
            sock.sendall(command.encode('utf-8') + b'\n')
            lines = read_reply(sock, timeout)
            _say_quit(sock)
        except socket.timeout:
            raise ClientError('%s: no complete reply within %g s of the last data received'
                              % (spec, timeout)) from None
        except OSError as exc:
            raise ClientError('%s: %s' % (spec, _reason(exc))) from None
    return lines


def _say_quit(sock: socket.socket) -> None:
    try:
        sock.sendall(b'quit\n')
    except OSError:
        pass                     # the reply is complete; a server that hung up is fine


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_FAILURE
    problem = _usage_problem(args)
    if problem:
        print('%s: %s' % (PROG, problem), file=sys.stderr)
        return EXIT_FAILURE
    if args.control is not None:
        return control_main(args)
    return admin_main(args)


def _usage_problem(args: argparse.Namespace) -> str | None:
    if args.timeout is not None and not args.timeout > 0:
        return '-t must be a positive number of seconds'
    if args.secret_file and args.control is not None:
        return '--secret-file is for the admin socket, not --control'
    if args.stats and args.control is None:
        return '--stats needs --control SOCKET'
    if args.stats and args.command:
        return '--stats sends Ib itself; give no command with it'
    command = ' '.join(args.command)
    if not args.stats and (not command.strip() or '\n' in command):
        example = "--control udp:127.0.0.1:22222 V" if args.control else 'ls'
        return 'give one command, e.g. %s %s' % (PROG, example)
    return None


def admin_main(args: argparse.Namespace) -> int:
    command = ' '.join(args.command).strip()
    timeout = DEFAULT_TIMEOUT if args.timeout is None else args.timeout
    try:
        secret = read_secret(args.secret_file) if args.secret_file else None
        lines = run_command(args.socket or DEFAULT_SOCKET, command, timeout, secret)
    except ClientError as exc:
        print('%s: %s' % (PROG, exc), file=sys.stderr)
        return EXIT_FAILURE
    sys.stdout.write(''.join(line + '\n' for line in lines))
    sys.stdout.flush()
    return EXIT_ERROR if lines[-1].startswith('ERROR') else EXIT_OK


def read_secret(path: str) -> str:
    """The secret on the first line of `path`; ClientError if it cannot be read."""
    try:
        with open(path, 'rb') as f:
            return parse_secret(f.read(4096))
    except OSError as exc:
        raise ClientError('--secret-file %s: %s' % (path, _reason(exc))) from None
    except ValueError as exc:
        raise ClientError('--secret-file %s: %s' % (path, exc)) from None


def control_main(args: argparse.Namespace) -> int:
    # imported here: the admin mode runs with the standard library alone (no lxml)
    from . import control_client
    timeout = DEFAULT_CONTROL_TIMEOUT if args.timeout is None else args.timeout
    command = control_client.STATS_COMMAND if args.stats else ' '.join(args.command).strip()
    try:
        endpoint = control_client.parse_control_socket(args.control)
        body = control_client.send_command(endpoint, os.fsencode(command), timeout)
    except (ValueError, control_client.NoReply) as exc:
        print('%s: %s' % (PROG, exc), file=sys.stderr)
        return EXIT_FAILURE
    table = control_client.stats_table(body) if args.stats else None
    if table is not None:
        sys.stdout.write(table)
        sys.stdout.flush()
        return EXIT_OK
    _write_bytes(body.rstrip(b'\r\n') + b'\n')
    if control_client.is_error_reply(body):
        return EXIT_ERROR
    if args.stats:
        print('%s: not an Ib reply' % PROG, file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


def _write_bytes(data: bytes) -> None:
    """The reply as received: call-ids and tags need not be UTF-8."""
    sys.stdout.flush()
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


if __name__ == '__main__':
    sys.exit(main())
