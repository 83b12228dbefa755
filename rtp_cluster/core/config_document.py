"""The configuration file as an XML document: well-formed, valid against rtp_cluster.dtd, and
built only of the elements, attributes and text the schema tables allow.

Errors name the file and line and say what was expected; the values themselves are read
and checked by `config._Reader`.
"""
from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources
from io import BytesIO

from lxml import etree

from . import config_schema as schema
from .config_values import shorten

_SYNTAX_POSITION = re.compile(r', line \d+, column (\d+)$')
_CHILDREN = {element: tuple(row.tag for row in rows) for element, rows in schema.ELEMENTS.items()}
_ATTRIBUTES = {element: tuple(a.name for a in attrs)
               for element, attrs in schema.ATTRIBUTES.items()}


class ConfigError(Exception):
    """An unusable configuration; ``str()`` is ``FILE:LINE: <element>: problem; expected ...``."""


def validated_root(data: bytes, source: str) -> etree._Element:
    """The root of the XML document ``data``; ConfigError naming ``source`` when unusable."""
    root = _parse_xml(data, source)
    dtd = _load_dtd()
    dtd_valid = dtd.validate(root)
    # Explains most DTD violations more precisely than libxml2 does.
    _check_structure(root, source)
    if not dtd_valid:
        raise _dtd_error(dtd, source)
    return root


def _parse_xml(data: bytes, source: str) -> etree._Element:
    if not data.strip():
        raise ConfigError(f'{source}: file is empty; expected an <rtp_cluster_config> document')
    parser = etree.XMLParser(no_network=True, resolve_entities=False, load_dtd=False,
                             remove_comments=True, remove_pis=True)
    try:
        return etree.fromstring(data, parser)
    except etree.XMLSyntaxError as e:
        message = e.msg or 'syntax error'
        position = _SYNTAX_POSITION.search(message)
        if position:
            message = f'{message[:position.start()]} (column {position.group(1)})'
        raise ConfigError(f'{source}:{e.lineno or 1}: not well-formed XML: {message}') from None


@lru_cache(maxsize=1)
def _load_dtd() -> etree.DTD:
    data = resources.files('rtp_cluster').joinpath('rtp_cluster.dtd').read_bytes()
    return etree.DTD(BytesIO(data))


def _dtd_error(dtd: etree.DTD, source: str) -> ConfigError:
    errors = dtd.error_log.filter_from_errors()
    if not errors:
        return ConfigError(f'{source}: does not match rtp_cluster.dtd')
    first = errors[0]
    return ConfigError(f'{source}:{first.line}: does not match rtp_cluster.dtd: {first.message}')


def _check_structure(root: etree._Element, source: str) -> None:
    if root.tag != 'rtp_cluster_config':
        raise ConfigError(f'{source}:{root.sourceline}: <{root.tag}>: wrong root element; '
                          'expected <rtp_cluster_config>')
    for el in root.iter():
        if not isinstance(el.tag, str):
            raise ConfigError(f'{source}:{el.sourceline}: entity reference {el}: not supported; '
                              'expected plain text')
        found = _attribute_problem(el) or _content_problem(el)
        if found:
            subject, line, problem = found
            raise ConfigError(f'{source}:{line}: {subject}: {problem}')


_Problem = tuple[str, int, str]   # subject, line, what is wrong and expected


def _attribute_problem(el: etree._Element) -> _Problem | None:
    allowed = _ATTRIBUTES.get(el.tag, ())
    for attr in el.attrib:
        if attr not in allowed:
            expected = f'only {", ".join(allowed)}' if allowed else 'no attributes'
            return f'<{el.tag}>', el.sourceline, f'unknown attribute "{attr}"; expected {expected}'
    return None


def _content_problem(el: etree._Element) -> _Problem | None:
    children = [c for c in el if isinstance(c.tag, str)]
    if el.tag in _CHILDREN:
        return _container_problem(el, children)
    if el.tag in _ATTRIBUTES and schema.holds_text(el.tag):
        if children:
            return (f'<{children[0].tag}> in <{el.tag}>', children[0].sourceline,
                    'unexpected element; expected only text')
        return None
    if el.tag in _ATTRIBUTES:
        if children or (el.text or '').strip():
            return ('<capacity_limit>', el.sourceline,
                    'is not empty; expected <capacity_limit type="soft|hard" />')
        return None
    if children:
        return (f'<{children[0].tag}> in <{el.tag}>', children[0].sourceline,
                'unexpected element; expected only text')
    return None


def _container_problem(el: etree._Element, children: list[etree._Element]) -> _Problem | None:
    allowed = _CHILDREN[el.tag]
    for child in children:
        if child.tag not in allowed:
            names = ', '.join(f'<{t}>' for t in allowed)
            return (f'<{child.tag}> in <{el.tag}>', child.sourceline,
                    f'unknown element; expected one of {names}')
    stray = ' '.join(t.strip() for t in [el.text] + [c.tail for c in el] if t and t.strip())
    if stray:
        return (f'<{el.tag}>', el.sourceline,
                f'unexpected text "{shorten(stray)}"; expected only child elements')
    return None
