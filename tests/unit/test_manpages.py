"""The man pages document every admin command and every configuration element: their lists are
generated from the command registry and the configuration schema (tools/gen_man.py), and the
committed pages must match what the generator writes."""
import os
import shutil
import subprocess

import pytest

from rtp_cluster.adapters.admin import build_registry
from rtp_cluster.core import config_schema
from tools import gen_man


def page(name: str) -> str:
    with open(os.path.join(gen_man.MAN, name), encoding='utf-8') as f:
        return f.read()


def test_committed_pages_are_what_the_generator_writes():
    assert gen_man.main(['--check']) == 0, 'run: python -m tools.gen_man'


def test_every_admin_command_and_alias_is_in_the_client_page():
    text = page('rtp_cluster_client.8')
    for command in build_registry():
        assert '.B %s\n' % gen_man.roff(command.synopsis) in text, command.name
        for words in command.aliases:
            assert gen_man.roff(' '.join(words)) in text, words


def test_every_configuration_element_is_in_the_daemon_page():
    text = page('rtp_cluster.8')
    for element, rows in config_schema.ELEMENTS.items():
        assert '.SS <%s>' % element in text, element
        for row in rows:
            assert '.B <%s>' % row.tag in text, (element, row.tag)


def test_check_fails_when_a_page_lacks_a_command(tmp_path, monkeypatch):
    for name in os.listdir(gen_man.MAN):
        shutil.copy(os.path.join(gen_man.MAN, name), tmp_path / name)
    stale = (tmp_path / 'rtp_cluster_client.8').read_text().replace('.B ksrm PEER\n', '')
    (tmp_path / 'rtp_cluster_client.8').write_text(stale)
    monkeypatch.setattr(gen_man, 'MAN', str(tmp_path))
    assert gen_man.main(['--check']) == 1
    assert gen_man.main([]) == 0                        # rewrites the stale page
    assert '.B ksrm PEER\n' in (tmp_path / 'rtp_cluster_client.8').read_text()
    assert gen_man.main(['--check']) == 0


def test_roff_escapes_what_roff_would_read_as_markup():
    assert gen_man.roff('a-b') == 'a\\-b'
    assert gen_man.roff('C:\\x') == 'C:\\ex'
    assert gen_man.roff('.not a request') == '\\&.not a request'
    assert gen_man.roff("'neither") == "\\&'neither"


@pytest.mark.skipif(shutil.which('groff') is None, reason='groff not installed')
@pytest.mark.parametrize('name', ['rtp_cluster.8', 'rtp_cluster_client.8'])
def test_pages_render_without_warnings(name):
    result = subprocess.run(['groff', '-man', '-Tutf8', '-ww', '-z', os.path.join(gen_man.MAN, name)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and result.stderr == '', result.stderr
