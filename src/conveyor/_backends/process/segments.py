"""The shared-memory segment behind every process primitive, and how a primitive travels by its name.

Each primitive owns one small named segment::

    [ mutex | condition | state: int64 fields ... ]

It pickles by name (so it can be passed to tasks of a running pool, under every start method) and is
attached on arrival, one object per segment per process (``attach``). The creating process unlinks
the segment when its object is garbage-collected or at exit (``release_owned``, for workers, which
end without finalizers); if it is killed, the stdlib's resource tracker unlinks it.

The segment's robust mutex guards the primitive's state and is held only for the instant of a check
or a change, so a process killed in that instant wedges nobody (the next locker is told and carries on).
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
import weakref
from multiprocessing import resource_tracker, shared_memory
from typing import Any

from conveyor._backends.process import pthreads
from conveyor._core import owned
from conveyor._core.shm import contents, fresh_name

MUTEX_OFFSET = 0
COND_OFFSET = pthreads.MUTEX_BYTES
STATE_OFFSET = COND_OFFSET + pthreads.COND_BYTES
"""Where a segment's int64 state fields begin, after its robust mutex and its condition."""


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

_owned: weakref.WeakSet[Segment] = weakref.WeakSet()


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


class Segment:
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
        self.mutex = self.base + MUTEX_OFFSET
        self.cond = self.base + COND_OFFSET
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
    _segment: Segment

    def _init_segment(self, name: str | None) -> None:
        self._segment = Segment(self._fields, name)
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
