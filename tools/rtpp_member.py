#!/usr/bin/env python3
"""Run one real RTPproxy (the engine embedded in the PyPI package rtp-io) in this process.

Used by the tests, the demo and the benchmarks as a cluster member:

    python tools/rtpp_member.py -s udp:127.0.0.1:23480 -l 127.0.0.1 -m 46000 -M 46999

Every argument is passed to the engine as an rtpproxy command-line option; `-F` is added
(needed for network control sockets when running as root).  The engine writes its
accounting file into the working directory, so the process changes into a private
temporary directory first.  It prints `READY <pid>` once the engine runs, and exits on
SIGTERM or SIGINT (or when its parent closes its stdin, with --die-with-stdin).
"""
import os
import signal
import sys
import tempfile
import threading


def main(argv: list[str]) -> int:
    die_with_stdin = '--die-with-stdin' in argv
    args = [a for a in argv if a != '--die-with-stdin']
    if '-F' not in args:
        args.append('-F')
    os.chdir(tempfile.mkdtemp(prefix='rtpp-member-'))
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
