"""How long the garbage collector's full pass takes with many live sessions (issue 16).

CPython's cyclic collector walks every object it tracks on a full (generation 2) pass, and
the daemon holds the reactor meanwhile.  This builds the daemon's session state in this
process, as the daemon would hold it, and times full passes over it:

- `memory`: a MemorySessionStore with --sessions sessions (bound, their to-tag learnt);
- `shared`: a SharedSessionStore, half of them own, half learnt from a peer's records;
- `cluster`: the whole control path of bench.micro (server, cluster, member clients), each
  session created by a U and an L as a client sends them (reply cache entries included).

What existed before the sessions were made is frozen first (`gc.freeze()`, as the daemon
does once it has started), so the figures are the sessions' own share.  Also printed: the
objects the collector tracks, and lookups and binds per second on the full table (the
store's O(1) work per command).  CPU time, so the figures hold on a busy machine too.

    python -m bench.gc_pause                       # 200,000 sessions, every kind
    python -m bench.gc_pause --sessions 50000 --kind memory
"""
from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time

from bench.micro import Stand      # (the daemon's modules: imported before the freeze)
from rtp_cluster.core.sessions import MemorySessionStore
from rtp_cluster.core.records import Record
from rtp_cluster.core.sharing import SharedSessionStore

KINDS = ('memory', 'shared', 'cluster')


def memory_store(n: int) -> MemorySessionStore:
    store = MemorySessionStore()
    for i in range(n):
        call_id = 'call-%d' % i
        store.bind(call_id, 'm%d' % (1 + i % 2), 'ft%d' % i, None)
        store.learn_to_tag(call_id, 'tt%d' % i)
    return store


def shared_store(n: int) -> SharedSessionStore:
    store = SharedSessionStore('c', 'a', 'ns', lambda key, op: None)
    for i in range(n // 2):
        call_id = 'own-%d' % i
        store.bind(call_id, 'm1', 'ft%d' % i, None)
        store.learn_to_tag(call_id, 'tt%d' % i)
    for i in range(n - n // 2):
        store.apply_record(Record('peer-%d' % i, 'c', 'm2', 'udp:127.0.0.1:7002', 'ft%d' % i,
                                  'tt%d' % i, 1.0, 1.0, 'b', 1, 1))
    return store


def cluster_sessions(n: int):
    stand = Stand()
    for i in range(n):
        call_id = 'call-%d' % i
        stand.command(('u%d U %s 127.0.0.1 4000 ft%d' % (i, call_id, i)).encode())
        stand.command(('l%d L %s 127.0.0.1 4002 ft%d tt%d' % (i, call_id, i, i)).encode())
    assert len(stand.cluster.store) == n
    return stand


BUILDERS = {'memory': memory_store, 'shared': shared_store, 'cluster': cluster_sessions}


def full_passes(repeat: int) -> list[float]:
    """CPU seconds of `repeat` full collections."""
    gc.collect()                     # the first pass also untracks what it can: not timed
    durations = []
    for _ in range(repeat):
        started = time.process_time()
        gc.collect()
        durations.append(time.process_time() - started)
    return durations


def store_rates(store, n: int, count: int = 100_000, repeat: int = 5) -> tuple[float, float]:
    """(lookups/s of own sessions, binds/s of new call-ids) on a table of `n` sessions, CPU
    time, the best of `repeat` runs."""
    known = store.call_ids()[:max(1, n // 2)]        # the first half: own in every kind
    call_ids = [known[i * 7919 % len(known)] for i in range(count)]
    lookup, bind = store.lookup, store.bind
    lookups = binds = 0.0
    for run in range(repeat):
        started = time.process_time()
        for call_id in call_ids:
            lookup(call_id)
        lookups = max(lookups, count / (time.process_time() - started))
        fresh = ['new-%d-%d' % (run, i) for i in range(count)]
        started = time.process_time()
        for call_id in fresh:
            bind(call_id, 'm1', 'ft', None)
        binds = max(binds, count / (time.process_time() - started))
        for call_id in fresh:
            store.unbind(call_id)
    return lookups, binds


def measure(kind: str, n: int, repeat: int) -> dict:
    gc.collect()
    gc.freeze()
    try:
        held = BUILDERS[kind](n)
        passes = full_passes(repeat)
        result = {'kind': kind, 'sessions': n, 'tracked': len(gc.get_objects()),
                  'full_pass_ms': statistics.median(passes) * 1e3,
                  'worst_ms': max(passes) * 1e3}
        if kind != 'cluster':
            result['lookups_per_s'], result['binds_per_s'] = store_rates(held, n)
        del held
    finally:
        gc.unfreeze()
        gc.collect()
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description='full garbage-collector passes with live sessions')
    ap.add_argument('--sessions', type=int, default=200_000)
    ap.add_argument('--repeat', type=int, default=5, help='full passes timed (median printed)')
    ap.add_argument('--kind', choices=KINDS, action='append',
                    help='memory, shared or cluster (every kind by default)')
    args = ap.parse_args(argv)
    for kind in args.kind or KINDS:
        r = measure(kind, args.sessions, args.repeat)
        line = ('%-8s %d sessions: %8d objects tracked, full pass %7.1f ms (worst %.1f)'
                % (kind, r['sessions'], r['tracked'], r['full_pass_ms'], r['worst_ms']))
        if 'lookups_per_s' in r:
            line += '; %.0f lookups/s, %.0f binds/s' % (r['lookups_per_s'], r['binds_per_s'])
        print(line, flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
