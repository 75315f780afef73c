"""``multiprocessing.Pool`` and ``multiprocessing.pool.ThreadPool``, run by conveyor.

``import conveyor.multiprocessing as mp`` and keep the code written for the stdlib: the signatures,
positional ``chunksize``, ``AsyncResult``, callbacks, ``ValueError`` on a closed pool and a ``with``
block that terminates are the stdlib's. Underneath is a :class:`conveyor.Pool` (this module is an
adapter, not another pool), so what conveyor adds holds here too: a worker that dies fails only the
task it was running (``WorkerCrashedError``) and the pool goes on, lambdas and closures are sent with
cloudpickle, a result that cannot be pickled fails its own task only, and Ctrl-C stops the waiting
call. docs/compat.md lists every difference from the stdlib and why.

Only what runs through conveyor is here, plus a few plain helpers (``cpu_count``, ``TimeoutError``,
``freeze_support``).
Queues, locks and processes are conveyor's too, from :func:`conveyor.context`; the stdlib's
``get_context()`` would hand out the stdlib's own Pool, so it is deliberately not re-exported.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator
from multiprocessing import TimeoutError, cpu_count, freeze_support
from typing import Any, Callable

from conveyor._core.config import start_method_of
from conveyor._core.errors import PoolClosedError
from conveyor.async_result import AsyncResult
from conveyor.pool import Pool as _ConveyorPool

__all__ = ["AsyncResult", "Pool", "ThreadPool", "TimeoutError", "cpu_count", "freeze_support"]


class Pool:
    """``multiprocessing.Pool`` on conveyor's process backend.

    Args:
        processes: number of workers (default: the usable cores).
        initializer: called as ``initializer(*initargs)`` once in each worker.
        initargs: its arguments.
        maxtasksperchild: replace a worker after this many tasks.
        context: a ``multiprocessing`` context or a start method's name (``"fork"``,
            ``"forkserver"``, ``"spawn"``) for the workers; default conveyor's.
        **options: any other :class:`conveyor.Pool` option (``task_timeout``, ``retries``,
            ``max_memory_per_worker``...), keyword only.

    The pool it runs on is :attr:`conveyor_pool`, for conveyor's own calls (``submit``,
    ``statistics``, primitives).
    """

    _backend = "process"

    def __init__(self, processes: int | None = None, initializer: Callable[..., Any] | None = None,
                 initargs: Iterable[Any] = (), maxtasksperchild: int | None = None, context: Any = None,
                 **options: Any) -> None:
        self._inner = _ConveyorPool(processes, backend=self._backend, initializer=initializer,
                                   initargs=initargs, max_tasks_per_worker=maxtasksperchild,
                                   start_method=start_method_of(context), **options)

    @property
    def conveyor_pool(self) -> _ConveyorPool:
        """The :class:`conveyor.Pool` doing the work."""
        return self._inner

    def __repr__(self) -> str:
        state = "closed" if self._inner._closed else "running"
        name = f"{type(self).__module__}.{type(self).__qualname__}"
        return f"<{name} state={state} pool_size={self._inner.workers}>"

    # -- one call ----------------------------------------------------------------------------------
    # The stdlib's signatures, mutable default ``kwds={}`` included (never mutated).
    def apply(self, func: Callable[..., Any], args: Iterable[Any] = (),
              kwds: dict[str, Any] = {}) -> Any:  # noqa: B006
        """``func(*args, **kwds)`` on a worker; waits for the result."""
        return self._inner.apply(func, args, kwds)

    def apply_async(self, func: Callable[..., Any], args: Iterable[Any] = (),
                    kwds: dict[str, Any] = {},  # noqa: B006
                    callback: Callable[[Any], Any] | None = None,
                    error_callback: Callable[[BaseException], Any] | None = None) -> AsyncResult:
        """``func(*args, **kwds)`` in the background; the callbacks run before the result is ready."""
        return self._inner.apply_async(func, args, kwds, callback, error_callback)

    # -- many calls --------------------------------------------------------------------------------
    def map(self, func: Callable[..., Any], iterable: Iterable[Any],
            chunksize: int | None = None) -> list[Any]:
        """``[func(x) for x in iterable]``; raises the first failure in input order."""
        return self._inner.map(func, iterable, chunksize=chunksize)

    def map_async(self, func: Callable[..., Any], iterable: Iterable[Any], chunksize: int | None = None,
                  callback: Callable[[Any], Any] | None = None,
                  error_callback: Callable[[BaseException], Any] | None = None) -> AsyncResult:
        return self._inner.map_async(func, iterable, chunksize, callback, error_callback)

    def starmap(self, func: Callable[..., Any], iterable: Iterable[Iterable[Any]],
                chunksize: int | None = None) -> list[Any]:
        """``[func(*args) for args in iterable]``."""
        return self._inner.starmap(func, iterable, chunksize=chunksize)

    def starmap_async(self, func: Callable[..., Any], iterable: Iterable[Iterable[Any]],
                      chunksize: int | None = None, callback: Callable[[Any], Any] | None = None,
                      error_callback: Callable[[BaseException], Any] | None = None) -> AsyncResult:
        return self._inner.starmap_async(func, iterable, chunksize, callback, error_callback)

    def imap(self, func: Callable[..., Any], iterable: Iterable[Any], chunksize: int = 1) -> Iterator[Any]:
        """Lazy, ordered results. Inputs are read as results are (at most a few per worker ahead), not
        all at once as the stdlib does: read the iterator before ``join()``."""
        return self._inner.imap(func, iterable, chunksize=chunksize)

    def imap_unordered(self, func: Callable[..., Any], iterable: Iterable[Any],
                       chunksize: int = 1) -> Iterator[Any]:
        """Like :meth:`imap`, in completion order."""
        return self._inner.imap_unordered(func, iterable, chunksize=chunksize)

    # -- lifetime ----------------------------------------------------------------------------------
    def close(self) -> None:
        """No new work; what was submitted still runs."""
        self._inner.close()

    def terminate(self) -> None:
        """Stop now: pending work is cancelled, running tasks are killed."""
        self._inner.terminate()

    def join(self) -> None:
        """Wait for the workers to exit, after :meth:`close` or :meth:`terminate`."""
        if not self._inner._closed:
            raise ValueError("Pool is still running")
        self._inner.join()

    def __enter__(self) -> Pool:
        if self._inner._closed:
            raise PoolClosedError("Pool not running")
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        """Terminates, as ``multiprocessing.Pool`` does: close() and join() first to let work finish."""
        self.terminate()

    def __del__(self) -> None:
        """A pool dropped while running is stopped by conveyor (its work cancelled); as the stdlib
        does, say so, since that is rarely what the code meant."""
        inner = getattr(self, "_inner", None)  # absent if __init__ raised
        if inner is not None and not inner._closed:
            warnings.warn(f"unclosed running multiprocessing pool {self!r}", ResourceWarning, source=self)


class ThreadPool(Pool):
    """``multiprocessing.pool.ThreadPool`` on conveyor's thread backend."""

    _backend = "thread"

    def __init__(self, processes: int | None = None, initializer: Callable[..., Any] | None = None,
                 initargs: Iterable[Any] = (), **options: Any) -> None:
        super().__init__(processes, initializer, initargs, **options)
