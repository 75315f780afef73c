"""The Dask actor that holds the state of a factory's queues, semaphores, arrays and containers.

Dask has a lock, an event and a variable of its own (kept by its scheduler), but no LIFO or priority
queue, no counting semaphore that anyone may release, nothing that joins on ``task_done`` and nothing
that holds a dict. Those objects live in one *hub* per factory (a context's or a pool's): a Dask
actor, that is an ordinary object that Dask keeps on one of its workers and whose methods a caller
or any task can call. Each object is a small state class below, under a random key::

    caller / any task ── hub.call(key, "put", (items,), wait) ──► worker's event loop: the hub
                     ◄── ("ok", 3) | ("later", None) | ("error", exc) ──┘  runs one call at a time

The hub's methods are coroutines, so Dask runs them on the worker's event loop, one at a time: each
operation is atomic, with no lock, and a call never ties up a thread of the worker. An operation
that cannot go on yet (an empty queue, a semaphore at zero) raises :class:`Later`; the hub then
waits for a change of that object, at most ``wait`` seconds, and tries again, so that a blocked
caller is woken as soon as it can go on. The caller's own loop calls again until its timeout: one
call waits at most a slice, so a client that is interrupted or dies leaves nothing waiting for long.

The state classes never see Dask, and the hub never raises: every result, including an operation's
exception, comes back as a value, so that an error reaching the caller can only be Dask's own (the
hub's worker gone). An exception from the user's code (``modify``'s function, ``sort``'s key) is
pickled with its traceback, as the process backend's server does.
"""

from __future__ import annotations

import asyncio
import pickle
import threading
from collections import deque
from typing import Any

from conveyor._backends._shared.managed.ops import OPS, USER_CODE_OPS
from conveyor._backends._shared.queues import Empty, Full, LocalLifoQueue, LocalPriorityQueue, LocalQueue
from conveyor._core import serialize

OK, LATER, ERROR, GONE = "ok", "later", "error", "gone"
"""What a hub call reports: a result, "would block" (the wait ran out), an exception, no such object."""


class Later(Exception):
    """The operation cannot go on yet: wait for a change of the object and try again."""


class SemaphoreState:
    """A counter that anyone may release, with an optional upper bound (``BoundedSemaphore``)."""

    def __init__(self, value: int, bound: int | None) -> None:
        self.value, self.bound = value, bound

    def acquire(self) -> bool:
        if not self.value:
            raise Later
        self.value -= 1
        return True

    def release(self, n: int) -> None:
        if self.bound is not None and self.value + n > self.bound:
            raise ValueError("Semaphore released too many times")
        self.value += n

    def get_value(self) -> int:
        return self.value


class QueueState:
    """conveyor's in-process queue (FIFO, LIFO or priority), driven without blocking; items come
    and go pickled (by the caller, so that an item that cannot be pickled fails there)."""

    KINDS = {"fifo": LocalQueue, "lifo": LocalLifoQueue, "priority": LocalPriorityQueue}

    def __init__(self, order: str, maxsize: int) -> None:
        self.queue = self.KINDS[order](maxsize)

    def put(self, blob: bytes) -> int:
        """Put items in order while there is room; how many went in (none: Later)."""
        count = 0
        for item in pickle.loads(blob):
            try:
                self.queue.put_nowait(item)
            except Full:
                if not count:
                    raise Later from None
                break
            count += 1
        return count

    def get(self, max_items: int) -> bytes:
        try:
            return serialize.dumps(self.queue.get_many(max_items, block=False))
        except Empty:
            raise Later from None

    def task_done(self) -> None:
        self.queue.task_done()

    def join(self) -> None:
        if self.queue.unfinished_tasks:
            raise Later

    def shutdown(self, immediate: bool) -> None:
        self.queue.shutdown(immediate)

    def sizes(self) -> tuple[int, bool, bool]:
        """(qsize, full, shut down), read together."""
        size = self.queue.qsize()
        return size, 0 < self.queue.maxsize <= size, self.queue.is_shutdown


class ArrayState:
    """A ctypes array, so that values convert (and fail to) exactly as in ``multiprocessing.Array``."""

    def __init__(self, item_type: Any, size_or_initializer: Any) -> None:
        if isinstance(size_or_initializer, int):
            self.array = (item_type * size_or_initializer)()
        else:
            values = list(size_or_initializer)
            self.array = (item_type * len(values))(*values)

    def getitem(self, index: Any) -> Any:
        return self.array[index]

    def setitem(self, index: Any, value: Any) -> None:
        self.array[index] = value


class ContainerState:
    """A dict, list or namespace, operated on by the process backend's table of operations.

    Values travel pickled both ways, so that what a caller gets is a copy taken at the time of the
    call (the object may change right after, before Dask would have pickled it)."""

    def __init__(self, blob: bytes) -> None:
        self.obj = pickle.loads(blob)

    def apply(self, op: str, args_blob: bytes) -> bytes:
        return serialize.dumps(OPS[op](self.obj, *pickle.loads(args_blob)))


class WaitersState:
    """The waiters of a ``Condition``, in arrival order; ``notify(n)`` marks the ``n`` oldest."""

    def __init__(self) -> None:
        self.waiting: deque[str] = deque()
        self.notified: set[str] = set()

    def enter(self, token: str) -> None:
        self.waiting.append(token)

    def wait(self, token: str) -> bool:
        if token not in self.notified:
            raise Later
        self.notified.discard(token)
        return True

    def leave(self, token: str) -> bool:
        """A waiter whose time ran out: whether it was notified after all (then it keeps that)."""
        if token in self.notified:
            self.notified.discard(token)
            return True
        try:
            self.waiting.remove(token)
        except ValueError:
            pass
        return False

    def notify(self, n: int | None) -> None:
        while self.waiting and (n is None or n > 0):
            self.notified.add(self.waiting.popleft())
            n = None if n is None else n - 1


class BarrierState:
    """``threading.Barrier``'s bookkeeping: generations, arrivals, and which generations failed.

    The party that arrives last runs the action in its own process, then reports with ``trip``; a
    generation that is broken (a timeout, an abort, a failed action) or reset fails all its waiters.
    """

    def __init__(self, parties: int) -> None:
        self.parties = parties
        self.generation = 0
        self.count = 0
        self.broken = False
        self.failed: set[int] = set()

    def arrive(self, trip_now: bool) -> tuple[int, int, bool]:
        """(generation, index, last); the last party trips the barrier now if there is no action."""
        if self.broken:
            raise threading.BrokenBarrierError
        if self.count == self.parties:
            raise Later  # the last party of this generation is running the action
        generation, index = self.generation, self.count
        self.count += 1
        last = self.count == self.parties
        if last and trip_now:
            self.trip(generation, True)
        return generation, index, last

    def trip(self, generation: int, ok: bool) -> None:
        if generation != self.generation:
            return  # broken or reset meanwhile: its waiters have failed already
        if ok:
            self.generation += 1
            self.count = 0
        else:
            self.abort()

    def passed(self, generation: int) -> bool:
        if generation in self.failed:
            raise threading.BrokenBarrierError
        if self.generation == generation:
            raise Later
        return True

    def give_up(self, generation: int) -> bool:
        """A waiter whose time ran out: it passed after all, or it breaks the barrier."""
        if self.generation == generation:
            self.abort()
        return self.passed(generation)

    def abort(self) -> None:
        self.failed.add(self.generation)
        self.generation += 1
        self.count = 0
        self.broken = True

    def reset(self) -> None:
        if self.count:
            self.failed.add(self.generation)
            self.generation += 1
            self.count = 0
        self.broken = False

    def status(self) -> tuple[int, bool]:
        """(parties waiting, broken)."""
        return (0 if self.broken else self.count), self.broken


STATES: dict[str, Any] = {
    "semaphore": SemaphoreState,
    "queue": QueueState,
    "array": ArrayState,
    "container": ContainerState,
    "waiters": WaitersState,
    "barrier": BarrierState,
}


class Hub:
    """A Dask actor holding objects by key. Every method is a coroutine: it runs on the worker's
    event loop, so calls are atomic and a waiting call holds no thread."""

    def __init__(self) -> None:
        self._objects: dict[str, Any] = {}
        self._changes: dict[str, asyncio.Event] = {}

    async def make(self, key: str, kind: str, args: tuple[Any, ...]) -> tuple[str, Any]:
        try:
            self._objects[key] = STATES[kind](*args)
        except Exception as exc:  # noqa: BLE001 - the caller raises it (a bad typecode, say)
            return ERROR, exc
        return OK, None

    async def call(self, key: str, op: str, args: tuple[Any, ...], wait: float,
                   drop: list[str]) -> tuple[str, Any]:
        """Run ``op`` on the object; if it must wait, wait up to ``wait`` seconds for a change.
        First forget the objects in ``drop``, whose owners have gone."""
        for gone in drop:
            self._objects.pop(gone, None)
            self._changed(gone)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            state = self._objects.get(key)
            if state is None or op.startswith("_"):
                return GONE, None
            try:
                result = getattr(state, op)(*args)
            except Later:
                if not await self._next_change(key, deadline - loop.time()):
                    return LATER, None
                continue
            except Exception as exc:  # noqa: BLE001 - the operation's own error is its result
                user_code = op == "apply" and args[0] in USER_CODE_OPS
                return ERROR, (serialize.dumps_exception(exc) if user_code else exc)
            self._changed(key)
            return OK, result

    async def _next_change(self, key: str, seconds: float) -> bool:
        """Wait until the object changes (True) or ``seconds`` pass (False)."""
        if seconds <= 0:
            return False
        change = self._changes.setdefault(key, asyncio.Event())
        try:
            await asyncio.wait_for(change.wait(), seconds)
        except asyncio.TimeoutError:
            return False
        return True

    def _changed(self, key: str) -> None:
        change = self._changes.pop(key, None)
        if change is not None:
            change.set()


__all__ = ["ERROR", "GONE", "LATER", "OK", "Hub", "Later"]
