"""``Queue``, ``LifoQueue`` and ``PriorityQueue`` on a Dask cluster, kept by the factory's hub actor.

The hub holds conveyor's in-process queue of the same kind (``_shared/queues.py``), so the semantics
are the thread backend's: ``queue.Queue`` plus ``shutdown`` and ``put_many``/``get_many``. Every
operation is one call to the hub (a ``put``, a ``get_many`` of many items, a ``qsize``); a blocked
one waits in the hub a slice at a time and is woken by the change it waits for. Items travel
pickled, and the caller pickles them, so an item that cannot be pickled fails at once with
:class:`~conveyor.PicklingError` naming it.
"""

from __future__ import annotations

import pickle
import queue as _stdlib_queue
import time
from typing import Any, Iterable

from conveyor._backends.dask.connection import TIMED_OUT, HubRef, OnHub
from conveyor._core import serialize
from conveyor._core.waiting import queue_timeout

_wait_of = queue_timeout
"""``queue.Queue``'s (block, timeout) as one wait: ``None`` for ever, ``0`` not at all."""


class DaskQueue(OnHub):
    """A first-in-first-out queue between the caller and any task of the cluster."""

    _holds = "queue"
    _kind = "Queue"
    order = "fifo"

    def __init__(self, hub: HubRef, maxsize: int = 0) -> None:
        self._create(hub, self.order, maxsize)
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
        if self._call("put", serialize.dumps([item]), timeout=_wait_of(block, timeout)) is TIMED_OUT:
            raise _stdlib_queue.Full

    def put_many(self, items: Iterable[Any], block: bool = True, timeout: float | None = None) -> None:
        """Put the items in their order, waiting for room as needed: one call puts all that fit.
        ``queue.Full`` if room runs out in time, ``ShutDown`` if the queue is shut down: either way,
        the items before that were put."""
        pending = list(items)
        wait = _wait_of(block, timeout)
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
        taken = self._call("get", max_items, timeout=_wait_of(block, timeout))
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


class DaskLifoQueue(DaskQueue):
    """Last in, first out."""

    _kind = "LifoQueue"
    order = "lifo"


class DaskPriorityQueue(DaskQueue):
    """Smallest item first (items are usually ``(priority, data)`` tuples)."""

    _kind = "PriorityQueue"
    order = "priority"
