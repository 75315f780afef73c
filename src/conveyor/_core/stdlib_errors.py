"""The part of conveyor's error tree that derives from ``concurrent.futures`` and ``multiprocessing``
classes.

Why a module of its own: those base classes cost tens of milliseconds to import (``concurrent.futures``
pulls in ``logging``; ``multiprocessing.pool`` pulls in sockets, ``tempfile`` and more), and
``import conveyor`` must stay cheap. :mod:`conveyor._core.errors` loads this module the first time one
of these names is asked for, so every ``isinstance`` and ``except`` relation of the tree holds as
before, and each class still presents itself (``__module__``) and pickles as
``conveyor._core.errors.<name>``.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import multiprocessing.pool

from conveyor._core.errors import ConveyorError, TaskError

__all__ = ["BrokenPoolError", "InitializerError", "RemoteTraceback", "ResultTimeoutError", "TaskCancelledError"]

_HOME = "conveyor._core.errors"


class TaskCancelledError(TaskError, concurrent.futures.CancelledError):
    """The task was stopped by a terminating shutdown before it finished."""

    __module__ = _HOME


# The stdlib stubs omit RemoteTraceback (undocumented, but public and what the stdlib pool raises).
class RemoteTraceback(multiprocessing.pool.RemoteTraceback):  # type: ignore[name-defined]
    """Carries a worker's formatted traceback; attached as ``__cause__`` of a task's exception.

    A ``multiprocessing.pool.RemoteTraceback`` too, so code written for the stdlib's pools finds the
    text where it looks for it (``.tb``); ``.text`` is the same string.
    """

    __module__ = _HOME

    def __init__(self, text: str) -> None:
        Exception.__init__(self, text)
        self.text = self.tb = text

    def __str__(self) -> str:
        return self.text


class ResultTimeoutError(ConveyorError, TimeoutError, multiprocessing.TimeoutError):
    """Waiting for a result ran out of time (the task itself goes on; see TaskTimeoutError for that).

    It is also a ``multiprocessing.TimeoutError``, so code written for ``multiprocessing.Pool`` keeps
    catching it.
    """

    __module__ = _HOME


class BrokenPoolError(ConveyorError, concurrent.futures.BrokenExecutor):
    """The pool can no longer run work (for example its workers cannot start)."""

    __module__ = _HOME


class InitializerError(BrokenPoolError):
    """The worker initializer raised or crashed; the pool is broken and refuses new work."""

    __module__ = _HOME
