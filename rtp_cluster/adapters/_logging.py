"""The sink that turns core log events into twisted.logger events."""
from __future__ import annotations

from typing import Any

from twisted.logger import Logger, LogLevel

from ..core import log as core_log

_LEVELS = {name: LogLevel.levelWithName(name) for name in core_log.LEVELS}


def twisted_sink(level: str, namespace: str, source: object, format: str,
                 fields: dict[str, Any]) -> None:
    """Emit one core event through twisted.logger (observers see the same event as before)."""
    Logger(namespace, source).emit(_LEVELS[level], format, **fields)


def route_core_logging() -> None:
    core_log.install_sink(twisted_sink)
