"""rtp_cluster.core.config_schema: the tables agree with the DTD and drive everything else."""
from __future__ import annotations

import dataclasses
from importlib import resources
from io import BytesIO

import pytest
from lxml import etree

from rtp_cluster.core import config_schema as schema
from rtp_cluster.core.config import (
    ClusterConfig, ConfigError, DisconnectNotifyConfig, FieldError, MemberConfig, RedisConfig,
    config_to_xml, member_from_fields, parse_config,
)
from rtp_cluster.core.endpoints import Endpoint


def dtd_text() -> str:
    return resources.files('rtp_cluster').joinpath('rtp_cluster.dtd').read_text()


def names_in(content) -> set[str]:
    """Element names of a DTD content model (a tree of or/seq nodes)."""
    if content is None:
        return set()
    if content.type == 'element':
        return {content.name}
    return names_in(content.left) | names_in(content.right)


def disagreements(text: str) -> list[str]:
    """Every difference between the DTD `text` and the schema tables, one line each."""
    decls = {el.name: el for el in etree.DTD(BytesIO(text.encode())).iterelements()}
    problems = []
    tabled = set(schema.ELEMENTS) | set(schema.ATTRIBUTES) | schema.leaf_tags()
    problems += ['<%s> only in the DTD' % t for t in sorted(set(decls) - tabled)]
    problems += ['<%s> only in the tables' % t for t in sorted(tabled - set(decls))]
    for element, rows in schema.ELEMENTS.items():
        if element in decls:
            declared = names_in(decls[element].content)
            for tag in sorted(declared ^ {row.tag for row in rows}):
                problems.append('<%s> in <%s>: only in the %s' % (
                    tag, element, 'DTD' if tag in declared else 'tables'))
    for tag in sorted(schema.leaf_tags() & set(decls)):
        if decls[tag].type != 'mixed':
            problems.append('<%s>: not #PCDATA in the DTD' % tag)
    for element, attributes in schema.ATTRIBUTES.items():
        if element in decls:
            decl = decls[element]
            kind, what = ('mixed', '#PCDATA') if schema.holds_text(element) else ('empty', 'EMPTY')
            if decl.type != kind or ({a.name for a in decl.iterattributes()}
                                     != {a.name for a in attributes}):
                problems.append('<%s>: not %s with the attributes of the table' % (element, what))
    return problems


def test_dtd_and_tables_agree():
    assert disagreements(dtd_text()) == []


@pytest.mark.parametrize('edit, problem', [
    (('| cmd_out_address)', ')'), '<cmd_out_address> in <rtpproxy>: only in the tables'),
    (('| capacity | status', '| capacity | status | colour'),
     '<colour> in <rtpproxy>: only in the DTD'),
    (('<!ELEMENT peers (#PCDATA)>', ''), '<peers> only in the tables'),
    (('<!ELEMENT status (#PCDATA)>', '<!ELEMENT status EMPTY>'),
     '<status>: not #PCDATA in the DTD'),
    (('type CDATA', 'kind CDATA'), '<capacity_limit>: not EMPTY with the attributes of the table'),
    (('| max_queued_bytes | idle_timeout)', '| max_queued_bytes)'),
     '<idle_timeout> in <disconnect_notify>: only in the tables'),
    (('| reply_cache_bytes | rtpproxy)', '| reply_cache_bytes | rtpproxy | colour)'),
     '<colour> in <rtp_cluster>: only in the DTD'),
    (('| capacity_limit | reply_cache_bytes', '| capacity_limit'),
     '<reply_cache_bytes> in <rtp_cluster>: only in the tables'),
    (('db CDATA', 'database CDATA'),
     '<sentinel>: not #PCDATA with the attributes of the table'),
    (('<!ELEMENT sentinel (#PCDATA)>', '<!ELEMENT sentinel EMPTY>'),
     '<sentinel>: not #PCDATA with the attributes of the table'),
    (('| sentinel\n', '\n'), '<sentinel> in <redis>: only in the tables'),
])
def test_the_agreement_check_notices_each_kind_of_drift(edit, problem):
    old, new = edit
    text = dtd_text()
    assert old in text
    found = disagreements(text.replace(old, new, 1))
    assert problem in found


def test_configuration_classes_have_one_attribute_per_field_row_in_table_order():
    for cls, element in ((MemberConfig, 'rtpproxy'), (RedisConfig, 'redis')):
        rows = [row for row in schema.children(element) if row.field]
        assert [f.name for f in dataclasses.fields(cls)] == [row.field for row in rows]
    assert MemberConfig('m', Endpoint('unix', path='/m'), 1, 2).status == 'ACTIVE'
    assert RedisConfig('redis://h', 'a').resync_interval == 60


def test_cluster_and_relay_classes_are_generated_from_their_tables():
    assert [f.name for f in dataclasses.fields(DisconnectNotifyConfig)] == \
        schema.attribute_names('disconnect_notify')
    assert schema.attribute_names('disconnect_notify')[:3] == [
        'inbound_host', 'inbound_port', 'dest_socket_prefix']
    leading = ['name', 'endpoint', 'members']
    rest = [name for name in schema.attribute_names('rtp_cluster') if name not in leading]
    assert [f.name for f in dataclasses.fields(ClusterConfig)] == leading + rest
    assert rest[:3] == ['disconnect_notify', 'capacity_limit', 'reply_cache_bytes']
    cluster = ClusterConfig('c', Endpoint('unix', path='/c'), ())
    assert (cluster.capacity_limit, cluster.disconnect_notify) == ('soft', None)
    with pytest.raises(TypeError):
        ClusterConfig('c', Endpoint('unix', path='/c'))       # members are always given


def test_a_new_cluster_row_and_dtd_line_are_all_a_new_field_needs(monkeypatch):
    """One `Child` row plus one DTD line: read, defaulted and written back."""
    from rtp_cluster.core import config as config_module
    from rtp_cluster.core import config_document
    row = schema.Child('colour', 'a name', 'test only', schema.check_name, 'colour',
                       default='blue')
    monkeypatch.setitem(schema.ELEMENTS, 'rtp_cluster', schema.ELEMENTS['rtp_cluster'] + (row,))
    dtd = dtd_text().replace('| reply_cache_bytes | rtpproxy)*>',
                             '| reply_cache_bytes | rtpproxy | colour)*>')
    dtd += '<!ELEMENT colour (#PCDATA)>\n'
    assert disagreements(dtd) == []
    monkeypatch.setattr(config_document, '_load_dtd', lambda: etree.DTD(BytesIO(dtd.encode())))
    monkeypatch.setattr(config_document, '_CHILDREN', {
        element: tuple(r.tag for r in rows) for element, rows in schema.ELEMENTS.items()})
    cls = schema.config_class('ClusterConfig', 'rtp_cluster', '',
                              leading=('name', 'endpoint', 'members'))
    monkeypatch.setattr(config_module, 'ClusterConfig', cls)
    cluster = ('<rtp_cluster><name>c</name><protocol>unix</protocol><address>/c</address>'
               '%s</rtp_cluster>')
    document = '<rtp_cluster_config>%s</rtp_cluster_config>'
    red = parse_config((document % (cluster % '<colour>red</colour>')).encode(), 'x.xml')
    plain = parse_config((document % (cluster % '')).encode(), 'x.xml')
    assert (red.clusters[0].colour, plain.clusters[0].colour) == ('red', 'blue')
    assert b'<colour>red</colour>' in config_to_xml(red)
    assert parse_config(config_to_xml(red), 'y.xml') == red


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
    assert '    <rtpproxy> (any number): a member RTPproxy' + '\n' in text + '\n'
    assert '    <peers> (optional): ' in text


def test_expected_text_is_the_one_of_the_error_messages():
    assert schema.expected('weight') == 'a positive integer'
    assert schema.expected('inbound_address') == 'HOST:PORT'
    with pytest.raises(KeyError):
        schema.expected('colour')
