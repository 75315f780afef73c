"""What every process queue shares: records in shared memory under one robust mutex, changed by journaled commits.

The queue kinds build on it: ``channel.py`` (FIFO, a ring) and ``ordered_queues.py`` (LIFO and
priority, an arena with an index).

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
import queue as _stdlib_queue
import pickle
import struct
import time
import weakref
from collections.abc import Callable
from multiprocessing import shared_memory
from typing import Any

from conveyor._backends.process import pthreads
from conveyor._backends.process.segments import STATE_OFFSET, SegmentBacked, attach
from conveyor._core import serialize, shm
from conveyor._core.errors import ShutDown
from conveyor._core.waiting import queue_timeout

DEFAULT_CAPACITY = 4 * 1024 * 1024
BATCH_BYTES = 64 * 1024
"""``put_many``/``get_many`` move items in slices of about this many bytes of pickles per lock hold."""
HEADER = struct.Struct("<q")       # record length; < 0: by reference (name of a segment)

# Words (int64) at the start of the state block. Words 0-4 are the live fields every commit may change:
# three that each queue kind names for its storage (channel.py, ordered_queues.py), then these two.
COUNT, UNFINISHED = 3, 4
SHUT, MAXSIZE, CAPACITY, GETTERS, PUTTERS, JOINERS, JOURNAL_LEN = range(5, 12)
JOURNAL = 12
JOURNAL_PAIRS = 128
NOT_FULL = JOURNAL + 2 * JOURNAL_PAIRS   # a 64-byte condition variable (8 words)
ALL_DONE = NOT_FULL + 8
STORAGE = ALL_DONE + 8                     # first word of the queue kind's storage
_BUSY_SPINS = 20    # tries at the mutex before yielding: its holder runs for about a microsecond
_SPINS = 16         # yields before sleeping on the mutex or on an empty queue (saves both sides a futex call)
LIVE = struct.Struct("<5q")
LIVE_LOG = struct.Struct("<10q")            # the five live fields as (word, value) journal pairs



class SharedQueue(SegmentBacked):
    """What every process queue shares: the segment, locking with recovery, commits, waits, and the
    parts of the ``queue.Queue`` interface that do not depend on the order of items."""

    def __init__(self, maxsize: int = 0, capacity: int = DEFAULT_CAPACITY, *, _name: str | None = None) -> None:
        if capacity < 4096:
            raise ValueError("capacity must be at least 4096 bytes")
        capacity = -(-capacity // 8) * 8
        self._fields = STORAGE + self._storage_words(capacity)
        self._init_segment(_name)
        segment = self._segment
        raw = (ctypes.c_char * (STATE_OFFSET + 8 * self._fields)).from_address(segment.base)
        self._view = memoryview(raw).cast("B")   # a view of the mapping, not an export of it
        self._words = self._view[STATE_OFFSET:].cast("q")
        self._mutex = ctypes.c_void_p(segment.mutex)
        self._not_empty = segment.cond
        self._not_full = segment.base + STATE_OFFSET + 8 * NOT_FULL
        self._all_done = segment.base + STATE_OFFSET + 8 * ALL_DONE
        self._storage = STATE_OFFSET + 8 * STORAGE       # byte offset of the storage in the view
        if _name is None:
            pthreads.init_cond(self._not_full)
            pthreads.init_cond(self._all_done)
            self._words[MAXSIZE] = maxsize
            self._words[CAPACITY] = capacity
        self._capacity = int(self._words[CAPACITY])
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
        return int(self._words[MAXSIZE])

    @maxsize.setter
    def maxsize(self, maxsize: int) -> None:
        """As on ``queue.Queue``, the bound may be changed on a live queue (for every process); items
        already beyond a lower bound stay, and puts wait until the queue is below it."""
        self._acquire()
        try:
            self._words[MAXSIZE] = maxsize
            if self._words[PUTTERS]:
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
        for pair in range(words[JOURNAL_LEN]):
            words[words[JOURNAL + 2 * pair]] = words[JOURNAL + 2 * pair + 1]
        words[JOURNAL_LEN] = 0

    def _commit_live(self, first: int, second: int, third: int, count: int, unfinished: int) -> None:
        """Commit the five live fields (the common case: one journal write, one flag, one apply).

        The fields are stored one aligned word at a time, never with ``struct.pack_into``: that zeroes
        its whole target before packing, so a reader without the lock (``qsize``, ``empty``) could see
        a count of 0 mid-commit, and a process killed there would leave zeros until the next locker
        recovers."""
        view, words = self._view, self._words
        LIVE_LOG.pack_into(view, STATE_OFFSET + 8 * JOURNAL, 0, first, 1, second, 2, third, 3, count, 4, unfinished)
        words[JOURNAL_LEN] = 5          # the commit point: one aligned word
        words[0] = first
        words[1] = second
        words[2] = third
        words[COUNT] = count
        words[UNFINISHED] = unfinished
        words[JOURNAL_LEN] = 0

    def _commit(self, changes: dict[int, int]) -> None:
        """Commit any set of word changes (word index in the state block → value)."""
        if len(changes) > JOURNAL_PAIRS:  # pragma: no cover - the queues never change this many
            raise RuntimeError("commit too large for the journal")
        words = self._words
        flat = [number for pair in changes.items() for number in pair]
        struct.pack_into(f"<{len(flat)}q", self._view, STATE_OFFSET + 8 * JOURNAL, *flat)
        words[JOURNAL_LEN] = len(changes)
        for word, value in changes.items():
            words[word] = value
        words[JOURNAL_LEN] = 0

    def _wake_after_put(self, items: int) -> None:
        if self._words[GETTERS]:
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
            if words[SHUT]:
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
            if words[JOURNAL_LEN]:
                self._recover()  # woke holding a mutex whose previous owner died mid-commit

    def _until_items(self, block: bool, deadline: float | None) -> None:
        """With the mutex held: wait for an item to take (``queue.Empty`` in time, ShutDown)."""
        words = self._words
        if not words[COUNT]:
            self._wait(self._not_empty, GETTERS, lambda: words[COUNT] > 0, block, deadline, _stdlib_queue.Empty)

    def _spin_for_items(self) -> None:
        """Before sleeping on an empty queue: yield a few times, watching the count without the lock.

        A producer is often microseconds away; catching its item this way saves both sides a futex
        system call (the producer's wake-up and the consumer's sleep)."""
        words = self._words
        for _ in range(_SPINS):
            os.sched_yield()
            if words[COUNT]:
                return

    @staticmethod
    def _deadline(block: bool, timeout: float | None) -> float | None:
        wait = queue_timeout(block, timeout)
        return None if not block or wait is None else time.monotonic() + wait

    # -- records ----------------------------------------------------------------------------------------
    def _record_of(self, item: Any) -> tuple[bytes, Any]:
        """What goes in the storage for ``item``: its pickle, or the name of a segment holding it."""
        data = dumps_item(item)
        if len(data) + HEADER.size <= self._max_inline:
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
            unfinished = words[UNFINISHED]
            if unfinished <= 0:
                raise ValueError("task_done() called too many times")
            self._commit({UNFINISHED: unfinished - 1})
            if unfinished == 1 and words[JOINERS]:
                pthreads.broadcast(self._all_done)
        finally:
            self._release()

    def join(self) -> None:
        """Wait until every item put has been marked done."""
        words = self._words
        self._acquire()
        try:
            while words[UNFINISHED]:
                words[JOINERS] += 1
                try:
                    pthreads.wait(self._all_done, self._segment.mutex, pthreads.SLICE_SECONDS)
                finally:
                    words[JOINERS] -= 1
                if words[JOURNAL_LEN]:
                    self._recover()
        finally:
            self._release()

    def shutdown(self, immediate: bool = False) -> None:
        """Refuse new items; wake everyone blocked. ``immediate`` also drops what is waiting."""
        self._acquire()
        try:
            self._words[SHUT] = 1
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
        return bool(self._words[SHUT])

    def qsize(self) -> int:
        return int(self._words[COUNT])

    def empty(self) -> bool:
        return self.qsize() == 0

    def full(self) -> bool:
        maxsize = self.maxsize
        return 0 < maxsize <= self.qsize()

    def __repr__(self) -> str:
        return (f"<conveyor process {type(self).__name__} {self._segment.name} size={self.qsize()} "
                f"maxsize={self.maxsize}{' shut down' if self.is_shutdown else ''}>")


_PLAIN = (int, float, str, bytes, bool, type(None))


def dumps_item(item: Any) -> bytes:
    """The C pickler for plain values (several times faster for small items), cloudpickle otherwise."""
    if type(item) in _PLAIN:
        return pickle.dumps(item, serialize.PROTOCOL)
    return serialize.dumps(item)


def take_spilled(name: bytes) -> bytes:
    """Read and remove a by-reference record's own segment."""
    spill = shared_memory.SharedMemory(name=name.decode())
    try:
        return bytes(shm.contents(spill))
    finally:
        spill.close()
        spill.unlink()
