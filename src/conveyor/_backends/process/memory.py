"""What the supervisor tracks of the shared memory its workers map (the process side of ``bulk.py``).

Why a module of its own: the bookkeeping is a ledger apart from scheduling. Inputs lent to a batch
are held while a worker maps them; a worker's result segments come back to it once the caller's
mapping is collected; segments the pool's arena removed must be forgotten by every worker. The
supervisor only tells this ledger what happened (a batch sent, a batch done, a worker gone) and
passes on what it answers in the next RUN.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Iterable
from typing import Any

from conveyor._backends.process.handle import WorkerHandle
from conveyor._core import shm


class SegmentLedger:
    """Which shared-memory segments each worker maps, holds, or must drop; one per pool."""

    def __init__(self, arena: shm.Arena | None) -> None:
        self.arena = arena
        self.results_released: collections.deque[tuple[int, str]] = collections.deque()

    def released_by(self, worker: WorkerHandle, workers: Iterable[WorkerHandle]) -> tuple[list[str], list[str]]:
        """(the worker's result segments the caller no longer maps: it may reuse them, input
        segments removed since its last batch: it drops its cached mappings of them)."""
        workers = list(workers)
        while self.results_released:
            pid, name = self.results_released.popleft()
            for other in workers:
                if other.pid == pid:
                    other.released.append(name)
        if self.arena is not None:
            while self.arena.destroyed:
                name = self.arena.destroyed.popleft()
                for other in workers:
                    other.forget.append(name)
        released, worker.released = worker.released, []
        forget, worker.forget = worker.forget, []
        return released, forget

    def result_dropped(self, pid: int, name: str) -> None:
        """A result's mapping was collected (any thread, even inside a garbage collection that holds
        the supervisor's lock: so only an atomic append here)."""
        self.results_released.append((pid, name))

    @staticmethod
    def hold(worker: WorkerHandle, seq: int, leases: list[Any]) -> None:
        """A batch with shared-memory inputs goes to ``worker``: they stay lent while it maps them."""
        if leases:
            for lease in leases:
                lease.hold()
            worker.leases[seq] = leases

    @staticmethod
    def unhold(worker: WorkerHandle, seq: int, kept: Any = ()) -> None:
        """The worker is done with batch ``seq``; the inputs its task still references (``kept``) are
        removed instead of reused."""
        for lease in worker.leases.pop(seq, ()):
            lease.unhold(kept=lease.segment.name in kept)

    def forget_worker(self, worker: WorkerHandle) -> None:
        """A worker is gone: its mappings with it. Its inputs' segments are free again; its own
        result segments are removed (the caller's mappings of them stay valid)."""
        for seq in list(worker.leases):
            self.unhold(worker, seq)
        if shm.available():  # its result segments, and whatever its tasks made and did not remove
            shm.unlink_prefix(f"conveyor-{os.getpid()}w{worker.pid}-")
