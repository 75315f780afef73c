"""Spawned tasks on processes (``conveyor.TaskGroup`` on the process backend): one process per call.

::

    caller thread                            reaper thread (one per task)
    ─────────────                            ──────────────────────────────────────────────────────
    spawn: pickle (fn, args, kwargs)         wait(result pipe, process sentinel, 0.1 s tick)
           (PicklingError raised here)         ◄── result pipe ◄── child: run fn; send the value or the
           Process(target=task_main).start()                              exception (+ traceback); exit
                                             sentinel ─► reap, exit code ─► settle ─► on_done (the group)
    terminate(): SIGTERM ──────────────────► tick: SIGKILL once the grace period is over

The child ignores SIGINT (Ctrl-C is the parent's to handle: its group terminates the tasks) and dies
with the process that spawned it, as pool workers do (``PR_SET_PDEATHSIG`` when the spawning thread is
the main thread, whose end is the process's; a watchdog thread in every case). The reaper always reads
the pipe, so a result of any size never blocks the child. A child that dies without reporting fails
with ``WorkerCrashedError`` (exit code, signal name), or ``TaskCancelledError`` if it was terminated.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.process
import os
import signal
import threading
import time
from multiprocessing.connection import wait as wait_for
from typing import Any, Callable

from conveyor._backends._shared import inherited
from conveyor._backends._shared.lifetime import die_with_owner, exit_now
from conveyor._core import errors as _errors
from conveyor._core import forkserver, serialize
from conveyor._core.config import default_start_method
from conveyor._core.errors import WorkerCrashedError, describe_exit
from conveyor.abc import BackendConfig, SpawnedTask

TERMINATE_GRACE_SECONDS = 1.0
"""After terminate()'s SIGTERM, a task's process gets this long before SIGKILL."""
_TICK = 0.1
_OK, _RAISED = b"v", b"e"


def pickle_call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                dumps: Callable[[Any], bytes] = serialize.dumps) -> bytes:
    """The call as bytes, or a PicklingError naming the function or argument that cannot travel."""
    try:
        return dumps((fn, args, kwargs))
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - a user's __reduce__ may raise anything
        whole = exc
    parts = [("the task function", fn), *((f"argument {i}", arg) for i, arg in enumerate(args)),
             *((f"keyword argument {key!r}", value) for key, value in kwargs.items())]
    for what, obj in parts:
        try:
            serialize.dumps(obj)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            raise serialize.pickling_error(obj, exc, what) from exc
    raise serialize.pickling_error((fn, args, kwargs), whole, "the task's call") from whole


def task_main(conn: Any, blob: bytes, owner: int, owner_is_parent: bool, forked: bool = False) -> None:
    """Entry point of a task's process: run the call, report its outcome, exit.

    A ``forked`` one first lets go of the pipes and sockets it inherited (``inherited.py``), as a pool's
    worker does.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_owner(owner, owner_is_parent)  # first: from here on this process ends with its owner
    if forked:  # before any user code: until then, another thread's subprocess may be waiting on us
        inherited.keep_only_own(conn)
    tag = _RAISED
    # Unpickling the call imports its modules, and some start threads as they load (Ray's client):
    # started with SIGTERM blocked, as this thread is meanwhile, they never take a SIGTERM meant for the
    # task, which then waits for the call to begin and ends it as it would end any process.
    blocked = hasattr(signal, "pthread_sigmask")
    if blocked:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        fn, args, kwargs = serialize.loads(blob)
    except BaseException as exc:  # noqa: BLE001 - reported like the task's own failure
        payload = serialize.dumps_exception(serialize.unpickling_error(exc, "the spawned call in its process"))
    else:
        del blob
        if blocked:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
        try:
            value = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - the task's failure is its outcome
            payload = serialize.dumps_exception(exc)
        else:
            try:
                payload, tag = serialize.dumps(value), _OK
            except BaseException as exc:  # noqa: BLE001
                payload = serialize.dumps_exception(serialize.pickling_error(value, exc, "the task's result"))
    try:
        conn.send_bytes(tag + payload)
        conn.close()
    except OSError:
        pass  # the owner is gone; nobody is waiting for this
    exit_now(0 if tag == _OK else 1)


def decode_outcome(message: bytes | None, name: str, pid: int, exitcode: int | None,
                   cancelled: bool) -> tuple[Any, BaseException | None]:
    """A task process's report (``task_main``'s message, or None if it sent none) as (value, error).

    A module function, not a method: a cluster backend receives the same message from a worker that
    ran the process for it, and decodes it in the caller the same way.
    """
    if message is None:
        _, how = describe_exit(exitcode)
        if cancelled:
            return None, _errors.TaskCancelledError(f"task {name!r} was terminated: its process {pid} {how}")
        return None, WorkerCrashedError(f"task {name!r}: its process {pid} {how} before it returned",
                                        pid=pid, exitcode=exitcode)
    payload = memoryview(message)[1:]
    if message[:1] == _OK:
        try:
            return serialize.loads(payload), None
        except BaseException as exc:  # noqa: BLE001 - a user's reducer may raise anything
            return None, serialize.unpickling_error(exc, "the task's result")
    try:
        return None, serialize.loads_exception(payload)
    except BaseException as exc:  # noqa: BLE001
        return None, serialize.unpickling_error(exc, "the task's exception")


class ProcessTask(SpawnedTask):
    """A call running in a process of its own, watched by a reaper thread."""

    def __init__(self, ctx: Any, blob: bytes, name: str, on_done: Callable[[SpawnedTask], None] | None,
                 owner_is_parent: bool, passed: frozenset[tuple[int, int]] = frozenset()) -> None:
        super().__init__(name, on_done)
        forked = ctx.get_start_method() == "fork"
        # Two-way under fork: the child first hears what it keeps of what it inherited (inherited.py).
        self._conn, child_conn = ctx.Pipe(duplex=forked)
        process = ctx.Process(target=task_main, args=(child_conn, blob, os.getpid(), owner_is_parent, forked),
                              name=name, daemon=False)  # not daemonic: a task may start processes itself
        try:
            try:
                process.start()
                if forked:
                    inherited.tell_child(self._conn, process, passed)
            finally:
                child_conn.close()
                # Reaped by this task's reaper alone: multiprocessing polls the children it knows of at
                # every start (and joins them at exit), and two threads waiting for one pid race, one
                # of them seeing a running process that is gone.
                # (``_children`` is private to multiprocessing, and absent from the stubs: no public way.)
                multiprocessing.process._children.discard(process)  # type: ignore[attr-defined]
            self._process = process
            self._pid: int = process.pid
            self._lock = threading.Lock()
            self._exitcode: int | None = None
            self._reaped = False
            self._reported = False  # its outcome has arrived: terminate() is too late to cancel it
            self._kill_at: float | None = None
            self._reaper = threading.Thread(target=self._reap, name=f"conveyor-task-reaper-{self._pid}",
                                            daemon=True)
            self._reaper.start()
        except BaseException:  # Ctrl-C while starting: a process the group never hears of must not run
            self.cancel_requested = True  # so a reaper already running settles it as cancelled, not failed
            if process.pid is not None:
                with contextlib.suppress(OSError):
                    os.kill(process.pid, signal.SIGKILL)
                if getattr(self, "_reaper", None) is None:  # else the reaper reaps it and closes the pipe
                    with contextlib.suppress(Exception):
                        process.join(5)
                    self._conn.close()
            else:
                self._conn.close()
            raise

    # -- the reaper thread -------------------------------------------------------------------------
    def _reap(self) -> None:
        conn, process = self._conn, self._process
        message: bytes | None = None
        reading = True
        while True:
            ready = wait_for([process.sentinel, conn] if reading else [process.sentinel], _TICK)
            if reading and conn in ready:
                message, reading = self._receive(), False
            if process.sentinel in ready:
                break
            with self._lock:
                if self._kill_at is not None and time.monotonic() >= self._kill_at:
                    self._kill_at = None
                    self._signal(signal.SIGKILL)
        if reading and conn.poll():
            message = self._receive()
        exitcode = None
        try:
            # The sentinel fires as the process closes its files, a moment before it can be reaped.
            process.join(5)
            if process.exitcode is None:  # would not die (uninterruptible sleep): make sure, then wait
                self._signal(signal.SIGKILL)
                process.join()
            exitcode = process.exitcode
        finally:  # whatever happened, the task settles: its group waits for that
            with self._lock:
                self._exitcode = exitcode
                self._reaped = True
            conn.close()
            with contextlib.suppress(ValueError):
                process.close()
            value, error = self._decode(message)
            self._settle(value, error)

    def _receive(self) -> bytes | None:
        try:
            message = self._conn.recv_bytes()
        except (EOFError, OSError):
            return None  # died before or while reporting
        with self._lock:
            self._reported = True
        return message

    def _decode(self, message: bytes | None) -> tuple[Any, BaseException | None]:
        return decode_outcome(message, self.name, self._pid, self._exitcode, self.cancel_requested)

    def _signal(self, signum: int) -> None:
        """Signal the process unless it has been reaped (its pid may then be someone else's)."""
        if not self._reaped:
            try:
                os.kill(self._pid, signum)
            except (ProcessLookupError, PermissionError):
                pass

    # -- the SpawnedTask interface -----------------------------------------------------------------
    @property
    def pid(self) -> int:
        return self._pid

    @property
    def exitcode(self) -> int | None:
        return self._exitcode

    def is_alive(self) -> bool:
        return not self._reaped

    def join(self, timeout: float | None = None) -> None:
        self._reaper.join(timeout)

    def terminate(self) -> None:
        """SIGTERM now; the reaper sends SIGKILL if the process still runs after the grace period."""
        with self._lock:
            if self._reaped or self._reported or self.cancel_requested:
                return
            self.cancel_requested = True
            self._kill_at = time.monotonic() + TERMINATE_GRACE_SECONDS
            self._signal(signal.SIGTERM)

    def kill(self) -> None:
        with self._lock:
            if self._reaped:
                return
            self.cancel_requested = self.cancel_requested or not self._reported
            self._kill_at = None
            self._signal(signal.SIGKILL)


def start_process_task(config: BackendConfig, blob: bytes, name: str, on_done: Callable[[SpawnedTask], None] | None,
                       *, task_class: type[ProcessTask] = ProcessTask,
                       preload: tuple[str, ...] = (),
                       passed: frozenset[tuple[int, int]] = frozenset()) -> ProcessTask:
    """Start the process of a call already pickled by ``pickle_call``, with the configured start method.

    Separate from ``spawn_process`` for a cluster worker that received the call as bytes and runs it in
    a process of its own (``task_class`` then keeps the outcome as bytes for the caller; ``preload``
    adds the modules its processes need to the fork server's). ``passed``: the open files of the
    connections in the call, which a fork child keeps (``inherited.PassedFiles``).
    """
    method = config.start_method or default_start_method()
    ctx = multiprocessing.get_context(method)  # ValueError for a method this platform lacks
    if method == "forkserver":
        ctx.set_forkserver_preload(forkserver.preload(preload))
    # The kernel's parent-death signal fires when the *thread* that forked ends: use it only from the
    # main thread (whose end is the process's); the watchdog covers every other case.
    owner_is_parent = method != "forkserver" and threading.current_thread() is threading.main_thread()
    return task_class(ctx, blob, name, on_done, owner_is_parent, passed)


def spawn_process(config: BackendConfig, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                  name: str, on_done: Callable[[SpawnedTask], None] | None) -> ProcessTask:
    """``ProcessBackend.spawn``: pickle the call here, start its process with the configured method."""
    passed = inherited.PassedFiles()
    forked = (config.start_method or default_start_method()) == "fork"
    blob = pickle_call(fn, args, kwargs, passed.dumps if forked else serialize.dumps)
    return start_process_task(config, blob, name, on_done, passed=frozenset(passed.files))
