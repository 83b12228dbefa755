#!/usr/bin/env python3
"""Run one real RTPproxy (the engine embedded in the PyPI package rtp-io) in this process.

Used by the tests, the demo and the benchmarks as a cluster member:

    python tools/rtpp_member.py -s udp:127.0.0.1:23480 -l 127.0.0.1 -m 46000 -M 46999

Every argument is passed to the engine as an rtpproxy command-line option; `-F` is added
(needed for network control sockets when running as root).  The engine writes its
accounting file into the working directory, so the process changes into a private
directory first: `--workdir DIR` (the caller creates and removes it; it survives a
SIGKILL of this process), or else a temporary directory this process removes when it
exits.  It prints `READY <pid>` once the engine runs, and exits on SIGTERM or SIGINT (or
when its parent closes its stdin, with --die-with-stdin).
"""
import os
import shutil
import signal
import sys
import tempfile
import threading


def split_options(argv: list[str]) -> tuple[bool, str | None, list[str]]:
    """(--die-with-stdin given, --workdir value, the engine's arguments)."""
    die_with_stdin, workdir, args = False, None, []
    words = iter(argv)
    for word in words:
        if word == '--die-with-stdin':
            die_with_stdin = True
        elif word == '--workdir':
            workdir = next(words, None)
            if not workdir:
                raise SystemExit('rtpp_member: --workdir needs a directory')
        else:
            args.append(word)
    return die_with_stdin, workdir, args


def main(argv: list[str]) -> int:
    die_with_stdin, workdir, args = split_options(argv)
    if '-F' not in args:
        args.append('-F')
    own_workdir = workdir is None
    workdir = tempfile.mkdtemp(prefix='rtpp-member-') if own_workdir else workdir
    try:
        os.chdir(workdir)
        return run_engine(args, die_with_stdin)
    finally:
        if own_workdir:
            shutil.rmtree(workdir, ignore_errors=True)


def run_engine(args: list[str], die_with_stdin: bool) -> int:
    from rtp.io import rtpproxy  # imported late: it is a test/demo dependency only

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    engine = rtpproxy(extra_args=args, debug_level='err')
    print('READY %d' % os.getpid(), flush=True)
    if die_with_stdin:
        threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    while not stop.wait(1.0):
        pass
    del engine
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
