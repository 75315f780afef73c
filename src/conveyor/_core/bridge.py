"""Between an event loop and conveyor's blocking calls: await them without ever blocking the loop.

Results come from the blocking side (a pool's ``imap``, a pipeline's output) through a *pump*: a
thread of its own that advances the blocking iterator and hands each result, or each error, to the
loop. The loop is woken only when a consumer waits (``call_soon_threadsafe`` on a future it awaits),
so a fast stream costs one lock and one deque append per result on the pump's side and nothing on
the loop's. The pump holds at most ``buffer`` results the consumer has not taken: the bound on
memory stays the blocking iterator's own, plus that.

Stopping is one path for every cause (the consumer's ``aclose()``, the awaiting task cancelled, the
iterator dropped): a flag the pump reads between steps, an optional ``interrupt`` that wakes a step
blocked in another thread, and ``finish``, run by the pump as its last act (close the stream, stop
running work).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import threading
from collections.abc import AsyncIterable, Iterator
from typing import Any, Callable

SLICE_SECONDS = 0.1
"""The longest a pump waits inside one step before it checks whether it should stop."""

_VALUE, _ERROR, _END = 0, 1, 2


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class _Channel:
    """What the pump and the consumer share. The pump thread holds this, never the ``AsyncResults``
    object, so a consumer that drops its iterator lets it be collected (which stops the pump)."""

    def __init__(self, buffer: int) -> None:
        self.lock = threading.Lock()
        self.entries: collections.deque[tuple[int, Any]] = collections.deque()
        self.room = threading.Semaphore(buffer)
        self.waiter: asyncio.Future[None] | None = None
        self.stop = threading.Event()
        self.finished = threading.Event()

    def push(self, kind: int, value: Any) -> None:
        with self.lock:
            self.entries.append((kind, value))
            waiter, self.waiter = self.waiter, None
        if waiter is not None:
            try:
                waiter.get_loop().call_soon_threadsafe(_wake, waiter)
            except RuntimeError:  # the loop is closed: nobody waits any more
                self.stop.set()

    def pump(self, step: Callable[[], Any], later: tuple[type[BaseException], ...],
             finish: Callable[[], Any] | None) -> None:
        try:
            while not self.stop.is_set():
                if not self.room.acquire(timeout=SLICE_SECONDS):
                    continue
                try:
                    value = step()
                except later:
                    self.room.release()
                    continue
                except StopIteration:
                    break
                except BaseException as error:  # noqa: BLE001 - the consumer's to see, at its position
                    self.push(_ERROR, error)
                    continue
                self.push(_VALUE, value)
        finally:
            try:
                if finish is not None:
                    finish()
            finally:
                self.finished.set()
                self.push(_END, None)


class AsyncResults:
    """An async iterator over what a blocking ``step`` returns, one call per result, run by a pump
    thread: ``async for result in AsyncResults(...)``.

    Args:
        step: returns the next result; raises ``StopIteration`` at the end, one of ``later`` when
            nothing came within about ``SLICE_SECONDS`` (the pump then checks whether to stop and
            calls it again), or any other exception, which the consumer gets at that position
            (iteration may go on after it, as over ``Pool.imap``).
        later: the exceptions that mean "nothing yet".
        finish: called by the pump thread as its last act, whatever ended it.
        interrupt: called (from any thread) when the consumer stops, to wake a ``step`` that blocks
            for longer than a slice.
        buffer: results that may wait for the consumer.
        name: the pump thread's name.
    """

    def __init__(self, step: Callable[[], Any], *, later: tuple[type[BaseException], ...] = (),
                 finish: Callable[[], Any] | None = None, interrupt: Callable[[], Any] | None = None,
                 buffer: int = 64, name: str = "conveyor-async-pump") -> None:
        self._channel = channel = _Channel(max(1, buffer))
        self._interrupt = interrupt
        self._thread = threading.Thread(target=channel.pump, args=(step, later, finish), name=name, daemon=True)
        self._thread.start()

    def __aiter__(self) -> AsyncResults:
        return self

    async def __anext__(self) -> Any:
        channel = self._channel
        while True:
            with channel.lock:
                if channel.entries:
                    kind, value = channel.entries[0]
                    if kind != _END:
                        channel.entries.popleft()
                    break
                waiter = channel.waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            except asyncio.CancelledError:
                self.close()
                raise
        if kind == _END:
            raise StopAsyncIteration
        channel.room.release()
        if kind == _ERROR:
            raise value
        return value

    def close(self) -> None:
        """Stop without waiting: the pump ends within a slice and runs ``finish``."""
        self._channel.stop.set()
        if self._interrupt is not None and not self._channel.finished.is_set():
            self._interrupt()

    async def aclose(self) -> None:
        """Stop, and wait until the pump has run ``finish`` (the work is stopped)."""
        self.close()
        await run_blocking(self._thread.join)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001, S110 - never raise from a finalizer
            pass


async def run_blocking(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` on a thread of its own, awaited: the loop runs on meanwhile. (Not the loop's
    default executor, whose threads a program may have busy or shut down.)"""
    future: concurrent.futures.Future[Any] = concurrent.futures.Future()

    def run() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(fn(*args))
        except BaseException as error:  # noqa: BLE001 - delivered to whoever awaits
            future.set_exception(error)

    threading.Thread(target=run, name="conveyor-await", daemon=True).start()
    return await asyncio.wrap_future(future)


class FromAsync(Iterator[Any]):
    """A blocking iterator over an async iterable, for a thread other than the loop's: each
    ``next()`` runs one ``__anext__`` on ``loop`` and waits for it. ``cancel()`` (any thread) ends
    the one in progress."""

    def __init__(self, iterable: AsyncIterable[Any], loop: asyncio.AbstractEventLoop) -> None:
        self._iterator = iterable.__aiter__()
        self._loop = loop
        self._current: concurrent.futures.Future[Any] | None = None
        self._cancelled = False

    def __next__(self) -> Any:
        if self._cancelled:
            raise StopIteration

        async def step() -> Any:
            return await self._iterator.__anext__()

        self._current = asyncio.run_coroutine_threadsafe(step(), self._loop)
        try:
            return self._current.result()
        except StopAsyncIteration:
            raise StopIteration from None
        except concurrent.futures.CancelledError:
            raise StopIteration from None
        finally:
            self._current = None

    def cancel(self) -> None:
        self._cancelled = True
        current = self._current
        if current is not None:
            current.cancel()
