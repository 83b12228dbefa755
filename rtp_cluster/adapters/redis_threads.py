"""The subscriber and reader threads of session sharing (redis-py, blocking, off the reactor).

- subscriber: PSUBSCRIBEs to the peers' keyspace notifications and hands events to the
  reactor in batches; every subscribe confirmation (first or after a silent reconnect)
  triggers a full resync, because pub/sub loses events;
- reader: HGETALLs for changed keys and SCAN-based resyncs, bulk work that would stall the
  reactor; results go to the reactor.

Both reconnect with a back-off between <reconnect_min_ms> and <reconnect_max_ms>, and at
once when the master moved (`master_moved`, set from the reactor).
"""
from __future__ import annotations

import queue
import threading
import time
import traceback
from typing import Any, Callable

import redis
from twisted.logger import Logger

from ..core.keys import parse_presence_key, presence_pattern, session_prefix, sessions_pattern
from ..core.records import newest_records

__all__ = ['SharingThreads', 'Backoff', 'EVENT_BATCH', 'SCAN_COUNT', 'APPLY_CHUNK']

EVENT_BATCH = 500
SCAN_COUNT = 1000
APPLY_CHUNK = 1000


class Backoff:
    """The wait before the next reconnect of a thread: doubled after each failure."""

    def __init__(self, config) -> None:
        self.low = config.reconnect_min_ms / 1000.0
        self.high = config.reconnect_max_ms / 1000.0
        self.delay = self.low

    def next(self) -> float:
        delay, self.delay = self.delay, min(self.delay * 2, self.high)
        return delay

    def reset(self) -> None:
        self.delay = self.low


def _text(value) -> str:
    return value.decode('latin-1') if isinstance(value, bytes) else str(value)


def _wire(text: str) -> bytes:
    """Keys and patterns go to redis-py as bytes: with hiredis installed redis-py packs a
    `str` as UTF-8 whatever its `encoding`, and a call-id byte such as 0x85 would then name
    another key."""
    return text.encode('latin-1')


class SharingThreads:
    """The threads of `RedisSharing` (its base): they read `self.state`, `self.reactor`,
    `self.config` and `self._client_factory`, and hand every result to the reactor."""

    log = Logger()
    config: Any
    reactor: Any
    state: Any
    _client_factory: Callable[[], Any]

    def _init_threads(self) -> None:
        self._reads: queue.SimpleQueue = queue.SimpleQueue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._patterns: list[str] = []
        self._patterns_changed = threading.Event()
        # set (from the reactor) when the master moved: each thread reconnects, and one
        # waiting out a back-off wakes up
        self._moved = {'subscriber': threading.Event(), 'reader': threading.Event()}

    def _start_threads(self) -> None:
        for target, name in ((self._subscriber_loop, 'subscriber'), (self._reader_loop, 'reader')):
            thread = threading.Thread(target=target, name='redis-' + name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def _stop_threads(self) -> None:
        self._stop.set()
        for moved in self._moved.values():
            moved.set()                   # wakes a thread waiting out a back-off
        self._reads.put(('stop', None))
        for thread in self._threads:
            thread.join(2.0)

    def master_moved(self) -> None:
        """The master changed (reactor): both threads reconnect at once."""
        for moved in self._moved.values():
            moved.set()

    def _report_unexpected(self, thread: str, exc: Exception) -> None:
        """Connection trouble is expected and handled by the caller; anything else is a bug."""
        if isinstance(exc, (redis.RedisError, OSError)):
            return
        text = traceback.format_exc()
        self.reactor.callFromThread(self.log.error, 'redis {thread} thread: unexpected error, '
                                    'retrying:\n{text}', thread=thread, text=text)

    # --- subscriber thread ----------------------------------------------------------------------

    def patterns(self) -> list[str]:
        return list(self._patterns)

    def _subscriber_loop(self) -> None:
        pubsub = None
        backoff = Backoff(self.config)
        moved = self._moved['subscriber']
        while not self._stop.is_set():
            try:
                if pubsub is None or self._patterns_changed.is_set() or moved.is_set():
                    if pubsub is not None:
                        pubsub.close()
                    self._patterns_changed.clear()
                    moved.clear()
                    pubsub = self._client_factory().pubsub()
                    pubsub.psubscribe(*map(_wire, self._patterns))
                self._pump(pubsub)
                backoff.reset()
            except Exception as exc:
                self._report_unexpected('subscriber', exc)
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except Exception:
                        pass
                pubsub = None
                self.reactor.callFromThread(self.state.on_subscriber_down, str(exc))
                moved.wait(backoff.next())
        if pubsub is not None:
            pubsub.close()

    def _pump(self, pubsub) -> None:
        batch: list[tuple[str, str]] = []
        message = pubsub.get_message(timeout=0.5)
        while message is not None:
            kind = _text(message.get('type'))
            if kind == 'psubscribe':
                batch.append(('', 'subscribed'))
            elif kind == 'pmessage':
                batch.append((_text(message['channel']), _text(message['data'])))
            if len(batch) >= EVENT_BATCH:
                self.reactor.callFromThread(self._on_events, batch)
                batch = []
            message = pubsub.get_message(timeout=0)
        if batch:
            self.reactor.callFromThread(self._on_events, batch)

    def _on_events(self, batch: list[tuple[str, str]]) -> None:
        """A batch from the subscriber thread: (channel, event), or ('', 'subscribed')."""
        events: list[tuple[str, str]] = []
        for channel, event in batch:
            if event == 'subscribed' and not channel:
                self.state.on_events(events)
                events = []
                self.state.on_subscribed()
            else:
                events.append((channel.partition(':')[2], event))
        self.state.on_events(events)

    # --- reader thread --------------------------------------------------------------------------

    def _reader_loop(self) -> None:
        client = None
        backoff = Backoff(self.config)
        moved = self._moved['reader']
        while not self._stop.is_set():
            kind, payload = self._reads.get()
            if kind == 'stop':
                return
            if moved.is_set():
                moved.clear()
                client = None             # the next read asks the sentinels again
            try:
                if client is None:
                    client = self._client_factory()
                self._carry_out_read(client, kind, payload)
                backoff.reset()
            except Exception as exc:
                self._report_unexpected('reader', exc)
                client = None
                failed = payload[0] if kind == 'lookup' else payload
                self.reactor.callFromThread(self.state.on_read_failed, kind, failed, str(exc))
                moved.wait(backoff.next())

    def _carry_out_read(self, client, kind: str, payload) -> None:
        state = self.state
        if kind == 'read':
            self.reactor.callFromThread(state.on_records, self._hgetall(client, payload), 'event')
        elif kind == 'resync':
            self._resync(client, payload)
        elif kind == 'load_own':
            self._load_prefix(client, session_prefix(state.namespace, state.instance_id), 'own')
            self.reactor.callFromThread(state.on_own_loaded)
        elif kind == 'clean_own':
            prefix = session_prefix(state.namespace, state.instance_id)
            keys = list(self._scan(client, prefix + '*'))
            self.reactor.callFromThread(state.on_own_keys, keys)
        elif kind == 'lookup':
            token, keys = payload
            self.reactor.callFromThread(state.on_lookup_result, token,
                                        self._hgetall(client, keys))

    def _hgetall(self, client, keys: list[str]) -> list[tuple[str, dict]]:
        results = []
        for start in range(0, len(keys), SCAN_COUNT):
            chunk = keys[start:start + SCAN_COUNT]
            pipe = client.pipeline(transaction=False)
            for key in chunk:
                pipe.hgetall(_wire(key))
            for key, value in zip(chunk, pipe.execute(raise_on_error=False)):
                results.append((key, value if isinstance(value, dict) else {'_error': str(value)}))
        return results

    def _scan(self, client, pattern: str):
        for key in client.scan_iter(match=_wire(pattern), count=SCAN_COUNT):
            yield _text(key)

    def _load_prefix(self, client, prefix: str, source: str) -> list[str]:
        keys = list(self._scan(client, prefix + '*'))
        records = newest_records(self.state.namespace, self._hgetall(client, keys))
        for start in range(0, len(records), APPLY_CHUNK):
            self.reactor.callFromThread(self.state.on_records,
                                        records[start:start + APPLY_CHUNK], source)
        return keys

    def _resync(self, client, since: float) -> None:
        started = time.monotonic()
        namespace = self.state.namespace
        keys = self._load_prefix(client, sessions_pattern(namespace)[:-1], 'resync')
        presences = {}
        presence_keys = list(self._scan(client, presence_pattern(namespace)))
        for key, raw in self._hgetall(client, presence_keys):
            if '_error' in raw:           # not a hash: garbage must not stop every resync
                self.reactor.callFromThread(self.state.bad_record, key, raw['_error'][:100])
                continue
            peer = parse_presence_key(namespace, key)
            if peer is not None:
                presences[peer] = {_text(k): _text(v) for k, v in raw.items()}
        run_id = _text(client.info('server').get('run_id', ''))
        self.reactor.callFromThread(self.state.on_resync_done, since, keys, presences, run_id,
                                    time.monotonic() - started)
