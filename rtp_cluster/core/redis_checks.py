"""What Redis's own configuration means for session sharing, without I/O.

At start and after every reconnect the writer asks Redis ``CONFIG GET
notify-keyspace-events`` and ``CONFIG GET maxmemory-policy`` and hands the replies to
`ServerChecks`, which decides what to report (and, with <configure_notifications>, what to
``CONFIG SET``):

- sharing learns its peers' changes only from keyspace notifications: a Redis that does not
  publish the classes below makes sharing silently share nothing, so that is an error;
- a policy other than ``noeviction`` lets a full Redis evict live sessions: a warning;
- managed services disable or rename CONFIG (or an ACL denies it): the checks cannot run,
  which is said once, and sharing goes on.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .resp import ReplyError

__all__ = ['NEEDED_CLASSES', 'Finding', 'ServerChecks', 'missing_classes', 'config_value']

# K: keyspace channel; g: DEL/EXPIRE/RENAME; h: HSET; x: expired; e: evicted
NEEDED_CLASSES = 'Kghxe'
_ALIAS_A = frozenset('g$lshzxet')     # what the class alias A stands for
NOTIFY, POLICY = 'notify-keyspace-events', 'maxmemory-policy'


@dataclass(frozen=True)
class Finding:
    level: str       # 'error', 'warn' or 'info'
    text: str


def missing_classes(flags: str) -> str:
    """The classes of NEEDED_CLASSES that `flags` (a notify-keyspace-events value) lacks."""
    have = set(flags)
    if 'A' in have:
        have |= _ALIAS_A
    return ''.join(c for c in NEEDED_CLASSES if c not in have)


def config_value(reply: Any) -> tuple[str | None, str]:
    """(value, '') from a CONFIG GET reply, or (None, why the value is unknown)."""
    if isinstance(reply, ReplyError):
        return None, str(reply)
    if isinstance(reply, list) and len(reply) == 2 and isinstance(reply[1], bytes):
        return reply[1].decode('latin-1'), ''
    return None, ('unexpected reply %r' % (reply,))[:80]


class ServerChecks:
    """The findings about the Redis we are connected to, renewed at every connect."""

    def __init__(self, configure_notifications: bool) -> None:
        self.configure = configure_notifications
        self.findings: tuple[Finding, ...] = ()
        self.checked = False          # a check has completed at least once
        self._set_tried = False       # CONFIG SET was tried since this connect
        self._set_error = ''          # what it answered, if an error

    def connected(self) -> None:
        """A new connection: its server may be another one (failover, restart)."""
        self._set_tried = False
        self._set_error = ''

    def on_config(self, notify_reply: Any, policy_reply: Any) -> str | None:
        """The CONFIG GET replies; returns a notify-keyspace-events value to CONFIG SET
        (then the caller asks again), or None when the findings are final."""
        notify, why = config_value(notify_reply)
        if notify is None:
            self._settle([Finding('warn', 'could not check the Redis configuration (CONFIG GET '
                                  '%s: %s); make sure Redis publishes %s keyspace events and '
                                  'does not evict keys' % (NOTIFY, why, NEEDED_CLASSES))])
            return None
        missing = missing_classes(notify)
        if missing and self.configure and not self._set_tried:
            self._set_tried = True
            return notify + missing
        findings = []
        if missing:
            findings.append(Finding('error', self._notify_problem(notify, missing)))
        elif self._set_tried:
            findings.append(Finding('info', '%s set to "%s" (<configure_notifications>)'
                                    % (NOTIFY, notify)))
        findings += self._policy_findings(policy_reply)
        self._settle(findings)
        return None

    def on_set(self, reply: Any) -> None:
        """What CONFIG SET answered; the caller then asks CONFIG GET again."""
        self._set_error = str(reply) if isinstance(reply, ReplyError) else ''

    def _notify_problem(self, notify: str, missing: str) -> str:
        fix = ('CONFIG SET %s refused: %s' % (NOTIFY, self._set_error) if self._set_error else
               'CONFIG SET did not take' if self._set_tried else
               'set "%s %s" in redis.conf or <configure_notifications>yes'
               '</configure_notifications>' % (NOTIFY, NEEDED_CLASSES))
        return ('%s is "%s", missing %s: peers will not learn of changed sessions '
                '(session sharing needs %s); %s' % (NOTIFY, notify, ' '.join(missing),
                                                    NEEDED_CLASSES, fix))

    def _policy_findings(self, reply: Any) -> list[Finding]:
        policy, why = config_value(reply)
        if policy is None:
            return [Finding('warn', 'could not check %s: %s' % (POLICY, why))]
        if policy != 'noeviction':
            return [Finding('warn', '%s is "%s", not noeviction: a full Redis may evict live '
                                    'sessions; set noeviction' % (POLICY, policy))]
        return []

    def _settle(self, findings: list[Finding]) -> None:
        self.findings = tuple(findings)
        self.checked = True
