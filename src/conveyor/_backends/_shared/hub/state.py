"""The state of every cluster primitive, engine-neutral and never blocking.

Each class is a plain object that the hub (``core.py``) keeps under a key and drives one operation
at a time. An operation that cannot go on yet (an empty queue, a held lock, a semaphore at zero)
raises :class:`Later`; the hub then waits for a change of that object and tries again. Nothing here
knows Dask, Ray, threads or time except a lock's lease, which the hub reads (``LockState.holder``).

Owners are strings ``"<process token>:<thread id>"`` (see ``clients.py``): the part before the
colon names the process, which is what a lease follows.
"""

from __future__ import annotations

import pickle
import threading
from collections import deque
from typing import Any

from conveyor._backends._shared.managed.ops import OPS
from conveyor._backends._shared.queues import Empty, Full, LocalLifoQueue, LocalPriorityQueue, LocalQueue
from conveyor._core import serialize


class Later(Exception):
    """The operation cannot go on yet: wait for a change of the object and try again."""


def process_of(owner: str) -> str:
    """The process part of an owner (``"process:thread"``)."""
    return owner.partition(":")[0]


class LockState:
    """``threading.Lock`` (any owner may release) or ``RLock`` (re-entrant, released by its owner).

    The holder is recorded with the lease it took the lock under: the hub frees a lock whose
    holder's process has not been heard from for that long (see ``Hub.expire``).
    """

    def __init__(self, reentrant: bool) -> None:
        self.reentrant = reentrant
        self.owner: str | None = None
        self.depth = 0
        self.lease = 0.0

    def acquire(self, owner: str, lease: float, depth: int = 1) -> bool:
        if self.depth:
            if not (self.reentrant and self.owner == owner):
                raise Later
            self.depth += 1
            return True
        self.owner, self.depth, self.lease = owner, depth, lease
        return True

    def release(self, owner: str) -> None:
        if not self.depth:
            raise RuntimeError("cannot release un-acquired lock" if self.reentrant else "release unlocked lock")
        if self.reentrant and self.owner != owner:
            raise RuntimeError("cannot release un-acquired lock")
        self.depth = self.depth - 1 if self.reentrant else 0
        if not self.depth:
            self.owner = None

    def release_all(self, owner: str) -> int:
        """For ``Condition.wait``: free the lock whatever its depth; the depth to restore."""
        if not self.owned(owner):
            raise RuntimeError("cannot wait on un-acquired lock")
        depth, self.depth, self.owner = self.depth, 0, None
        return depth

    def free(self) -> None:
        """The holder's lease ran out: the lock is free again."""
        self.owner, self.depth = None, 0

    def locked(self) -> bool:
        return self.depth > 0

    def owned(self, owner: str) -> bool:
        return self.depth > 0 and self.owner == owner

    def state(self) -> tuple[str | None, int]:
        """(holder, depth), for the client's repr."""
        return self.owner, self.depth


class ConditionState:
    """The waiters of a ``Condition`` around a lock of the same hub, in arrival order.

    ``begin`` joins the waiters and frees the lock in one step, so a notify that follows cannot miss
    the waiter; ``notify(n)`` marks the ``n`` oldest; a waiter whose time runs out ``leave``s in one
    step, keeping a notify that reached it meanwhile (it never swallows one meant for another).
    """

    def __init__(self, lock: LockState, lock_key: str) -> None:
        self.lock = lock
        self.linked = (lock_key,)  # begin() changes the lock too: its waiters must hear of it
        self.waiting: deque[str] = deque()
        self.notified: set[str] = set()

    def begin(self, owner: str, token: str) -> int:
        if not self.lock.owned(owner):
            raise RuntimeError("cannot wait on un-acquired lock")
        self.waiting.append(token)
        return self.lock.release_all(owner)

    def wait(self, token: str) -> bool:
        if token not in self.notified:
            raise Later
        self.notified.discard(token)
        return True

    def leave(self, token: str) -> bool:
        """A waiter whose time ran out (or was interrupted): whether it was notified after all."""
        if token in self.notified:
            self.notified.discard(token)
            return True
        try:
            self.waiting.remove(token)
        except ValueError:
            pass
        return False

    def notify(self, owner: str, n: int | None) -> None:
        if not self.lock.owned(owner):
            raise RuntimeError("cannot notify on un-acquired lock")
        while self.waiting and (n is None or n > 0):
            self.notified.add(self.waiting.popleft())
            n = None if n is None else n - 1


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


class EventState:
    """``threading.Event``."""

    def __init__(self) -> None:
        self.flag = False

    def set(self) -> None:
        self.flag = True

    def clear(self) -> None:
        self.flag = False

    def is_set(self) -> bool:
        return self.flag

    def wait(self) -> bool:
        if not self.flag:
            raise Later
        return True


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


def item_type(typecode_or_type: Any) -> Any:
    """The ctypes type of a ``multiprocessing`` typecode (``"i"``, ``"d"``...), or the type given."""
    # The stdlib's own table of typecodes, undocumented and absent from the stubs.
    from multiprocessing.sharedctypes import typecode_to_type  # type: ignore[attr-defined]

    return typecode_to_type.get(typecode_or_type, typecode_or_type)


class ValueState:
    """One ctypes value, so that values convert (and fail to) exactly as ``multiprocessing.Value``'s."""

    def __init__(self, typecode_or_type: Any, value: Any) -> None:
        self.type = item_type(typecode_or_type)
        self.value = self.type(value).value

    def get(self) -> Any:
        return self.value

    def set(self, value: Any) -> None:
        self.value = self.type(value).value


class ArrayState:
    """A ctypes array, so that values convert (and fail to) exactly as in ``multiprocessing.Array``."""

    def __init__(self, typecode_or_type: Any, size_or_initializer: Any) -> None:
        kind = item_type(typecode_or_type)
        if isinstance(size_or_initializer, int):
            self.array = (kind * size_or_initializer)()
        else:
            values = list(size_or_initializer)
            self.array = (kind * len(values))(*values)

    def getitem(self, index: Any) -> Any:
        return self.array[index]

    def setitem(self, index: Any, value: Any) -> None:
        self.array[index] = value


class ContainerState:
    """A dict, list or namespace, operated on by the process backend's table of operations.

    Values travel pickled both ways, so that what a caller gets is a copy taken at the time of the
    call (the object may change right after, before the engine would have pickled it)."""

    def __init__(self, blob: bytes) -> None:
        self.obj = pickle.loads(blob)

    def apply(self, op: str, args_blob: bytes) -> bytes:
        return serialize.dumps(OPS[op](self.obj, *pickle.loads(args_blob)))


KINDS: dict[str, Any] = {
    "lock": LockState,
    "condition": ConditionState,
    "semaphore": SemaphoreState,
    "event": EventState,
    "barrier": BarrierState,
    "queue": QueueState,
    "value": ValueState,
    "array": ArrayState,
    "container": ContainerState,
}
"""What a client may ask the hub to make, by name."""
