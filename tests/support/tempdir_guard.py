"""pytest plugin: the test run has a private temp directory and must leave nothing in it.

At configure time the plugin creates one directory under the system temp directory and
makes it the temp directory of the run (`tempfile.tempdir` and `TMPDIR`, which the child
processes inherit), so files that tests or their processes forget are found without
looking at a /tmp that other programs share.  pytest's own `tmp_path` tree lives there
too and is not checked: pytest manages it.

After the run, anything else still in the directory is reported with the test during
which it appeared, and the run fails (exit status 1).  A run that passed and left nothing
removes the directory; otherwise it is kept for inspection and its path is printed.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from typing import Generator

import pytest

PREFIX = 'rtpct-'
PYTEST_OWN = 'pytest-of-'        # tmp_path_factory's tree: pytest-of-USER/pytest-N


class TempDirGuard:
    def __init__(self, parent: str | None = None) -> None:
        self.directory = tempfile.mkdtemp(prefix=PREFIX, dir=parent)
        self.saved = (tempfile.tempdir, os.environ.get('TMPDIR'))
        self.first_seen: dict[str, str] = {}      # entry name -> the test during which it appeared
        self.leftovers: list[str] = []
        self.keep = True

    def install(self) -> None:
        tempfile.tempdir = self.directory
        os.environ['TMPDIR'] = self.directory

    def uninstall(self) -> None:
        tempfile.tempdir, tmpdir = self.saved
        if tmpdir is None:
            os.environ.pop('TMPDIR', None)
        else:
            os.environ['TMPDIR'] = tmpdir
        if not self.keep:
            shutil.rmtree(self.directory, ignore_errors=True)

    def entries(self) -> set[str]:
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return set()
        return {name for name in names if not name.startswith(PYTEST_OWN)}

    def note_new(self, before: set[str], nodeid: str) -> None:
        for name in self.entries() - before:
            self.first_seen.setdefault(name, nodeid)

    def finish(self, session: pytest.Session) -> None:
        self.leftovers = sorted(self.entries())
        if self.leftovers and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        self.keep = bool(self.leftovers) or session.exitstatus not in (
            pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED)

    def report(self, terminal: pytest.TerminalReporter) -> None:
        if self.leftovers:
            terminal.section('files left in the temp directory', sep='=', red=True, bold=True)
            for name in self.leftovers:
                terminal.line('%s  (appeared during %s)'
                              % (name, self.first_seen.get(name, 'collection or session set-up')))
        if self.keep:
            terminal.line('temp directory of this run kept: %s' % self.directory)

    # --- hooks ------------------------------------------------------------------------------

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item) -> Generator[None, object, object]:
        before = self.entries()
        try:
            return (yield)
        finally:
            self.note_new(before, item.nodeid)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        self.finish(session)

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        self.report(terminalreporter)

    def pytest_unconfigure(self) -> None:
        self.uninstall()


def pytest_configure(config: pytest.Config) -> None:
    guard = TempDirGuard()
    guard.install()
    config.pluginmanager.register(guard, 'tempdir-guard')
