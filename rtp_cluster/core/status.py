"""What the status page, /status.json and /health show: one snapshot of the running state.

`snapshot` reads the clusters (and the Redis sharing status, when configured) once and
returns plain data; `health` decides from that data whether this instance can take calls;
`render_html` turns it into the status page.  Nothing here does I/O: the HTTP adapter
calls these at request time, so the control path pays nothing for them.
"""
from __future__ import annotations

import html
from typing import Any, Iterable, Mapping

from .member import ACTIVE, ONLINE

Snapshot = dict[str, Any]


def snapshot(clusters: Iterable[Any], now: float, started: float,
             sharing: Mapping[str, Any] | None = None) -> Snapshot:
    """Every cluster with its members, totals, and the Redis state; `now` on the members' clock."""
    return {'uptime': max(0.0, now - started),
            'clusters': [_cluster(cluster, now, started) for cluster in clusters],
            'redis': _redis(sharing) if sharing is not None else None}


def _cluster(cluster: Any, now: float, started: float) -> dict[str, Any]:
    members = [_member(cluster, member, now, started) for member in cluster.members.values()]
    counters = cluster.counters
    return {'name': cluster.name,
            'address': str(cluster.config.endpoint),
            'members': members,
            'online': sum(1 for m in members if m['state'] == ONLINE),
            'active_online': sum(1 for m in members if _serves(m)),
            'sessions': sum(m['sessions'] for m in members),
            'capacity': sum(m['capacity'] for m in members),
            'broadcasts': counters.broadcasts,
            'new_sessions': counters.new_sessions}


def _member(cluster: Any, member: Any, now: float, started: float) -> dict[str, Any]:
    since = member.state_since if member.state_since is not None else started
    return {'name': member.name,
            'address': member.control_spec,
            'state': member.state,
            'status': member.status,
            'weight': member.weight,
            'capacity': member.capacity,
            'sessions': cluster.store.count(member.name),
            'active_sessions': member.active_sessions,
            'utilization': member.utilisation(),
            'rtt': member.rtt,
            'timeouts': member.counters.timeouts,
            'state_changes': member.counters.state_changes,
            'since': max(0.0, now - since)}


def _serves(member: Mapping[str, Any]) -> bool:
    return member['state'] == ONLINE and member['status'] == ACTIVE


def _redis(status: Mapping[str, Any]) -> dict[str, Any]:
    return {'state': status['state'], 'subscriber': status['subscriber'],
            'queue_depth': status['queue_depth'], 'own': status['own'],
            'foreign': status['foreign'], 'duplicate_instance': bool(status['duplicate']),
            'last_error': status['last_error'], 'peers': status.get('peers', {})}


def health(data: Snapshot) -> tuple[bool, list[str]]:
    """(healthy, reasons): every cluster has an online ACTIVE member, no duplicate instance id."""
    unserved = [cluster['name'] for cluster in data['clusters'] if cluster['active_online'] == 0]
    redis = data['redis']
    return _verdict(unserved, redis is not None and redis['duplicate_instance'])


def health_of(clusters: Iterable[Any], duplicate_instance: bool) -> tuple[bool, list[str]]:
    """`health` straight from the clusters: no snapshot (no session counting) per probe."""
    unserved = [cluster.name for cluster in clusters
                if not any(m.online and m.status == ACTIVE for m in cluster.members.values())]
    return _verdict(unserved, duplicate_instance)


def _verdict(unserved: list[str], duplicate_instance: bool) -> tuple[bool, list[str]]:
    reasons = ['cluster %s has no online ACTIVE member' % name for name in unserved]
    if duplicate_instance:
        reasons.append('another process writes to Redis with this instance id')
    return not reasons, reasons


# --- the status page ---------------------------------------------------------------------------

REFRESH_SECONDS = 5

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{font-size:1.3em;margin:0 0 .2em} h2{font-size:1.1em;margin:1.4em 0 .3em}
.meta{color:#666;margin-bottom:1em}
table{border-collapse:collapse;background:#fff}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right;white-space:nowrap}
th{background:#e8e8ee} td.name,td.addr,th.name,th.addr{text-align:left}
tr.online td.state{background:#b8e6b8} tr.offline td.state{background:#f2a7a7}
tr.probing td.state{background:#f5dd90}
td.status-SUSPENDED,td.status-DRAINING{background:#ddd}
tr.total td{font-weight:bold;background:#f0f0f4}
.bar{display:inline-block;width:8em;height:.8em;background:#eee;border:1px solid #aaa;
vertical-align:middle}
.bar span{display:block;height:100%;background:#5a8ed8}
.bar span.high{background:#d8705a}
.health-ok{color:#1a7f1a;font-weight:bold} .health-bad{color:#b00;font-weight:bold}
"""


def render_html(data: Snapshot, version: str = '') -> str:
    healthy, reasons = health(data)
    parts = ['<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
             '<meta http-equiv="refresh" content="%d">' % REFRESH_SECONDS,
             '<title>rtp_cluster status</title><style>%s</style></head><body>' % _CSS,
             '<h1>rtp_cluster %s</h1>' % _text(version),
             '<div class="meta">up %s &middot; refreshes every %d s &middot; '
             '<a href="status.json">status.json</a> &middot; <a href="metrics">metrics</a></div>'
             % (_duration(data['uptime']), REFRESH_SECONDS),
             _health_line(healthy, reasons)]
    for cluster in data['clusters']:
        parts.append(_cluster_table(cluster))
    if data['redis'] is not None:
        parts.append(_redis_table(data['redis']))
    parts.append('</body></html>')
    return '\n'.join(parts)


def _health_line(healthy: bool, reasons: list[str]) -> str:
    if healthy:
        return '<p id="health" class="health-ok">healthy</p>'
    return '<p id="health" class="health-bad">unhealthy: %s</p>' % _text('; '.join(reasons))


_COLUMNS = ('name', 'address', 'state', 'status', 'weight', 'capacity', 'sessions',
            'utilization', 'rtt', 'timeouts', 'up/down since')


def _cluster_table(cluster: Mapping[str, Any]) -> str:
    head = ''.join('<th class="%s">%s</th>' % (_class_of(c), c) for c in _COLUMNS)
    rows = [_member_row(member) for member in cluster['members']]
    utilization = cluster['sessions'] / cluster['capacity'] if cluster['capacity'] else 0.0
    rows.append('<tr class="total"><td class="name">total</td><td class="addr"></td>'
                '<td>%d/%d online</td><td></td><td></td><td>%d</td><td>%d</td><td>%s</td>'
                '<td></td><td></td><td></td></tr>'
                % (cluster['online'], len(cluster['members']), cluster['capacity'],
                   cluster['sessions'], _bar(utilization)))
    return ('<h2>cluster %s <small>(%s)</small></h2><table class="cluster" data-cluster="%s">'
            '<tr>%s</tr>%s</table>' % (_text(cluster['name']), _text(cluster['address']),
                                       _text(cluster['name']), head, ''.join(rows)))


def _member_row(member: Mapping[str, Any]) -> str:
    cells = ['<td class="name">%s</td>' % _text(member['name']),
             '<td class="addr">%s</td>' % _text(member['address']),
             '<td class="state">%s</td>' % _text(member['state']),
             '<td class="status-%s">%s</td>' % (_text(member['status']), _text(member['status'])),
             '<td>%d</td>' % member['weight'], '<td>%d</td>' % member['capacity'],
             '<td>%d</td>' % member['sessions'], '<td>%s</td>' % _bar(member['utilization']),
             '<td>%.1f ms</td>' % (member['rtt'] * 1000.0), '<td>%d</td>' % member['timeouts'],
             '<td>%s</td>' % _duration(member['since'])]
    return '<tr class="member %s" data-member="%s">%s</tr>' % (
        _text(member['state']), _text(member['name']), ''.join(cells))


def _redis_table(redis: Mapping[str, Any]) -> str:
    rows = [('state', redis['state']), ('subscriber', redis['subscriber']),
            ('write queue', redis['queue_depth']), ('own sessions', redis['own']),
            ('foreign sessions', redis['foreign']),
            ('duplicate instance id', 'YES' if redis['duplicate_instance'] else 'no'),
            ('last error', redis['last_error'] or '-')]
    rows += [('peer %s' % name, state) for name, state in sorted(redis['peers'].items())]
    body = ''.join('<tr><td class="name">%s</td><td class="name">%s</td></tr>'
                   % (_text(key), _text(value)) for key, value in rows)
    return '<h2>Redis sharing</h2><table class="redis">%s</table>' % body


def _bar(ratio: float) -> str:
    percent = max(0.0, min(ratio, 1.0)) * 100.0
    high = ' class="high"' if ratio >= 0.9 else ''
    return ('<span class="bar" title="%.1f%%"><span%s style="width:%.1f%%"></span></span> %.1f%%'
            % (ratio * 100.0, high, percent, ratio * 100.0))


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return '%ds' % seconds
    if seconds < 3600:
        return '%dm%02ds' % divmod(seconds, 60)
    hours, rest = divmod(seconds, 3600)
    if hours < 48:
        return '%dh%02dm' % (hours, rest // 60)
    return '%dd%02dh' % divmod(hours, 24)


def _class_of(column: str) -> str:
    return 'name' if column == 'name' else 'addr' if column == 'address' else ''


def _text(value: object) -> str:
    return html.escape(str(value), quote=True)


__all__ = ['snapshot', 'health', 'health_of', 'render_html', 'REFRESH_SECONDS']
