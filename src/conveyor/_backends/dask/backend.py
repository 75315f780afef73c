"""The Dask backend: batches run as tasks of a Dask distributed cluster (a local one by default).

::

    submit(batch) ──► waits in the pool ──► at most `workers` batches on the cluster at once:
                      client.submit(run_batch, key, function, kind, pickled inputs) ──► a Dask worker
                                                              runs the batch (errors caught per item)
    batch.finish(Outcome) ◄── collector thread (as_completed on the client's loop) ◄──┘

One Dask task runs a whole batch, so the engine's per-task overhead (a few milliseconds of scheduling
and transfer) is paid once per batch, and the core's chunk sizer grows batches of tiny calls until it
no longer shows. A user's exception is caught per item in the worker and travels back as itself, with
the worker's traceback as ``__cause__``. A task lost with its worker (``KilledWorker``) cannot say
which item killed it: its items are re-run one per task, so the culprit fails alone, as
:class:`~conveyor.WorkerCrashedError`.

Options (``Pool(backend="dask", address=...)``): ``address`` of an existing scheduler, else Dask's
``scheduler-address`` setting (e.g. ``DASK_SCHEDULER_ADDRESS``), else a local cluster of ``workers``
single-threaded worker processes is started, and closed with the pool. The pool's
``initializer``/``finalizer`` become a Dask worker plugin (setup/teardown on every worker).
"""

from __future__ import annotations

import collections
import logging
import threading
from typing import Any, Callable

from conveyor._backends._shared import batches
from conveyor._backends._shared.cluster_worker import function_key, run_encoded
from conveyor._backends._shared.inline import run_finalizer, timeout_error
from conveyor._core.config import usable_cores
from conveyor._core.errors import (
    InitializerError,
    PoolClosedError,
    TaskCancelledError,
    WorkerCrashedError,
    unsupported,
)
from conveyor._core.statistics import DaskStatistics
from conveyor.abc import PRIMITIVES, Backend, BackendConfig, Batch, Capabilities, Outcome

try:
    import dask
    import distributed
except ImportError as exc:  # the registry turns this into BackendUnavailableError with the install hint
    raise ImportError(f"dask.distributed is not installed ({exc})") from exc

from conveyor._backends.dask.primitives import DaskPrimitives  # noqa: E402 - needs distributed


def default_workers() -> int:
    return usable_cores()


def run_batch(key: str, blob: bytes, kind: int, payload: bytes, isolate: bool, timeout: float | None
              ) -> tuple[float, bool, dict[int, bytes], bool, bytes, dict[int, float]]:
    """The Dask task of one batch (a module-level function, so that Dask names its tasks after it).
    Inputs and results travel pickled by conveyor, as bytes: Dask would otherwise walk every input
    of a large batch looking for its own objects (seconds for a list of 100 000 numbers)."""
    return run_encoded(key, blob, kind, payload, isolate, timeout)


def configured_address(options: dict[str, Any]) -> str | None:
    """The scheduler to use: the ``address`` option, else Dask's own ``scheduler-address`` setting
    (``DASK_SCHEDULER_ADDRESS`` in the environment, or Dask's config files), which every Dask client
    honours; None means "start a local cluster"."""
    address = options.get("address")
    if address is None:
        address = dask.config.get("scheduler-address", None) or None
    return address


def local_cluster(workers: int) -> Any:
    """A local cluster of ``workers`` single-threaded worker processes, set up for conveyor.

    A lost task is reported at once (the core re-runs its items alone), not retried by Dask three
    times on other workers first; and a worker is given one task at a time, so that a worker's death
    takes down only the task that killed it.
    """
    with dask.config.set({"distributed.scheduler.allowed-failures": 0,
                          "distributed.scheduler.worker-saturation": 1.0}):
        return distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                        dashboard_address=":0",
                                        silence_logs=logging.CRITICAL)  # crashes are reported as errors


class _Hooks(distributed.WorkerPlugin):
    """The pool's ``initializer``/``finalizer`` on every Dask worker: run when the worker starts (or
    when the pool attaches to a running worker) and when it closes. A finalizer's failure is logged,
    as on the other backends; an initializer's failure fails the worker's setup, which Dask reports."""

    def __init__(self, initializer: Any, initargs: tuple[Any, ...], finalizer: Any,
                 finalargs: tuple[Any, ...]) -> None:
        self.initializer, self.initargs = initializer, initargs
        self.finalizer, self.finalargs = finalizer, finalargs

    def setup(self, worker: Any) -> None:
        if self.initializer is not None:
            self.initializer(*self.initargs)

    def teardown(self, worker: Any) -> None:
        run_finalizer(self.finalizer, self.finalargs)


class DaskBackend(Backend):
    name = "dask"
    capabilities = Capabilities(needs_pickle=True, isolates_crashes=True, cross_host=True,
                                primitives=PRIMITIVES - {"Pipe", "SharedArray"})
    batches_per_worker = 1  # a Dask task costs milliseconds: few, big batches
    option_names = frozenset({"address"})

    def __init__(self, config: BackendConfig) -> None:
        super().__init__(config)
        if config.max_tasks_per_worker is not None or config.max_memory_per_worker is not None:
            raise unsupported("max_tasks_per_worker and max_memory_per_worker", "dask",
                              "Dask manages its workers' lives (see its worker 'lifetime' and memory-limit settings)")
        address = configured_address(config.options)
        self._cluster: Any = None
        if address is None:
            self._cluster = local_cluster(config.workers)
            self._client = distributed.Client(self._cluster, set_as_default=False)
        else:
            self._client = distributed.Client(address, set_as_default=False)
        self._address = self._client.scheduler.address
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._waiting: collections.deque[Batch] = collections.deque()  # not yet sent to Dask
        self._futures: dict[Any, Any] = {}   # future -> its encoded batch, sent and not reported yet
        self._completed = distributed.as_completed(loop=self._client.loop)
        self._collector: threading.Thread | None = None
        self._closed = False
        self._broken: BaseException | None = None
        self._workers_seen: set[str] = set()
        self._hooks: str | None = None
        if config.initializer is not None or config.finalizer is not None:
            self._install_hooks()

    def _install_hooks(self) -> None:
        """Register the initializer/finalizer plugin; an initializer that fails breaks the pool."""
        self._hooks = f"conveyor-hooks-{id(self)}"
        config = self.config
        self._workers_seen.update(self._client.scheduler_info()["workers"])
        try:
            self._client.register_plugin(_Hooks(config.initializer, config.initargs, config.finalizer,
                                                config.finalargs), name=self._hooks)
        except Exception as exc:  # noqa: BLE001 - the initializer's own error, raised on a worker
            error = InitializerError(f"the worker initializer failed on a Dask worker: {exc!r}")
            error.__cause__ = exc
            self._broken = error

    def broken(self) -> BaseException | None:
        return self._broken

    # -- primitives: on the cluster's scheduler ----------------------------------------------------
    def worker_primitives(self) -> DaskPrimitives:
        # On a cluster the pool started, its primitives go with it (and use its client); on one it
        # joined, they outlive it, with a client of their own.
        address = self._client.scheduler.address
        return DaskPrimitives(address, self._client) if self._cluster is not None else DaskPrimitives(address)

    @classmethod
    def primitives(cls, config: BackendConfig) -> DaskPrimitives:
        address = configured_address(config.options)
        if address is None:
            raise unsupported("a primitive without a cluster", "dask",
                              "make it with a context (conveyor.context('dask')) or a pool (pool.Lock())")
        return DaskPrimitives(address)  # its client closes when it and its objects are gone

    @classmethod
    def context_options(cls, options: dict[str, Any]) -> tuple[dict[str, Any], Any]:
        """A context without an ``address`` starts one local cluster for its pools and primitives."""
        address = configured_address(options)
        if address is not None:
            return {**options, "address": address}, None
        cluster = local_cluster(options.get("workers") or default_workers())
        return {**options, "address": cluster.scheduler_address}, cluster

    def group_options(self) -> dict[str, Any]:
        """The pool's options, with the address of the cluster it uses (its own local one included)."""
        return {**self.config.options, "address": self._address}

    @classmethod
    def spawn(cls, config: BackendConfig, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
              name: str, on_done: Callable[[Any], None] | None = None) -> Any:
        """A TaskGroup task: one Dask task on the context's cluster, running the call in a process of
        its own on a worker (``dask/tasks.py``, imported here: only a group needs it)."""
        from conveyor._backends.dask.tasks import spawn_on_dask

        return spawn_on_dask(configured_address(config.options), config, fn, args, kwargs, name, on_done)

    # -- work ------------------------------------------------------------------------------------------
    def submit(self, batch: Batch) -> None:
        """Queue the batch in the pool; at most ``workers`` batches are on the cluster at once, so that
        the rest can still be cancelled (as on the process backend) and the pool takes its share of a
        shared cluster, not all of it."""
        with self._lock:
            if self._closed:
                raise PoolClosedError("the pool is shut down")
            self._waiting.append(batch)
        self._pump()

    def _pump(self) -> None:
        """Send waiting batches to Dask while there are free slots."""
        while True:
            with self._lock:
                if self._closed and not self._draining or not self._waiting:
                    return
                if len(self._futures) >= self.config.workers:
                    return
                batch = self._waiting.popleft()
                self._futures[batch] = batch  # holds the slot until its future exists
            try:
                self._send(batch)
            finally:
                with self._lock:
                    self._futures.pop(batch, None)
                    self._idle.notify_all()

    def _send(self, batch: Batch) -> None:
        if not batch.claim():
            return
        sent = batches.encode(batch)
        if isinstance(sent, dict):  # nothing in the batch could be pickled
            batch.finish(Outcome([None] * len(batch), sent))
            return
        future = self._client.submit(run_batch, function_key(batch.function), sent.function_blob, int(batch.kind),
                                     sent.payload, batch.isolate, batch.timeout, pure=False)
        with self._lock:
            self._futures[future] = sent
            self._completed.add(future)
            if self._collector is None:
                self._collector = threading.Thread(target=self._collect, name="conveyor-dask-results",
                                                   daemon=True)
                self._collector.start()

    def _collect(self) -> None:
        """Report batches as their futures finish; ends when none is out (restarted by the next send).

        Not Dask's done callbacks: those run on an executor that refuses work once the interpreter
        exits, so work closed gracefully would never be reported at exit."""
        while True:
            for future in self._completed:
                self._finished(future)
            with self._lock:
                if not any(isinstance(future, distributed.Future) for future in self._futures):
                    self._collector = None
                    return

    def _finished(self, future: Any) -> None:
        """Report a finished future's batch, once."""
        with self._lock:
            sent = self._futures.get(future)
        if sent is None:
            return
        try:
            self._report(sent, future)
        finally:
            with self._lock:
                self._futures.pop(future, None)
                self._idle.notify_all()
            self._pump()

    def _report(self, sent: batches.Sent, future: Any) -> None:
        batch = sent.batch
        positions = list(sent.positions)
        status = future.status
        if status == "finished":
            try:
                busy, isolated, encoded_errors, undecodable, values_blob, overdue = future.result()  # run_batch's
            except BaseException as exc:  # noqa: BLE001 - the result could not be fetched
                self._finish_failed(sent, exc)
                return
            outcome = batches.decode_reply(sent, busy, isolated, encoded_errors, undecodable, values_blob,
                                           ran=len(positions))  # a Dask worker runs every input it is sent
            if not outcome.suspects:  # (suspects all run again, alone: their timeouts will show there)
                for wpos, elapsed in overdue.items():
                    outcome.errors[positions[wpos]] = timeout_error(batch, positions[wpos], elapsed)
            batch.finish(outcome)
            return
        if status == "lost":
            # The result was computed, then lost with its worker before we fetched it (killed by a
            # later task): nothing is wrong with these inputs, run them again.
            batch.finish(Outcome([None] * len(batch), dict(sent.errors), lost=positions))
            return
        if status == "cancelled":
            stop = TaskCancelledError("the pool was shut down before this task ended")
            batch.finish(Outcome([None] * len(batch), {**dict.fromkeys(positions, stop), **sent.errors}))
            return
        try:
            failure = future.exception()
        except BaseException as error:  # noqa: BLE001
            failure = error
        if failure is None:  # not an error after all (a status we do not know): run the inputs again
            batch.finish(Outcome([None] * len(batch), dict(sent.errors), lost=positions))
            return
        self._finish_failed(sent, failure)

    @staticmethod
    def _finish_failed(sent: batches.Sent, exc: BaseException) -> None:
        """The task as a whole failed: its worker died, or its result did not travel."""
        batch = sent.batch
        positions = list(sent.positions)
        if len(positions) > 1:
            batch.finish(Outcome([None] * len(batch), dict(sent.errors), suspects=positions))  # find the culprit
            return
        position = positions[0]
        if isinstance(exc, distributed.scheduler.KilledWorker):
            error: BaseException = WorkerCrashedError(
                f"the Dask worker running task #{batch.indices[position]} died ({exc})",
                task_index=batch.indices[position], task_input=batches.describe_input(batch, position))
        else:
            error = exc
        batch.finish(Outcome([None] * len(batch), {**sent.errors, position: error}))

    _draining = False  # closed, but the waiting batches still go to the cluster
    _closer: threading.Thread | None = None

    def shutdown(self, *, wait: bool = True, cancel_pending: bool = False, kill: bool = False) -> None:
        """Close; the client and a local cluster are closed by a closer thread once the work the pool
        keeps is done (at once with ``kill``). A later call with ``wait`` (at exit) waits for it."""
        with self._lock:
            first = not self._closed
            self._closed = True
            abandoned: list[Batch] = []
            if cancel_pending or kill:
                abandoned = list(self._waiting)
                self._waiting.clear()
                self._draining = False
            elif first:
                self._draining = True
            running = [future for future in self._futures if isinstance(future, distributed.Future)]
            if first:
                self._closer = threading.Thread(target=self._close_when_idle, name="conveyor-dask-close",
                                                daemon=True)
                self._closer.start()  # under the lock: a racing second call may join it at once
            closer = self._closer
        for batch in abandoned:
            batch.abandon()
        if kill and running:
            self._client.cancel(running)
        if wait:
            assert closer is not None  # the first call made it, under the lock
            closer.join()

    def _close_when_idle(self) -> None:
        self._pump()
        with self._lock:
            while self._futures or self._waiting:
                self._idle.wait(0.1)
        try:
            self._workers_seen.update(self._client.scheduler_info()["workers"])
            if self._hooks is not None and self._cluster is None:
                # Someone else's cluster outlives the pool: take the hooks off its workers (their
                # teardown runs the finalizer there now).
                self._client.unregister_worker_plugin(self._hooks)
        finally:
            self._client.close()
            if self._cluster is not None:
                self._cluster.close()

    def statistics(self) -> DaskStatistics:
        """``workers_started``: the Dask workers this pool's initializer/finalizer hooks were on."""
        with self._lock:
            closed = self._closed
            waiting = len(self._waiting)
        if not closed:
            self._workers_seen.update(self._client.scheduler_info()["workers"])
        return DaskStatistics(scheduler=self._address, dask_workers_seen=len(self._workers_seen),
                              workers_started=len(self._workers_seen), queued_batches=waiting)
