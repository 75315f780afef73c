"""What the cluster engines' TaskGroup tasks share (``dask/tasks.py``, ``ray/tasks.py``).

::

    caller                                         on the cluster                      task process
    ──────                                         ──────────────                      ────────────
    ClusterTask: watcher thread (one per task)     start_task_process(call bytes) ────► run the call,
      _follow(): the engine's own way to start,      (the process backend's             send its outcome
        stop and watch the call ◄── stops ──────     ProcessTask; report kept bytes)    (bytes) and exit
      _conclude(Report) ◄──────────────────────────  (pid, exit code, bytes, stopped)
        decode here, settle ─► on_done (the group)

Both engines run a spawned call the same way: on a machine of the cluster, in a process of its own
started with the process backend's ``ProcessTask`` (same reaping, same grace before SIGKILL, and the
process dies with whoever started it). There the process's report stays the bytes it sent: the caller
decodes it, where the user's classes are importable for sure and where the result is wanted. In the
caller, a watcher thread per task relays ``terminate()``/``kill()`` to the cluster (they never block)
and settles the handle; a report becomes the task's outcome in one way for both engines. What differs
is how each engine places the call, finds its process and learns of its start and end.
"""

from __future__ import annotations

import abc
import queue
import signal
import threading
from typing import Any, Callable, ClassVar

from conveyor._backends._shared.spawned import ProcessTask, decode_outcome, start_process_task
from conveyor._core import serialize
from conveyor._core.errors import TaskCancelledError
from conveyor.abc import BackendConfig, SpawnedTask

SIGNALS = {"terminate": signal.SIGTERM, "kill": signal.SIGKILL}

Report = tuple[int | None, int | None, bytes | None, bool]
"""What the cluster side returns for a task: (pid, exit code, the process's report or None, whether a
stop took effect); pid None when a stop came before the process was started (none was)."""


class OutcomeAsBytes(ProcessTask):
    """On the cluster, the task process's report stays the bytes it sent (decoded by the caller)."""

    def _decode(self, message: bytes | None) -> tuple[Any, BaseException | None]:
        return message, None


def start_task_process(call: bytes, name: str, start_method: str | None, preload: tuple[str, ...]) -> ProcessTask:
    """On the cluster: start the process of ``call`` (``serialize.dumps((fn, args, kwargs))``)."""
    return start_process_task(BackendConfig(workers=1, start_method=start_method), call, name, None,
                              task_class=OutcomeAsBytes, preload=preload)


def run_call(blob: bytes) -> Any:
    """In the task's process, once connected to the cluster: the call ``pickle_call`` made."""
    try:
        fn, args, kwargs = serialize.loads(blob)
    except BaseException as exc:  # reported as the task's failure
        raise serialize.unpickling_error(exc, "the spawned call in its process") from exc
    del blob
    return fn(*args, **kwargs)


def stop_process(process: ProcessTask, how: str) -> None:
    """``how``: ``"terminate"`` (SIGTERM, SIGKILL after the grace period) or ``"kill"``."""
    if how == "kill":
        process.kill()
    else:
        process.terminate()


def report_of(process: ProcessTask) -> Report:
    """On the cluster, once ``process`` has ended: what goes back to the caller."""
    message, _ = process.outcome()
    return process.pid, process.exitcode, message, process.cancel_requested


def stronger(how: str, than: str | None) -> str:
    """The stronger of two stops (a kill overrides a terminate)."""
    return "kill" if "kill" in (how, than) else how


class ClusterTask(SpawnedTask):
    """A spawned call on a cluster, watched from the caller by a thread of its own.

    A subclass starts the call, then :meth:`_start_watching`; it implements :meth:`_follow` (in the
    watcher thread: relay the stops found in ``_inbox`` until the call has ended, then return
    :meth:`_conclude`) and :meth:`_release`.
    """

    engine: ClassVar[str] = "cluster"
    """The engine's name, for messages ("its Dask worker")."""

    def __init__(self, name: str, on_done: Callable[[SpawnedTask], None] | None) -> None:
        super().__init__(name, on_done)
        self._inbox: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._exitcode: int | None = None
        self._stopping: str | None = None  # the strongest stop asked for (the watcher's)
        self._final = False  # the outcome is fixed: a stop asked for now is too late
        self._watcher = threading.Thread(target=self._watch, name=f"conveyor-{self.engine.lower()}-task-{name}",
                                         daemon=True)

    def _start_watching(self) -> None:
        self._watcher.start()

    # -- the watcher thread --------------------------------------------------------------------------
    def _watch(self) -> None:
        value: Any = None
        error: BaseException | None
        try:
            value, error = self._follow()
        except BaseException as exc:  # noqa: BLE001 - the cluster went away under us: still settle
            error = exc
        finally:
            self._release()
        self._settle(value, error)

    @abc.abstractmethod
    def _follow(self) -> tuple[Any, BaseException | None]:
        """Relay stops to the cluster until the call has ended; its outcome (from :meth:`_conclude`)."""

    @abc.abstractmethod
    def _release(self) -> None:
        """Free what the task holds on the cluster and here, once it has ended; never raises."""

    def _conclude(self, report: Report | BaseException | None) -> tuple[Any, BaseException | None]:
        """The outcome of a task from what the cluster reported: its ``Report``, the error that kept it
        from reporting (its worker died...), or None if it never started. Fixes pid, exit code and
        ``cancel_requested`` under the lock: a later ``terminate()`` is too late to count."""
        with self._lock:
            self._final = True
            if isinstance(report, BaseException):
                self._exitcode = None  # unknown: the process went with its worker
                return None, (TaskCancelledError(f"task {self.name!r} was terminated (its {self.engine} worker "
                                                 "went with it)") if self.cancel_requested else report)
            pid = None if report is None else report[0]
            if report is None or pid is None:  # no process was ever started
                self._exitcode = -SIGNALS[self._stopping or "terminate"]
                self.cancel_requested = True
                return None, TaskCancelledError(f"task {self.name!r} was cancelled before it started")
            _, exitcode, message, cancelled = report
            self._pid, self._exitcode, self.cancel_requested = pid, exitcode, cancelled
        return decode_outcome(message, self.name, pid, exitcode, cancelled)

    # -- the SpawnedTask interface -------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        """The task's process on the cluster; None until it has started there."""
        return self._pid

    @property
    def exitcode(self) -> int | None:
        return self._exitcode

    def is_alive(self) -> bool:
        return self._watcher.is_alive()

    def join(self, timeout: float | None = None) -> None:
        self._watcher.join(timeout)

    def terminate(self) -> None:
        """SIGTERM to the task's process (SIGKILL after the grace period); a task not started is dropped."""
        self._ask("terminate")

    def kill(self) -> None:
        self._ask("kill")

    def _ask(self, how: str) -> None:
        # Never blocks: the watcher thread talks to the cluster.
        with self._lock:
            if self._final or (self.cancel_requested and how == "terminate"):
                return
            self.cancel_requested = True
        self._inbox.put(("stop", how))
