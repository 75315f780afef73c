"""Starting a worker process: the start method's context, the hooks pickled once, the fork rules.

Why a module of its own: everything about *how* a worker comes to exist (which start method, what
the fork server preloads, which inherited files a fork child keeps, the initializer and finalizer
pickled once for every worker) is decided when the pool is made and never changes after; the
supervisor (``backend.py``) only decides *when* to start one.
"""

from __future__ import annotations

import multiprocessing
import os
from typing import Any, Callable

from conveyor._backends._shared import inherited
from conveyor._backends.process import protocol as p
from conveyor._backends.process.handle import WorkerHandle
from conveyor._backends.process.worker import worker_main
from conveyor._core import forkserver, serialize
from conveyor._core.config import check_start_method
from conveyor.abc import BackendConfig


def import_primitives_before_fork() -> None:
    """Import the process primitives' modules now, before this process forks a worker.

    A child forked while another thread holds an import lock inherits it held, and would hang the first
    time it unpickles a primitive (importing its module). Only fork children inherit locks: under
    forkserver and spawn the primitives are imported when first used, and a short program that uses
    none never pays for them (nor does the fork server, which preloads the worker).
    """
    import conveyor._backends.process.primitives  # noqa: F401


def pickle_hook(fn: Any, args: tuple[Any, ...], what: str,
                dumps: Callable[[Any], bytes] = serialize.dumps) -> bytes | None:
    """The initializer or finalizer with its arguments, pickled once for every worker (None: no hook).

    Raises:
        PicklingError: here, in the caller, naming what could not be pickled.
    """
    if fn is None:
        return None
    try:
        return dumps((fn, tuple(args)))
    except BaseException as exc:  # noqa: BLE001
        raise serialize.pickling_error(fn, exc, what) from exc


class WorkerLauncher:
    """Starts worker processes for one pool, all alike.

    Made in the caller's thread when the pool is made, so that a hook that cannot be pickled or a
    start method that does not exist raises there.
    """

    def __init__(self, config: BackendConfig, start_method: str, shared_memory: bool) -> None:
        check_start_method(start_method)
        self.config = config
        self.start_method = start_method
        self.shared_memory = shared_memory
        self.ctx = multiprocessing.get_context(start_method)
        if start_method == "forkserver":
            self.ctx.set_forkserver_preload(forkserver.preload())
        elif start_method == "fork":
            import_primitives_before_fork()
        # Connections in the hooks travel as descriptor numbers: a fork worker keeps those (inherited.py).
        passed = inherited.PassedFiles()
        dumps = passed.dumps if start_method == "fork" else serialize.dumps
        self.initializer_blob = pickle_hook(config.initializer, config.initargs,
                                            "the initializer or its initargs", dumps)
        self.finalizer_blob = pickle_hook(config.finalizer, config.finalargs,
                                          "the finalizer or its finalargs", dumps)
        self.passed_files = frozenset(passed.files)

    def start(self, lasting: bool) -> WorkerHandle:
        """Start one worker and return its handle.

        ``lasting``: the calling thread lives as long as the pool (the supervisor) or the program (the
        main thread). A parent-death signal fires when the forking *thread* ends, so only then is it
        asked for; a worker forked by another thread (``Pool()`` made in a short-lived thread) watches
        its owner's pid instead.
        """
        parent_conn, child_conn = self.ctx.Pipe(duplex=True)
        slot = self.ctx.RawArray("d", p.SLOT_SIZE)
        slot[p.SLOT_POSITION] = p.PHASE_IDLE
        forked = self.start_method == "fork"
        # get_context(a str) is typed BaseContext, which has no Process; every context it returns has.
        process = self.ctx.Process(  # type: ignore[attr-defined]
            target=worker_main,
            args=(child_conn, slot, os.getpid(), self.start_method != "forkserver" and lasting,
                  self.initializer_blob,
                  self.config.max_memory_per_worker, self.finalizer_blob, self.shared_memory, forked),
            name="conveyor-worker",
            daemon=False,
        )
        process.start()
        if forked:
            inherited.tell_child(parent_conn, process, self.passed_files)  # what it keeps of what it inherited
        child_conn.close()
        return WorkerHandle(process, parent_conn, slot)
