"""The Ray backend: a pool's workers are Ray actors, on a local Ray started for the pool or on a cluster.

::

    submit(batch) ── encode (caller's thread) ──► queue ──► a free worker: worker.run.remote(...)
                                                              ▼
                       a worker actor (a process of its own, ray_worker.py): initializer once at its
                       start, then one batch at a time (errors caught per item); finalizer at its end
                                                              │
    batch.finish(Outcome) ◄── collector thread ◄── done callback of the call's future (Ray's thread)

A worker is an actor, so the pool has the process backend's shape: ``workers`` processes of its own
(started as batches need them), each running the initializer once and the finalizer when the pool
lets it go, replaced when it dies, is killed for a ``task_timeout``, or has run
``max_tasks_per_worker`` tasks (why not Ray tasks: see ray_worker.py). One call runs a whole batch,
so Ray's per-call cost (about a millisecond) is paid once per batch, and the core's chunk sizer grows
batches of tiny calls until it no longer shows. Inputs and results are pickled by conveyor itself
(``_shared/batches.py``), so an unpicklable input or result fails alone with a message that names it;
Ray only carries bytes.

Batches wait in the pool until a worker is free: a batch handed to a worker is running, so a
cancelling shutdown drops exactly the batches that have not started, ``task_timeout`` counts from the
start, and a ``kill`` ends (``ray.kill``) only the workers that run.

A worker that dies (``ray.exceptions.ActorDiedError`` and the like) cannot say which input killed it:
a batch of several inputs is re-run one input per call, so the culprit fails alone as
:class:`~conveyor.WorkerCrashedError`. The actors have ``max_restarts=0``: retries are the core's
(``retries=``), not Ray's.

Options (``Pool(backend="ray", ...)``): ``address`` of an existing cluster (``"auto"``,
``"host:port"`` or ``"ray://host:port"``; the connection stays open for the rest of the program),
else ``RAY_ADDRESS`` from the environment, else a local Ray with ``workers`` CPUs is started and
stopped with the last pool or context that uses it;
``ray_init``: more keyword arguments for ``ray.init`` (``runtime_env``, ``object_store_memory``...);
``ray_options``: options of the worker actors (``num_cpus``, ``num_gpus``, ``resources``,
``scheduling_strategy``...; by default they reserve no CPU and spread over the nodes).
A process has one Ray connection, shared by every pool and context in it.
"""

from __future__ import annotations

import atexit
import collections
import logging
import queue
import threading
import time
import weakref
from typing import Any

from conveyor._backends._shared import batches
from conveyor._backends._shared.cluster_worker import function_key
from conveyor._backends._shared.lifetime import STARTUP_FAILURES_BEFORE_BROKEN
from conveyor._backends.ray.worker import INIT_FAILED, PoolWorker
from conveyor._core import serialize
from conveyor._core.config import usable_cores
from conveyor._core.errors import (
    BrokenPoolError,
    InitializerError,
    PoolClosedError,
    TaskCancelledError,
    unsupported,
)
from conveyor._core.serialize import short_name
from conveyor._core.statistics import RayStatistics
from conveyor.abc import PRIMITIVES, Backend, BackendConfig, Batch, Capabilities, Outcome

try:
    import ray
    import ray.exceptions
except ImportError as exc:  # the registry turns this into BackendUnavailableError with the install hint
    raise ImportError(f"ray is not installed ({exc})") from exc

from conveyor._backends.ray import outcomes  # noqa: E402 - needs ray
from conveyor._backends.ray.handle import Running, WorkerActor, end_actor  # noqa: E402 - needs ray
from conveyor._backends.ray.primitives import RayPrimitives  # noqa: E402 - needs ray
from conveyor._backends.ray.session import (  # noqa: E402 - needs ray
    Session,
    close_session,
    configured_address,
    open_session,
)

_WATCH_SECONDS = 0.05
"""How often the timer thread looks at deadlines, and how long a shutdown waits between checks."""

_INLINE_FUNCTION_BYTES = 64 * 1024
"""A pickled function up to this size travels inside each call; a larger one is put in Ray's object
store once per pool call, and calls carry a reference."""

# -- in the caller -------------------------------------------------------------------------------------

_PoolWorkerActor = ray.remote(PoolWorker)

_DEFAULT_ACTOR_OPTIONS: dict[str, Any] = {"num_cpus": 0, "scheduling_strategy": "SPREAD"}
"""A worker reserves no CPU (see ray_worker.py) and the workers of a pool are spread over the
cluster's nodes; ``ray_options`` replaces or adds to these (``num_cpus``, ``num_gpus``, ``resources``,
``memory``, ``runtime_env``...)."""

_STOP_SECONDS = 60.0
"""How long a worker's finalizer may run at shutdown before the worker is ended anyway."""


_live: weakref.WeakSet[RayBackend] = weakref.WeakSet()
_exit_hook_registered = False
_exit_hook_lock = threading.Lock()


def _stop_pools_before_ray() -> None:
    """At interpreter exit, before Ray's own exit hook disconnects (registered after ``ray.init``, so
    it runs first): pools closed gracefully finish their work, the others are stopped at once."""
    for backend in list(_live):
        graceful = backend._stopping and not backend._refusing
        try:
            backend.shutdown(wait=True, cancel_pending=not graceful, kill=not graceful)
        except BaseException:  # noqa: BLE001 - exiting anyway; never print at exit
            pass


class RayBackend(Backend):
    name = "ray"
    capabilities = Capabilities(needs_pickle=True, isolates_crashes=True, cross_host=True, cancel_running=True,
                                enforce_timeout=True, primitives=PRIMITIVES - {"Pipe", "SharedArray"})
    batches_per_worker = 1  # a call to a worker costs about a millisecond: few, big batches
    option_names = frozenset({"address", "ray_init", "ray_options"})

    def __init__(self, config: BackendConfig) -> None:
        global _exit_hook_registered
        super().__init__(config)
        if config.max_memory_per_worker is not None:
            raise unsupported("max_memory_per_worker", "ray", "Ray watches its workers' memory itself (its memory "
                              "monitor); use max_tasks_per_worker to recycle workers")
        actor_options = {**_DEFAULT_ACTOR_OPTIONS, **(config.options.get("ray_options") or {}),
                         "max_restarts": 0, "max_task_retries": 0}
        hooks = None if config.initializer is None else serialize.dumps((config.initializer, config.initargs))
        self._finalizer = None if config.finalizer is None else serialize.dumps((config.finalizer, config.finalargs))
        actor_class = _PoolWorkerActor.options(**actor_options)  # bad ray_options fail here, not in a worker start
        open_session(configured_address(config.options), config.workers, config.options.get("ray_init"))
        self._new_actor = lambda: actor_class.remote(hooks)
        self._lock = threading.Lock()
        self._queue: collections.deque[batches.Sent] = collections.deque()
        self._workers: list[WorkerActor] = []       # every live worker, busy or idle
        self._idle: list[WorkerActor] = []
        self._workers_started = 0
        self._workers_lost = 0
        self._startup_failures = 0              # workers in a row that died before they were ready
        self._retiring: list[threading.Thread] = []
        self._dispatching = 0                   # batches off the queue, not yet running
        self._running: dict[int, Running] = {}
        self._timed: dict[int, Running] = {}   # the running batches with a task_timeout
        self._functions: collections.OrderedDict[int, Any] = collections.OrderedDict()
        self._events: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._stopping = False   # shutdown was called: drain, then close
        self._refusing = False   # shutdown with cancel_pending or kill: what is queued is dropped
        self._killed = False     # shutdown with kill: no batch is accepted any more (not even re-runs)
        self._closed = False
        self._drained = threading.Event()
        self._ended = threading.Event()   # closed, workers finalized and ended
        self._broken: BaseException | None = None
        self._primitives: RayPrimitives | None = None
        self._collector = threading.Thread(target=self._collect, name="conveyor-ray-collector", daemon=True)
        self._collector.start()
        self._timer: threading.Thread | None = None
        _live.add(self)
        with _exit_hook_lock:
            if not _exit_hook_registered:
                atexit.register(_stop_pools_before_ray)
                _exit_hook_registered = True

    @property
    def max_batch_size(self) -> int | None:
        """With ``max_tasks_per_worker``, a batch never holds more tasks than a worker may run."""
        return self.config.max_tasks_per_worker

    # -- primitives: actors on the pool's cluster ----------------------------------------------------
    def worker_primitives(self) -> RayPrimitives:
        with self._lock:
            if self._primitives is None:
                self._primitives = RayPrimitives()
            return self._primitives

    @classmethod
    def primitives(cls, config: BackendConfig) -> RayPrimitives:
        """The factory of a context: its own hold on the Ray connection, released by ``close()``."""
        session = Session(configured_address(config.options), config.workers, config.options.get("ray_init"))
        return RayPrimitives(session)

    @classmethod
    def context_options(cls, options: dict[str, Any]) -> tuple[dict[str, Any], Any]:
        """A context holds the Ray connection for as long as it lives, so that its pools and
        primitives meet on one Ray (and a local one is not started and stopped for every pool)."""
        session = Session(configured_address(options), options.get("workers") or usable_cores(),
                          options.get("ray_init"))
        return options, session

    @classmethod
    def spawn(cls, config: BackendConfig, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any],
              name: str, on_done: Any = None) -> Any:
        """A TaskGroup task: an actor of its own (no CPU) running the call in a process of its own
        (``ray/tasks.py``, imported here: only a group needs it)."""
        from conveyor._backends.ray.tasks import spawn_on_ray

        return spawn_on_ray(config, fn, args, kwargs, name, on_done)

    # -- work ----------------------------------------------------------------------------------------
    def submit(self, batch: Batch) -> None:
        """Accept a batch until the pool is killed or closed. A pool shut down with ``cancel_pending``
        still accepts: the calls still running may re-run lost inputs, as on the process backend."""
        with self._lock:
            if self._killed or self._closed:
                raise PoolClosedError("the pool is shut down")
        if self._broken is not None:
            raise self._broken
        encoded = batches.encode(batch)
        if isinstance(encoded, dict):  # nothing in the batch could be pickled
            if batch.claim():
                batch.finish(Outcome([None] * len(batch), encoded))
            return
        with self._lock:
            if self._killed or self._closed:  # shut down while the batch was being pickled
                raise PoolClosedError("the pool is shut down")
            self._queue.append(encoded)
            self._drained.clear()
        self._pump()

    def _function_argument(self, batch: Batch) -> Any:
        """The pickled function, or (when large) a reference to one copy in Ray's object store."""
        blob = batch.function.blob(serialize.dumps)
        if len(blob) <= _INLINE_FUNCTION_BYTES:
            return blob
        with self._lock:
            stored = self._functions.get(batch.function.key)
        if stored is None:
            stored = [ray.put(blob)]
            with self._lock:
                self._functions[batch.function.key] = stored
                while len(self._functions) > 32:
                    self._functions.popitem(last=False)
        return stored

    def _take_worker(self, size: int) -> WorkerActor | None:
        """An idle worker that may still run ``size`` tasks, else a new one if the pool has fewer than
        ``workers``; None if all are busy. An idle worker that would go over ``max_tasks_per_worker``
        is retired. Called with the lock held (starting an actor does not wait for its process)."""
        limit = self.config.max_tasks_per_worker
        while self._idle:
            worker = self._idle.pop()
            if limit is None or worker.tasks + size <= limit:
                return worker
            self._workers.remove(worker)
            self._retire_later([worker])
        if len(self._workers) >= self.config.workers:
            return None
        worker = WorkerActor(self._new_actor())
        self._workers.append(worker)
        self._workers_started += 1
        return worker

    def _pump(self) -> None:
        """Hand queued batches to free workers."""
        while True:
            with self._lock:
                if not self._queue or self._closed:
                    return
                worker = self._take_worker(len(self._queue[0].positions))
                if worker is None:
                    return
                sent = self._queue.popleft()
                self._dispatching += 1
            try:
                self._dispatch(sent, worker)
            finally:
                with self._lock:
                    self._dispatching -= 1
                self._check_drained()

    def _dispatch(self, sent: batches.Sent, worker: WorkerActor) -> None:
        """Claim a batch, then call its worker; a kill may come in at any point."""
        batch = sent.batch
        if not batch.claim():
            self._release(worker)
            return
        running = Running(sent, worker)
        with self._lock:
            killed = self._killed
            if not killed:
                self._running[id(running)] = running
        if killed:
            self._release(worker)
            self._report(batch, outcomes.fail_all(sent, TaskCancelledError("the pool was shut down with kill=True")))
            return
        timed = batch.timeout is not None
        try:
            method = worker.actor.run_timed if timed else worker.actor.run
            ref = method.remote(function_key(batch.function), self._function_argument(batch), int(batch.kind),
                                sent.payload, batch.isolate)
        except BaseException as exc:  # noqa: BLE001 - Ray refused the call: its inputs fail
            if self._forget(running):
                self._release(worker)
                self._report(batch, outcomes.fail_all(sent, exc))
            return
        with self._lock:
            running.ref = ref
            killed = id(running) not in self._running   # a kill reported it meanwhile
            if timed and not killed:
                self._timed[id(running)] = running
                if self._timer is None:
                    self._timer = threading.Thread(target=self._watch, name="conveyor-ray-timer", daemon=True)
                    self._timer.start()
        if killed:
            self._lose(worker)
        elif not timed:
            ref.future().add_done_callback(lambda future, running=running: self._events.put((running, future)))

    def _forget(self, running: Running) -> bool:
        """Take a batch off the running set; False if someone else (a kill) already did."""
        with self._lock:
            self._timed.pop(id(running), None)
            return self._running.pop(id(running), None) is not None

    def _release(self, worker: WorkerActor) -> None:
        """A worker finished a batch: idle again, or retired if it has run its ``max_tasks_per_worker``."""
        limit = self.config.max_tasks_per_worker
        with self._lock:
            if worker not in self._workers:
                return
            if self._closed or limit is None or worker.tasks < limit:
                self._idle.append(worker)
                return
            self._workers.remove(worker)
            self._retire_later([worker])

    def _lose(self, worker: WorkerActor) -> None:
        """A worker died or is killed (timeout, kill): end its process; the next batch starts another."""
        with self._lock:
            if worker not in self._workers:
                return
            self._workers.remove(worker)
            if worker in self._idle:
                self._idle.remove(worker)
            self._workers_lost += 1
        end_actor(worker.actor)

    def _retire_later(self, workers: list[WorkerActor]) -> None:
        """Retire workers in a thread of their own (their finalizer may take a while); the pool's close
        waits for it. Called with the lock held."""
        thread = threading.Thread(target=self._retire, args=(workers,), name="conveyor-ray-retire", daemon=True)
        self._retiring.append(thread)
        thread.start()

    def _retire(self, workers: list[WorkerActor]) -> None:
        """The normal end of workers: their finalizer (each in its own process), then their end."""
        if self._finalizer is not None and workers and ray.is_initialized():
            refs = [worker.actor.stop.remote(self._finalizer) for worker in workers]
            try:
                ray.wait(refs, num_returns=len(refs), timeout=_STOP_SECONDS)
            except Exception:  # noqa: BLE001 - Ray is down: the workers are gone with it
                pass
        for worker in workers:
            end_actor(worker.actor)

    def _check_drained(self) -> None:
        """Nothing queued or running: a graceful shutdown may close. Checked only after a batch's
        outcome is reported, because reporting may submit its re-runs."""
        with self._lock:
            if not self._queue and not self._running and not self._dispatching:
                self._drained.set()

    @staticmethod
    def _report(batch: Batch, outcome: Outcome) -> None:
        try:
            batch.finish(outcome)
        except BaseException:  # noqa: BLE001 - a user callback must not stop the collector
            logging.getLogger("conveyor").exception("reporting a finished batch raised")

    def _finished(self, running: Running, reply: Any = None, exc: BaseException | None = None) -> None:
        """A worker's call ended, with a reply or an exception: report the batch, free the worker."""
        worker, sent = running.worker, running.sent
        if exc is None:
            self._startup_failures = 0
            worker.tasks += len(sent.positions)
            self._release(worker)
            self._complete(sent, reply)
            return
        if not isinstance(exc, outcomes.CRASHES):
            self._release(worker)
            self._report(sent.batch, outcomes.task_failed(sent, exc))
            return
        self._lose(worker)
        broken = None if worker.was_ready() else self._failed_start(exc)
        self._report(sent.batch, outcomes.fail_all(sent, broken) if broken else outcomes.task_failed(sent, exc))

    def _failed_start(self, exc: BaseException) -> BaseException | None:
        """A worker died before it was ready: with an initializer, that is the initializer (running it
        again would only crash again); without, the pool breaks after a few in a row, as on processes.
        Returns the pool's error if it is now broken."""
        with self._lock:
            self._startup_failures += 1
            failures = self._startup_failures
        initializer = self.config.initializer
        error: BaseException
        if initializer is not None:
            error = InitializerError(f"a Ray worker died while running the initializer {short_name(initializer)} "
                                     f"({type(exc).__name__}); the pool cannot run tasks")
        elif failures >= STARTUP_FAILURES_BEFORE_BROKEN:
            error = BrokenPoolError(f"{failures} Ray workers in a row died before they were ready "
                                    f"({type(exc).__name__}); the pool cannot run tasks")
        else:
            return None
        error.__cause__ = exc
        self._break(error)
        return self._broken

    def _collect(self) -> None:
        """The collector thread: turn finished calls into outcomes, then start queued batches."""
        while True:
            event = self._events.get()
            if event is None:
                return
            running, future = event
            if self._forget(running):
                try:
                    reply = future.result()
                except BaseException as exc:  # noqa: BLE001 - the call as a whole failed
                    self._finished(running, exc=exc)
                else:
                    self._finished(running, reply)
            self._pump()
            self._check_drained()

    def _watch(self) -> None:
        """The timer thread, for calls with ``task_timeout``: follow which input each timed batch runs
        (its generator yields the position as the input starts), and end the worker of an input that
        overruns. Every message a generator has is read before the deadlines are checked, so a
        deadline is never measured from an input that has already finished."""
        while True:
            with self._lock:
                if self._closed:
                    return
                timed = list(self._timed.values())
            if not timed:
                time.sleep(_WATCH_SECONDS)
                continue
            ready, _ = ray.wait([running.ref for running in timed], num_returns=len(timed), timeout=_WATCH_SECONDS)
            for generator in ready:
                self._read_messages(next(r for r in timed if r.ref is generator))
            now = time.monotonic()
            for running in timed:
                timeout = running.sent.batch.timeout or 0.0
                if running.position is not None and now - running.started > timeout and self._forget(running):
                    self._lose(running.worker)
                    self._report(running.sent.batch, outcomes.timed_out(running.sent, running.position or 0, now - running.started))
            self._pump()
            self._check_drained()

    def _read_messages(self, running: Running) -> None:
        """Read what a timed batch's generator has so far: the positions of the inputs it started
        (the last one runs now), and at the end the reply or the call's failure."""
        generator = running.ref
        while True:
            try:
                if not ray.wait([generator], timeout=0)[0]:
                    return
                message = ray.get(next(generator))
            except StopIteration:
                return
            except BaseException as exc:  # noqa: BLE001 - the call as a whole failed
                if self._forget(running):
                    if running.position is not None and isinstance(exc, outcomes.CRASHES):
                        self._lose(running.worker)
                        self._report(running.sent.batch, outcomes.timed_crash(running.sent, running.position or 0, exc))
                    else:
                        self._finished(running, exc=exc)
                return
            if not isinstance(message, int):
                if self._forget(running):
                    self._finished(running, message)
                return
            running.position, running.started = message, time.monotonic()

    def _complete(self, sent: batches.Sent, reply: tuple[Any, ...]) -> None:
        if reply[0] == INIT_FAILED:
            cause = serialize.loads_exception(reply[1])
            error = InitializerError(f"the worker initializer raised {type(cause).__name__}: {cause}; "
                                     "the pool cannot run tasks")
            error.__cause__ = cause
            self._break(error)
            self._report(sent.batch, outcomes.fail_all(sent, error))
            return
        _, busy, isolated, encoded_errors, undecodable, values_blob = reply
        self._report(sent.batch, batches.decode_reply(sent, busy, isolated, encoded_errors, undecodable,
                                                      values_blob, len(sent.positions)))

    def _break(self, error: BaseException) -> None:
        """The pool cannot run tasks: fail what waits, refuse what comes."""
        with self._lock:
            self._broken = self._broken or error
            waiting, self._queue = self._queue, collections.deque()
        for sent in waiting:
            if sent.batch.claim():
                self._report(sent.batch, outcomes.fail_all(sent, error))
        self._check_drained()

    def broken(self) -> BaseException | None:
        return self._broken

    def cancel_running(self, owner: Any) -> None:
        with self._lock:
            stopped = [running for running in self._running.values() if running.sent.batch.owner is owner]
            for running in stopped:
                self._running.pop(id(running), None)
                self._timed.pop(id(running), None)
        for running in stopped:
            self._lose(running.worker)
            stop = TaskCancelledError("its call was cancelled while it ran; its Ray worker was ended")
            self._report(running.sent.batch, outcomes.fail_all(running.sent, stop))

    def shutdown(self, *, wait: bool = True, cancel_pending: bool = False, kill: bool = False) -> None:
        if wait and threading.current_thread() in (self._collector, self._timer):
            wait = False  # from a callback of this pool's own threads: they are what a wait waits for
        with self._lock:
            closing = self._closed
        if closing:  # closed already, or closing in another thread: wait for its workers' end
            if wait:
                self._ended.wait()
            return
        with self._lock:
            self._stopping = True
            dropped: list[batches.Sent] = []
            killed: list[Running] = []
            if cancel_pending or kill:
                self._refusing = True
                dropped = list(self._queue)
                self._queue.clear()
            if kill:
                self._killed = True
                killed = list(self._running.values())
                self._running.clear()
                self._timed.clear()
        for sent in dropped:
            sent.batch.abandon()
        stop = TaskCancelledError("the pool was shut down with kill=True while this task ran")
        for running in killed:
            self._lose(running.worker)
            self._report(running.sent.batch, outcomes.fail_all(running.sent, stop))
        self._check_drained()
        if not wait:
            threading.Thread(target=self._close_when_drained, name="conveyor-ray-close", daemon=True).start()
            return
        while not self._drained.wait(_WATCH_SECONDS):
            if not ray.is_initialized():   # Ray was shut down under the pool: nothing will finish
                self.shutdown(wait=False, cancel_pending=True, kill=True)
        self._close()

    def _close_when_drained(self) -> None:
        self._drained.wait()
        self._close()

    def _close(self) -> None:
        """End the pool: its threads, then its workers (finalizer first), then its hold on Ray. The
        pool's primitives are not closed: they outlive it (each goes when its maker drops it)."""
        with self._lock:
            elsewhere = self._closed
            self._closed = True
            timer = self._timer
            workers, self._workers, self._idle = self._workers, [], []
        if elsewhere:  # another thread closes the pool: wait until it has
            self._ended.wait()
            return
        _live.discard(self)
        self._events.put(None)
        for thread in (self._collector, timer):
            if thread is not None and thread is not threading.current_thread():
                thread.join()
        try:
            self._retire(workers)
            with self._lock:
                retiring = list(self._retiring)
            for thread in retiring:  # recycled workers still running their finalizer
                thread.join()
            close_session()
        finally:
            self._ended.set()

    def statistics(self) -> RayStatistics:
        with self._lock:
            return RayStatistics(workers_started=self._workers_started, workers_lost=self._workers_lost,
                                 ray_queued=len(self._queue), ray_running=len(self._running))
