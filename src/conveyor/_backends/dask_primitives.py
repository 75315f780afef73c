"""Locks, semaphores, events, queues and shared values that live on a Dask cluster's scheduler.

They are built on Dask's own coordination primitives (``distributed.Lock``, ``Queue``, ``Event``,
``Variable``), not on a side channel: every operation is a round trip to the scheduler, so they work
between the caller and any task on the cluster, wherever its worker runs. Each pickles by name and
is rebuilt in a task with that task's Dask client. Semantics are the stdlib's, with the differences
in ``docs/clusters.md`` (a lock is released by the object that acquired it; a holder that dies frees
its lock after Dask's lease timeout instead of raising ``OwnerDiedError``).
"""

from __future__ import annotations

import queue as _stdlib_queue
import threading
import time
import uuid
import weakref
from typing import Any, Iterable

import distributed

from conveyor._core.errors import ShutDown
from conveyor._core.waiting import wait_for

_SLICE_SECONDS = 0.1
_objects: weakref.WeakValueDictionary[tuple[type, str], Any] = weakref.WeakValueDictionary()
_objects_lock = threading.Lock()


def _rebuild(cls: type, name: str, args: tuple[Any, ...]) -> Any:
    """The object of that name (one per name per process). Dask unpickles a task's arguments before
    the task runs, where there is no client yet: the object connects on first use, with the client of
    the task that uses it."""
    with _objects_lock:
        existing = _objects.get((cls, name))
        if existing is None:
            existing = cls.__new__(cls)
            existing.__dict__.update(name=name, _lazy=args)
            _objects[(cls, name)] = existing
        return existing


def _timeout_of(blocking: bool, timeout: float | None) -> float | None:
    """The stdlib's (blocking, timeout) as one timeout: None waits for ever, 0 does not wait."""
    if not blocking:
        if timeout not in (None, -1):
            raise ValueError("can't specify a timeout for a non-blocking call")
        return 0.0
    if timeout is None or timeout == -1:
        return None
    if timeout < 0:
        raise ValueError("timeout value must be a non-negative number")
    return timeout


class _Named:
    """Pickles by name; rebuilt with the receiving task's client."""

    kind = "object"
    name: str

    def __getattr__(self, attribute: str) -> Any:
        # Only for what is not set yet: a rebuilt object connects on first use (see _rebuild).
        lazy = self.__dict__.pop("_lazy", None)
        if lazy is None:
            raise AttributeError(attribute)
        type(self).__init__(self, *lazy, _name=self.__dict__["name"], _client=distributed.get_client())
        return getattr(self, attribute)

    def _register(self, name: str | None) -> str:
        name = name or f"conveyor-{self.kind}-{uuid.uuid4().hex}"
        with _objects_lock:
            _objects.setdefault((type(self), name), self)
        return name

    def _args(self) -> tuple[Any, ...]:
        return ()

    def __reduce__(self) -> Any:
        return (_rebuild, (type(self), self.name, self._args()))

    def __repr__(self) -> str:
        return f"<conveyor dask {type(self).__name__} {self.name}>"


class DaskLock(_Named):
    """``threading.Lock`` semantics on the cluster (released by the object that acquired it)."""

    kind = "lock"

    def __init__(self, *, _name: str | None = None, _client: Any) -> None:
        self.name = self._register(_name)
        self._lock = distributed.Lock(self.name, scheduler_rpc=_client.scheduler, loop=_client.loop)

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        wait = _timeout_of(blocking, timeout)
        if wait == 0.0:
            return bool(self._lock.acquire(blocking=False))
        return bool(self._lock.acquire(blocking=True, timeout=wait))

    def release(self) -> None:
        try:
            self._lock.release()
        except (RuntimeError, ValueError) as exc:
            raise RuntimeError("release unlocked lock") from exc

    def locked(self) -> bool:
        if self._lock.locked():
            return True
        if self._lock.acquire(blocking=False):
            self._lock.release()
            return False
        return True

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


class DaskRLock(DaskLock):
    """``threading.RLock`` semantics: the holding thread of the holding process may acquire again."""

    kind = "rlock"

    def __init__(self, *, _name: str | None = None, _client: Any) -> None:
        super().__init__(_name=_name, _client=_client)
        self._owner: int | None = None
        self._depth = 0

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        me = threading.get_ident()
        if self._owner == me:
            self._depth += 1
            return True
        if not super().acquire(blocking, timeout):
            return False
        self._owner, self._depth = me, 1
        return True

    def release(self) -> None:
        if self._owner != threading.get_ident():
            raise RuntimeError("cannot release un-acquired lock")
        self._depth -= 1
        if self._depth == 0:
            self._owner = None
            super().release()


class DaskSemaphore(_Named):
    """``threading.Semaphore`` on the cluster: tokens in a Dask queue (any process may release)."""

    kind = "semaphore"

    def __init__(self, value: int = 1, *, _name: str | None = None, _client: Any) -> None:
        if value < 0:
            raise ValueError("semaphore initial value must be >= 0")
        created = _name is None
        self.name = self._register(_name)
        self._tokens = distributed.Queue(self.name, client=_client)
        self._bound: int | None = None
        self._guard: DaskLock | None = None
        if created:
            for _ in range(value):
                self._tokens.put(1)

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        if not blocking and timeout is not None:
            raise ValueError("can't specify timeout for non-blocking acquire")
        wait = 0.0 if not blocking else timeout
        if wait is not None and wait < 0:
            raise ValueError("timeout value must be a non-negative number")
        try:
            if wait == 0.0:
                if not self._tokens.qsize():
                    return False
                self._tokens.get(timeout=_SLICE_SECONDS)
            else:
                self._tokens.get(timeout=wait)
        except TimeoutError:
            return False
        return True

    def release(self, n: int = 1) -> None:
        if n < 1:
            raise ValueError("n must be one or more")
        for _ in range(n):
            self._tokens.put(1)

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


class DaskBoundedSemaphore(DaskSemaphore):
    """A semaphore whose over-release raises ValueError (checked under a cluster lock)."""

    kind = "bsemaphore"

    def __init__(self, value: int = 1, *, _name: str | None = None, _client: Any) -> None:
        super().__init__(value, _name=_name, _client=_client)
        self._bound = value
        self._guard = DaskLock(_name=f"{self.name}-guard", _client=_client)

    def _args(self) -> tuple[Any, ...]:
        return (self._bound,)

    def release(self, n: int = 1) -> None:
        if n < 1:
            raise ValueError("n must be one or more")
        assert self._guard is not None and self._bound is not None
        with self._guard:
            if self._tokens.qsize() + n > self._bound:
                raise ValueError("Semaphore released too many times")
            super().release(n)


class DaskEvent(_Named):
    """``threading.Event`` on the cluster."""

    kind = "event"

    def __init__(self, *, _name: str | None = None, _client: Any) -> None:
        self.name = self._register(_name)
        self._event = distributed.Event(self.name, client=_client)

    def is_set(self) -> bool:
        return bool(self._event.is_set())

    def set(self) -> None:
        self._event.set()

    def clear(self) -> None:
        self._event.clear()

    def wait(self, timeout: float | None = None) -> bool:
        return bool(self._event.wait(timeout))


class DaskQueue(_Named):
    """``queue.Queue`` semantics on the cluster, with ``shutdown`` and ``put_many``/``get_many``.

    Items are stored by Dask's scheduler (keep them small; pass big data as arguments instead).
    """

    kind = "queue"

    def __init__(self, maxsize: int = 0, *, _name: str | None = None, _client: Any) -> None:
        self.name = self._register(_name)
        self.maxsize = maxsize
        self._items = distributed.Queue(self.name, client=_client, maxsize=max(0, maxsize))
        self._shut = distributed.Variable(f"{self.name}-shut", client=_client)

    def _args(self) -> tuple[Any, ...]:
        return (self.maxsize,)

    @property
    def is_shutdown(self) -> bool:
        try:
            return bool(self._shut.get(timeout=_SLICE_SECONDS))
        except TimeoutError:
            return False  # never set

    def shutdown(self, immediate: bool = False) -> None:
        """Refuse new items; consumers drain what is left, then ``get`` raises ShutDown."""
        self._shut.set(True)
        if immediate:
            while self._items.qsize():
                try:
                    self._items.get(timeout=_SLICE_SECONDS)
                except TimeoutError:
                    break

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if self.is_shutdown:
            raise ShutDown("the queue is shut down")
        wait = 0.0 if not block else timeout
        if wait is not None and wait < 0:
            raise ValueError("'timeout' must be a non-negative number")
        if wait == 0.0 and self.full():
            raise _stdlib_queue.Full
        try:
            self._items.put(item, timeout=wait if wait != 0.0 else _SLICE_SECONDS)
        except TimeoutError:
            raise _stdlib_queue.Full from None

    def put_nowait(self, item: Any) -> None:
        self.put(item, block=False)

    def put_many(self, items: Iterable[Any], block: bool = True, timeout: float | None = None) -> None:
        for item in items:
            self.put(item, block, timeout)

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        if timeout is not None and block and timeout < 0:
            raise ValueError("'timeout' must be a non-negative number")
        end = None if (timeout is None or not block) else time.monotonic() + timeout
        while True:
            try:
                return self._items.get(timeout=_SLICE_SECONDS)
            except TimeoutError:
                pass
            if self.is_shutdown and not self._items.qsize():
                raise ShutDown("the queue is shut down and empty")
            if not block or (end is not None and time.monotonic() >= end):
                raise _stdlib_queue.Empty from None

    def get_nowait(self) -> Any:
        return self.get(block=False)

    def get_many(self, max_items: int, block: bool = True, timeout: float | None = None) -> list[Any]:
        """Wait for the first item, then take up to ``max_items`` of what is there."""
        if max_items < 1:
            raise ValueError(f"max_items must be >= 1, got {max_items}")
        taken = [self.get(block, timeout)]
        while len(taken) < max_items and self._items.qsize():
            try:
                taken.append(self._items.get(timeout=_SLICE_SECONDS))
            except TimeoutError:
                break
        return taken

    def qsize(self) -> int:
        return int(self._items.qsize())

    def empty(self) -> bool:
        return self.qsize() == 0

    def full(self) -> bool:
        return 0 < self.maxsize <= self.qsize()

    def task_done(self) -> None:
        raise NotImplementedError("task_done()/join() are not available on the dask backend yet")

    join = task_done


class DaskValue(_Named):
    """``multiprocessing.Value``-like: ``.value`` in a Dask variable, ``get_lock()`` for read-modify-write."""

    kind = "value"

    def __init__(self, typecode_or_type: Any, value: Any = 0, lock: Any = True, *, _name: str | None = None,
                 _client: Any) -> None:
        created = _name is None
        self.name = self._register(_name)
        self._typecode = typecode_or_type
        self._variable = distributed.Variable(self.name, client=_client)
        self._lock = DaskRLock(_name=f"{self.name}-lock", _client=_client) if lock is True else lock
        if created:
            self._variable.set(value)

    def _args(self) -> tuple[Any, ...]:
        return (self._typecode, 0, self._lock if self._lock is not None and self._lock is not True else True)

    @property
    def value(self) -> Any:
        return self._variable.get()

    @value.setter
    def value(self, new: Any) -> None:
        self._variable.set(new)

    def get_lock(self) -> Any:
        if not self._lock:
            raise AttributeError("this Value was made with lock=False")
        return self._lock


class DaskCondition(_Named):
    """``threading.Condition`` on the cluster, around a Dask ``Lock`` or ``RLock``.

    Each waiter parks on an event of its own, named in a queue of waiters; ``notify(n)`` sets the
    events of the first ``n`` that are still waiting. A waiter that timed out marks itself gone, and
    a notify that reaches it passes on to the next (so a timed-out waiter never swallows a notify;
    when a timeout and a notify cross, one extra waiter may wake, which ``wait_for`` absorbs).
    """

    kind = "condition"

    def __init__(self, lock: Any = None, *, _name: str | None = None, _client: Any) -> None:
        self.name = self._register(_name)
        self._client = _client
        if lock is None:
            lock = DaskRLock(_client=_client)
        if not isinstance(lock, DaskLock):
            raise TypeError("a dask Condition needs a lock made by the same context (ctx.Lock() or ctx.RLock())")
        self._lock = lock
        self._waiters = distributed.Queue(f"{self.name}-waiters", client=_client)

    def _args(self) -> tuple[Any, ...]:
        return (self._lock,)

    def acquire(self, *args: Any) -> bool:
        return self._lock.acquire(*args)

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> bool:
        return self._lock.__enter__()

    def __exit__(self, *exc: Any) -> None:
        self._lock.__exit__(*exc)

    def _owned(self) -> bool:
        lock = self._lock
        if isinstance(lock, DaskRLock):
            return lock._owner == threading.get_ident()
        return bool(lock._lock.locked())

    def wait(self, timeout: float | None = None) -> bool:
        if not self._owned():
            raise RuntimeError("cannot wait on un-acquired lock")
        name = f"{self.name}-waiter-{uuid.uuid4().hex}"
        event = distributed.Event(name, client=self._client)
        self._waiters.put(name)
        depth = 1
        if isinstance(self._lock, DaskRLock):
            depth, self._lock._depth = self._lock._depth, 1
        self._lock.release()
        try:
            woken = bool(event.wait(timeout))
            if not woken:
                distributed.Variable(f"{name}-gone", client=self._client).set(True)
                woken = bool(event.is_set())  # a notify that crossed the timeout still counts
        finally:
            self._lock.acquire()
            if isinstance(self._lock, DaskRLock):
                self._lock._depth = depth
        return woken

    def wait_for(self, predicate: Any, timeout: float | None = None) -> Any:
        return wait_for(self.wait, predicate, timeout)

    def notify(self, n: int = 1) -> None:
        if not self._owned():
            raise RuntimeError("cannot notify on un-acquired lock")
        woken = 0
        while woken < n and self._waiters.qsize():
            try:
                name = self._waiters.get(timeout=_SLICE_SECONDS)
            except TimeoutError:
                break
            distributed.Event(name, client=self._client).set()
            try:
                gone = distributed.Variable(f"{name}-gone", client=self._client).get(timeout=0.01)
            except TimeoutError:
                gone = False
            if not gone:
                woken += 1

    def notify_all(self) -> None:
        self.notify(1 << 30)


class DaskBarrier(_Named):
    """``threading.Barrier`` on the cluster: a shared state under a Dask lock, one event per generation.

    A party that times out breaks the barrier for the others, as in the stdlib.
    """

    kind = "barrier"

    def __init__(self, parties: int, action: Any = None, timeout: float | None = None, *,
                 _name: str | None = None, _client: Any) -> None:
        if parties < 1:
            raise ValueError("parties must be >= 1")
        created = _name is None
        self.name = self._register(_name)
        self._client = _client
        self.parties = parties
        self._action = action
        self._timeout = timeout
        self._guard = DaskLock(_name=f"{self.name}-guard", _client=_client)
        self._state = distributed.Variable(f"{self.name}-state", client=_client)
        if created:
            self._state.set({"count": 0, "generation": 0, "broken": False, "reset_of": -1})

    def _args(self) -> tuple[Any, ...]:
        return (self.parties, self._action, self._timeout)

    def _event(self, generation: int) -> Any:
        return distributed.Event(f"{self.name}-generation-{generation}", client=self._client)

    def wait(self, timeout: float | None = None) -> int:
        if timeout is None:
            timeout = self._timeout
        with self._guard:
            state = self._state.get()
            if state["broken"]:
                raise threading.BrokenBarrierError
            generation, index = state["generation"], state["count"]
            if index + 1 == self.parties:
                if self._action is not None:
                    try:
                        self._action()
                    except BaseException:
                        self._state.set({**state, "broken": True})
                        self._event(generation).set()
                        raise
                self._state.set({**state, "count": 0, "generation": generation + 1})
                self._event(generation).set()
                return index
            self._state.set({**state, "count": index + 1})
        if not self._event(generation).wait(timeout):
            with self._guard:
                state = self._state.get()
                if state["generation"] == generation:
                    self._state.set({**state, "broken": True})
                    self._event(generation).set()
            raise threading.BrokenBarrierError
        state = self._state.get()
        if (state["broken"] and state["generation"] == generation) or state["reset_of"] == generation:
            raise threading.BrokenBarrierError
        return index

    def abort(self) -> None:
        with self._guard:
            state = self._state.get()
            self._state.set({**state, "broken": True})
            self._event(state["generation"]).set()

    def reset(self) -> None:
        with self._guard:
            state = self._state.get()
            generation = state["generation"]
            self._state.set({"count": 0, "generation": generation + 1, "broken": False,
                             "reset_of": generation if state["count"] else state["reset_of"]})
            self._event(generation).set()

    @property
    def n_waiting(self) -> int:
        state = self._state.get()
        return 0 if state["broken"] else int(state["count"])

    @property
    def broken(self) -> bool:
        return bool(self._state.get()["broken"])


class DaskPrimitives:
    """The factory behind ``conveyor.context("dask").Lock()`` and ``pool.Queue()`` on Dask."""

    def __init__(self, client: Any, owns_client: bool = False) -> None:
        self._client = client
        self._owns_client = owns_client

    def close(self) -> None:
        """Close the client this factory opened (a context's; a pool's is the pool's to close)."""
        if self._owns_client:
            self._client.close()

    def Lock(self) -> DaskLock:  # noqa: N802 - the stdlib's names
        return DaskLock(_client=self._client)

    def RLock(self) -> DaskRLock:  # noqa: N802
        return DaskRLock(_client=self._client)

    def Semaphore(self, value: int = 1) -> DaskSemaphore:  # noqa: N802
        return DaskSemaphore(value, _client=self._client)

    def BoundedSemaphore(self, value: int = 1) -> DaskBoundedSemaphore:  # noqa: N802
        return DaskBoundedSemaphore(value, _client=self._client)

    def Event(self) -> DaskEvent:  # noqa: N802
        return DaskEvent(_client=self._client)

    def Condition(self, lock: Any = None) -> DaskCondition:  # noqa: N802
        return DaskCondition(lock, _client=self._client)

    def Barrier(self, parties: int, action: Any = None, timeout: float | None = None) -> DaskBarrier:  # noqa: N802
        return DaskBarrier(parties, action, timeout, _client=self._client)

    def Queue(self, maxsize: int = 0) -> DaskQueue:  # noqa: N802
        return DaskQueue(maxsize, _client=self._client)

    def Value(self, typecode_or_type: Any, value: Any = 0, lock: Any = True) -> DaskValue:  # noqa: N802
        return DaskValue(typecode_or_type, value, lock, _client=self._client)

    def __getattr__(self, name: str) -> Any:
        if name in {"LifoQueue", "PriorityQueue", "Pipe", "Array", "dict", "list",
                    "Namespace"}:
            def missing(*_: Any, **__: Any) -> Any:
                raise NotImplementedError(f"{name} is not available on the dask backend yet")
            return missing
        raise AttributeError(name)
