"""What runs in a worker of a pipeline stage: the wrapper around a stage function, the markers it
returns instead of an item, and a generator stage's worker loop on processes.

Why a module of its own: these objects travel to workers (pickled by reference, by their module's
name), so they should import nothing the worker does not need: no pool, no run, no threads.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any, Callable

from conveyor._core import serialize
from conveyor._core.errors import ShutDown
from conveyor.pipeline.stages import short_repr


class Dropped:
    """A filter said no (travels back instead of the item)."""

    __slots__ = ()


class Many:
    """A flat_map's outputs for one input."""

    __slots__ = ("values",)

    def __init__(self, values: list[Any]) -> None:
        self.values = values


class ItemFailed(Exception):
    """The stage function raised on ``item``. Raised, not returned, so the stage's pool gives it the
    ``retries`` and ``task_timeout`` that ``Pool.imap`` gives a raise (each attempt its own time limit);
    it carries its input, known even when results come back out of order."""

    def __init__(self, item: Any, error: BaseException) -> None:
        super().__init__(short_repr(item), error)  # a short text: a traceback repeats it, the item may be huge
        self.item = item
        self.error = error

    def __reduce__(self) -> Any:
        return (rebuild_failed, (self.item, serialize.dumps_exception(self.error)))


def rebuild_failed(item: Any, blob: bytes) -> ItemFailed:
    return ItemFailed(item, serialize.loads_exception(blob))


class Apply:
    """Runs one stage function on one item in a worker; the item's own failure is raised as
    :class:`ItemFailed`, with its input, for the pool to retry like any task's."""

    __slots__ = ("fn", "kind")

    def __init__(self, kind: str, fn: Callable[..., Any]) -> None:
        self.kind = kind
        self.fn = fn

    def __call__(self, item: Any) -> Any:
        try:
            if self.kind == "map":
                return self.fn(item)
            if self.kind == "filter":
                return item if self.fn(item) else Dropped()
            return Many(list(self.fn(item)))
        except Exception as exc:  # noqa: BLE001 - reported with its input; KeyboardInterrupt etc. propagate
            raise ItemFailed(item, exc) from None


class AsyncApply(Apply):
    """:class:`Apply` for a coroutine stage function (``async def``): the stage's pool runs many items
    at once on each worker's event loop (``Pool(concurrency=...)``)."""

    __slots__ = ()

    async def __call__(self, item: Any) -> Any:  # type: ignore[override]
        try:
            if self.kind == "map":
                return await self.fn(item)
            if self.kind == "filter":
                return item if await self.fn(item) else Dropped()
            return Many(list(await self.fn(item)))
        except Exception as exc:  # noqa: BLE001 - reported with its input; KeyboardInterrupt etc. propagate
            raise ItemFailed(item, exc) from None


def each_worker(fn: Callable[[Iterator[Any]], Iterable[Any]], inbox: Any, outbox: Any,
                 on_start: Callable[[], Any] | None, on_stop: Callable[[], Any] | None) -> float:
    """A worker of a generator stage on processes: ``fn`` over its share of ``inbox``, into ``outbox``.
    Returns its busy seconds: the time in ``fn``, not waiting for input or for room in ``outbox``."""
    if on_start is not None:
        on_start()
    waited = [0.0]
    started = time.perf_counter()
    try:
        for value in fn(drain(inbox, waited)):
            blocked = time.perf_counter()
            outbox.put(value)
            waited[0] += time.perf_counter() - blocked
    finally:
        if on_stop is not None:
            on_stop()
    return max(0.0, time.perf_counter() - started - waited[0])


def drain(q: Any, waited: list[float]) -> Iterator[Any]:
    while True:
        blocked = time.perf_counter()
        try:
            item = q.get()
        except ShutDown:
            return
        finally:
            waited[0] += time.perf_counter() - blocked
        yield item
