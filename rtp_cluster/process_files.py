"""The files a daemon keeps: its locked pid file and its log file.

No Twisted here: the parent process of `rtp_cluster` (without `-f`) uses these before the
fork and must not import the reactor.
"""
from __future__ import annotations

import errno
import fcntl
import os
import stat
import sys


class AppError(Exception):
    """A startup problem; str(e) is one line for the operator."""


class PidFile:
    """A locked pidfile: a second daemon with the same pidfile refuses to start.

    The file is opened without following symlinks and must be a regular file with a single
    link, so that a planted link cannot make the daemon (often root) overwrite another file.
    It is created mode 0644 whatever the umask, and removed at exit only if it still holds
    our pid (a successor may have taken the path over).
    """

    MODE = 0o644
    _FLAGS = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None
        self._pid: int | None = None

    def acquire(self) -> None:
        fd = self._open()
        try:
            self._check_file(fd)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except AppError:
            os.close(fd)
            raise
        except OSError:
            os.close(fd)
            raise AppError('pidfile %s is locked: is another rtp_cluster running?' % self.path) from None
        self._pid = os.getpid()
        os.ftruncate(fd, 0)
        os.write(fd, b'%d\n' % self._pid)
        self._fd = fd

    def _open(self) -> int:
        """The pidfile's descriptor: created 0644, or the existing file, never through a link."""
        try:
            fd = os.open(self.path, self._FLAGS | os.O_CREAT | os.O_EXCL, self.MODE)
        except FileExistsError:
            pass
        except OSError as exc:
            raise self._error(exc) from None
        else:
            os.fchmod(fd, self.MODE)       # the umask must not make it unreadable to tools
            return fd
        try:
            return os.open(self.path, self._FLAGS)
        except OSError as exc:
            raise self._error(exc) from None

    def _error(self, exc: OSError) -> AppError:
        if exc.errno == errno.ELOOP:
            return AppError('pidfile %s is a symbolic link; refusing to follow it' % self.path)
        return AppError('cannot write pidfile %s: %s' % (self.path, exc.strerror))

    def _check_file(self, fd: int) -> None:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise AppError('pidfile %s is not a regular file' % self.path)
        if st.st_nlink != 1:
            raise AppError('pidfile %s has %d hard links; refusing to write it'
                           % (self.path, st.st_nlink))

    def remove(self) -> None:
        if self._fd is None:
            return
        if self._holds_our_pid():
            try:
                os.unlink(self.path)
            except OSError:
                pass
        os.close(self._fd)
        self._fd = None

    def _holds_our_pid(self) -> bool:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError:
            return False
        try:
            return os.read(fd, 32).strip() == b'%d' % self._pid
        except OSError:
            return False
        finally:
            os.close(fd)


class LogFile:
    """The daemon's log file on fds 1 and 2; reopen() after logrotate moved it."""

    def __init__(self, path: str) -> None:
        self.path = path

    def check(self) -> None:
        try:
            with open(self.path, 'a'):
                pass
        except OSError as exc:
            raise AppError('cannot open log file %s: %s' % (self.path, exc.strerror)) from None

    def reopen(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
