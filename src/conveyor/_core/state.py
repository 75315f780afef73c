"""Per-worker state: ``conveyor.worker_state()``, a namespace a worker keeps for its whole life.

A process worker has one per process; a thread worker one per thread (the thread backend marks its
threads); anywhere else (the caller, the serial backend) it is the process's own. The pool's
``initializer`` fills it once per worker; tasks read it. ``Pool(shared=obj)`` puts the shared
object there as ``.shared`` before the initializer runs.
"""

from __future__ import annotations

import threading
import types
from typing import Any


class WorkerState(types.SimpleNamespace):
    """Attributes set by the initializer (and ``shared``, with ``Pool(shared=...)``)."""

    def __repr__(self) -> str:
        return f"<conveyor.WorkerState {sorted(vars(self))}>"


_process_state = WorkerState()
_local = threading.local()


def worker_state() -> WorkerState:
    """This worker's state: set attributes in the initializer, read them in tasks.

    Example:
        >>> import conveyor
        >>> conveyor.worker_state().greeting = "hello"
        >>> conveyor.worker_state().greeting
        'hello'
    """
    state = getattr(_local, "state", None)
    return state if state is not None else _process_state


def enter_worker_thread() -> None:
    """Give the calling thread a state of its own (a thread backend's worker, at its start)."""
    _local.state = WorkerState()


class WorkerSetup:
    """The initializer a pool with ``shared=`` runs in each worker: the shared object into the
    worker's state, then the user's own initializer. Named after the user's initializer, so that an
    error message names theirs."""

    def __init__(self, shared: Any, initializer: Any, initargs: tuple[Any, ...], *, handle: bool) -> None:
        self.shared = shared
        self.handle = handle  # a conveyor.Shared handle (read it with .get()), or the object itself
        self.initializer = initializer
        self.initargs = initargs
        target = initializer if initializer is not None else self
        self.__module__ = getattr(target, "__module__", None) or __name__
        self.__qualname__ = getattr(target, "__qualname__", None) or type(self).__qualname__

    def __call__(self) -> Any:
        worker_state().shared = self.shared.get() if self.handle else self.shared
        if self.initializer is not None:
            return self.initializer(*self.initargs)
        return None

    def __repr__(self) -> str:
        return repr(self.initializer) if self.initializer is not None else "<conveyor shared-object setup>"
