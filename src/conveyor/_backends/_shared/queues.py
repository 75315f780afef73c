"""Queues for workers that share one process (the thread and serial backends).

The semantics are those of ``queue.Queue`` — ``put``/``get`` with ``block`` and ``timeout``,
``put_nowait``/``get_nowait``, ``task_done``/``join``, ``qsize``/``empty``/``full`` — plus:

- ``shutdown(immediate=False)`` as in Python 3.13, on every Python: later ``put`` calls raise
  :class:`~conveyor.ShutDown`; consumers drain what is left, then ``get`` raises ``ShutDown``; blocked
  producers and consumers wake up at once. ``immediate=True`` also drops what is left (and counts it
  as done for ``join``). So a producer/consumer program ends without sentinel values.
- ``put_many(items)`` / ``get_many(max_items)``: one lock round trip for many items.

``Full`` and ``Empty`` are the stdlib's ``queue.Full`` and ``queue.Empty``.
"""

from __future__ import annotations

import collections
import heapq
import queue as _stdlib_queue
import threading
import time
from typing import Any, Iterable

from conveyor._core.errors import ShutDown
from conveyor._core.waiting import queue_timeout

Full = _stdlib_queue.Full
Empty = _stdlib_queue.Empty

_SLICE = 0.1
"""Untimed waits wake this often, so that an exception raised into a waiting thread (a TaskGroup's
``terminate()``) is seen within a slice: a thread blocked in C code would see it only when woken."""


class LocalQueue:
    """A first-in-first-out queue between threads of one process.

    Args:
        maxsize: at most this many items wait in the queue; ``<= 0`` means no limit.
    """

    def __init__(self, maxsize: int = 0) -> None:
        self.maxsize = maxsize
        self._init()
        self._mutex = threading.Lock()
        self._not_empty = threading.Condition(self._mutex)
        self._not_full = threading.Condition(self._mutex)
        self._all_done = threading.Condition(self._mutex)
        self._unfinished = 0
        self._shut = False

    # -- storage (overridden by LIFO and priority queues) --------------------------------------------
    def _init(self) -> None:
        self._items: Any = collections.deque()

    def _put(self, item: Any) -> None:
        self._items.append(item)

    def _get(self) -> Any:
        return self._items.popleft()

    def _size(self) -> int:
        return len(self._items)

    # -- the queue.Queue interface -------------------------------------------------------------------
    def qsize(self) -> int:
        with self._mutex:
            return self._size()

    def empty(self) -> bool:
        with self._mutex:
            return not self._size()

    def full(self) -> bool:
        with self._mutex:
            return 0 < self.maxsize <= self._size()

    def _wait(self, condition: threading.Condition, ready: Any, block: bool, timeout: float | None,
              empty_error: type[Exception]) -> None:
        """Wait (with the mutex held) until ``ready()``; ShutDown and Full/Empty as the stdlib says."""
        timeout = queue_timeout(block, timeout)
        if not block:
            if not ready():
                raise empty_error
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        while not ready():
            if self._shut:
                raise ShutDown("the queue is shut down")
            if deadline is None:
                condition.wait(_SLICE)
            else:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise empty_error
                condition.wait(remaining)

    def _has_room(self) -> bool:
        return self._shut or self.maxsize <= 0 or self._size() < self.maxsize

    def _has_item(self) -> bool:
        return bool(self._size())

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """Put an item, waiting for room if the queue is bounded and full.

        Raises:
            queue.Full: no room in time (or at once when ``block`` is false).
            ShutDown: the queue is shut down.
        """
        with self._not_full:
            if self._shut:
                raise ShutDown("the queue is shut down")
            self._wait(self._not_full, self._has_room, block, timeout, Full)
            if self._shut:
                raise ShutDown("the queue is shut down")
            self._put(item)
            self._unfinished += 1
            self._not_empty.notify()

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Take the next item, waiting for one.

        Raises:
            queue.Empty: nothing in time (or at once when ``block`` is false).
            ShutDown: the queue is shut down and empty.
        """
        with self._not_empty:
            if self._shut and not self._size():
                raise ShutDown("the queue is shut down and empty")
            self._wait(self._not_empty, self._has_item, block, timeout, Empty)
            item = self._get()
            self._not_full.notify()
            return item

    def put_nowait(self, item: Any) -> None:
        self.put(item, block=False)

    def get_nowait(self) -> Any:
        return self.get(block=False)

    def put_many(self, items: Iterable[Any], block: bool = True, timeout: float | None = None) -> None:
        """Put every item in order, waiting for room as needed (one lock round trip when there is room).

        Raises:
            queue.Full: room ran out in time; the items before were put.
            ShutDown: the queue is shut down; the items before were put.
        """
        queue_timeout(block, timeout)  # as put() says, before waiting
        pending = collections.deque(items)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._not_full:
            while pending:
                if self._shut:
                    raise ShutDown("the queue is shut down")
                remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
                self._wait(self._not_full, self._has_room, block, remaining, Full)
                if self._shut:
                    raise ShutDown("the queue is shut down")
                room = len(pending) if self.maxsize <= 0 else self.maxsize - self._size()
                for _ in range(min(room, len(pending))):
                    self._put(pending.popleft())
                    self._unfinished += 1
                self._not_empty.notify_all()

    def get_many(self, max_items: int, block: bool = True, timeout: float | None = None) -> list[Any]:
        """Take between 1 and ``max_items`` items: waits for the first, then takes what is there.

        Raises:
            queue.Empty: nothing in time (or at once when ``block`` is false).
            ShutDown: the queue is shut down and empty.
        """
        if max_items < 1:
            raise ValueError(f"max_items must be >= 1, got {max_items}")
        with self._not_empty:
            if self._shut and not self._size():
                raise ShutDown("the queue is shut down and empty")
            self._wait(self._not_empty, self._has_item, block, timeout, Empty)
            items = [self._get() for _ in range(min(max_items, self._size()))]
            self._not_full.notify_all()
            return items

    def task_done(self) -> None:
        """Mark one item taken by ``get`` as processed (for ``join``)."""
        with self._all_done:
            if self._unfinished <= 0:
                raise ValueError("task_done() called too many times")
            self._unfinished -= 1
            if self._unfinished == 0:
                self._all_done.notify_all()

    def join(self) -> None:
        """Wait until every item put has been marked done."""
        with self._all_done:
            while self._unfinished:
                self._all_done.wait(_SLICE)

    def shutdown(self, immediate: bool = False) -> None:
        """Refuse new items; wake everyone blocked. ``immediate`` also drops what is waiting."""
        with self._mutex:
            self._shut = True
            if immediate:
                while self._size():
                    self._get()
                    if self._unfinished > 0:
                        self._unfinished -= 1
                self._all_done.notify_all()
            self._not_empty.notify_all()
            self._not_full.notify_all()

    @property
    def is_shutdown(self) -> bool:
        return self._shut

    @property
    def unfinished_tasks(self) -> int:
        """Items put and not yet marked done with ``task_done`` (the name ``queue.Queue`` uses)."""
        with self._mutex:
            return self._unfinished

    def __repr__(self) -> str:
        return f"<{type(self).__name__} size={self.qsize()} maxsize={self.maxsize}{' shut down' if self._shut else ''}>"


class LocalLifoQueue(LocalQueue):
    """Last in, first out."""

    def _init(self) -> None:
        self._items = []

    def _get(self) -> Any:
        return self._items.pop()


class LocalPriorityQueue(LocalQueue):
    """Smallest item first (items are usually ``(priority, data)`` tuples)."""

    def _init(self) -> None:
        self._items = []

    def _put(self, item: Any) -> None:
        heapq.heappush(self._items, item)

    def _get(self) -> Any:
        return heapq.heappop(self._items)
