"""Synchronization and shared state for workers that share one process (thread and serial backends).

These are the stdlib's own objects (``threading`` locks, conditions, semaphores, events, barriers),
conveyor's in-process queues (stdlib semantics plus ``shutdown`` and batching), and ``Value``/``Array``
with the ``multiprocessing`` interface (``.value``, ``get_lock()``) guarded by a thread lock.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.sharedctypes
import threading
import types
from typing import Any, Callable, Iterable

from conveyor._backends._shared.queues import LocalLifoQueue, LocalPriorityQueue, LocalQueue


class LocalPrimitives:
    """The factory behind ``conveyor.context("thread").Lock()`` and friends."""

    def Lock(self) -> Any:  # noqa: N802 - the stdlib's names
        return threading.Lock()

    def RLock(self) -> Any:  # noqa: N802
        return threading.RLock()

    def Condition(self, lock: Any = None) -> threading.Condition:  # noqa: N802
        return threading.Condition(lock)

    def Semaphore(self, value: int = 1) -> threading.Semaphore:  # noqa: N802
        return threading.Semaphore(value)

    def BoundedSemaphore(self, value: int = 1) -> threading.BoundedSemaphore:  # noqa: N802
        return threading.BoundedSemaphore(value)

    def Event(self) -> threading.Event:  # noqa: N802
        return threading.Event()

    def Barrier(self, parties: int, action: Callable[[], Any] | None = None,  # noqa: N802
                timeout: float | None = None) -> threading.Barrier:
        return threading.Barrier(parties, action, timeout)

    def Queue(self, maxsize: int = 0) -> LocalQueue:  # noqa: N802
        return LocalQueue(maxsize)

    def LifoQueue(self, maxsize: int = 0) -> LocalLifoQueue:  # noqa: N802
        return LocalLifoQueue(maxsize)

    def PriorityQueue(self, maxsize: int = 0) -> LocalPriorityQueue:  # noqa: N802
        return LocalPriorityQueue(maxsize)

    def Pipe(self, duplex: bool = True) -> tuple[Any, Any]:  # noqa: N802
        return multiprocessing.Pipe(duplex)

    def SharedArray(self, shape: Any, dtype: Any = "float64", lock: bool = True) -> Any:  # noqa: N802
        from conveyor._core.arrays import SharedArray

        return SharedArray(shape, dtype, threading.RLock() if lock else None, in_process=True)

    def Value(self, typecode_or_type: Any, value: Any = 0, lock: Any = True) -> Any:  # noqa: N802
        guard: Any = threading.RLock() if lock is True else lock  # a lock, or False for none
        return multiprocessing.sharedctypes.Value(typecode_or_type, value, lock=guard)

    def Array(self, typecode_or_type: Any, size_or_initializer: Any, lock: Any = True) -> Any:  # noqa: N802
        guard: Any = threading.RLock() if lock is True else lock  # a lock, or False for none
        return multiprocessing.sharedctypes.Array(typecode_or_type, size_or_initializer, lock=guard)

    def dict(self, *args: Any, **kwargs: Any) -> dict[Any, Any]:
        return dict(*args, **kwargs)

    def list(self, iterable: Iterable[Any] = ()) -> list[Any]:
        return list(iterable)

    def Namespace(self, **attributes: Any) -> types.SimpleNamespace:  # noqa: N802
        return types.SimpleNamespace(**attributes)


class InProcess:
    """What a backend whose workers share this process (serial, thread) makes primitives with: the
    stdlib's threading objects and conveyor's local queues."""

    @classmethod
    def primitives(cls, config: Any) -> LocalPrimitives:
        return LocalPrimitives()
