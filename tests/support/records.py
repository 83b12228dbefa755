"""Shared session records for tests: a `Record` with defaults, and its hash as redis-py
returns it (bytes)."""
from __future__ import annotations

from rtp_cluster.core.keys import session_key
from rtp_cluster.core.records import Record

NS = 'rtpc'


def record(cid='c1', owner='b', epoch=1, seq=1, member='m1', state='active', cluster='test',
           ftag='ft', ttag='', created=1000.0) -> Record:
    return Record(cid, cluster, member, 'udp:127.0.0.1:1', ftag, ttag, created, created, owner,
                  epoch, seq, state)


def encoded(rec: Record, **changes) -> tuple[str, dict]:
    """(key, raw hash as redis-py returns it: bytes) with fields changed/removed (None)."""
    mapping = rec.to_mapping()
    for name, value in changes.items():
        if value is None:
            mapping.pop(name, None)
        else:
            mapping[name] = value
    raw = {k.encode(): (v if isinstance(v, bytes) else str(v).encode('latin-1'))
           for k, v in mapping.items()}
    return session_key(NS, rec.owner, rec.cluster, rec.cid), raw
