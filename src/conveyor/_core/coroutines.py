"""Coroutine functions as tasks: many calls at once on an event loop inside each worker.

A pool given a coroutine function (``async def fetch(url)``) wraps it in :class:`Coroutines`, which
travels to the workers like any task function. A worker that finds one runs its whole batch on an
event loop of its own, up to ``concurrency`` calls at a time, instead of one call after another; so
two process workers with ``concurrency=100`` have 200 downloads in flight. Each call's failure is its
own, as for plain functions, and ``task_timeout`` is kept inside the loop: a call that overruns is
cancelled (the coroutine sees ``CancelledError``) and fails with ``TaskTimeoutError``, with no process
killed. (A coroutine that blocks its loop, with ``time.sleep`` say, holds up every call of its
batch, and its timeout cannot fire until it yields.)

Every backend's batch loop asks :func:`is_coroutines` first and hands such a batch to
:meth:`Coroutines.run_batch`; any other path that calls the function once (``fn(x)``) still works:
the call runs to its end on the worker's loop.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any, Callable

from conveyor._core.errors import TaskTimeoutError, short_repr

if TYPE_CHECKING:
    import asyncio
    from typing import TypeGuard  # Python 3.10+; annotations only

# asyncio and inspect are imported where used: every worker imports this module (the fork server
# preloads it), and only workers given a coroutine function need them.

DEFAULT_CONCURRENCY = 100
"""Calls of a coroutine function in flight at once in each worker, unless the pool says."""


def is_coroutine_function(fn: Any) -> bool:
    """Whether calling ``fn`` makes a coroutine: an ``async def`` function, a partial of one, or an
    object whose ``__call__`` is one."""
    code = getattr(fn, "__code__", None)
    if code is not None:  # a plain function, the common case: no need to import inspect
        return bool(code.co_flags & 0x80)  # inspect.CO_COROUTINE
    import inspect

    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))


def is_coroutines(fn: Any) -> TypeGuard[Coroutines]:
    """Whether a worker's task function is a coroutine function wrapped by the pool."""
    return type(fn) is Coroutines


class Coroutines:
    """A coroutine function, with how many of its calls a worker runs at once and each call's time
    limit. Picklable whenever the function is (by reference, or by value through cloudpickle)."""

    def __init__(self, fn: Callable[..., Any], concurrency: int = DEFAULT_CONCURRENCY,
                 timeout: float | None = None) -> None:
        self.fn = fn
        self.concurrency = concurrency
        self.timeout = timeout
        self.__name__ = getattr(fn, "__name__", type(fn).__name__)
        self.__qualname__ = getattr(fn, "__qualname__", self.__name__)

    def __getstate__(self) -> tuple[Any, ...]:
        return self.fn, self.concurrency, self.timeout

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self.__init__(*state)  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"<coroutine function {self.__qualname__}, {self.concurrency} at a time>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """One call, run to its end (and its time limit) on this thread's event loop."""
        values: list[Any] = [None]
        errors: dict[int, BaseException] = {}
        self.run_batch(lambda fn, item: fn(*item[0], **item[1]), [(args, kwargs)], errors, values,
                       keep_loop=False)
        if errors:
            raise errors[0]
        return values[0]

    def run_batch(self, call: Callable[[Callable[..., Any], Any], Any], items: list[Any],
                  errors: dict[int, BaseException], values: list[Any] | None = None, *,
                  keep_loop: bool = True) -> list[Any]:
        """Every item's call (``call(fn, item)`` makes its coroutine), ``concurrency`` at a time;
        the values in item order. Items already in ``errors`` (they failed to decode) are skipped;
        each call's exception goes into ``errors`` at its position.

        ``keep_loop``: run on this thread's lasting loop (a worker's: what its tasks keep between
        batches, a client session say, stays usable), or on a loop of this batch's own, closed after
        it (the caller's thread, which must not be left holding a loop)."""
        if values is None:
            values = [None] * len(items)
        _run(self._run_all(call, items, errors, values), keep_loop)
        return values

    async def _run_all(self, call: Callable[[Callable[..., Any], Any], Any], items: list[Any],
                       errors: dict[int, BaseException], values: list[Any]) -> None:
        import asyncio

        pending = iter([(position, item) for position, item in enumerate(items) if position not in errors])

        async def runner() -> None:
            for position, item in pending:  # the runners share one iterator: each takes the next call
                try:
                    values[position] = await self._one(call, item)
                except BaseException as error:  # noqa: BLE001 - the call's own failure is its result
                    if isinstance(error, (KeyboardInterrupt, SystemExit)):
                        raise
                    errors[position] = error

        runners = min(self.concurrency, len(items)) or 1
        await asyncio.gather(*(runner() for _ in range(runners)))

    async def _one(self, call: Callable[[Callable[..., Any], Any], Any], item: Any) -> Any:
        import asyncio

        if self.timeout is None:
            return await call(self.fn, item)
        task = asyncio.ensure_future(call(self.fn, item))
        done, _ = await asyncio.wait({task}, timeout=self.timeout)
        if done:
            return task.result()
        task.cancel()
        await asyncio.wait({task})  # let it run its cancellation (finally blocks, closing sockets)
        raise TaskTimeoutError(f"coroutine task {self.__qualname__}({short_repr(item)}) ran over its "
                               f"task_timeout of {self.timeout}s and was cancelled")


_loops = threading.local()


def _loop() -> asyncio.AbstractEventLoop:
    """This thread's event loop for coroutine tasks, made on first use (and again in a forked child:
    a loop's selector cannot be shared with the parent)."""
    import asyncio

    pid, loop = getattr(_loops, "pid_and_loop", (None, None))
    if pid != os.getpid() or loop is None or loop.is_closed():
        loop = asyncio.new_event_loop()
        _loops.pid_and_loop = (os.getpid(), loop)
    return loop


def close_thread_loop() -> None:
    """Close this thread's lasting loop, if it has one (a worker thread that ends)."""
    _, loop = getattr(_loops, "pid_and_loop", (None, None))
    _loops.pid_and_loop = (None, None)
    if loop is not None and not loop.is_closed():
        loop.close()


def _run(coroutine: Any, keep_loop: bool = True) -> Any:
    """Run ``coroutine`` to its end from synchronous code: on this thread's lasting loop, or a loop of
    its own (``keep_loop=False``, or when a loop already runs in this thread: a serial pool called
    from a coroutine), on a thread of its own in the latter case."""
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        if keep_loop:
            return _loop().run_until_complete(coroutine)
        return asyncio.run(coroutine)
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = asyncio.run(coroutine)
        except BaseException as error:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = error

    thread = threading.Thread(target=run, name="conveyor-coroutines")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box.get("value")
