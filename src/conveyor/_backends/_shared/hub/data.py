"""Queues, shared values, arrays and containers kept by a hub.

The queues are conveyor's in-process queues held by the hub (``_shared/queues.py``): ``queue.Queue``
plus ``shutdown`` and ``put_many``/``get_many``, each operation one call (a ``put_many`` of many
items, a ``get_many`` of what is there). Items travel pickled, and the caller pickles them, so an
item that cannot be pickled fails at once with :class:`~conveyor.PicklingError` naming it. Items
live in the hub's memory: keep them small, pass big data as task arguments.

``Value`` and ``Array`` hold ctypes values, so they convert (and refuse) as ``multiprocessing``'s
do, with ``get_lock()`` for read-modify-write. The containers keep the process backend's interface
(``DictProxy`` and friends: ``modify``, values as copies), each operation one atomic step.
"""

from __future__ import annotations

import contextlib
import pickle
import queue as _stdlib_queue
import time
from typing import Any, Callable, Iterable, Iterator

from conveyor._backends._shared.hub.objects import HubObject
from conveyor._backends._shared.hub.space import TIMED_OUT, Space
from conveyor._backends._shared.hub.sync import Lock
from conveyor._backends._shared.managed.proxies import DictProxy, ListProxy, NamespaceProxy
from conveyor._core import serialize
from conveyor._core.waiting import queue_timeout


class Queue(HubObject):
    """A first-in-first-out queue between the caller and any task of the cluster."""

    kind = "queue"
    order = "fifo"

    def __init__(self, space: Space, maxsize: int = 0) -> None:
        self._create(space, self.order, maxsize)
        self.maxsize = maxsize

    def _state(self) -> tuple[Any, ...]:
        return (self.maxsize,)

    def _restore(self, maxsize: int) -> None:
        self.maxsize = maxsize

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """Put an item, waiting for room in a bounded queue.

        Raises:
            queue.Full: no room in time (at once when ``block`` is false).
            ShutDown: the queue is shut down.
        """
        if self._call("put", serialize.dumps([item]), timeout=queue_timeout(block, timeout)) is TIMED_OUT:
            raise _stdlib_queue.Full

    def put_many(self, items: Iterable[Any], block: bool = True, timeout: float | None = None) -> None:
        """Put the items in their order, waiting for room as needed: one call puts all that fit.
        ``queue.Full`` if room runs out in time, ``ShutDown`` if the queue is shut down: either way,
        the items before that were put."""
        pending = list(items)
        wait = queue_timeout(block, timeout)
        end = None if wait is None else time.monotonic() + wait
        while pending:
            left = None if end is None else max(0.0, end - time.monotonic())
            put = self._call("put", serialize.dumps(pending), timeout=left)
            if put is TIMED_OUT:
                raise _stdlib_queue.Full
            del pending[:put]

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Take the next item, waiting for one.

        Raises:
            queue.Empty: nothing in time (at once when ``block`` is false).
            ShutDown: the queue is shut down and empty.
        """
        return self._take(1, block, timeout)[0]

    def get_many(self, max_items: int, block: bool = True, timeout: float | None = None) -> list[Any]:
        """Wait for the first item, then take up to ``max_items`` of what is there (one call)."""
        if max_items < 1:
            raise ValueError(f"max_items must be >= 1, got {max_items}")
        return self._take(max_items, block, timeout)

    def _take(self, max_items: int, block: bool, timeout: float | None) -> list[Any]:
        taken = self._call("get", max_items, timeout=queue_timeout(block, timeout))
        if taken is TIMED_OUT:
            raise _stdlib_queue.Empty
        return pickle.loads(taken)  # type: ignore[no-any-return]

    def task_done(self) -> None:
        """Mark one item taken by ``get`` as processed (for ``join``)."""
        self._call("task_done")

    def join(self) -> None:
        """Wait until every item put has been marked done."""
        self._call("join", timeout=None)

    def shutdown(self, immediate: bool = False) -> None:
        """Refuse new items; consumers drain what is left, then ``get`` raises ShutDown.
        ``immediate`` also drops what is waiting (it counts as done for ``join``)."""
        self._call("shutdown", immediate)

    def put_nowait(self, item: Any) -> None:
        self.put(item, block=False)

    def get_nowait(self) -> Any:
        return self.get(block=False)

    def qsize(self) -> int:
        return int(self._call("sizes")[0])

    def empty(self) -> bool:
        return self.qsize() == 0

    def full(self) -> bool:
        return bool(self._call("sizes")[1])

    @property
    def is_shutdown(self) -> bool:
        return bool(self._call("sizes")[2])


class LifoQueue(Queue):
    """Last in, first out."""

    order = "lifo"


class PriorityQueue(Queue):
    """Smallest item first (items are usually ``(priority, data)`` tuples)."""

    order = "priority"


def guard(space: Space, lock: Any) -> Lock | None:
    """A value's or array's lock: a new RLock of the hub for ``True``, none for ``False``."""
    from conveyor._backends._shared.hub.sync import RLock

    if lock is True:
        return RLock(space)
    if lock is False or lock is None:
        return None
    if not isinstance(lock, Lock):
        raise TypeError(f"lock must be True, False or a lock made by a {space.engine} context or pool")
    return lock


class _Guarded:
    """``get_lock()`` as ``multiprocessing``'s synchronized values have it."""

    _lock: Any

    def get_lock(self) -> Any:
        if self._lock is None:
            raise AttributeError(f"this {type(self).__name__} was made with lock=False")
        return self._lock


class Value(_Guarded, HubObject):
    """``multiprocessing.Value`` kept by the hub: ``.value`` is one call to read or write.

    ``counter.value += 1`` is a read and a write: hold ``get_lock()`` around it, as with
    ``multiprocessing``.
    """

    kind = "value"

    def __init__(self, space: Space, typecode_or_type: Any, value: Any = 0, lock: Any = True) -> None:
        self._lock = guard(space, lock)
        self._create(space, typecode_or_type, value)
        self._typecode = typecode_or_type

    def _state(self) -> tuple[Any, ...]:
        return (self._typecode, self._lock)

    def _restore(self, typecode: Any, lock: Any) -> None:
        self._typecode, self._lock = typecode, lock

    @property
    def value(self) -> Any:
        return self._call("get")

    @value.setter
    def value(self, new: Any) -> None:
        self._call("set", new)

    def get_obj(self) -> Any:
        return self.value


class Array(_Guarded, HubObject):
    """``multiprocessing.Array`` kept by the hub: indexing and slicing are one call each (a slice
    reads as a list, as from ``multiprocessing``); ``len()`` is known locally."""

    kind = "array"

    def __init__(self, space: Space, typecode_or_type: Any, size_or_initializer: Any, lock: Any = True) -> None:
        if not isinstance(size_or_initializer, int):
            size_or_initializer = list(size_or_initializer)
        self._lock = guard(space, lock)
        self._create(space, typecode_or_type, size_or_initializer)
        length = size_or_initializer if isinstance(size_or_initializer, int) else len(size_or_initializer)
        self._typecode, self._length = typecode_or_type, length

    def _state(self) -> tuple[Any, ...]:
        return (self._typecode, self._length, self._lock)

    def _restore(self, typecode_or_type: Any, length: int, lock: Any) -> None:
        self._typecode, self._length, self._lock = typecode_or_type, length, lock

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: Any) -> Any:
        return self._call("getitem", index)

    def __setitem__(self, index: Any, value: Any) -> None:
        if isinstance(index, slice):
            value = list(value)
        self._call("setitem", index, value)

    def __iter__(self) -> Iterator[Any]:
        return iter(self[:])

    def get_obj(self) -> list[Any]:
        return self[:]  # type: ignore[no-any-return]


class _Contained(HubObject):
    """The transport of a shared container: each of the process backend's proxy operations is one
    hub call (arguments and results pickled here and in the hub, so they are copies)."""

    kind = "container"

    def _call(self, op: str, *args: Any, timeout: float | None = 0.0,  # noqa: ARG002
              undo: tuple[str, tuple[Any, ...]] | None = None) -> Any:  # (HubObject's signature)
        return pickle.loads(self._space.call(self._key, "apply", (op, serialize.dumps(args))))

    def _repr_of(self, fetch: Callable[[], str]) -> str:
        with contextlib.suppress(Exception):  # a repr must not raise (it is used in error messages)
            return fetch()
        return f"<{type(self).__name__} {self._key.rpartition('/')[2]} (unreachable)>"

    def __repr__(self) -> str:
        return super(HubObject, self).__repr__()  # the proxy's: its contents


class Dict(_Contained, DictProxy):
    """A ``dict`` kept by the hub, with the process backend's ``DictProxy`` interface."""

    _kind = "dict"


class List(_Contained, ListProxy):
    """A ``list`` kept by the hub, with the process backend's ``ListProxy`` interface."""

    _kind = "list"


class Namespace(_Contained, NamespaceProxy):
    """Attributes kept by the hub, with the process backend's ``NamespaceProxy`` interface."""

    _kind = "Namespace"


def make_container(cls: type[_Contained], space: Space, value: Any) -> Any:
    """A new shared container of ``cls`` holding ``value`` (the proxies refuse ``__init__``)."""
    obj = object.__new__(cls)
    obj._create(space, serialize.dumps(value))
    return obj


__all__ = ["Array", "Dict", "LifoQueue", "List", "Namespace", "PriorityQueue", "Queue", "Value",
           "make_container"]
