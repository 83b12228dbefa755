"""Adapters: Twisted servers and clients, Redis connections, the admin line protocol and the
runtime that wires them to the core.

Importing this package routes the core's log events (`rtp_cluster.core.log`) to
`twisted.logger`, keeping their namespace, source, level and format.
"""
from ._logging import route_core_logging

route_core_logging()
