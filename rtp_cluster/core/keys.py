"""The Redis key grammar of session sharing: every key is built and parsed here.

    session (or tombstone)   {ns}:s:{instance}:{cluster}:{call-id}
    presence                 {ns}:n:{instance}

`ns` and `instance` are identifiers without `:` (the configuration checks them).  The
cluster name may contain anything, so it is escaped: `%` as `%25`, `:` as `%3A`; the call-id
is the rest of the key, taken as it is.  With no `:` left in the first four components the
split is unique and the grammar is injective: cluster `a:b` call `Q` and cluster `a` call
`b:Q` are different keys.  Text is latin-1 `str` (every byte one character), so any byte
string round-trips.

A cluster name without `%` or `:` is written as before this grammar existed; keys of a
cluster whose name has either were written unescaped by older versions and no longer parse
(README: such clusters need an empty namespace when upgrading).
"""
from __future__ import annotations

from typing import Iterable, NamedTuple

SESSIONS = 's'
PRESENCE = 'n'


class SessionKey(NamedTuple):
    owner: str
    cluster: str
    call_id: str


def escape_component(text: str) -> str:
    """`text` without `:` (and so without separators), reversibly."""
    if '%' not in text and ':' not in text:
        return text
    return text.replace('%', '%25').replace(':', '%3A')


def unescape_component(text: str) -> str | None:
    """The inverse of `escape_component`; None unless `text` is exactly an escaped form."""
    if '%' not in text:
        return text
    plain = text.replace('%3A', ':').replace('%25', '%')
    return plain if escape_component(plain) == text else None


def session_prefix(namespace: str, owner: str) -> str:
    """Every session key written by `owner` starts with this."""
    return '%s:%s:%s:' % (namespace, SESSIONS, owner)


def cluster_prefix(namespace: str, owner: str, cluster: str) -> str:
    """Every session key of `cluster` written by `owner` starts with this."""
    return '%s:%s:%s:%s:' % (namespace, SESSIONS, owner, escape_component(cluster))


def session_key(namespace: str, owner: str, cluster: str, call_id: str) -> str:
    return cluster_prefix(namespace, owner, cluster) + call_id


def presence_key(namespace: str, instance: str) -> str:
    return '%s:%s:%s' % (namespace, PRESENCE, instance)


def presence_pattern(namespace: str) -> str:
    return '%s:%s:*' % (namespace, PRESENCE)


def sessions_pattern(namespace: str) -> str:
    return '%s:%s:*' % (namespace, SESSIONS)


def parse_session_key(namespace: str, key: str) -> SessionKey | None:
    """(owner, cluster, call-id) of a session key of `namespace`, or None."""
    head = '%s:%s:' % (namespace, SESSIONS)
    if not key.startswith(head):
        return None
    owner, sep, rest = key[len(head):].partition(':')
    if not sep or not owner:
        return None
    escaped, sep, call_id = rest.partition(':')
    if not sep or not call_id:
        return None
    cluster = unescape_component(escaped)
    if cluster is None:
        return None
    return SessionKey(owner, cluster, call_id)


def key_owner(namespace: str, key: str) -> str | None:
    """The instance part of a session key, or None if `key` is not a session key."""
    parsed = parse_session_key(namespace, key)
    return parsed.owner if parsed is not None else None


def parse_presence_key(namespace: str, key: str) -> str | None:
    """The instance a presence key belongs to, or None."""
    head = '%s:%s:' % (namespace, PRESENCE)
    if not key.startswith(head) or len(key) == len(head) or ':' in key[len(head):]:
        return None
    return key[len(head):]


def group_session_keys(namespace: str, keys: Iterable[str]) -> tuple[dict[tuple[str, str],
                                                                           set[str]], int]:
    """The call-ids of the session keys among `keys` by (owner, cluster), and how many keys
    there were in all."""
    groups: dict[tuple[str, str], set[str]] = {}
    count = 0
    for key in keys:
        count += 1
        parsed = parse_session_key(namespace, key)
        if parsed is not None:
            groups.setdefault((parsed.owner, parsed.cluster), set()).add(parsed.call_id)
    return groups, count


def same_call_keys(namespace: str, owner: str, key: str, others: Iterable[str]) -> list[str]:
    """`key` (of `owner`) under each of `others`' prefixes, in name order: where another
    instance may hold a record of the same call."""
    rest = key[len(session_prefix(namespace, owner)):]
    return [session_prefix(namespace, other) + rest for other in sorted(others)]
