"""The factory behind ``conveyor.context("process").Lock()``, ``.Queue()`` and friends."""

from __future__ import annotations

import sys
from typing import Any

from conveyor._backends.process import pthreads
from conveyor._backends.process.channel import ProcessQueue
from conveyor._backends.process.condition import ProcessBarrier, ProcessCondition
from conveyor._backends.process.ordered_queues import ProcessLifoQueue, ProcessPriorityQueue
from conveyor._backends.process.pipe import make_pipe
from conveyor._backends.process.sync import (
    ProcessBoundedSemaphore,
    ProcessEvent,
    ProcessLock,
    ProcessRLock,
    ProcessSemaphore,
)
from conveyor._backends.process.values import ProcessArray, ProcessValue
from conveyor._core.errors import unsupported


class ProcessPrimitives:
    """The factory behind ``conveyor.context("process").Lock()`` and friends."""

    def __init__(self) -> None:
        if not pthreads.available():
            raise unsupported(f"process-shared primitives on {sys.platform}", "process",
                              "they need Linux's robust POSIX mutexes; the thread backend's work here")

    def Lock(self) -> ProcessLock:  # noqa: N802 - the stdlib's names
        return ProcessLock()

    def RLock(self) -> ProcessRLock:  # noqa: N802
        return ProcessRLock()

    def Condition(self, lock: Any = None) -> ProcessCondition:  # noqa: N802
        return ProcessCondition(lock)

    def Semaphore(self, value: int = 1) -> ProcessSemaphore:  # noqa: N802
        return ProcessSemaphore(value)

    def BoundedSemaphore(self, value: int = 1) -> ProcessBoundedSemaphore:  # noqa: N802
        return ProcessBoundedSemaphore(value)

    def Event(self) -> ProcessEvent:  # noqa: N802
        return ProcessEvent()

    def Barrier(self, parties: int, action: Any = None, timeout: float | None = None) -> ProcessBarrier:  # noqa: N802
        return ProcessBarrier(parties, action, timeout)

    def Value(self, typecode_or_type: Any, value: Any = 0, lock: Any = True) -> ProcessValue:  # noqa: N802
        return ProcessValue(typecode_or_type, value, lock)

    def Array(self, typecode_or_type: Any, size_or_initializer: Any, lock: Any = True) -> ProcessArray:  # noqa: N802
        return ProcessArray(typecode_or_type, size_or_initializer, lock)

    def Queue(self, maxsize: int = 0) -> ProcessQueue:  # noqa: N802
        return ProcessQueue(maxsize)

    def dict(self, *args: Any, **kwargs: Any) -> Any:
        from conveyor._backends._shared import managed

        return managed.make_dict(*args, **kwargs)

    def list(self, iterable: Any = ()) -> Any:
        from conveyor._backends._shared import managed

        return managed.make_list(iterable)

    def Namespace(self, **attributes: Any) -> Any:  # noqa: N802
        from conveyor._backends._shared import managed

        return managed.make_namespace(**attributes)

    def Pipe(self, duplex: bool = True) -> tuple[Any, Any]:  # noqa: N802
        return make_pipe(duplex)

    def LifoQueue(self, maxsize: int = 0) -> ProcessLifoQueue:  # noqa: N802
        return ProcessLifoQueue(maxsize)

    def PriorityQueue(self, maxsize: int = 0) -> ProcessPriorityQueue:  # noqa: N802
        return ProcessPriorityQueue(maxsize)

    def SharedArray(self, shape: Any, dtype: Any = "float64", lock: bool = True) -> Any:  # noqa: N802
        from conveyor._core.arrays import SharedArray, plain_dtype

        dtype = plain_dtype(dtype)  # before the lock is made
        return SharedArray(shape, dtype, ProcessRLock() if lock else None)
