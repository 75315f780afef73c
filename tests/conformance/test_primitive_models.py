"""Model-based tests of the synchronization primitives and the queue, on each chosen backend whose tasks
run in the background (so its primitives are shared with running workers).

Each Hypothesis state machine drives one primitive through random sequences of calls, single-threaded
(plus the odd helper thread, joined within the step), and checks every result and every exception
against a small sequential model after each step. The thread backend is the stdlib itself, so the same
machine also checks that the model is the stdlib's semantics; every other backend must agree with it.
The process primitives' multi-process stress tests are in tests/test_primitive_models.py.
"""

from __future__ import annotations

import collections
import gc
import queue
import re
import threading
import time
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

import conveyor
from conftest import in_thread

pytestmark = pytest.mark.timeout(120)


SETTINGS = settings(
    max_examples=30,
    stateful_step_count=30,
    deadline=None,
    database=None,  # nothing written to .hypothesis/; a failure prints its steps
    suppress_health_check=[HealthCheck.too_slow],
)

SHORT = 0.005
"""A timeout that must expire: long enough to go through the timed path, short enough to repeat."""

ITEMS = st.one_of(
    st.integers(),
    st.text(max_size=12),
    st.binary(max_size=40),
    st.none(),
    st.booleans(),
    st.floats(allow_nan=False),
    st.tuples(st.integers(-5, 5), st.text(max_size=4)),
    st.lists(st.integers(), max_size=4),
)


def _try_and_release(lock: Any) -> bool:
    """In the calling thread: take ``lock`` without blocking and give it back; whether it was free."""
    if lock.acquire(blocking=False):
        lock.release()
        return True
    return False


def _semaphore_value(sem: Any) -> int:
    segment = getattr(sem, "_segment", None)
    return int(segment.state[0]) if segment is not None else sem._value


def _rlock_depth(rlock: Any) -> int:
    """How many times the current holder holds ``rlock`` (0: free)."""
    segment = getattr(rlock, "_segment", None)
    if segment is not None:
        return int(segment.state[rlock._DEPTH]) if segment.state[rlock._HOLDER] else 0
    match = re.search(r"count=(\d+)", repr(rlock))
    assert match, repr(rlock)
    return int(match.group(1))


class _Machine(RuleBasedStateMachine):
    """A machine for one backend; ``_primitives`` names the attributes dropped at teardown."""

    backend = "thread"
    _primitives: tuple[str, ...] = ()

    def __init__(self) -> None:
        super().__init__()
        self.ctx = conveyor.context(self.backend)

    def _let_go(self) -> None:
        """Release what the model says is held (a lock dropped while held stays mapped, by design)."""

    def teardown(self) -> None:
        """Drop the primitives, so that a process one unmaps and unlinks its segment now."""
        self._let_go()
        finalizers = []
        for name in self._primitives:
            for part in (getattr(self, name, None), getattr(getattr(self, name, None), "_lock", None)):
                segment = getattr(part, "_segment", None)
                if segment is not None:
                    finalizers.append(segment.finalizer)
            setattr(self, name, None)
        if any(finalizer.alive for finalizer in finalizers):
            gc.collect()  # one was caught in a reference cycle (a traceback, say)


def _run(machine: type[_Machine], backend: str) -> None:
    bound = type(f"{machine.__name__}_{backend}", (machine,), {"backend": backend})
    run_state_machine_as_test(bound, settings=SETTINGS)


# -- Lock --------------------------------------------------------------------------------------------


class LockMachine(_Machine):
    _primitives = ("lock",)

    def __init__(self) -> None:
        super().__init__()
        self.lock = self.ctx.Lock()
        self.held = False

    def _let_go(self) -> None:
        if self.held:
            self.lock.release()

    @rule()
    def try_acquire(self) -> None:
        assert self.lock.acquire(blocking=False) is (not self.held)
        self.held = True

    @rule()
    def acquire_with_timeout(self) -> None:
        started = time.monotonic()
        taken = self.lock.acquire(timeout=SHORT)
        assert taken is (not self.held)
        if not taken:
            assert time.monotonic() - started >= SHORT * 0.5
        self.held = True

    @precondition(lambda self: not self.held)
    @rule()
    def acquire_blocking(self) -> None:
        assert self.lock.acquire() is True
        self.held = True

    @rule()
    def release(self) -> None:
        if self.held:
            self.lock.release()
            self.held = False
        else:
            with pytest.raises(RuntimeError):
                self.lock.release()

    @precondition(lambda self: not self.held)
    @rule()
    def with_block(self) -> None:
        with self.lock:
            assert self.lock.locked()
            assert not self.lock.acquire(blocking=False)

    @rule()
    def another_thread_tries(self) -> None:
        assert in_thread(lambda: _try_and_release(self.lock)) is (not self.held)

    @rule()
    def bad_arguments(self) -> None:
        with pytest.raises(ValueError):
            self.lock.acquire(blocking=False, timeout=1)
        with pytest.raises(ValueError):
            self.lock.acquire(timeout=-2)

    @invariant()
    def matches_the_model(self) -> None:
        assert self.lock.locked() is self.held


@pytest.mark.needs("in_background")
def test_lock_model(backend: str) -> None:
    _run(LockMachine, backend)


# -- RLock -------------------------------------------------------------------------------------------


class RLockMachine(_Machine):
    _primitives = ("rlock",)

    def __init__(self) -> None:
        super().__init__()
        self.rlock = self.ctx.RLock()
        self.depth = 0

    def _let_go(self) -> None:
        for _ in range(self.depth):
            self.rlock.release()

    @rule()
    def try_acquire(self) -> None:
        assert self.rlock.acquire(blocking=False) is True  # free, or already ours
        self.depth += 1

    @rule()
    def acquire_with_timeout(self) -> None:
        assert self.rlock.acquire(timeout=SHORT) is True
        self.depth += 1

    @rule()
    def acquire_blocking(self) -> None:
        assert self.rlock.acquire() is True
        self.depth += 1

    @rule()
    def release(self) -> None:
        if self.depth:
            self.rlock.release()
            self.depth -= 1
        else:
            with pytest.raises(RuntimeError):
                self.rlock.release()

    @rule()
    def nested_with(self) -> None:
        with self.rlock:
            assert _rlock_depth(self.rlock) == self.depth + 1
            with self.rlock:
                assert _rlock_depth(self.rlock) == self.depth + 2
            assert _rlock_depth(self.rlock) == self.depth + 1

    @rule()
    def another_thread_tries(self) -> None:
        assert in_thread(lambda: _try_and_release(self.rlock)) is (self.depth == 0)

    @rule()
    def another_thread_cannot_release(self) -> None:
        with pytest.raises(RuntimeError):
            in_thread(self.rlock.release)

    @invariant()
    def matches_the_model(self) -> None:
        assert self.rlock._is_owned() is (self.depth > 0)
        assert _rlock_depth(self.rlock) == self.depth


@pytest.mark.needs("in_background")
def test_rlock_model(backend: str) -> None:
    _run(RLockMachine, backend)


# -- Semaphore and BoundedSemaphore -------------------------------------------------------------------


class SemaphoreMachine(_Machine):
    _primitives = ("sem",)
    bounded_kind = False

    @initialize(initial=st.integers(0, 3))
    def make(self, initial: int) -> None:
        make = self.ctx.BoundedSemaphore if self.bounded_kind else self.ctx.Semaphore
        self.sem = make(initial)
        self.initial = initial
        self.value = initial

    @rule()
    def try_acquire(self) -> None:
        assert self.sem.acquire(blocking=False) is (self.value > 0)
        self.value = max(0, self.value - 1)

    @rule()
    def acquire_with_timeout(self) -> None:
        started = time.monotonic()
        taken = self.sem.acquire(timeout=SHORT)
        assert taken is (self.value > 0)
        if not taken:
            assert time.monotonic() - started >= SHORT * 0.5
        self.value = max(0, self.value - 1)

    @precondition(lambda self: self.value > 0)
    @rule()
    def acquire_blocking(self) -> None:
        assert self.sem.acquire() is True
        self.value -= 1

    @rule(n=st.integers(1, 3))
    def release(self, n: int) -> None:
        if self.bounded_kind and self.value + n > self.initial:
            with pytest.raises(ValueError):
                self.sem.release(n)  # and the value stays as it was (the invariant checks)
        else:
            self.sem.release(n)
            self.value += n

    @precondition(lambda self: self.value > 0)
    @rule()
    def with_block(self) -> None:
        with self.sem:
            assert _semaphore_value(self.sem) == self.value - 1

    @rule()
    def bad_arguments(self) -> None:
        with pytest.raises(ValueError):
            self.sem.release(0)
        with pytest.raises(ValueError):
            self.sem.acquire(blocking=False, timeout=1)

    @invariant()
    def matches_the_model(self) -> None:
        assert _semaphore_value(self.sem) == self.value


class BoundedSemaphoreMachine(SemaphoreMachine):
    bounded_kind = True


@pytest.mark.needs("in_background")
def test_semaphore_model(backend: str) -> None:
    _run(SemaphoreMachine, backend)


@pytest.mark.needs("in_background")
def test_bounded_semaphore_model(backend: str) -> None:
    _run(BoundedSemaphoreMachine, backend)


# -- Event -------------------------------------------------------------------------------------------


class EventMachine(_Machine):
    _primitives = ("event",)

    def __init__(self) -> None:
        super().__init__()
        self.event = self.ctx.Event()
        self.flag = False

    @rule()
    def set(self) -> None:
        self.event.set()
        self.flag = True

    @rule()
    def clear(self) -> None:
        self.event.clear()
        self.flag = False

    @rule()
    def wait_zero(self) -> None:
        assert self.event.wait(0) is self.flag

    @rule()
    def wait_short(self) -> None:
        assert self.event.wait(SHORT) is self.flag

    @precondition(lambda self: self.flag)
    @rule()
    def wait_forever_when_set(self) -> None:
        assert self.event.wait() is True

    @rule()
    def another_thread_sees_it(self) -> None:
        assert in_thread(lambda: self.event.wait(0)) is self.flag

    @invariant()
    def matches_the_model(self) -> None:
        assert self.event.is_set() is self.flag


@pytest.mark.needs("in_background")
def test_event_model(backend: str) -> None:
    _run(EventMachine, backend)


# -- Condition ---------------------------------------------------------------------------------------


class ConditionMachine(_Machine):
    """Single-threaded: a wait always times out, a notify with nobody waiting is lost."""

    _primitives = ("cond", "lock")

    @initialize(kind=st.sampled_from(["Lock", "RLock", "default"]))
    def make(self, kind: str) -> None:
        self.reentrant = kind != "Lock"
        self.lock = None if kind == "default" else getattr(self.ctx, kind)()
        self.cond = self.ctx.Condition(self.lock)
        self.depth = 0

    def _let_go(self) -> None:
        for _ in range(getattr(self, "depth", 0)):
            self.cond.release()

    @rule()
    def acquire(self) -> None:
        if self.reentrant or not self.depth:
            assert self.cond.acquire(blocking=False) is True
            self.depth += 1
        else:
            assert self.cond.acquire(blocking=False) is False

    @rule()
    def release(self) -> None:
        if self.depth:
            self.cond.release()
            self.depth -= 1
        else:
            with pytest.raises(RuntimeError):
                self.cond.release()

    @rule(n=st.integers(0, 3), every=st.booleans())
    def notify(self, n: int, every: bool) -> None:
        call = self.cond.notify_all if every else lambda: self.cond.notify(n)
        if self.depth:
            call()
        else:
            with pytest.raises(RuntimeError):
                call()

    @rule(timeout=st.sampled_from([0, SHORT]))
    def wait(self, timeout: float) -> None:
        if self.depth:
            assert self.cond.wait(timeout) is False  # nobody notifies: earlier notifies are not kept
        else:
            with pytest.raises(RuntimeError):
                self.cond.wait(timeout)

    @rule()
    def wait_for_a_true_predicate(self) -> None:
        if self.depth:
            assert self.cond.wait_for(lambda: "yes", timeout=SHORT) == "yes"
        else:
            with pytest.raises(RuntimeError):
                self.cond.wait(0)

    @rule()
    def another_thread_tries_the_lock(self) -> None:
        assert in_thread(lambda: _try_and_release(self.cond)) is (self.depth == 0)

    @invariant()
    def matches_the_model(self) -> None:
        lock = self.cond._lock
        if self.reentrant:
            assert lock._is_owned() is (self.depth > 0)
            assert _rlock_depth(lock) == self.depth
        else:
            assert lock.locked() is (self.depth > 0)


@pytest.mark.needs("in_background")
def test_condition_model(backend: str) -> None:
    _run(ConditionMachine, backend)


# -- Barrier (one party) -----------------------------------------------------------------------------


class BarrierMachine(_Machine):
    """``Barrier(1)``: each ``wait`` trips it at once, running the action; abort breaks it, reset mends it."""

    _primitives = ("barrier",)

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.action_fails = False
        self.barrier = self.ctx.Barrier(1, action=self._action)
        self.broken = False

    def _action(self) -> None:
        self.calls += 1
        if self.action_fails:
            raise ZeroDivisionError("the action failed")

    @rule(timeout=st.sampled_from([None, SHORT, 5.0]))
    def wait(self, timeout: float | None) -> None:
        if self.broken:
            with pytest.raises(threading.BrokenBarrierError):
                self.barrier.wait(timeout)
            return
        calls = self.calls
        if self.action_fails:
            with pytest.raises(ZeroDivisionError):
                self.barrier.wait(timeout)
            self.broken = True  # a failed action breaks the barrier
        else:
            assert self.barrier.wait(timeout) == 0
        assert self.calls == calls + 1

    @rule(fails=st.booleans())
    def set_action(self, fails: bool) -> None:
        self.action_fails = fails

    @rule()
    def abort(self) -> None:
        self.barrier.abort()
        self.broken = True

    @rule()
    def reset(self) -> None:
        self.barrier.reset()
        self.broken = False

    @invariant()
    def matches_the_model(self) -> None:
        assert self.barrier.broken is self.broken
        assert self.barrier.parties == 1
        assert self.barrier.n_waiting == 0


@pytest.mark.needs("in_background")
def test_barrier_model(backend: str) -> None:
    _run(BarrierMachine, backend)


# -- Queue -------------------------------------------------------------------------------------------


class QueueMachine(_Machine):
    """``queue.Queue`` plus ``shutdown(immediate)`` (Python 3.13) and ``put_many``/``get_many``."""

    _primitives = ("q",)

    @initialize(maxsize=st.integers(0, 3))
    def make(self, maxsize: int) -> None:
        self.q = self.ctx.Queue(maxsize)
        self.maxsize = maxsize
        self.items: collections.deque[Any] = collections.deque()
        self.unfinished = 0
        self.shut = False

    def _room(self) -> bool:
        return self.maxsize <= 0 or len(self.items) < self.maxsize

    def _expect_put(self, put: Callable[[], None], item: Any) -> None:
        if self.shut:
            with pytest.raises(conveyor.ShutDown):
                put()
        elif not self._room():
            with pytest.raises(queue.Full):
                put()
        else:
            put()
            self.items.append(item)
            self.unfinished += 1

    def _expect_get(self, get: Callable[[], Any]) -> None:
        if self.items:
            assert get() == self.items.popleft()
        elif self.shut:
            with pytest.raises(conveyor.ShutDown):
                get()
        else:
            with pytest.raises(queue.Empty):
                get()

    @rule(item=ITEMS)
    def put_nowait(self, item: Any) -> None:
        self._expect_put(lambda: self.q.put_nowait(item), item)

    @rule(item=ITEMS)
    def put_with_timeout(self, item: Any) -> None:
        self._expect_put(lambda: self.q.put(item, timeout=SHORT), item)

    @precondition(lambda self: self.shut or self._room())
    @rule(item=ITEMS)
    def put_blocking(self, item: Any) -> None:
        self._expect_put(lambda: self.q.put(item), item)

    @rule()
    def get_nowait(self) -> None:
        self._expect_get(self.q.get_nowait)

    @rule()
    def get_with_timeout(self) -> None:
        self._expect_get(lambda: self.q.get(timeout=SHORT))

    @precondition(lambda self: self.shut or self.items)
    @rule()
    def get_blocking(self) -> None:
        self._expect_get(self.q.get)

    @rule(items=st.lists(ITEMS, min_size=1, max_size=5))
    def put_many_nowait(self, items: list[Any]) -> None:
        """Items go in, in order, until there is no room (Full) or the queue is shut down (ShutDown)."""
        fit = len(items) if self.maxsize <= 0 else max(0, self.maxsize - len(self.items))
        if self.shut:
            with pytest.raises(conveyor.ShutDown):
                self.q.put_many(items, block=False)
            return
        if fit < len(items):
            with pytest.raises(queue.Full):
                self.q.put_many(items, block=False)
        else:
            self.q.put_many(items, block=False)
        self.items.extend(items[:fit])
        self.unfinished += min(fit, len(items))

    @rule(k=st.integers(1, 4))
    def get_many_nowait(self, k: int) -> None:
        if self.items:
            expected = [self.items.popleft() for _ in range(min(k, len(self.items)))]
            assert self.q.get_many(k, block=False) == expected
        elif self.shut:
            with pytest.raises(conveyor.ShutDown):
                self.q.get_many(k, block=False)
        else:
            with pytest.raises(queue.Empty):
                self.q.get_many(k, block=False)

    @rule()
    def task_done(self) -> None:
        if self.unfinished:
            self.q.task_done()
            self.unfinished -= 1
        else:
            with pytest.raises(ValueError):
                self.q.task_done()

    @precondition(lambda self: self.unfinished == 0)
    @rule()
    def join_when_all_done(self) -> None:
        self.q.join()

    @rule(immediate=st.booleans())
    def shutdown(self, immediate: bool) -> None:
        self.q.shutdown(immediate=immediate)
        self.shut = True
        if immediate:  # the waiting items are dropped, and count as done
            self.unfinished = max(0, self.unfinished - len(self.items))
            self.items.clear()

    @invariant()
    def matches_the_model(self) -> None:
        assert self.q.qsize() == len(self.items)
        assert self.q.empty() is (not self.items)
        assert self.q.full() is (0 < self.maxsize <= len(self.items))
        assert self.q.is_shutdown is self.shut
        assert self.q.maxsize == self.maxsize


@pytest.mark.needs("in_background")
def test_queue_model(backend: str) -> None:
    _run(QueueMachine, backend)


# -- many processes at once ---------------------------------------------------------------------------


# -- regressions: what the models and the stress above ran into ------------------------------------------
