"""The daemon's log level and log format (text lines or JSON lines for log shippers).

`LogLevels` owns the twisted.logger filter every log observer of the daemon goes through,
so `set loglevel` on the admin socket and `<log_level>` in the config change what is
logged at once, without restarting.
"""
from __future__ import annotations

from typing import IO

from twisted.logger import (FilteringLogObserver, ILogObserver, LogLevel,
                            LogLevelFilterPredicate, jsonFileLogObserver, textFileLogObserver)

from ..core.config import LOG_LEVELS, parse_log_level

LOG_FORMATS = ('text', 'json')


class LogLevels:
    def __init__(self, level: str = 'info') -> None:
        self.predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.levelWithName(level))

    @property
    def level(self) -> str:
        return self.predicate.defaultLogLevel.name

    def set(self, text: str) -> str:
        """Change the level; ValueError naming the levels when `text` is not one of them."""
        level = parse_log_level(text)
        self.predicate.defaultLogLevel = LogLevel.levelWithName(level)
        self.predicate.clearLogLevels()     # the predicate keeps the old default otherwise
        return level

    def filtered(self, observer: ILogObserver) -> ILogObserver:
        return FilteringLogObserver(observer, [self.predicate])


def file_observer(stream: IO[str], log_format: str) -> ILogObserver:
    """Text lines (the default) or one JSON object per line (no record separator)."""
    if log_format == 'json':
        return jsonFileLogObserver(stream, recordSeparator='')
    return textFileLogObserver(stream)


__all__ = ['LogLevels', 'file_observer', 'LOG_FORMATS', 'LOG_LEVELS']
