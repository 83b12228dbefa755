"""The record of one shared session in Redis: its fields, their validation and the choice of
the newest among several keys of one call.

A session's Redis hash holds the fields of `Record`; `decode_record` turns a hash read
from Redis (bytes or str) into a `Record` or raises `BadRecord` with the reason, so
nothing a peer or an operator wrote there reaches the session table unchecked.
"""
from __future__ import annotations

from sys import intern
from typing import Mapping, NamedTuple

from .keys import parse_session_key

__all__ = ['RECORD_VERSION', 'MAX_CALL_ID', 'MAX_FIELD', 'ACTIVE_STATE', 'DELETED_STATE',
           'Record', 'BadRecord', 'decode_record', 'newest_records']

RECORD_VERSION = 1
MAX_CALL_ID = 512
MAX_FIELD = 1024
ACTIVE_STATE = 'active'
DELETED_STATE = 'deleted'
_FIELDS = ('v', 'cid', 'cluster', 'member', 'maddr', 'ftag', 'ttag', 'created', 'updated',
           'owner', 'epoch', 'seq', 'state')
_FIELD_SET = frozenset(_FIELDS)


class Record(NamedTuple):
    """One session as published: the fields of its Redis hash.  Immutable: a write carries
    the state the session had when the writer took it, never a later one."""
    cid: str
    cluster: str
    member: str
    maddr: str
    ftag: str
    ttag: str
    created: float
    updated: float
    owner: str
    epoch: int
    seq: int
    state: str = ACTIVE_STATE

    @property
    def order(self) -> tuple[int, int, str]:
        return self.epoch, self.seq, self.owner

    def to_mapping(self) -> dict[str, str]:
        return {'v': str(RECORD_VERSION), 'cid': self.cid, 'cluster': self.cluster,
                'member': self.member, 'maddr': self.maddr, 'ftag': self.ftag,
                'ttag': self.ttag, 'created': '%.3f' % self.created,
                'updated': '%.3f' % self.updated, 'owner': self.owner,
                'epoch': str(self.epoch), 'seq': str(self.seq), 'state': self.state}


def _text(value) -> str:
    return value.decode('latin-1') if isinstance(value, bytes) else str(value)


class BadRecord(ValueError):
    """A record in Redis that cannot be used; the message says why."""


def decode_record(key: str, namespace: str, raw: Mapping) -> Record:
    """Validate a hash read from Redis (bytes or str); raises BadRecord."""
    if not raw:
        raise BadRecord('empty or missing')
    try:                    # redis-py's bytes: the common case of every resync, kept fast
        fields = {name.decode('latin-1'): value.decode('latin-1')
                  for name, value in raw.items()}
    except AttributeError:
        fields = {_text(name): _text(value) for name, value in raw.items()}
    if max(map(len, fields.values())) > MAX_FIELD:
        name = next(n for n, v in fields.items() if len(v) > MAX_FIELD)
        raise BadRecord('field %s is %d bytes long' % (name[:40], len(fields[name])))
    if not _FIELD_SET <= fields.keys():
        missing = [f for f in _FIELDS if f not in fields]
        raise BadRecord('missing fields: %s' % ', '.join(missing))
    try:
        version, epoch, seq = int(fields['v']), int(fields['epoch']), int(fields['seq'])
        created, updated = float(fields['created']), float(fields['updated'])
    except ValueError as exc:
        raise BadRecord('bad number: %s' % exc) from None
    if version < 1 or epoch < 1 or seq < 1:
        raise BadRecord('version, epoch and seq must be positive')
    parsed = parse_session_key(namespace, key)
    owner = parsed.owner if parsed is not None else None
    if owner is None or owner != fields['owner']:
        raise BadRecord('owner %r does not match the key' % fields['owner'][:64])
    if fields['state'] not in (ACTIVE_STATE, DELETED_STATE):
        raise BadRecord('unknown state %r' % fields['state'][:20])
    cid, cluster = fields['cid'], fields['cluster']
    if not cid or len(cid) > MAX_CALL_ID or not fields['member']:
        raise BadRecord('bad call-id or member')
    if parsed != (owner, cluster, cid):
        raise BadRecord('call-id/cluster do not match the key')
    # the names a record shares with thousands of others are kept once (interned), not
    # once per session: ~180 bytes less per foreign session at 100,000
    return Record(cid, intern(cluster), intern(fields['member']), intern(fields['maddr']),
                  fields['ftag'], fields['ttag'], created, updated, intern(owner), epoch, seq,
                  intern(fields['state']))


def newest_records(namespace: str,
                   records: list[tuple[str, dict]]) -> list[tuple[str, Record | dict]]:
    """Of the keys of one call in different prefixes, keep only the newest record.

    A dead owner's key outlives a takeover and the taker's tombstone until both expire; a
    resync reads them in scan order, and applying the stale record after the tombstone
    would bring a deleted call back.  Decodable hashes come back decoded (a `Record`, so
    the reactor does not decode them again); unreadable ones are kept as they were read
    (counted where applied).
    """
    best: dict[tuple[str, str], tuple] = {}
    decoded: list[tuple[str, Record | dict]] = []
    for key, raw in records:
        try:
            record = decode_record(key, namespace, raw)
        except BadRecord:
            decoded.append((key, raw))
            continue
        decoded.append((key, record))
        ident = (record.cluster, record.cid)
        if ident not in best or record.order > best[ident]:
            best[ident] = record.order
    return [(key, item) for key, item in decoded
            if not isinstance(item, Record) or item.order == best[(item.cluster, item.cid)]]
