"""The queues: stdlib semantics, 3.13-style shutdown, batched put_many/get_many — the in-process ones
(thread and serial backends) and the shared-memory ones of the process backend. A Hypothesis state machine checks them against a sequential model; threaded tests
check blocking, wake-ups and many producers × many consumers.
"""

from __future__ import annotations

import collections
import heapq
import queue
import threading
import time

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import conveyor
from conftest import bounded
from conveyor._backends._shared.queues import LocalLifoQueue, LocalPriorityQueue, LocalQueue
from conveyor._backends.process.channel import ProcessQueue
from conveyor._backends.process.ordered_queues import ProcessLifoQueue, ProcessPriorityQueue

pytestmark = pytest.mark.timeout(60)

KINDS = {"fifo": LocalQueue, "lifo": LocalLifoQueue, "priority": LocalPriorityQueue,
         "process-fifo": lambda maxsize: ProcessQueue(maxsize, capacity=4096),
         "process-lifo": lambda maxsize: ProcessLifoQueue(maxsize, capacity=4096),
         "process-priority": lambda maxsize: ProcessPriorityQueue(maxsize, capacity=4096)}


class QueueModel(RuleBasedStateMachine):
    """Non-blocking operations on a bounded queue of each kind against a list model."""

    @initialize(kind=st.sampled_from(sorted(KINDS)), maxsize=st.sampled_from([0, 1, 3]))
    def make(self, kind: str, maxsize: int) -> None:
        self.kind = kind
        self.maxsize = maxsize
        self.queue = KINDS[kind](maxsize)
        self.model: list[int] = []
        self.unfinished = 0
        self.shut = False

    def _take(self) -> int:
        if self.kind in ("fifo", "process-fifo"):
            return self.model.pop(0)
        if self.kind in ("lifo", "process-lifo"):
            return self.model.pop()
        heapq.heapify(self.model)
        return heapq.heappop(self.model)

    def _room(self) -> bool:
        return self.maxsize <= 0 or len(self.model) < self.maxsize

    @rule(item=st.integers(0, 100))
    def put(self, item: int) -> None:
        if self.shut:
            with pytest.raises(conveyor.ShutDown):
                self.queue.put_nowait(item)
        elif self._room():
            self.queue.put_nowait(item)
            self.model.append(item)
            self.unfinished += 1
        else:
            with pytest.raises(queue.Full):
                self.queue.put_nowait(item)

    @rule()
    def get(self) -> None:
        if self.model:
            assert self.queue.get_nowait() == self._take()
        elif self.shut:
            with pytest.raises(conveyor.ShutDown):
                self.queue.get_nowait()
        else:
            with pytest.raises(queue.Empty):
                self.queue.get_nowait()

    @rule(count=st.integers(1, 4))
    def get_many(self, count: int) -> None:
        if self.model:
            expected = [self._take() for _ in range(min(count, len(self.model)))]
            assert self.queue.get_many(count, block=False) == expected
        elif self.shut:
            with pytest.raises(conveyor.ShutDown):
                self.queue.get_many(count, block=False)
        else:
            with pytest.raises(queue.Empty):
                self.queue.get_many(count, block=False)

    @precondition(lambda self: self.unfinished > 0)
    @rule()
    def task_done(self) -> None:
        self.queue.task_done()
        self.unfinished -= 1

    @precondition(lambda self: self.unfinished == 0)
    @rule()
    def task_done_too_often(self) -> None:
        with pytest.raises(ValueError):
            self.queue.task_done()

    @rule(immediate=st.booleans())
    def shutdown(self, immediate: bool) -> None:
        self.queue.shutdown(immediate=immediate)
        self.shut = True
        if immediate:
            self.unfinished -= len(self.model)
            self.model.clear()

    @invariant()
    def sizes_agree(self) -> None:
        assert self.queue.qsize() == len(self.model)
        assert self.queue.empty() == (not self.model)
        assert self.queue.full() == (self.maxsize > 0 and len(self.model) >= self.maxsize)


TestQueueModel = QueueModel.TestCase
TestQueueModel.settings = settings(max_examples=150, stateful_step_count=30, deadline=None)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_timeouts_raise_full_and_empty_like_the_stdlib(kind):
    q = KINDS[kind](1)
    started = time.monotonic()
    with pytest.raises(queue.Empty):
        q.get(timeout=0.05)
    q.put(1)
    with pytest.raises(queue.Full):
        q.put(2, timeout=0.05)
    assert time.monotonic() - started >= 0.1
    with pytest.raises(ValueError):
        q.get(timeout=-1)


def test_shutdown_wakes_blocked_consumers_and_producers_at_once():
    empty, full = LocalQueue(), LocalQueue(1)
    full.put("x")
    errors = []

    def blocked(call):
        try:
            call()
        except conveyor.ShutDown as exc:
            errors.append(exc)

    threads = [threading.Thread(target=blocked, args=(empty.get,)) for _ in range(3)]
    threads += [threading.Thread(target=blocked, args=(lambda: full.put("y"),)) for _ in range(2)]
    for thread in threads:
        thread.start()
    time.sleep(0.1)
    started = time.monotonic()
    empty.shutdown()
    full.shutdown()
    for thread in threads:
        thread.join(bounded(5))
    assert time.monotonic() - started < bounded(1.0)
    assert len(errors) == 5
    assert full.get() == "x"  # what was in it is still drained after a plain shutdown
    with pytest.raises(conveyor.ShutDown):
        full.get()


def test_immediate_shutdown_drops_items_and_releases_join():
    q = LocalQueue()
    q.put_many(range(5))
    joined = threading.Event()
    waiter = threading.Thread(target=lambda: (q.join(), joined.set()))
    waiter.start()
    q.shutdown(immediate=True)
    waiter.join(bounded(5))
    assert joined.is_set()
    with pytest.raises(conveyor.ShutDown):
        q.get()


def test_producer_consumer_ends_without_sentinels():
    q = LocalQueue(maxsize=8)
    consumed = []

    def consumer():
        while True:
            try:
                item = q.get()
            except conveyor.ShutDown:
                return
            consumed.append(item)
            q.task_done()

    workers = [threading.Thread(target=consumer) for _ in range(3)]
    for worker in workers:
        worker.start()
    for i in range(100):
        q.put(i)
    q.join()
    q.shutdown()
    for worker in workers:
        worker.join(bounded(5))
    assert sorted(consumed) == list(range(100))
    assert not any(worker.is_alive() for worker in workers)


@pytest.mark.parametrize("run", range(3))
def test_many_producers_many_consumers_lose_and_duplicate_nothing(run):
    q = LocalQueue(maxsize=16)
    received: collections.Counter[int] = collections.Counter()
    lock = threading.Lock()

    def produce(start):
        values = range(start, start + 500)
        if start % 2:
            q.put_many(values)
        else:
            for value in values:
                q.put(value)

    def consume():
        while True:
            try:
                batch = q.get_many(7)
            except conveyor.ShutDown:
                return
            with lock:
                received.update(batch)

    producers = [threading.Thread(target=produce, args=(i * 500,)) for i in range(4)]
    consumers = [threading.Thread(target=consume) for _ in range(4)]
    for thread in producers + consumers:
        thread.start()
    for thread in producers:
        thread.join(bounded(10))
    q.shutdown()
    for thread in consumers:
        thread.join(bounded(10))
    assert received == collections.Counter(range(2000))


def test_same_answers_as_the_stdlib_queue_on_a_script():
    ours, theirs = LocalQueue(2), queue.Queue(2)
    script = [("put", 1), ("put", 2), ("put_nowait", 3), ("get", None), ("put_nowait", 3), ("get", None),
              ("get", None), ("get_nowait", None), ("qsize", None), ("empty", None), ("full", None)]
    for op, arg in script:
        outcomes = []
        for q in (ours, theirs):
            try:
                outcomes.append(getattr(q, op)(*(() if arg is None else (arg,))))
            except (queue.Full, queue.Empty) as exc:
                outcomes.append(type(exc))
        assert outcomes[0] == outcomes[1], (op, outcomes)
