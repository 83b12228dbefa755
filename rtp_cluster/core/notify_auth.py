"""Which notification lines the relay may deliver: only those this cluster issued (sans-IO).

A remote member is told to send a session's timeout notification to the cluster's relay
with a tag the cluster chose (`CommandRewriter`).  That tag is

    <authenticator> <destination> <client's tag>

where the authenticator is a truncated HMAC-SHA256, under a secret of this process, of the
cluster name, the destination and the client's tag.  RTPproxy writes the %-decoded tag back
as one line; the relay delivers `<client's tag>` to the destination only if the
authenticator matches.  A local process that connects to the relay from a member's
address cannot produce one, so it can neither create destinations nor write into a B2BUA's
socket; a member cannot alter the destination or the tag of a line it was given.

The authenticator is 22 characters of the URL-safe base64 alphabet (128 bits): nothing
RTPproxy %-decodes, no separator, and short enough for the 8 KiB command and line limits.
"""
from __future__ import annotations

import base64
import hmac
from dataclasses import dataclass
from enum import Enum

__all__ = ['NotifyAuthenticator', 'Notification', 'Rejection', 'KEY_BYTES', 'MAC_CHARS',
           'MAX_LINE']

KEY_BYTES = 32          # the secret: as long as the hash output
MAC_BYTES = 16          # 128 bits of HMAC-SHA256 kept
MAC_CHARS = 22          # their unpadded base64 length
MAX_LINE = 4096         # longest notification line the relay reads
_UNSENDABLE = ('\n', '\r', '\x00')   # would split or cut the line RTPproxy writes


@dataclass(frozen=True)
class Notification:
    """An authenticated line: deliver `tag` to `destination`."""

    destination: str    # a socket suffix after dest_socket_prefix (may be ''), or tcp:HOST:PORT
    tag: str            # the client's own tag, %-decoded


class Rejection(Enum):
    MALFORMED = 'malformed'     # not <authenticator> <destination> <tag>
    FORGED = 'forged'           # well-formed, but not issued by this cluster


class NotifyAuthenticator:
    """Issues and checks notification tags for one cluster under a per-process secret."""

    def __init__(self, key: bytes, cluster: str) -> None:
        if len(key) < KEY_BYTES:
            raise ValueError('the notification key must have at least %d bytes' % KEY_BYTES)
        self._key = key
        self._context = _field(cluster.encode('utf-8', 'surrogateescape'))

    def issue(self, destination: str, tag: str) -> str | None:
        """The tag a member must send back, or None when it cannot come back as one line."""
        if ' ' in destination or not tag:
            return None
        line = '%s %s %s' % (self._mac(destination, tag) or '', destination, tag)
        if _unsendable(line) or len(line) > MAX_LINE:
            return None
        return line

    def check(self, line: str) -> Notification | Rejection:
        """What to do with one line a member sent (without its line ending)."""
        mac, _, rest = line.partition(' ')
        destination, separator, tag = rest.partition(' ')
        if len(mac) != MAC_CHARS or not separator or not tag:
            return Rejection.MALFORMED
        if _unsendable(line):
            return Rejection.MALFORMED
        if not hmac.compare_digest(mac, self._mac(destination, tag) or ''):
            return Rejection.FORGED
        return Notification(destination, tag)

    def _mac(self, destination: str, tag: str) -> str | None:
        try:
            message = self._context + _field(destination.encode('latin-1')) \
                + _field(tag.encode('latin-1'))
        except UnicodeEncodeError:
            return None         # RTPproxy's lines are bytes: read as latin-1, never above
        digest = hmac.digest(self._key, message, 'sha256')[:MAC_BYTES]
        return base64.urlsafe_b64encode(digest).rstrip(b'=').decode('ascii')


def _unsendable(line: str) -> bool:
    return any(c in line for c in _UNSENDABLE) or max(line, default='') > '\xff'


def _field(data: bytes) -> bytes:
    """Length-prefixed, so that no two (cluster, destination, tag) give the same message."""
    return b'%d:' % len(data) + data
