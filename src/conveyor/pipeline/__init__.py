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

The package: this module is the builder (``Pipeline``, which only declares stages); ``stages.py`` what
a stage is and the defaults; ``run.py`` one execution (feeds, pools, runner threads, stopping);
``work.py`` what runs in a stage's workers.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any, Callable

from conveyor._core.statistics import PipelineStatistics
from conveyor.pipeline.run import Run
from conveyor.pipeline.stages import (
    DEFAULT_MAXSIZE,
    Stage,
    StageFailure,
    check_errors_mode,
    check_positive,
)

__all__ = ["Pipeline", "StageFailure"]


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
        check_errors_mode(errors)
        check_positive("maxsize", maxsize)
        self._source = source
        self._errors = errors
        self._maxsize = maxsize or DEFAULT_MAXSIZE
        self._stages: tuple[Stage, ...] = ()
        self._last: Run | None = None

    def _with(self, stage: Stage) -> Pipeline:
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
            check_positive(option, value)
        if task_timeout is not None and task_timeout <= 0:
            raise ValueError(f"task_timeout must be > 0, got {task_timeout!r}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries!r}")
        if errors is not None:
            check_errors_mode(errors)
        if kind == "map" and inspect.isgeneratorfunction(fn):
            kind = "each"
        stage_name: str = name if name else getattr(fn, "__name__", kind)
        return self._with(Stage(kind, fn, stage_name, workers, backend, maxsize,
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
        check_positive("size", size)
        check_positive("maxsize", maxsize)
        return self._with(Stage("batch", None, name or f"batch({size})", maxsize=maxsize, size=size))

    # -- running ----------------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Any]:
        run = Run(self._source, self._stages, self._errors, self._maxsize)
        self._last = run
        return run.results()

    def __aiter__(self) -> AsyncIterator[Any]:
        """``async for item in pipeline``: the same run, awaited from an event loop without blocking
        it. Leaving the loop (``break``, an exception, a cancelled task) stops every stage, as
        leaving a ``for`` loop does; ``aclose()`` on the iterator stops it and waits until stopped."""
        from conveyor._core.bridge import AsyncResults

        run = Run(self._source, self._stages, self._errors, self._maxsize)
        self._last = run
        results = run.results()
        return AsyncResults(lambda: next(results), finish=results.close, interrupt=run.stop_now,
                            name="conveyor-pipeline-async")

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

    def statistics(self) -> PipelineStatistics:
        """Per stage of the last (or current) run: items in and out, failures, busy seconds, how busy
        its workers were (``utilization``, 0-1) and how long it waited on the next stage
        (``blocked_on_output``); ``bottleneck`` names the busiest stage. A frozen
        :class:`~conveyor.PipelineStatistics` of :class:`~conveyor.StageStatistics`, also readable as
        mappings (``stats["stages"][0]["items_in"]``)."""
        if self._last is None:
            return PipelineStatistics()
        return self._last.statistics()

    def __repr__(self) -> str:
        names = " → ".join(stage.name for stage in self._stages) or "(no stages)"
        return f"<conveyor.Pipeline {names}>"
