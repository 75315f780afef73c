"""Pool: ``map`` / ``imap`` / ``imap_unordered`` / ``starmap`` / ``submit`` / ``apply_async`` on any backend.

A Pool is a ``concurrent.futures.Executor`` (so ``as_completed``, ``wait`` and
``loop.run_in_executor`` work) that also speaks the ``multiprocessing.Pool`` dialect (``apply``,
``map_async``, ``close``, ``join``, ``terminate``). It knows only the backend contract: which backend
runs the work is one argument.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import functools
import itertools
import threading
import time
import weakref

from conveyor._core import config as _config
from conveyor._core import forkserver
from conveyor.aio import AsyncPoolMethods
from conveyor.async_result import AsyncResult
from conveyor.primitives import PrimitiveFactories

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing before the fork server starts
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from typing import Any, Callable

    from conveyor._core.statistics import PoolStatistics
    from conveyor._core.stream import Stream
    from conveyor.abc import Backend
    from conveyor.group import TaskGroup
    from conveyor.progress import ProgressOption

# What a pool runs on (the backend registry, streams, calls, errors, progress) is imported where it
# is first used, not here: ``Pool()`` starts the fork server first, and a short program's fork
# server then boots on another core while this process imports the rest (docs/architecture.md,
# "Start-up cost").

__all__ = ["POOL_KEYWORDS", "Pool", "default_workers"]

POOL_KEYWORDS = ("workers", "backend", "initializer", "initargs", "finalizer", "finalargs", "chunksize",
                 "task_timeout", "retries", "max_tasks_per_worker", "max_memory_per_worker", "start_method",
                 "progress", "shared", "concurrency")
"""The keywords of :class:`Pool` itself; anything else must be an option of its backend."""

_live_backends: weakref.WeakSet[Backend] = weakref.WeakSet()
_draining_backends: weakref.WeakSet[Backend] = weakref.WeakSet()
"""Closed with ``close()`` or ``shutdown(wait=False)``, or a ``conveyor.futures`` executor: the user
asked for their work to finish."""

_exiting = False
"""The exit hook has run: pools are stopped, and ``submit`` raises as ``concurrent.futures`` does."""


def _stop_live_backends() -> None:
    """At interpreter exit: finish what the user closed gracefully; stop the rest at once, quietly.

    Registered after ``multiprocessing.util`` is imported, so it runs before multiprocessing's own exit
    hook, which would otherwise wait forever for our (non-daemon) worker processes.
    """
    global _exiting
    _exiting = True
    for backend in list(_live_backends):
        graceful = backend in _draining_backends
        try:
            backend.shutdown(wait=True, cancel_pending=not graceful, kill=not graceful)
        except BaseException:  # noqa: BLE001 - exiting anyway; never print at exit
            pass


atexit.register(_stop_live_backends)


def _drop_backend(backend: Backend) -> None:
    """A pool was garbage-collected without shutdown: cancel what is pending, stop the workers.

    Done from a new thread: the collection may run in any thread, even one that holds the backend's
    own lock at that moment.
    """
    stop = functools.partial(backend.shutdown, wait=False, cancel_pending=True, kill=True)
    threading.Thread(target=stop, name="conveyor-drop-pool", daemon=True).start()


def default_workers(backend: str) -> int:
    """The workers of a pool on ``backend`` that does not say: the backend decides from the usable cores
    (one per core for processes; more for threads, which mostly wait)."""
    from conveyor._core.registry import backend_class

    return backend_class(backend).default_workers(_config.usable_cores())


def _positive(name: str, value: Any, *, allow_none: bool = True, integer: bool = True) -> None:
    if value is None and allow_none:
        return
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or value <= 0:
        raise ValueError(f"{name} must be a positive {'integer' if integer else 'number'}, got {value!r}")


def _check_iterables(method: str, iterables: tuple[Iterable[Any], ...]) -> None:
    """Each input must be iterable. An ``int`` after the first is ``multiprocessing.Pool``'s positional
    ``chunksize`` (``pool.map(f, xs, 10)``): say so, instead of ``'int' object is not iterable``."""
    for position, iterable in enumerate(iterables):
        try:
            iter(iterable)
        except TypeError:
            hint = ""
            if position and isinstance(iterable, int) and not isinstance(iterable, bool):
                hint = (f"; chunksize is keyword-only in conveyor.Pool: {method}(fn, items, chunksize={iterable}) "
                        "(conveyor.multiprocessing.Pool takes it by position)")
            raise TypeError(f"{method}() argument {position + 2} must be iterable, "
                            f"not {type(iterable).__name__}{hint}") from None


def _length(iterables: tuple[Iterable[Any], ...]) -> int | None:
    try:
        return min(len(iterable) for iterable in iterables)  # type: ignore[arg-type]
    except (TypeError, OverflowError):  # no len(), or one too large for it (range(2**64)): unknown
        return None


class Pool(AsyncPoolMethods, concurrent.futures.Executor, PrimitiveFactories):
    """A pool of workers on one backend.

    Args:
        workers: number of workers (default: usable cores; for threads, cores + 4 up to 32).
        backend: ``"serial"``, ``"thread"``, ``"process"``, ``"auto"`` (one of those per function,
            chosen by measuring its first calls: docs/choosing.md) or a registered name (default
            from :func:`conveyor.config`, initially ``"process"``).
        initializer: called once in each worker before any task, with ``initargs``.
        finalizer: called with ``finalargs`` in each worker when it ends normally: the pool is
            closed or shut down gracefully (``close()``, ``shutdown()`` without ``kill``, the end of a
            ``with`` block without an exception), or the worker is recycled (``max_tasks_per_worker``,
            ``max_memory_per_worker``). Not in a worker whose initializer failed. Processes: it runs
            in the worker before it exits, pickled like the initializer; a killed worker does not run
            it (``kill=True``, ``terminate()``, ``task_timeout``, a crash, a broken pool).
            ``shutdown(wait=True)`` waits for it, so one that hangs hangs a graceful shutdown, as any
            task would; a later ``shutdown(kill=True)`` still kills the worker. Threads cannot be
            killed: a worker thread runs it whenever it leaves, except one abandoned in a running task
            (``task_timeout``, ``kill=True``). Serial: it runs once, at the first shutdown. If it
            raises, a warning is logged (logger ``"conveyor"``) and the worker still ends cleanly.
        chunksize: inputs per batch for map-like calls; default automatic (adapts to task duration).
        task_timeout: seconds one task may run. Processes: the worker is killed and replaced.
            Threads and serial: the task fails on time but its code cannot be stopped.
        retries: extra attempts for a task that raised, crashed its worker or timed out.
        max_tasks_per_worker: replace a worker after this many tasks (leaky libraries).
        max_memory_per_worker: replace a worker (between tasks, with a ``WorkerRecycledWarning``) once
            its resident memory passes this: bytes, or a string like ``"512MB"`` or ``"2GiB"``.
            Process backend only: threads share one process's memory.
        start_method: ``"fork"``, ``"forkserver"`` or ``"spawn"`` (process backend); default forkserver
            on Linux, spawn elsewhere.
        progress: default for map-like calls: True for a tqdm bar, a callable ``(done, total)``, or
            an object with ``update(n)``.
        concurrency: for a coroutine function (``async def``): how many of its calls each worker
            runs at once on an event loop of its own (default 100). Its ``task_timeout`` cancels the
            call inside the loop; no process is killed.
        shared: a large read-only object placed once for every worker (``conveyor.shared``); tasks
            read it as ``conveyor.worker_state().shared``. On processes it is in shared memory, with
            NumPy arrays as read-only views of one copy; on threads it is the object itself.
        **options: backend-specific options.

    Example:
        >>> import conveyor
        >>> with conveyor.Pool(2, backend="thread") as pool:
        ...     pool.map(abs, [-1, -2, 3])
        [1, 2, 3]
    """

    def __init__(
        self,
        workers: int | None = None,
        *,
        backend: str | None = None,
        initializer: Callable[..., Any] | None = None,
        initargs: Iterable[Any] = (),
        finalizer: Callable[..., Any] | None = None,
        finalargs: Iterable[Any] = (),
        chunksize: int | None = None,
        task_timeout: float | None = None,
        retries: int | None = None,
        max_tasks_per_worker: int | None = None,
        max_memory_per_worker: int | str | None = None,
        start_method: str | None = None,
        progress: ProgressOption = None,
        shared: Any = None,
        concurrency: int | None = None,
        **options: Any,
    ) -> None:
        defaults = _config.current()
        self.backend_name = backend or defaults["backend"]
        # The fork server's start-up (a new interpreter and its imports) runs while this process
        # imports the backend and prepares the first batch, not after.
        forkserver.start_for(self.backend_name, start_method or defaults["start_method"])
        from conveyor._core.options import check_keywords
        from conveyor._core.registry import backend_class
        from conveyor._core.task import Stats
        from conveyor.abc import BackendConfig

        cls = backend_class(self.backend_name)
        check_keywords(options, POOL_KEYWORDS + tuple(cls.option_names), f"Pool(backend={self.backend_name!r})")
        self._shared: Any = None
        if shared is not None:
            # Placed once; every worker finds it in conveyor.worker_state().shared before its
            # initializer runs (a handle made here is closed with the pool's last worker).
            from conveyor._core.state import WorkerSetup
            from conveyor.sharing import Shared

            in_memory = cls.capabilities.shared_memory
            if isinstance(shared, Shared) or not in_memory:
                handle = shared
            else:
                handle = self._shared = Shared(shared)
            initializer = WorkerSetup(handle, initializer, tuple(initargs), handle=isinstance(handle, Shared))
            initargs = ()
        workers = workers if workers is not None else defaults["workers"]
        workers_given = workers is not None
        workers = workers if workers is not None else default_workers(self.backend_name)
        _positive("workers", workers, allow_none=False)
        self._chunksize = chunksize if chunksize is not None else defaults["chunksize"]
        _positive("chunksize", self._chunksize)
        self._task_timeout = task_timeout if task_timeout is not None else defaults["task_timeout"]
        _positive("task_timeout", self._task_timeout, integer=False)
        self._retries = retries if retries is not None else defaults["retries"]
        if isinstance(self._retries, bool) or not isinstance(self._retries, int) or self._retries < 0:
            raise ValueError(f"retries must be an integer >= 0, got {self._retries!r}")
        max_tasks = max_tasks_per_worker if max_tasks_per_worker is not None else defaults["max_tasks_per_worker"]
        _positive("max_tasks_per_worker", max_tasks)
        for name, hook in (("initializer", initializer), ("finalizer", finalizer)):
            if hook is not None and not callable(hook):
                raise TypeError(f"{name} must be callable, got {hook!r}")
        self._progress = progress if progress is not None else defaults["progress"]
        _positive("concurrency", concurrency)
        self._concurrency = concurrency
        self._backend: Backend = cls(BackendConfig(
            workers=workers,
            initializer=initializer,
            initargs=tuple(initargs),
            finalizer=finalizer,
            finalargs=tuple(finalargs),
            max_tasks_per_worker=max_tasks,
            max_memory_per_worker=_config.parse_size(max_memory_per_worker, "max_memory_per_worker"),
            start_method=start_method or defaults["start_method"],
            options=options,
            workers_given=workers_given,
        ))
        self._stats = Stats()
        self._submit_index = itertools.count()
        self._closed = False
        self._primitives: Any = None
        self._jobs: set[threading.Thread] = set()
        self._jobs_lock = threading.Lock()
        self._streams: weakref.WeakSet[Stream] = weakref.WeakSet()  # lazy calls: feed after close()
        _live_backends.add(self._backend)
        import multiprocessing.util  # noqa: F401 - its exit hook registered before ours, which must run first

        # Run our exit hook before any that the backend's engine registered when it was imported
        # (atexit runs the newest first): work closed gracefully must finish while the engine works.
        atexit.unregister(_stop_live_backends)
        atexit.register(_stop_live_backends)
        self._finalizer = weakref.finalize(self, _drop_backend, self._backend)
        self._finalizer.atexit = False
        keep = getattr(self._backend, "keep_until_finished", None)
        if self._shared is not None and keep is not None:
            keep(self._shared)  # the backend closes it once its last worker is gone

    def _primitive_backend(self) -> tuple[Any, str]:
        return self._backend.capabilities, self.backend_name

    def _primitive_factory(self) -> Any:
        if self._primitives is None:
            self._primitives = self._backend.worker_primitives()
        return self._primitives

    def TaskGroup(self) -> TaskGroup:  # noqa: N802 - a factory, named after what it makes
        """A :class:`conveyor.TaskGroup` on this pool's backend (its own threads or processes, not the
        pool's workers), with the pool's backend options: on a cluster, the pool's own cluster."""
        from conveyor.group import TaskGroup

        return TaskGroup(self.backend_name, start_method=self._backend.config.start_method,
                         **self._backend.group_options())

    # -- introspection -----------------------------------------------------------------------------
    @property
    def workers(self) -> int:
        return self._backend.workers

    @property
    def capabilities(self) -> Any:
        return self._backend.capabilities

    def statistics(self) -> PoolStatistics:
        """Counters: submitted == succeeded + failed + cancelled + in_flight, plus the backend's own
        (a frozen :class:`~conveyor.PoolStatistics`, also readable as a mapping: ``stats["failed"]``)."""
        from conveyor._core.statistics import PoolStatistics  # with the pool machinery, not at import

        return PoolStatistics(**self._stats.snapshot(), backend=self.backend_name, workers=self.workers,
                              backend_statistics=self._backend.statistics())

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<conveyor.Pool backend={self.backend_name!r} workers={self.workers} {state}>"

    # -- single tasks ------------------------------------------------------------------------------
    def _check_open(self) -> None:
        broken = self._backend.broken()
        if broken is not None:
            raise broken
        if self._closed or _exiting:
            from conveyor._core.errors import PoolClosedError

            if self._closed:
                raise PoolClosedError("cannot submit to a pool that is closed or shut down")
            # its backend is stopped: a failed future would hide why (the stdlib's words)
            raise PoolClosedError("cannot schedule new futures after interpreter shutdown")

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        """Run ``fn(*args, **kwargs)`` on a worker; returns a ``concurrent.futures.Future``."""
        return self._submit_call(fn, args, kwargs)[0]

    def _submit_call(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """``(future, call)``: the call is what a cancelled ``arun`` stops."""
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {fn!r}")
        self._check_open()
        from conveyor._core.task import FutureDelivery, SubmitCall
        from conveyor.abc import CallKind, TaskFunction

        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        fn, timeout, _ = self._coroutines(fn, self._task_timeout)
        call = SubmitCall(self._backend, TaskFunction(fn), CallKind.FULL, FutureDelivery(future), self._stats,
                          timeout=timeout, retries=self._retries, future=future)
        call.send([(args, kwargs)], [next(self._submit_index)])
        return future, call

    def apply(self, fn: Callable[..., Any], args: Iterable[Any] = (), kwds: dict[str, Any] | None = None) -> Any:
        """Run one call and wait for its result."""
        return self.submit(fn, *args, **(kwds or {})).result()

    def apply_async(
        self,
        fn: Callable[..., Any],
        args: Iterable[Any] = (),
        kwds: dict[str, Any] | None = None,
        callback: Callable[[Any], Any] | None = None,
        error_callback: Callable[[BaseException], Any] | None = None,
    ) -> AsyncResult:
        """Run one call; callbacks run in a conveyor thread when it finishes (keep them short)."""
        return AsyncResult(self.submit(fn, *args, **(kwds or {})), callback, error_callback)

    # -- many tasks --------------------------------------------------------------------------------
    def _stream(self, method: str, fn: Callable[..., Any], iterables: tuple[Iterable[Any], ...], star: bool, *,
                ordered: bool, chunksize: int | None, task_timeout: float | None, retries: int | None,
                timeout: float | None, progress: ProgressOption) -> Stream:
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {fn!r}")
        if not iterables:
            raise TypeError(f"{method}() needs at least one iterable")
        _check_iterables(method, iterables)
        self._check_open()
        _positive("chunksize", chunksize)
        _positive("task_timeout", task_timeout, integer=False)
        from conveyor._core.stream import Stream
        from conveyor.abc import CallKind
        from conveyor.progress import make_progress

        total = _length(iterables)
        kind = CallKind.STAR if star else CallKind.ONE
        if len(iterables) == 1:
            source: Iterable[Any] = iterables[0]
        else:
            source, kind = zip(*iterables), CallKind.STAR
        option = self._progress if progress is None else progress
        name = getattr(fn, "__name__", "tasks")
        fn, task_timeout, at_once = self._coroutines(fn, task_timeout if task_timeout is not None else self._task_timeout)
        if chunksize is None:
            chunksize = self._chunksize if self._chunksize is not None else at_once
        stream = Stream(
            self._backend, self._stats, fn, source, kind,
            keepalive=self,
            ordered=ordered,
            chunksize=chunksize,
            task_timeout=task_timeout,
            retries=retries if retries is not None else self._retries,
            timeout=timeout,
            total=total,
            progress=make_progress(option, total, name),
        )
        self._streams.add(stream)
        return stream

    def _coroutines(self, fn: Callable[..., Any], timeout: float | None,
                    ) -> tuple[Callable[..., Any], float | None, int | None]:
        """``(task function, task_timeout for the backend, batch size)``. A coroutine function becomes
        a ``Coroutines`` task: each worker runs a batch of its calls at once (a batch as large as
        the concurrency, unless ``chunksize`` says), and keeps their time limit itself, so the
        backend is given none."""
        from conveyor._core.coroutines import DEFAULT_CONCURRENCY, Coroutines, is_coroutine_function

        if not is_coroutine_function(fn):
            return fn, timeout, None
        concurrency = self._concurrency or DEFAULT_CONCURRENCY
        return Coroutines(fn, concurrency, timeout), None, concurrency

    # A list, not Executor.map's lazy iterator (imap is that), and more options: a deliberate difference.
    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any],  # type: ignore[override]
            timeout: float | None = None, chunksize: int | None = None, task_timeout: float | None = None,
            retries: int | None = None, progress: ProgressOption = None) -> list[Any]:
        """``[fn(x) for x in iterable]`` in parallel, as a list in input order.

        Several iterables are zipped (``fn(a, b)``), as in the builtin ``map``. The first failure in
        input order is raised, and work not yet started is dropped.

        Args:
            timeout: overall limit on waiting for the next result (``ResultTimeoutError``).
            chunksize, task_timeout, retries, progress: override the pool's defaults for this call.
        """
        return self._stream("map", fn, iterables, False, ordered=True, chunksize=chunksize,
                            task_timeout=task_timeout, retries=retries, timeout=timeout,
                            progress=progress).collect()

    def imap(self, fn: Callable[..., Any], *iterables: Iterable[Any], timeout: float | None = None,
             chunksize: int | None = None, task_timeout: float | None = None, retries: int | None = None,
             progress: ProgressOption = None) -> Stream:
        """Lazy, ordered results; holds only O(workers × chunk) inputs, so infinite inputs work.

        A failed task raises at its position; iteration may continue past it.
        """
        return self._stream("imap", fn, iterables, False, ordered=True, chunksize=chunksize,
                            task_timeout=task_timeout, retries=retries, timeout=timeout, progress=progress)

    def imap_unordered(self, fn: Callable[..., Any], *iterables: Iterable[Any], timeout: float | None = None,
                       chunksize: int | None = None, task_timeout: float | None = None,
                       retries: int | None = None, progress: ProgressOption = None) -> Stream:
        """Like :meth:`imap`, in completion order."""
        return self._stream("imap_unordered", fn, iterables, False, ordered=False, chunksize=chunksize,
                            task_timeout=task_timeout, retries=retries, timeout=timeout, progress=progress)

    def starmap(self, fn: Callable[..., Any], iterable: Iterable[Iterable[Any]], *,
                timeout: float | None = None, chunksize: int | None = None, task_timeout: float | None = None,
                retries: int | None = None, progress: ProgressOption = None) -> list[Any]:
        """``[fn(*args) for args in iterable]`` in parallel, as a list."""
        return self._stream("starmap", fn, (iterable,), True, ordered=True, chunksize=chunksize,
                            task_timeout=task_timeout, retries=retries, timeout=timeout,
                            progress=progress).collect()

    def istarmap(self, fn: Callable[..., Any], iterable: Iterable[Iterable[Any]], *, ordered: bool = True,
                 timeout: float | None = None, chunksize: int | None = None, task_timeout: float | None = None,
                 retries: int | None = None, progress: ProgressOption = None) -> Iterator[Any]:
        """Lazy :meth:`starmap`."""
        return self._stream("istarmap", fn, (iterable,), True, ordered=ordered, chunksize=chunksize,
                            task_timeout=task_timeout, retries=retries, timeout=timeout, progress=progress)

    def map_async(self, fn: Callable[..., Any], iterable: Iterable[Any], chunksize: int | None = None,
                  callback: Callable[[Any], Any] | None = None,
                  error_callback: Callable[[BaseException], Any] | None = None) -> AsyncResult:
        """:meth:`map` in the background; ``.get(timeout)`` gives the list."""
        stream = self._stream("map_async", fn, (iterable,), False, ordered=True, chunksize=chunksize,
                              task_timeout=None, retries=None, timeout=None, progress=None)
        return self._in_background(stream.collect, callback, error_callback)

    def starmap_async(self, fn: Callable[..., Any], iterable: Iterable[Iterable[Any]],
                      chunksize: int | None = None, callback: Callable[[Any], Any] | None = None,
                      error_callback: Callable[[BaseException], Any] | None = None) -> AsyncResult:
        """:meth:`starmap` in the background."""
        stream = self._stream("starmap_async", fn, (iterable,), True, ordered=True, chunksize=chunksize,
                              task_timeout=None, retries=None, timeout=None, progress=None)
        return self._in_background(stream.collect, callback, error_callback)

    def _in_background(self, job: Callable[[], Any], callback: Any, error_callback: Any) -> AsyncResult:
        """Run ``job`` (a stream made in the caller's thread, before any ``close()`` that follows the
        call) in a thread of its own."""
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        future.set_running_or_notify_cancel()

        def run() -> None:
            try:
                future.set_result(job())
            except BaseException as exc:  # noqa: BLE001 - delivered to whoever waits
                future.set_exception(exc)
            finally:
                with self._jobs_lock:
                    self._jobs.discard(thread)

        result = AsyncResult(future, callback, error_callback)
        thread = threading.Thread(target=run, name="conveyor-map-async", daemon=True)
        with self._jobs_lock:
            self._jobs.add(thread)
        thread.start()
        return result

    def _wait_for_jobs(self) -> None:
        """Let ``map_async`` calls made before close/shutdown feed all their inputs."""
        while True:
            with self._jobs_lock:
                jobs = [job for job in self._jobs if job is not threading.current_thread()]
            if not jobs:
                return
            for job in jobs:
                job.join(0.1)

    def _feeding(self) -> bool:
        """Whether a lazy call (``imap`` and kin) made before close() has inputs it has not sent yet.
        It sends them only as its consumer reads, so a closed pool must keep taking its batches."""
        return any(not stream._exhausted for stream in list(self._streams))

    def _wait_for_streams(self) -> None:
        """Until every lazy call has sent all its inputs, or was closed or dropped by its consumer
        (the streams are held weakly: an abandoned one goes with the next garbage collection)."""
        while self._feeding():
            time.sleep(0.05)

    # -- lifetime ----------------------------------------------------------------------------------
    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False, kill: bool = False) -> None:
        """Stop accepting work.

        Args:
            wait: block until the workers are gone.
            cancel_futures: cancel tasks that have not started.
            kill: also stop running tasks now (processes are killed; they fail with
                ``TaskCancelledError``). Implies ``cancel_futures``.
        """
        self._closed = True
        cancel = cancel_futures or kill
        if not wait and not cancel:
            _draining_backends.add(self._backend)
        self._finalizer.detach()  # from now on the user has said how this pool ends
        if not cancel:
            if wait:
                self._wait_for_jobs()
            elif self._jobs or self._feeding():
                threading.Thread(target=self._finish_later, name="conveyor-pool-close", daemon=True).start()
                return
        self._backend.shutdown(wait=wait, cancel_pending=cancel, kill=kill)
        if wait:
            _live_backends.discard(self._backend)
            if self._shared is not None:
                self._shared.close()

    def _finish_at_exit(self) -> None:
        """At interpreter exit, let this pool's submitted work finish instead of cancelling it: the
        ``concurrent.futures`` executors promise that for an executor never shut down."""
        _draining_backends.add(self._backend)

    def _finish_later(self) -> None:
        """close() with work still to be sent: the backend drains once every call made before it has
        sent its inputs (``multiprocessing.Pool``: ``imap``, then ``close()``, then iterate)."""
        self._wait_for_jobs()
        self._wait_for_streams()
        self._backend.shutdown(wait=False)

    def close(self) -> None:
        """No more work; what was submitted still runs (``multiprocessing.Pool.close``), and lazy
        calls made before it still send their inputs as their results are read."""
        self.shutdown(wait=False)

    def join(self) -> None:
        """Wait for the workers to exit; call :meth:`close` or :meth:`terminate` first.

        A lazy call (``imap`` and kin) sends its inputs as its results are read, so one not read to
        its end by then stops here (its later results raise ``PoolClosedError``): read it before
        ``join()``. (``multiprocessing.Pool`` queues every input of ``imap`` at once, without bound.)
        """
        if not self._closed:
            raise ValueError("call close() or terminate() before join()")
        self.shutdown(wait=True)

    def terminate(self) -> None:
        """Stop now: pending work is cancelled, running tasks are killed (``multiprocessing.Pool``)."""
        self.shutdown(wait=True, kill=True)

    def __enter__(self) -> Pool:
        """Raises PoolClosedError (a ValueError and a RuntimeError) on a closed or terminated pool."""
        if self._closed:
            from conveyor._core.errors import PoolClosedError

            raise PoolClosedError("cannot enter a pool that is closed or shut down")
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        """Normal exit waits for submitted work; an exception (Ctrl-C included) stops everything."""
        if exc_type is None:
            self.shutdown(wait=True)
        else:
            self.shutdown(wait=True, kill=True)
