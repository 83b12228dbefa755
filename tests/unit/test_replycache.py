"""core/replycache.py: two generations, bounded in bytes."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtp_cluster.core.replycache import ENTRY_OVERHEAD, ReplyCache, entry_cost

ADDR = ('127.0.0.1', 5060)


def reply(cookie: str, body: str = '0') -> bytes:
    return ('%s %s\n' % (cookie, body)).encode('latin-1')


def test_a_reply_is_found_in_both_generations_and_gone_after_two_rotations():
    cache = ReplyCache(1 << 20)
    cache.put(('c1', ADDR), reply('c1'))
    assert cache.get(('c1', ADDR)) == reply('c1')
    cache.rotate()
    assert cache.get(('c1', ADDR)) == reply('c1')
    cache.rotate()
    assert cache.get(('c1', ADDR)) is None
    assert (len(cache), cache.bytes) == (0, 0)


def test_the_key_includes_the_client_address():
    cache = ReplyCache(1 << 20)
    cache.put(('c1', ADDR), reply('c1'))
    assert cache.get(('c1', ('127.0.0.1', 5061))) is None


def test_bytes_count_cookie_reply_and_overhead():
    cache = ReplyCache(1 << 20)
    cache.put(('abc', ADDR), reply('abc', '20040107'))
    assert cache.bytes == 3 + len(b'abc 20040107\n') + ENTRY_OVERHEAD
    cache.put(('abc', ADDR), reply('abc', 'E5'))           # replaced, not counted twice
    assert cache.bytes == 3 + len(b'abc E5\n') + ENTRY_OVERHEAD


def test_a_flood_of_unique_cookies_never_exceeds_the_budget():
    budget = 200_000
    cache = ReplyCache(budget)
    cookie_len = 1019
    for i in range(5_000):
        cookie = ('%d' % i).rjust(cookie_len, 'k')
        cache.put((cookie, ADDR), reply(cookie, '20040107'))
        assert cache.bytes <= budget
    assert cache.early_rotations > 0
    newest = ('%d' % 4999).rjust(cookie_len, 'k')
    assert cache.get((newest, ADDR)) is not None         # the newest replies are still there
    assert len(cache) < budget // (cookie_len + ENTRY_OVERHEAD) + 1


def test_after_a_flood_the_time_rotations_empty_the_cache():
    cache = ReplyCache(100_000)
    for i in range(1_000):
        cache.put(('k%d' % i, ADDR), reply('k%d' % i))
    cache.rotate()
    cache.rotate()
    assert (len(cache), cache.bytes) == (0, 0)


def test_an_entry_larger_than_half_the_budget_is_still_kept():
    cache = ReplyCache(1000)
    big = reply('c', 'x' * 800)
    cache.put(('c', ADDR), big)
    assert cache.get(('c', ADDR)) == big


def test_resize_smaller_drops_generations_over_the_new_half():
    cache = ReplyCache(1 << 20)
    for i in range(100):
        cache.put(('k%d' % i, ADDR), reply('k%d' % i))
    cache.rotate()
    cache.put(('new', ADDR), reply('new'))
    cache.resize(2 * entry_cost(('new', ADDR), reply('new')))
    assert cache.get(('k1', ADDR)) is None
    assert cache.get(('new', ADDR)) == reply('new')
    assert cache.bytes <= cache.max_bytes


@pytest.mark.parametrize('bad', [0, -1])
def test_a_budget_must_be_positive(bad):
    with pytest.raises(ValueError):
        ReplyCache(bad)
    with pytest.raises(ValueError):
        ReplyCache(1000).resize(bad)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(st.just(None), st.tuples(st.text(min_size=1, max_size=60),
                                                   st.integers(0, 300))), max_size=300),
       st.integers(2_000, 20_000))
def test_budget_holds_for_any_sequence_of_puts_and_rotations(ops, budget):
    cache = ReplyCache(budget)
    for op in ops:
        if op is None:
            cache.rotate()
            continue
        cookie, size = op
        cache.put((cookie, ADDR), b'x' * size)
        assert cache.get((cookie, ADDR)) == b'x' * size       # the latest reply is always kept
        assert cache.bytes <= budget


def test_kept_replies_leave_nothing_for_the_garbage_collectors_young_passes():
    """Two tuples kept per command made the collector's young passes come every few
    thousand commands, each walking tens of thousands of objects (issue 16)."""
    import gc
    cache = ReplyCache(1 << 24)
    gc.disable()
    try:
        gc.collect()
        before = gc.get_count()[0]
        for i in range(5000):
            cache.put(('k%d' % i, ('127.0.0.1', 5000 + i % 100)), b'x')
        grown = gc.get_count()[0] - before
    finally:
        gc.enable()
    assert grown < 100
    assert cache.get(('k4999', ('127.0.0.1', 5099))) == b'x'
    assert cache.get(('k4999', ('127.0.0.1', 5098))) is None


def test_flat_keys_tell_every_cookie_and_address_apart():
    from rtp_cluster.core.replycache import flat_key
    pairs = [('a b', ('127.0.0.1', 5060)), ('a', ('127.0.0.1', 5060)), ('b', ('127.0.0.1', 5060)),
             ('5060 a', ('127.0.0.1', 1)), ('a', ('::1', 5060)), ('a', ('127.0.0.15', 60))]
    assert len({flat_key(pair) for pair in pairs}) == len(pairs)
