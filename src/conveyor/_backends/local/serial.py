"""The serial backend: runs every batch in the caller's thread, at once.

It defines the reference semantics: every other backend must give the same results and errors for the
same calls. A KeyboardInterrupt raised while a task runs is re-raised (it is the user's Ctrl-C);
every other exception, SystemExit included, fails only its task, as on the other backends.
"""

from __future__ import annotations

import threading
from typing import Any

from conveyor._backends._shared.inline import BatchRun, run_finalizer
from conveyor._backends.local.primitives import InProcess
from conveyor._backends.local.tasks import InlineTask
from conveyor._core.errors import InitializerError, PoolClosedError, TaskCancelledError
from conveyor.abc import Backend, BackendConfig, Batch, Capabilities, Outcome, SpawnedTask


class SerialBackend(InProcess, Backend):
    name = "serial"
    capabilities = Capabilities(in_background=False)

    @classmethod
    def spawn(cls, config: BackendConfig, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any], name: str,
              on_done: Any = None) -> SpawnedTask:
        return InlineTask(fn, args, kwargs, name, on_done)

    def __init__(self, config: BackendConfig) -> None:
        super().__init__(BackendConfig(workers=1, initializer=config.initializer, initargs=config.initargs,
                                       finalizer=config.finalizer, finalargs=config.finalargs,
                                       options=config.options))
        self._closed = False
        self._broken: BaseException | None = None
        self._lock = threading.RLock()
        if config.initializer is not None:
            try:
                config.initializer(*config.initargs)
            except BaseException as exc:  # noqa: BLE001 - reported to every later submit
                if isinstance(exc, KeyboardInterrupt):
                    raise
                self._broken = InitializerError(f"the initializer raised {exc!r}")
                self._broken.__cause__ = exc

    def submit(self, batch: Batch) -> None:
        if self._broken is not None:
            raise self._broken
        if self._closed:
            raise PoolClosedError("cannot submit to a pool that is shut down")
        if not batch.claim():
            return
        run = BatchRun(batch)
        try:
            run.run(propagate=(KeyboardInterrupt,))
        except KeyboardInterrupt:
            # The user's Ctrl-C: account for the batch (the rest is cancelled), then let it stop them.
            done = len(run.values)
            stopped = TaskCancelledError("interrupted by KeyboardInterrupt")
            errors = {**run.errors, **dict.fromkeys(range(done, len(batch)), stopped)}
            batch.finish(Outcome(run.values + [None] * (len(batch) - done), errors, busy=run.busy))
            raise
        batch.finish(Outcome(run.values, run.errors, busy=run.busy))

    def shutdown(self, *, wait: bool = True, cancel_pending: bool = False, kill: bool = False) -> None:
        """The one worker (the caller) ends: the first shutdown runs the finalizer, unless the
        initializer failed."""
        with self._lock:
            first, self._closed = not self._closed, True
        if first and self._broken is None:
            run_finalizer(self.config.finalizer, self.config.finalargs, propagate=(KeyboardInterrupt,))

    def broken(self) -> BaseException | None:
        return self._broken
