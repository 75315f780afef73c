"""The thread backend: batches run on worker threads of this process.

::

    submit ──► queue (deque + Condition) ──► worker thread 1..N ──► Batch.finish
                                                  ▲
                            watchdog thread ──────┘ fails overdue items (task_timeout)

Python cannot stop a thread, so ``task_timeout`` here is cooperative: the watchdog fails the overdue
task on time, hands the rest of its batch back to the core, and starts a replacement thread; the
abandoned thread finishes the call in the background and its result is discarded. The same holds for
a killing shutdown. Worker threads are daemons so that an abandoned call can never keep the program
from exiting.
"""

from __future__ import annotations

import collections
import itertools
import threading
import time
from typing import Any

from conveyor._backends._shared.inline import BatchRun, run_finalizer, timeout_error
from conveyor._backends.local.primitives import InProcess
from conveyor._backends.local.tasks import ThreadTask
from conveyor._core.coroutines import close_thread_loop
from conveyor._core.errors import InitializerError, PoolClosedError, TaskCancelledError
from conveyor._core.state import enter_worker_thread
from conveyor._core.statistics import ThreadStatistics
from conveyor.abc import Backend, BackendConfig, Batch, Capabilities, Outcome, SpawnedTask

_WATCH_SECONDS = 0.02
_names = itertools.count(1)


class _Worker:
    """One worker thread and the batch it is running."""

    def __init__(self, backend: ThreadBackend) -> None:
        self.backend = backend
        self.run: BatchRun | None = None
        self.abandoned = False
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._main, name=backend._thread_name(), daemon=True)

    def _main(self) -> None:
        try:
            self._serve()
        finally:  # however this thread ends, it no longer counts as a worker
            with self.backend._cv:
                self.backend._workers.discard(self)
                self.backend._threads.discard(self)
                self.backend._cv.notify_all()

    def _serve(self) -> None:
        config = self.backend.config
        enter_worker_thread()  # conveyor.worker_state() is this thread's own
        if config.initializer is not None:
            try:
                config.initializer(*config.initargs)
            except BaseException as exc:  # noqa: BLE001 - the pool is broken, every waiter must hear why
                self.backend._break(exc, self)
                return
        self._loop()
        if not self.abandoned:  # left behind in a call, it is as good as a killed process
            run_finalizer(config.finalizer, config.finalargs)
        close_thread_loop()  # the event loop of its coroutine tasks, if it ran any

    def _loop(self) -> None:
        backend = self.backend
        config = backend.config
        done = 0
        limit = config.max_tasks_per_worker
        while True:
            batch = backend._next_batch(self)
            if batch is None:
                return
            run = BatchRun(batch)
            with self.lock:
                self.run = run
            run.run(should_stop=lambda: self.abandoned)
            with self.lock:
                self.run = None
                if self.abandoned:
                    return  # the watchdog already reported this batch and replaced us
            batch.finish(Outcome(run.values, run.errors, busy=run.busy))
            done += len(batch)
            del batch, run  # while this worker waits for the next one, they would keep their call's
            # results stream alive: a stream its consumer dropped must go (a closed pool waits for it)
            if limit is not None and done >= limit:
                backend._replace(self)
                return


class ThreadBackend(InProcess, Backend):
    name = "thread"
    option_names = frozenset({"thread_name_prefix"})
    """``thread_name_prefix``: a pool's worker threads are named ``{prefix}_0``, ``{prefix}_1``... (as
    ``ThreadPoolExecutor`` names them) instead of ``conveyor-thread-N``; a task group's threads
    ``{prefix}_{task name}``."""
    capabilities = Capabilities()

    @classmethod
    def default_workers(cls, cores: int) -> int:
        """More threads than cores (as ``ThreadPoolExecutor``): threads mostly wait on I/O."""
        return min(32, cores + 4)

    @classmethod
    def spawn(cls, config: BackendConfig, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any], name: str,
              on_done: Any = None) -> SpawnedTask:
        prefix = config.options.get("thread_name_prefix")
        return ThreadTask(fn, args, kwargs, f"{prefix}_{name}" if prefix else name, on_done)

    def __init__(self, config: BackendConfig) -> None:
        super().__init__(config)
        self._queue: collections.deque[Batch] = collections.deque()
        self._cv = threading.Condition()
        self._workers: set[_Worker] = set()
        self._threads: set[_Worker] = set()
        """Worker threads not yet ended, less those abandoned in a call: what ``shutdown(wait=True)``
        waits for. A superset of ``_workers``: a worker that has left them may still be finalizing."""
        self._closed = False
        self._killed = False
        self._finished = False  # shutdown(wait=True) returned: nothing is accepted any more
        self._broken: BaseException | None = None
        self._watchdog: threading.Thread | None = None
        self._replaced = 0
        self._prefix: str | None = config.options.get("thread_name_prefix") or None
        self._numbers = itertools.count()
        with self._cv:
            for _ in range(config.workers):
                self._start_worker()

    # -- worker management (called with self._cv held) ---------------------------------------------
    def _thread_name(self) -> str:
        if self._prefix is None:
            return f"conveyor-thread-{next(_names)}"
        return f"{self._prefix}_{next(self._numbers)}"

    def _start_worker(self) -> None:
        worker = _Worker(self)
        self._workers.add(worker)
        self._threads.add(worker)
        worker.thread.start()

    def _replace(self, worker: _Worker) -> None:
        """A worker leaves (recycled, or abandoned in a call): start another while work remains."""
        with self._cv:
            self._workers.discard(worker)
            if worker.abandoned:
                self._threads.discard(worker)
            if not self._killed and (not self._closed or self._queue):
                self._replaced += 1
                self._start_worker()
            self._cv.notify_all()

    def _break(self, exc: BaseException, worker: _Worker) -> None:
        error = InitializerError(f"the worker initializer raised {exc!r}; the pool cannot run tasks")
        error.__cause__ = exc
        with self._cv:
            self._workers.discard(worker)
            if self._broken is None:
                self._broken = error
            pending = list(self._queue)
            self._queue.clear()
            self._cv.notify_all()
        for batch in pending:
            if batch.claim():
                batch.finish(Outcome([None] * len(batch), dict.fromkeys(range(len(batch)), error)))

    def _next_batch(self, worker: _Worker) -> Batch | None:
        with self._cv:
            while True:
                if self._broken is not None:
                    self._workers.discard(worker)
                    self._cv.notify_all()
                    return None
                while self._queue:
                    batch = self._queue.popleft()
                    if batch.claim():
                        return batch
                if self._closed:
                    self._workers.discard(worker)
                    self._cv.notify_all()
                    return None
                self._cv.wait()

    # -- the contract ------------------------------------------------------------------------------
    def submit(self, batch: Batch) -> None:
        """Accept a batch until the pool is killed or drained (see the process backend's submit)."""
        with self._cv:
            if self._broken is not None:
                raise self._broken
            if self._killed or self._finished:
                raise PoolClosedError("cannot submit to a pool that is shut down")
            self._queue.append(batch)
            if not self._workers:  # closed and idle, but a running call still feeds inputs
                self._start_worker()
            self._cv.notify()
            if batch.timeout is not None and self._watchdog is None:
                self._watchdog = threading.Thread(target=self._watch, name="conveyor-thread-watchdog",
                                                  daemon=True)
                self._watchdog.start()

    def _abandon_run(self, worker: _Worker, error_for: Any) -> None:
        """Report a running batch now and leave its thread behind (timeout or killing shutdown)."""
        with worker.lock:
            run = worker.run
            if run is None or worker.abandoned:
                return
            position = run.position
            if position < 0:
                return
            error = error_for(run, position)
            if error is None:
                return
            worker.abandoned = True
            values = run.values[:position] + [None] * (len(run.batch) - position)
            errors = {p: e for p, e in run.errors.items() if p < position}
            errors[position] = error
            lost = range(position + 1, len(run.batch))
        self._replace(worker)
        if self._killed:
            stopped = TaskCancelledError("the pool was terminated before this task started")
            errors.update(dict.fromkeys(lost, stopped))
            lost = range(0)
        run.batch.finish(Outcome(values, errors, lost=lost, busy=time.monotonic() - run.started))

    def _watch(self) -> None:
        def overdue(run: BatchRun, position: int) -> BaseException | None:
            elapsed = time.monotonic() - run.started
            timeout = run.batch.timeout
            if timeout is not None and elapsed > timeout:
                return timeout_error(run.batch, position, elapsed)
            return None

        while True:
            with self._cv:
                if self._closed and not self._workers:
                    return
                workers = list(self._workers)
            for worker in workers:
                self._abandon_run(worker, overdue)
            time.sleep(_WATCH_SECONDS)

    def shutdown(self, *, wait: bool = True, cancel_pending: bool = False, kill: bool = False) -> None:
        with self._cv:
            self._closed = True
            self._killed = self._killed or kill
            pending: list[Batch] = []
            if cancel_pending or kill:
                pending = list(self._queue)
                self._queue.clear()
            self._cv.notify_all()
            workers = list(self._workers)
            threads = list(self._threads)
        for batch in pending:
            batch.abandon()
        if kill:
            cancelled = TaskCancelledError("the pool was terminated while this task ran")
            for worker in workers:
                self._abandon_run(worker, lambda run, position: cancelled)
        if wait and not any(worker.thread is threading.current_thread() for worker in threads):
            # (From one of our own threads, e.g. a done-callback, waiting for the others could
            # deadlock with another callback doing the same: the workers finish on their own.)
            while True:  # again and again: a recycled worker's replacement joins the set meanwhile
                with self._cv:
                    remaining = [worker for worker in self._threads
                                 if not worker.abandoned and worker.thread.is_alive()]
                    if not remaining:
                        self._finished = True
                        break
                for worker in remaining:
                    worker.thread.join()

    def broken(self) -> BaseException | None:
        return self._broken

    def statistics(self) -> ThreadStatistics:
        with self._cv:
            return ThreadStatistics(workers_alive=len(self._workers), workers_replaced=self._replaced,
                                    queued_batches=len(self._queue))
