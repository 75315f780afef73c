"""The caller's view of a Ray pool's workers: a worker actor, a batch it runs, and how it is ended.

Why a module of its own: these are the records the pool's threads share (the collector, the timer,
the callers), kept apart from the scheduling in ``backend.py``; like ``process/handle.py``.
"""

from __future__ import annotations

from typing import Any

import ray

from conveyor._backends._shared import batches


class WorkerActor:
    """The caller's view of one worker actor: its handle, how many tasks it has run, and the
    reference that resolves once its initializer has run (the worker is then *ready*)."""

    __slots__ = ("actor", "ready_ref", "tasks")

    def __init__(self, actor: Any) -> None:
        self.actor = actor
        self.ready_ref = actor.ready.remote()  # the actor's first call: after its __init__, before any batch
        self.tasks = 0

    def was_ready(self) -> bool:
        """Whether it got through its start (a worker that dies before is a failed start, not a
        crash of the batch it was given)."""
        try:
            ray.get(self.ready_ref, timeout=0)
        except Exception:  # noqa: BLE001 - not yet, or it died before
            return False
        return True


class Running:
    """A batch handed to a worker: its encoded form, the worker, the call's reference (a generator
    for a timed batch), and for a timed batch the input that runs (a position among those sent) and
    since when."""

    __slots__ = ("position", "ref", "sent", "started", "worker")

    def __init__(self, sent: batches.Sent, worker: WorkerActor) -> None:
        self.sent = sent
        self.worker = worker
        self.ref: Any = None
        self.position: int | None = None
        self.started = 0.0


def end_actor(actor: Any) -> None:
    """End a worker's process now (SIGKILL: no exit hook runs)."""
    try:
        ray.kill(actor, no_restart=True)
    except Exception:  # noqa: BLE001 - already gone, or Ray is down
        pass
