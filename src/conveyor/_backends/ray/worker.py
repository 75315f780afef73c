"""A worker of a Ray pool: a Ray actor, so a process of its own for as long as the pool keeps it.

Why an actor per worker rather than a Ray task per batch: a pool's worker must be a process the pool
knows, as on the process backend.

- The initializer runs once in it, when it starts; the finalizer once, when the pool lets it go.
  Ray ends its worker processes with SIGKILL, running neither ``atexit`` hooks nor signal handlers,
  so the finalizer cannot wait for the process's end: the pool calls :meth:`PoolWorker.stop`.
- A ``task_timeout`` or a ``kill`` ends exactly the process that runs the overdue batch
  (``ray.kill``), and the pool starts another; ``max_tasks_per_worker`` retires a worker the same way,
  after its finalizer.
- A worker runs one batch at a time, so its death names the batch it ran, and nothing else.

The actors reserve no CPU by default (``num_cpus=0``; the pool's ``ray_options`` can ask for
resources): a pool's share of the cluster is its ``workers``, and pools, pipeline stages and the
primitives' hub never wait for one another's CPUs (they would deadlock on a small cluster).
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any, Iterator

from conveyor._backends._shared import batches
from conveyor._backends._shared.calls import CALLERS, run_general
from conveyor._core.coroutines import is_coroutines
from conveyor._backends._shared.cluster_worker import cached_function
from conveyor._backends._shared.inline import run_finalizer
from conveyor._core import serialize

if TYPE_CHECKING:
    from ray import ObjectRef

DONE, INIT_FAILED = 0, 1
"""The first field of a reply: the batch ran (its outcome follows), or the initializer failed (its
pickled exception follows) and this worker runs nothing."""


def _fetch(blob: Any) -> bytes:
    """A large function travels as a reference to Ray's object store, wrapped in a list so that Ray
    does not fetch it before the worker's function cache is consulted."""
    import ray

    if isinstance(blob, list):
        ref: ObjectRef[bytes] = blob[0]
        return ray.get(ref)
    return blob


class PoolWorker:
    """The actor (made remote by the backend, with its options). Its methods run one at a time, in
    the order the pool calls them."""

    def __init__(self, hooks: bytes | None) -> None:
        self._init_failure: bytes | None = None
        if hooks is not None:
            try:
                initializer, initargs = serialize.loads(hooks)
                initializer(*initargs)
            except BaseException as exc:  # noqa: BLE001 - reported with each batch; the pool breaks
                self._init_failure = serialize.dumps_exception(exc)

    def ready(self) -> None:
        """The pool's first call to a new worker: it returns once ``__init__`` (the initializer) has
        run, so a worker that dies before it returns died starting, not running a batch."""

    def _prepare(self, key: str, function: Any, payload: bytes, isolate: bool) -> tuple[Any, ...]:
        """``(reply,)`` when there is nothing to run, else ``(fn, items, errors)``; a function that
        cannot be unpickled fails every input."""
        if self._init_failure is not None:
            return ((INIT_FAILED, self._init_failure),)
        fn = cached_function(key, function, _fetch)
        items, errors = batches.decode_items(payload, isolate)
        if items is None:
            return ((DONE, 0.0, False, {}, True, b""),)
        if isinstance(fn, BaseException):
            errors = dict.fromkeys(range(len(items)), fn)
        return fn, items, errors

    @staticmethod
    def _reply(values: list[Any], errors: dict[int, BaseException], isolate: bool, busy: float) -> tuple[Any, ...]:
        isolated, encoded_errors, values_blob = batches.encode_results(values, errors, isolate)
        return (DONE, busy, isolated, encoded_errors, False, values_blob)

    def run(self, key: str, function: Any, kind: int, payload: bytes, isolate: bool) -> tuple[Any, ...]:
        """Run every input of a batch; the reply. Each input's exception is caught and returned
        pickled with its traceback, so one failing input never fails the call (only a dying process
        does)."""
        prepared = self._prepare(key, function, payload, isolate)
        if len(prepared) == 1:
            return prepared[0]
        fn, items, errors = prepared
        begin = time.perf_counter()
        if is_coroutines(fn):
            values = fn.run_batch(CALLERS[kind], items, errors)
        else:
            values = run_general(fn, CALLERS[kind], items, [0.0, 0.0, 0.0], errors, False)
        return self._reply(values, errors, isolate, time.perf_counter() - begin)

    def run_timed(self, key: str, function: Any, kind: int, payload: bytes, isolate: bool) -> Iterator[Any]:
        """For a call with ``task_timeout``: like :meth:`run`, but yield each input's position as it
        starts (a streaming generator: the pool sees it at once), so that the pool knows what runs
        since when, kills this worker when an input overruns, and names the input."""
        prepared = self._prepare(key, function, payload, isolate)
        if len(prepared) == 1:
            yield prepared[0]
            return
        fn, items, errors = prepared
        call = CALLERS[kind]
        values: list[Any] = []
        begin = time.perf_counter()
        for position, item in enumerate(items):
            if position in errors:
                values.append(None)
                continue
            yield position
            try:
                values.append(call(fn, item))
            except BaseException as exc:  # noqa: BLE001 - any failure of the task is its result
                values.append(None)
                errors[position] = exc
        yield self._reply(values, errors, isolate, time.perf_counter() - begin)

    def stop(self, finalizer: bytes | None) -> int:
        """The worker's normal end: the finalizer (if the initializer succeeded), logged if it raises.
        Returns the process id; the pool then ends the actor."""
        if finalizer is not None and self._init_failure is None:
            fn, args = serialize.loads(finalizer)
            run_finalizer(fn, args)
        return os.getpid()
