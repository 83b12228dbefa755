"""The Redis configuration checks (rtp_cluster/core/redis_checks.py)."""
from __future__ import annotations

import pytest

from rtp_cluster.core.redis_checks import (Finding, ServerChecks, config_value,
                                           missing_classes)
from rtp_cluster.core.resp import ReplyError

UNKNOWN = ReplyError("ERR unknown command 'CONFIG', with args beginning with: 'GET' ")


def got(name: str, value: str) -> list[bytes]:
    return [name.encode(), value.encode('latin-1')]


def notify(value: str) -> list[bytes]:
    return got('notify-keyspace-events', value)


NOEVICTION = got('maxmemory-policy', 'noeviction')


@pytest.mark.parametrize('flags, missing', [
    ('', 'Kghxe'), ('Kghxe', ''), ('xehgK', ''), ('AK', ''), ('KEA', ''), ('EA', 'K'),
    ('Kh', 'gxe'), ('Kgh$', 'xe'), ('KA$', ''),
])
def test_missing_classes(flags, missing):
    assert missing_classes(flags) == missing


def test_config_value_reads_the_pair_or_says_why_not():
    assert config_value(notify('AKE')) == ('AKE', '')
    assert config_value(UNKNOWN) == (None, str(UNKNOWN))
    assert config_value([]) == (None, 'unexpected reply []')


def test_a_complete_configuration_has_no_findings():
    checks = ServerChecks(False)
    assert not checks.checked
    assert checks.on_config(notify('AKE'), NOEVICTION) is None
    assert checks.checked and checks.findings == ()


def test_missing_notifications_are_an_error_naming_the_fix():
    checks = ServerChecks(False)
    assert checks.on_config(notify(''), NOEVICTION) is None
    (finding,) = checks.findings
    assert finding.level == 'error'
    assert finding.text == (
        'notify-keyspace-events is "", missing K g h x e: peers will not learn of changed '
        'sessions (session sharing needs Kghxe); set "notify-keyspace-events Kghxe" in '
        'redis.conf or <configure_notifications>yes</configure_notifications>')


def test_configure_notifications_asks_to_set_once_per_connection_then_reports_it():
    checks = ServerChecks(True)
    assert checks.on_config(notify('Kh'), NOEVICTION) == 'Khgxe'
    checks.on_set([b'OK'])
    assert checks.on_config(notify('Kghxe'), NOEVICTION) is None
    assert checks.findings == (
        Finding('info', 'notify-keyspace-events set to "Kghxe" (<configure_notifications>)'),)
    # the same connection: no second attempt if the value falls back
    assert checks.on_config(notify('Kh'), NOEVICTION) is None
    assert checks.findings[0].level == 'error'
    assert checks.findings[0].text.endswith('; CONFIG SET did not take')
    checks.connected()                       # a reconnect checks (and sets) again
    assert checks.on_config(notify('Kh'), NOEVICTION) == 'Khgxe'


def test_a_refused_config_set_is_named_in_the_error():
    checks = ServerChecks(True)
    assert checks.on_config(notify(''), NOEVICTION) == 'Kghxe'
    checks.on_set(ReplyError('NOPERM no permission'))
    assert checks.on_config(notify(''), NOEVICTION) is None
    (finding,) = checks.findings
    assert finding.level == 'error'
    assert finding.text.endswith('; CONFIG SET notify-keyspace-events refused: '
                                 'NOPERM no permission')


def test_an_evicting_policy_is_a_warning():
    checks = ServerChecks(False)
    checks.on_config(notify('Kghxe'), got('maxmemory-policy', 'allkeys-lru'))
    assert checks.findings == (Finding(
        'warn', 'maxmemory-policy is "allkeys-lru", not noeviction: a full Redis may evict '
                'live sessions; set noeviction'),)


def test_both_problems_are_reported():
    checks = ServerChecks(False)
    checks.on_config(notify('K$'), got('maxmemory-policy', 'volatile-ttl'))
    assert [f.level for f in checks.findings] == ['error', 'warn']


def test_config_disabled_says_the_check_could_not_run_and_goes_on():
    checks = ServerChecks(True)
    assert checks.on_config(UNKNOWN, UNKNOWN) is None      # nothing to CONFIG SET
    (finding,) = checks.findings
    assert finding.level == 'warn'
    assert finding.text.startswith('could not check the Redis configuration (CONFIG GET '
                                   "notify-keyspace-events: ERR unknown command 'CONFIG'")
    assert finding.text.endswith('make sure Redis publishes Kghxe keyspace events and does '
                                 'not evict keys')
    checks.on_config(notify('Kghxe'), NOEVICTION)           # a later server allows it
    assert checks.findings == ()
