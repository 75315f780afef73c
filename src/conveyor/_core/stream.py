"""One lazy, bounded map call: pulls inputs as results are consumed, yields results in order or not.

::

    user's iterable ──pull (consumer thread)──► Call.send ──► backend
          ▲                                                      │ outcomes (backend threads)
          │ top up while in-flight < window                      ▼
    consumer ◄── __next__ ◄── segments (contiguous results) ◄── inbox (SimpleQueue)

Everything except the inbox runs in the consumer's thread, so a user's generator is only ever
advanced by the thread that iterates the results, and memory holds at most ``window`` inputs
(``O(workers × chunk)``), whatever the length of the input.

The inputs may instead come from a :class:`Feed` that another thread fills (a pipeline's previous
stage). A plain iterator would make the stream block in ``next()`` while finished results wait; a
feed is polled without blocking while work is in flight, and each ``put`` wakes a stream that waits
for results, so inputs go out as they arrive and results come back as they finish.
"""

from __future__ import annotations

import collections
import itertools
import queue
import threading
import time
from collections.abc import Sequence
from typing import Any, Callable, Iterable, Iterator, Protocol, cast

from conveyor._core import chunking
from conveyor._core.chunking import ChunkSizer
from conveyor._core.errors import ResultTimeoutError, ShutDown
from conveyor._core.task import Call, Stats
from conveyor.abc import Backend, Batch, CallKind, TaskFunction

_WAKE_SECONDS = 0.5
_SLICE_SECONDS = 0.1
_WAKE = ("wake",)
_SLICEABLE = (list, tuple, range)


class Feed:
    """Inputs that other threads put, for a stream (``pool.imap(fn, feed)``) that must not block on them.

    ``put`` blocks while ``maxsize`` items wait (backpressure); ``end()`` says no more will come;
    ``close()`` drops what waits and makes later ``put``s raise ``ShutDown`` (the consumer is gone).
    Every wait is sliced, so the threads involved stay responsive.
    """

    def __init__(self, maxsize: int = 0) -> None:
        self.maxsize = maxsize
        self._items: collections.deque[Any] = collections.deque()
        self._cond = threading.Condition()
        self._ended = False
        self._closed = False
        self._wake: Callable[[], None] | None = None

    def put(self, item: Any) -> None:
        with self._cond:
            while self.maxsize > 0 and len(self._items) >= self.maxsize and not (self._closed or self._ended):
                self._cond.wait(_SLICE_SECONDS)
            if self._closed or self._ended:
                raise ShutDown("the feed is closed" if self._closed else "the feed has ended")
            self._items.append(item)
            self._cond.notify_all()
            wake = self._wake
        if wake is not None:
            wake()

    def end(self) -> None:
        """No more items: the stream finishes once it has taken what is there."""
        with self._cond:
            self._ended = True
            self._cond.notify_all()
            wake = self._wake
        if wake is not None:
            wake()

    def close(self) -> None:
        """Drop what waits; later ``put``s raise ShutDown and the stream sees the end."""
        with self._cond:
            self._closed = True
            self._items.clear()
            self._cond.notify_all()
            wake = self._wake
        if wake is not None:
            wake()

    def take(self, max_items: int, block: bool) -> list[Any] | None:
        """Up to ``max_items`` items; ``[]`` if none now and not ``block``; None once ended and empty."""
        with self._cond:
            while not self._items:
                if self._ended or self._closed:
                    return None
                if not block:
                    return []
                self._cond.wait(_SLICE_SECONDS)
            taken = [self._items.popleft() for _ in range(min(max_items, len(self._items)))]
            self._cond.notify_all()
            return taken

    @property
    def waiting(self) -> int:
        """Items put and not yet taken. (Not ``__len__``: a feed has no length as an input.)"""
        return len(self._items)

    @property
    def done(self) -> bool:
        """No more items will be put (ended or closed)."""
        return self._ended or self._closed

    def __iter__(self) -> Iterator[Any]:
        """Blocking iteration (for consumers that are not streams)."""
        while True:
            taken = self.take(1, block=True)
            if taken is None:
                return
            yield taken[0]



def _iteration_safe(error: BaseException) -> BaseException:
    """A task's StopIteration, raised from a results iterator, would end the caller's ``for`` loop as if
    the results were all there, dropping the rest without a word: it is raised as a RuntimeError from
    it instead, as Python does for a generator (PEP 479) and ``concurrent.futures``' ``map`` does."""
    if isinstance(error, StopIteration):
        converted = RuntimeError("a task raised StopIteration")
        converted.__cause__ = error
        return converted
    return error

class _Progress(Protocol):
    def update(self, n: int) -> Any: ...

    def close(self) -> Any: ...


def _discard(*_: Any) -> None:
    """Where a closed stream's late results go."""


def _delivery_into(inbox: queue.SimpleQueue[tuple[Any, ...]]) -> Callable[..., None]:
    """What the call hands finished batches to, in backend threads: only the stream's inbox (all
    bookkeeping happens in the consumer thread). It holds the inbox, not the stream, so a stream its
    consumer dropped goes at once, even while a backend still holds its call (a closed pool waits
    for the streams made before it)."""

    def deliver(batch: Batch, values: list[Any], errors: dict[int, BaseException], held: frozenset[int],
                busy: float) -> None:
        inbox.put((batch.indices, values, errors, held, busy))

    return deliver


class _Segment:
    """Results for consecutive input positions ``start .. start+len(values)-1``."""

    __slots__ = ("start", "values", "errors", "offset")

    def __init__(self, start: int, values: list[Any], errors: dict[int, BaseException]) -> None:
        self.start = start
        self.values = values
        self.errors = errors
        self.offset = 0


class NotYet(ResultTimeoutError):
    """``Stream.next(timeout)`` ran out of time; unlike the call's own timeout, the stream goes on."""


class Stream(Iterator[Any]):
    """Results of ``fn`` over an iterable, produced lazily with bounded look-ahead.

    Args:
        backend: where the work runs.
        stats: the pool's counters.
        fn: the function.
        iterable: inputs (tuples of arguments when ``kind`` is STAR).
        kind: how an input becomes a call.
        ordered: yield in input order (else in completion order).
        chunksize: fixed batch size, or None for automatic.
        task_timeout: per-task limit.
        retries: extra attempts for a failing input.
        timeout: overall limit on waiting for the next result.
        progress: told how many inputs just finished; closed with the stream.
        keepalive: an object to keep alive as long as the stream (its pool).
    """

    def __init__(
        self,
        backend: Backend,
        stats: Stats,
        fn: Callable[..., Any],
        iterable: Iterable[Any],
        kind: CallKind,
        *,
        ordered: bool = True,
        chunksize: int | None = None,
        task_timeout: float | None = None,
        retries: int = 0,
        timeout: float | None = None,
        total: int | None = None,
        progress: _Progress | None = None,
        keepalive: object = None,
    ) -> None:
        self._keepalive = keepalive  # the pool: ``Pool().imap(...)`` must not lose its pool mid-stream
        self._feed = iterable if isinstance(iterable, Feed) else None
        self._source = iter(()) if self._feed is not None else iter(iterable)
        # A list, tuple or range is cut into batches by slicing (a copy at C speed), not pulled
        # through an iterator item by item.
        self._sequence = cast("Sequence[Any]", iterable) if type(iterable) in _SLICEABLE else None
        self._waiting = False
        self._window_full = False
        self._batches = 0           # batches sent whose results have not all come back
        self._ordered = ordered
        self._workers = backend.workers
        cap = backend.max_batch_size
        if chunksize is not None and cap is not None:
            chunksize = min(chunksize, cap)
        self._sizer = ChunkSizer(self._workers, total, chunksize, cap=cap,
                                 batches_per_worker=backend.batches_per_worker)
        self._total = total
        self._inbox: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        function = TaskFunction(fn)
        tiny = chunking.known_tiny(fn) if total is not None else None
        if tiny is not None and chunksize is None:
            # Its last call measured it tiny: that is what the probes would say, without the wait.
            # Only for an input of known length, whose cap is a quarter of a worker's fair share:
            # if the function is slower this time, every worker still has batches (an endless
            # input's cap, MAX_UNSIZED, could give one worker all of a short input).
            self._sizer.observe(self._workers, tiny * self._workers)
            function.observe(self._workers, tiny * self._workers)
        self._call = Call(backend, function, kind, _delivery_into(self._inbox), stats,
                          timeout=task_timeout, retries=retries)
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._patience: float | None = None  # set by next(timeout) for one call
        self._progress = progress
        self._sent = 0              # inputs pulled and sent
        self._outstanding = 0       # sent and not yet yielded
        self._exhausted = False
        self._source_error: BaseException | None = None
        self._next_start = 0        # ordered: the next position to yield
        self._pending: dict[int, _Segment] = {}
        self._ready: collections.deque[_Segment] = collections.deque()
        self._current: _Segment | None = None
        self._closed = False

    # -- feeding -----------------------------------------------------------------------------------
    def _top_up(self) -> None:
        """Send batches until ``window`` inputs are in flight: one probe per worker at first, then
        ``2 × workers + 2`` batches' worth (every worker busy, one queued, a spare in transit)."""
        self._window_full = False
        workers = self._call.backend.workers_for(self._call.function)
        if workers != self._workers:  # a backend that chose how to run this function (auto)
            self._workers = self._sizer.workers = workers
        while not self._exhausted:
            remaining = None if self._total is None else self._total - self._sent
            size = self._sizer.next_size(remaining)
            window = self._workers if self._sizer.probing else size * (2 * self._workers + 2)
            if self._outstanding >= window:
                self._window_full = True
                return
            items: list[Any] = []
            if self._feed is not None:
                if self._batches >= self._workers and self._feed.waiting < size and not self._feed.done:
                    self._window_full = True  # every worker has work: wait for a full batch, not a crumb
                    return
                taken = self._feed.take(size, block=self._outstanding == 0)
                if taken is None:
                    self._exhausted = True
                    return
                if not taken:
                    return  # nothing now: a put will wake the wait for results
                items = taken
            elif self._sequence is not None:
                chunk = self._sequence[self._sent:self._sent + size]
                items = chunk if type(chunk) is list else list(chunk)
                if len(items) < size:
                    self._exhausted = True
                if not items:
                    return
            else:
                try:
                    items.extend(itertools.islice(self._source, size))  # keeps what came before a failure
                except BaseException as exc:  # noqa: BLE001 - re-raised after the inputs before it
                    self._source_error = exc
                    self._exhausted = True
                if len(items) < size:
                    self._exhausted = True
                if not items:
                    return
            start = self._sent
            self._sent += len(items)
            self._outstanding += len(items)
            self._batches += 1
            self._call.send(items, range(start, start + len(items)))

    # -- consuming ---------------------------------------------------------------------------------
    def _absorb(self, indices: Any, values: list[Any], errors: dict[int, BaseException],
                held: frozenset[int], busy: float) -> None:
        if not held and self._batches:
            self._batches -= 1  # approximate under re-runs (a held batch returns as several): a hint only
        count = len(indices) - len(held)
        if not held and isinstance(indices, range):
            self._store(_Segment(indices.start, values, errors))
        else:
            for position, index in enumerate(indices):
                if position in held:
                    continue
                error = errors.get(position)
                self._store(_Segment(index, [values[position]], {0: error} if error is not None else {}))
        if busy and not held:
            self._sizer.observe(len(indices), busy)
        if self._progress is not None and count:
            self._progress.update(count)

    def _store(self, segment: _Segment) -> None:
        if self._ordered:
            self._pending[segment.start] = segment
        else:
            self._ready.append(segment)

    def _wait(self) -> None:
        """Block for one delivery (or the overall deadline, or a feed's new input)."""
        feed = self._feed
        if feed is not None:
            if feed._wake is None:
                feed._wake = self._feed_woke
            self._waiting = True
            if feed.waiting and not self._exhausted and not self._window_full:
                self._waiting = False
                return  # inputs arrived meanwhile: go and send them
        try:
            self._wait_for_delivery()
        finally:
            self._waiting = False

    def _feed_woke(self) -> None:
        if self._waiting:
            self._inbox.put(_WAKE)

    def _wait_for_delivery(self) -> None:
        while True:
            if self._deadline is None:
                wait = _WAKE_SECONDS
            else:
                wait = min(_WAKE_SECONDS, self._deadline - time.monotonic())
                if wait <= 0:
                    self.close()
                    raise ResultTimeoutError("timed out waiting for the next result")
            if self._patience is not None:
                wait = min(wait, self._patience - time.monotonic())
                if wait <= 0:
                    raise NotYet("the next result is not ready yet")
            try:
                delivery = self._inbox.get(timeout=wait)
            except queue.Empty:
                continue
            if delivery is not _WAKE:
                self._absorb(*delivery)
            return

    def _next_segment(self) -> _Segment | None:
        """The next segment to yield from, or None when everything has been yielded."""
        while True:
            self._top_up()
            if self._ordered:
                segment = self._pending.pop(self._next_start, None)
                if segment is not None:
                    self._next_start += len(segment.values)
                    return segment
            elif self._ready:
                return self._ready.popleft()
            if self._outstanding == 0 and self._exhausted:
                if self._source_error is not None:
                    error, self._source_error = self._source_error, None
                    raise error
                return None
            self._wait()

    def __next__(self) -> Any:
        while True:
            segment = self._current
            if segment is not None and segment.offset < len(segment.values):
                position = segment.offset
                segment.offset += 1
                self._outstanding -= 1
                if segment.errors:
                    error = segment.errors.get(position)
                    if error is not None:
                        raise _iteration_safe(error)
                return segment.values[position]
            if self._closed:
                raise StopIteration  # closed by the consumer, a timeout or an interrupt: nothing more comes
            try:
                self._current = self._next_segment()
            except NotYet:
                raise  # next(timeout) ran out: nothing was lost, the stream goes on
            except BaseException:
                self.close()
                raise
            if self._current is None:
                self.close()
                raise StopIteration

    def next(self, timeout: float | None = None) -> Any:
        """The next result, waiting at most ``timeout`` seconds (``multiprocessing``'s
        ``IMapIterator.next``): past it, ``ResultTimeoutError`` is raised and the stream goes on, so
        the same result can be asked for again. (The call's own ``timeout`` ends the stream instead.)
        """
        if timeout is None:
            return next(self)
        self._patience = time.monotonic() + max(timeout, 0.0)
        try:
            return next(self)
        finally:
            self._patience = None

    def collect(self) -> list[Any]:
        """All results in order as a list; the first failure (in input order) is raised."""
        out: list[Any] = []
        try:
            while True:
                segment = self._next_segment()
                if segment is None:
                    return out
                self._outstanding -= len(segment.values)
                if segment.errors:
                    raise _iteration_safe(segment.errors[min(segment.errors)])
                out.extend(segment.values)
        finally:
            self.close()

    def close(self) -> None:
        """Stop feeding; batches not yet started are dropped."""
        if not self._closed:
            self._closed = True
            self._exhausted = True
            self._call.close()
            chunking.remember(self._call.function.fn, self._sizer.per_item)
            self._call.deliver = _discard   # late deliveries go nowhere, and the cycle is broken
            if self._feed is not None:
                self._feed._wake = None
            self._keepalive = None          # a pool held only by this stream may now go
            if self._progress is not None:
                self._progress.close()

    @property
    def call(self) -> Call:
        """The core's record of this call (what its batches report to)."""
        return self._call

    def __iter__(self) -> Stream:
        return self

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - never raise from a finalizer
            pass
