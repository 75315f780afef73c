"""The records that ``statistics()`` returns: frozen, typed, and readable as mappings.

Why records: a plain dict told neither its reader nor a type checker which counters exist, and a caller
could change a snapshot another part of the program reads. A record names its fields (``stats.in_flight``),
cannot be changed (assigning raises ``dataclasses.FrozenInstanceError``, item assignment ``TypeError``),
and every field is always there (a process pool that had no crash says ``workers_crashed=0``).

Why mappings too: code written against the dicts keeps working. Every record is a read-only
``collections.abc.Mapping`` of its fields: ``stats["in_flight"]``, ``stats.get(...)``, ``dict(stats)``,
``"failed" in stats`` and ``stats == {...}`` (equal when the keys and values are) all do what they did.
Sequences are tuples (``worker_pids``, a pipeline's ``stages``), as a frozen record's must be.

A pool's record holds its backend's (``PoolStatistics.backend_statistics``); as a mapping it reads
flat, the backend's counters after the pool's own, as ``Pool.statistics()`` always did.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = [
    "AutoStatistics",
    "BackendStatistics",
    "DaskStatistics",
    "PipelineStatistics",
    "PoolStatistics",
    "ProcessStatistics",
    "RayStatistics",
    "StageStatistics",
    "ThreadStatistics",
]


class Record(Mapping[str, Any]):
    """A frozen dataclass that also reads as a read-only mapping of its fields (the base of every
    statistics record). Equality is the mapping's: a record equals any mapping with the same items."""

    __slots__ = ()

    def _items(self) -> Iterator[tuple[str, Any]]:
        """The (key, value) pairs the mapping shows, in order."""
        for field in dataclasses.fields(self):  # type: ignore[arg-type]  # every subclass is a dataclass
            yield field.name, getattr(self, field.name)

    def __getitem__(self, key: str) -> Any:
        for name, value in self._items():
            if name == key:
                return value
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._items())

    def __len__(self) -> int:
        return sum(1 for _ in self._items())


# -- backends (``Backend.statistics()``) ----------------------------------------------------------------
@dataclasses.dataclass(frozen=True, eq=False)
class BackendStatistics(Record):
    """What a backend reports beside the pool's own counters; the serial backend reports nothing."""


@dataclasses.dataclass(frozen=True, eq=False)
class ThreadStatistics(BackendStatistics):
    """The thread backend: live worker threads, threads replaced (after a timeout or a kill), batches
    waiting for a thread."""

    workers_alive: int = 0
    workers_replaced: int = 0
    queued_batches: int = 0


@dataclasses.dataclass(frozen=True, eq=False)
class ProcessStatistics(BackendStatistics):
    """The process backend: worker processes started, crashed, recycled for memory and killed for a
    timeout; those alive now and their pids; batches waiting for a worker; the start method."""

    workers_started: int = 0
    workers_crashed: int = 0
    workers_recycled_for_memory: int = 0
    tasks_timed_out: int = 0
    workers_alive: int = 0
    queued_batches: int = 0
    start_method: str = ""
    worker_pids: tuple[int, ...] = ()


@dataclasses.dataclass(frozen=True, eq=False)
class DaskStatistics(BackendStatistics):
    """The Dask backend: the scheduler's address, the Dask workers seen (each ran the initializer),
    batches waiting."""

    scheduler: str | None = None
    dask_workers_seen: int = 0
    workers_started: int = 0
    queued_batches: int = 0


@dataclasses.dataclass(frozen=True, eq=False)
class RayStatistics(BackendStatistics):
    """The Ray backend: worker actors started and lost (died, or ended for a timeout or a kill),
    batches queued in the pool and running on a worker."""

    workers_started: int = 0
    workers_lost: int = 0
    ray_queued: int = 0
    ray_running: int = 0


@dataclasses.dataclass(frozen=True, eq=False)
class AutoStatistics(BackendStatistics):
    """``backend="auto"``: what it chose for each function, ``(function, backend, reason)``, and the
    statistics of each backend it made, ``(name, record)``."""

    decisions: tuple[tuple[str, str, str], ...] = ()
    backends: tuple[tuple[str, BackendStatistics], ...] = ()


# -- the front end ------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, eq=False)
class PoolStatistics(Record):
    """``Pool.statistics()``: ``submitted == succeeded + failed + cancelled + in_flight`` always holds.

    ``retried``: attempts run again after a failure (``retries=``); ``rerun_after_loss``: inputs run
    again, free, because their worker died holding them; ``busy_seconds``: time spent in task code.
    ``backend_statistics`` is the backend's own record; the mapping view lists its keys after these.
    """

    submitted: int
    succeeded: int
    failed: int
    cancelled: int
    in_flight: int
    retried: int
    rerun_after_loss: int
    busy_seconds: float
    backend: str
    workers: int
    backend_statistics: BackendStatistics = dataclasses.field(default_factory=BackendStatistics)

    def _items(self) -> Iterator[tuple[str, Any]]:
        for name, value in super()._items():
            if name == "backend_statistics":
                yield from value.items()
            else:
                yield name, value


@dataclasses.dataclass(frozen=True, eq=False)
class StageStatistics(Record):
    """One stage of a pipeline run: items in and out, failures, items a filter dropped, busy seconds,
    how busy its workers were (``utilization``, 0-1) and how long it waited on the next stage
    (``blocked_on_output``, seconds)."""

    name: str
    kind: str
    backend: str | None
    workers: int
    items_in: int
    items_out: int
    failed: int
    dropped: int
    busy_seconds: float
    utilization: float
    blocked_on_output: float


@dataclasses.dataclass(frozen=True, eq=False)
class PipelineStatistics(Record):
    """``Pipeline.statistics()``: every stage's record in order, the busiest stage's name
    (``bottleneck``, None without stages) and the run's wall time in seconds so far."""

    stages: tuple[StageStatistics, ...] = ()
    bottleneck: str | None = None
    seconds: float = 0.0
