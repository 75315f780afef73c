"""The async API of :class:`conveyor.Pool`: for code that lives in an event loop and must never block it.

::

    await pool.arun(fn, *args, **kwargs)            # one call
    async for result in pool.amap(fn, items): ...   # lazy and bounded, like imap; items may be async
    async for result in pool.amap_unordered(fn, items): ...
    async with conveyor.Pool(4) as pool: ...        # shuts down without blocking the loop

The work runs on the pool's backend as usual; the loop only ever awaits futures that a conveyor thread
completes (``conveyor._core.bridge``). Cancelling the awaiting task cancels the call: inputs not yet
started never run, and running ones are stopped where the backend can stop them (processes and Ray:
the worker is killed and replaced; threads run to their end, their results dropped).
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from typing import TYPE_CHECKING, Any, Callable

# asyncio and the bridge are imported by the methods that use them: a program that never awaits a
# pool does not pay for importing asyncio (tens of milliseconds) when it makes one.
if TYPE_CHECKING:
    from conveyor.abc import Backend
    from conveyor.progress import ProgressOption

__all__ = ["AsyncPoolMethods"]

_inline_turns = threading.Lock()
"""One call at a time through ``arun`` on a backend that runs calls in the caller (serial): what
``submit`` from one thread would give, without blocking the loop."""


class AsyncPoolMethods:
    """The ``a``-methods of a pool, over its blocking ones (``submit``, the lazy ``imap`` stream)."""

    # What the pool provides:
    _backend: Backend
    _submit_call: Callable[..., tuple[Any, Any]]  # (future, call)
    _stream: Callable[..., Any]  # a lazy map call (conveyor._core.stream.Stream)
    __enter__: Callable[[], Any]
    __exit__: Callable[..., None]
    shutdown: Callable[..., None]

    def _cancel_call(self, call: Any) -> None:
        """The user cancelled ``call``: drop what has not started, stop what runs where possible."""
        call.close()
        if self._backend.capabilities.cancel_running:
            self._backend.cancel_running(call)

    async def arun(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """``await pool.arun(fn, *args, **kwargs)``: run one call on a worker and await its result.

        Cancelling the awaiting task cancels the call (and stops it if it runs, on processes and Ray).
        """
        import asyncio

        if not self._backend.capabilities.in_background:
            return await self._run_inline(fn, args, kwargs)
        future, call = self._submit_call(fn, args, kwargs)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            self._cancel_call(call)
            raise

    async def _run_inline(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """A backend that runs each call inside ``submit`` (serial): submit from a thread, never the
        loop's, one call at a time as the backend promises; a call cancelled before its turn never runs."""
        import asyncio

        from conveyor._core import bridge

        cancelled = threading.Event()

        def run() -> Any:
            with _inline_turns:
                if cancelled.is_set():
                    raise asyncio.CancelledError
                return self._submit_call(fn, args, kwargs)[0].result()

        try:
            return await bridge.run_blocking(run)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    def amap(self, fn: Callable[..., Any], items: Iterable[Any] | AsyncIterable[Any], *,
             timeout: float | None = None, chunksize: int | None = None, task_timeout: float | None = None,
             retries: int | None = None, progress: ProgressOption = None) -> AsyncIterator[Any]:
        """``async for result in pool.amap(fn, items)``: :meth:`~conveyor.Pool.imap` for an event loop.

        Lazy and bounded like ``imap`` (inputs are pulled as results are taken); ``items`` may be an
        iterable or an async iterable. A failed task raises at its position and iteration may go on.
        Leaving the loop early (``break``) or cancelling the task stops the call; ``aclose()`` on the
        iterator does too, and waits until it has stopped.
        """
        return self._async_stream("amap", fn, items, ordered=True, timeout=timeout, chunksize=chunksize,
                                  task_timeout=task_timeout, retries=retries, progress=progress)

    def amap_unordered(self, fn: Callable[..., Any], items: Iterable[Any] | AsyncIterable[Any], *,
                       timeout: float | None = None, chunksize: int | None = None,
                       task_timeout: float | None = None, retries: int | None = None,
                       progress: ProgressOption = None) -> AsyncIterator[Any]:
        """Like :meth:`amap`, in completion order."""
        return self._async_stream("amap_unordered", fn, items, ordered=False, timeout=timeout,
                                  chunksize=chunksize, task_timeout=task_timeout, retries=retries,
                                  progress=progress)

    def _async_stream(self, method: str, fn: Callable[..., Any], items: Iterable[Any] | AsyncIterable[Any], *,
                      ordered: bool, **options: Any) -> AsyncIterator[Any]:
        import asyncio

        from conveyor._core import bridge

        source: Iterable[Any]
        cancel_source: Callable[[], Any] | None = None
        if isinstance(items, AsyncIterable) and not isinstance(items, Iterable):
            source = bridge.FromAsync(items, asyncio.get_running_loop())
            cancel_source = source.cancel
        else:
            source = items  # type: ignore[assignment]
        # Made here, so a bad argument raises at the call; it pulls inputs only in the pump thread.
        stream = self._stream(method, fn, (source,), False, ordered=ordered, **options)
        from conveyor._core.stream import NotYet

        def finish() -> None:
            stream.close()
            self._cancel_call(stream.call)

        return bridge.AsyncResults(lambda: stream.next(bridge.SLICE_SECONDS), later=(NotYet,), finish=finish,
                                   interrupt=cancel_source, name=f"conveyor-{method}")

    async def __aenter__(self) -> Any:
        return self.__enter__()

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        """As ``with``: a normal exit waits for the work, an exception (or a cancelled task) stops it;
        the waiting happens in a thread, so the loop runs on meanwhile."""
        import asyncio

        from conveyor._core import bridge

        try:
            await asyncio.shield(bridge.run_blocking(self.__exit__, exc_type, exc, tb))
        except asyncio.CancelledError:
            self.shutdown(wait=False, kill=True)
            raise
