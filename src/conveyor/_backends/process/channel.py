"""A first-in-first-out queue between processes: a ring buffer in shared memory under a robust mutex.

::

    producer: pickle (no lock) ─► lock ─► copy record into the ring ─► commit ─► unlock ─► notify
    consumer: lock ─► copy record out of the ring ─► commit ─► unlock ─► unpickle (no lock)

    segment = [ mutex | condition | state fields | journal | ring of records: [length][bytes]... ]

Why not ``multiprocessing.Queue``: its feeder thread writes to one pipe under one lock, so a producer
killed mid-message corrupts the stream or leaves the lock held for everyone. Here a record is copied in
full before it becomes visible, and every change of the queue's fields goes through a one-word
*commit*: the new values are written to a journal, a flag marks the journal valid, then they are
applied. A process killed anywhere leaves either the old state or a valid journal, which the next
locker (told by the robust mutex that the owner died) applies. So a killed producer loses only the
item it was putting; a consumer killed before its commit leaves the item for another consumer.

Records bigger than a quarter of the ring travel in a segment of their own, named in the ring.
"""

from __future__ import annotations

import ctypes
import pickle
import queue as _stdlib_queue
import struct
import time
from multiprocessing import shared_memory
from typing import Any, Iterable

from conveyor._backends.process import pthreads
from conveyor._backends.process.sync import _STATE, _attach, _Shared
from conveyor._core import serialize
from conveyor._core.errors import ShutDown

DEFAULT_CAPACITY = 4 * 1024 * 1024
_HEADER = struct.Struct("<q")       # record length; WRAP marks "continue at offset 0"; < 0: by reference
_WRAP = -(1 << 62)

# State fields (int64): live values, then their journal copy.
_HEAD, _TAIL, _USED, _COUNT, _UNFINISHED, _SHUT, _MAXSIZE, _CAPACITY, _WAITING = range(9)
_LIVE = (_HEAD, _TAIL, _USED, _COUNT, _UNFINISHED)
_JOURNAL_VALID = 9
_JOURNAL = 10                        # 5 fields: head, tail, used, count, unfinished
_FIELDS = _JOURNAL + len(_LIVE)


class ProcessQueue(_Shared):
    """``queue.Queue`` semantics across processes, plus ``shutdown`` and ``put_many``/``get_many``.

    Args:
        maxsize: at most this many items wait; ``<= 0``: no limit but the ring's bytes.
        capacity: bytes of the ring buffer (items that do not fit wait for room).
    """

    def __init__(self, maxsize: int = 0, capacity: int = DEFAULT_CAPACITY, *, _name: str | None = None) -> None:
        if capacity < 4096:
            raise ValueError("capacity must be at least 4096 bytes")
        self._fields = _FIELDS + capacity // 8 + 1
        self._init_segment(_name)
        self._state = self._segment.state
        self._ring = self._segment.base + _STATE + 8 * _FIELDS
        if _name is None:
            self._state[_MAXSIZE] = maxsize
            self._state[_CAPACITY] = capacity
        self._capacity = int(self._state[_CAPACITY])

    def _args(self) -> tuple[Any, ...]:
        return ()

    def __reduce__(self) -> Any:
        return (_attach, (type(self), self._segment.name, (self.maxsize, self._capacity)))

    @property
    def maxsize(self) -> int:
        return int(self._state[_MAXSIZE])

    # -- locking with recovery ----------------------------------------------------------------------
    def _lock(self) -> None:
        try:
            pthreads.lock(self._segment.mutex, None)
        except pthreads.OwnerDied:
            self._recover()

    def _unlock(self) -> None:
        pthreads.unlock(self._segment.mutex)

    def _recover(self) -> None:
        """The last holder died: finish its commit if it had written one, else it never happened."""
        state = self._state
        if state[_JOURNAL_VALID]:
            for offset, field in enumerate(_LIVE):
                state[field] = state[_JOURNAL + offset]
            state[_JOURNAL_VALID] = 0

    def _commit(self, head: int, tail: int, used: int, count: int, unfinished: int) -> None:
        state = self._state
        for offset, value in enumerate((head, tail, used, count, unfinished)):
            state[_JOURNAL + offset] = value
        state[_JOURNAL_VALID] = 1        # the commit point: one aligned word
        for offset, field in enumerate(_LIVE):
            state[field] = state[_JOURNAL + offset]
        state[_JOURNAL_VALID] = 0
        if state[_WAITING]:  # a futex wake is a system call: only when someone sleeps
            pthreads.broadcast(self._segment.cond)

    # -- ring records (with the mutex held) ------------------------------------------------------------
    def _record_of(self, data: bytes) -> tuple[bytes, Any]:
        """What goes in the ring for ``data``: the bytes, or the name of a segment holding them."""
        if len(data) + _HEADER.size <= self._capacity // 4:
            return data, None
        spill = shared_memory.SharedMemory(create=True, size=len(data))
        spill.buf[:len(data)] = data
        return spill.name.encode(), spill

    def _fits(self, tail: int, used: int, size: int) -> bool:
        need = _HEADER.size + size
        waste = self._capacity - tail if tail + need > self._capacity else 0
        return used + waste + need <= self._capacity

    def _write(self, tail: int, used: int, payload: bytes, by_reference: bool) -> tuple[int, int]:
        need = _HEADER.size + len(payload)
        if tail + need > self._capacity:
            if self._capacity - tail >= _HEADER.size:
                ctypes.memmove(self._ring + tail, _HEADER.pack(_WRAP), _HEADER.size)
            used += self._capacity - tail
            tail = 0
        length = -len(payload) - 1 if by_reference else len(payload)
        ctypes.memmove(self._ring + tail, _HEADER.pack(length), _HEADER.size)
        ctypes.memmove(self._ring + tail + _HEADER.size, payload, len(payload))
        return tail + need, used + need

    def _read(self, head: int, used: int) -> tuple[int, int, bytes, bool]:
        if self._capacity - head < _HEADER.size:
            used -= self._capacity - head
            head = 0
        (length,) = _HEADER.unpack(ctypes.string_at(self._ring + head, _HEADER.size))
        if length == _WRAP:
            used -= self._capacity - head
            head = 0
            (length,) = _HEADER.unpack(ctypes.string_at(self._ring, _HEADER.size))
        by_reference = length < 0
        size = -length - 1 if by_reference else length
        payload = ctypes.string_at(self._ring + head + _HEADER.size, size)
        need = _HEADER.size + size
        return head + need, used - need, payload, by_reference

    # -- waiting ----------------------------------------------------------------------------------------
    def _wait(self, ready: Any, block: bool, timeout: float | None, error: type[Exception]) -> None:
        if not block:
            if not ready():
                raise error
            return
        if timeout is not None and timeout < 0:
            raise ValueError("'timeout' must be a non-negative number")
        end = None if timeout is None else time.monotonic() + timeout
        while not ready():
            if self._state[_SHUT]:
                raise ShutDown("the queue is shut down")
            remaining = pthreads.SLICE_SECONDS if end is None else end - time.monotonic()
            if remaining <= 0:
                raise error
            self._state[_WAITING] += 1
            pthreads.wait(self._segment.cond, self._segment.mutex, remaining)
            self._state[_WAITING] -= 1
            if self._state[_JOURNAL_VALID]:
                self._recover()  # woke holding a mutex whose previous owner died mid-commit

    # -- the queue interface ------------------------------------------------------------------------------
    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        self.put_many([item], block, timeout)

    def put_nowait(self, item: Any) -> None:
        self.put(item, block=False)

    def put_many(self, items: Iterable[Any], block: bool = True, timeout: float | None = None) -> None:
        """Put every item in order; waits for room as needed (items before a Full/ShutDown were put)."""
        records = [self._record_of(_dumps(item)) for item in items]
        end = None if timeout is None else time.monotonic() + timeout
        state = self._state
        position = 0
        try:
            self._lock()
            try:
                while position < len(records):
                    if state[_SHUT]:
                        raise ShutDown("the queue is shut down")
                    payload = records[position][0]

                    def room(payload: bytes = payload) -> bool:
                        if state[_SHUT]:
                            return True
                        maxsize = state[_MAXSIZE]
                        return (maxsize <= 0 or state[_COUNT] < maxsize) and self._fits(
                            int(state[_TAIL]), int(state[_USED]), len(payload))

                    remaining = None if end is None else max(0.0, end - time.monotonic())
                    self._wait(room, block, remaining, _stdlib_queue.Full)
                    if state[_SHUT]:
                        raise ShutDown("the queue is shut down")
                    head, tail, used = int(state[_HEAD]), int(state[_TAIL]), int(state[_USED])
                    count, unfinished = int(state[_COUNT]), int(state[_UNFINISHED])
                    while position < len(records):
                        payload, spill = records[position]
                        if (state[_MAXSIZE] > 0 and count >= state[_MAXSIZE]) or not self._fits(tail, used, len(payload)):
                            break
                        tail, used = self._write(tail, used, payload, spill is not None)
                        count += 1
                        unfinished += 1
                        position += 1
                    self._commit(head, tail, used, count, unfinished)
            finally:
                self._unlock()
        finally:
            for payload, spill in records[position:]:
                if spill is not None:
                    spill.close()
                    spill.unlink()
            for payload, spill in records[:position]:
                if spill is not None:
                    spill.close()  # the consumer unlinks it

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        return self.get_many(1, block, timeout)[0]

    def get_nowait(self) -> Any:
        return self.get(block=False)

    def get_many(self, max_items: int, block: bool = True, timeout: float | None = None) -> list[Any]:
        """Take 1 to ``max_items`` items: waits for the first, then takes what is there."""
        if max_items < 1:
            raise ValueError(f"max_items must be >= 1, got {max_items}")
        state = self._state
        taken: list[tuple[bytes, bool]] = []
        self._lock()
        try:
            if state[_SHUT] and not state[_COUNT]:
                raise ShutDown("the queue is shut down and empty")
            self._wait(lambda: state[_COUNT] > 0, block, timeout, _stdlib_queue.Empty)
            head, used, count = int(state[_HEAD]), int(state[_USED]), int(state[_COUNT])
            while count and len(taken) < max_items:
                head, used, payload, by_reference = self._read(head, used)
                taken.append((payload, by_reference))
                count -= 1
            tail = int(state[_TAIL])
            if count == 0:
                head = tail = used = 0
            self._commit(head, tail, used, count, int(state[_UNFINISHED]))
        finally:
            self._unlock()
        return [serialize.loads(_take(payload) if by_reference else payload) for payload, by_reference in taken]

    def task_done(self) -> None:
        state = self._state
        self._lock()
        try:
            if state[_UNFINISHED] <= 0:
                raise ValueError("task_done() called too many times")
            self._commit(int(state[_HEAD]), int(state[_TAIL]), int(state[_USED]), int(state[_COUNT]),
                         int(state[_UNFINISHED]) - 1)
        finally:
            self._unlock()

    def join(self) -> None:
        state = self._state
        self._lock()
        try:
            while state[_UNFINISHED]:
                state[_WAITING] += 1
                pthreads.wait(self._segment.cond, self._segment.mutex, pthreads.SLICE_SECONDS)
                state[_WAITING] -= 1
        finally:
            self._unlock()

    def shutdown(self, immediate: bool = False) -> None:
        state = self._state
        self._lock()
        try:
            state[_SHUT] = 1
            if immediate:
                head, used, count = int(state[_HEAD]), int(state[_USED]), int(state[_COUNT])
                while count:
                    head, used, payload, by_reference = self._read(head, used)
                    if by_reference:
                        _take(payload)
                    count -= 1
                dropped = int(state[_COUNT])
                self._commit(0, 0, 0, 0, max(0, int(state[_UNFINISHED]) - dropped))
            pthreads.broadcast(self._segment.cond)
        finally:
            self._unlock()

    @property
    def is_shutdown(self) -> bool:
        return bool(self._state[_SHUT])

    def qsize(self) -> int:
        return int(self._state[_COUNT])

    def empty(self) -> bool:
        return self.qsize() == 0

    def full(self) -> bool:
        maxsize = self.maxsize
        return 0 < maxsize <= self.qsize()


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
        return bytes(spill.buf)
    finally:
        spill.close()
        spill.unlink()

