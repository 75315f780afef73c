"""Every error conveyor raises, in one tree.

Each error also derives from the builtin or stdlib error that users already catch, so existing
``except`` clauses keep working::

    ConveyorError (Exception)
    ├── TaskError                      a task did not produce a result for a reason of ours
    │   ├── WorkerCrashedError         + concurrent.futures.process.BrokenProcessPool: the process
    │   │                              running the task died (pid, exit code, signal)
    │   ├── TaskTimeoutError           + TimeoutError: the task ran past ``task_timeout``
    │   └── TaskCancelledError         + concurrent.futures.CancelledError: stopped by shutdown
    ├── SerializationError             a function, argument or result could not cross a process border
    │   ├── PicklingError              + pickle.PicklingError
    │   └── UnpicklingError            + pickle.UnpicklingError
    ├── RemoteError                    a task raised an exception that could not be sent back as itself
    ├── ResultTimeoutError             + TimeoutError, multiprocessing.TimeoutError: waiting ran out
    ├── BrokenPoolError                + concurrent.futures.BrokenExecutor: the pool cannot run work
    │   └── InitializerError           the worker initializer failed
    ├── PoolClosedError                + RuntimeError, ValueError: submit after shutdown
    ├── ShutDown                       + queue.ShutDown (3.13+): get/put on a shut-down queue
    ├── OwnerDiedError                 + RuntimeError: a process died holding a shared lock
    ├── OwnerGoneError                 + ConnectionError: the process owning a shared dict, list or
    │                                  Namespace has exited; its data went with it
    ├── UnsupportedError               + NotImplementedError: the backend does not do that (a
    │                                  primitive it does not make, an option it cannot honour)
    └── BackendUnavailableError        + ImportError: an optional backend is not installed

Warnings: ``WorkerRecycledWarning`` (a worker passed ``max_memory_per_worker`` and was replaced).

A user's own exception is never wrapped: it comes back as its own type, with the worker's traceback
attached as ``__cause__`` (a :class:`RemoteTraceback`).
"""

from __future__ import annotations

import sys
from _pickle import PicklingError as _StdPicklingError  # the very classes pickle exports, without pickle
from _pickle import UnpicklingError as _StdUnpicklingError
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from conveyor._core.stdlib_errors import (
        BrokenPoolError,
        InitializerError,
        RemoteTraceback,
        ResultTimeoutError,
        TaskCancelledError,
    )

__all__ = [
    "BackendUnavailableError",
    "BrokenPoolError",
    "ConveyorError",
    "InitializerError",
    "OwnerDiedError",
    "OwnerGoneError",
    "PicklingError",
    "PoolClosedError",
    "RemoteError",
    "RemoteTraceback",
    "ResultTimeoutError",
    "SerializationError",
    "ShutDown",
    "TaskCancelledError",
    "TaskError",
    "TaskTimeoutError",
    "UnpicklingError",
    "UnsupportedError",
    "WorkerCrashedError",
    "WorkerRecycledWarning",
    "adopt_broken_process_pool",
    "describe_exit",
    "unsupported",
]

_REPR_LIMIT = 200


def short_repr(obj: Any, limit: int = _REPR_LIMIT) -> str:
    """A repr that never raises and never floods a log line."""
    try:
        text = repr(obj)
    except Exception as exc:  # a broken __repr__ must not hide the real error
        text = f"<{type(obj).__qualname__} object (repr failed: {exc!r})>"
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


def describe_exit(exitcode: int | None) -> tuple[str | None, str]:
    """Turn a process exit code into (signal name, human sentence).

    Negative exit codes are signals (the ``multiprocessing`` convention). SIGKILL is by far most often
    the out-of-memory killer, so the sentence says so.
    """
    if exitcode is None:
        return None, "is still running"
    if exitcode >= 0:
        return None, f"exited with code {exitcode}"
    import signal  # here: most processes never describe an exit

    try:
        name = signal.Signals(-exitcode).name
    except ValueError:
        return None, f"was killed by signal {-exitcode}"
    hint = {
        "SIGKILL": " (killed from outside: often the out-of-memory killer)",
        "SIGSEGV": " (segmentation fault in native code)",
        "SIGBUS": " (bus error: often a truncated memory-mapped file)",
        "SIGABRT": " (aborted: a failed assertion in native code)",
        "SIGTERM": " (terminated)",
    }.get(name, "")
    return name, f"was killed by {name}{hint}"


class ConveyorError(Exception):
    """Base of every error raised by conveyor itself."""


class TaskError(ConveyorError):
    """A task did not produce a result, for a reason outside the task's own code."""


class WorkerCrashedError(TaskError):
    """The worker process died while it held this task.

    Also a ``concurrent.futures.process.BrokenProcessPool``, what stdlib code catches when a worker
    dies (here only this task failed, and the pool goes on). That module loads ``multiprocessing``'s
    queues, too much for ``import conveyor``, so the base is added when it is needed: by the first
    crash, by ``import conveyor.futures``, or at once if the module was already loaded (see
    :func:`adopt_broken_process_pool`).

    Attributes:
        pid: the worker's process id.
        exitcode: its exit code (negative: killed by that signal), or None if unknown.
        signal_name: e.g. ``"SIGKILL"`` when a signal killed it, else None.
        task_index: position of the task in its call (0-based), if known.
        task_input: a short repr of the task's input, if known.
    """

    def __init__(
        self,
        message: str | None = None,
        *,
        pid: int | None = None,
        exitcode: int | None = None,
        task_index: int | None = None,
        task_input: str | None = None,
    ) -> None:
        adopt_broken_process_pool()
        self.pid = pid
        self.exitcode = exitcode
        self.signal_name, how = describe_exit(exitcode)
        self.task_index = task_index
        self.task_input = task_input
        if message is None:
            message = f"worker process {pid} {how} while running task"
            if task_index is not None:
                message += f" #{task_index}"
            if task_input is not None:
                message += f" with input {task_input}"
        super().__init__(message)

    def __reduce__(self) -> Any:
        return (
            _rebuild_crash,
            (str(self), self.pid, self.exitcode, self.task_index, self.task_input),
        )


def adopt_broken_process_pool() -> None:
    """Make :class:`WorkerCrashedError` a ``concurrent.futures.process.BrokenProcessPool`` too.

    Done before any instance exists, so every ``except BrokenProcessPool`` catches every crash. The
    class gains a base (``__bases__``) instead of having it from the start only so that importing
    conveyor does not load ``concurrent.futures.process``; code that catches ``BrokenProcessPool`` has
    imported it, and no crash can reach it before the first instance is made.
    """
    global _adopted
    if _adopted:
        return
    from concurrent.futures.process import BrokenProcessPool

    if not issubclass(WorkerCrashedError, BrokenProcessPool):  # (two threads at once: the same bases)
        WorkerCrashedError.__bases__ = (TaskError, BrokenProcessPool)
    _adopted = True


_adopted = False


def _rebuild_crash(message: str, pid: Any, exitcode: Any, index: Any, task_input: Any) -> WorkerCrashedError:
    return WorkerCrashedError(message, pid=pid, exitcode=exitcode, task_index=index, task_input=task_input)


class TaskTimeoutError(TaskError, TimeoutError):
    """The task ran longer than ``task_timeout``.

    On the process backend the worker was killed and replaced; on the thread and serial backends the
    call could not be stopped (Python cannot kill a thread) and its late result is discarded.
    """


class SerializationError(ConveyorError):
    """A function, argument or result could not be sent across a process boundary."""


class PicklingError(SerializationError, _StdPicklingError):
    """An object could not be pickled; the message names it and suggests a fix."""


class UnpicklingError(SerializationError, _StdUnpicklingError):
    """Bytes from the other side could not be turned back into an object."""


class RemoteError(ConveyorError):
    """A task raised an exception that could not travel back as itself.

    Attributes:
        type_name: qualified name of the original exception type.
        remote_traceback: the formatted traceback from the worker.
    """

    def __init__(self, type_name: str, message: str, remote_traceback: str = "") -> None:
        self.type_name = type_name
        self.remote_traceback = remote_traceback
        super().__init__(f"{type_name}: {message}")

    def __reduce__(self) -> Any:
        return (RemoteError, (self.type_name, str(self).split(": ", 1)[-1], self.remote_traceback))


class PoolClosedError(ConveyorError, RuntimeError, ValueError):
    """Work was submitted to a pool that is shut down or shutting down (or ``with`` entered one).

    A ``RuntimeError`` as ``concurrent.futures`` raises, and a ``ValueError`` as ``multiprocessing.Pool``
    raises, so either dialect's except clause catches it.
    """


if sys.version_info >= (3, 13):
    from queue import ShutDown as _QueueShutDown

    _QUEUE_SHUTDOWN: tuple[type, ...] = (_QueueShutDown,)
else:
    _QUEUE_SHUTDOWN = ()


class ShutDown(ConveyorError, *_QUEUE_SHUTDOWN):  # type: ignore[misc]
    """``put`` on a shut-down queue, or ``get`` on one that is shut down and empty.

    From Python 3.13 on it is also a ``queue.ShutDown``, so the stdlib's except clauses catch it.
    """


class OwnerDiedError(ConveyorError, RuntimeError):
    """A process died while holding a cross-process lock.

    The lock has been made free again; the data it guarded may be half-updated. Acquire again to go
    on (after checking that data), or stop.
    """


class OwnerGoneError(ConveyorError, ConnectionError):
    """The process that owns a shared object (a dict, list or Namespace made by ``ctx.dict()``,
    ``ctx.list()`` or ``ctx.Namespace()``) has exited; its data went with it.

    Keep the process that makes a shared object running for as long as others use it. (An owner that
    is alive but dropped its last reference to the object raises ``ReferenceError`` instead.)
    """


class UnsupportedError(ConveyorError, NotImplementedError):
    """What this backend cannot do (a primitive it does not make, a feature it lacks), said before
    anything starts. Also a ``NotImplementedError``."""


def unsupported(what: str, backend: str, instead: str = "") -> UnsupportedError:
    """The one way a backend's gap is reported: ``what`` is not available on ``backend``; ``instead``."""
    return UnsupportedError(f"{what}: not available on the {backend} backend" + (f"; {instead}" if instead else ""))


class BackendUnavailableError(ConveyorError, ImportError):
    """The requested backend is unknown or its optional dependency is not installed."""


class WorkerRecycledWarning(RuntimeWarning):
    """A worker process went over ``max_memory_per_worker`` and was replaced between tasks."""


_STDLIB_DERIVED = frozenset({"BrokenPoolError", "InitializerError", "RemoteTraceback", "ResultTimeoutError",
                             "TaskCancelledError"})


def __getattr__(name: str) -> Any:
    """The errors that derive from ``concurrent.futures`` or ``multiprocessing`` classes are
    defined in :mod:`conveyor._core.stdlib_errors`, loaded on first use: importing those stdlib modules
    here would cost every ``import conveyor`` tens of milliseconds."""
    if name in _STDLIB_DERIVED:
        from conveyor._core import stdlib_errors

        value = getattr(stdlib_errors, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _STDLIB_DERIVED)


if "concurrent.futures.process" in sys.modules:  # free: the relation holds from the start
    adopt_broken_process_pool()
