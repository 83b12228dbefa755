"""core/deadlines.py: one timer for many deadlines of the same delay, on a Clock."""
from __future__ import annotations

from twisted.internet.task import Clock

from rtp_cluster.core.deadlines import DeadlineQueue


class Log(list):
    """(entry name, clock time) of every expire() call."""

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock


class Entry:
    def __init__(self, name: str, log: Log) -> None:
        self.name, self.log = name, log

    def expire(self) -> None:
        self.log.append((self.name, round(self.log.clock.seconds(), 3)))


def queue_and_log() -> tuple[Clock, DeadlineQueue, Log]:
    clock = Clock()
    return clock, DeadlineQueue(clock, 0.5), Log(clock)


def test_each_entry_expires_its_delay_after_it_was_added_in_order():
    clock, queue, log = queue_and_log()
    queue.add(Entry('a', log))
    clock.advance(0.2)
    queue.add(Entry('b', log))
    queue.add(Entry('c', log))
    clock.advance(0.29)
    assert log == []
    clock.advance(0.01)
    assert log == [('a', 0.5)]
    clock.advance(0.2)
    assert log == [('a', 0.5), ('b', 0.7), ('c', 0.7)]
    assert len(queue) == 0 and clock.getDelayedCalls() == []


def test_many_entries_arm_one_timer_and_a_new_one_after_the_queue_ran_empty():
    clock, queue, log = queue_and_log()
    for i in range(100):
        queue.add(Entry(str(i), log))
    assert len(clock.getDelayedCalls()) == 1 and len(queue) == 100
    clock.advance(0.5)
    assert len(log) == 100 and clock.getDelayedCalls() == []
    clock.advance(3.0)
    queue.add(Entry('late', log))
    clock.advance(0.5)
    assert log[-1] == ('late', 4.0)


def test_an_entry_added_while_entries_expire_gets_its_own_full_delay():
    clock, queue, log = queue_and_log()

    class Chained(Entry):
        def expire(self) -> None:
            super().expire()
            queue.add(Entry('next', log))
    queue.add(Chained('first', log))
    clock.advance(0.5)
    clock.advance(0.49)
    assert log == [('first', 0.5)]
    clock.advance(0.01)
    assert log == [('first', 0.5), ('next', 1.0)]


def test_under_steady_arrivals_the_timer_runs_once_per_resolution_not_once_per_entry():
    clock, queue, log = queue_and_log()
    runs = []
    original = queue._run

    def counted() -> None:
        runs.append(clock.seconds())
        original()
    queue._run = counted
    for i in range(1000):                      # one entry per millisecond for a second
        queue.add(Entry(str(i), log))
        clock.advance(0.001)
    for _ in range(1000):
        clock.advance(0.001)
    assert len(log) == 1000
    # expired no earlier than the deadline and at most one resolution later (plus the
    # test clock's 1 ms step)
    lateness = [at - (int(name) * 0.001 + 0.5) for name, at in log]
    assert min(lateness) >= -1e-9 and max(lateness) <= queue.resolution + 0.001 + 1e-9
    assert len(runs) <= 1.0 / queue.resolution + 2, len(runs)
