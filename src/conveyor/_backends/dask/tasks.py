"""TaskGroup tasks on a Dask cluster: one Dask task each, running the call in a process of its own.

::

    caller                                          Dask worker                      task process
    ──────                                          ───────────                      ────────────
    spawn: pickle the call (PicklingError here)
           client.submit(run_spawned) ────────────► run_spawned: secede()
                                                      start the process ────────────► connect a client,
           watcher thread ◄── event "started" ◄────── log_event(pid, worker)          run the call,
             (pid, worker)                            wait for it (the process        send the outcome
           terminate(): client.run(stop_spawned) ───► stop_spawned: SIGTERM ─────────► (bytes) and exit
           watcher thread ◄── event "finished" ◄───── log_event; return (pid, exit code, outcome bytes)
             fetch the result, decode, settle ─► on_done (the group)

Why a process of its own, on a worker, rather than the call in the Dask task itself:

- Dask cannot interrupt a running task. Stopping a call that runs in the worker would mean restarting
  the whole worker, which takes down every other task it runs (another spawned task, a pool's
  batch). A process of its own can be signalled alone: ``terminate()`` is SIGTERM, then SIGKILL after
  the process backend's grace period, and the exit codes (``-15``, ``-9``) are real ones. This is the
  process backend's own ``ProcessTask``, started on the worker: same reaping, same grace, and the
  process dies with its worker (the watchdog of pool workers).
- The tasks of a group must all run at once (a consumer waits for its producer), however many
  workers there are. The Dask task only watches its process, so it leaves the worker's thread pool
  (``secede``): it does not hold a worker slot, and the scheduler is told it is long-running. As with
  processes, a task's CPU use is the task's own business, not a pool's.
- Dask worker processes are daemonic, and ``multiprocessing`` forbids daemonic processes to have
  children, because it would end them without cleanup and orphan theirs. Ours die with their worker
  by themselves, so the flag is lifted (through ``Process.daemon``) for the moment a process starts.
- The task process connects a Dask client of its own (the default one), so that conveyor's Dask
  primitives passed to the call, and any Dask call in it, work as they do in a Dask task.
- A task dies with the program that spawned it: once no client wants the Dask task (the caller's
  client closed, or the caller died), the scheduler takes it off its worker's ``processing`` list,
  and the worker, which looks every ``_OWNER_POLL`` seconds, kills the process (Dask itself would let
  a running task run on).

The caller learns of a task's start and end through a Dask event topic (pushed by the scheduler to a
subscribed client), not Dask's done callbacks: those run on a process-wide executor thread that
outlives every client and refuses work once the interpreter exits. A worker's death shows in the
future's state, which the watcher looks at every ``_TICK``.

Stopping a task whose start has not been reported yet: the request goes to every worker; a worker
that runs (or is starting) it stops it, the others note it, so that the task finds the note and
returns without starting anything if it starts later. If no worker runs it, the Dask task is cancelled
and the handle settles at once as cancelled, with the exit code of the signal asked for (and no pid).
Notes are kept per worker for the last ``_HISTORY`` tasks only.

If a worker dies under a task, the task fails with ``WorkerCrashedError`` (the process died with it;
its exit code is unknown: None). A cluster that retries tasks lost with their workers (Dask's
``allowed-failures``; conveyor's own local clusters do not) would start the call again elsewhere: the
new run is killed, since a task of a group runs once, as a process does.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import queue
import threading
import uuid
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any, Callable

import distributed

from conveyor._backends._shared.cluster_tasks import (
    ClusterTask,
    Report,
    report_of,
    run_call,
    start_task_process,
    stop_process,
    stronger,
)
from conveyor._backends._shared.spawned import ProcessTask, pickle_call
from conveyor._core import serialize
from conveyor._core.errors import TaskCancelledError, WorkerCrashedError, unsupported
from conveyor.abc import BackendConfig, SpawnedTask

TOPIC = "conveyor-spawned-task"
"""The Dask event topic on which tasks report their start and end (one topic: the scheduler keeps a
bounded log per topic, so a topic per task would grow without end on a long-lived cluster)."""

_HISTORY = 10_000
_TICK = 0.1
_OWNER_POLL = 1.0
_FINISHED = "finished"

# -- in the Dask worker --------------------------------------------------------------------------------
_lock = threading.Lock()
_running: dict[str, ProcessTask | None] = {}  # token -> its process (None while it starts)
_history: OrderedDict[str, str] = OrderedDict()  # token -> a stop asked for before it ran here, or finished
_start_lock = threading.Lock()


def _note(token: str, what: str) -> None:
    """Remember ``what`` for ``token`` (a kill overrides a terminate); call with ``_lock`` held."""
    if _history.get(token) != "kill":
        _history[token] = what
    _history.move_to_end(token)
    while len(_history) > _HISTORY:
        _history.popitem(last=False)


@contextlib.contextmanager
def _children_allowed() -> Any:
    """Let this (daemonic) Dask worker start a process: see the module docstring."""
    me = multiprocessing.current_process()
    with _start_lock:
        daemon = me.daemon
        if daemon:
            me.daemon = False
        try:
            yield
        finally:
            if daemon:
                me.daemon = True


def run_spawned(blob: bytes, name: str, token: str, start_method: str | None) -> Report:
    """The Dask task of one spawned call: run it in a process of its own and wait for that process.

    Returns:
        (pid, exit code, the process's report or None, whether a stop took effect); pid None when
        a stop was asked for before the task started (no process was started).
    """
    worker = distributed.get_worker()
    key = worker.get_current_task()
    distributed.secede()  # watching a process is not work: free the worker's slot
    with _lock:
        if _history.pop(token, None) is not None:
            return None, None, None, True
        _running[token] = None
    process: ProcessTask | None = None
    how: str | None = None
    try:
        call = serialize.dumps((call_on_cluster, (worker.scheduler.address, blob), {}))
        with _children_allowed():
            process = start_task_process(call, name, start_method, (__name__,))
    finally:
        with _lock:
            if process is None:
                del _running[token]
            else:
                _running[token] = process
                how = _history.pop(token, None)
    try:
        if how is not None:
            stop_process(process, how)
        worker.log_event(TOPIC, {"token": token, "pid": process.pid, "worker": worker.address})
        _wait_while_wanted(process, key, worker.address)
    except BaseException:
        process.kill()  # nobody could stop it
        raise
    finally:
        process.join()
        with _lock:
            del _running[token]
            _note(token, _FINISHED)
        worker.log_event(TOPIC, {"token": token, "finished": True})
    return report_of(process)


def _wait_while_wanted(process: ProcessTask, key: Hashable, address: str) -> None:
    """Wait for the process; kill it if the caller goes away meanwhile (a task dies with its owner).

    The scheduler drops a running task from its worker's ``processing`` list once no client wants it:
    the caller closed its client without waiting, or died. Dask lets such a task run on, but its
    process must not outlive the program that spawned it.
    """
    client = distributed.get_client()
    while True:
        process.join(_OWNER_POLL)
        if not process.is_alive():
            return
        try:
            wanted = key in client.processing(workers=[address]).get(address, ())
        except Exception:  # noqa: BLE001 - the scheduler is away; if it is gone, the worker goes too
            continue
        if not wanted:
            process.kill()


def stop_spawned(token: str, how: str) -> str:
    """Run on a worker (``client.run``): stop that task's process if it runs here, else note the request.

    Returns ``"running"`` (stopped, or stopped as soon as its process has started), ``"finished"``, or
    ``"noted"`` (not here yet: should it start here, it returns at once).
    """
    with _lock:
        if token in _running:
            process = _running[token]
            if process is None:
                _note(token, how)  # starting: run_spawned applies it once the process exists
            else:
                stop_process(process, how)
            return "running"
        if _history.get(token) == _FINISHED:
            return "finished"
        _note(token, how)
        return "noted"


def call_on_cluster(address: str, blob: bytes) -> Any:
    """In the task's process: run the call with a default Dask client, as in a Dask task."""
    client = distributed.Client(address, set_as_default=True)
    try:
        return run_call(blob)
    finally:
        client.close()


# -- in the caller -------------------------------------------------------------------------------------
class _Connection:
    """One client per scheduler, shared by this process's running tasks; one subscription to ``TOPIC``."""

    def __init__(self, address: str) -> None:
        self.client = distributed.Client(address, set_as_default=False)
        self.inboxes: dict[str, queue.SimpleQueue[tuple[Any, ...]]] = {}
        self.client.subscribe_topic(TOPIC, self._started)

    def _started(self, event: tuple[float, dict[str, Any]]) -> None:
        # In the client's event loop: a plain dict lookup, no lock (spawn may hold one while it waits
        # for this loop). Other processes' tasks report on the same topic: not ours, ignored.
        message = event[1]
        token = message.get("token")
        inbox = self.inboxes.get(token) if isinstance(token, str) else None
        if inbox is not None:
            if message.get("finished"):
                inbox.put(("finished",))
            else:
                inbox.put(("started", message["worker"], message["pid"]))


_connections: dict[str, _Connection] = {}
_connections_lock = threading.Lock()


def _connect(address: str, token: str, inbox: queue.SimpleQueue[tuple[Any, ...]]) -> distributed.Client:
    with _connections_lock:
        connection = _connections.get(address)
        if connection is None:
            connection = _connections[address] = _Connection(address)
        connection.inboxes[token] = inbox
        return connection.client


def _disconnect(address: str, token: str) -> None:
    """The task no longer needs the client; the last one closes it (no client outlives its tasks)."""
    with _connections_lock:
        connection = _connections[address]
        del connection.inboxes[token]
        if connection.inboxes:
            return
        del _connections[address]
    connection.client.close()


class DaskTask(ClusterTask):
    """A spawned call as one Dask task, watched from here by a thread of its own."""

    engine = "Dask"

    def __init__(self, address: str, blob: bytes, name: str, on_done: Callable[[SpawnedTask], None] | None,
                 start_method: str | None) -> None:
        super().__init__(name, on_done)
        self._address = address
        self._token = uuid.uuid4().hex
        self._worker: str | None = None
        client = _connect(address, self._token, self._inbox)
        try:
            self._future = client.submit(run_spawned, blob, name, self._token, start_method, pure=False,
                                         key=f"conveyor-task-{name}-{self._token}")
        except BaseException:
            _disconnect(address, self._token)
            raise
        self._client = client
        self._start_watching()

    # -- the watcher thread --------------------------------------------------------------------------
    def _release(self) -> None:
        with contextlib.suppress(Exception):
            self._future.release()
        with contextlib.suppress(Exception):
            _disconnect(self._address, self._token)

    def _follow(self) -> tuple[Any, BaseException | None]:
        """Relay stops to the cluster until the task ends; then its outcome."""
        rerun = never_started = False
        while True:
            try:
                event = self._inbox.get(timeout=_TICK)
            except queue.Empty:
                if self._future.done():  # its worker died, or someone cancelled it
                    break
                continue
            if event[0] == "finished":
                with contextlib.suppress(BaseException):  # its result is on its way: wait for it
                    self._future.result()
                break
            if event[0] == "started":
                _, worker, pid = event
                if self._worker is None or self._worker == worker:
                    with self._lock:
                        self._worker, self._pid = worker, pid
                    if self._stopping is not None:
                        self._send(self._stopping, [worker])
                else:  # Dask ran it again after its first worker died: a task runs once
                    rerun = True
                    self._send("kill", [worker])
            elif event[0] == "stop":
                self._stopping = stronger(event[1], self._stopping)
                if self._worker is not None:
                    self._send(self._stopping, [self._worker])
                elif self._nowhere(self._stopping):
                    self._future.cancel()
                    never_started = True
                    break
        report = None if never_started else self._report()
        outcome = self._conclude(report)
        if rerun and isinstance(report, tuple) and report[0] is not None:
            return None, WorkerCrashedError(f"task {self.name!r}: the Dask worker running it died (Dask started "
                                            "it again elsewhere; that run was stopped)", pid=report[0])
        return outcome

    def _report(self) -> Report | BaseException:
        """What the Dask task returned, or why it returned nothing."""
        future = self._future
        if future.status == "finished":
            try:
                return future.result()
            except BaseException as exc:  # noqa: BLE001 - the result could not be fetched
                return exc
        where = f"the Dask worker {self._worker}" if self._worker else "its Dask worker"
        if future.status == "cancelled":
            return TaskCancelledError(f"task {self.name!r}: its Dask task was cancelled from outside")
        if future.status == "lost":
            return WorkerCrashedError(f"task {self.name!r}: its outcome was lost with {where}", pid=self._pid)
        error = future.exception()
        if isinstance(error, distributed.scheduler.KilledWorker) or self._pid is not None:
            return WorkerCrashedError(f"task {self.name!r}: {where} died under it ({error})", pid=self._pid)
        return error  # the worker could not start the process (a start method it lacks, ...)

    def _send(self, how: str, workers: list[str] | None) -> dict[str, Any]:
        """Ask ``workers`` (None: all) to stop the task; what each said, or {} if they could not be asked
        (a worker gone takes the task's process with it: the task's result says so)."""
        try:
            return self._client.run(stop_spawned, self._token, how, workers=workers, on_error="ignore")
        except Exception:  # noqa: BLE001 - the scheduler or the worker went away
            return {}

    def _nowhere(self, how: str) -> bool:
        """Whether no worker runs the task, none will, and none ran it (asking every worker)."""
        answers = self._send(how, None)
        running = [worker for worker, answer in answers.items() if answer == "running"]
        if running:
            with self._lock:
                self._worker = self._worker or running[0]
        return bool(answers) and all(answer == "noted" for answer in answers.values())


def spawn_on_dask(address: str | None, config: BackendConfig, fn: Callable[..., Any], args: tuple[Any, ...],
                  kwargs: dict[str, Any], name: str, on_done: Callable[[SpawnedTask], None] | None) -> DaskTask:
    """``DaskBackend.spawn``: pickle the call here, submit its Dask task to the scheduler at ``address``."""
    if address is None:
        raise unsupported("a TaskGroup without a cluster", "dask",
                          "make it with a context (conveyor.context('dask').TaskGroup()) or give its address "
                          "(conveyor.TaskGroup('dask', address=...))")
    return DaskTask(address, pickle_call(fn, args, kwargs), name, on_done, config.start_method)
