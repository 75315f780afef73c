"""``backend="auto"``: serial, threads or processes, chosen per task function by measuring it.

::

    submit(batch) ──► decided for this function? ──yes──► its backend (serial / thread / process)
                            │ no
                            ▼
                      probe thread: run the batch's first inputs, measure (probe.py), decide;
                      report them, hand the rest back as lost (the core sends them again, now routed),
                      and send on the batches that waited for the decision

A decision is made once per function and pool, on that function's first batch, and then fixed: a
long ``imap`` whose work changes character keeps its first choice (documented; predictable, and the
probe costs only one batch). Each chosen backend is made on first use, with the pool's settings, and
lives as long as the pool; the pool's primitives are the process backend's, which work across
threads as well as processes, whichever is chosen.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from typing import Any

from conveyor._backends._shared.inline import CALLERS, run_finalizer
from conveyor._backends.auto import probe as probing
from conveyor._core import forkserver, serialize
from conveyor._core.config import check_start_method, usable_cores
from conveyor._core.coroutines import is_coroutines
from conveyor._core.errors import InitializerError, PoolClosedError
from conveyor._core.state import enter_worker_thread
from conveyor._core.statistics import AutoStatistics
from conveyor.abc import PRIMITIVES, Backend, BackendConfig, Batch, BatchOwner, Capabilities, Outcome

_log = logging.getLogger("conveyor")

_REMEMBERED = 256
"""Decisions kept per pool (the oldest go first): a program mapping thousands of lambdas measures again."""


class AutoBackend(Backend):
    name = "auto"
    capabilities = Capabilities(cancel_running=True, primitives=PRIMITIVES)

    @classmethod
    def primitives(cls, config: BackendConfig) -> Any:
        """The process backend's: they work across threads as well as processes, whichever is chosen."""
        from conveyor._core.registry import backend_class

        return backend_class("process").primitives(config)

    def __init__(self, config: BackendConfig) -> None:
        super().__init__(config)
        if config.start_method is not None:  # for processes, if chosen: a wrong one fails here, now
            check_start_method(config.start_method)
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)  # a batch joined those waiting for a probe
        self._decisions: collections.OrderedDict[Any, probing.Decision] = collections.OrderedDict()
        self._waiting: dict[Any, list[Batch]] = {}  # batches of a function being probed
        self._backends: dict[str, Backend] = {}
        self._probes: set[threading.Thread] = set()
        self._idle_probes: set[threading.Thread] = set()  # waiting for their function's next batch
        self._hurry = False  # statistics() wants those to decide with what they have
        self._closed = False
        self._killed = False
        self._stopping: dict[str, bool] | None = None  # how shutdown() was called, for backends made after
        self._stopped: set[str] = set()  # the backends already told to shut down
        self._probe_ready = False   # the initializer has run in this process (for the probe thread)
        self._probe_state: BaseException | None = None

    # -- routing -------------------------------------------------------------------------------------
    @staticmethod
    def _key(batch: Batch) -> Any:
        fn = batch.function.fn
        fn = fn.fn if is_coroutines(fn) else fn
        try:
            hash(fn)
        except TypeError:
            return batch.function.key
        return fn

    def submit(self, batch: Batch) -> None:
        key = self._key(batch)
        with self._lock:
            if self._killed or (self._closed and not self._backends and not self._probes):
                raise PoolClosedError("cannot submit to a pool that is shut down")
            decision = self._decisions.get(key)
            if decision is None:
                if key in self._waiting:
                    self._waiting[key].append(batch)
                    self._arrived.notify_all()
                    return
                self._waiting[key] = []
                thread = threading.Thread(target=self._run_probe, args=(key, batch), name="conveyor-auto-probe",
                                          daemon=True)
                self._probes.add(thread)
                thread.start()
                return
            self._decisions.move_to_end(key)
        self._backend_for(decision).submit(batch)

    def workers_for(self, function: Any) -> int:
        with self._lock:
            key = function.fn.fn if is_coroutines(function.fn) else function.fn
            try:
                decision = self._decisions.get(key)
            except TypeError:  # unhashable: decided by its key
                decision = self._decisions.get(function.key)
            backend = self._backends.get(decision.backend) if decision is not None else None
        if backend is not None:
            return backend.workers
        # Undecided (or not made yet): as if for a few threads per core. Batches sent meanwhile stay
        # small (none holds many inputs that 128 waiting threads could share), and few (the first
        # window of a map is one single-input batch per worker: not hundreds, if processes win).
        return self.workers if self.config.workers_given else probing.UNDECIDED_WORKERS_PER_CORE * usable_cores()

    def _backend_for(self, decision: probing.Decision) -> Backend:
        from conveyor._core.registry import backend_class

        with self._lock:
            backend = self._backends.get(decision.backend)
            if backend is None:
                if self._killed:
                    raise PoolClosedError("cannot submit to a pool that is shut down")
                workers = self.config.workers
                if decision.backend == "thread" and not self.config.workers_given:
                    workers = probing.thread_count(decision, usable_cores())
                config = dataclasses.replace(self.config, workers=workers)
                backend = self._backends[decision.backend] = backend_class(decision.backend)(config)
            return backend

    # -- probing -------------------------------------------------------------------------------------
    def _run_probe(self, key: Any, batch: Batch) -> None:
        last: tuple[Batch, Outcome] | None = None
        try:
            decision, last = self._measure(key, batch)
        except BaseException as error:  # noqa: BLE001 - a bug here must fail the work, never hang it
            decision = probing.Decision("thread", f"the probe failed ({error!r}): threads")
        with self._lock:
            self._decisions[key] = decision
            while len(self._decisions) > _REMEMBERED:
                self._decisions.popitem(last=False)
            waiting = self._waiting.pop(key, [])
            self._probes.discard(threading.current_thread())
        _log.debug("backend='auto' chose %s for %s: %s", decision.backend, batch.function.name, decision.reason)
        if last is not None:  # reported once the decision is recorded: a caller who has every result sees it
            last[0].finish(last[1])
        for queued in waiting:
            try:
                self._backend_for(decision).submit(queued)
            except BaseException as error:  # noqa: BLE001 - the pool was shut down meanwhile
                if queued.claim():
                    queued.finish(Outcome([None] * len(queued), dict.fromkeys(range(len(queued)), error)))
        with self._lock:  # a backend made after the pool was closed is closed the same way, now
            late = [(name, b) for name, b in self._backends.items() if name not in self._stopped]
            stopping = self._stopping
            if stopping is not None:
                self._stopped.update(name for name, _ in late)
        if stopping is not None:
            for _, backend in late:
                backend.shutdown(wait=False, **stopping)

    def _measure(self, key: Any, first_batch: Batch) -> tuple[probing.Decision, tuple[Batch, Outcome] | None]:
        """Run the first inputs of ``batch`` (and of the batches of the same function that queue
        meanwhile) here, until the probe's budget is spent; report them, the rest handed back as lost.
        Returns the decision and the last batch probed with its outcome, not yet reported."""
        batch: Batch | None = first_batch
        fn = first_batch.function.fn
        if is_coroutines(fn):
            self._put_back(key, first_batch)
            return probing.Decision("thread", "a coroutine function: its calls await (I/O); threads run them "
                                              "on event loops of their own without pickling"), None
        if first_batch.timeout is not None:  # a deadline to keep: the probe would not keep it
            self._put_back(key, first_batch)
            return probing.Decision("process", "a task_timeout is set: processes, which can stop a call"), None
        self._prepare_probe_thread()
        first: tuple[list[Any], list[Any]] | None = None
        last: tuple[Batch, Outcome] | None = None
        with probing.Prober(on_computing=lambda: forkserver.start_early(self.config.start_method)) as prober:
            while batch is not None and not self._closed:
                if batch.claim():
                    values: list[Any] = []
                    errors: dict[int, BaseException] = {}
                    began = prober.probe.in_calls
                    if self._probe_state is not None:
                        errors = dict.fromkeys(range(len(batch)), self._probe_state)
                    else:
                        prober.run(fn, CALLERS[batch.kind], batch.items, values, errors)
                    ran = len(values)
                    first = first or (batch.items[:1], values[:1])
                    last = batch, Outcome(values + [None] * (len(batch) - ran), errors,
                                          lost=list(range(ran, len(batch))), busy=prober.probe.in_calls - began)
                if prober.spent or (prober.enough and not self._waiting.get(key)):
                    batch = None  # decide now; the last batch is reported once the decision is recorded
                    break
                if last is not None:  # its map call sends more inputs as these results come back
                    last[0].finish(last[1])
                    last = None
                batch = self._next_waiting(key, prober)
        readings = prober.probe
        decision = probing.choose(readings)
        if decision.backend == "process" and first is not None:
            readings.unpicklable, readings.travel = _travel(fn, *first)
            decision = probing.choose(readings)
        return (decision if readings.calls else self._decide_untried()), last

    def _next_waiting(self, key: Any, prober: probing.Prober) -> Batch | None:
        """The next batch of the function being probed: one already waiting, or one that arrives
        soon (its map call sends more as the probed results come back), or None."""
        deadline = time.monotonic() + probing.ARRIVAL_SECONDS
        me = threading.current_thread()
        with self._lock:
            self._idle_probes.add(me)
            try:
                while not self._waiting.get(key) and not self._closed and not prober.spent:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or self._hurry:
                        return None
                    self._arrived.wait(remaining)
            finally:
                self._idle_probes.discard(me)
            waiting = self._waiting.get(key)
            return waiting.pop(0) if waiting and not prober.spent else None

    def _put_back(self, key: Any, batch: Batch) -> None:
        """A batch the probe took and did not claim: first in line for the chosen backend."""
        with self._lock:
            self._waiting[key].insert(0, batch)

    @staticmethod
    def _decide_untried() -> probing.Decision:
        return probing.Decision("process", "nothing could be measured: processes, the default")

    def _prepare_probe_thread(self) -> None:
        """The probe runs calls in this process: once, the pool's initializer runs here first, as in a
        worker thread (a failure fails the probed inputs, as a thread pool's would)."""
        enter_worker_thread()
        with self._lock:
            if self._probe_ready:
                return
            self._probe_ready = True
        if self.config.initializer is not None:
            try:
                self.config.initializer(*self.config.initargs)
            except BaseException as error:  # noqa: BLE001 - reported to the probed inputs
                self._probe_state = InitializerError(f"the initializer raised {error!r} (in the probe)")
                self._probe_state.__cause__ = error

    # -- the rest of the contract ----------------------------------------------------------------------
    def cancel_running(self, owner: BatchOwner) -> None:
        for backend in list(self._backends.values()):
            if backend.capabilities.cancel_running:
                backend.cancel_running(owner)

    def broken(self) -> BaseException | None:
        for backend in list(self._backends.values()):
            error = backend.broken()
            if error is not None:
                return error
        return None

    def shutdown(self, *, wait: bool = True, cancel_pending: bool = False, kill: bool = False) -> None:
        with self._lock:
            self._closed = True
            self._killed = self._killed or kill
            self._stopping = {"cancel_pending": cancel_pending, "kill": kill}
            probes = list(self._probes)
        if wait and not kill:
            for thread in probes:  # a probe decides soon; its waiting batches then reach a backend
                thread.join()
        # Killed: a probe's call runs in this process and cannot be stopped (as on threads); the
        # batches that wait for it fail once it is done, against a backend that refuses them.
        with self._lock:
            backends = list(self._backends.items())
            self._stopped.update(self._backends)
        for _, backend in backends:
            backend.shutdown(wait=wait, cancel_pending=cancel_pending, kill=kill)
        if self._probe_ready and self.config.finalizer is not None and wait:
            run_finalizer(self.config.finalizer, self.config.finalargs)

    def statistics(self) -> AutoStatistics:
        with self._lock:  # a probe waiting for more inputs that may never come decides now
            idle = list(self._idle_probes)
            if idle:
                self._hurry = True
                self._arrived.notify_all()
        for thread in idle:
            thread.join(1.0)
        with self._lock:
            self._hurry = False
            decisions = tuple((getattr(key, "__qualname__", repr(key)), d.backend, d.reason)
                              for key, d in self._decisions.items())
            backends = dict(self._backends)
        return AutoStatistics(decisions=decisions,
                              backends=tuple((name, backend.statistics()) for name, backend in backends.items()))


def _travel(fn: Any, items: list[Any], values: list[Any]) -> tuple[str | None, float | None]:
    """``(what of a call cannot be pickled, or None; seconds its input and result take to travel to a
    worker process and back)``: large buffers go through shared memory, the rest through a pipe."""
    seconds = 0.0
    for what, obj in (("the task function", fn), ("its input", items), ("its result", values)):
        try:
            data, large = serialize.dumps_out_of_band(obj)
        except Exception:  # noqa: BLE001 - anything that stops pickling
            return what, None
        if what != "the task function":  # sent once per worker, not per call
            shared = sum(memoryview(buffer).nbytes for buffer in large)
            seconds += len(data) / probing.COPY_BYTES_PER_SECOND + shared / probing.SHARED_BYTES_PER_SECOND
    return None, seconds
