"""Timeouts the stdlib refuses are refused by every backend's primitives, and a set Event wakes every
waiter of its time.

- A timeout above ``threading.TIMEOUT_MAX`` raises ``OverflowError`` (as ``threading.Lock.acquire``)
  from every call that takes one, on the process, thread (conveyor's queues), Dask and Ray
  primitives; the Dask and Ray ones are checked without a cluster: the error must come before any
  call to the hub (a barrier party must not be counted, a waiter not registered, on the way to it).
- A negative timeout is a ``ValueError`` where the stdlib says so (locks, queues), "do not wait"
  elsewhere.
- ``set(); clear()`` on a process Event returns True to every waiter that was waiting (CPython's
  ``test_set_and_clear``).
"""

from __future__ import annotations

import threading
import time

import pytest

import conveyor
from conftest import bounded

TOO_LONG = (1e100, threading.TIMEOUT_MAX + 1)


def timeout_calls(ctx: conveyor.context, too_long: float) -> dict[str, object]:
    """Every call of ``ctx``'s primitives that takes a timeout, with ``too_long`` as that timeout.

    Each would return at once if the timeout were accepted (a free lock, a set event, a queue with
    an item and room, a condition notified by a helper thread): a primitive that fails to refuse the
    timeout fails the test, it does not hang it."""
    lock, rlock, sem, bsem, event = ctx.Lock(), ctx.RLock(), ctx.Semaphore(1), ctx.BoundedSemaphore(1), ctx.Event()
    event.set()
    cond, barrier = ctx.Condition(), ctx.Barrier(1)
    queues = [ctx.Queue(2), ctx.LifoQueue(2), ctx.PriorityQueue(2)]
    for q in queues:
        q.put(0)

    def waiting_on_condition(method: str) -> None:
        stop = threading.Event()

        def notifier() -> None:
            while not stop.wait(0.05):
                with cond:
                    cond.notify_all()

        helper = threading.Thread(target=notifier)
        helper.start()
        answers = iter([False, True])
        try:
            with cond:
                if method == "wait":
                    cond.wait(too_long)
                else:
                    cond.wait_for(lambda: next(answers, True), too_long)
        finally:
            stop.set()
            helper.join()

    calls: dict[str, object] = {
        "Lock.acquire": lambda: lock.acquire(timeout=too_long),
        "RLock.acquire": lambda: rlock.acquire(timeout=too_long),
        "Semaphore.acquire": lambda: sem.acquire(timeout=too_long),
        "BoundedSemaphore.acquire": lambda: bsem.acquire(timeout=too_long),
        "Event.wait": lambda: event.wait(too_long),
        "Condition.wait": lambda: waiting_on_condition("wait"),
        "Condition.wait_for": lambda: waiting_on_condition("wait_for"),
        "Barrier.wait": lambda: barrier.wait(too_long),
    }
    for q in queues:
        name = type(q).__name__
        calls[f"{name}.put"] = lambda q=q: q.put(1, timeout=too_long)
        calls[f"{name}.get"] = lambda q=q: q.get(timeout=too_long)
        calls[f"{name}.put_many"] = lambda q=q: q.put_many([1], timeout=too_long)
        calls[f"{name}.get_many"] = lambda q=q: q.get_many(1, timeout=too_long)
    return calls


def not_refused(calls: dict[str, object]) -> dict[str, str]:
    """Call each; those that did not raise ``OverflowError``, with what they did instead."""
    wrong = {}
    for name, call in calls.items():
        try:
            call()  # type: ignore[operator]
        except OverflowError:
            continue
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            wrong[name] = repr(exc)
        else:
            wrong[name] = "returned"
    return wrong


@pytest.mark.parametrize("too_long", TOO_LONG)
@pytest.mark.parametrize("backend", ["process", "thread"])
def test_a_timeout_over_timeout_max_is_an_overflow_error(backend, too_long):
    ctx = conveyor.context(backend)
    calls = timeout_calls(ctx, too_long)
    if backend == "thread":  # the stdlib's own threading objects: they raise only when they must wait
        calls = {name: call for name, call in calls.items() if "Queue" in name}
    assert not_refused(calls) == {}


def test_timeout_max_itself_is_accepted():
    ctx = conveyor.context("process")
    lock, sem, event = ctx.Lock(), ctx.Semaphore(1), ctx.Event()
    assert lock.acquire(timeout=threading.TIMEOUT_MAX)
    lock.release()
    assert sem.acquire(timeout=threading.TIMEOUT_MAX)
    event.set()
    assert event.wait(threading.TIMEOUT_MAX)
    q = ctx.Queue()
    q.put(1, timeout=threading.TIMEOUT_MAX)
    assert q.get(timeout=threading.TIMEOUT_MAX) == 1


@pytest.mark.parametrize("backend", ["process", "thread"])
def test_negative_timeouts_as_the_stdlib(backend):
    ctx = conveyor.context(backend)
    with pytest.raises(ValueError):
        ctx.Lock().acquire(timeout=-100)
    with pytest.raises(ValueError):
        ctx.RLock().acquire(timeout=-5)
    for q in (ctx.Queue(1), ctx.LifoQueue(1), ctx.PriorityQueue(1)):
        with pytest.raises(ValueError):
            q.put(1, timeout=-1)
        with pytest.raises(ValueError):
            q.get(timeout=-1)
    started = time.monotonic()
    assert ctx.Semaphore(0).acquire(timeout=-1) is False  # "do not wait", as threading.Semaphore
    assert ctx.Event().wait(-1) is False
    cond = ctx.Condition()
    with cond:
        assert cond.wait(-1) is False
    assert time.monotonic() - started < bounded(2)


def test_process_event_set_then_clear_wakes_every_waiter_of_that_time():
    event = conveyor.context("process").Event()
    results: list[tuple[bool, float]] = []

    def waiter() -> None:
        started = time.monotonic()
        results.append((event.wait(bounded(10)), time.monotonic() - started))

    threads = [threading.Thread(target=waiter) for _ in range(5)]
    for thread in threads:
        thread.start()
    time.sleep(0.3)  # all of them waiting
    event.set()
    event.clear()
    for thread in threads:
        thread.join(bounded(20))
    assert [woken for woken, _ in results] == [True] * 5
    assert all(seconds < bounded(5) for _, seconds in results), results
    assert not event.is_set()
    assert event.wait(0.05) is False  # a waiter that came after the clear is not woken by that set


def test_process_event_set_then_clear_wakes_a_waiter_in_another_process():
    ctx = conveyor.context("process")
    event = ctx.Event()
    with ctx.Pool(1) as pool:
        assert pool.submit(event.is_set).result(timeout=bounded(60)) is False  # the worker is up
        waiting = pool.submit(event.wait, bounded(10))
        time.sleep(0.5)
        event.set()
        event.clear()
        assert waiting.result(timeout=bounded(20)) is True


# -- Dask and Ray: checked before any call to the hub ------------------------------------------------

class _NoHub:
    """Stands for a hub's space: any call is a failure of the test (the timeout should have been refused)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def call(self, *args: object, **kwargs: object) -> object:
        self.calls.append(repr(args[:3]))
        raise AssertionError(f"reached the hub: {args[:3]}")


def _unbound(cls: type, hub: _NoHub, **attributes: object) -> object:
    made = cls.__new__(cls)
    for name, value in {"_space": hub, "_key": "none", **attributes}.items():
        object.__setattr__(made, name, value)
    return made


@pytest.mark.parametrize("too_long", TOO_LONG)
def test_cluster_primitives_refuse_a_timeout_over_timeout_max_before_calling_the_hub(too_long):
    """The cluster primitives are one set of clients for every engine (``_shared/hub``)."""
    from conveyor._backends._shared.hub import data, sync

    hub = _NoHub()
    lock = _unbound(sync.RLock, hub, _lease=10.0)
    calls = {
        "Lock.acquire": lambda: _unbound(sync.Lock, hub, _lease=10.0).acquire(timeout=too_long),
        "RLock.acquire": lambda: lock.acquire(timeout=too_long),
        "Event.wait": lambda: _unbound(sync.Event, hub).wait(too_long),
        "Semaphore.acquire": lambda: _unbound(sync.Semaphore, hub).acquire(timeout=too_long),
        "Condition.wait": lambda: _unbound(sync.Condition, hub, _lock=lock).wait(too_long),
        "Barrier.wait": lambda: _unbound(sync.Barrier, hub, _timeout=None, _action=None).wait(too_long),
        "Barrier default": lambda: _unbound(sync.Barrier, hub, _timeout=too_long, _action=None).wait(),
        "Queue.put": lambda: _unbound(data.Queue, hub, maxsize=0).put(1, timeout=too_long),
        "Queue.get": lambda: _unbound(data.Queue, hub, maxsize=0).get(timeout=too_long),
        "Queue.put_many": lambda: _unbound(data.Queue, hub, maxsize=0).put_many([1], timeout=too_long),
        "Queue.get_many": lambda: _unbound(data.Queue, hub, maxsize=0).get_many(1, timeout=too_long),
    }
    assert not_refused(calls) == {}
    assert hub.calls == []
