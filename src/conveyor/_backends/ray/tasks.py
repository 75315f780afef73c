"""TaskGroup tasks on Ray: one actor each (no CPU), running the call in a process of its own.

::

    caller                                          the task's actor (a Ray worker)        task process
    ──────                                          ───────────────────────────────        ────────────
    spawn: pickle the call (PicklingError here)
           open the Ray session, create the actor ─► (Ray starts a worker for it)
    watcher thread: ray.wait(ready) ◄────────────── ready()
      no stop yet: start.remote(blob) ───────────► start(): the process ───────────────────► ray.init(GCS),
      pid ◄──────────────────────────────────────── its pid                                  run the call,
      terminate(): stop.remote("terminate") ─────► stop(): SIGTERM ─────────────────────────► send the outcome
      ray.wait(finished) ◄───────────────────────── wait(): (pid, exit code, outcome bytes)   (bytes), exit
      decode, settle ─► on_done; ray.kill(actor); close the session

Why an actor of its own per task, and a process of its own under it:

- Ray cannot stop a running call without killing the worker process running it (``ray.cancel``
  with ``force``), and a pooled worker runs other tasks' work over its life. The call runs instead in
  a process started by the task's actor with the process backend's ``ProcessTask`` (as on Dask:
  ``_shared/cluster_tasks.py``): ``terminate()`` is SIGTERM, then SIGKILL after the process backend's grace
  period, ``kill()`` SIGKILL, with real exit codes (``-15``, ``-9``); the actor and every other
  task run on.
- The actor handle is the route to that process: Ray delivers ``stop`` to the very worker that
  started it, on whichever node Ray placed it. The actor is threaded (``wait`` blocks while ``stop``
  runs) and reserves no CPU (``num_cpus=0``, as the primitives' hub): the tasks of a group all run at
  once however many CPUs the cluster has (a consumer can wait for its producer), and their CPU use is
  their own, as with processes.
- Lifetimes are Ray's own: an actor that is not detached dies with the process that created it
  (Ray's fate sharing with the owner), so a task dies with the program that spawned it; its process
  dies with the actor (``ProcessTask``'s watchdog of its owner, within about half a second); an actor
  that dies (its worker killed, its node lost) fails the task with ``WorkerCrashedError``. The actor
  is created with ``max_restarts=0``: a task runs once, as a process does.
- The call is sent only once the actor is up, by the watcher thread: a stop that comes before kills
  the actor, and the call never runs. A stop sent after the call normally reaches the actor after
  it; a threaded actor does not promise that order, so a ``stop`` that comes first leaves a note that
  ``start`` obeys (the call is dropped).
- The task process connects to the cluster (``ray.init`` with the address of the actor's GCS) before
  the call, so that conveyor's Ray primitives passed to it, and Ray calls in it, work as in a Ray
  task. It inherits the Ray worker's environment, hence its authentication (``RAY_AUTH_MODE``, as
  set for the cluster). ``ray.init`` makes SIGTERM raise ``SystemExit``; that handler is undone, so a
  terminated task ends with the signal's exit code, as on processes. A forked process would inherit
  its worker's Ray state and cannot connect again: the ``fork`` start method is refused.

Options: ``address`` and ``ray_init`` as for a pool; ``ray_options`` for the actors (``resources``,
``scheduling_strategy``, ``runtime_env``, ``num_cpus``...). The caller holds the process's Ray
connection for each running task (``Session`` in ``ray.py``): a group outside a context starts a local
Ray if there is none, stopped with its last user.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from typing import Any, Callable

import ray
import ray.exceptions

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
from conveyor._backends.ray.session import Session, configured_address
from conveyor._core import serialize
from conveyor._core.config import usable_cores
from conveyor._core.errors import WorkerCrashedError
from conveyor.abc import BackendConfig, SpawnedTask

_TICK = 0.1

_ACTOR_DEFAULTS: dict[str, Any] = {"num_cpus": 0}
"""Each task's actor reserves no CPU, unless the group's ``ray_options`` say otherwise (they may also
ask for ``resources``, a ``scheduling_strategy``, a ``runtime_env``...)."""

_ACTOR_FIXED: dict[str, Any] = {"max_restarts": 0, "max_task_retries": 0, "max_concurrency": 4}
"""What the design needs whatever the options: a task runs once, and ``stop`` runs while ``wait`` waits."""


# -- in the task's actor -------------------------------------------------------------------------------
class TaskRunner:
    """One spawned call's actor: starts the call's process, stops it, reports how it ended."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: ProcessTask | None = None
        self._stop: str | None = None  # a stop that came before the process was started
        self._error: BaseException | None = None  # the process could not be started
        self._decided = threading.Event()  # start() has run: there is a process, or there will be none

    def ready(self) -> str:
        """The actor is up; where it runs (its node's id)."""
        return str(ray.get_runtime_context().get_node_id())

    def start(self, blob: bytes, name: str, start_method: str | None) -> int | None:
        """Start the call's process, unless a stop came first; its pid, or None."""
        try:
            with self._lock:
                if self._stop is not None:
                    return None
                call = serialize.dumps((call_on_ray, (ray.get_runtime_context().gcs_address, blob), {}))
                self._process = start_task_process(call, name, start_method, (__name__,))
                return self._process.pid
        except BaseException as exc:
            self._error = exc
            raise
        finally:
            self._decided.set()

    def stop(self, how: str) -> None:
        with self._lock:
            if self._process is None:
                self._stop = stronger(how, self._stop)
            else:
                stop_process(self._process, how)

    def wait(self) -> Report | None:
        """Once the process has ended: what the caller needs; None if none was started (a stop came
        first). Raises what kept the process from starting."""
        self._decided.wait()
        if self._error is not None:
            raise self._error
        if self._process is None:
            return None
        self._process.join()
        return report_of(self._process)


# Untyped on purpose: Ray types a handle's methods as the plain functions (no ``.remote``) unless
# each is decorated with ``ray.method``.
_Runner: Any = ray.remote(TaskRunner)


def call_on_ray(address: str, blob: bytes) -> Any:
    """In the task's process: connect to the cluster, as a Ray task is, then run the call."""
    # ray.init makes SIGTERM raise SystemExit (and its core dumps a stack first): a terminated task
    # must end with -15, as a process does. A SIGTERM that comes meanwhile waits for the handler's return.
    handler = signal.getsignal(signal.SIGTERM)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        ray.init(address=address, logging_level=logging.ERROR)
    finally:
        signal.signal(signal.SIGTERM, handler)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    try:
        return run_call(blob)
    finally:
        ray.shutdown()


# -- in the caller -------------------------------------------------------------------------------------
class RayTask(ClusterTask):
    """A spawned call on an actor of its own, watched from here by a thread of its own."""

    engine = "Ray"

    def __init__(self, config: BackendConfig, blob: bytes, name: str,
                 on_done: Callable[[SpawnedTask], None] | None) -> None:
        super().__init__(name, on_done)
        self._blob: bytes | None = blob
        self._start_method = config.start_method
        self._node: str | None = None
        options = {**_ACTOR_DEFAULTS, **(config.options.get("ray_options") or {}), **_ACTOR_FIXED}
        self._session = Session(configured_address(config.options), usable_cores(), config.options.get("ray_init"))
        try:
            self._actor: Any = _Runner.options(**options).remote()
            self._ready: Any = self._actor.ready.remote()
        except BaseException:
            self._session.close()
            raise
        self._start_watching()

    # -- the watcher thread --------------------------------------------------------------------------
    def _stops(self) -> str | None:
        """The stop asked for since the last look, if any (the strongest; kept in ``_stopping``)."""
        asked = None
        while not self._inbox.empty():
            _, how = self._inbox.get()
            asked = self._stopping = stronger(how, self._stopping)
        return asked

    def _follow(self) -> tuple[Any, BaseException | None]:
        actor, ready = self._actor, self._ready
        while not ray.wait([ready], timeout=_TICK)[0]:  # the actor is being placed and started
            if self._stops():
                return self._conclude(None)  # the call was never sent: it never runs
        try:
            self._node = ray.get(ready)
        except BaseException as exc:  # noqa: BLE001 - the actor could not be created
            return self._conclude(self._failed(exc))
        if self._stops():
            return self._conclude(None)
        started = actor.start.remote(self._blob, self.name, self._start_method)
        finished = actor.wait.remote()
        self._blob = None
        while True:
            how = self._stops()
            if how is not None:
                actor.stop.remote(how)
            done = ray.wait([finished], timeout=_TICK)[0]
            if started is not None and ray.wait([started], timeout=0)[0]:
                with contextlib.suppress(BaseException):  # a start that failed: wait() says why
                    pid = ray.get(started)
                    with self._lock:
                        self._pid = self._pid or pid
                started = None
            if done:
                break
        try:
            report = ray.get(finished)
        except BaseException as exc:  # noqa: BLE001 - the actor died, or could not start the process
            report = self._failed(exc)
        return self._conclude(report)

    def _failed(self, exc: BaseException) -> BaseException:
        """Why the actor did not report: its own error (the process could not be started), or its death."""
        if isinstance(exc, ray.exceptions.RayTaskError) and isinstance(exc.cause, BaseException):
            return exc.cause
        where = f" on node {self._node}" if self._node else ""
        text = str(exc).strip()
        error = WorkerCrashedError(f"task {self.name!r}: the Ray worker running it{where} died "
                                   f"({type(exc).__name__}: {text.splitlines()[0] if text else 'no details'})",
                                   pid=self._pid)
        error.__cause__ = exc
        return error

    def _release(self) -> None:
        actor, self._actor, self._ready = self._actor, None, None
        with contextlib.suppress(Exception):
            ray.kill(actor)  # its process has ended (or never started): free its worker now
        del actor
        with contextlib.suppress(Exception):
            self._session.close()


def spawn_on_ray(config: BackendConfig, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                 name: str, on_done: Callable[[SpawnedTask], None] | None) -> RayTask:
    """``RayBackend.spawn``: pickle the call here, then start its actor on the process's Ray."""
    if config.start_method == "fork":
        raise ValueError("a TaskGroup on ray cannot use the 'fork' start method: a forked Ray worker "
                         "cannot connect to Ray again; use 'forkserver' (the default) or 'spawn'")
    return RayTask(config, pickle_call(fn, args, kwargs), name, on_done)
