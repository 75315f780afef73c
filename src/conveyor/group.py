"""TaskGroup: scoped start of long-lived threads or processes, in place of raw ``Thread``/``Process``.

::

    body (the with block)                 the tasks' threads (thread) or reaper threads (process)
    ─────────────────────                 ─────────────────────────────────────────────────────────
    g.spawn(fn, ...) ──► Backend.spawn ──► the call runs ──► settles ──► on_done: record the outcome;
                                                                         the first failure terminate()s
                                                                         the other tasks at once
    block exit: wait on the group's condition (100 ms slices: Ctrl-C stays prompt) ◄─ notify
                join every task; raise the body's exception, else the first task failure

The group learns of a failure when the failing task settles, not when the body gets round to it: its
siblings are cancelled at once, even while the body still runs, and a later ``spawn`` refuses
(``PoolClosedError``, replaced at block exit by the failure that caused it). Tasks cancelled by the
group or by ``terminate()`` are not failures: their ``result()`` raises ``TaskCancelledError``.
"""

from __future__ import annotations

import functools
import threading
import time
from types import TracebackType
from typing import Any, Callable

from conveyor._core import config as _config
from conveyor._core.errors import PoolClosedError, ResultTimeoutError, short_repr
from conveyor._core.options import check_keywords
from conveyor._core.registry import backend_class
from conveyor.abc import BackendConfig, SpawnedTask

__all__ = ["TaskGroup", "TaskHandle"]

_SLICE = 0.1
_INTERRUPTED_WAIT = 3.0
"""After Ctrl-C, how long the group waits for cancelled tasks: processes get SIGTERM, then SIGKILL after
1 s, so they are gone by then; a thread stuck in C code is left behind (daemon) rather than hang Ctrl-C."""

_NEW, _OPEN, _EXITING, _CLOSED = range(4)


class TaskHandle:
    """One task of a :class:`TaskGroup`: a call on a thread or process of its own.

    The interface of ``multiprocessing.Process`` (``name``, ``pid``, ``exitcode``, ``is_alive()``,
    ``join(timeout)``, ``terminate()``, ``kill()``) plus ``result()``. On the thread and serial backends
    ``pid`` is this process's and ``exitcode`` is 0 (returned) or 1 (raised).
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._impl: SpawnedTask | None = None
        self._settled = False  # the group has seen it settle (under the group's lock)

    @property
    def _task(self) -> SpawnedTask:
        if self._impl is None:
            raise RuntimeError(f"task {self._name!r} is still being started")
        return self._impl

    @property
    def name(self) -> str:
        return self._name

    @property
    def pid(self) -> int | None:
        return self._task.pid

    @property
    def exitcode(self) -> int | None:
        """None while running; 0 returned, 1 raised, ``-N`` killed by signal N (processes)."""
        return self._task.exitcode

    def is_alive(self) -> bool:
        return self._task.is_alive()

    def join(self, timeout: float | None = None) -> None:
        """Wait until the task has ended, or ``timeout`` seconds pass (then check :meth:`is_alive`)."""
        self._task.join(timeout)

    def done(self) -> bool:
        """Whether the task has ended and its outcome is known."""
        return self._task.done()

    def terminate(self) -> None:
        """Stop the task without waiting for it; its ``result()`` then raises ``TaskCancelledError``.

        A process gets SIGTERM, then SIGKILL if it still runs a second later. A thread cannot be killed:
        ``TaskCancelledError`` is raised inside it, which interrupts Python code but reaches a thread
        blocked in C (a stdlib lock or queue without timeout) only when that call returns.
        """
        self._task.terminate()

    def kill(self) -> None:
        """A process: SIGKILL now. A thread: as :meth:`terminate`."""
        self._task.kill()

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the task and return its value, or raise its exception.

        A process's exception comes back as its own type with the child's traceback as ``__cause__``;
        a process that died without reporting raises ``WorkerCrashedError`` (exit code, signal name).

        Raises:
            ResultTimeoutError: still running after ``timeout`` seconds.
        """
        task = self._task
        task.join(timeout)
        if not task.done():
            raise ResultTimeoutError(f"task {self._name!r} did not finish within {timeout}s")
        value, error = task.outcome()
        if error is not None:
            raise error
        return value

    def __repr__(self) -> str:
        if self._impl is None:
            state = "starting"
        elif not self._impl.done():
            state = "running"
        else:
            state = f"exitcode={self._impl.exitcode}"
        pid = self._impl.pid if self._impl is not None else None
        return f"<conveyor.TaskHandle {self._name!r} pid={pid} {state}>"


def _default_name(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__name__", None) or type(fn).__name__


class TaskGroup:
    """Start long-lived threads or processes for the span of a ``with`` block.

    Leaving the block waits for every task. If a task raises or its process dies, the others are
    cancelled (``terminate()``) at once and that first exception is raised at the end of the block;
    if the block itself raises, the tasks are cancelled and the block's exception goes on. Ctrl-C in
    the block or while it waits cancels every task (a second Ctrl-C SIGKILLs processes at once).

    Example:
        >>> import conveyor
        >>> with conveyor.TaskGroup("thread") as g:
        ...     task = g.spawn(sum, [1, 2, 3], name="adder")
        >>> task.result(), task.exitcode
        (6, 0)

    Args:
        backend: ``"serial"``, ``"thread"``, ``"process"`` (default from :func:`conveyor.config`).
        start_method: for processes, ``"fork"``, ``"forkserver"`` or ``"spawn"``.
        **options: backend-specific options, as for :class:`conveyor.Pool` (on a cluster, the
            ``address`` of its scheduler; a context passes its own).

    Attributes:
        errors: the exceptions of the tasks that failed (cancelled ones excluded), first seen first.
            The first is the one raised; on Python 3.11+ it carries a note naming the others.
    """

    def __init__(self, backend: str | None = None, *, start_method: str | None = None, **options: Any) -> None:
        self.backend = backend or _config.setting("backend")
        self._backend_class = backend_class(self.backend)
        check_keywords(options, self._backend_class.option_names, f"TaskGroup({self.backend!r})")
        self._config = BackendConfig(workers=1, start_method=start_method or _config.setting("start_method"),
                                     options=options)
        self._cv = threading.Condition()
        self._tasks: list[TaskHandle] = []
        self._state = _NEW
        self._cancelling: str | None = None  # why the tasks are being cancelled
        self._refusals: list[PoolClosedError] = []
        self._failed: list[TaskHandle] = []
        self.errors: list[BaseException] = []

    @property
    def tasks(self) -> tuple[TaskHandle, ...]:
        """Every task spawned so far."""
        with self._cv:
            return tuple(self._tasks)

    def spawn(self, fn: Callable[..., Any], /, *args: Any, name: str | None = None, **kwargs: Any) -> TaskHandle:
        """Start ``fn(*args, **kwargs)`` on a thread or process of its own; returns its handle.

        ``name`` names the thread or process (default: the function's name); to pass a keyword argument
        called ``name`` to ``fn`` itself, use ``functools.partial``. Serial runs the call to its end
        here. Tasks may spawn more tasks into the group (thread backend) until it has exited.

        Raises:
            PicklingError: (process) the function or an argument cannot be sent; nothing was started.
            PoolClosedError: the group is not open: not entered yet, exited, or cancelling its tasks
                because one failed.
        """
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {fn!r}")
        task = TaskHandle(name if name is not None else _default_name(fn))
        with self._cv:
            self._check_open()
            self._tasks.append(task)
        try:
            impl = self._backend_class.spawn(self._config, fn, args, kwargs, task.name,
                                             functools.partial(self._on_done, task))
        except BaseException:
            with self._cv:
                if not task._settled:
                    self._tasks.remove(task)
                self._cv.notify_all()
            raise
        with self._cv:
            task._impl = impl
            if self._cancelling is not None and not task._settled:
                impl.terminate()
        return task

    def _check_open(self) -> None:
        if self._state == _NEW:
            raise PoolClosedError("enter the TaskGroup (with ... as g:) before spawning tasks")
        if self._state == _CLOSED:
            raise PoolClosedError("cannot spawn: this TaskGroup's block has exited")
        if self._cancelling is not None:
            refusal = PoolClosedError(f"cannot spawn: the TaskGroup is cancelling its tasks ({self._cancelling})")
            self._refusals.append(refusal)
            raise refusal

    def _on_done(self, task: TaskHandle, impl: SpawnedTask) -> None:
        """A task settled (called in its thread, its reaper thread, or inside spawn for serial)."""
        with self._cv:
            task._impl = impl
            task._settled = True
            _, error = impl.outcome()
            if error is not None and not impl.cancel_requested:
                self.errors.append(error)
                self._failed.append(task)
                self._cancel(f"task {task.name!r} failed with {short_repr(error, 120)}")
            self._cv.notify_all()

    def _cancel(self, reason: str) -> None:
        """Terminate every running task (once); call with the lock held."""
        if self._cancelling is not None:
            return
        self._cancelling = reason
        for task in self._tasks:
            if task._impl is not None and not task._settled:
                task._impl.terminate()

    def _kill_all(self) -> None:
        with self._cv:
            for task in self._tasks:
                if task._impl is not None and not task._settled:
                    task._impl.kill()

    def _wait(self, limit: float | None) -> None:
        """Wait until every task has settled (at most ``limit`` seconds), then join those that have."""
        deadline = None if limit is None else time.monotonic() + limit
        with self._cv:
            while not all(task._settled for task in self._tasks):
                if deadline is not None and time.monotonic() >= deadline:
                    break
                self._cv.wait(_SLICE)
            settled = [task for task in self._tasks if task._settled]
        for task in settled:
            task._task.join()  # ends right after settling

    def __enter__(self) -> TaskGroup:
        with self._cv:
            if self._state != _NEW:
                raise PoolClosedError("a TaskGroup can be entered only once")
            self._state = _OPEN
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        with self._cv:
            self._state = _EXITING
            if exc is not None:
                self._cancel(f"its block raised {type(exc).__name__}")
        interrupts = 1 if isinstance(exc, KeyboardInterrupt) else 0
        interrupt: BaseException | None = None
        try:
            while True:
                try:
                    if interrupts >= 2:
                        self._kill_all()
                    self._wait(_INTERRUPTED_WAIT if interrupts else None)
                    break
                except BaseException as again:  # Ctrl-C, or SystemExit from a SIGTERM handler, or an
                    # outer group cancelling this one: the tasks are stopped before it goes on
                    interrupt = interrupt or again
                    interrupts += 1
                    with self._cv:
                        self._cancel(f"interrupted by {type(again).__name__}")
                    if interrupts >= 3:
                        raise  # processes were SIGKILLed; their reapers finish in the background
        finally:
            with self._cv:
                self._state = _CLOSED
        if interrupt is not None:
            raise interrupt  # an interrupt while waiting wins over whatever the block raised
        if exc is not None:
            if any(exc is refusal for refusal in self._refusals) and self.errors:
                error = self.errors[0]  # the block stopped only because a task failed: raise that
                error.__suppress_context__ = True
                self._note_others(error)
                raise error
            if not isinstance(exc, KeyboardInterrupt):
                self._note_others(exc)
            return
        if self.errors:
            error = self.errors[0]
            self._note_others(error)
            raise error

    def _note_others(self, raised: BaseException) -> None:
        others = [(task, error) for task, error in zip(self._failed, self.errors) if error is not raised]
        if not others or not hasattr(raised, "add_note"):
            return
        listed = "; ".join(f"{task.name!r}: {short_repr(error, 120)}" for task, error in others)
        other = "other " if any(raised is error for error in self.errors) else ""
        raised.add_note(f"conveyor.TaskGroup: {len(others)} {other}task(s) failed too (see the group's "
                        f".errors): {listed}")

    def __repr__(self) -> str:
        state = ("new", "open", "exiting", "closed")[self._state]
        return f"<conveyor.TaskGroup backend={self.backend!r} tasks={len(self._tasks)} {state}>"
