"""What a dead or overdue worker's progress slot says: which input to blame, which to run again.

Why a module of its own: these are pure readings of a worker's handle (its slot and the batches
it held), with no supervisor state; the supervisor (``backend.py``) acts on the answers (reports
the outcomes, kills the worker). Kept apart, the rules that decide who is blamed for a crash or a
timeout can be read in one place.
"""

from __future__ import annotations

from typing import NamedTuple

from conveyor._backends._shared import batches
from conveyor._backends._shared.batches import Sent
from conveyor._backends._shared.lifetime import STARTUP_FAILURES_BEFORE_BROKEN
from conveyor._backends.process import protocol as p
from conveyor._backends.process.handle import WorkerHandle
from conveyor._core import serialize
from conveyor._core.errors import (
    BrokenPoolError,
    InitializerError,
    TaskTimeoutError,
    WorkerCrashedError,
    describe_exit,
)
from conveyor.abc import BackendConfig, Batch


class Lost(NamedTuple):
    """One batch a dead worker held, as it is to be reported."""

    batch: Batch
    errors: dict[int, BaseException]
    lost: list[int]
    suspects: list[int]


def crash_error(worker: WorkerHandle, exitcode: int | None, batch: Batch, position: int,
                where: str) -> WorkerCrashedError:
    """The error of the input a worker died running (``where``: a phase, appended to the message)."""
    error = WorkerCrashedError(pid=worker.pid, exitcode=exitcode, task_index=batch.indices[position],
                               task_input=batches.describe_input(batch, position))
    if where:
        error.args = (error.args[0] + where,)
    return error


def after_crash(worker: WorkerHandle, exitcode: int | None) -> list[Lost]:
    """Every batch a dead worker held: the input it was running fails (or, in a stride, its window
    becomes suspects that run again alone); everything else is lost, to be run again at no cost.

    Empties the worker's in-flight list.
    """
    slot = worker.slot
    seq, position = slot[p.SLOT_SEQ], slot[p.SLOT_POSITION]
    inflight = list(worker.inflight)
    worker.inflight.clear()
    reports = []
    for sent in inflight:
        batch = sent.batch
        errors = dict(sent.errors)
        lost = list(sent.positions)
        suspects: list[int] = []
        if sent.seq == seq and position != p.PHASE_IDLE:
            if position >= 0:
                start = int(position)
                window = list(sent.positions[start:start + sent.stride])
                where = ""
            else:  # a phase of the whole batch: which input did it is not known
                window = lost
                where = {p.PHASE_DECODE: " while unpickling its input",
                         p.PHASE_ENCODE: " while pickling its result"}.get(position, "")
            if len(window) == 1:
                culprit = window[0]
                errors[culprit] = crash_error(worker, exitcode, batch, culprit, where)
            else:
                suspects = window  # one of these did it: each runs again alone to find out
            taken = set(window)
            lost = [position for position in lost if position not in taken]
        reports.append(Lost(batch, errors, lost, suspects))
    return reports


def overdue(worker: WorkerHandle, now: float) -> tuple[Sent, int, TaskTimeoutError] | None:
    """(the batch, the position and the error) when the input ``worker`` runs is past its
    ``task_timeout``; None otherwise (or when the slot is being rewritten as it is read)."""
    if worker.doomed or not worker.inflight:
        return None
    sent = worker.inflight[0]
    timeout = sent.batch.timeout
    if timeout is None:
        return None
    slot = worker.slot
    position = slot[p.SLOT_POSITION]
    started = slot[p.SLOT_STARTED]
    if slot[p.SLOT_SEQ] != sent.seq or position < 0 or slot[p.SLOT_POSITION] != position:
        return None
    elapsed = now - started
    if elapsed <= timeout:
        return None
    culprit = sent.positions[int(position)]
    batch = sent.batch
    error = TaskTimeoutError(
        f"task #{batch.indices[culprit]} with input {batches.describe_input(batch, culprit)} ran for "
        f"{elapsed:.2f}s, over its task_timeout of {timeout}s; worker {worker.pid} was killed "
        "and replaced")
    return sent, culprit, error


def reports_of(inflight: list[Sent], culprits: dict[int, tuple[int, BaseException]]) -> list[Lost]:
    """The batches of a worker being killed: the culprits (by ``id(sent)``) fail, the rest is lost."""
    reports = []
    for sent in inflight:
        errors = dict(sent.errors)
        lost = list(sent.positions)
        if id(sent) in culprits:
            culprit, error = culprits[id(sent)]
            lost.remove(culprit)
            errors[culprit] = error
        reports.append(Lost(sent.batch, errors, lost, []))
    return reports


def cancelled(inflight: list[Sent], owners: set[int], error: BaseException) -> list[Lost]:
    """The batches of a worker killed because a call was cancelled: those of the cancelled calls
    (``owners``: ids of their owners) fail with ``error``; the others are lost, to run again."""
    reports = []
    for sent in inflight:
        if id(sent.batch.owner) in owners:
            reports.append(Lost(sent.batch, {**dict.fromkeys(sent.positions, error), **sent.errors}, [], []))
        else:
            reports.append(Lost(sent.batch, dict(sent.errors), list(sent.positions), []))
    return reports


def startup_error(worker: WorkerHandle, exitcode: int | None, config: BackendConfig, in_a_row: int,
                  start_method: str) -> BaseException | None:
    """The error that breaks the pool when a worker died before it was ready (``in_a_row`` such
    deaths so far), or None: start another one."""
    _, how = describe_exit(exitcode)
    if config.initializer is not None:
        # Most likely the initializer itself: retrying would only crash again, forever.
        return InitializerError(
            f"worker process {worker.pid} {how} while running the initializer "
            f"{serialize.short_name(config.initializer)}; the pool cannot run tasks")
    if in_a_row >= STARTUP_FAILURES_BEFORE_BROKEN:
        return BrokenPoolError(
            f"{in_a_row} worker processes in a row {how} before they were ready "
            f"(start method {start_method!r}); the pool cannot run tasks")
    return None
