"""``concurrent.futures.ProcessPoolExecutor`` and ``ThreadPoolExecutor``, run by conveyor.

``import conveyor.futures as cf`` and keep the code written for ``import concurrent.futures as cf``:
the executors take the stdlib's arguments and keep its semantics (``submit``, a lazy ``map`` with
``timeout``, ``chunksize`` and 3.14's ``buffersize``, ``shutdown(wait, *, cancel_futures)``, a
``RuntimeError`` for work submitted after shutdown, work finishing when an executor is dropped or the
interpreter exits), and ``Future``, ``wait``, ``as_completed`` and the errors are the stdlib's own.
Underneath is a :class:`conveyor.Pool` (this module is an adapter, as :mod:`conveyor.multiprocessing`
is, not another pool), so what conveyor adds holds here too: a worker that dies fails only the task it
was running, with a ``WorkerCrashedError`` that is also a ``BrokenProcessPool``, and the executor
goes on; lambdas and closures are sent with cloudpickle. docs/compat.md lists every difference.
"""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import time
import weakref
from collections.abc import Iterable, Iterator
from concurrent.futures import (
    ALL_COMPLETED,
    FIRST_COMPLETED,
    FIRST_EXCEPTION,
    BrokenExecutor,
    CancelledError,
    Executor,
    Future,
    InvalidStateError,
    TimeoutError,
    as_completed,
    wait,
)
from typing import Any, Callable

from conveyor._core.config import start_method_of
from conveyor._core.errors import PoolClosedError, adopt_broken_process_pool
from conveyor.pool import Pool as _ConveyorPool

__all__ = [
    "ALL_COMPLETED",
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
    "BrokenExecutor",
    "CancelledError",
    "Executor",
    "Future",
    "InvalidStateError",
    "ProcessPoolExecutor",
    "ThreadPoolExecutor",
    "TimeoutError",
    "as_completed",
    "wait",
]

adopt_broken_process_pool()  # code catching BrokenProcessPool imports it: the relation must hold now


_SHUT_DOWN = "cannot schedule new futures after shutdown"


def _run_chunk(fn: Callable[..., Any], chunk: list[tuple[Any, ...]]) -> list[Any]:
    """One submitted task of ``ProcessPoolExecutor.map`` with ``chunksize`` > 1 (in the worker)."""
    return [fn(*args) for args in chunk]


def _chunks(calls: Iterator[tuple[Any, ...]], size: int) -> Iterator[list[tuple[Any, ...]]]:
    while chunk := list(itertools.islice(calls, size)):
        yield chunk


def _result_or_cancel(future: Future[Any], timeout: float | None) -> Any:
    """The result; a future left behind by a timeout or an error is cancelled, as the stdlib does."""
    try:
        return future.result(timeout)
    finally:
        future.cancel()


def _check_initializer(initializer: Any) -> None:
    if initializer is not None and not callable(initializer):
        raise TypeError("initializer must be a callable")


def _check_max_workers(max_workers: int | None) -> None:
    if max_workers is not None and max_workers <= 0:
        raise ValueError("max_workers must be greater than 0")


class _PoolExecutor(Executor):
    """What both executors share: the stdlib's ``Executor`` API over one :class:`conveyor.Pool`."""

    def __init__(self, **pool_arguments: Any) -> None:
        self._pool = _ConveyorPool(**pool_arguments)
        self._pool._finish_at_exit()
        self._waiting: dict[Future[Any], None] = {}  # submitted, not done: in submission order
        # Dropped without shutdown: the stdlib's workers finish what was submitted, then exit.
        weakref.finalize(self, self._pool.shutdown, wait=False).atexit = False  # (exit: the pool's hook)

    @property
    def conveyor_pool(self) -> _ConveyorPool:
        """The :class:`conveyor.Pool` doing the work, for conveyor's own calls (``statistics``...)."""
        return self._pool

    def __repr__(self) -> str:
        state = "shutdown" if self._pool._closed else "running"
        name = f"{type(self).__module__}.{type(self).__qualname__}"
        return f"<{name} state={state} max_workers={self._pool.workers}>"

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """Schedule ``fn(*args, **kwargs)``; raises ``RuntimeError`` once the executor is shut down."""
        try:
            future = self._pool.submit(fn, *args, **kwargs)
        except PoolClosedError as exc:  # the stdlib's own class and words, which its users match
            message = str(exc) if str(exc).startswith("cannot schedule") else _SHUT_DOWN
            raise RuntimeError(message) from None
        waiting = self._waiting
        waiting[future] = None
        future.add_done_callback(lambda done: waiting.pop(done, None))
        return future

    def _check_map(self, chunksize: int, buffersize: int | None) -> None:
        if buffersize is not None and (isinstance(buffersize, bool) or not isinstance(buffersize, int)):
            raise TypeError("buffersize must be an integer or None")
        if buffersize is not None and buffersize < 1:
            raise ValueError("buffersize must be None or > 0")

    def _map_calls(self, fn: Callable[..., Any], calls: Iterator[tuple[Any, ...]], timeout: float | None,
                   buffersize: int | None) -> Iterator[Any]:
        """Submit ``fn(*args)`` for each of ``calls``: all now, or ``buffersize`` ahead of the reader."""
        end = None if timeout is None else time.monotonic() + timeout
        if buffersize is None:
            futures = collections.deque(self.submit(fn, *args) for args in calls)
        else:
            futures = collections.deque(self.submit(fn, *args) for args in itertools.islice(calls, buffersize))
        return self._results(fn, futures, calls if buffersize is not None else None, end)

    def _results(self, fn: Callable[..., Any], futures: collections.deque[Future[Any]],
                 more: Iterator[tuple[Any, ...]] | None, end: float | None) -> Iterator[Any]:
        """Results in input order. With ``more`` (a ``buffersize``), each result read submits the
        next call, so no more than ``buffersize`` calls are ever submitted and unread. Leaving early
        (an error, a timeout, the iterator dropped) cancels what has not started."""
        owner = weakref.ref(self)  # a reader must not keep a dropped executor alive
        del self
        try:
            while futures:
                # In a list, not a variable: the generator must not hold the result while suspended.
                value = [_result_or_cancel(futures.popleft(), None if end is None else end - time.monotonic())]
                executor = owner() if more is not None else None
                if executor is not None:
                    args = next(more, None)  # type: ignore[arg-type]
                    if args is not None:
                        futures.append(executor.submit(fn, *args))
                    del executor
                yield value.pop()
        finally:
            for future in futures:
                future.cancel()

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any], timeout: float | None = None,
            chunksize: int = 1, buffersize: int | None = None) -> Iterator[Any]:
        """``map(fn, *iterables)`` on the workers, as a lazy iterator of results in input order.

        Args:
            timeout: seconds from this call until every result must be in; a later one raises
                ``TimeoutError`` when it is read.
            chunksize: ignored here (``ProcessPoolExecutor`` sends inputs this many at a time).
            buffersize: submit only this many calls ahead of the reader (3.14): the inputs are read
                as results are, so an endless iterable works. Default: submit all now.
        """
        self._check_map(chunksize, buffersize)
        return self._map_calls(fn, zip(*iterables), timeout, buffersize)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No new work; ``cancel_futures`` cancels what has not started; ``wait`` waits for the rest.

        As the stdlib's process pool, which has handed a worker's worth of tasks to its call queue
        (they count as running), the first ``max_workers`` submitted tasks that have not started
        are not cancelled: they run, whatever the threads' timing was until then.
        """
        if cancel_futures:
            not_started = [future for future in list(self._waiting) if not future.running()]
            for future in not_started[self._pool.workers:]:
                future.cancel()  # a cancelled future's task is skipped when its turn comes
        self._pool.shutdown(wait=wait)


class ProcessPoolExecutor(_PoolExecutor, concurrent.futures.ProcessPoolExecutor):
    """``concurrent.futures.ProcessPoolExecutor`` on conveyor's process backend.

    A subclass of the stdlib's class for ``isinstance`` checks only: every public method is this
    module's, and none of the stdlib's machinery is started.

    Args:
        max_workers: number of worker processes (default: the usable cores).
        mp_context: a ``multiprocessing`` context (or a start method's name) for the workers;
            default conveyor's (``forkserver`` on Linux).
        initializer: called as ``initializer(*initargs)`` once in each worker.
        initargs: its arguments.
        max_tasks_per_child: replace a worker after this many tasks (not with ``fork``, as in the
            stdlib).
    """

    def __init__(self, max_workers: int | None = None, mp_context: Any = None,
                 initializer: Callable[..., Any] | None = None, initargs: tuple[Any, ...] = (), *,
                 max_tasks_per_child: int | None = None) -> None:
        _check_max_workers(max_workers)
        _check_initializer(initializer)
        method = start_method_of(mp_context)
        if max_tasks_per_child is not None:
            if not isinstance(max_tasks_per_child, int):
                raise TypeError("max_tasks_per_child must be an integer")
            if max_tasks_per_child <= 0:
                raise ValueError("max_tasks_per_child must be >= 1")
            if method == "fork":
                raise ValueError("max_tasks_per_child is incompatible with the 'fork' multiprocessing "
                                 "start method; supply a different mp_context.")
        super().__init__(workers=max_workers, backend="process", initializer=initializer, initargs=initargs,
                         max_tasks_per_worker=max_tasks_per_child, start_method=method)

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any], timeout: float | None = None,
            chunksize: int = 1, buffersize: int | None = None) -> Iterator[Any]:
        """As :meth:`Executor.map`; inputs travel ``chunksize`` at a time (one task per chunk), and
        ``buffersize`` counts chunks."""
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        self._check_map(chunksize, buffersize)
        if chunksize == 1:
            return self._map_calls(fn, zip(*iterables), timeout, buffersize)
        chunks = ((fn, chunk) for chunk in _chunks(zip(*iterables), chunksize))
        results = self._map_calls(_run_chunk, chunks, timeout, buffersize)
        return itertools.chain.from_iterable(results)


class ThreadPoolExecutor(_PoolExecutor, concurrent.futures.ThreadPoolExecutor):
    """``concurrent.futures.ThreadPoolExecutor`` on conveyor's thread backend.

    A subclass of the stdlib's class for ``isinstance`` checks only (``asyncio``'s
    ``set_default_executor`` asks for one): every public method is this module's.

    Args:
        max_workers: number of worker threads (default: ``min(32, cores + 4)``, as the stdlib).
        thread_name_prefix: worker threads are named ``{prefix}_0``, ``{prefix}_1``...
        initializer: called as ``initializer(*initargs)`` once in each worker thread.
        initargs: its arguments.
    """

    _counter = itertools.count().__next__

    def __init__(self, max_workers: int | None = None, thread_name_prefix: str = "",
                 initializer: Callable[..., Any] | None = None, initargs: tuple[Any, ...] = ()) -> None:
        _check_max_workers(max_workers)
        _check_initializer(initializer)
        prefix = thread_name_prefix or f"ThreadPoolExecutor-{self._counter()}"
        super().__init__(workers=max_workers, backend="thread", initializer=initializer, initargs=initargs,
                         thread_name_prefix=prefix)

