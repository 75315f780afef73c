"""Locks, semaphores and events that work across worker processes and survive their death.

Each is a segment (``segments.py``) whose state fields hold what the stdlib object holds. A process
that dies holding a ``Lock`` does not wedge the others: the lock records its holder's pid, and an
``acquire`` that finds that process gone raises :class:`~conveyor.OwnerDiedError` (the lock is then
free again, so a retry succeeds) — the data it guarded may be half-updated, and that is for the
caller to decide. Conditions and barriers, which also keep their waiters in the segment, are in
``condition.py``.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from conveyor._backends._shared.liveness import alive
from conveyor._backends.process import pthreads
from conveyor._backends.process.segments import SegmentBacked
from conveyor._core.errors import OwnerDiedError
from conveyor._core.waiting import bounded_timeout, lock_timeout


class ProcessLock(SegmentBacked):
    """``threading.Lock`` semantics across processes; a dead holder is reported, not fatal.

    The lock is a word (the holder's pid) guarded by the segment's robust mutex, which is held only
    for the instant of a check or a change. So, as with ``threading.Lock``, any thread of any process
    may release it; and a holder that dies is found by its pid: an ``acquire`` that finds the lock
    held by a process that no longer lives (checked on arrival, then at every wait slice) frees it
    and raises :class:`~conveyor.OwnerDiedError`.
    """

    _fields = 2  # [holder pid, sleeping acquirers]
    _HOLDER, _SLEEPERS = 0, 1

    def __init__(self, *, _name: str | None = None) -> None:
        self._init_segment(_name)

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        wait = lock_timeout(blocking, timeout)
        segment, state = self._segment, self._segment.state
        pthreads.lock_internal(segment.mutex)
        try:
            if state[self._HOLDER] and wait != 0.0:
                state[self._SLEEPERS] += 1
                try:
                    segment.wait(wait, lambda: not state[self._HOLDER] or not alive(int(state[self._HOLDER])))
                finally:
                    state[self._SLEEPERS] -= 1
            holder = int(state[self._HOLDER])
            if holder:
                if alive(holder):
                    return False
                state[self._HOLDER] = 0  # free again: locked() must say so
                raise OwnerDiedError(
                    f"process {holder} died while holding this lock; the lock is free again, but what it "
                    "guarded may be half-updated")
            state[self._HOLDER] = os.getpid()
            return True
        finally:
            pthreads.unlock(segment.mutex)

    def release(self) -> None:
        segment, state = self._segment, self._segment.state
        pthreads.lock_internal(segment.mutex)
        try:
            if not state[self._HOLDER]:
                raise RuntimeError("release unlocked lock")
            state[self._HOLDER] = 0
            if state[self._SLEEPERS]:
                pthreads.signal(segment.cond)
        finally:
            pthreads.unlock(segment.mutex)

    def locked(self) -> bool:
        return self._segment.state[self._HOLDER] != 0

    def _owner_text(self) -> str:
        return f"holder={int(self._segment.state[self._HOLDER])}"

    def __repr__(self) -> str:
        """The stdlib's form: ``<unlocked conveyor.Lock object (process, NAME) at 0x...>``."""
        name = "RLock" if isinstance(self, ProcessRLock) else "Lock"
        return (f"<{'locked' if self.locked() else 'unlocked'} conveyor.{name} object "
                f"(process, {self._segment.name}) {self._owner_text()} at {id(self):#x}>")

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()

    # For Condition: release fully / take back.
    def _release_save(self) -> Any:
        self.release()

    def _acquire_restore(self, state: Any) -> None:
        self.acquire()

    def _is_owned(self) -> bool:
        return self._segment.state[self._HOLDER] == os.getpid()


class ProcessRLock(ProcessLock):
    """``threading.RLock`` semantics across processes: the holding thread may acquire again."""

    _fields = 4  # [holder pid, sleeping acquirers, holder thread id, depth]
    _THREAD, _DEPTH = 2, 3

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        state = self._segment.state
        if self._is_owned():
            state[self._DEPTH] += 1
            return True
        if not super().acquire(blocking, timeout):
            return False
        state[self._THREAD] = threading.get_ident()
        state[self._DEPTH] = 1
        return True

    def release(self) -> None:
        state = self._segment.state
        if not self._is_owned():
            raise RuntimeError("cannot release un-acquired lock")
        state[self._DEPTH] -= 1
        if state[self._DEPTH] == 0:
            state[self._THREAD] = 0
            super().release()

    def _is_owned(self) -> bool:
        state = self._segment.state
        return state[self._HOLDER] == os.getpid() and state[self._THREAD] == threading.get_ident()

    def _owner_text(self) -> str:
        state = self._segment.state
        return (f"holder={int(state[self._HOLDER])} thread={int(state[self._THREAD])} "
                f"count={int(state[self._DEPTH]) if state[self._HOLDER] else 0}")

    def _release_save(self) -> Any:
        if not self._is_owned():
            raise RuntimeError("cannot release un-acquired lock")
        depth = self._segment.state[self._DEPTH]
        self._segment.state[self._DEPTH] = 1
        self.release()
        return depth

    def _acquire_restore(self, depth: Any) -> None:
        self.acquire()
        self._segment.state[self._DEPTH] = depth


class ProcessSemaphore(SegmentBacked):
    """``threading.Semaphore`` across processes."""

    _fields = 2  # [value, bound + 1 (0: unbounded)]

    def __init__(self, value: int = 1, *, _name: str | None = None) -> None:
        if value < 0:
            raise ValueError("semaphore initial value must be >= 0")
        self._init_segment(_name)
        if _name is None:
            self._segment.state[0] = value

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        if not blocking and timeout is not None:
            raise ValueError("can't specify timeout for non-blocking acquire")
        bounded_timeout(timeout)
        segment = self._segment
        pthreads.lock_internal(segment.mutex)
        try:
            if not segment.wait(0.0 if not blocking else timeout, lambda: segment.state[0] > 0):
                return False
            segment.state[0] -= 1
            return True
        finally:
            pthreads.unlock(segment.mutex)

    def release(self, n: int = 1) -> None:
        if n < 1:
            raise ValueError("n must be one or more")
        segment = self._segment
        pthreads.lock_internal(segment.mutex)
        try:
            bound = segment.state[1] - 1  # -1: unbounded
            if bound >= 0 and segment.state[0] + n > bound:
                raise ValueError("Semaphore released too many times")
            segment.state[0] += n
            pthreads.broadcast(segment.cond)
        finally:
            pthreads.unlock(segment.mutex)

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()

    _public_name = "Semaphore"

    def _repr_state(self) -> str:
        state = self._segment.state
        bound = int(state[1]) - 1
        return f"value={int(state[0])}" + (f"/{bound}" if bound >= 0 else "")


class ProcessBoundedSemaphore(ProcessSemaphore):
    """A semaphore whose over-release raises ValueError."""

    _public_name = "BoundedSemaphore"

    def __init__(self, value: int = 1, *, _name: str | None = None) -> None:
        super().__init__(value, _name=_name)
        if _name is None:
            self._segment.state[1] = value + 1  # the bound + 1: 0 means "unbounded", yet 0 is a bound


class ProcessEvent(SegmentBacked):
    """``threading.Event`` across processes.

    ``set()`` also counts a generation: a waiter that was waiting when the event was set returns True
    even if ``clear()`` came before it woke up, as with ``threading.Event``."""

    _fields = 2  # [flag, generation: how many times set() found the flag clear]
    _FLAG, _GENERATION = 0, 1

    def __init__(self, *, _name: str | None = None) -> None:
        self._init_segment(_name)

    def is_set(self) -> bool:
        return bool(self._segment.state[self._FLAG])

    def set(self) -> None:
        segment, state = self._segment, self._segment.state
        pthreads.lock_internal(segment.mutex)
        try:
            if not state[self._FLAG]:
                state[self._FLAG] = 1
                state[self._GENERATION] += 1
            pthreads.broadcast(segment.cond)
        finally:
            pthreads.unlock(segment.mutex)

    def clear(self) -> None:
        segment = self._segment
        pthreads.lock_internal(segment.mutex)
        segment.state[self._FLAG] = 0
        pthreads.unlock(segment.mutex)

    def wait(self, timeout: float | None = None) -> bool:
        bounded_timeout(timeout)
        segment, state = self._segment, self._segment.state
        pthreads.lock_internal(segment.mutex)
        try:
            generation = state[self._GENERATION]
            return segment.wait(timeout, lambda: state[self._FLAG] != 0 or state[self._GENERATION] != generation)
        finally:
            pthreads.unlock(segment.mutex)

    _public_name = "Event"

    def _repr_state(self) -> str:
        return "set" if self.is_set() else "unset"
