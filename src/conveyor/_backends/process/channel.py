"""Queues between processes: records in shared memory under one robust mutex, changed by journaled commits.

::

    producer: pickle (no lock) ─► lock ─► copy record in ─► commit ─► unlock ─► wake a getter if one sleeps
    consumer: lock ─► copy record out ─► commit ─► unlock ─► unpickle (no lock)

    segment = [ mutex | not-empty cond | words: live fields, settings, waiter counts, journal,
                not-full cond, all-done cond | storage (the ring, or arenas and an index) ]

Why not ``multiprocessing.Queue``: its feeder thread writes to one pipe under one lock, so a producer
killed mid-message corrupts the stream or leaves the lock held for everyone. Here a record is copied in
full into free space before it becomes visible, and every change of the queue's words goes through a
*commit*: the (word, value) pairs are written to a journal, one word marks the journal valid, then they
are applied and the mark cleared. A process killed anywhere leaves either the old state or a valid
journal, which the next locker (told by the robust mutex that the owner died) applies. So a killed
producer loses only the item it was putting; a consumer killed before its commit leaves the item for
another consumer.

Waiters count themselves, so a put or get makes a system call to wake someone only when someone
sleeps; every wait is sliced (``pthreads.SLICE_SECONDS``), so a lost wake-up costs one slice, never a
hang, and Ctrl-C is seen promptly.

Records bigger than a quarter of the storage travel in a segment of their own, named in the record.
"""

from __future__ import annotations

import ctypes
import os
import pickle
import queue as _stdlib_queue
import struct
import time
import weakref
from multiprocessing import shared_memory
from typing import Any, Callable, Iterable

from conveyor._backends.process import pthreads
from conveyor._backends.process.segments import STATE_OFFSET, SegmentBacked, attach
from conveyor._core import serialize, shm
from conveyor._core.errors import ShutDown
from conveyor._core.waiting import queue_timeout

DEFAULT_CAPACITY = 4 * 1024 * 1024
BATCH_BYTES = 64 * 1024
"""``put_many``/``get_many`` move items in slices of about this many bytes of pickles per lock hold."""
_HEADER = struct.Struct("<q")       # record length; < 0: by reference (name of a segment)
_WRAP = -(1 << 62)                  # FIFO ring: "the records continue at offset 0"

# Words (int64) at the start of the state block. Words 0-4 are the live fields every commit may change.
_HEAD, _TAIL, _USED = 0, 1, 2       # the FIFO ring
_TOP, _ACTIVE, _LIVE_BYTES = 0, 1, 2  # indexed queues: arena top, active arena/index half, bytes in live records
_COUNT, _UNFINISHED = 3, 4
_SHUT, _MAXSIZE, _CAPACITY, _GETTERS, _PUTTERS, _JOINERS, _JOURNAL_LEN = range(5, 12)
_JOURNAL = 12
_JOURNAL_PAIRS = 128
_NOT_FULL = _JOURNAL + 2 * _JOURNAL_PAIRS   # a 64-byte condition variable (8 words)
_ALL_DONE = _NOT_FULL + 8
_STORAGE = _ALL_DONE + 8                     # first word of the queue kind's storage
_BUSY_SPINS = 20    # tries at the mutex before yielding: its holder runs for about a microsecond
_SPINS = 16         # yields before sleeping on the mutex or on an empty queue (saves both sides a futex call)
_LIVE = struct.Struct("<5q")
_LIVE_LOG = struct.Struct("<10q")            # the five live fields as (word, value) journal pairs


class _SharedQueue(SegmentBacked):
    """What every process queue shares: the segment, locking with recovery, commits, waits, and the
    parts of the ``queue.Queue`` interface that do not depend on the order of items."""

    def __init__(self, maxsize: int = 0, capacity: int = DEFAULT_CAPACITY, *, _name: str | None = None) -> None:
        if capacity < 4096:
            raise ValueError("capacity must be at least 4096 bytes")
        capacity = -(-capacity // 8) * 8
        self._fields = _STORAGE + self._storage_words(capacity)
        self._init_segment(_name)
        segment = self._segment
        raw = (ctypes.c_char * (STATE_OFFSET + 8 * self._fields)).from_address(segment.base)
        self._view = memoryview(raw).cast("B")   # a view of the mapping, not an export of it
        self._words = self._view[STATE_OFFSET:].cast("q")
        self._mutex = ctypes.c_void_p(segment.mutex)
        self._not_empty = segment.cond
        self._not_full = segment.base + STATE_OFFSET + 8 * _NOT_FULL
        self._all_done = segment.base + STATE_OFFSET + 8 * _ALL_DONE
        self._storage = STATE_OFFSET + 8 * _STORAGE       # byte offset of the storage in the view
        if _name is None:
            pthreads.init_cond(self._not_full)
            pthreads.init_cond(self._all_done)
            self._words[_MAXSIZE] = maxsize
            self._words[_CAPACITY] = capacity
        self._capacity = int(self._words[_CAPACITY])
        self._max_inline = self._capacity // 4
        if _name is None:
            # Items too large to sit inline each have a segment of their own, named after the queue:
            # those still queued when the maker drops the queue go with it, not at program exit.
            weakref.finalize(self, shm.unlink_prefix, f"{segment.name}q-")

    @classmethod
    def _storage_words(cls, capacity: int) -> int:
        raise NotImplementedError

    # The order-dependent part, which each queue kind defines; the shared methods below call it.
    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        raise NotImplementedError

    def get_many(self, max_items: int, block: bool = True, timeout: float | None = None) -> list[Any]:
        raise NotImplementedError

    def __reduce__(self) -> Any:
        return (attach, (type(self), self._segment.name, (self.maxsize, self._capacity)))

    @property
    def maxsize(self) -> int:
        return int(self._words[_MAXSIZE])

    @maxsize.setter
    def maxsize(self, maxsize: int) -> None:
        """As on ``queue.Queue``, the bound may be changed on a live queue (for every process); items
        already beyond a lower bound stay, and puts wait until the queue is below it."""
        self._acquire()
        try:
            self._words[_MAXSIZE] = maxsize
            if self._words[_PUTTERS]:
                pthreads.broadcast(self._not_full)
        finally:
            self._release()

    # -- locking, commits, recovery ------------------------------------------------------------------
    def _acquire(self) -> None:
        try:
            if not pthreads.try_lock(self._mutex):
                for _ in range(_BUSY_SPINS):
                    if pthreads.try_lock(self._mutex):
                        return
                for _ in range(_SPINS):  # held only for a copy: yielding once or twice usually frees it
                    os.sched_yield()
                    if pthreads.try_lock(self._mutex):
                        return
                pthreads.lock(self._segment.mutex, None)
        except pthreads.OwnerDied:
            self._recover()

    def _release(self) -> None:
        pthreads.unlock_pointer(self._mutex)

    def _recover(self) -> None:
        """The last holder died: finish its commit if it had written one, else it never happened."""
        words = self._words
        for pair in range(words[_JOURNAL_LEN]):
            words[words[_JOURNAL + 2 * pair]] = words[_JOURNAL + 2 * pair + 1]
        words[_JOURNAL_LEN] = 0

    def _commit_live(self, first: int, second: int, third: int, count: int, unfinished: int) -> None:
        """Commit the five live fields (the common case: one journal write, one flag, one apply).

        The fields are stored one aligned word at a time, never with ``struct.pack_into``: that zeroes
        its whole target before packing, so a reader without the lock (``qsize``, ``empty``) could see
        a count of 0 mid-commit, and a process killed there would leave zeros until the next locker
        recovers."""
        view, words = self._view, self._words
        _LIVE_LOG.pack_into(view, STATE_OFFSET + 8 * _JOURNAL, 0, first, 1, second, 2, third, 3, count, 4, unfinished)
        words[_JOURNAL_LEN] = 5          # the commit point: one aligned word
        words[0] = first
        words[1] = second
        words[2] = third
        words[_COUNT] = count
        words[_UNFINISHED] = unfinished
        words[_JOURNAL_LEN] = 0

    def _commit(self, changes: dict[int, int]) -> None:
        """Commit any set of word changes (word index in the state block → value)."""
        if len(changes) > _JOURNAL_PAIRS:  # pragma: no cover - the queues never change this many
            raise RuntimeError("commit too large for the journal")
        words = self._words
        flat = [number for pair in changes.items() for number in pair]
        struct.pack_into(f"<{len(flat)}q", self._view, STATE_OFFSET + 8 * _JOURNAL, *flat)
        words[_JOURNAL_LEN] = len(changes)
        for word, value in changes.items():
            words[word] = value
        words[_JOURNAL_LEN] = 0

    def _wake_after_put(self, items: int) -> None:
        if self._words[_GETTERS]:
            if items == 1:
                pthreads.signal(self._not_empty)
            else:
                pthreads.broadcast(self._not_empty)

    def _wait(self, cond: int, counter: int, ready: Callable[[], bool], block: bool, deadline: float | None,
              error: type[Exception]) -> None:
        """With the mutex held: sleep on ``cond`` until ``ready()``; raises ``error`` on timeout (at once
        when not ``block``) and ShutDown when the queue is shut down meanwhile."""
        words = self._words
        while not ready():
            if words[_SHUT]:
                raise ShutDown("the queue is shut down")
            if not block:
                raise error
            step = pthreads.SLICE_SECONDS if deadline is None else deadline - time.monotonic()
            if step <= 0:
                raise error
            words[counter] += 1
            try:
                pthreads.wait(cond, self._segment.mutex, step)
            finally:
                words[counter] -= 1
            if words[_JOURNAL_LEN]:
                self._recover()  # woke holding a mutex whose previous owner died mid-commit

    def _spin_for_items(self) -> None:
        """Before sleeping on an empty queue: yield a few times, watching the count without the lock.

        A producer is often microseconds away; catching its item this way saves both sides a futex
        system call (the producer's wake-up and the consumer's sleep)."""
        words = self._words
        for _ in range(_SPINS):
            os.sched_yield()
            if words[_COUNT]:
                return

    @staticmethod
    def _deadline(block: bool, timeout: float | None) -> float | None:
        wait = queue_timeout(block, timeout)
        return None if not block or wait is None else time.monotonic() + wait

    # -- records ----------------------------------------------------------------------------------------
    def _record_of(self, item: Any) -> tuple[bytes, Any]:
        """What goes in the storage for ``item``: its pickle, or the name of a segment holding it."""
        data = _dumps(item)
        if len(data) + _HEADER.size <= self._max_inline:
            return data, None
        spill = shared_memory.SharedMemory(name=f"{self._segment.name}q-{os.urandom(6).hex()}", create=True,
                                           size=len(data))
        shm.contents(spill)[:len(data)] = data
        return spill.name.encode(), spill

    @staticmethod
    def _settle(records: list[tuple[bytes, Any]], stored: int) -> None:
        """After a put: the segments of stored records now belong to the queue; the rest are removed."""
        for position, (_, spill) in enumerate(records):
            if spill is not None:
                spill.close()
                if position >= stored:
                    spill.unlink()

    # -- the order-independent part of the interface ----------------------------------------------------
    def put_nowait(self, item: Any) -> None:
        self.put(item, block=False)

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        return self.get_many(1, block, timeout)[0]

    def get_nowait(self) -> Any:
        return self.get(block=False)

    def task_done(self) -> None:
        """Mark one item taken by ``get`` as processed (for ``join``)."""
        self._acquire()
        try:
            words = self._words
            unfinished = words[_UNFINISHED]
            if unfinished <= 0:
                raise ValueError("task_done() called too many times")
            self._commit({_UNFINISHED: unfinished - 1})
            if unfinished == 1 and words[_JOINERS]:
                pthreads.broadcast(self._all_done)
        finally:
            self._release()

    def join(self) -> None:
        """Wait until every item put has been marked done."""
        words = self._words
        self._acquire()
        try:
            while words[_UNFINISHED]:
                words[_JOINERS] += 1
                try:
                    pthreads.wait(self._all_done, self._segment.mutex, pthreads.SLICE_SECONDS)
                finally:
                    words[_JOINERS] -= 1
                if words[_JOURNAL_LEN]:
                    self._recover()
        finally:
            self._release()

    def shutdown(self, immediate: bool = False) -> None:
        """Refuse new items; wake everyone blocked. ``immediate`` also drops what is waiting."""
        self._acquire()
        try:
            self._words[_SHUT] = 1
            if immediate:
                self._drop_all()
            for cond in (self._not_empty, self._not_full, self._all_done):
                pthreads.broadcast(cond)
        finally:
            self._release()

    def _drop_all(self) -> None:
        raise NotImplementedError

    @property
    def is_shutdown(self) -> bool:
        return bool(self._words[_SHUT])

    def qsize(self) -> int:
        return int(self._words[_COUNT])

    def empty(self) -> bool:
        return self.qsize() == 0

    def full(self) -> bool:
        maxsize = self.maxsize
        return 0 < maxsize <= self.qsize()

    def __repr__(self) -> str:
        return (f"<conveyor process {type(self).__name__} {self._segment.name} size={self.qsize()} "
                f"maxsize={self.maxsize}{' shut down' if self.is_shutdown else ''}>")


class ProcessQueue(_SharedQueue):
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
        need = _HEADER.size + size
        waste = self._capacity - tail if tail + need > self._capacity else 0
        return used + waste + need <= self._capacity

    def _write(self, tail: int, used: int, payload: bytes, by_reference: bool) -> tuple[int, int]:
        capacity, view, ring = self._capacity, self._view, self._storage
        need = _HEADER.size + len(payload)
        if tail + need > capacity:
            if capacity - tail >= _HEADER.size:
                _HEADER.pack_into(view, ring + tail, _WRAP)
            used += capacity - tail
            tail = 0
        start = ring + tail
        _HEADER.pack_into(view, start, -len(payload) - 1 if by_reference else len(payload))
        view[start + _HEADER.size:start + need] = payload
        return tail + need, used + need

    def _read(self, head: int, used: int) -> tuple[int, int, bytes, bool]:
        capacity, view, ring = self._capacity, self._view, self._storage
        if capacity - head < _HEADER.size:
            used -= capacity - head
            head = 0
        (length,) = _HEADER.unpack_from(view, ring + head)
        if length == _WRAP:
            used -= capacity - head
            head = 0
            (length,) = _HEADER.unpack_from(view, ring)
        by_reference = length < 0
        size = -length - 1 if by_reference else length
        start = ring + head + _HEADER.size
        need = _HEADER.size + size
        return head + need, used - need, view[start:start + size].tobytes(), by_reference

    def _has_room(self, size: int) -> bool:
        words = self._words
        maxsize = words[_MAXSIZE]
        return (maxsize <= 0 or words[_COUNT] < maxsize) and self._fits(words[_TAIL], words[_USED], size)

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """Put one item, waiting for room (``queue.Full`` after ``timeout``, or at once if not ``block``)."""
        data = _dumps(item)
        if len(data) + _HEADER.size > self._max_inline:
            self.put_many((item,), block, timeout)
            return
        words = self._words
        queue_timeout(block, timeout)
        self._acquire()
        try:
            if words[_SHUT]:
                raise ShutDown("the queue is shut down")
            if not self._has_room(len(data)):
                self._wait(self._not_full, _PUTTERS, lambda: self._has_room(len(data)), block,
                           self._deadline(block, timeout), _stdlib_queue.Full)
            head, tail, used, count, unfinished = _LIVE.unpack_from(self._view, STATE_OFFSET)
            tail, used = self._write(tail, used, data, False)
            self._commit_live(head, tail, used, count + 1, unfinished + 1)
            self._wake_after_put(1)
            if words[_PUTTERS] and self._has_room(0):
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
                    if words[_SHUT]:
                        raise ShutDown("the queue is shut down")
                    size = len(records[stored][0])
                    self._wait(self._not_full, _PUTTERS, lambda: self._has_room(size), block, deadline,
                               _stdlib_queue.Full)
                    head, tail, used, count, unfinished = _LIVE.unpack_from(self._view, STATE_OFFSET)
                    maxsize = words[_MAXSIZE]
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
            if not words[_COUNT]:
                self._wait(self._not_empty, _GETTERS, lambda: words[_COUNT] > 0, block, deadline,
                           _stdlib_queue.Empty)
            head, tail, used, count, unfinished = _LIVE.unpack_from(self._view, STATE_OFFSET)
            size = 0
            while count and len(taken) < max_items and size < BATCH_BYTES:
                head, used, payload, by_reference = self._read(head, used)
                taken.append((payload, by_reference))
                size += len(payload)
                count -= 1
            if count == 0:
                head = tail = used = 0
            self._commit_live(head, tail, used, count, unfinished)
            if words[_PUTTERS]:
                pthreads.broadcast(self._not_full)
        finally:
            self._release()
        return [serialize.loads(_take(payload) if by_reference else payload) for payload, by_reference in taken]

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Take the oldest item (``queue.Empty`` after ``timeout``; ShutDown once shut down and empty)."""
        words = self._words
        queue_timeout(block, timeout)
        if block and not words[_COUNT]:
            self._spin_for_items()
        self._acquire()
        try:
            if not words[_COUNT]:
                self._wait(self._not_empty, _GETTERS, lambda: words[_COUNT] > 0, block,
                           self._deadline(block, timeout), _stdlib_queue.Empty)
            head, tail, used, count, unfinished = _LIVE.unpack_from(self._view, STATE_OFFSET)
            head, used, payload, by_reference = self._read(head, used)
            if count == 1:
                head = tail = used = 0
            self._commit_live(head, tail, used, count - 1, unfinished)
            if words[_PUTTERS]:
                pthreads.signal(self._not_full)  # room for one: wake one (it passes the baton on)
        finally:
            self._release()
        return serialize.loads(_take(payload) if by_reference else payload)

    def _drop_all(self) -> None:
        head, tail, used, count, unfinished = _LIVE.unpack_from(self._view, STATE_OFFSET)
        dropped = count
        while count:
            head, used, payload, by_reference = self._read(head, used)
            if by_reference:
                _take(payload)
            count -= 1
        self._commit_live(0, 0, 0, 0, max(0, unfinished - dropped))



class _IndexedQueue(_SharedQueue):
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
        return _STORAGE + half * self._entries

    def _arena(self, half: int) -> int:
        return self._arenas + half * self._capacity

    @staticmethod
    def _span(size: int) -> int:
        return _HEADER.size + -(-size // 8) * 8

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
        (length,) = _HEADER.unpack_from(self._view, start)
        size = -length - 1 if length < 0 else length
        return length, self._view[start + _HEADER.size:start + _HEADER.size + size].tobytes()

    def _has_room(self, size: int) -> bool:
        words = self._words
        maxsize = words[_MAXSIZE]
        return ((maxsize <= 0 or words[_COUNT] < maxsize) and words[_COUNT] < self._entries
                and words[_LIVE_BYTES] + self._span(size) <= self._capacity)

    def _compact(self) -> None:
        """Copy the live records to the other arena half, then switch to it in one commit."""
        words, view = self._words, self._view
        active = words[_ACTIVE]
        source, target = self._arena(active), self._arena(1 - active)
        old_index, new_index = self._index_base(active), self._index_base(1 - active)
        top = 0
        for position in range(words[_COUNT]):
            offset = words[old_index + position]
            (length,) = _HEADER.unpack_from(view, source + offset)
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
                    if words[_SHUT]:
                        raise ShutDown("the queue is shut down")
                    self._wait(self._not_full, _PUTTERS, lambda: self._has_room(len(payload)), block, deadline,
                               _stdlib_queue.Full)
                    span = self._span(len(payload))
                    if words[_TOP] + span > self._capacity:
                        self._compact()
                    top, active, live, count, unfinished = _LIVE.unpack_from(view, STATE_OFFSET)
                    start = self._arena(active) + top
                    _HEADER.pack_into(view, start, -len(payload) - 1 if spill is not None else len(payload))
                    view[start + _HEADER.size:start + _HEADER.size + len(payload)] = payload
                    changes = {_TOP: top + span, _LIVE_BYTES: live + span, _COUNT: count + 1,
                               _UNFINISHED: unfinished + 1}
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
            if not words[_COUNT]:
                self._wait(self._not_empty, _GETTERS, lambda: words[_COUNT] > 0, block, deadline,
                           _stdlib_queue.Empty)
            while words[_COUNT] and len(taken) < max_items:
                top, active, live, count, unfinished = _LIVE.unpack_from(self._view, STATE_OFFSET)
                changes: dict[int, int] = {}
                offset = self._pop(changes, self._index_base(active), count)
                length, payload = self._record_at(offset)
                span = self._span(-length - 1 if length < 0 else length)
                changes[_COUNT] = count - 1
                changes[_LIVE_BYTES] = live - span
                if count == 1:
                    changes[_TOP] = 0
                elif offset + span == top:
                    changes[_TOP] = offset      # the newest record: the arena shrinks back (a stack's case)
                self._commit(changes)
                taken.append((length, payload))
            if words[_PUTTERS]:
                pthreads.broadcast(self._not_full)
        finally:
            self._release()
        return [serialize.loads(_take(payload) if length < 0 else payload) for length, payload in taken]

    def _drop_all(self) -> None:
        words = self._words
        base = self._index_base(words[_ACTIVE])
        for position in range(words[_COUNT]):
            length, payload = self._record_at(words[base + position])
            if length < 0:
                _take(payload)
        self._commit({_TOP: 0, _LIVE_BYTES: 0, _COUNT: 0,
                      _UNFINISHED: max(0, words[_UNFINISHED] - words[_COUNT])})


class ProcessLifoQueue(_IndexedQueue):
    """``queue.LifoQueue`` across processes: the newest item first."""

    def _push(self, changes: dict[int, int], base: int, count: int, offset: int, item: Any) -> None:
        changes[base + count] = offset

    def _pop(self, changes: dict[int, int], base: int, count: int) -> int:
        return self._words[base + count - 1]


class ProcessPriorityQueue(_IndexedQueue):
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

_PLAIN = (int, float, str, bytes, bool, type(None))


def _dumps(item: Any) -> bytes:
    """The C pickler for plain values (several times faster for small items), cloudpickle otherwise."""
    if type(item) in _PLAIN:
        return pickle.dumps(item, serialize.PROTOCOL)
    return serialize.dumps(item)


def _take(name: bytes) -> bytes:
    """Read and remove a by-reference record's own segment."""
    spill = shared_memory.SharedMemory(name=name.decode())
    try:
        return bytes(shm.contents(spill))
    finally:
        spill.close()
        spill.unlink()
