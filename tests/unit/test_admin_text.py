"""core/admin_text: outside text can neither end an admin reply early nor break a line or JSON."""
from __future__ import annotations

import json
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from rtp_cluster.admin_client import is_final
from rtp_cluster.adapters.admin import cluster_detail_dict, member_dict
from rtp_cluster.adapters.admin_registry import AdminReply
from rtp_cluster.core.admin_text import escape, guard_line, is_final_line, json_line

# what the daemon can hold: control commands are decoded latin-1, admin lines utf-8 with
# replacement, file names with surrogateescape (lone surrogates)
OUTSIDE_TEXT = st.one_of(
    st.binary(max_size=64).map(lambda raw: raw.decode('latin-1')),
    st.binary(max_size=64).map(lambda raw: raw.decode('utf-8', 'replace')),
    st.binary(max_size=64).map(lambda raw: raw.decode('utf-8', 'surrogateescape')),
    st.text(max_size=64),
    st.sampled_from(['OK', 'ERROR', 'ERROR:x', 'ERROR: forged', 'OK\nERROR', '\\x45RROR']),
)
ESCAPE = re.compile(r'\\(\\|x[0-9a-f]{2}|u[0-9a-f]{4}|U[0-9a-f]{8})')


def unescape(text: str) -> str:
    def one(match: re.Match) -> str:
        body = match.group(1)
        return '\\' if body == '\\' else chr(int(body[1:], 16))
    return ESCAPE.sub(one, text)


def test_a_call_id_that_reads_as_the_end_of_a_reply_is_escaped():
    assert escape('ERROR:x') == '\\x45RROR:x'
    assert escape('OK') == '\\x4fK'
    assert escape('OKAY') == 'OKAY'            # only the exact OK line ends a reply
    assert escape('a\nOK') == 'a\\x0aOK'
    assert escape('back\\slash') == 'back\\\\slash'
    assert escape('caf\u00e9') == 'caf\u00e9'  # printable text stays readable


def test_guard_line_touches_only_final_looking_lines():
    assert guard_line('ERROR:x cluster=c') == '\\x45RROR:x cluster=c'
    assert guard_line('OK') == '\\x4fK'
    assert guard_line('call1 cluster=c') == 'call1 cluster=c'


def test_an_ok_reply_cannot_contain_its_terminator_early():
    reply = AdminReply.ok(['OK', 'ERROR: forged', 'fine'])
    assert [is_final(line) for line in reply.lines] == [False, False, False, True]


@settings(max_examples=500, deadline=None)
@given(OUTSIDE_TEXT)
def test_escaped_text_is_one_unambiguous_printable_line(text):
    out = escape(text)
    assert out.isprintable()
    assert '\n' not in out and '\r' not in out
    assert not is_final_line(out)
    assert not is_final(out + ' cluster=test')
    assert unescape(out) == text           # nothing is lost: the escaping is reversible


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(OUTSIDE_TEXT, st.one_of(OUTSIDE_TEXT, st.floats(), st.integers(),
                                               st.none(), st.lists(OUTSIDE_TEXT, max_size=3)),
                       max_size=5))
def test_json_line_is_strict_json_on_one_line(value):
    line = json_line(value)
    assert line.isascii() and '\n' not in line
    assert not is_final_line(line)
    decoded = json.loads(line, parse_constant=_reject_constant)
    assert json.dumps(decoded, ensure_ascii=False).encode('utf-8')   # no lone surrogates
    assert len(decoded) == len({_surrogates_replaced(key) for key in value})


def _reject_constant(name: str):
    raise AssertionError('not JSON: %s' % name)


def _surrogates_replaced(text: str) -> str:
    return text.encode('utf-8', 'surrogatepass').decode('utf-8', 'replace')


class _Endpoint:
    protocol, address = 'udp', '127.0.0.1:22222'


class _Config:
    endpoint = _Endpoint()
    wan_address = lan_address = cmd_out_address = None
    weight, capacity = 100, 10


class _Member:
    online, active_sessions, rtt, status = True, 3, float('nan'), 'active'
    config = _Config()

    def __init__(self, name: str) -> None:
        self.name = name

    def utilisation(self) -> float:
        return float('inf')


class _Cluster:
    config = _Config()

    def __init__(self, name: str, members: list) -> None:
        self.name = name
        self.members = members

    def online_members(self) -> list:
        return self.members

    def offline_members(self) -> list:
        return []


@settings(max_examples=200, deadline=None)
@given(OUTSIDE_TEXT, st.lists(OUTSIDE_TEXT, max_size=3))
def test_ls_json_of_any_names_is_valid_json(cluster_name, member_names):
    cluster = _Cluster(cluster_name, [_Member(name) for name in member_names])
    line = json_line(cluster_detail_dict(0, cluster))
    decoded = json.loads(line, parse_constant=_reject_constant)
    assert decoded['name'] == _surrogates_replaced(cluster_name)
    assert [m['name'] for m in decoded['online']] == [
        _surrogates_replaced(name) for name in sorted(member_names)]
    assert decoded['online'] == [] or decoded['online'][0]['average_rtpc_delay'] is None
    assert member_dict(_Member('x'))['name'] == 'x'
