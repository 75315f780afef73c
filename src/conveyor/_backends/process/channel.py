"""The FIFO process queue (``queue.Queue`` across processes): a ring of records in shared memory.

The mechanism every process queue shares (the segment, the robust mutex, journaled commits, sliced
waits, records too large to sit inline) is ``shared_queue.py``; this module is only the ring and the
order it keeps. The LIFO and priority queues are ``ordered_queues.py``.
"""

from __future__ import annotations

import queue as _stdlib_queue
from collections.abc import Iterable
from typing import Any

from conveyor._backends.process import pthreads
from conveyor._backends.process.segments import STATE_OFFSET
from conveyor._backends.process.shared_queue import (
    BATCH_BYTES,
    COUNT,
    HEADER,
    LIVE,
    MAXSIZE,
    PUTTERS,
    SHUT,
    SharedQueue,
    dumps_item,
    take_spilled,
)
from conveyor._core import serialize
from conveyor._core.errors import ShutDown
from conveyor._core.waiting import queue_timeout

_WRAP = -(1 << 62)                  # FIFO ring: "the records continue at offset 0"
_HEAD, _TAIL, _USED = 0, 1, 2       # the ring's live fields (words 0-2)


class ProcessQueue(SharedQueue):
    """``queue.Queue`` semantics across processes, plus ``shutdown`` and ``put_many``/``get_many``.

    The storage is a ring of records ``[length][pickle]``; head and tail chase each other.

    Args:
        maxsize: at most this many items wait; ``<= 0``: no limit but the ring's bytes.
        capacity: bytes of the ring buffer (items that do not fit wait for room).
    """

    @classmethod
    def _storage_words(cls, capacity: int) -> int:
        return capacity // 8

    def _fits(self, tail: int, used: int, size: int) -> bool:
        need = HEADER.size + size
        waste = self._capacity - tail if tail + need > self._capacity else 0
        return used + waste + need <= self._capacity

    def _write(self, tail: int, used: int, payload: bytes, by_reference: bool) -> tuple[int, int]:
        capacity, view, ring = self._capacity, self._view, self._storage
        need = HEADER.size + len(payload)
        if tail + need > capacity:
            if capacity - tail >= HEADER.size:
                HEADER.pack_into(view, ring + tail, _WRAP)
            used += capacity - tail
            tail = 0
        start = ring + tail
        HEADER.pack_into(view, start, -len(payload) - 1 if by_reference else len(payload))
        view[start + HEADER.size:start + need] = payload
        return tail + need, used + need

    def _read(self, head: int, used: int) -> tuple[int, int, bytes, bool]:
        capacity, view, ring = self._capacity, self._view, self._storage
        if capacity - head < HEADER.size:
            used -= capacity - head
            head = 0
        (length,) = HEADER.unpack_from(view, ring + head)
        if length == _WRAP:
            used -= capacity - head
            head = 0
            (length,) = HEADER.unpack_from(view, ring)
        by_reference = length < 0
        size = -length - 1 if by_reference else length
        start = ring + head + HEADER.size
        need = HEADER.size + size
        return head + need, used - need, view[start:start + size].tobytes(), by_reference

    def _has_room(self, size: int) -> bool:
        words = self._words
        maxsize = words[MAXSIZE]
        return (maxsize <= 0 or words[COUNT] < maxsize) and self._fits(words[_TAIL], words[_USED], size)

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """Put one item, waiting for room (``queue.Full`` after ``timeout``, or at once if not ``block``)."""
        data = dumps_item(item)
        if len(data) + HEADER.size > self._max_inline:
            self.put_many((item,), block, timeout)
            return
        words = self._words
        queue_timeout(block, timeout)
        self._acquire()
        try:
            if words[SHUT]:
                raise ShutDown("the queue is shut down")
            if not self._has_room(len(data)):
                self._wait(self._not_full, PUTTERS, lambda: self._has_room(len(data)), block,
                           self._deadline(block, timeout), _stdlib_queue.Full)
            head, tail, used, count, unfinished = LIVE.unpack_from(self._view, STATE_OFFSET)
            tail, used = self._write(tail, used, data, False)
            self._commit_live(head, tail, used, count + 1, unfinished + 1)
            self._wake_after_put(1)
            if words[PUTTERS] and self._has_room(0):
                pthreads.signal(self._not_full)  # a get made room for one waiter; there is more
        finally:
            self._release()

    def put_many(self, items: Iterable[Any], block: bool = True, timeout: float | None = None) -> None:
        """Put every item in order, waiting for room as needed; the items before a Full or ShutDown
        were put. Items are pickled and stored in slices of about ``BATCH_BYTES``, so consumers can
        take the first ones while the next are being pickled."""
        deadline = self._deadline(block, timeout)
        records: list[tuple[bytes, Any]] = []
        size = 0
        for item in items:
            record = self._record_of(item)
            records.append(record)
            size += len(record[0])
            if size >= BATCH_BYTES:
                self._put_records(records, block, deadline)
                records, size = [], 0
        if records:
            self._put_records(records, block, deadline)

    def _put_records(self, records: list[tuple[bytes, Any]], block: bool, deadline: float | None) -> None:
        words = self._words
        stored = 0
        try:
            self._acquire()
            try:
                while stored < len(records):
                    if words[SHUT]:
                        raise ShutDown("the queue is shut down")
                    size = len(records[stored][0])
                    self._wait(self._not_full, PUTTERS, lambda: self._has_room(size), block, deadline,
                               _stdlib_queue.Full)
                    head, tail, used, count, unfinished = LIVE.unpack_from(self._view, STATE_OFFSET)
                    maxsize = words[MAXSIZE]
                    first = stored
                    while stored < len(records):
                        payload, spill = records[stored]
                        if (maxsize > 0 and count >= maxsize) or not self._fits(tail, used, len(payload)):
                            break
                        tail, used = self._write(tail, used, payload, spill is not None)
                        count += 1
                        unfinished += 1
                        stored += 1
                    self._commit_live(head, tail, used, count, unfinished)
                    self._wake_after_put(stored - first)
            finally:
                self._release()
        finally:
            self._settle(records, stored)

    def get_many(self, max_items: int, block: bool = True, timeout: float | None = None) -> list[Any]:
        """Take 1 to ``max_items`` items: waits for the first, then takes what is there (at most
        about ``BATCH_BYTES`` of pickles per call, so that producers are not held up for long).

        Raises:
            queue.Empty: nothing in time (or at once when ``block`` is false).
            ShutDown: the queue is shut down and empty.
        """
        if max_items < 1:
            raise ValueError(f"max_items must be >= 1, got {max_items}")
        words = self._words
        deadline = self._deadline(block, timeout)
        taken: list[tuple[bytes, bool]] = []
        self._acquire()
        try:
            self._until_items(block, deadline)
            head, tail, used, count, unfinished = LIVE.unpack_from(self._view, STATE_OFFSET)
            size = 0
            while count and len(taken) < max_items and size < BATCH_BYTES:
                head, used, payload, by_reference = self._read(head, used)
                taken.append((payload, by_reference))
                size += len(payload)
                count -= 1
            if count == 0:
                head = tail = used = 0
            self._commit_live(head, tail, used, count, unfinished)
            if words[PUTTERS]:
                pthreads.broadcast(self._not_full)
        finally:
            self._release()
        return [serialize.loads(take_spilled(payload) if by_reference else payload) for payload, by_reference in taken]

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Take the oldest item (``queue.Empty`` after ``timeout``; ShutDown once shut down and empty)."""
        words = self._words
        queue_timeout(block, timeout)
        if block and not words[COUNT]:
            self._spin_for_items()
        self._acquire()
        try:
            self._until_items(block, self._deadline(block, timeout))
            head, tail, used, count, unfinished = LIVE.unpack_from(self._view, STATE_OFFSET)
            head, used, payload, by_reference = self._read(head, used)
            if count == 1:
                head = tail = used = 0
            self._commit_live(head, tail, used, count - 1, unfinished)
            if words[PUTTERS]:
                pthreads.signal(self._not_full)  # room for one: wake one (it passes the baton on)
        finally:
            self._release()
        return serialize.loads(take_spilled(payload) if by_reference else payload)

    def _drop_all(self) -> None:
        head, tail, used, count, unfinished = LIVE.unpack_from(self._view, STATE_OFFSET)
        dropped = count
        while count:
            head, used, payload, by_reference = self._read(head, used)
            if by_reference:
                take_spilled(payload)
            count -= 1
        self._commit_live(0, 0, 0, 0, max(0, unfinished - dropped))
