"""The process queue across real processes: many producers × many consumers lose and duplicate
nothing; large items travel by reference; a producer or consumer SIGKILLed mid-operation does not
corrupt the queue for the others."""

from __future__ import annotations

import collections
import gc
import os
import signal
import time

import pytest

import conveyor
from conftest import START_METHODS, _shm, bounded, own_segments

pytestmark = pytest.mark.timeout(120)


def _produce(args):
    q, start, count = args
    q.put_many(range(start, start + count // 2))
    for value in range(start + count // 2, start + count):
        q.put(value)
    return count


def _consume(q):
    seen = []
    while True:
        try:
            seen.extend(q.get_many(16))
        except conveyor.ShutDown:
            return seen


@pytest.mark.parametrize("method", START_METHODS)
def test_many_producers_many_consumers_across_processes(method):
    with conveyor.Pool(4, backend="process", start_method=method) as pool:
        q = pool.Queue(maxsize=64)
        consumers = [pool.submit(_consume, q) for _ in range(2)]
        assert sum(pool.map(_produce, [(q, i * 1000, 1000) for i in range(2)], chunksize=1)) == 2000
        q.shutdown()
        received = collections.Counter()
        for consumer in consumers:
            received.update(consumer.result(timeout=bounded(30)))
    assert received == collections.Counter(range(2000))


def test_large_items_travel_by_reference_and_leave_nothing_behind():
    with conveyor.Pool(1, backend="process") as pool:
        q = pool.Queue()
        blob = os.urandom(3 * 1024 * 1024)
        pool.submit(q.put, blob).result(timeout=bounded(30))
        assert q.get(timeout=bounded(30)) == blob


def test_primitive_and_spill_segments_are_named_after_their_maker():
    """A leak in /dev/shm must be attributable: conveyor-<pid>p-... for a primitive's state, and
    <the queue's name>q-... for a queue item too large to sit inline, never an anonymous psm_...;
    large items still queued go with the queue when its maker drops it."""
    ctx = conveyor.context("process")
    before = own_segments("p")
    q = ctx.Queue()
    (name,) = own_segments("p") - before

    def spills():
        return {segment for segment in _shm() if segment.startswith(f"{name}q-")}

    q.put(os.urandom(3 * 1024 * 1024))
    assert len(spills()) == 1
    assert len(q.get(timeout=bounded(30))) == 3 * 1024 * 1024
    assert not spills()
    q.put(os.urandom(3 * 1024 * 1024))
    q.put(os.urandom(3 * 1024 * 1024))
    assert len(spills()) == 2
    del q
    gc.collect()
    assert not spills()
    assert name not in _shm()


def _put_forever(q):
    i = 0
    while True:
        q.put(i)
        i += 1


def _get_forever(args):
    q, out = args
    while True:
        out.put(q.get())


KINDS = ["Queue", "LifoQueue", "PriorityQueue"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_producer_killed_mid_put_does_not_corrupt_the_queue(kind):
    with conveyor.Pool(1, backend="process") as pool:
        q = getattr(pool, kind)(maxsize=1000)
        pool.submit(_put_forever, q)
        deadline = time.monotonic() + bounded(30)
        while q.qsize() < 100 and time.monotonic() < deadline:  # killed mid-way, not before it starts
            time.sleep(0.001)
        os.kill(pool.statistics()["worker_pids"][0], signal.SIGKILL)
        time.sleep(0.2)
        values = []
        while True:
            try:
                values.append(q.get(timeout=0.2))
            except Exception:  # queue.Empty
                break
        assert sorted(values) == list(range(len(values))) and values  # an exact prefix
        in_order = {"Queue": values, "LifoQueue": values[::-1], "PriorityQueue": values}[kind]
        assert in_order == sorted(values)
        q.put(-1)
        assert q.get(timeout=bounded(5)) == -1


def _churn(args):
    q, stop = args
    while not stop.is_set():
        for _ in range(100):
            q.put(-1)
            q.get()


@pytest.mark.parametrize("kind", KINDS)
def test_size_read_without_the_lock_never_sees_a_half_written_commit(kind):
    """Regression: the live words were written with ``struct.pack_into``, which zeroes its target
    first, so ``qsize()``/``empty()`` in another process saw 0 for an instant in every commit (and
    until the next lock if the committer was killed there, losing the rest of the queue to readers
    that stop at ``empty()``)."""
    with conveyor.Pool(1, backend="process") as pool:
        q, stop = getattr(pool, kind)(), pool.Event()
        q.put_many(range(1000))
        churner = pool.submit(_churn, (q, stop))
        seen = set()
        try:
            while 1001 not in seen:  # the churn has started
                seen.add(q.qsize())
                assert not churner.done(), churner.exception()
            for _ in range(1_000_000):
                seen.add(q.qsize())
        finally:
            stop.set()
        churner.result(timeout=bounded(30))
    assert seen == {1000, 1001}


@pytest.mark.parametrize("kind", KINDS)
def test_a_consumer_killed_mid_get_leaves_the_rest_for_others(kind):
    total = 20000 if kind == "Queue" else 5000
    with conveyor.Pool(1, backend="process") as pool:
        q, out = getattr(pool, kind)(), pool.Queue()
        q.put_many(range(total))
        pool.submit(_get_forever, (q, out))
        deadline = time.monotonic() + bounded(30)
        while out.qsize() < 500 and time.monotonic() < deadline:
            time.sleep(0.001)
        os.kill(pool.statistics()["worker_pids"][0], signal.SIGKILL)
        time.sleep(0.2)
        moved = []
        while not out.empty():
            moved.append(out.get())
        left = []
        while not q.empty():
            left.append(q.get())
        # Every item is exactly once in one of the two queues, except at most the one the consumer
        # had taken and not yet put: nothing is duplicated or corrupted.
        together = moved + left
        assert len(set(together)) == len(together)
        assert set(together) <= set(range(total)) and len(together) >= total - 1
        assert moved and left, "the consumer was killed mid-way"
        if kind == "LifoQueue":
            moved, left = moved[::-1], left[::-1]
        assert moved == sorted(moved) and left == sorted(left)


@pytest.mark.parametrize("kind", ["LifoQueue", "PriorityQueue"])
def test_ordered_queues_match_the_stdlib_through_many_compactions(kind):
    """A small arena forces the live records to be copied to the other half again and again."""
    import queue
    import random

    from conveyor._backends.process import ordered_queues

    rng = random.Random(7)
    ours = getattr(ordered_queues, f"Process{kind}")(capacity=4096)
    reference = getattr(queue, kind)()
    for _ in range(3000):
        if reference.qsize() < 40 and (reference.empty() or rng.random() < 0.55):
            item = (rng.randrange(50), "x" * rng.randrange(0, 80))
            ours.put(item)
            reference.put(item)
        else:
            assert ours.get_nowait() == reference.get_nowait()
    assert ours.get_many(100) == [reference.get_nowait() for _ in range(reference.qsize())]


@pytest.mark.parametrize("kind", ["LifoQueue", "PriorityQueue"])
def test_ordered_queues_carry_large_items_and_uncomparable_items_leave_them_unchanged(kind):
    ctx = conveyor.context("process")
    q = getattr(ctx, kind)()
    big = (1, os.urandom(2 * 1024 * 1024))
    q.put(big)
    q.put((0, b"small"))
    if kind == "PriorityQueue":
        with pytest.raises(TypeError):
            q.put(object())
        assert q.qsize() == 2
        assert q.get() == (0, b"small")
        assert q.get() == big
    else:
        assert q.get() == (0, b"small")
        assert q.get() == big
    q.put(big)
    q.shutdown(immediate=True)  # drops the by-reference record: its segment must go too
    with pytest.raises(conveyor.ShutDown):
        q.get_nowait()


def _consume_ordered(q):
    seen = []
    while True:
        try:
            seen.extend(q.get_many(8))
        except conveyor.ShutDown:
            return seen


@pytest.mark.parametrize("kind", ["LifoQueue", "PriorityQueue"])
def test_ordered_queues_across_processes_lose_and_duplicate_nothing(kind):
    with conveyor.Pool(4, backend="process") as pool:
        q = getattr(pool, kind)(maxsize=32)
        consumers = [pool.submit(_consume_ordered, q) for _ in range(2)]
        pool.map(q.put, range(1500), chunksize=50)
        q.shutdown()
        received = collections.Counter()
        for consumer in consumers:
            received.update(consumer.result(timeout=bounded(60)))
    assert received == collections.Counter(range(1500))
