"""Task state and accounting: one :class:`Call` per user call, whatever the backend.

A task moves pending -> running -> done | failed | cancelled. The backend reports facts per batch
(:class:`~conveyor.abc.Outcome`); a Call turns them into policy:

- an input that raised, crashed its worker or timed out is run again while it has retries left;
- an input the backend lost (never ran, or its result died with a worker) is run again for free;
- everything else is delivered to the call's consumer (a Future, or a stream).

The invariant kept by :class:`Stats`: submitted == succeeded + failed + cancelled once nothing is in
flight, with no input delivered twice.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from typing import Any, Callable, Sequence

from conveyor._core.errors import BrokenPoolError, PoolClosedError, SerializationError, TaskCancelledError
from conveyor.abc import Backend, Batch, CallKind, Outcome, TaskFunction

_log = logging.getLogger("conveyor")

# (batch, values, errors by position, positions held back for a re-run, busy seconds)
Delivery = Callable[[Batch, list[Any], "dict[int, BaseException]", "frozenset[int]", float], None]


class Stats:
    """Thread-safe task counters of one pool."""

    __slots__ = ("_lock", "submitted", "succeeded", "failed", "cancelled", "retried", "rerun", "busy")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.submitted = self.succeeded = self.failed = self.cancelled = 0
        self.retried = self.rerun = 0
        self.busy = 0.0

    def add(self, **counts: float) -> None:
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            done = self.succeeded + self.failed + self.cancelled
            return {
                "submitted": self.submitted,
                "succeeded": self.succeeded,
                "failed": self.failed,
                "cancelled": self.cancelled,
                "in_flight": self.submitted - done,
                "retried": self.retried,
                "rerun_after_loss": self.rerun,
                "busy_seconds": round(self.busy, 6),
            }


def retriable(error: BaseException) -> bool:
    """Whether running the task again could help: not for deterministic encoding errors or cancels."""
    return not isinstance(error, (SerializationError, concurrent.futures.CancelledError))


class Call:
    """All batches of one user call, with retries and accounting.

    Args:
        backend: where batches run.
        function: what they call.
        kind: how an item becomes a call.
        deliver: receives finished inputs; called from backend threads.
        stats: the pool's counters.
        timeout: per-task time limit.
        retries: extra attempts for an input that fails.
    """

    def __init__(
        self,
        backend: Backend,
        function: TaskFunction,
        kind: CallKind,
        deliver: Delivery,
        stats: Stats,
        *,
        timeout: float | None = None,
        retries: int = 0,
    ) -> None:
        self.backend = backend
        self.function = function
        self.kind = kind
        self.deliver = deliver
        self.stats = stats
        self.timeout = timeout
        self.retries = retries
        self.closed = False
        self._failures: dict[int, int] = {}
        self._lock = threading.Lock()

    # -- sending -------------------------------------------------------------------------------------
    def send(self, items: list[Any], indices: Sequence[int], *, isolate: bool = False, count: bool = True) -> None:
        """Hand inputs to the backend (one batch, or one batch per input when isolating)."""
        if count:
            self.stats.add(submitted=len(items))
        if isolate and len(items) > 1:
            for item, index in zip(items, indices):
                self._submit(Batch(self.function, self.kind, [item], [index], owner=self,
                                   timeout=self.timeout, isolate=True))
        else:
            self._submit(Batch(self.function, self.kind, items, indices, owner=self,
                               timeout=self.timeout, isolate=isolate))

    def _submit(self, batch: Batch) -> None:
        try:
            self.backend.submit(batch)
        except (PoolClosedError, BrokenPoolError) as exc:
            # Happens when a retry races a shutdown: those inputs end as failed, never silently.
            self.stats.add(failed=len(batch))
            self.deliver(batch, [None] * len(batch), dict.fromkeys(range(len(batch)), exc), frozenset(), 0.0)

    def close(self) -> None:
        """The consumer went away: batches not started are dropped, no more re-runs."""
        self.closed = True

    # -- the BatchOwner protocol ----------------------------------------------------------------------
    def claim(self, batch: Batch) -> bool:
        if self.closed:
            self.stats.add(cancelled=len(batch))
            return False
        return True

    def abandon(self, batch: Batch) -> None:
        self.stats.add(cancelled=len(batch))
        error = TaskCancelledError("the pool shut down before this task started")
        self.deliver(batch, [None] * len(batch), dict.fromkeys(range(len(batch)), error), frozenset(), 0.0)

    def finish(self, batch: Batch, outcome: Outcome) -> None:
        again: list[int] = []
        errors = outcome.errors
        if errors and self.retries and not self.closed:
            with self._lock:
                for position, error in errors.items():
                    index = batch.indices[position]
                    used = self._failures.get(index, 0)
                    if used < self.retries and retriable(error):
                        self._failures[index] = used + 1
                        again.append(position)
            if again:
                errors = {p: e for p, e in errors.items() if p not in set(again)}
        lost = list(outcome.lost)
        suspects = list(outcome.suspects)
        held = frozenset(again) | frozenset(lost) | frozenset(suspects)
        cancelled = sum(1 for error in errors.values() if isinstance(error, concurrent.futures.CancelledError))
        self.stats.add(
            succeeded=len(batch) - len(held) - len(errors),
            failed=len(errors) - cancelled,
            cancelled=cancelled,
            retried=len(again),
            rerun=len(lost) + len(suspects),
            busy=outcome.busy,
        )
        if outcome.busy and not held and not errors:
            self.function.observe(len(batch), outcome.busy)
        if self.closed and held:
            self.stats.add(cancelled=len(held))
            stop = TaskCancelledError("the call was closed before this task could run again")
            errors = {**errors, **dict.fromkeys(held, stop)}
            held = frozenset()
            again, lost, suspects = [], [], []
        try:
            self.deliver(batch, outcome.values, errors, held, outcome.busy)
        except BaseException:  # noqa: BLE001 - a user callback must not stop the re-runs below
            _log.exception("delivering results raised (a done-callback?)")
        if lost:
            self.send([batch.items[p] for p in lost], [batch.indices[p] for p in lost],
                      isolate=batch.isolate, count=False)
        for positions in (suspects, again):
            if positions:
                self.send([batch.items[p] for p in positions], [batch.indices[p] for p in positions],
                          isolate=True, count=False)


def _notify_cancelled(future: concurrent.futures.Future[Any]) -> None:
    """Wake ``concurrent.futures.wait``/``as_completed`` on a cancelled future.

    ``Future.cancel()`` alone wakes ``result()`` but not those waiters; an executor must then call
    ``set_running_or_notify_cancel()``, which is only legal in the CANCELLED state (not yet notified).
    """
    if getattr(future, "_state", None) == "CANCELLED":
        future.set_running_or_notify_cancel()


class FutureDelivery:
    """Delivers the single input of a ``submit`` call into a ``concurrent.futures.Future``."""

    __slots__ = ("future",)

    def __init__(self, future: concurrent.futures.Future[Any]) -> None:
        self.future = future

    def __call__(self, batch: Batch, values: list[Any], errors: dict[int, BaseException],
                 held: frozenset[int], busy: float) -> None:
        if held:
            return
        future = self.future
        if future.done():
            _notify_cancelled(future)
            return
        if errors:
            error = errors[0]
            if isinstance(error, TaskCancelledError) and future.cancel():
                _notify_cancelled(future)
                return
            if not future.running():
                future.set_running_or_notify_cancel()
            future.set_exception(error)
        else:
            if not future.running():
                future.set_running_or_notify_cancel()
            future.set_result(values[0])


class SubmitCall(Call):
    """A Call whose claim also moves its Future to running (so ``Future.cancel`` works until then)."""

    def __init__(self, *args: Any, future: concurrent.futures.Future[Any], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.future = future

    def claim(self, batch: Batch) -> bool:
        if self.future.running():
            return True  # a re-run after a crash or a retry
        if not self.future.set_running_or_notify_cancel():
            self.stats.add(cancelled=len(batch))
            return False
        return True
