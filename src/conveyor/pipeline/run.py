"""One execution of a pipeline: the feeds, each stage's pool or workers, the runner threads, and the
single way to stop them all.

The builder (``conveyor.pipeline.Pipeline``) only declares stages; each iteration makes a ``Run``.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Generator, Iterable, Iterator
from concurrent.futures import BrokenExecutor
from typing import Any, Callable

from conveyor._core import config as _config
from conveyor._core.coroutines import is_coroutine_function
from conveyor._core.errors import RemoteTraceback, ShutDown, TaskError
from conveyor._core.statistics import PipelineStatistics, StageStatistics
from conveyor._core.stream import Feed
from conveyor.pipeline.stages import (
    DEFAULT_MAXSIZE,
    END_GRACE_SECONDS,
    STOP_SECONDS,
    Stage,
    StageFailure,
    short_repr,
)
from conveyor.pipeline.work import Apply, AsyncApply, Dropped, ItemFailed, Many, each_worker
from conveyor.pool import Pool, default_workers


class StageRun:
    """Counters of one stage in one run."""

    def __init__(self, stage: Stage, inbox: Feed) -> None:
        self.stage = stage
        self.inbox = inbox
        self.pool: Pool | None = None
        self.context: Any = None
        """A generator stage's context on its backend, kept for the run: on a cluster backend its
        queues, its tasks and the local cluster they run on end when the context does."""
        self.workers = 1 if stage.kind == "batch" else stage.workers
        self.backend = stage.backend or ("-" if stage.kind == "batch" else None)
        self.items_in = 0
        self.items_out = 0
        self.failed = 0
        self.dropped = 0
        self.busy = 0.0
        self.blocked = 0.0


class Run:
    """One execution of a pipeline: feeds, pools, runner threads, and the single way to stop them."""

    def __init__(self, source: Iterable[Any], stages: tuple[Stage, ...], errors: str, maxsize: int) -> None:
        self._source = source
        self._errors = errors
        self._stages = [StageRun(stage, Feed(stage.maxsize or DEFAULT_MAXSIZE)) for stage in stages]
        self._output = Feed(maxsize)
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._cleanups: list[Callable[[], None]] = []
        self.failures: list[StageFailure] = []
        self._fatal: BaseException | None = None
        self._source_error: BaseException | None = None
        self._started = 0.0
        self._ended: float | None = None

    # -- plumbing ----------------------------------------------------------------------------------
    def _feed_after(self, index: int) -> Feed:
        return self._stages[index + 1].inbox if index + 1 < len(self._stages) else self._output

    def _sender(self, index: int) -> Callable[[Any], None]:
        """``put`` into the next feed, counting, and timing how long backpressure held it."""
        feed = self._feed_after(index)
        counts = self._stages[index] if index >= 0 else None
        receiver = self._stages[index + 1] if index + 1 < len(self._stages) else None

        def send(value: Any) -> None:
            if feed.maxsize > 0 and feed.waiting >= feed.maxsize and counts is not None:
                started = time.perf_counter()
                feed.put(value)
                counts.blocked += time.perf_counter() - started
            else:
                feed.put(value)
            if counts is not None:
                counts.items_out += 1
            if receiver is not None:
                receiver.items_in += 1

        return send

    def _thread(self, name: str, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=self._guard, args=(target, *args), name=f"conveyor-pipeline-{name}",
                                  daemon=True)
        self._threads.append(thread)
        thread.start()

    def _guard(self, target: Callable[..., None], *args: Any) -> None:
        try:
            target(*args)
        except ShutDown:
            pass  # the pipeline is stopping: a feed was closed under us
        except BaseException as exc:  # noqa: BLE001 - the pipeline's own failure: stop and report
            self._fail_fatally(exc)

    # -- starting ----------------------------------------------------------------------------------
    def results(self) -> Generator[Any, None, None]:
        self._started = time.perf_counter()
        finished = False
        try:
            self._start()
            for value in self._output:
                yield value
            finished = True
        finally:
            # After a normal end, something may still run: what fed a generator stage that returned
            # without reading all its input. Nothing will read what it makes: stop it as well.
            self._stop(kill=not finished or not self._joined(END_GRACE_SECONDS))
        self._ended = time.perf_counter()
        if self._fatal is not None:
            raise self._fatal
        if self._source_error is not None:
            raise self._source_error

    def _joined(self, seconds: float) -> bool:
        """Whether every runner has ended within ``seconds``."""
        deadline = time.monotonic() + seconds
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in self._threads if thread is not threading.current_thread())

    def _start(self) -> None:
        self._thread("source", self._pump_source)
        for index, counts in enumerate(self._stages):
            stage = counts.stage
            if stage.kind == "batch":
                self._thread(stage.name, self._run_batch, index)
            elif stage.kind == "each":
                self._start_each(index)
            else:
                self._thread(stage.name, self._run_pool_stage, index)

    def _pump_source(self) -> None:
        send = self._sender(-1)
        try:
            for item in self._source:
                send(item)
        except ShutDown:
            raise
        except BaseException as exc:  # noqa: BLE001 - raised once the items before it are through
            exc.add_note("conveyor pipeline: raised by the source")
            self._source_error = exc
        finally:
            self._feed_after(-1).end()

    # -- stages ------------------------------------------------------------------------------------
    def _run_pool_stage(self, index: int) -> None:
        counts = self._stages[index]
        stage = counts.stage
        assert stage.fn is not None  # only a batch stage has no function, and it runs in a thread instead
        send = self._sender(index)
        try:
            pool = Pool(stage.workers, backend=stage.backend, initializer=stage.on_start,
                        finalizer=stage.on_stop, task_timeout=stage.task_timeout, retries=stage.retries)
        except Exception as exc:  # noqa: BLE001 - e.g. on_start raising on the serial backend
            self._failed(counts, None, None, exc, fatal=True)
            return
        counts.pool, counts.workers, counts.backend = pool, pool.workers, pool.backend_name
        self._cleanups.append(lambda: pool.shutdown(wait=False, cancel_futures=True, kill=True))
        try:
            mapper = pool.imap if stage.ordered else pool.imap_unordered
            try:
                apply = (AsyncApply if is_coroutine_function(stage.fn) else Apply)(stage.kind, stage.fn)
                results = mapper(apply, counts.inbox,
                                 chunksize=stage.chunksize)
            except Exception as exc:  # noqa: BLE001 - the pool broke at once (an on_start that raised)
                self._failed(counts, None, None, exc, fatal=True)
                return
            while True:
                try:
                    result = next(results)
                except StopIteration:
                    break
                except ItemFailed as failure:  # the function raised on this item, on its last attempt
                    if self._stopping.is_set():
                        break
                    self._failed(counts, failure.item, short_repr(failure.item), failure.error)
                    continue
                except Exception as exc:  # noqa: BLE001 - a crash, timeout or unpicklable item, or the stop
                    if self._stopping.is_set():
                        break
                    # A stream that raised and closed, or a pool that broke (its on_start raised), cannot
                    # go on: the stage's remaining inputs would be dropped without a word, or fail one by
                    # one forever, so that failure stops the pipeline in any error mode. (A crashed
                    # worker's error is also a BrokenProcessPool, for stdlib code, but it is one task's.)
                    broken = isinstance(exc, BrokenExecutor) and not isinstance(exc, TaskError)
                    self._failed(counts, None, getattr(exc, "task_input", None), exc,
                                 fatal=getattr(results, "_closed", False) or broken)
                    continue
                if isinstance(result, Dropped):
                    counts.dropped += 1
                elif isinstance(result, Many):
                    for value in result.values:
                        send(value)
                else:
                    send(result)
        finally:
            counts.busy = pool.statistics().busy_seconds
            pool.shutdown(wait=True, cancel_futures=True, kill=self._stopping.is_set())
            if not self._stopping.is_set():
                self._feed_after(index).end()

    def _run_batch(self, index: int) -> None:
        counts = self._stages[index]
        send = self._sender(index)
        size = counts.stage.size
        group: list[Any] = []
        for item in counts.inbox:
            group.append(item)
            if len(group) == size:
                send(group)
                group = []
        if group and not self._stopping.is_set():
            send(group)
        if not self._stopping.is_set():
            self._feed_after(index).end()

    def _start_each(self, index: int) -> None:
        counts = self._stages[index]
        stage = counts.stage
        backend = stage.backend or _config.setting("backend")
        workers = stage.workers or 1
        counts.workers, counts.backend = workers, backend
        from conveyor._core.registry import backend_class

        if not backend_class(backend).capabilities.needs_pickle:
            # Its workers are this process's threads anyway (serial, thread): the stage's workers too.
            self._start_each_threads(index, workers)
            return
        # Elsewhere (processes, a cluster): the backend's own tasks, fed through its own queues.
        self._start_each_tasks(index, workers, backend)

    def _start_each_threads(self, index: int, workers: int) -> None:
        counts = self._stages[index]
        stage = counts.stage
        send = self._sender(index)
        remaining = [workers]
        lock = threading.Lock()

        def work() -> None:
            waited = [0.0]

            def inputs() -> Iterator[Any]:
                while True:
                    blocked = time.perf_counter()
                    taken = counts.inbox.take(1, block=True)
                    waited[0] += time.perf_counter() - blocked
                    if taken is None:
                        return
                    yield taken[0]

            started = None
            try:
                if stage.on_start is not None:
                    stage.on_start()
                started = time.perf_counter()
                try:
                    for value in stage.fn(inputs()):  # type: ignore[misc]
                        blocked = time.perf_counter()
                        send(value)
                        waited[0] += time.perf_counter() - blocked
                finally:
                    if stage.on_stop is not None:
                        stage.on_stop()
            except ShutDown:
                pass  # the pipeline is stopping
            except Exception as exc:  # noqa: BLE001 - this stage's failure
                if not self._stopping.is_set():
                    self._failed(counts, None, None, exc, fatal=True)
            finally:
                with lock:
                    if started is not None:
                        counts.busy += max(0.0, time.perf_counter() - started - waited[0])
                    remaining[0] -= 1
                    last = remaining[0] == 0
                if last and not self._stopping.is_set():
                    self._feed_after(index).end()

        for number in range(workers):
            self._thread(f"{stage.name}-{number}", work)

    def _start_each_tasks(self, index: int, workers: int, backend: str) -> None:
        from conveyor.context import context

        counts = self._stages[index]
        stage = counts.stage
        ctx = counts.context = context(backend)
        inbox, outbox = ctx.Queue(counts.inbox.maxsize), ctx.Queue(DEFAULT_MAXSIZE)
        group = ctx.TaskGroup()
        group.__enter__()
        handles: list[Any] = []

        def stop_group() -> None:
            inbox.shutdown(immediate=True)
            outbox.shutdown(immediate=True)
            for handle in list(handles):
                handle.terminate()

        self._cleanups.append(stop_group)  # before spawning: a worker started is always stopped
        try:
            for number in range(workers):
                handles.append(group.spawn(each_worker, stage.fn, inbox, outbox, stage.on_start, stage.on_stop,
                                           name=f"{stage.name}-{number}"))
        except BaseException as exc:
            stop_group()
            group.__exit__(type(exc), exc, exc.__traceback__)
            raise

        def forward() -> None:
            try:
                for item in counts.inbox:
                    inbox.put(item)
            finally:
                inbox.shutdown()

        def collect() -> None:
            send = self._sender(index)
            try:
                while True:
                    try:
                        send(outbox.get(timeout=0.1))
                        continue
                    except ShutDown:
                        break
                    except queue.Empty:  # are the workers done?
                        if all(not handle.is_alive() for handle in handles):
                            outbox.shutdown()  # what is left drains, then ShutDown ends the loop
                    except Exception as exc:  # noqa: BLE001 - a value that cannot be unpickled here
                        if not self._stopping.is_set():
                            self._failed(counts, None, None, exc, fatal=True)
                        break
            finally:
                try:
                    group.__exit__(None, None, None)  # joins; a worker's exception is raised here
                except Exception as exc:  # noqa: BLE001 - this stage's failure
                    if not self._stopping.is_set():
                        self._failed(counts, None, None, exc, fatal=True)
                else:
                    counts.busy = sum(handle.result() for handle in handles)
                    if not self._stopping.is_set():
                        self._feed_after(index).end()

        self._thread(f"{stage.name}-in", forward)
        self._thread(f"{stage.name}-out", collect)

    # -- failures and stopping ---------------------------------------------------------------------
    def _failed(self, counts: StageRun, item: Any, item_repr: str | None, error: BaseException,
                fatal: bool = False) -> None:
        """Record a failure of the stage; ``fatal``: not one item's (a generator stage, a pool that
        cannot start), so it stops the pipeline whatever the error mode."""
        counts.failed += 1
        stage = counts.stage
        if error.__cause__ is None and error.__traceback__ is None and not isinstance(error, RemoteTraceback):
            error.__cause__ = RemoteTraceback("(no traceback)")
        failure = StageFailure(stage.name, item, item_repr, error)
        with self._lock:
            self.failures.append(failure)
        if fatal or (stage.errors or self._errors) == "raise":
            where = "" if item_repr is None else f" on input {item_repr}"
            error.add_note(f"conveyor pipeline: stage {stage.name!r} failed{where}")
            self._fail_fatally(error)

    def _fail_fatally(self, error: BaseException) -> None:
        with self._lock:
            if self._fatal is None and not self._stopping.is_set():
                self._fatal = error
        self._stop(kill=True, join=False)

    def stop_now(self) -> None:
        """From any thread: stop every stage (as a failure would), without waiting for them."""
        self._stop(kill=True, join=False)

    def _stop(self, kill: bool, join: bool = True) -> None:
        """The one way to stop: close the feeds, cancel the pools, join the runners."""
        with self._lock:
            first = not self._stopping.is_set()
            if kill:
                self._stopping.set()
        if kill and first:
            for counts in self._stages:
                counts.inbox.close()
            self._output.close()
            for cleanup in list(self._cleanups):
                try:
                    cleanup()
                except Exception:  # noqa: BLE001 - best effort: the rest must still stop
                    pass
        if join:
            deadline = time.monotonic() + STOP_SECONDS
            for thread in self._threads:
                if thread is not threading.current_thread():
                    thread.join(max(0.0, deadline - time.monotonic()))
            if not any(thread.is_alive() for thread in self._threads):
                self._cleanups.clear()  # they hold process queues (shared memory) until the run is dropped
                for counts in self._stages:
                    counts.context = None  # and a cluster backend's context its local cluster
            if self._ended is None:
                self._ended = time.perf_counter()

    # -- statistics --------------------------------------------------------------------------------
    def statistics(self) -> PipelineStatistics:
        ended = self._ended if self._ended is not None else time.perf_counter()
        elapsed = max(ended - self._started, 1e-9)
        stages: list[StageStatistics] = []
        for counts in self._stages:
            busy = counts.busy
            if counts.pool is not None and self._ended is None:
                busy = counts.pool.statistics().busy_seconds
            workers = counts.workers or default_workers(counts.backend or _config.setting("backend"))
            stages.append(StageStatistics(
                name=counts.stage.name,
                kind=counts.stage.kind,
                backend=counts.backend,
                workers=workers,
                items_in=counts.items_in,
                items_out=counts.items_out,
                failed=counts.failed,
                dropped=counts.dropped,
                busy_seconds=round(busy, 6),
                utilization=round(min(1.0, busy / (elapsed * workers)), 3),
                blocked_on_output=round(counts.blocked, 6),
            ))
        bottleneck = max(stages, key=lambda s: s.utilization).name if stages else None
        return PipelineStatistics(tuple(stages), bottleneck, round(elapsed, 6))
