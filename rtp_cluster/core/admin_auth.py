"""The shared secret of a TCP admin socket (`--admin-secret-file`) and the `auth` line.

When the daemon has a secret, a client's first line on a TCP admin connection must be
``auth SECRET``; anything else, or a wrong secret, is answered with one ERROR line and
the connection is closed.  The daemon and rtp_cluster_client read the secret the same
way: the first line of the file, surrounding white space removed.
"""
from __future__ import annotations

import hmac

__all__ = ['AUTH_WORD', 'MIN_SECRET', 'parse_secret', 'auth_line', 'AuthGate',
           'AUTH_REQUIRED', 'AUTH_FAILED']

AUTH_WORD = 'auth'
MIN_SECRET = 16                # characters: something no one guesses in a few tries
AUTH_REQUIRED = 'authentication required: send "auth SECRET" first'
AUTH_FAILED = 'authentication failed'


def parse_secret(data: bytes) -> str:
    """The secret in a secret file's content; ValueError naming the problem."""
    first = data.split(b'\n', 1)[0].strip()
    try:
        secret = first.decode('utf-8')
    except UnicodeDecodeError:
        raise ValueError('the secret (first line) is not UTF-8 text') from None
    if len(secret) < MIN_SECRET:
        raise ValueError('the secret (first line) is shorter than %d characters' % MIN_SECRET)
    if any(not char.isprintable() for char in secret):
        raise ValueError('the secret (first line) holds control characters')
    return secret


def auth_line(secret: str) -> str:
    """What a client sends first, without its line end."""
    return '%s %s' % (AUTH_WORD, secret)


class AuthGate:
    """One connection's authentication: open at once without a secret, else after `auth`."""

    def __init__(self, secret: str | None) -> None:
        self._secret = secret.encode('utf-8') if secret is not None else None
        self.passed = secret is None

    def check(self, line: str) -> str | None:
        """A line received before `passed`: None if it authenticated, else the error text
        (the connection is then to be closed)."""
        word, _, rest = line.strip().partition(' ')
        if word != AUTH_WORD:
            return AUTH_REQUIRED
        offered = rest.strip().encode('utf-8', 'surrogatepass')
        if self._secret is None or not hmac.compare_digest(offered, self._secret):
            return AUTH_FAILED
        self.passed = True
        return None
