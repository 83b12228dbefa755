"""rtp_cluster.core.config_schema: the tables agree with the DTD and drive everything else."""
from __future__ import annotations

import dataclasses
from importlib import resources
from io import BytesIO

import pytest
from lxml import etree

from rtp_cluster.core import config_schema as schema
from rtp_cluster.core.config import (
    ConfigError, FieldError, MemberConfig, RedisConfig, config_to_xml, member_from_fields, parse_config,
)
from rtp_cluster.core.endpoints import Endpoint


def dtd() -> etree.DTD:
    return etree.DTD(BytesIO(resources.files('rtp_cluster').joinpath('rtp_cluster.dtd')
                             .read_bytes()))


def names_in(content) -> set[str]:
    """Element names of a DTD content model (a tree of or/seq nodes)."""
    if content is None:
        return set()
    if content.type == 'element':
        return {content.name}
    return names_in(content.left) | names_in(content.right)


def dtd_model() -> dict[str, tuple[str, set[str]]]:
    return {el.name: (el.type, names_in(el.content)) for el in dtd().iterelements()}


def test_dtd_declares_exactly_the_elements_of_the_tables():
    declared = set(dtd_model())
    tabled = set(schema.ELEMENTS) | set(schema.ATTRIBUTES) | schema.leaf_tags()
    assert declared == tabled


@pytest.mark.parametrize('element', sorted(schema.ELEMENTS))
def test_dtd_children_of_each_element_are_the_table_rows(element):
    kind, children = dtd_model()[element]
    assert kind == 'element'
    assert children == {row.tag for row in schema.children(element)}


def test_text_elements_are_pcdata_and_attribute_elements_empty_in_the_dtd():
    model = dtd_model()
    assert {tag for tag in schema.leaf_tags() if model[tag][0] != 'mixed'} == set()
    for element, attributes in schema.ATTRIBUTES.items():
        decl = next(el for el in dtd().iterelements() if el.name == element)
        assert decl.type == 'empty'
        assert {a.name for a in decl.iterattributes()} == {a.name for a in attributes}


def test_the_agreement_check_notices_a_missing_dtd_line():
    broken = dtd_model()
    broken['rtpproxy'] = ('element', broken['rtpproxy'][1] - {'cmd_out_address'})
    assert broken['rtpproxy'][1] != {row.tag for row in schema.children('rtpproxy')}


def test_configuration_classes_have_one_attribute_per_field_row_in_table_order():
    for cls, element in ((MemberConfig, 'rtpproxy'), (RedisConfig, 'redis')):
        rows = [row for row in schema.children(element) if row.field]
        assert [f.name for f in dataclasses.fields(cls)] == [row.field for row in rows]
    assert MemberConfig('m', Endpoint('unix', path='/m'), 1, 2).status == 'ACTIVE'
    assert RedisConfig('redis://h', 'a').resync_interval == 60


def test_add_usage_is_generated_in_the_original_key_order():
    assert schema.add_usage() == (
        'modify CLUSTER add name=NAME,protocol=udp|udp6|unix,address=ADDRESS,capacity=N,'
        'weight=N[,status=ACTIVE|SUSPENDED][,wan_address=HOST][,lan_address=HOST]'
        '[,cmd_out_address=HOST]')
    assert [row.tag for row in schema.add_keys()] == [
        'name', 'protocol', 'address', 'capacity', 'weight', 'status', 'wan_address',
        'lan_address', 'cmd_out_address']


def test_member_from_fields_checks_like_the_file():
    member = member_from_fields({'name': 'x', 'protocol': 'UDP6', 'address': '[::1]:7',
                                 'capacity': '010', 'weight': '3', 'status': 'suspended',
                                 'lan_address': '10.0.0.1'})
    assert member == MemberConfig('x', Endpoint('udp6', host='::1', port=7), 3, 10,
                                  'SUSPENDED', lan_address='10.0.0.1')


@pytest.mark.parametrize('key, text, reason', [
    ('weight', '0', '"0" is not a positive integer'),
    ('status', 'BUSY', '"BUSY" is not a status; expected ACTIVE or SUSPENDED'),
    ('wan_address', 'a..b', '"a..b" is not an IP address or a host name'),
    ('name', 'a\x85b', "'a\\x85b' contains control characters; expected printable text"),
])
def test_member_from_fields_names_the_refused_key(key, text, reason):
    values = {'name': 'x', 'protocol': 'udp', 'address': '127.0.0.1', 'capacity': '1',
              'weight': '1', key: text}
    with pytest.raises(FieldError) as info:
        member_from_fields(values)
    assert (info.value.row.tag, info.value.text, info.value.reason) == (key, text, reason)


def test_c1_control_characters_are_refused_in_names_of_the_file_too():
    data = ('<rtp_cluster_config><rtp_cluster><name>a\x85b</name><protocol>udp</protocol>'
            '<address>127.0.0.1</address></rtp_cluster></rtp_cluster_config>').encode()
    with pytest.raises(ConfigError, match="contains control characters"):
        parse_config(data, 'x.xml')


def test_written_back_redis_defaults_read_back_equal():
    data = (b'<rtp_cluster_config><rtp_cluster><name>c</name><protocol>unix</protocol>'
            b'<address>/c.sock</address></rtp_cluster><redis><url>redis://h</url>'
            b'<instance_id>i</instance_id></redis></rtp_cluster_config>')
    config = parse_config(data, 'x.xml')
    written = config_to_xml(config)
    assert b'<peers>auto</peers>' in written and b'<tls_verify_hostname>yes<' in written
    assert parse_config(written, 'y.xml') == config


def test_documentation_lists_cover_every_child():
    text = '\n'.join(schema.render_text())
    man = '\n'.join(schema.render_man())
    for element, rows in schema.ELEMENTS.items():
        for row in rows:
            assert f'<{row.tag}> (' in text and f'.B <{row.tag}>' in man
    assert '    <weight> (required): relative share of new sessions' in text
    assert '    <rtpproxy> (any number): a member RTPproxy (any number)' in text
    assert '    <peers> (optional): ' in text


def test_expected_text_is_the_one_of_the_error_messages():
    assert schema.expected('weight') == 'a positive integer'
    assert schema.expected('inbound_address') == 'HOST:PORT'
    with pytest.raises(KeyError):
        schema.expected('colour')
