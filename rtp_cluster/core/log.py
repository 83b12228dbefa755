"""Logging for the sans-IO core without depending on a logging framework.

Core classes declare ``log = Logger()`` as they would with ``twisted.logger``: used as a
class attribute, the logger is named after the class (``rtp_cluster.core.cluster.Cluster``)
and its source is the instance.  Events use PEP 3101 format strings with keyword fields
(``'member {name}: {why}'``).  Each event goes to one installed sink;
``rtp_cluster.adapters`` installs one that emits to ``twisted.logger`` when it is imported.
Until then events go to the standard ``logging`` module, so nothing is silently lost.
"""
from __future__ import annotations

import logging
from typing import Any, Protocol

__all__ = ['Logger', 'LogSink', 'install_sink', 'LEVELS']

LEVELS = ('debug', 'info', 'warn', 'error', 'critical')
_STDLIB_LEVELS = {'debug': logging.DEBUG, 'info': logging.INFO, 'warn': logging.WARNING,
                  'error': logging.ERROR, 'critical': logging.CRITICAL}


class LogSink(Protocol):
    """Receives every core log event."""

    def __call__(self, level: str, namespace: str, source: object, format: str,
                 fields: dict[str, Any]) -> None: ...


def _stdlib_sink(level: str, namespace: str, source: object, format: str,
                 fields: dict[str, Any]) -> None:
    logger = logging.getLogger(namespace)
    if logger.isEnabledFor(_STDLIB_LEVELS[level]):
        logger.log(_STDLIB_LEVELS[level], '%s', format.format(**fields))


_sink: LogSink = _stdlib_sink


def install_sink(sink: LogSink | None) -> None:
    """Route every core log event to `sink`; None restores the standard-library fallback."""
    global _sink
    _sink = _stdlib_sink if sink is None else sink


class Logger:
    """A named logger whose events go to the installed sink."""

    def __init__(self, namespace: str = 'rtp_cluster.core', source: object = None) -> None:
        self.namespace = namespace
        self.source = source

    def __get__(self, instance: object, owner: type | None = None) -> 'Logger':
        assert owner is not None
        return Logger('%s.%s' % (owner.__module__, owner.__name__),
                      owner if instance is None else instance)

    def emit(self, level: str, format: str, **fields: Any) -> None:
        _sink(level, self.namespace, self.source, format, fields)

    def debug(self, format: str, **fields: Any) -> None:
        self.emit('debug', format, **fields)

    def info(self, format: str, **fields: Any) -> None:
        self.emit('info', format, **fields)

    def warn(self, format: str, **fields: Any) -> None:
        self.emit('warn', format, **fields)

    def error(self, format: str, **fields: Any) -> None:
        self.emit('error', format, **fields)

    def critical(self, format: str, **fields: Any) -> None:
        self.emit('critical', format, **fields)
