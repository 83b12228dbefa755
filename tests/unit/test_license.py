"""LICENSE, pyproject.toml and debian/copyright name the same licence, with the same terms."""
from __future__ import annotations

import os
import re
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def read(*parts: str) -> str:
    with open(os.path.join(ROOT, *parts), encoding='utf-8') as f:
        return f.read()


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def test_license_file_is_bsd_2_clause_as_the_metadata_says():
    license_text = read('LICENSE')
    assert license_text.startswith('BSD 2-Clause License\n')
    with open(os.path.join(ROOT, 'pyproject.toml'), 'rb') as f:
        assert tomllib.load(f)['project']['license'] == {'text': 'BSD-2-Clause'}
    copyright_file = read('debian', 'copyright')
    files_stanza = copyright_file.split('\n\n')[1]
    assert files_stanza.startswith('Files: *\n') and 'License: BSD-2-Clause' in files_stanza


def test_debian_copyright_carries_the_terms_of_the_license_file():
    license_terms = read('LICENSE').split('All rights reserved.', 1)[1]
    debian_terms = read('debian', 'copyright').split('License: BSD-2-Clause\n', 2)[2]
    assert words(debian_terms) == words(license_terms)
