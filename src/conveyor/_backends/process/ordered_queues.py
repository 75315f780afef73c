"""The LIFO and priority process queues: records in an arena, and an index kept in the queue's order.

The mechanism every process queue shares is ``shared_queue.py``; the FIFO queue is ``channel.py``.
"""

from __future__ import annotations

import queue as _stdlib_queue
from collections.abc import Iterable
from multiprocessing import shared_memory
from typing import Any

from conveyor._backends.process import pthreads
from conveyor._backends.process.segments import STATE_OFFSET
from conveyor._backends.process.shared_queue import (
    COUNT,
    DEFAULT_CAPACITY,
    HEADER,
    LIVE,
    MAXSIZE,
    PUTTERS,
    SHUT,
    STORAGE,
    UNFINISHED,
    SharedQueue,
    take_spilled,
)
from conveyor._core import serialize, shm
from conveyor._core.errors import ShutDown

_TOP, _ACTIVE, _LIVE_BYTES = 0, 1, 2  # arena top, active arena/index half, bytes in live records (words 0-2)


class IndexedQueue(SharedQueue):
    """A queue whose items leave in an order other than arrival: records in an arena, and an index of
    their offsets that the subclass keeps in its order (a stack, a heap).

    ::

        storage = [ index half 0 | index half 1 | arena half 0 | arena half 1 ]

    A record is written at the arena's top, in free space, and becomes visible when the commit that
    puts its offset in the index lands. Records taken from the middle (a heap's) leave holes; when the
    top reaches the end, the live records are copied into the other arena half, with a fresh index in
    the other index half, and one commit switches halves. A process killed while copying leaves the
    active half untouched.
    """

    @classmethod
    def _storage_words(cls, capacity: int) -> int:
        entries = capacity // 16      # a record takes at least 16 bytes (8-byte length + padded pickle)
        return 2 * entries + 2 * (capacity // 8)

    def __init__(self, maxsize: int = 0, capacity: int = DEFAULT_CAPACITY, *, _name: str | None = None) -> None:
        super().__init__(maxsize, capacity, _name=_name)
        self._entries = self._capacity // 16
        self._arenas = self._storage + 8 * 2 * self._entries   # byte offset of arena half 0

    # -- the order, supplied by subclasses (mutex held; ``changes`` collects the commit) ----------------
    def _push(self, changes: dict[int, int], base: int, count: int, offset: int, item: Any) -> None:
        raise NotImplementedError

    def _pop(self, changes: dict[int, int], base: int, count: int) -> int:
        raise NotImplementedError

    # -- records -----------------------------------------------------------------------------------------
    def _index_base(self, half: int) -> int:
        return STORAGE + half * self._entries

    def _arena(self, half: int) -> int:
        return self._arenas + half * self._capacity

    @staticmethod
    def _span(size: int) -> int:
        return HEADER.size + -(-size // 8) * 8

    def _load(self, offset: int) -> Any:
        """The item of the record at ``offset`` of the active arena (for comparisons; mutex held)."""
        length, payload = self._record_at(offset)
        if length < 0:
            spill = shared_memory.SharedMemory(name=payload.decode())
            try:
                return serialize.loads(bytes(shm.contents(spill)))
            finally:
                spill.close()
        return serialize.loads(payload)

    def _record_at(self, offset: int) -> tuple[int, bytes]:
        start = self._arena(self._words[_ACTIVE]) + offset
        (length,) = HEADER.unpack_from(self._view, start)
        size = -length - 1 if length < 0 else length
        return length, self._view[start + HEADER.size:start + HEADER.size + size].tobytes()

    def _has_room(self, size: int) -> bool:
        words = self._words
        maxsize = words[MAXSIZE]
        return ((maxsize <= 0 or words[COUNT] < maxsize) and words[COUNT] < self._entries
                and words[_LIVE_BYTES] + self._span(size) <= self._capacity)

    def _compact(self) -> None:
        """Copy the live records to the other arena half, then switch to it in one commit."""
        words, view = self._words, self._view
        active = words[_ACTIVE]
        source, target = self._arena(active), self._arena(1 - active)
        old_index, new_index = self._index_base(active), self._index_base(1 - active)
        top = 0
        for position in range(words[COUNT]):
            offset = words[old_index + position]
            (length,) = HEADER.unpack_from(view, source + offset)
            span = self._span(-length - 1 if length < 0 else length)
            view[target + top:target + top + span] = view[source + offset:source + offset + span]
            words[new_index + position] = top
            top += span
        self._commit({_ACTIVE: 1 - active, _TOP: top})

    # -- the interface -------------------------------------------------------------------------------
    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        self.put_many((item,), block, timeout)

    def put_many(self, items: Iterable[Any], block: bool = True, timeout: float | None = None) -> None:
        """Put every item; waits for room as needed (the items before a Full or ShutDown were put)."""
        deadline = self._deadline(block, timeout)
        words, view = self._words, self._view
        for item in items:
            record = self._record_of(item)
            payload, spill = record
            stored = 0
            try:
                self._acquire()
                try:
                    if words[SHUT]:
                        raise ShutDown("the queue is shut down")
                    self._wait(self._not_full, PUTTERS, lambda: self._has_room(len(payload)), block, deadline,
                               _stdlib_queue.Full)
                    span = self._span(len(payload))
                    if words[_TOP] + span > self._capacity:
                        self._compact()
                    top, active, live, count, unfinished = LIVE.unpack_from(view, STATE_OFFSET)
                    start = self._arena(active) + top
                    HEADER.pack_into(view, start, -len(payload) - 1 if spill is not None else len(payload))
                    view[start + HEADER.size:start + HEADER.size + len(payload)] = payload
                    changes = {_TOP: top + span, _LIVE_BYTES: live + span, COUNT: count + 1,
                               UNFINISHED: unfinished + 1}
                    self._push(changes, self._index_base(active), count, top, item)
                    self._commit(changes)
                    stored = 1
                    self._wake_after_put(1)
                finally:
                    self._release()
            finally:
                self._settle([record], stored)

    def get_many(self, max_items: int, block: bool = True, timeout: float | None = None) -> list[Any]:
        """Take 1 to ``max_items`` items in this queue's order: waits for the first, then takes what is
        there."""
        if max_items < 1:
            raise ValueError(f"max_items must be >= 1, got {max_items}")
        words = self._words
        deadline = self._deadline(block, timeout)
        taken: list[tuple[int, bytes]] = []
        self._acquire()
        try:
            self._until_items(block, deadline)
            while words[COUNT] and len(taken) < max_items:
                top, active, live, count, unfinished = LIVE.unpack_from(self._view, STATE_OFFSET)
                changes: dict[int, int] = {}
                offset = self._pop(changes, self._index_base(active), count)
                length, payload = self._record_at(offset)
                span = self._span(-length - 1 if length < 0 else length)
                changes[COUNT] = count - 1
                changes[_LIVE_BYTES] = live - span
                if count == 1:
                    changes[_TOP] = 0
                elif offset + span == top:
                    changes[_TOP] = offset      # the newest record: the arena shrinks back (a stack's case)
                self._commit(changes)
                taken.append((length, payload))
            if words[PUTTERS]:
                pthreads.broadcast(self._not_full)
        finally:
            self._release()
        return [serialize.loads(take_spilled(payload) if length < 0 else payload) for length, payload in taken]

    def _drop_all(self) -> None:
        words = self._words
        base = self._index_base(words[_ACTIVE])
        for position in range(words[COUNT]):
            length, payload = self._record_at(words[base + position])
            if length < 0:
                take_spilled(payload)
        self._commit({_TOP: 0, _LIVE_BYTES: 0, COUNT: 0,
                      UNFINISHED: max(0, words[UNFINISHED] - words[COUNT])})


class ProcessLifoQueue(IndexedQueue):
    """``queue.LifoQueue`` across processes: the newest item first."""

    def _push(self, changes: dict[int, int], base: int, count: int, offset: int, item: Any) -> None:
        changes[base + count] = offset

    def _pop(self, changes: dict[int, int], base: int, count: int) -> int:
        return self._words[base + count - 1]


class ProcessPriorityQueue(IndexedQueue):
    """``queue.PriorityQueue`` across processes: the smallest item first (a binary heap of offsets).

    Items are compared by unpickling the records on the heap path, so a put or get costs a few
    unpickles (log2 of the size). Items that cannot be compared make ``put`` raise ``TypeError`` and
    leave the queue unchanged.
    """

    def _push(self, changes: dict[int, int], base: int, count: int, offset: int, item: Any) -> None:
        words = self._words
        position = count
        while position > 0:
            parent = (position - 1) // 2
            parent_offset = words[base + parent]
            if not item < self._load(parent_offset):
                break
            changes[base + position] = parent_offset
            position = parent
        changes[base + position] = offset

    def _pop(self, changes: dict[int, int], base: int, count: int) -> int:
        words = self._words
        smallest = words[base]
        size = count - 1
        if size == 0:
            return smallest
        last_offset = words[base + size]
        last = self._load(last_offset)
        loaded: dict[int, Any] = {}

        def key(offset: int) -> Any:
            if offset not in loaded:
                loaded[offset] = self._load(offset)
            return loaded[offset]

        position = 0
        while True:
            child = 2 * position + 1
            if child >= size:
                break
            right = child + 1
            if right < size and key(words[base + right]) < key(words[base + child]):
                child = right
            child_offset = words[base + child]
            if not key(child_offset) < last:
                break
            changes[base + position] = child_offset
            position = child
        changes[base + position] = last_offset
        return smallest
