"""core/admin_auth: the secret file's format and one connection's `auth` gate."""
from __future__ import annotations

import pytest

from rtp_cluster.core.admin_auth import (
    AUTH_FAILED, AUTH_REQUIRED, AuthGate, auth_line, parse_secret,
)

SECRET = 'correct horse battery staple'


def test_the_secret_is_the_first_line_without_surrounding_blanks():
    assert parse_secret(b'  %s \r\nsecond line\n' % SECRET.encode()) == SECRET
    assert parse_secret(SECRET.encode()) == SECRET


@pytest.mark.parametrize('data, problem', [
    (b'', 'shorter than 16'),
    (b'short\n' + b'x' * 40, 'shorter than 16'),
    (b'\xff' * 20, 'not UTF-8'),
    (b'0123456789abcdef\x07', 'control characters'),
])
def test_unusable_secrets_are_refused_with_the_reason(data, problem):
    with pytest.raises(ValueError, match=problem):
        parse_secret(data)


def test_without_a_secret_the_gate_is_open():
    assert AuthGate(None).passed


def test_the_gate_opens_only_for_the_right_secret():
    gate = AuthGate(SECRET)
    assert not gate.passed
    assert gate.check('ls') == AUTH_REQUIRED
    assert gate.check('auth') == AUTH_FAILED
    assert gate.check('auth ' + SECRET + 'x') == AUTH_FAILED
    assert gate.check('authx ' + SECRET) == AUTH_REQUIRED
    assert not gate.passed
    assert gate.check(auth_line(SECRET) + '\r') is None
    assert gate.passed


def test_a_secret_with_inner_blanks_is_compared_whole():
    gate = AuthGate(SECRET)
    assert gate.check('auth correct horse') == AUTH_FAILED
    assert gate.check('auth  %s ' % SECRET) is None
