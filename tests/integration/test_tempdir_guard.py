"""The temp-directory guard (tests/support/tempdir_guard.py) in a pytest run of its own."""
from __future__ import annotations

import os
import subprocess
import sys

from tests.support.procs import ROOT

LEAKY = '''
import os, tempfile

def test_leaks_a_directory():
    tempfile.mkdtemp(prefix='leaky-')

def test_leaks_a_file_in_a_child_process():
    import subprocess, sys
    subprocess.run([sys.executable, '-c', 'import tempfile; tempfile.mkstemp(prefix="child-")'], check=True)

def test_cleans_up(tmp_path):
    (tmp_path / 'kept-by-pytest.txt').write_text('pytest manages tmp_path')
    os.rmdir(tempfile.mkdtemp(prefix='tidy-'))
'''

TIDY = '''
import os, tempfile

def test_cleans_up(tmp_path):
    (tmp_path / 'kept-by-pytest.txt').write_text('pytest manages tmp_path')
    os.rmdir(tempfile.mkdtemp(prefix='tidy-'))
'''


def run_inner(tmp_path, source: str) -> tuple[subprocess.CompletedProcess, str]:
    """pytest with only the guard plugin on `source`; (result, the TMPDIR it ran under)."""
    project = tmp_path / 'project'
    project.mkdir()
    (project / 'pytest.ini').write_text('[pytest]\n')
    (project / 'test_inner.py').write_text(source)
    system_tmp = tmp_path / 'tmp'
    system_tmp.mkdir()
    env = dict(os.environ, TMPDIR=str(system_tmp), PYTHONPATH=ROOT)
    result = subprocess.run([sys.executable, '-m', 'pytest', '-p', 'tests.support.tempdir_guard',
                             '-p', 'no:cacheprovider', '-q', 'test_inner.py'],
                            cwd=str(project), env=env, capture_output=True, text=True, timeout=120)
    return result, str(system_tmp)


def test_a_run_that_leaves_files_fails_and_names_them(tmp_path):
    result, system_tmp = run_inner(tmp_path, LEAKY)
    assert result.returncode == 1, result.stdout + result.stderr
    out = result.stdout
    assert '3 passed' in out
    assert 'files left in the temp directory' in out
    leaked = [line for line in out.splitlines() if '(appeared during' in line]
    assert len(leaked) == 2, out
    assert leaked[0].startswith('child-') and 'test_leaks_a_file_in_a_child_process' in leaked[0]
    assert leaked[1].startswith('leaky-') and 'test_leaks_a_directory' in leaked[1]
    assert 'tidy-' not in out and 'kept-by-pytest' not in out
    kept, = os.listdir(system_tmp)               # kept for inspection, with the leftovers in it
    assert kept.startswith('rtpct-') and os.path.join(system_tmp, kept) in out
    assert sorted(n for n in os.listdir(os.path.join(system_tmp, kept))
                  if not n.startswith('pytest-of-')) == sorted(line.split()[0] for line in leaked)


def test_a_clean_run_passes_and_removes_its_temp_directory(tmp_path):
    result, system_tmp = run_inner(tmp_path, TIDY)
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'files left in the temp directory' not in result.stdout
    assert os.listdir(system_tmp) == []


def test_a_failed_run_keeps_its_temp_directory(tmp_path):
    result, system_tmp = run_inner(tmp_path, 'def test_fails():\n    assert False\n')
    assert result.returncode == 1
    kept, = os.listdir(system_tmp)
    assert 'temp directory of this run kept: %s' % os.path.join(system_tmp, kept) in result.stdout
