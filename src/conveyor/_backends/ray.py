"""The Ray backend: batches run as Ray tasks, on a local Ray started for the pool or on a cluster.

::

    submit(batch) ── encode (caller's thread) ──► queue ──► at most `slots` tasks in Ray at once
                                                              │ run_batch.remote(...), max_retries=0
                                                              ▼
                       a Ray worker process: initializer (once per process), run the items
                                                              │ (errors caught per item)
    batch.finish(Outcome) ◄── collector thread ◄── done callback of the task's future (Ray's thread)

One Ray task runs a whole batch, so Ray's per-task cost (about a millisecond of scheduling and
transfer) is paid once per batch, and the core's chunk sizer grows batches of tiny calls until it no
longer shows. Inputs and results are pickled by conveyor itself (``process/batches.py``), so an
unpicklable input or result fails alone with a message that names it; Ray only carries bytes.

The backend keeps at most one task per CPU of the cluster in Ray and queues the rest itself: a task
handed to Ray is then running (or starting), so a cancelling shutdown can drop exactly the batches
that have not started, ``task_timeout`` can count from the start, and a ``kill`` cancels (with
``ray.cancel(force=True)``, which kills the worker process) only what runs.

A task lost with its worker (``ray.exceptions.WorkerCrashedError`` and the like) cannot say which
input killed it: a batch of several inputs is re-run one input per task, so the culprit fails alone
as :class:`~conveyor.WorkerCrashedError`. Tasks are submitted with ``max_retries=0``: retries are the
core's (``retries=``), not Ray's.

Options (``Pool(backend="ray", ...)``): ``address`` of an existing cluster (``"auto"``,
``"host:port"`` or ``"ray://host:port"``; the connection stays open for the rest of the program),
else ``RAY_ADDRESS`` from the environment, else a local Ray with ``workers`` CPUs is started and
stopped with the last pool or context that uses it;
``ray_init``: more keyword arguments for ``ray.init`` (``runtime_env``, ``object_store_memory``...).
A process has one Ray connection, shared by every pool and context in it.
"""

from __future__ import annotations

import atexit
import collections
import logging
import os
import queue
import threading
import time
import uuid
import weakref
from typing import Any, Iterator

from conveyor._backends._cluster_worker import cached_function, function_key
from conveyor._backends._inline import timeout_error
from conveyor._backends.process import batches
from conveyor._backends.process.worker import _CALLERS, _run_general
from conveyor._core import serialize
from conveyor._core.config import usable_cores
from conveyor._core.errors import (
    InitializerError,
    PoolClosedError,
    TaskCancelledError,
    WorkerCrashedError,
)
from conveyor.abc import Backend, BackendConfig, Batch, Capabilities, Outcome

try:
    import ray
    import ray.exceptions
except ImportError as exc:  # the registry turns this into BackendUnavailableError with the install hint
    raise ImportError(f"ray is not installed ({exc})") from exc

from conveyor._backends.ray_primitives import RayPrimitives  # noqa: E402 - needs ray

_OPTIONS = frozenset({"address", "ray_init"})

_CRASHES = tuple(getattr(ray.exceptions, name) for name in (
    "WorkerCrashedError", "NodeDiedError", "OutOfMemoryError", "LocalRayletDiedError")
    if hasattr(ray.exceptions, name))
"""A task failed because the process or machine running it went away (not because of its inputs)."""

_WATCH_SECONDS = 0.05
"""How often the timer thread looks at deadlines, and how long a shutdown waits between checks."""

_INLINE_FUNCTION_BYTES = 64 * 1024
"""A pickled function up to this size travels inside each task; a larger one is put in Ray's object
store once per call, and tasks carry a reference."""

# -- the process's Ray connection ----------------------------------------------------------------------

_session_lock = threading.RLock()
"""Re-entrant: a context collected while this thread is inside :func:`open_session` (the garbage
collector runs finalizers anywhere) closes its session from within it."""
_session_users = 0
_session_ours = False   # conveyor started a local Ray, so the last of its users stops it


def configured_address(options: dict[str, Any]) -> str | None:
    """The cluster to use: the ``address`` option, else ``RAY_ADDRESS`` (which ``ray.init`` itself
    honours); None means "start a local Ray"."""
    return options.get("address") or os.environ.get("RAY_ADDRESS") or None


def _current_address() -> str | None:
    try:
        return ray.get_runtime_context().gcs_address
    except Exception:  # noqa: BLE001 - a Ray client connection has no GCS address here
        return None


def open_session(address: str | None, workers: int, init_options: dict[str, Any] | None = None) -> None:
    """Use this process's Ray connection, making it if there is none; pair with :func:`close_session`.

    Without an address, a local Ray with ``workers`` CPUs is started (``address="local"``: never
    someone else's instance found on the machine), and stopped by the last :func:`close_session`. A
    connection to a cluster stays open until the program ends (Ray's exit hook closes it): the next
    pool needs no new connection, and Ray's process-wide threads are started once. A connection the
    user made with ``ray.init`` is used as it is.
    """
    global _session_users, _session_ours
    with _session_lock:
        _session_users += 1  # first: a session closed meanwhile (see _session_lock) cannot stop Ray under us
        try:
            if ray.is_initialized():
                current = _current_address()
                if (address and address != "auto" and not address.startswith("ray://") and current
                        and address != current):
                    raise ValueError(f"this process is already connected to the Ray cluster at {current}; "
                                     f"a process has one Ray connection, so it cannot also use {address}")
            else:
                options: dict[str, Any] = {"logging_level": logging.ERROR, **(init_options or {})}
                if address is None:
                    ray.init(address="local", num_cpus=workers, include_dashboard=False, **options)
                    _session_ours = True
                else:
                    ray.init(address=address, **options)
        except BaseException:
            close_session()
            raise


def close_session() -> None:
    """One user fewer; the last one stops the local Ray that conveyor started."""
    global _session_users, _session_ours
    with _session_lock:
        _session_users -= 1
        if _session_users == 0 and _session_ours:
            _session_ours = False
            ray.shutdown()


class Session:
    """A context's hold on the Ray connection, released by ``close()`` (once)."""

    def __init__(self, address: str | None, workers: int, init_options: dict[str, Any] | None = None) -> None:
        open_session(address, workers, init_options)
        self._open = True

    def close(self) -> None:
        if self._open:
            self._open = False
            close_session()


def cluster_cpus(default: int) -> int:
    """How many tasks the cluster runs at once (its CPUs), or ``default`` if it does not say."""
    try:
        return max(1, int(ray.cluster_resources().get("CPU", default)))
    except Exception:  # noqa: BLE001
        return default


# -- in a Ray worker process ---------------------------------------------------------------------------

_DONE, _INIT_FAILED = 0, 1
_initialized: set[str] = set()


def _fetch(blob: Any) -> bytes:
    """A large function travels as a reference to the object store (in a list, so Ray does not
    resolve it before the cache is consulted)."""
    return ray.get(blob[0]) if isinstance(blob, list) else blob


def _prepare(pool: str, hooks: list[Any] | None, key: str, function: Any, payload: bytes,
             isolate: bool) -> tuple[Any, ...]:
    """In a Ray worker: the pool's initializer if this process has not run it yet, the function and
    the inputs. ``(reply,)`` when there is nothing to run, else ``(fn, items, errors)``; a function
    that cannot be unpickled fails every input."""
    if hooks is not None and pool not in _initialized:
        try:
            initializer, initargs = serialize.loads(ray.get(hooks[0]))
            initializer(*initargs)
        except BaseException as exc:  # noqa: BLE001 - reported to the caller, which breaks the pool
            return ((_INIT_FAILED, serialize.dumps_exception(exc)),)
        _initialized.add(pool)
    fn = cached_function(key, function, _fetch)
    items, errors = batches.decode_items(payload, isolate)
    if items is None:
        return ((_DONE, 0.0, False, {}, True, b""),)
    if isinstance(fn, BaseException):
        errors = dict.fromkeys(range(len(items)), fn)
    return fn, items, errors


def _reply(values: list[Any], errors: dict[int, BaseException], isolate: bool, busy: float) -> tuple[Any, ...]:
    isolated, encoded_errors, values_blob = batches.encode_results(values, errors, isolate)
    return (_DONE, busy, isolated, encoded_errors, False, values_blob)


def run_batch(pool: str, hooks: list[Any] | None, key: str, function: Any, kind: int, payload: bytes,
              isolate: bool) -> tuple[Any, ...]:
    """In a Ray worker: run every input of a batch; the reply.

    Each input's exception is caught and returned pickled with its traceback, so one failing input
    never fails the task (only a dying process does).
    """
    prepared = _prepare(pool, hooks, key, function, payload, isolate)
    if len(prepared) == 1:
        return prepared[0]
    fn, items, errors = prepared
    begin = time.perf_counter()
    values = _run_general(fn, _CALLERS[kind], items, [0.0, 0.0, 0.0], errors, False)
    return _reply(values, errors, isolate, time.perf_counter() - begin)


def run_timed(pool: str, hooks: list[Any] | None, key: str, function: Any, kind: int, payload: bytes,
              isolate: bool) -> Iterator[Any]:
    """In a Ray worker, for a call with ``task_timeout``: like :func:`run_batch`, but yield each
    input's position as it starts (a streaming generator task: the caller sees it at once), so that
    the caller knows what runs since when, kills the task when it overruns and names the input."""
    prepared = _prepare(pool, hooks, key, function, payload, isolate)
    if len(prepared) == 1:
        yield prepared[0]
        return
    fn, items, errors = prepared
    call = _CALLERS[kind]
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
    yield _reply(values, errors, isolate, time.perf_counter() - begin)


_remote_run_batch = ray.remote(run_batch)
_remote_run_timed = ray.remote(run_timed)

# -- in the caller -------------------------------------------------------------------------------------


class _Running:
    """A batch handed to Ray: its encoded form, the task's reference (a generator for a timed
    batch), and for a timed batch the input that runs (a position among those sent) and since when."""

    __slots__ = ("sent", "ref", "position", "started")

    def __init__(self, sent: batches.Sent) -> None:
        self.sent = sent
        self.ref: Any = None
        self.position: int | None = None
        self.started = 0.0


def _fail_all(sent: batches.Sent, error: BaseException) -> Outcome:
    positions = range(len(sent.batch))
    return Outcome([None] * len(sent.batch), {**dict.fromkeys(positions, error), **sent.errors})


def _crash_error(batch: Batch, position: int, exc: BaseException) -> WorkerCrashedError:
    index = batch.indices[position]
    text = str(exc).strip()
    error = WorkerCrashedError(
        f"the Ray worker running task #{index} with input {batches.describe_input(batch, position)} died "
        f"({type(exc).__name__}: {text.splitlines()[0] if text else 'no details'})",
        task_index=index, task_input=batches.describe_input(batch, position))
    error.__cause__ = exc
    return error


_live: weakref.WeakSet[RayBackend] = weakref.WeakSet()
_exit_hook_registered = False


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
                                enforce_timeout=True)
    batches_per_worker = 1  # a Ray task costs about a millisecond: few, big batches

    def __init__(self, config: BackendConfig) -> None:
        global _exit_hook_registered
        super().__init__(config)
        unknown = set(config.options) - _OPTIONS
        if unknown:
            raise TypeError(f"unknown option(s) for the ray backend: {', '.join(sorted(unknown))}")
        if config.finalizer is not None:
            raise NotImplementedError(
                "a worker finalizer is not supported on the ray backend: Ray ends its worker processes "
                "without running their exit hooks, and a task cannot be sent to a chosen worker process, "
                "so there is no point where it could run for every worker")
        if config.max_tasks_per_worker is not None or config.max_memory_per_worker is not None:
            raise NotImplementedError(
                "max_tasks_per_worker and max_memory_per_worker are not available on the ray backend: Ray "
                "manages its worker processes (see its max_calls option and its memory monitor)")
        address = configured_address(config.options)
        open_session(address, config.workers, config.options.get("ray_init"))
        # Tasks in Ray at once: the pool's workers, but no more than the cluster's CPUs (a task beyond
        # them would wait in Ray, and a task in Ray is taken to be running).
        self._slots = min(config.workers, cluster_cpus(config.workers))
        self._key = f"conveyor-pool-{uuid.uuid4().hex}"
        self._hooks: list[Any] | None = None
        if config.initializer is not None:
            self._hooks = [ray.put(serialize.dumps((config.initializer, config.initargs)))]
        self._task = _remote_run_batch.options(max_retries=0, retry_exceptions=False, name="conveyor.run_batch")
        self._timed_task = _remote_run_timed.options(max_retries=0, retry_exceptions=False,
                                                     name="conveyor.run_timed")
        self._lock = threading.Lock()
        self._queue: collections.deque[batches.Sent] = collections.deque()
        self._running: dict[int, _Running] = {}
        self._timed: dict[int, _Running] = {}   # the running batches with a task_timeout
        self._functions: collections.OrderedDict[int, Any] = collections.OrderedDict()
        self._events: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._stopping = False   # shutdown was called: drain, then close
        self._refusing = False   # shutdown with cancel_pending or kill: no new batches at all
        self._closed = False
        self._drained = threading.Event()
        self._broken: BaseException | None = None
        self._primitives: RayPrimitives | None = None
        self._collector = threading.Thread(target=self._collect, name="conveyor-ray-collector", daemon=True)
        self._collector.start()
        self._timer: threading.Thread | None = None
        _live.add(self)
        with _session_lock:
            if not _exit_hook_registered:
                atexit.register(_stop_pools_before_ray)
                _exit_hook_registered = True

    # -- primitives: actors on the pool's cluster ----------------------------------------------------
    def worker_primitives(self) -> Any:
        with self._lock:
            if self._primitives is None:
                self._primitives = RayPrimitives()
            return self._primitives

    @classmethod
    def primitives(cls, config: BackendConfig) -> Any:
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

    # -- work ----------------------------------------------------------------------------------------
    def submit(self, batch: Batch) -> None:
        with self._lock:
            if self._refusing or self._closed:
                raise PoolClosedError("the pool is shut down")
        if self._broken is not None:
            raise self._broken
        encoded = batches.encode(batch)
        if isinstance(encoded, dict):  # nothing in the batch could be pickled
            if batch.claim():
                batch.finish(Outcome([None] * len(batch), encoded))
            return
        with self._lock:
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

    def _pump(self) -> None:
        """Hand queued batches to Ray while it has a free CPU; claim each right before."""
        while True:
            with self._lock:
                if not self._queue or len(self._running) >= self._slots:
                    return
                sent = self._queue.popleft()
                running = _Running(sent)
                self._running[id(running)] = running
            batch = sent.batch
            if not batch.claim():
                self._forget(running)
                self._check_drained()
                continue
            timed = batch.timeout is not None
            try:
                task = self._timed_task if timed else self._task
                ref = task.remote(self._key, self._hooks, function_key(batch.function), self._function_argument(batch),
                                  int(batch.kind), sent.payload, batch.isolate)
            except BaseException as exc:  # noqa: BLE001 - Ray refused the task: its inputs fail
                self._forget(running)
                self._report(batch, _fail_all(sent, exc))
                self._check_drained()
                continue
            with self._lock:
                running.ref = ref
                killed = id(running) not in self._running   # a kill came in between
                if timed and not killed:
                    self._timed[id(running)] = running
                    if self._timer is None:
                        self._timer = threading.Thread(target=self._watch, name="conveyor-ray-timer", daemon=True)
                        self._timer.start()
            if killed:
                self._cancel(ref)
            elif not timed:
                ref.future().add_done_callback(lambda future, running=running: self._events.put((running, future)))

    def _forget(self, running: _Running) -> bool:
        """Take a batch off the running set; False if someone else (a kill) already did."""
        with self._lock:
            self._timed.pop(id(running), None)
            return self._running.pop(id(running), None) is not None

    def _check_drained(self) -> None:
        """Nothing queued or running: a graceful shutdown may close. Checked only after a batch's
        outcome is reported, because reporting may submit its re-runs."""
        with self._lock:
            if not self._queue and not self._running:
                self._drained.set()

    @staticmethod
    def _report(batch: Batch, outcome: Outcome) -> None:
        try:
            batch.finish(outcome)
        except BaseException:  # noqa: BLE001 - a user callback must not stop the collector
            logging.getLogger("conveyor").exception("reporting a finished batch raised")

    @staticmethod
    def _cancel(ref: Any) -> None:
        """Stop a task now: Ray kills the worker process running it."""
        try:
            ray.cancel(ref, force=True)
        except Exception:  # noqa: BLE001 - it finished meanwhile, or Ray is down
            pass

    def _collect(self) -> None:
        """The collector thread: turn finished tasks into outcomes, then start queued batches."""
        while True:
            event = self._events.get()
            if event is None:
                return
            running, future = event
            if self._forget(running):
                try:
                    reply = future.result()
                except BaseException as exc:  # noqa: BLE001 - the task as a whole failed
                    self._report(running.sent.batch, self._task_failed(running.sent, exc))
                else:
                    self._complete(running.sent, reply)
            self._pump()
            self._check_drained()

    def _watch(self) -> None:
        """The timer thread, for calls with ``task_timeout``: follow which input each timed task runs
        (its generator yields the position as the input starts), and kill a task whose input overruns."""
        while True:
            with self._lock:
                if self._closed:
                    return
                timed = list(self._timed.values())
            if not timed:
                time.sleep(_WATCH_SECONDS)
                continue
            now = time.monotonic()
            for running in timed:
                timeout = running.sent.batch.timeout or 0.0
                if running.position is not None and now - running.started > timeout and self._forget(running):
                    self._cancel(running.ref)
                    self._report(running.sent.batch, self._timed_out(running, now - running.started))
            ready, _ = ray.wait([running.ref for running in timed], num_returns=1, timeout=_WATCH_SECONDS)
            for generator in ready:
                running = next(r for r in timed if r.ref is generator)
                try:
                    message = ray.get(next(generator))
                except StopIteration:
                    continue
                except BaseException as exc:  # noqa: BLE001 - the task as a whole failed
                    if self._forget(running):
                        self._report(running.sent.batch, self._timed_failed(running, exc))
                    continue
                if isinstance(message, int):
                    running.position, running.started = message, time.monotonic()
                elif self._forget(running):
                    self._complete(running.sent, message)
            self._pump()
            self._check_drained()

    def _timed_out(self, running: _Running, elapsed: float) -> Outcome:
        """The input that overran fails with TaskTimeoutError; the others of its batch run again."""
        sent, position = running.sent, running.sent.positions[running.position or 0]
        lost = [p for p in sent.positions if p != position]
        return Outcome([None] * len(sent.batch), {**sent.errors, position: timeout_error(sent.batch, position, elapsed)},
                       lost=lost)

    def _timed_failed(self, running: _Running, exc: BaseException) -> Outcome:
        """A timed task died: the input it was running is known, so it alone fails."""
        sent = running.sent
        if running.position is None or not isinstance(exc, _CRASHES):
            return self._task_failed(sent, exc)
        position = sent.positions[running.position]
        lost = [p for p in sent.positions if p != position]
        return Outcome([None] * len(sent.batch), {**sent.errors, position: _crash_error(sent.batch, position, exc)},
                       lost=lost)

    def _complete(self, sent: batches.Sent, reply: tuple[Any, ...]) -> None:
        if reply[0] == _INIT_FAILED:
            cause = serialize.loads_exception(reply[1])
            error = InitializerError(f"the worker initializer raised {type(cause).__name__}: {cause}; "
                                     "the pool cannot run tasks")
            error.__cause__ = cause
            self._break(error)
            self._report(sent.batch, _fail_all(sent, error))
            return
        _, busy, isolated, encoded_errors, undecodable, values_blob = reply
        self._report(sent.batch, batches.decode_reply(sent, busy, isolated, encoded_errors, undecodable,
                                                      values_blob, len(sent.positions)))

    def _task_failed(self, sent: batches.Sent, exc: BaseException) -> Outcome:
        """The task failed as a whole: its worker died, its result was lost, or Ray failed it."""
        batch = sent.batch
        positions = list(sent.positions)
        if isinstance(exc, ray.exceptions.ObjectLostError):
            return Outcome([None] * len(batch), dict(sent.errors), lost=positions)  # ran, result gone
        if len(positions) > 1:
            return Outcome([None] * len(batch), dict(sent.errors), suspects=positions)  # find the culprit
        position = positions[0]
        error: BaseException
        if isinstance(exc, _CRASHES):
            error = _crash_error(batch, position, exc)
        elif isinstance(exc, ray.exceptions.RayTaskError) and isinstance(exc.cause, BaseException):
            error = exc.cause
        else:
            error = exc
        return Outcome([None] * len(batch), {**sent.errors, position: error})

    def _break(self, error: BaseException) -> None:
        """The pool cannot run tasks: fail what waits, refuse what comes."""
        with self._lock:
            self._broken = self._broken or error
            waiting, self._queue = self._queue, collections.deque()
        for sent in waiting:
            if sent.batch.claim():
                self._report(sent.batch, _fail_all(sent, error))
        self._check_drained()

    def broken(self) -> BaseException | None:
        return self._broken

    def shutdown(self, *, wait: bool = True, cancel_pending: bool = False, kill: bool = False) -> None:
        with self._lock:
            if self._closed:
                return
            self._stopping = True
            dropped: list[batches.Sent] = []
            killed: list[_Running] = []
            if cancel_pending or kill:
                self._refusing = True
                dropped = list(self._queue)
                self._queue.clear()
            if kill:
                killed = list(self._running.values())
                self._running.clear()
                self._timed.clear()
        for sent in dropped:
            sent.batch.abandon()
        stop = TaskCancelledError("the pool was shut down with kill=True while this task ran")
        for running in killed:
            if running.ref is not None:
                self._cancel(running.ref)
            self._report(running.sent.batch, _fail_all(running.sent, stop))
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
        with self._lock:
            if self._closed:
                return
            self._closed = True
            primitives, timer = self._primitives, self._timer
        _live.discard(self)
        self._events.put(None)
        for thread in (self._collector, timer):
            if thread is not None and thread is not threading.current_thread():
                thread.join()
        if primitives is not None:
            primitives.close()
        close_session()

    def statistics(self) -> dict[str, Any]:
        with self._lock:
            return {"ray_slots": self._slots, "ray_queued": len(self._queue), "ray_running": len(self._running)}
