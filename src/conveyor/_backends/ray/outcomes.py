"""What a Ray pool reports for a batch whose call did not simply come back: a crash, a timeout, a
failure of the call as a whole.

Why a module of its own: these are pure rules (a batch and an exception in, an ``Outcome`` out) about
whom to blame, kept apart from the threads of ``backend.py`` that apply them.
"""

from __future__ import annotations

import ray
import ray.exceptions

from conveyor._backends._shared import batches
from conveyor._backends._shared.inline import timeout_error
from conveyor._core.errors import WorkerCrashedError
from conveyor.abc import Batch, Outcome

CRASHES = tuple(getattr(ray.exceptions, name) for name in (
    "RayActorError", "WorkerCrashedError", "NodeDiedError", "OutOfMemoryError", "LocalRayletDiedError")
    if hasattr(ray.exceptions, name))
"""A call failed because the process or machine running it went away (not because of its inputs)."""


def fail_all(sent: batches.Sent, error: BaseException) -> Outcome:
    positions = range(len(sent.batch))
    return Outcome([None] * len(sent.batch), {**dict.fromkeys(positions, error), **sent.errors})


def crash_error(batch: Batch, position: int, exc: BaseException) -> WorkerCrashedError:
    index = batch.indices[position]
    text = str(exc).strip()
    error = WorkerCrashedError(
        f"the Ray worker running task #{index} with input {batches.describe_input(batch, position)} died "
        f"({type(exc).__name__}: {text.splitlines()[0] if text else 'no details'})",
        task_index=index, task_input=batches.describe_input(batch, position))
    error.__cause__ = exc
    return error


def timed_out(sent: batches.Sent, at: int, elapsed: float) -> Outcome:
    """The input that overran (``at``: its place among those sent) fails with TaskTimeoutError; the
    others of its batch run again."""
    position = sent.positions[at]
    lost = [p for p in sent.positions if p != position]
    return Outcome([None] * len(sent.batch), {**sent.errors, position: timeout_error(sent.batch, position, elapsed)},
                   lost=lost)

def timed_crash(sent: batches.Sent, at: int, exc: BaseException) -> Outcome:
    """A timed batch's worker died: the input it was running (``at``) is known, so it alone fails."""
    position = sent.positions[at]
    lost = [p for p in sent.positions if p != position]
    return Outcome([None] * len(sent.batch), {**sent.errors, position: crash_error(sent.batch, position, exc)},
                   lost=lost)


def task_failed(sent: batches.Sent, exc: BaseException) -> Outcome:
    """The call failed as a whole: its worker died, its result was lost, or Ray failed it."""
    batch = sent.batch
    positions = list(sent.positions)
    if isinstance(exc, ray.exceptions.ObjectLostError):
        return Outcome([None] * len(batch), dict(sent.errors), lost=positions)  # ran, result gone
    if len(positions) > 1:
        return Outcome([None] * len(batch), dict(sent.errors), suspects=positions)  # find the culprit
    position = positions[0]
    error: BaseException
    if isinstance(exc, CRASHES):
        error = crash_error(batch, position, exc)
    elif isinstance(exc, ray.exceptions.RayTaskError) and isinstance(exc.cause, BaseException):
        error = exc.cause
    else:
        error = exc
    return Outcome([None] * len(batch), {**sent.errors, position: error})
