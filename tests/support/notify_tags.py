"""Notification tags as the cluster issues them, computed independently of the code under test."""
from __future__ import annotations

import base64
import hashlib
import hmac

from rtp_cluster.core import protocol

TEST_KEY = bytes(range(32))


def expected_mac(key: bytes, cluster: str, destination: str, tag: str) -> str:
    """Truncated (128-bit) HMAC-SHA256 of the length-prefixed cluster, destination and tag."""
    parts = [cluster.encode(), destination.encode('latin-1'), tag.encode('latin-1')]
    message = b''.join(b'%d:%s' % (len(p), p) for p in parts)
    digest = hmac.new(key, message, hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(digest).decode().rstrip('=')


def quoted_tag(cluster: str, destination: str, tag: str, key: bytes = TEST_KEY) -> str:
    """The %-encoded notify tag a remote member gets: `<mac> <destination> <tag>`."""
    return protocol.percent_quote('%s %s %s' % (expected_mac(key, cluster, destination, tag),
                                                destination, tag))
