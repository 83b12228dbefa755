"""Write the generated parts of the man pages from the code they document.

    python -m tools.gen_man            rewrite man/*.8 in place
    python -m tools.gen_man --check    exit 1 if a page is out of date (the test suite runs this)

Two regions are generated, each between a `.\\" BEGIN name` and a `.\\" END name` line:
- COMMANDS in rtp_cluster_client.8, from the admin command registry (every command, its
  aliases, description and argument details);
- CONFIGURATION in rtp_cluster.8, from the configuration schema (every element and child).
The rest of each page is written by hand.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Iterable

from rtp_cluster.adapters.admin import build_registry
from rtp_cluster.core import config_schema

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAN = os.path.join(ROOT, 'man')


def roff(text: str) -> str:
    """`text` as one line of roff: backslashes and minus signs escaped, no leading control
    character."""
    text = text.replace('\\', '\\e').replace('-', '\\-')
    return '\\&' + text if text[:1] in ('.', "'") else text


def command_lines() -> list[str]:
    lines: list[str] = []
    section = None
    for command in build_registry():
        if command.section != section:
            section = command.section
            lines.append('.SS %s' % roff(section.rstrip(':')))
        lines += ['.TP', '.B %s' % roff(command.synopsis)]
        lines.append(roff(command.description or command.synopsis))
        if command.aliases:
            lines.append(roff('Also: %s.' % ', '.join(' '.join(w) for w in command.aliases)))
        if command.details:
            lines += ['.RS', '.nf'] + [roff(d) for d in command.details] + ['.fi', '.RE']
    return lines


REGIONS: dict[str, tuple[str, Callable[[], list[str]]]] = {
    'COMMANDS': ('rtp_cluster_client.8', command_lines),
    'CONFIGURATION': ('rtp_cluster.8', config_schema.render_man),
}


def replace_region(text: str, name: str, body: Iterable[str]) -> str:
    begin, end = '.\\" BEGIN %s' % name, '.\\" END %s' % name
    head, found, rest = text.partition(begin + '\n')
    if not found:
        raise ValueError('no "%s" line' % begin)
    _, found, tail = rest.partition(end + '\n')
    if not found:
        raise ValueError('no "%s" line' % end)
    return head + begin + '\n' + ''.join(line + '\n' for line in body) + end + '\n' + tail


def generated(page: str) -> str:
    """The page as it should be: its file with every region of it regenerated."""
    with open(os.path.join(MAN, page), encoding='utf-8') as f:
        text = f.read()
    for name, (region_page, lines) in REGIONS.items():
        if region_page == page:
            text = replace_region(text, name, lines())
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--check', action='store_true', help='only check; exit 1 when out of date')
    args = ap.parse_args(argv)
    stale = []
    for page in sorted({page for page, _ in REGIONS.values()}):
        path = os.path.join(MAN, page)
        with open(path, encoding='utf-8') as f:
            current = f.read()
        wanted = generated(page)
        if current != wanted:
            stale.append(page)
            if not args.check:
                with open(path, 'w', encoding='utf-8') as f:
                    f.write(wanted)
    if args.check and stale:
        print('out of date: %s; run: python -m tools.gen_man' % ', '.join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
