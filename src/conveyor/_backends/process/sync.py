"""Locks, semaphores, events and conditions that work across worker processes and survive their death.

Each object owns one small named shared-memory segment::

    [ mutex | condition | state: int64 fields ... ]

It pickles by name (so it can be passed to tasks of a running pool, under every start method) and is
attached on arrival. The creating process unlinks the segment when its object is garbage-collected or
at exit; if it is killed, the stdlib's resource tracker unlinks it.

The segment's robust mutex guards the object's state and is held only for the instant of a check or
a change, so a process killed in that instant wedges nobody (the next locker is told and carries on).
A process that dies holding a ``Lock`` does not wedge the others either: the lock records its holder's
pid, and an ``acquire`` that finds that process gone raises :class:`~conveyor.OwnerDiedError` (the
lock is then free again, so a retry succeeds) — the data it guarded may be half-updated, and that is
for the caller to decide.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
import weakref
from multiprocessing import resource_tracker, shared_memory
from typing import Any

from conveyor._backends._shared.liveness import alive
from conveyor._backends.process import pthreads
from conveyor._core import owned
from conveyor._core.errors import OwnerDiedError
from conveyor._core.shm import contents, fresh_name
from conveyor._core.waiting import bounded_timeout, lock_timeout, wait_for

_MUTEX = 0
_COND = pthreads.MUTEX_BYTES
STATE_OFFSET = _COND + pthreads.COND_BYTES


_still_mapped: list[Any] = []
"""Segments whose mutex a thread of this process still held when they were dropped: never unmapped."""


def _close(shm: shared_memory.SharedMemory, anchor: list[Any], owner: bool, mutex: int) -> None:
    # A robust mutex held by a thread is linked into that thread's robust list, which glibc writes to
    # at the thread's next lock and the kernel walks when the thread exits: unmapping the mutex while
    # one of our threads holds it (a Lock dropped while locked, or still held at exit) leaves a dangling
    # link, so that thread's next lock crashes or corrupts whatever is mapped there next, and other
    # processes never learn that the owner died. Such a segment stays mapped (its name still goes),
    # through the interpreter's own teardown too, which would otherwise free (unmap) it before the
    # process exits.
    holder = pthreads.holder_tid(mutex)
    if holder and os.path.exists(f"/proc/self/task/{holder}"):
        _still_mapped.append((shm, anchor))
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(shm))  # never freed, so never unmapped
        if owner:
            try:
                shm.unlink()
            except OSError:
                pass
        return
    anchor.clear()  # drop the only export of the buffer, or close() refuses
    try:
        shm.close()
        if owner:
            shm.unlink()
    except (BufferError, FileNotFoundError, OSError):
        pass


def _fresh_tracker_lock() -> None:
    """After a fork: the stdlib resource tracker's lock may have been held by another thread of the
    parent at that instant, and would stay held forever in the child (which needs it to create or
    attach a segment). Give the child a fresh one."""
    tracker = getattr(resource_tracker, "_resource_tracker", None)
    lock = getattr(tracker, "_lock", None)
    if tracker is not None and lock is not None:
        tracker._lock = threading.RLock() if "RLock" in type(lock).__name__ else threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_fresh_tracker_lock)

_owned: weakref.WeakSet[_Segment] = weakref.WeakSet()


@owned.on_exit
def release_owned() -> None:
    """Unlink every segment this process created; for workers, which exit without finalizers.

    (Under fork a worker inherits its parent's set: those segments are the parent's to remove.)
    """
    me = os.getpid()
    for segment in list(_owned):
        if segment.creator == me:
            segment.finalizer()


def _drop_descriptor(shm: shared_memory.SharedMemory) -> None:
    """Close the segment's file descriptor once it is mapped: ``SharedMemory`` keeps one open for
    its whole life (the mapping keeps a copy of its own), so each primitive held two, and a
    program with a thousand locks ran out of descriptors. ``close()`` skips a descriptor of -1."""
    # ``_fd`` is private to the stdlib (the stubs omit it); there is no public way to drop it.
    if getattr(shm, "_fd", -1) >= 0:
        os.close(shm._fd)  # type: ignore[attr-defined]
        shm._fd = -1  # type: ignore[attr-defined]


class _Segment:
    """One primitive's shared memory: a robust mutex, a condition, and ``fields`` int64 slots."""

    def __init__(self, fields: int, name: str | None = None) -> None:
        size = STATE_OFFSET + 8 * max(fields, 1)
        self.owner = name is None
        self.creator = os.getpid()
        self.shm = shared_memory.SharedMemory(name=name or fresh_name("p"), create=self.owner, size=size)
        _drop_descriptor(self.shm)
        anchor = (ctypes.c_char * size).from_buffer(contents(self.shm))
        self._anchor = [anchor]
        self.base = ctypes.addressof(anchor)
        self.mutex = self.base + _MUTEX
        self.cond = self.base + _COND
        self.state = (ctypes.c_int64 * max(fields, 1)).from_address(self.base + STATE_OFFSET)
        if self.owner:
            pthreads.init_mutex(self.mutex)
            pthreads.init_cond(self.cond)
        self.finalizer = weakref.finalize(self, _close, self.shm, self._anchor, self.owner, self.mutex)
        if self.owner:
            _owned.add(self)

    @property
    def name(self) -> str:
        return self.shm.name

    def wait(self, timeout: float | None, ready: Any) -> bool:
        """With the mutex held: wait until ``ready()`` or the timeout; returns ``ready()``."""
        end = None if timeout is None else time.monotonic() + timeout
        while not ready():
            remaining = pthreads.SLICE_SECONDS if end is None else end - time.monotonic()
            if remaining <= 0:
                return bool(ready())
            pthreads.wait(self.cond, self.mutex, remaining)
        return True


_attached: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()
_attach_lock = threading.Lock()


def _forget_parent_objects() -> None:
    """After a fork: the parent's objects in ``_attached`` are copies taken at that instant, and one
    that another thread of the parent was still constructing is half-built (registered before its
    subclass ``__init__`` finished): the child attaches afresh by name instead. ``_attach_lock`` may
    have been held, too."""
    global _attach_lock
    _attached.clear()
    _attach_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_parent_objects)


def attach(cls: type, name: str, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None) -> Any:
    """Rebuild a primitive from its segment name; one object per segment per process."""
    with _attach_lock:
        existing = _attached.get(name)
        if existing is None:
            existing = cls(*args, _name=name, **(kwargs or {}))
            _attached[name] = existing
        return existing


class SegmentBacked:
    """Common pickling by segment name."""

    _fields = 1
    _segment: _Segment

    def _init_segment(self, name: str | None) -> None:
        self._segment = _Segment(self._fields, name)
        if name is None:
            _attached[self._segment.name] = self

    def _args(self) -> tuple[Any, ...]:
        return ()

    def __reduce__(self) -> Any:
        return (attach, (type(self), self._segment.name, self._args()))

    _public_name = ""
    """The stdlib's name of the primitive, for ``repr``; empty: the class's own name."""

    def _repr_state(self) -> str:
        return ""

    def __repr__(self) -> str:
        """The stdlib's form (``<conveyor.Semaphore at 0x...: value=3>``), with the segment's name."""
        state = self._repr_state()
        return (f"<conveyor.{self._public_name or type(self).__name__} at {id(self):#x} "
                f"(process, {self._segment.name}){': ' + state if state else ''}>")


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
