"""Which worker gets the next batch: the rule that keeps the supervisor from ever blocking on a pipe.

Why a module of its own: the choice is a pure function of the workers' handles and the batch; the
supervisor (``backend.py``) takes the batch off its queue and sends it. A batch goes to a worker
that is reading (its in-flight list is empty), or, as a prefetch queued behind a short batch, only
when it is small enough to fit in the pipe's buffer.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Callable

from conveyor._backends._shared.batches import Sent
from conveyor._backends.process import protocol as p
from conveyor._backends.process.handle import WorkerHandle
from conveyor._core import serialize

PREFETCH_BYTES = 64 * 1024
"""A second batch is queued to a busy worker only when it is this small (it fits in the pipe buffer,
so sending it can never block the supervisor)."""
PREFETCH_BEHIND_SECONDS = 0.05
"""...and only behind a batch expected to finish within this long."""


def ends_soon(sent: Sent) -> bool:
    """Whether a batch in a worker is known to be short: its calls have been measured, and all of
    them together take less than ``PREFETCH_BEHIND_SECONDS``. Only then is another batch queued
    behind it (a batch queued behind a long call, such as a consumer loop, would wait for it while
    other workers sit idle)."""
    per_call = sent.batch.function.seconds_per_call
    return per_call is not None and per_call * len(sent.positions) < PREFETCH_BEHIND_SECONDS


def pick(workers: Iterable[WorkerHandle], sent: Sent,
         limit: int | None) -> tuple[WorkerHandle | None, list[WorkerHandle]]:
    """(the worker to send ``sent`` to, or None: none can take it now; the workers that reached
    ``max_tasks_per_worker`` (``limit``) and are to be retired)."""
    best: WorkerHandle | None = None
    spent: list[WorkerHandle] = []
    for worker in workers:
        if not worker.available:
            continue
        if limit is not None and worker.dispatched + len(sent.positions) > limit:
            spent.append(worker)
            continue
        depth = len(worker.inflight)
        if depth >= 2:
            continue
        if depth == 1 and not ends_soon(worker.inflight[0]):
            continue  # never queue behind a call that may run for long: an idle worker may come
        if depth == 1 or not worker.ready:
            # The worker is not reading now: send only what fits in the pipe's buffer.
            size = len(sent.payload)
            if sent.batch.function.key not in worker.functions:
                size += len(sent.function_blob)
            if size > PREFETCH_BYTES or (depth == 1 and not worker.ready):
                continue
        if best is None or depth < len(best.inflight):
            best = worker
            if depth == 0 and worker.ready:
                break
    return best, spent


def function_blob_for(worker: WorkerHandle, sent: Sent) -> bytes | None:
    """The batch's pickled function if ``worker`` does not hold it yet, else None (it is sent by key).

    The worker keeps the last ``FUNCTION_CACHE_SIZE`` functions it was sent, first in first out; this
    mirror of its cache is updated as the batch goes out.
    """
    key = sent.batch.function.key
    if key in worker.functions:
        return None
    worker.functions[key] = None
    if len(worker.functions) > p.FUNCTION_CACHE_SIZE:
        worker.functions.popitem(last=False)
    return sent.function_blob


def skip_unstarted(worker: WorkerHandle, which: Callable[[Sent], bool]) -> None:
    """Tell ``worker`` to skip each batch it holds but has not started that ``which`` picks; it answers
    SKIPPED for each (a started batch runs to its end, or the worker is killed)."""
    if worker.doomed or not worker.conn_open:
        return
    for sent in worker.inflight:
        if worker.slot[p.SLOT_SEQ] == sent.seq or not which(sent):
            continue
        try:
            worker.conn.send_bytes(serialize.dumps((p.CANCEL, sent.seq)))
        except OSError:
            pass  # dying: its sentinel reports what it held
