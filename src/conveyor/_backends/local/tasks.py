"""Spawned tasks that share this process (``conveyor.TaskGroup`` on the thread and serial backends).

Thread: one thread per task, a daemon. The group joins every task on a normal exit, so daemon changes
nothing there; it matters after Ctrl-C, when a task stuck in C code (below) cannot be interrupted: a
non-daemon thread would then keep the interpreter from exiting, exactly when the user asked it to.

Python cannot kill a thread. ``terminate()`` raises :class:`~conveyor.TaskCancelledError` inside the
task's thread, asynchronously (``PyThreadState_SetAsyncExc``): it interrupts Python code at the next
bytecode boundary. A thread blocked inside C (a stdlib ``Lock.acquire()`` or ``queue.get()`` without a
timeout, a socket read, ``time.sleep``) sees it only when that call returns to Python. conveyor's own
primitives wait in 100 ms slices, so a task blocked on them is interrupted within a slice. The
exception is delivered once: a task that catches it and carries on keeps running.

Serial: the call runs to its end in the caller, at spawn time, and the handle reports the outcome
(the reference semantics; a producer and a consumer sharing a bounded queue deadlock there, as they
would in any single thread).
"""

from __future__ import annotations

import ctypes
import os
import threading
from typing import Any, Callable

from conveyor._core.errors import TaskCancelledError
from conveyor.abc import SpawnedTask

_set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc

_NEW, _RUNNING, _FINISHING = range(3)


def _interrupt(ident: int, exception: type[BaseException] | None) -> None:
    """Raise ``exception`` in thread ``ident`` at its next bytecode (None: drop one that is pending)."""
    _set_async_exc(ctypes.c_ulong(ident), ctypes.py_object(exception) if exception is not None else None)


class ThreadTask(SpawnedTask):
    """A call running on a thread of its own."""

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], name: str,
                 on_done: Callable[[SpawnedTask], None] | None) -> None:
        super().__init__(name, on_done)
        self._call: tuple[Any, ...] | None = (fn, args, kwargs)
        self._lock = threading.Lock()
        self._state = _NEW
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def _main(self) -> None:
        # terminate() interrupts only while the state is _RUNNING, and at most once; this frame's two
        # handlers catch that one exception wherever it lands, even just after the call returned.
        value: Any = None
        error: BaseException | None = None
        try:
            try:
                with self._lock:
                    if self.cancel_requested:
                        raise TaskCancelledError()
                    self._state = _RUNNING
                fn, args, kwargs = self._call  # type: ignore[misc]
                self._call = None
                value = fn(*args, **kwargs)
            except BaseException as exc:  # noqa: BLE001 - the task's failure is its outcome
                error = exc
            self._stop_interrupts()
        except TaskCancelledError as late:  # terminate() landed between the call's end and the line above
            value, error = None, late
            self._stop_interrupts()
        if isinstance(error, TaskCancelledError) and self.cancel_requested and not error.args:
            error.args = (f"task {self.name!r} was cancelled by terminate()",)
        self._settle(value, error)

    def _stop_interrupts(self) -> None:
        with self._lock:
            self._state = _FINISHING
        _interrupt(threading.get_ident(), None)

    @property
    def pid(self) -> int:
        return os.getpid()

    @property
    def exitcode(self) -> int | None:
        if not self.done():
            return None
        return 0 if self._error is None else 1

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def terminate(self) -> None:
        with self._lock:
            if self._state == _FINISHING or self.cancel_requested:
                return
            self.cancel_requested = True
            if self._state == _RUNNING:
                _interrupt(self._thread.ident, TaskCancelledError)  # type: ignore[arg-type]


class InlineTask(SpawnedTask):
    """A call run to its end in the caller (serial backend). Ctrl-C in it propagates, as on serial."""

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], name: str,
                 on_done: Callable[[SpawnedTask], None] | None) -> None:
        super().__init__(name, on_done)
        try:
            value, error = fn(*args, **kwargs), None
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - the task's failure is its outcome
            value, error = None, exc
        self._settle(value, error)

    @property
    def pid(self) -> int:
        return os.getpid()

    @property
    def exitcode(self) -> int:
        return 0 if self._error is None else 1

    def is_alive(self) -> bool:
        return False

    def join(self, timeout: float | None = None) -> None:
        return None

    def terminate(self) -> None:
        return None  # it has already finished
