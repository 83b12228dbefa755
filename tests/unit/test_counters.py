"""The counters mechanism: groups, labelled counters, histograms, command stats, the registry."""
from __future__ import annotations

import pytest

from rtp_cluster.core.cluster import ClusterCounters
from rtp_cluster.core.counters import (OTHER, CommandStats, Field, Histogram, Kind,
                                       LabelledCounter, Registry, counter_group, reply_result)
from rtp_cluster.core.member import MemberCounters
from rtp_cluster.core.sharing import SharingCounters
from rtp_cluster.adapters.notify import RelayCounters
from rtp_cluster.adapters.transports import ControlCounters

Sample = counter_group('Sample', 'sample', Field('hits', 'Hits.'),
                       Field('level', 'A level.', Kind.GAUGE),
                       Field('misses', 'Misses.', metric='custom_misses_total'),
                       Field('hidden', 'Not exported.', metric=''))


def test_group_fields_start_at_zero_and_count_as_attributes():
    group = Sample({'cluster': 'a'})
    group.hits += 1
    group.hits += 1
    group.level = 7
    assert group.as_dict() == {'hits': 2, 'level': 7, 'misses': 0, 'hidden': 0}
    assert group.labels == {'cluster': 'a'}
    assert [field.name for field, _ in group.items()] == ['hits', 'level', 'misses', 'hidden']


def test_group_has_no_per_instance_dict():
    group = Sample()
    with pytest.raises(AttributeError):
        group.typo = 1      # a misspelt counter is an error, not a silent new attribute


def test_metric_names_follow_the_subsystem_and_kind():
    names = {field.name: field.metric_name(Sample.subsystem) for field in Sample.fields}
    assert names == {'hits': 'rtp_cluster_sample_hits_total', 'level': 'rtp_cluster_sample_level',
                     'misses': 'custom_misses_total', 'hidden': ''}


def test_bad_field_declarations_are_refused():
    with pytest.raises(ValueError, match='duplicate'):
        counter_group('Twice', 'x', Field('a', ''), Field('a', ''))
    with pytest.raises(ValueError, match='bad field name'):
        counter_group('Bad', 'x', Field('not a name', ''))
    with pytest.raises(ValueError, match='bad field name'):
        counter_group('Bad', 'x', Field('labels', ''))


def test_the_daemon_groups_keep_their_admin_order():
    # `ls redis` prints the sharing counters in this order; the admin output must not change
    assert list(SharingCounters().as_dict()) == [
        'takeovers', 'demotions', 'conflicts', 'applied', 'removed_by_event',
        'removed_by_resync', 'bad_records', 'unknown_members', 'writes_queued', 'lookups_on_miss']
    assert list(ClusterCounters().as_dict()) == [
        'commands', 'new_sessions', 'broadcasts', 'reanchored', 'retried_new', 'member_timeouts',
        'late_replies', 'expired_sessions', 'late_offers']
    assert list(RelayCounters().as_dict()) == [
        'received', 'delivered', 'dropped', 'refused_connections', 'bad_lines', 'forged',
        'connect_failures', 'evicted_connections', 'forgotten', 'destinations', 'queued_bytes']
    assert list(MemberCounters().as_dict()) == ['timeouts', 'late_replies', 'state_changes']


def test_exported_names_are_unique_across_groups():
    names = [field.metric_name(cls.subsystem)
             for cls in (ClusterCounters, SharingCounters, RelayCounters, MemberCounters,
                         ControlCounters)
             for field in cls.fields]
    exported = [name for name in names if name]
    assert len(exported) == len(set(exported))
    assert 'rtp_cluster_broadcasts_total' in exported
    assert 'rtp_cluster_reanchored_total' in exported
    assert 'rtp_cluster_retried_new_sessions_total' in exported
    assert 'rtp_cluster_member_timeouts_total' in exported
    assert 'rtp_cluster_member_state_changes_total' in exported
    assert 'rtp_cluster_redis_bad_records_total' in exported
    assert 'rtp_cluster_notify_delivered_total' in exported
    assert 'rtp_cluster_notify_dropped_total' in exported
    assert 'rtp_cluster_notify_rejected_total' in exported
    assert 'rtp_cluster_notify_forged_total' in exported
    assert 'rtp_cluster_notify_destinations' in exported          # a gauge: no _total


def test_labelled_counter_is_bounded():
    counter = LabelledCounter('x_total', 'code', 'X.', max_keys=3)
    for key in ('a', 'b', 'a', 'c', 'd', 'e', 'a'):
        counter.inc(key)
    assert counter.values == {'a': 3, 'b': 1, 'c': 1, OTHER: 2}
    assert counter.total() == 7


def test_histogram_buckets_are_inclusive_upper_bounds():
    histogram = Histogram((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 1.0, 3.0):
        histogram.observe(value)
    assert histogram.counts == [2, 2, 1]
    assert histogram.cumulative() == [(0.1, 2), (1.0, 4), (float('inf'), 5)]
    assert histogram.count == 5
    assert histogram.sum == pytest.approx(4.65)


def test_histogram_refuses_unordered_bounds():
    with pytest.raises(ValueError):
        Histogram((1.0, 0.5))
    with pytest.raises(ValueError):
        Histogram(())


def test_reply_result():
    assert reply_result('0') == 'ok'
    assert reply_result('35000 127.0.0.1') == 'ok'
    assert reply_result('') == 'ok'
    assert reply_result('E8') == 'E8'
    assert reply_result('E71 something') == 'E71'
    assert reply_result('e5') == 'e5'


def test_command_stats_count_by_letter_and_result():
    stats = CommandStats(bounds=(0.01, 0.1))
    stats.observe('U', 0.005, '35000')
    stats.observe('U', 0.05, 'E8')
    stats.observe('D', 0.2, '0')
    assert stats.commands() == {'U': 2, 'D': 1}
    assert stats.durations['U'].counts == [1, 1, 0]
    assert stats.durations['D'].counts == [0, 0, 1]
    assert stats.replies.values == {'ok': 2, 'E8': 1}


def test_command_stats_letters_are_bounded():
    stats = CommandStats(max_keys=2)
    for letter in 'ABCDE':
        stats.observe(letter, 0.001, '0')
    assert stats.commands() == {'A': 1, 'B': 1, OTHER: 3}


def test_registry_returns_the_same_group_for_the_same_labels():
    registry = Registry()
    first = registry.group(MemberCounters, cluster='a', member='m1')
    first.timeouts += 3
    again = registry.group(MemberCounters, member='m1', cluster='a')
    assert again is first and again.timeouts == 3
    other = registry.group(MemberCounters, cluster='a', member='m2')
    assert other is not first
    assert registry.group(ClusterCounters, cluster='a').labels == {'cluster': 'a'}
    assert list(registry.groups(MemberCounters)) == [first, other]


def test_registry_get_keeps_other_objects_by_name_and_labels():
    registry = Registry()
    stats = registry.get('commands', CommandStats, cluster='a')
    assert registry.get('commands', CommandStats, cluster='a') is stats
    assert registry.get('commands', CommandStats, cluster='b') is not stats
    histogram = registry.histogram('rtt', cluster='a', member='m')
    assert registry.histogram('rtt', member='m', cluster='a') is histogram
