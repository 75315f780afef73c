"""Running a batch inside this process: the shared loop of the serial and thread backends.

Exceptions stay the very objects the task raised (with their tracebacks); nothing is pickled. Also
the worker finalizer, which every backend (the process worker included) runs in the worker itself.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from conveyor._core.coroutines import is_coroutines
from conveyor._core.errors import TaskTimeoutError
from conveyor._core.serialize import short_name
from conveyor.abc import Batch, CallKind

Call = Callable[[Callable[..., Any], Any], Any]

CALLERS: dict[CallKind, Call] = {
    CallKind.ONE: lambda fn, item: fn(item),
    CallKind.STAR: lambda fn, item: fn(*item),
    CallKind.FULL: lambda fn, item: fn(*item[0], **item[1]),
}


def run_finalizer(finalizer: Callable[..., Any] | None, finalargs: tuple[Any, ...],
                  propagate: tuple[type[BaseException], ...] = ()) -> None:
    """Call the worker finalizer, if any; what it raises is logged as a warning, never raised.

    A failing finalizer must not turn a worker's clean end into an error. ``propagate``: exception types
    re-raised instead (KeyboardInterrupt when it runs in the caller's own thread).
    """
    if finalizer is None:
        return
    try:
        finalizer(*finalargs)
    except BaseException as exc:  # noqa: BLE001 - logged; the worker ends cleanly anyway
        if propagate and isinstance(exc, propagate):
            raise
        import logging  # here: the fork server preloads this module, and a worker rarely logs

        logging.getLogger("conveyor").warning("the worker finalizer %s raised %r; ignored",
                                              short_name(finalizer), exc, exc_info=exc)


def timeout_error(batch: Batch, position: int, elapsed: float) -> TaskTimeoutError:
    return TaskTimeoutError(
        f"task #{batch.indices[position]} ran for {elapsed:.3f}s, over its task_timeout of {batch.timeout}s"
    )


class BatchRun:
    """The state of one batch being run by one thread; readable by a watchdog thread.

    ``position`` and ``started`` tell which item runs and since when, so a watchdog can fail an
    overdue item without stopping the thread (Python cannot stop a thread).
    """

    __slots__ = ("batch", "values", "errors", "position", "started", "busy")

    def __init__(self, batch: Batch) -> None:
        self.batch = batch
        self.values: list[Any] = []
        self.errors: dict[int, BaseException] = {}
        self.position = -1
        self.started = 0.0
        self.busy = 0.0

    def run(self, should_stop: Callable[[], bool] = lambda: False,
            propagate: tuple[type[BaseException], ...] = ()) -> None:
        """Run every item in order.

        Args:
            should_stop: checked after each item; True stops early, leaving the rest unrun.
            propagate: exception types re-raised instead of recorded (KeyboardInterrupt when the task
                runs in the caller's own thread, so that Ctrl-C still stops the program).
        """
        batch = self.batch
        call = CALLERS[batch.kind]
        fn = batch.function.fn
        timeout = batch.timeout
        values = self.values
        begin = time.perf_counter()
        if is_coroutines(fn):  # the whole batch at once on this thread's loop, with its own time limits
            self.position = 0
            # In the caller's own thread (serial) the loop is the batch's alone, closed after it;
            # a worker thread keeps one for all its batches.
            values.extend(fn.run_batch(call, batch.items, self.errors, keep_loop=not propagate))
            self.busy = time.perf_counter() - begin
            self.position = -1
            return
        for position, item in enumerate(batch.items):
            self.started = time.monotonic()
            self.position = position
            try:
                values.append(call(fn, item))
            except BaseException as exc:  # noqa: BLE001 - a task's failure, whatever it is, is its result
                if propagate and isinstance(exc, propagate):
                    raise
                values.append(None)
                self.errors[position] = exc
            if timeout is not None:
                elapsed = time.monotonic() - self.started
                if elapsed > timeout and position not in self.errors:
                    self.errors[position] = timeout_error(batch, position, elapsed)
            if should_stop():
                break
        self.position = -1
        self.busy = time.perf_counter() - begin
