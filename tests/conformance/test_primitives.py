"""Primitives made by a context or a pool on each chosen backend: stdlib names and semantics, usable by
that pool's tasks.

The process versions' own stress and fault tests are in tests/test_primitives.py, test_process_queue.py,
test_pipe.py, test_managed.py and test_primitive_*.py.
"""

from __future__ import annotations

import threading
import time

import pytest

import conveyor
from conftest import bounded

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def sync_ctx(backend):
    return conveyor.context(backend)


def test_lock_acquire_release_and_timeout(sync_ctx):
    lock = sync_ctx.Lock()
    assert lock.acquire()
    assert not lock.acquire(blocking=False)
    started = time.monotonic()
    assert not lock.acquire(timeout=0.05)
    assert time.monotonic() - started >= 0.04
    lock.release()
    with lock:
        assert lock.locked()
    assert not lock.locked()


def test_rlock_can_be_taken_again_by_its_holder(sync_ctx):
    rlock = sync_ctx.RLock()
    with rlock, rlock:
        pass
    with pytest.raises(RuntimeError):
        rlock.release()


def test_condition_wait_for_and_notify_n(sync_ctx):
    cond = sync_ctx.Condition()
    state = {"ready": 0, "woken": 0}

    def waiter():
        with cond:
            cond.wait_for(lambda: state["ready"], timeout=bounded(5))
            state["woken"] += 1

    threads = [threading.Thread(target=waiter) for _ in range(3)]
    for thread in threads:
        thread.start()
    time.sleep(0.05)
    with cond:
        state["ready"] = 1
        cond.notify(2)
    time.sleep(0.1)
    with cond:
        assert state["woken"] == 2
        cond.notify_all()
    for thread in threads:
        thread.join(bounded(5))
    assert state["woken"] == 3
    with cond:
        assert not cond.wait(timeout=0.01)


def test_semaphores_and_bounded_over_release(sync_ctx):
    sem = sync_ctx.Semaphore(2)
    assert sem.acquire() and sem.acquire()
    assert not sem.acquire(timeout=0.01)
    sem.release()
    bsem = sync_ctx.BoundedSemaphore(1)
    bsem.acquire()
    bsem.release()
    with pytest.raises(ValueError):
        bsem.release()


def test_event(sync_ctx):
    event = sync_ctx.Event()
    assert not event.wait(0.01)
    threading.Timer(0.05, event.set).start()
    assert event.wait(bounded(5))
    assert event.is_set()
    event.clear()
    assert not event.is_set()


def test_barrier_action_abort_and_reset(sync_ctx):
    calls = []
    barrier = sync_ctx.Barrier(2, action=lambda: calls.append("action"), timeout=bounded(5))
    other = threading.Thread(target=barrier.wait)
    other.start()
    assert barrier.wait() in (0, 1)
    other.join(bounded(5))
    assert calls == ["action"]
    broken = sync_ctx.Barrier(2, timeout=0.05)
    with pytest.raises(threading.BrokenBarrierError):
        broken.wait()
    assert broken.broken
    broken.reset()
    assert not broken.broken
    aborted = sync_ctx.Barrier(3)
    aborted.abort()
    with pytest.raises(threading.BrokenBarrierError):
        aborted.wait()


def test_a_negative_timeout_is_a_value_error_for_every_blocking_queue_call(sync_ctx):
    q = sync_ctx.Queue(maxsize=1)
    q.put(0)
    for call in (lambda: q.put(1, timeout=-1), lambda: q.put_many([1], timeout=-1)):
        with pytest.raises(ValueError):
            call()
    q.get()
    for call in (lambda: q.get(timeout=-1), lambda: q.get_many(1, timeout=-1)):
        with pytest.raises(ValueError):
            call()


def test_queues_keep_their_order_and_shut_down(sync_ctx):
    ctx = sync_ctx
    q, lq, pq = ctx.Queue(), ctx.LifoQueue(), ctx.PriorityQueue()
    for item in (3, 1, 2):
        q.put(item)
        lq.put(item)
        pq.put(item)
    assert [q.get() for _ in range(3)] == [3, 1, 2]
    assert [lq.get() for _ in range(3)] == [2, 1, 3]
    assert [pq.get() for _ in range(3)] == [1, 2, 3]
    q.shutdown()
    with pytest.raises(conveyor.ShutDown):
        q.put(1)


def test_value_and_array(sync_ctx):
    counter = sync_ctx.Value("i", 5)
    assert counter.value == 5
    with counter.get_lock():
        counter.value += 1
    assert counter.value == 6
    arr = sync_ctx.Array("d", [1.0, 2.0, 3.0])
    arr[0] = 9.0
    assert arr[:] == [9.0, 2.0, 3.0] and len(arr) == 3
    zeros = sync_ctx.Array("i", 4)
    assert zeros[:] == [0, 0, 0, 0]
    raw = sync_ctx.Value("d", 1.5, lock=False)
    raw.value *= 2
    assert raw.value == 3.0


def test_containers(sync_ctx):
    ctx = sync_ctx
    d, lst, ns = ctx.dict(a=1), ctx.list([1, 2]), ctx.Namespace(x=1)
    d["b"] = 2
    lst.append(3)
    ns.y = 2
    assert d == {"a": 1, "b": 2} and lst == [1, 2, 3] and (ns.x, ns.y) == (1, 2)

def _add_many(args):
    counter, times = args
    for _ in range(times):
        with counter.get_lock():
            counter.value += 1


@pytest.mark.timeout(240)  # on Ray each of its 64 000 lock and value operations is an actor call (~1 ms)
def test_the_shared_counter_demo_is_exact_with_the_lock(backend):
    with conveyor.Pool(4, backend=backend) as pool:
        counter = pool.Value("i", 0)
        pool.map(_add_many, [(counter, 2000)] * 8, chunksize=1)
    assert counter.value == 16000


def test_pool_primitives_work_as_task_arguments(backend):
    with conveyor.Pool(2, backend=backend) as pool:
        q, event = pool.Queue(), pool.Event()
        pool.map(q.put, range(10))
        pool.submit(event.set).result(timeout=bounded(10))
        assert sorted(q.get_many(10)) == list(range(10))
        assert event.is_set()
