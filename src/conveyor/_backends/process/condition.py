"""Conditions and barriers across worker processes: their waiters live in the segment, in slots.

A waiter's slot (its pid, a sequence number, the mark ``notify`` leaves) is what lets ``notify(n)``
wake the longest waiters first and lets a waiter that died be told apart from one that waits; see
each class. Built on the segments of ``segments.py`` and the locks of ``sync.py``.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from conveyor._backends._shared.liveness import alive
from conveyor._backends.process import pthreads
from conveyor._backends.process.segments import SegmentBacked, attach
from conveyor._backends.process.sync import ProcessLock, ProcessRLock
from conveyor._core.waiting import bounded_timeout, wait_for

_CONDITION_SLOTS = 64
"""How many waiters of one process Condition have a slot of their own (and so a place in the notify
order); the segment's size is fixed when it is made."""


class ProcessCondition(SegmentBacked):
    """``threading.Condition`` across processes, around a process Lock or RLock.

    As with ``threading.Condition``, ``notify(n)`` wakes up to ``n`` of the waiters that are waiting
    at the time of the call, those waiting longest first, and a ``wait()`` that starts after it never
    takes that wake-up. Each waiter holds a slot in the shared state: its pid, a sequence number drawn
    when it started waiting, and the mark that ``notify`` leaves there; it returns True only when its
    own slot was marked (also when that happened just as its timeout ran out: it was notified in time).

    A waiter whose process died is skipped by ``notify``, and its slot taken back. One that died, or
    was interrupted (Ctrl-C), after it was marked but before it took the wake-up passes it on to the
    longest waiting of those that were already waiting when that ``notify`` was made, if any.

    There are :data:`_CONDITION_SLOTS` slots. A waiter that finds none free (after taking back the
    slots of dead waiters) waits in overflow instead, where every ``notify()`` wakes all of the
    overflow waiters: some of those wake-ups are spurious, none is ever lost.
    """

    _SLOTS = _CONDITION_SLOTS
    # [last sequence number drawn, overflow waiters, overflow generation, then per slot: pid, seq, mark]
    _NEXT, _OVERFLOW, _OVERFLOW_GEN, _TABLE = 0, 1, 2, 3
    _PID, _SEQ, _MARK = 0, 1, 2
    _fields = _TABLE + 3 * _SLOTS

    def __init__(self, lock: Any = None, *, _name: str | None = None, _lock: Any = None) -> None:
        self._init_segment(_name)
        lock = lock if lock is not None else _lock
        if lock is None:
            lock = ProcessRLock()
        if not isinstance(lock, ProcessLock):
            raise TypeError("a process Condition needs a lock made by the same context (ctx.Lock() or ctx.RLock())")
        self._lock = lock
        self.acquire = lock.acquire
        self.release = lock.release

    def _args(self) -> tuple[Any, ...]:
        return ()

    def __reduce__(self) -> Any:
        return (attach, (ProcessCondition, self._segment.name, (), {"_lock": self._lock}))

    def __enter__(self) -> bool:
        return self._lock.__enter__()

    def __exit__(self, *exc: Any) -> None:
        self._lock.__exit__(*exc)

    _public_name = "Condition"

    def _repr_state(self) -> str:
        return repr(self._lock)

    # All of the helpers below run with the segment's mutex held.

    def _enter(self) -> tuple[int, int]:
        """Start waiting: ``(slot, sequence number)``, or ``(-1, overflow generation)`` without a slot."""
        state = self._segment.state
        slot = self._free_slot()
        if slot < 0:
            self._sweep(everyone=True)
            slot = self._free_slot()
        if slot < 0:
            state[self._OVERFLOW] += 1
            return -1, int(state[self._OVERFLOW_GEN])
        seq = int(state[self._NEXT]) + 1
        state[self._NEXT] = seq
        base = self._TABLE + 3 * slot
        state[base + self._MARK] = 0
        state[base + self._SEQ] = seq
        state[base + self._PID] = os.getpid()  # last: the slot is taken from here on
        return slot, seq

    def _free_slot(self) -> int:
        state = self._segment.state
        for slot in range(self._SLOTS):
            if not state[self._TABLE + 3 * slot + self._PID]:
                return slot
        return -1

    def _mine(self, base: int, seq: int) -> bool:
        state = self._segment.state
        return state[base + self._SEQ] == seq and state[base + self._PID] == os.getpid()

    def _notified(self, ticket: tuple[int, int]) -> bool:
        slot, number = ticket
        state = self._segment.state
        if slot < 0:
            return state[self._OVERFLOW_GEN] != number
        base = self._TABLE + 3 * slot
        # A slot no longer ours (only if our pid was taken for dead) counts as a wake-up: waking
        # spuriously is better than sleeping through a notify.
        return not self._mine(base, number) or state[base + self._MARK] != 0

    def _leave(self, ticket: tuple[int, int], interrupted: bool) -> bool:
        """Stop waiting; whether this waiter was notified. An interrupted waiter passes its wake-up on."""
        slot, number = ticket
        state = self._segment.state
        if slot < 0:
            state[self._OVERFLOW] = max(0, int(state[self._OVERFLOW]) - 1)
            return state[self._OVERFLOW_GEN] != number
        base = self._TABLE + 3 * slot
        if not self._mine(base, number):
            return True
        mark = int(state[base + self._MARK])
        state[base + self._PID] = 0
        if mark and interrupted and self._release(1, mark):
            pthreads.broadcast(self._segment.cond)
        return mark != 0

    def _release(self, n: int, mark: int) -> int:
        """Mark the ``n`` longest waiting live, unmarked waiters whose number is at most ``mark``
        (those already waiting when the notify was made); the slots of dead ones are taken back.
        Returns how many were marked."""
        state, me = self._segment.state, os.getpid()
        waiting = []
        for slot in range(self._SLOTS):
            base = self._TABLE + 3 * slot
            pid = int(state[base + self._PID])
            if pid and not state[base + self._MARK] and state[base + self._SEQ] <= mark:
                waiting.append((int(state[base + self._SEQ]), base, pid))
        waiting.sort()
        living = {me: True}
        marked = 0
        for _, base, pid in waiting:
            if marked >= n:
                break
            if pid not in living:
                living[pid] = alive(pid)
            if not living[pid]:
                state[base + self._PID] = 0  # died waiting: it was never notified, nothing to pass on
                continue
            state[base + self._MARK] = mark
            marked += 1
        return marked

    def _sweep(self, everyone: bool) -> None:
        """Take back the slots of dead waiters (only of the notified ones unless ``everyone``); a
        wake-up that a dead waiter never took goes to another waiter of its time."""
        state, me = self._segment.state, os.getpid()
        living: dict[int, bool] = {me: True}
        passed = 0
        for slot in range(self._SLOTS):
            base = self._TABLE + 3 * slot
            pid = int(state[base + self._PID])
            mark = int(state[base + self._MARK])
            if not pid or not (everyone or mark):
                continue
            if pid not in living:
                living[pid] = alive(pid)
            if not living[pid]:
                state[base + self._PID] = 0
                if mark:
                    passed += self._release(1, mark)
        if passed:
            pthreads.broadcast(self._segment.cond)

    def wait(self, timeout: float | None = None) -> bool:
        if not self._lock._is_owned():
            raise RuntimeError("cannot wait on un-acquired lock")
        bounded_timeout(timeout)
        segment = self._segment
        end = None if timeout is None else time.monotonic() + timeout
        ticket: tuple[int, int] | None = None
        left = False
        try:
            pthreads.lock_internal(segment.mutex)
            try:
                ticket = self._enter()  # while we hold the lock: no notify can come in between
            finally:
                pthreads.unlock(segment.mutex)
            saved = self._lock._release_save()
            try:
                pthreads.lock_internal(segment.mutex)
                try:
                    while not self._notified(ticket):
                        remaining = pthreads.SLICE_SECONDS if end is None else end - time.monotonic()
                        if remaining <= 0:
                            break
                        if not pthreads.wait(segment.cond, segment.mutex, remaining):
                            self._sweep(everyone=False)  # a quiet slice: did a notified waiter die?
                    left = True
                    return self._leave(ticket, interrupted=False)
                finally:
                    if not left:  # Ctrl-C while waiting: no longer a waiter; a wake-up goes on
                        left = True
                        self._leave(ticket, interrupted=True)
                    pthreads.unlock(segment.mutex)
            finally:
                self._lock._acquire_restore(saved)
        finally:
            if ticket is not None and not left:  # interrupted before getting back in
                pthreads.lock_internal(segment.mutex)
                try:
                    self._leave(ticket, interrupted=True)
                finally:
                    pthreads.unlock(segment.mutex)

    def wait_for(self, predicate: Any, timeout: float | None = None) -> Any:
        return wait_for(self.wait, predicate, timeout)

    def notify(self, n: int = 1) -> None:
        if not self._lock._is_owned():
            raise RuntimeError("cannot notify on un-acquired lock")
        if n <= 0:
            return
        segment, state = self._segment, self._segment.state
        pthreads.lock_internal(segment.mutex)
        try:
            woken = self._release(n, int(state[self._NEXT]))
            if state[self._OVERFLOW] > 0:
                state[self._OVERFLOW_GEN] += 1
                woken += 1
            if woken:
                pthreads.broadcast(segment.cond)
        finally:
            pthreads.unlock(segment.mutex)

    def notify_all(self) -> None:
        self.notify(1 << 62)


class ProcessBarrier(SegmentBacked):
    """``threading.Barrier`` across processes.

    A party that dies while the others wait breaks the barrier for them (``BrokenBarrierError``)
    instead of leaving them waiting forever: waiters check each other's pids at every wait slice.
    """

    # [parties, count, generation, broken, reset generation + 1, pid of each waiting party...]
    _PARTIES, _COUNT, _GENERATION, _BROKEN, _RESET = range(5)

    def __init__(self, parties: int, action: Any = None, timeout: float | None = None, *,
                 _name: str | None = None) -> None:
        if parties < 1:
            raise ValueError("parties must be >= 1")
        self._fields = 5 + parties
        self._init_segment(_name)
        self._action = action
        self._timeout = timeout
        if _name is None:
            self._segment.state[self._PARTIES] = parties

    def _args(self) -> tuple[Any, ...]:
        return (self.parties, self._action, self._timeout)

    def __reduce__(self) -> Any:
        return (attach, (ProcessBarrier, self._segment.name, self._args()))

    @property
    def parties(self) -> int:
        return int(self._segment.state[self._PARTIES])

    @property
    def n_waiting(self) -> int:
        state = self._segment.state
        return 0 if state[self._BROKEN] else int(state[self._COUNT])  # as threading: 0 once broken

    @property
    def broken(self) -> bool:
        return bool(self._segment.state[self._BROKEN])

    _public_name = "Barrier"

    def _repr_state(self) -> str:
        return "broken" if self.broken else f"waiters={self.n_waiting}/{self.parties}"

    def _break(self) -> None:
        self._segment.state[self._BROKEN] = 1
        pthreads.broadcast(self._segment.cond)

    def _someone_died(self, count: int) -> bool:
        state = self._segment.state
        for slot in range(5, 5 + count):
            pid = state[slot]
            if pid and pid != os.getpid() and not alive(int(pid)):
                return True
        return False

    def wait(self, timeout: float | None = None) -> int:
        if timeout is None:
            timeout = self._timeout
        bounded_timeout(timeout)
        segment, state = self._segment, self._segment.state
        pthreads.lock_internal(segment.mutex)
        try:
            if state[self._BROKEN]:
                raise threading.BrokenBarrierError
            generation = state[self._GENERATION]
            index = int(state[self._COUNT])
            state[5 + index] = os.getpid()
            state[self._COUNT] = index + 1
            if index + 1 == state[self._PARTIES]:
                if self._action is not None:
                    try:
                        self._action()
                    except BaseException:
                        self._break()
                        raise
                self._next_generation()
                return index

            def released() -> bool:
                if state[self._GENERATION] != generation or state[self._BROKEN]:
                    return True
                if self._someone_died(int(state[self._COUNT])):
                    self._break()
                    return True
                return False

            try:
                passed = segment.wait(timeout, released)
            except BaseException:  # Ctrl-C: as threading.Barrier, stop counting this party
                self._withdraw(generation)
                raise
            if not passed:
                self._break()
                raise threading.BrokenBarrierError
            if state[self._BROKEN] or state[self._RESET] == generation + 1:
                raise threading.BrokenBarrierError
            return index
        finally:
            pthreads.unlock(segment.mutex)

    def _withdraw(self, generation: int) -> None:
        """With the mutex held: a waiting party leaves early, unless its generation is already over."""
        state = self._segment.state
        if state[self._GENERATION] != generation or state[self._BROKEN]:
            return
        count = int(state[self._COUNT])
        for slot in range(5, 5 + count):
            if state[slot] == os.getpid():
                state[slot] = state[5 + count - 1]
                state[5 + count - 1] = 0
                state[self._COUNT] = count - 1
                return

    def _next_generation(self) -> None:
        state = self._segment.state
        for slot in range(5, 5 + int(state[self._PARTIES])):
            state[slot] = 0
        state[self._COUNT] = 0
        state[self._GENERATION] += 1
        pthreads.broadcast(self._segment.cond)

    def reset(self) -> None:
        segment, state = self._segment, self._segment.state
        pthreads.lock_internal(segment.mutex)
        try:
            if state[self._COUNT]:
                state[self._RESET] = state[self._GENERATION] + 1  # those waiting now fail
            state[self._BROKEN] = 0
            self._next_generation()
        finally:
            pthreads.unlock(segment.mutex)

    def abort(self) -> None:
        pthreads.lock_internal(self._segment.mutex)
        try:
            self._break()
        finally:
            pthreads.unlock(self._segment.mutex)
