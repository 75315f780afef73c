"""Pipelines: producer → consumer stages on mixed backends, joined by bounded feeds, that always finish.

::

    source ──pump thread──► feed ──► stage 1 runner: pool.imap(fn₁, feed) ──► feed ──► stage 2 ... ──► output ──► you
                    (bounded)             │ workers: threads or processes        (bounded)
                                          ▼
                              failures, counts, busy time ──► statistics(), errors

Each stage owns a pool on its own backend and a runner thread in the caller's process that streams
the stage's input feed through the pool (lazily, a bounded window in flight) and puts the results in
the next stage's feed. A full feed blocks the runner that feeds it: that is the backpressure, and it
bounds memory by the feeds' ``maxsize`` plus each pool's window, whatever the length of the source.
Feeds are polled by the pools' streams without blocking, so results flow on as soon as they exist.

Stopping is one path for every cause (the consumer breaks or drops the iterator, a stage fails,
Ctrl-C): close every feed (blocked ``put``s raise, streams see their end), shut every pool down with
``kill=True`` (running tasks are cancelled, worker processes killed), then join the runners. So a
pipeline finishes within seconds whatever its stages were doing, and leaves no process behind.

A stage function may be a generator function that takes an iterator: it then runs once per worker
over that worker's share of the items (for state kept open per worker: a connection, a model).
"""

from __future__ import annotations

import dataclasses
import inspect
import queue
import reprlib
import threading
import time
from concurrent.futures import BrokenExecutor
from typing import Any, Callable, Iterable, Iterator

from conveyor._core import config as _config
from conveyor._core import serialize
from conveyor._core.errors import RemoteTraceback, ShutDown, TaskError
from conveyor._core.stream import Feed
from conveyor.pool import Pool, default_workers

__all__ = ["Pipeline", "StageFailure"]

DEFAULT_MAXSIZE = 64
"""Items that may wait in front of a stage (and at the output) when the stage sets no ``maxsize``."""
STOP_SECONDS = 5.0
"""How long stopping waits for a stage's runner to finish before leaving it (a daemon thread)."""
_END_GRACE_SECONDS = 0.5
"""After the output has ended, how long the runners may take to finish before the rest is stopped."""
_ERROR_MODES = ("raise", "collect")
_short = reprlib.Repr()
_short.maxstring = _short.maxother = 120


@dataclasses.dataclass(frozen=True)
class StageFailure:
    """One item that failed in a stage.

    Attributes:
        stage: the stage's name.
        item: the input that failed, when known (None when the worker died with it unreported).
        item_repr: a short repr of that input (also known from a crash report).
        error: the exception, with the worker's traceback as ``__cause__``.
    """

    stage: str
    item: Any
    item_repr: str | None
    error: BaseException


@dataclasses.dataclass(frozen=True)
class _Stage:
    kind: str                       # map | filter | flat_map | batch | each
    fn: Callable[..., Any] | None
    name: str
    workers: int | None = None
    backend: str | None = None
    maxsize: int | None = None
    ordered: bool = True
    task_timeout: float | None = None
    retries: int = 0
    chunksize: int | None = None
    on_start: Callable[[], Any] | None = None
    on_stop: Callable[[], Any] | None = None
    errors: str | None = None
    size: int = 0                   # batch


# -- what runs in a worker ------------------------------------------------------------------------------
class _Dropped:
    """A filter said no (travels back instead of the item)."""

    __slots__ = ()


class _Many:
    """A flat_map's outputs for one input."""

    __slots__ = ("values",)

    def __init__(self, values: list[Any]) -> None:
        self.values = values


class _ItemFailed(Exception):
    """The stage function raised on ``item``. Raised, not returned, so the stage's pool gives it the
    ``retries`` and ``task_timeout`` that ``Pool.imap`` gives a raise (each attempt its own time limit);
    it carries its input, known even when results come back out of order."""

    def __init__(self, item: Any, error: BaseException) -> None:
        super().__init__(_short.repr(item), error)  # a short text: a traceback repeats it, the item may be huge
        self.item = item
        self.error = error

    def __reduce__(self) -> Any:
        return (_rebuild_failed, (self.item, serialize.dumps_exception(self.error)))


def _rebuild_failed(item: Any, blob: bytes) -> _ItemFailed:
    return _ItemFailed(item, serialize.loads_exception(blob))


class _Apply:
    """Runs one stage function on one item in a worker; the item's own failure is raised as
    :class:`_ItemFailed`, with its input, for the pool to retry like any task's."""

    __slots__ = ("kind", "fn")

    def __init__(self, kind: str, fn: Callable[..., Any]) -> None:
        self.kind = kind
        self.fn = fn

    def __call__(self, item: Any) -> Any:
        try:
            if self.kind == "map":
                return self.fn(item)
            if self.kind == "filter":
                return item if self.fn(item) else _Dropped()
            return _Many(list(self.fn(item)))
        except Exception as exc:  # noqa: BLE001 - reported with its input; KeyboardInterrupt etc. propagate
            raise _ItemFailed(item, exc) from None


def _each_worker(fn: Callable[[Iterator[Any]], Iterable[Any]], inbox: Any, outbox: Any,
                 on_start: Callable[[], Any] | None, on_stop: Callable[[], Any] | None) -> float:
    """A worker of a generator stage on processes: ``fn`` over its share of ``inbox``, into ``outbox``.
    Returns its busy seconds: the time in ``fn``, not waiting for input or for room in ``outbox``."""
    if on_start is not None:
        on_start()
    waited = [0.0]
    started = time.perf_counter()
    try:
        for value in fn(_drain(inbox, waited)):
            blocked = time.perf_counter()
            outbox.put(value)
            waited[0] += time.perf_counter() - blocked
    finally:
        if on_stop is not None:
            on_stop()
    return max(0.0, time.perf_counter() - started - waited[0])


def _drain(q: Any, waited: list[float]) -> Iterator[Any]:
    while True:
        blocked = time.perf_counter()
        try:
            item = q.get()
        except ShutDown:
            return
        finally:
            waited[0] += time.perf_counter() - blocked
        yield item


# -- the builder ------------------------------------------------------------------------------------------
class Pipeline:
    """Stages of work from a source to you: ``Pipeline(urls).map(download, backend="thread").map(parse)``.

    Each method returns a new pipeline with one more stage (the original is unchanged, so a prefix can
    be reused). Iterating runs it lazily; :meth:`run` collects or sinks everything.

    Args:
        source: any iterable, consumed lazily by a thread of its own (infinite sources work).
        errors: ``"raise"`` (default): the first failure stops every stage and is raised to the
            consumer, as its own type, with a note naming the stage and the input; ``"collect"``:
            failed items are left out, recorded in :attr:`errors`, and the rest goes on.
        maxsize: items that may wait at the output for the consumer (default ``DEFAULT_MAXSIZE``).

    Stage options (keyword-only, for :meth:`map`, :meth:`filter`, :meth:`flat_map`):
        workers: the stage's workers (default: the backend's default).
        backend: ``"thread"``, ``"process"``, ``"serial"``, ... (default: conveyor's default).
        maxsize: items that may wait in front of the stage: the backpressure (default ``DEFAULT_MAXSIZE``).
        ordered: keep input order (default True); False passes results on as they finish.
        task_timeout, retries, chunksize: as for :meth:`Pool.imap <conveyor.Pool.imap>`.
        on_start, on_stop: called in each worker when it starts and when it ends normally.
        errors: this stage's error mode, overriding the pipeline's.
        name: the stage's name in errors and statistics (default: the function's name).
    """

    def __init__(self, source: Iterable[Any], *, errors: str = "raise", maxsize: int | None = None) -> None:
        iter(source)  # not iterable: fail here, not in a thread
        _check_errors_mode(errors)
        _check_positive("maxsize", maxsize)
        self._source = source
        self._errors = errors
        self._maxsize = maxsize or DEFAULT_MAXSIZE
        self._stages: tuple[_Stage, ...] = ()
        self._last: _Run | None = None

    def _with(self, stage: _Stage) -> Pipeline:
        if any(existing.name == stage.name for existing in self._stages):
            stage = dataclasses.replace(stage, name=f"{stage.name}#{len(self._stages) + 1}")
        other = object.__new__(Pipeline)
        other.__dict__.update(self.__dict__)
        other._stages = (*self._stages, stage)
        other._last = None
        return other

    def _stage(self, kind: str, fn: Callable[..., Any], *, workers: int | None = None, backend: str | None = None,
               maxsize: int | None = None, ordered: bool = True, task_timeout: float | None = None,
               retries: int = 0, chunksize: int | None = None, on_start: Callable[[], Any] | None = None,
               on_stop: Callable[[], Any] | None = None, errors: str | None = None,
               name: str | None = None) -> Pipeline:
        if not callable(fn):
            raise TypeError(f"a stage needs a callable, got {fn!r}")
        for option, value in (("workers", workers), ("maxsize", maxsize), ("chunksize", chunksize)):
            _check_positive(option, value)
        if task_timeout is not None and task_timeout <= 0:
            raise ValueError(f"task_timeout must be > 0, got {task_timeout!r}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries!r}")
        if errors is not None:
            _check_errors_mode(errors)
        if kind == "map" and inspect.isgeneratorfunction(fn):
            kind = "each"
        stage_name: str = name if name else getattr(fn, "__name__", kind)
        return self._with(_Stage(kind, fn, stage_name, workers, backend, maxsize,
                                 ordered, task_timeout, retries, chunksize, on_start, on_stop, errors))

    def map(self, fn: Callable[..., Any], **options: Any) -> Pipeline:
        """``fn(item)`` for every item. A generator function ``fn(items)`` instead runs once per worker
        over an iterator of that worker's share of the items, and what it yields goes on (unordered
        when there are several workers)."""
        return self._stage("map", fn, **options)

    def filter(self, predicate: Callable[[Any], Any], **options: Any) -> Pipeline:
        """Keep the items for which ``predicate(item)`` is true."""
        return self._stage("filter", predicate, **options)

    def flat_map(self, fn: Callable[[Any], Iterable[Any]], **options: Any) -> Pipeline:
        """Every value of the iterable ``fn(item)`` goes on, in order."""
        return self._stage("flat_map", fn, **options)

    def batch(self, size: int, *, maxsize: int | None = None, name: str | None = None) -> Pipeline:
        """Lists of up to ``size`` consecutive items (the last one may be shorter)."""
        _check_positive("size", size)
        _check_positive("maxsize", maxsize)
        return self._with(_Stage("batch", None, name or f"batch({size})", maxsize=maxsize, size=size))

    # -- running ----------------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Any]:
        run = _Run(self._source, self._stages, self._errors, self._maxsize)
        self._last = run
        return run.results()

    def run(self, sink: Callable[[Any], Any] | None = None) -> Any:
        """Run to the end: the outputs as a list, or, with ``sink``, call it on each output (in this
        thread) and return how many there were."""
        if sink is None:
            return list(self)
        count = 0
        for item in self:
            sink(item)
            count += 1
        return count

    @property
    def errors(self) -> list[StageFailure]:
        """Items that failed in the last run (``errors="collect"``; with ``"raise"``, the one raised)."""
        return [] if self._last is None else list(self._last.failures)

    def statistics(self) -> dict[str, Any]:
        """Per stage of the last (or current) run: items in and out, failures, busy seconds, how busy
        its workers were (``utilization``, 0-1) and how long it waited on the next stage
        (``blocked_on_output``); ``bottleneck`` names the busiest stage."""
        if self._last is None:
            return {"stages": [], "bottleneck": None, "seconds": 0.0}
        return self._last.statistics()

    def __repr__(self) -> str:
        names = " → ".join(stage.name for stage in self._stages) or "(no stages)"
        return f"<conveyor.Pipeline {names}>"


def _check_errors_mode(errors: str) -> None:
    if errors not in _ERROR_MODES:
        raise ValueError(f"errors must be one of {', '.join(map(repr, _ERROR_MODES))}, got {errors!r}")


def _check_positive(name: str, value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


# -- one run ------------------------------------------------------------------------------------------------
class _StageRun:
    """Counters of one stage in one run."""

    def __init__(self, stage: _Stage, inbox: Feed) -> None:
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


class _Run:
    """One execution of a pipeline: feeds, pools, runner threads, and the single way to stop them."""

    def __init__(self, source: Iterable[Any], stages: tuple[_Stage, ...], errors: str, maxsize: int) -> None:
        self._source = source
        self._errors = errors
        self._stages = [_StageRun(stage, Feed(stage.maxsize or DEFAULT_MAXSIZE)) for stage in stages]
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
    def results(self) -> Iterator[Any]:
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
            self._stop(kill=not finished or not self._joined(_END_GRACE_SECONDS))
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
                results = mapper(_Apply(stage.kind, stage.fn), counts.inbox,
                                 chunksize=stage.chunksize)
            except Exception as exc:  # noqa: BLE001 - the pool broke at once (an on_start that raised)
                self._failed(counts, None, None, exc, fatal=True)
                return
            while True:
                try:
                    result = next(results)
                except StopIteration:
                    break
                except _ItemFailed as failure:  # the function raised on this item, on its last attempt
                    if self._stopping.is_set():
                        break
                    self._failed(counts, failure.item, _short.repr(failure.item), failure.error)
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
                if isinstance(result, _Dropped):
                    counts.dropped += 1
                elif isinstance(result, _Many):
                    for value in result.values:
                        send(value)
                else:
                    send(result)
        finally:
            counts.busy = pool.statistics().get("busy_seconds", 0.0)
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
                handles.append(group.spawn(_each_worker, stage.fn, inbox, outbox, stage.on_start, stage.on_stop,
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
    def _failed(self, counts: _StageRun, item: Any, item_repr: str | None, error: BaseException,
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
    def statistics(self) -> dict[str, Any]:
        ended = self._ended if self._ended is not None else time.perf_counter()
        elapsed = max(ended - self._started, 1e-9)
        stages: list[dict[str, Any]] = []
        for counts in self._stages:
            busy = counts.busy
            if counts.pool is not None and self._ended is None:
                busy = counts.pool.statistics().get("busy_seconds", busy)
            workers = counts.workers or default_workers(counts.backend or _config.setting("backend"))
            stages.append({
                "name": counts.stage.name,
                "kind": counts.stage.kind,
                "backend": counts.backend,
                "workers": workers,
                "items_in": counts.items_in,
                "items_out": counts.items_out,
                "failed": counts.failed,
                "dropped": counts.dropped,
                "busy_seconds": round(busy, 6),
                "utilization": round(min(1.0, busy / (elapsed * workers)), 3),
                "blocked_on_output": round(counts.blocked, 6),
            })
        bottleneck = max(stages, key=lambda s: s["utilization"])["name"] if stages else None
        return {"stages": stages, "bottleneck": bottleneck, "seconds": round(elapsed, 6)}
