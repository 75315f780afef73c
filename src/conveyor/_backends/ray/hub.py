"""The state behind the Ray primitives: one threaded actor per process, the *hub*, holds them all.

Most of the state is the stdlib's own objects (``threading.Lock``-like owned locks, ``Semaphore``,
``BoundedSemaphore``, ``Event``) and conveyor's in-process queues; the waits that must be cut into
slices (a condition, a barrier, ``put_many``, ``join``) are split here into steps a client calls one
after the other (see ``ray/primitives.py`` for the clients). Each call runs in a thread of the actor
and returns within a slice, so a blocked client never holds the hub.
"""

from __future__ import annotations

import array
import collections
import queue as _stdlib_queue
import threading
import time
import uuid
from typing import Any, Callable

import ray

from conveyor._backends._shared.managed.ops import OPS
from conveyor._backends._shared.queues import LocalLifoQueue, LocalPriorityQueue, LocalQueue
from conveyor._core import serialize
from conveyor._core.errors import OwnerGoneError


class _OwnedLock:
    """``threading.Lock`` (any caller may release) or ``RLock`` (re-entrant, released by its owner),
    with the owner recorded so that a Condition can check it and hand the lock over."""

    def __init__(self, reentrant: bool) -> None:
        self.reentrant = reentrant
        self._cond = threading.Condition()
        self._owner: str | None = None
        self._depth = 0

    def acquire(self, owner: str, timeout: float, depth: int = 1) -> bool:
        with self._cond:
            if self.reentrant and self._owner == owner:
                self._depth += 1
                return True
            if not self._cond.wait_for(lambda: self._depth == 0, timeout):
                return False
            self._owner, self._depth = owner, depth
            return True

    def release(self, owner: str) -> None:
        with self._cond:
            if self._depth == 0:
                raise RuntimeError("release unlocked lock" if not self.reentrant else
                                   "cannot release un-acquired lock")
            if self.reentrant and self._owner != owner:
                raise RuntimeError("cannot release un-acquired lock")
            self._depth = self._depth - 1 if self.reentrant else 0
            if self._depth == 0:
                self._owner = None
                self._cond.notify()

    def release_all(self, owner: str) -> int:
        """For Condition.wait: free the lock whatever its depth; the depth to restore."""
        with self._cond:
            depth, self._depth, self._owner = self._depth, 0, None
            self._cond.notify()
            return depth

    def locked(self) -> bool:
        with self._cond:
            return self._depth > 0

    def owned(self, owner: str) -> bool:
        with self._cond:
            return self._depth > 0 and self._owner == owner

    def state(self) -> tuple[str | None, int]:
        """(holder, depth), for the client's repr."""
        with self._cond:
            return self._owner, self._depth


class _Condition:
    """Waiters in arrival order, each with an event; ``notify(n)`` wakes the first ``n``."""

    def __init__(self, lock: _OwnedLock) -> None:
        self.lock = lock
        self._mutex = threading.Lock()
        self._waiting: collections.OrderedDict[str, threading.Event] = collections.OrderedDict()
        self._events: dict[str, threading.Event] = {}

    def begin(self, owner: str) -> tuple[str, int]:
        """Join the waiters, then release the lock (in this order, so no notify is missed)."""
        if not self.lock.owned(owner):
            raise RuntimeError("cannot wait on un-acquired lock")
        token = uuid.uuid4().hex
        with self._mutex:
            self._waiting[token] = self._events[token] = threading.Event()
        return token, self.lock.release_all(owner)

    def poll(self, token: str, timeout: float) -> bool:
        return self._events[token].wait(timeout)

    def end(self, token: str) -> bool:
        """The waiter stops waiting; whether it was notified (atomic with notify, so a timed-out
        waiter never swallows a notification meant for another)."""
        with self._mutex:
            self._events.pop(token, None)
            return self._waiting.pop(token, None) is None

    def notify(self, owner: str, n: int) -> None:
        if not self.lock.owned(owner):
            raise RuntimeError("cannot notify on un-acquired lock")
        with self._mutex:
            for _ in range(min(n, len(self._waiting))):
                self._waiting.popitem(last=False)[1].set()


class _Barrier:
    """``threading.Barrier`` with the wait split into arrive / poll / give up.

    A generation passes when its last party arrives (after the action, run by that party); any
    generation still waiting when the barrier is aborted, a party times out or the action fails is
    broken, as is one cut short by ``reset``.
    """

    def __init__(self, parties: int) -> None:
        self.parties = parties
        self._cond = threading.Condition()
        self._generation = 0
        self._count = 0
        self._broken = False
        self._broken_generations: set[int] = set()

    def _state(self, generation: int) -> str:
        if generation in self._broken_generations:
            return "broken"
        return "passed" if generation < self._generation else "waiting"

    def _break(self) -> None:
        self._broken = True
        self._broken_generations.add(self._generation)
        self._cond.notify_all()

    def arrive(self) -> tuple[int, int, bool]:
        with self._cond:
            if self._broken:
                raise threading.BrokenBarrierError
            index = self._count
            self._count += 1
            return self._generation, index, self._count == self.parties

    def open(self, generation: int, action_ok: bool) -> None:
        """The last party ran the action: let the generation through (or break it)."""
        with self._cond:
            if generation != self._generation or self._broken:
                return
            if not action_ok:
                self._break()
                return
            self._generation += 1
            self._count = 0
            self._cond.notify_all()

    def poll(self, generation: int, timeout: float) -> str:
        with self._cond:
            self._cond.wait_for(lambda: self._state(generation) != "waiting", timeout)
            return self._state(generation)

    def give_up(self, generation: int) -> str:
        """A party's timeout ran out: the barrier breaks unless its generation passed meanwhile."""
        with self._cond:
            if self._state(generation) == "waiting":
                self._break()
            return self._state(generation)

    def abort(self) -> None:
        with self._cond:
            self._break()

    def reset(self) -> None:
        with self._cond:
            if self._count:
                self._broken_generations.add(self._generation)
            self._generation += 1
            self._count = 0
            self._broken = False
            self._cond.notify_all()

    def n_waiting(self) -> int:
        with self._cond:
            return 0 if self._broken else self._count

    def broken(self) -> bool:
        with self._cond:
            return self._broken


class _HubQueueMixin:
    """Sliced forms of the waits that have no timeout or cannot report partial progress."""

    def put_some(self, items: list[Any], timeout: float) -> int:
        """Put items in order, waiting up to ``timeout`` for room; how many were put."""
        put = 0
        end = time.monotonic() + timeout
        for item in items:
            try:
                self.put(item, timeout > 0, max(0.0, end - time.monotonic()) if timeout > 0 else None)  # type: ignore[attr-defined]
            except _stdlib_queue.Full:
                break
            put += 1
        return put

    def join_for(self, timeout: float) -> bool:
        with self._all_done:  # type: ignore[attr-defined]
            return self._all_done.wait_for(lambda: not self._unfinished, timeout)  # type: ignore[attr-defined]


class _HubQueue(_HubQueueMixin, LocalQueue):
    pass


class _HubLifoQueue(_HubQueueMixin, LocalLifoQueue):
    pass


class _HubPriorityQueue(_HubQueueMixin, LocalPriorityQueue):
    pass


class _Cell:
    """A shared value."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def get(self) -> Any:
        return self.value

    def set(self, value: Any) -> None:
        self.value = value


class _Container:
    """A shared dict, list or Namespace: the operations of the process backend's managed containers
    (one table, so every method means the same on both backends), each atomic under one lock."""

    def __init__(self, obj: Any) -> None:
        self._obj = obj
        self._mutex = threading.Lock()

    def apply(self, op: str, args: tuple[Any, ...]) -> bytes:
        """The result pickled under the lock: a copy, never a view of the live object."""
        with self._mutex:
            return serialize.dumps(OPS[op](self._obj, *args))


def _make_condition(hub: Hub, lock_key: str) -> _Condition:
    return _Condition(hub._object(lock_key))


_KINDS: dict[str, Callable[..., Any]] = {
    "lock": lambda hub: _OwnedLock(False),
    "rlock": lambda hub: _OwnedLock(True),
    "condition": _make_condition,
    "semaphore": lambda hub, value: threading.Semaphore(value),
    "bsemaphore": lambda hub, value: threading.BoundedSemaphore(value),
    "event": lambda hub: threading.Event(),
    "barrier": lambda hub, parties: _Barrier(parties),
    "queue": lambda hub, maxsize: _HubQueue(maxsize),
    "lifoqueue": lambda hub, maxsize: _HubLifoQueue(maxsize),
    "priorityqueue": lambda hub, maxsize: _HubPriorityQueue(maxsize),
    "value": lambda hub, value: _Cell(value),
    "container": lambda hub, obj: _Container(obj),
    "array": lambda hub, typecode, init: _Container(array.array(typecode, init)),
}


class Hub:
    """The actor that holds every object of one factory (run as a threaded Ray actor)."""

    def __init__(self) -> None:
        self.objects: dict[str, Any] = {}
        self._mutex = threading.Lock()

    def make(self, key: str, kind: str, args: tuple[Any, ...]) -> None:
        with self._mutex:
            if key not in self.objects:
                self.objects[key] = _KINDS[kind](self, *args)

    def drop(self, prefix: str) -> None:
        """Forget every object of a closed factory (their keys start with its prefix)."""
        with self._mutex:
            for key in [key for key in self.objects if key.startswith(prefix)]:
                del self.objects[key]

    def _object(self, key: str) -> Any:
        try:
            return self.objects[key]
        except KeyError:
            raise OwnerGoneError(f"this object ({key}) is gone: the context or pool that made it was "
                                 "closed") from None

    def attribute(self, key: str, name: str) -> Any:
        """An attribute of an object, e.g. a queue's ``is_shutdown``, a semaphore's ``_value``."""
        return getattr(self._object(key), name)

    def call(self, key: str, method: str, args: tuple[Any, ...]) -> tuple[bool, Any]:
        """``(True, result)`` or ``(False, the exception)``: the client raises it as itself."""
        try:
            return True, getattr(self._object(key), method)(*args)
        except BaseException as exc:  # noqa: BLE001 - the client's error to raise
            return False, exc


HubActor = ray.remote(Hub)
