"""The process backend: our own worker supervision on the stdlib's process and pipe primitives.

::

    caller threads                         supervisor thread (one per pool)
    ──────────────                         ─────────────────────────────────────────────────────
    submit(batch)                          wait(worker pipes, worker sentinels, wake-up fd, tick)
      encode (pickle) ─► pending deque ──► dispatch ──RUN──► worker 1 pipe ──► worker 1 ──┐
      wake-up fd  ─────────────────────►     ▲        ──RUN──► worker N pipe ──► worker N ─┤
                                             │                                             │
    Batch.finish ◄── decode ◄── DONE ◄───────┴──────────── results on the same pipe ◄──────┘
                        sentinel fires ─► read the dead worker's progress slot ─► fail only the
                                          input it was running; re-queue the rest; replace it

Why it does not wrap ``multiprocessing.Pool`` or ``ProcessPoolExecutor``: both share one queue
between all workers, so a worker that dies while holding its lock or half-way through a message
wedges or breaks everyone. Here each worker has its own pipe and a three-number progress slot in
shared memory; a dead worker can only lose what it held, and the slot says exactly which input that
was. Deadlines (``task_timeout``) are read from the same slot, so the worker never has to cooperate.

The supervisor never blocks on a worker: it sends a batch only to a worker that is reading (its
in-flight list is empty) or, for a prefetch, one small enough to fit in the pipe's buffer.
"""

from __future__ import annotations

import collections
import functools
import itertools
import os
import signal
import threading
import time
import warnings
from multiprocessing import resource_tracker
from multiprocessing.connection import wait as wait_for
from typing import Any

from conveyor._backends._shared import batches
from conveyor._backends._shared.batches import Sent
from conveyor._backends._shared.spawned import spawn_process
from conveyor._backends.process import dispatch, failures
from conveyor._backends.process import protocol as p
from conveyor._backends.process.handle import WorkerHandle
from conveyor._backends.process.launch import WorkerLauncher, import_primitives_before_fork
from conveyor._backends.process.memory import SegmentLedger
from conveyor._core import errors as _errors
from conveyor._core import serialize, shm
from conveyor._core.config import default_start_method
from conveyor._core.errors import PoolClosedError, WorkerRecycledWarning
from conveyor._core.statistics import ProcessStatistics
from conveyor.abc import Backend, BackendConfig, Batch, Capabilities, Outcome, SpawnedTask

TYPE_CHECKING = False
if TYPE_CHECKING:  # imported when first used: a pool that makes no primitive never loads them
    from conveyor._backends.process.primitives import ProcessPrimitives

KILL_GRACE_SECONDS = 1.0
"""After SIGTERM, a worker gets this long before SIGKILL."""
_IDLE_TICK = 1.0
_TIMEOUT_TICK = 0.02


class ProcessBackend(Backend):
    name = "process"
    option_names = frozenset({"shared_memory"})
    capabilities = Capabilities(cancel_running=True, enforce_timeout=True, needs_pickle=True,
                                isolates_crashes=True, shared_memory=True)

    @classmethod
    def primitives(cls, config: BackendConfig) -> ProcessPrimitives:
        from conveyor._backends.process.primitives import ProcessPrimitives

        return ProcessPrimitives()

    @classmethod
    def spawn(cls, config: BackendConfig, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any], name: str,
              on_done: Any = None) -> SpawnedTask:
        if (config.start_method or default_start_method()) == "fork":
            import_primitives_before_fork()
        return spawn_process(config, fn, args, kwargs, name, on_done)

    def __init__(self, config: BackendConfig) -> None:
        super().__init__(config)
        method = config.start_method or default_start_method()
        self._shared_memory = bool(shm.available() and config.options.get("shared_memory", True))
        self._launcher = WorkerLauncher(config, method, self._shared_memory)
        self.start_method = method
        self._lock = threading.Lock()
        self._pending: collections.deque[Sent] = collections.deque()
        self._workers: list[WorkerHandle] = []
        self._seq = itertools.count(1)
        self._closed = False
        self._kill = False
        self._finished = False       # the supervisor has exited; nothing is accepted any more
        self._broken: BaseException | None = None
        self._startup_failures = 0
        self._counters = collections.Counter[str]()
        self._cancel_queued = False
        self._queued_cancelled = threading.Event()
        self._cancelled_owners: list[Any] = []  # calls whose running batches are to be stopped
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._arena: shm.Arena | None = None
        self._kept: list[Any] = []  # closed once the supervisor is done (keep_until_finished)
        if shm.available():
            # The stdlib's resource tracker removes segments left when this process is killed: started
            # now, so that every worker shares it (workers make segments for large results, and tasks
            # may make SharedArrays or shared objects, even with shared_memory=False).
            resource_tracker.ensure_running()
        if self._shared_memory:
            # Large inputs and results go through shared memory (bulk.py).
            self._arena = shm.Arena(f"conveyor-{os.getpid()}")
        self._memory = SegmentLedger(self._arena)
        self._next_exit_poll = 0.0  # when the supervisor next asks waitpid about every worker (_loop)
        self._supervisor = threading.Thread(target=self._supervise, name="conveyor-process-supervisor",
                                            daemon=True)
        if method == "fork":
            self._fork_first_workers()
        try:
            self._supervisor.start()
        except BaseException:  # Ctrl-C while it starts: it may be running, and nobody would stop it
            self.shutdown(wait=False, cancel_pending=True, kill=True)
            raise

    def _fork_first_workers(self) -> None:
        """Under fork, start the first workers here, in the caller's thread, as the stdlib's pools do.

        Forked from the supervisor thread instead, a worker could be born while the caller's thread,
        already past ``Pool()``, is importing a module (``multiprocessing.managers`` for a
        ``Manager()``, say): the child inherits that module's import lock held by a thread it does
        not have, and deadlocks the first time it unpickles something from that module. Workers the
        supervisor forks later (replacements) still run that risk; forkserver, the default, never
        does.
        """
        try:
            self._maintain()
        except BaseException:  # Ctrl-C or a failed fork: no supervisor will ever stop or close these
            for worker in self._workers:
                worker.process.kill()
                worker.process.join()
                worker.conn.close()
            os.close(self._wake_r)
            os.close(self._wake_w)
            if self._arena is not None:
                self._arena.close()
            raise

    # -- the contract ------------------------------------------------------------------------------
    @property
    def max_batch_size(self) -> int | None:
        return self.config.max_tasks_per_worker

    def submit(self, batch: Batch) -> None:
        """Accept a batch until the pool is killed or fully drained.

        A gracefully closed pool still accepts: the front end refuses new calls after close, but the
        calls already running may still feed inputs, re-run lost ones, or retry failed ones.
        """
        self._check_accepting()
        sent = batches.encode(batch, self._arena)
        if not isinstance(sent, batches.Sent):
            self._fail_now(batch, sent)
            return
        with self._lock:
            self._check_accepting()  # again: the supervisor may have finished while we pickled
            self._pending.append(sent)
            self._wake()

    def _check_accepting(self) -> None:
        if self._broken is not None:
            raise self._broken
        if self._kill or self._finished:
            raise PoolClosedError("cannot submit to a pool that is shut down")

    def shutdown(self, *, wait: bool = True, cancel_pending: bool = False, kill: bool = False) -> None:
        with self._lock:
            self._closed = True
            self._kill = self._kill or kill
            abandoned: list[Sent] = []
            if cancel_pending or kill:
                abandoned = list(self._pending)
                self._pending.clear()
        for sent in abandoned:
            sent.batch.abandon()
        in_supervisor = threading.current_thread() is self._supervisor
        if cancel_pending and not kill:
            # Batches already queued in a worker's pipe must not start after we return either.
            with self._lock:
                self._cancel_queued = True
                self._wake()
            if not in_supervisor:
                self._queued_cancelled.wait(timeout=5.0)
        with self._lock:
            self._wake()
        if wait and not in_supervisor:
            try:
                while self._supervisor.is_alive():
                    self._supervisor.join(0.1)
            except KeyboardInterrupt:
                # Ctrl-C while waiting: stop being polite. SIGKILL now; the supervisor reaps.
                with self._lock:
                    self._kill = True
                    self._wake()
                for worker in list(self._workers):
                    worker.signal(signal.SIGKILL)
                raise

    def cancel_running(self, owner: Any) -> None:
        with self._lock:
            if self._finished:
                return
            self._cancelled_owners.append(owner)
            self._wake()

    def keep_until_finished(self, resource: Any) -> None:
        """Close ``resource`` (a ``conveyor.Shared`` the workers' setup reads) once the last worker is
        gone, not before: a pool closed and dropped while its work drains still starts replacements."""
        with self._lock:
            if not self._finished:
                self._kept.append(resource)
                return
        resource.close()

    def broken(self) -> BaseException | None:
        return self._broken

    def statistics(self) -> ProcessStatistics:
        with self._lock:
            counters, workers = self._counters, list(self._workers)
            return ProcessStatistics(
                workers_started=counters["workers_started"], workers_crashed=counters["workers_crashed"],
                workers_recycled_for_memory=counters["workers_recycled_for_memory"],
                tasks_timed_out=counters["tasks_timed_out"], workers_alive=len(workers),
                queued_batches=len(self._pending), start_method=self.start_method,
                worker_pids=tuple(worker.pid for worker in workers if not worker.doomed))

    @classmethod
    def _fail_now(cls, batch: Batch, errors: dict[int, BaseException]) -> None:
        if batch.claim():
            cls._finish(batch, [None] * len(batch), errors)

    def _wake(self) -> None:
        """Interrupt the supervisor's wait. Call with ``self._lock`` held (the fd is closed under it)."""
        try:
            os.write(self._wake_w, b"\0")
        except OSError:
            pass  # already awake (pipe full), or the supervisor is gone

    # -- the supervisor ----------------------------------------------------------------------------
    def _supervise(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # noqa: BLE001 - a bug here must fail the work, never hang it
            error = _errors.BrokenPoolError(f"the pool's supervisor failed: {exc!r}")
            error.__cause__ = exc
            self._break(error)
            raise
        finally:
            self._kill_all_now()
            if self._arena is not None:
                self._arena.close()
            self._queued_cancelled.set()
            with self._lock:
                self._closed = self._finished = True
                kept, self._kept = self._kept, []
                os.close(self._wake_r)
                os.close(self._wake_w)
                self._wake_w = -1
            for resource in kept:
                try:
                    resource.close()
                except Exception:  # noqa: BLE001, S110 - the others must still be closed
                    pass

    def _loop(self) -> None:
        while True:
            with self._lock:
                closed, kill, cancel_queued = self._closed, self._kill, self._cancel_queued
            if kill:
                self._stop_everything()
            elif cancel_queued and not self._queued_cancelled.is_set():
                for worker in self._workers:  # what the workers hold unstarted is skipped, too
                    dispatch.skip_unstarted(worker, lambda sent: True)
                self._queued_cancelled.set()
            self._stop_cancelled_calls()
            if self._arena is not None:
                self._arena.run_later()  # inputs dropped by finalizers (bulk.Frozen) since the last turn
            self._maintain()
            self._dispatch()
            if closed and not self._workers:
                with self._lock:
                    if not self._pending:
                        self._finished = True  # under the lock that submit appends under
                        return
            waitables: list[Any] = [self._wake_r]
            for worker in self._workers:
                waitables.append(worker.process.sentinel)
                if worker.conn_open:
                    waitables.append(worker.conn)
            ready = wait_for(waitables, self._tick())
            for obj in ready:
                if obj == self._wake_r:
                    os.read(self._wake_r, 4096)
            for worker in list(self._workers):
                if worker.conn_open and worker.conn in ready:
                    self._drain(worker)
            # Once a tick, the kernel is asked too (waitpid): a process forked by another thread of
            # this program (a multiprocessing.Pool's worker, say) while a worker was being forked
            # can hold a copy of that worker's sentinel's write end, which then never fires.
            now = time.monotonic()
            ask_kernel = not ready or now >= self._next_exit_poll
            if ask_kernel:
                self._next_exit_poll = now + _IDLE_TICK
            for worker in list(self._workers):
                if worker.process.sentinel in ready or (ask_kernel and worker.process.exitcode is not None):
                    self._on_exit(worker)
            self._check_deadlines()

    def _tick(self) -> float:
        for worker in self._workers:
            if worker.kill_at is not None or (worker.inflight and worker.inflight[0].batch.timeout is not None):
                return _TIMEOUT_TICK
        return _IDLE_TICK

    def _target_workers(self) -> int:
        with self._lock:
            if self._broken is not None or self._kill:
                return 0
            busy = bool(self._pending) or any(worker.inflight for worker in self._workers)
            if self._closed and not busy:
                return 0
        return self.config.workers

    def _maintain(self) -> None:
        """Start workers up to the target; ask idle ones to exit once the pool is closed and drained."""
        target = self._target_workers()
        available = [worker for worker in self._workers if worker.available]
        for _ in range(target - len(available)):
            self._spawn()
        if target == 0:
            for worker in available:
                if not worker.inflight:
                    self._retire(worker)
        for worker in self._workers:
            if worker.retiring and not worker.inflight and worker.conn_open:
                self._send_exit(worker)

    def _spawn(self) -> None:
        lasting = threading.current_thread() in (self._supervisor, threading.main_thread())
        self._workers.append(self._launcher.start(lasting))
        self._counters["workers_started"] += 1

    def _retire(self, worker: WorkerHandle) -> None:
        worker.retiring = True
        if not worker.inflight:
            self._send_exit(worker)

    def _send_exit(self, worker: WorkerHandle) -> None:
        if worker.conn_open:
            try:
                worker.conn.send_bytes(serialize.dumps((p.EXIT,)))
            except OSError:
                pass
            worker.conn_open = False
            # Keep the connection object alive until the process is reaped (its sentinel is watched).

    def _pick(self, sent: Sent) -> WorkerHandle | None:
        worker, spent = dispatch.pick(self._workers, sent, self.config.max_tasks_per_worker)
        for each in spent:
            self._retire(each)
        return worker

    def _dispatch(self) -> None:
        while True:
            with self._lock:
                if not self._pending:
                    return
                sent = self._pending[0]
                worker = self._pick(sent)
                if worker is None:
                    return
                self._pending.popleft()
            if not sent.batch.claim():
                continue
            self._send(worker, sent)

    def _send(self, worker: WorkerHandle, sent: Sent) -> None:
        batch = sent.batch
        sent.seq = next(self._seq)
        key = batch.function.key
        blob = dispatch.function_blob_for(worker, sent)
        sent.stride = batches.stride(batch)
        header = serialize.dumps((p.RUN, sent.seq, key, blob, int(batch.kind), batch.timeout is not None,
                                  batch.isolate, sent.stride, self._memory.released_by(worker, self._workers)))
        self._memory.hold(worker, sent.seq, sent.leases)
        worker.inflight.append(sent)
        worker.dispatched += len(sent.positions)
        try:
            worker.conn.send_bytes(header)
            worker.conn.send_bytes(sent.payload)
        except OSError:
            pass  # the worker is dying; its sentinel will report what it held

    # -- results -----------------------------------------------------------------------------------
    def _drain(self, worker: WorkerHandle) -> None:
        """Handle every complete message waiting on a worker's pipe."""
        while True:
            try:
                if not worker.conn.poll():
                    return
                header = serialize.loads(worker.conn.recv_bytes())
                values_blob = worker.conn.recv_bytes() if header[0] == p.DONE else b""
            except (EOFError, OSError):
                worker.conn_open = False
                return
            tag = header[0]
            if tag == p.READY:
                worker.ready = True
                self._startup_failures = 0
            elif tag == p.INIT_FAILED:
                cause = serialize.loads_exception(header[1])
                error = _errors.InitializerError(f"the worker initializer raised {type(cause).__name__}: {cause}; "
                                         "the pool cannot run tasks")
                error.__cause__ = cause
                self._break(error)
                return
            elif tag == p.DONE:
                self._complete(worker, header, values_blob)
            elif tag == p.SKIPPED:
                self._skipped(worker, header[1])

    def _complete(self, worker: WorkerHandle, header: tuple[Any, ...], values_blob: bytes) -> None:
        _, seq, busy, isolated, encoded_errors, undecodable, ran, over_memory, kept, segment = header
        self._memory.unhold(worker, seq, kept)
        if not worker.inflight or worker.inflight[0].seq != seq:
            if segment is not None:
                worker.released.append(segment[0])  # already reported (killed for a timeout)
            return
        sent = worker.inflight.popleft()
        if over_memory:
            self._recycle_for_memory(worker, over_memory)
        on_release = functools.partial(self._memory.result_dropped, worker.pid)
        outcome = batches.decode_reply(sent, busy, isolated, encoded_errors, undecodable, values_blob, ran,
                                       segment, on_release)
        self._finish(sent.batch, outcome.values, outcome.errors, lost=outcome.lost, suspects=outcome.suspects,
                     busy=outcome.busy)
        self._after_batch(worker)

    def _recycle_for_memory(self, worker: WorkerHandle, resident: int) -> None:
        """The worker passed ``max_memory_per_worker``: replace it once idle, and say so."""
        if worker.retiring:
            return
        self._counters["workers_recycled_for_memory"] += 1
        limit = self.config.max_memory_per_worker or 0
        warnings.warn(
            f"worker process {worker.pid} uses {resident / 2**20:.0f} MiB, over max_memory_per_worker "
            f"({limit / 2**20:.0f} MiB): it is replaced by a fresh one", WorkerRecycledWarning, stacklevel=1)
        self._retire(worker)

    def _stop_cancelled_calls(self) -> None:
        """``cancel_running``: kill each worker that runs a batch of a cancelled call (its other
        batches run again elsewhere), and tell the others to skip such batches they hold unstarted."""
        with self._lock:
            owners, self._cancelled_owners = self._cancelled_owners, []
        if not owners:
            return
        ids = {id(owner) for owner in owners}
        for worker in list(self._workers):
            started = worker.slot[p.SLOT_SEQ]
            if worker.doomed or not any(s.seq == started and id(s.batch.owner) in ids for s in worker.inflight):
                dispatch.skip_unstarted(worker, lambda sent: id(sent.batch.owner) in ids)
                continue
            error = _errors.TaskCancelledError(
                f"its call was cancelled while it ran; worker {worker.pid} was killed and replaced")
            for report in failures.cancelled(self._disown(worker, signal.SIGTERM), ids, error):
                self._finish(report.batch, [None] * len(report.batch), report.errors, lost=report.lost)

    def _skipped(self, worker: WorkerHandle, seq: int) -> None:
        """A worker skipped a cancelled batch: its inputs are cancelled, never run."""
        self._memory.unhold(worker, seq)
        if not worker.inflight or worker.inflight[0].seq != seq:
            return
        sent = worker.inflight.popleft()
        error = _errors.TaskCancelledError("cancelled before this task started (a cancelling shutdown, or its "
                                           "call was cancelled)")
        errors = {**dict.fromkeys(sent.positions, error), **sent.errors}
        self._finish(sent.batch, [None] * len(sent.batch), errors)
        self._after_batch(worker)

    def _after_batch(self, worker: WorkerHandle) -> None:
        limit = self.config.max_tasks_per_worker
        if limit is not None and worker.dispatched >= limit:
            self._retire(worker)
        elif worker.retiring and not worker.inflight:
            self._send_exit(worker)

    @staticmethod
    def _finish(batch: Batch, values: list[Any], errors: dict[int, BaseException], *,
                lost: Any = (), suspects: Any = (), busy: float = 0.0) -> None:
        """Report a batch; nothing a user callback does may take the supervisor down."""
        try:
            batch.finish(Outcome(values, errors, lost=lost, suspects=suspects, busy=busy))
        except BaseException:  # logged; the other batches must still be reported
            import logging  # here: the fork server preloads this module, and never logs

            logging.getLogger("conveyor").exception("reporting a finished batch raised")

    # -- failures ----------------------------------------------------------------------------------
    def _on_exit(self, worker: WorkerHandle) -> None:
        self._drain(worker)
        # The sentinel fires when the dying process closes its files, a moment before it can be
        # reaped; a blocking join (bounded, it is exiting) gets the real exit code.
        worker.process.join(5)
        exitcode = worker.process.exitcode
        self._workers.remove(worker)
        self._memory.forget_worker(worker)
        worker.conn.close()
        try:
            worker.process.close()
        except ValueError:
            pass
        if worker.doomed or (worker.retiring and not worker.inflight):
            return
        self._counters["workers_crashed"] += 1
        if not worker.ready and self._broken is None:
            self._startup_failures += 1
            error = failures.startup_error(worker, exitcode, self.config, self._startup_failures,
                                           self.start_method)
            if error is not None:
                self._break(error)
        self._report_crash(worker, exitcode)

    def _report_crash(self, worker: WorkerHandle, exitcode: int | None) -> None:
        """Fail the input a dead worker was running; hand everything else it held back to the core."""
        for report in failures.after_crash(worker, exitcode):
            self._finish(report.batch, [None] * len(report.batch), report.errors, lost=report.lost,
                         suspects=report.suspects)

    def _check_deadlines(self) -> None:
        now = time.monotonic()
        for worker in list(self._workers):
            if worker.kill_at is not None:
                if now >= worker.kill_at:
                    worker.signal(signal.SIGKILL)
                    worker.kill_at = None
                continue
            found = failures.overdue(worker, now)
            if found is None:
                continue
            sent, culprit, error = found
            self._counters["tasks_timed_out"] += 1
            self._doom(worker, {id(sent): (culprit, error)})

    def _doom(self, worker: WorkerHandle, culprits: dict[int, tuple[int, BaseException]]) -> None:
        """Kill a worker (SIGTERM, SIGKILL after a grace period) and report its work now."""
        inflight = self._disown(worker, signal.SIGTERM)
        for report in failures.reports_of(inflight, culprits):
            self._finish(report.batch, [None] * len(report.batch), report.errors, lost=report.lost)

    @staticmethod
    def _disown(worker: WorkerHandle, signum: int) -> list[Sent]:
        """Mark a worker as being killed, signal it (SIGKILL follows a SIGTERM after a grace period),
        and hand back what it held, to be reported now."""
        worker.doomed = True
        inflight = list(worker.inflight)
        worker.inflight.clear()
        worker.signal(signum)
        if signum == signal.SIGTERM:
            worker.kill_at = time.monotonic() + KILL_GRACE_SECONDS
        return inflight

    def _break(self, error: BaseException) -> None:
        with self._lock:
            if self._broken is None:
                self._broken = error
            pending = list(self._pending)
            self._pending.clear()
        for sent in pending:
            self._fail_now(sent.batch, dict.fromkeys(range(len(sent.batch)), self._broken))
        for worker in list(self._workers):
            if not worker.doomed:
                for sent in self._disown(worker, signal.SIGKILL):
                    self._finish(sent.batch, [None] * len(sent.batch),
                                 dict.fromkeys(range(len(sent.batch)), self._broken))

    def _stop_everything(self) -> None:
        """Killing shutdown: running inputs fail with TaskCancelledError, workers get SIGTERM then SIGKILL."""
        error = _errors.TaskCancelledError("the pool was terminated while this task ran")
        for worker in list(self._workers):
            if worker.doomed:
                continue
            for sent in self._disown(worker, signal.SIGTERM):
                self._finish(sent.batch, [None] * len(sent.batch), dict.fromkeys(range(len(sent.batch)), error))

    def _kill_all_now(self) -> None:
        """Last resort on the supervisor's way out: SIGKILL, reap and close whatever is left."""
        for worker in self._workers:
            worker.signal(signal.SIGKILL)
        for worker in self._workers:
            worker.process.join(5)
            self._memory.forget_worker(worker)
            worker.conn.close()
            try:
                worker.process.close()
            except ValueError:
                pass  # would not die even after SIGKILL within 5 s (uninterruptible sleep)
        self._workers.clear()

