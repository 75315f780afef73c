"""``ctx.Pipe()`` for processes: two connection ends over process queues, with end-of-file like a pipe's.

::

    end 0 ── send ─► [ queue 0→1 ] ─► recv ── end 1
    end 0 ◄─ recv ── [ queue 1→0 ] ◄─ send ── end 1        (one-way: only 1→0; end 0 reads)

    pipe segment words = [ transfers in flight to end 0, to end 1 | pids holding end 0... | end 1... ]

A pipe made of file descriptors tells a reader "end of file" once every copy of the other end is
closed, including by the death of the process holding it. The same rule holds here, kept in shared
memory: each process that holds an end writes its pid in that end's table (on creation, or when the end
is unpickled in a task) and removes it on ``close()`` or when its object is collected. An end being
pickled counts as a transfer in flight until unpickled, so ``close()`` in the parent just after handing
the end to a worker does not look like end of file. A reader waiting on an empty queue whose other end
has no live holder and no transfer in flight gets ``EOFError``; a writer whose reader is gone gets
``BrokenPipeError`` instead of waiting forever for room.
"""

from __future__ import annotations

import multiprocessing
import os
import queue as _stdlib_queue
import threading
import time
import weakref
from typing import Any

from conveyor._backends._shared.liveness import alive
from conveyor._backends.process import pthreads
from conveyor._backends.process.channel import ProcessQueue
from conveyor._backends.process.segments import SegmentBacked

PIPE_CAPACITY = 1024 * 1024
_SLOTS = 32                          # processes that may hold one end at once
_IN_FLIGHT = 0                       # words 0, 1: transfers in flight, per end
_HOLDERS = 2                         # then _SLOTS pids for end 0, then _SLOTS for end 1


class _PipeState(SegmentBacked):
    """Who holds each end of one pipe (see the module docstring)."""

    _fields = _HOLDERS + 2 * _SLOTS

    def __init__(self, *, _name: str | None = None) -> None:
        self._init_segment(_name)

    def _slots(self, end: int) -> range:
        start = _HOLDERS + end * _SLOTS
        return range(start, start + _SLOTS)

    def _locked(self) -> Any:
        return _Held(self._segment.mutex)

    def hold(self, end: int, pid: int) -> None:
        state = self._segment.state
        with self._locked():
            free = None
            for slot in self._slots(end):
                if state[slot] == pid:
                    return
                if free is None and (state[slot] == 0 or not _alive(int(state[slot]))):
                    free = slot
            if free is None:
                raise OSError(f"more than {_SLOTS} processes hold one end of this pipe")
            state[free] = pid

    def let_go(self, end: int, pid: int) -> None:
        state = self._segment.state
        with self._locked():
            for slot in self._slots(end):
                if state[slot] == pid:
                    state[slot] = 0

    def sending(self, end: int) -> None:
        with self._locked():
            self._segment.state[_IN_FLIGHT + end] += 1

    def arrived(self, end: int) -> None:
        state = self._segment.state
        with self._locked():
            if state[_IN_FLIGHT + end] > 0:
                state[_IN_FLIGHT + end] -= 1

    def held(self, end: int) -> bool:
        """Whether some live process holds ``end``, or a copy of it is on its way to one."""
        state = self._segment.state
        with self._locked():
            if state[_IN_FLIGHT + end]:
                return True
            return any(state[slot] and _alive(int(state[slot])) for slot in self._slots(end))


class _Held:
    def __init__(self, mutex: int) -> None:
        self._mutex = mutex

    def __enter__(self) -> None:
        pthreads.lock_internal(self._mutex)

    def __exit__(self, *exc: Any) -> None:
        pthreads.unlock(self._mutex)


def _alive(pid: int) -> bool:
    return pid == os.getpid() or alive(pid)


_ends: weakref.WeakValueDictionary[tuple[str, int], ProcessConnection] = weakref.WeakValueDictionary()
_ends_lock = threading.Lock()


def _let_go(state: _PipeState, end: int, pid: int) -> None:
    if os.getpid() == pid:
        try:
            state.let_go(end, pid)
        except (OSError, ValueError):  # pragma: no cover - the segment is already gone at exit
            pass


class ProcessConnection:
    """One end of a process Pipe: ``send``/``recv``/``poll``/``send_bytes``/``recv_bytes``/``close``.

    Objects travel pickled (cloudpickle for what the standard pickler cannot do); ``recv`` raises
    ``EOFError`` once the other end is closed everywhere and nothing is left to read.
    """

    def __init__(self, state: _PipeState, end: int, incoming: ProcessQueue | None,
                 outgoing: ProcessQueue | None) -> None:
        self._state, self._end = state, end
        self._incoming, self._outgoing = incoming, outgoing
        self._closed = False
        pid = os.getpid()
        state.hold(end, pid)
        self._finalizer = weakref.finalize(self, _let_go, state, end, pid)

    def __reduce__(self) -> Any:
        self._check_open()
        self._state.sending(self._end)
        return (_rebuild, (self._state, self._end, self._incoming, self._outgoing))

    # -- state ------------------------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def readable(self) -> bool:
        return self._incoming is not None

    @property
    def writable(self) -> bool:
        return self._outgoing is not None

    def _check_open(self) -> None:
        if self._closed:
            raise OSError("handle is closed")

    def _peer_gone(self) -> bool:
        return not self._state.held(1 - self._end)

    def close(self) -> None:
        """Let go of this end in this process; the other end sees end of file once no one holds it."""
        if not self._closed:
            self._closed = True
            self._finalizer()
            with _ends_lock:
                if _ends.get((self._state._segment.name, self._end)) is self:
                    del _ends[(self._state._segment.name, self._end)]

    def __enter__(self) -> ProcessConnection:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- sending -----------------------------------------------------------------------------------------
    def send(self, obj: Any) -> None:
        """Send a picklable object (``BrokenPipeError`` if the other end is gone while waiting for room)."""
        self._check_open()
        if self._outgoing is None:
            raise OSError("connection is read-only")
        while True:
            try:
                self._outgoing.put(obj, timeout=pthreads.SLICE_SECONDS)
                return
            except _stdlib_queue.Full:
                if self._peer_gone():
                    raise BrokenPipeError("the other end of the pipe is closed") from None

    def send_bytes(self, buf: Any, offset: int = 0, size: int | None = None) -> None:
        """Send bytes from a bytes-like object; ``recv_bytes`` on the other end gets them back."""
        view = memoryview(buf).cast("B")
        if offset < 0 or offset > len(view):
            raise ValueError("offset is out of range")
        if size is None:
            size = len(view) - offset
        if size < 0 or offset + size > len(view):
            raise ValueError("size is out of range" if size >= 0 else "size is negative")
        self.send(_Bytes(view[offset:offset + size].tobytes()))

    # -- receiving ----------------------------------------------------------------------------------------
    def _next(self, timeout: float | None) -> Any:
        """The next message; EOFError at end of file; TimeoutError (internal) after ``timeout``."""
        self._check_open()
        if self._incoming is None:
            raise OSError("connection is write-only")
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            step = pthreads.SLICE_SECONDS if end is None else min(pthreads.SLICE_SECONDS, end - time.monotonic())
            try:
                return self._incoming.get(timeout=max(step, 0.0))
            except _stdlib_queue.Empty:
                if self._incoming.empty() and self._peer_gone():
                    raise EOFError("the other end of the pipe is closed") from None
                if end is not None and time.monotonic() >= end:
                    raise TimeoutError from None

    def recv(self) -> Any:
        """Wait for and return the next object sent by the other end."""
        message = self._next(None)
        return message.data if isinstance(message, _Bytes) else message

    def recv_bytes(self, maxlength: int | None = None) -> bytes:
        """Wait for the next message sent by ``send_bytes`` and return its bytes."""
        if maxlength is not None and maxlength < 0:
            raise ValueError("negative maxlength")
        message = self._next(None)
        data = message.data if isinstance(message, _Bytes) else _pickled(message)
        if maxlength is not None and len(data) > maxlength:
            raise OSError("bad message length")
        return data

    def recv_bytes_into(self, buffer: Any, offset: int = 0) -> int:
        """Like ``recv_bytes``, into a writable buffer at ``offset``; returns the number of bytes."""
        data = self.recv_bytes()
        view = memoryview(buffer).cast("B")
        if offset < 0 or offset > len(view):
            raise ValueError("offset out of bounds")
        if offset + len(data) > len(view):
            raise multiprocessing.BufferTooShort(data)  # as the stdlib: the message is in args[0]
        view[offset:offset + len(data)] = data
        return len(data)

    def poll(self, timeout: float | None = 0.0) -> bool:
        """Whether ``recv`` would return at once (data waiting, or end of file); waits up to ``timeout``
        (``None``: as long as it takes)."""
        self._check_open()
        if self._incoming is None:
            raise OSError("connection is write-only")
        end = None if timeout is None else time.monotonic() + max(timeout, 0.0)
        while True:
            if not self._incoming.empty() or self._peer_gone():
                return True
            if end is not None and time.monotonic() >= end:
                return False
            time.sleep(0.001 if end is None else max(0.0, min(0.001, end - time.monotonic())))

    def __repr__(self) -> str:
        kind = "duplex" if self.readable and self.writable else ("read" if self.readable else "write")
        return f"<conveyor process Connection {kind} end {self._end}{' closed' if self._closed else ''}>"


class _Bytes:
    """A ``send_bytes`` message: told apart from an object so ``recv_bytes`` returns exactly it."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __reduce__(self) -> Any:
        return (_Bytes, (self.data,))


def _pickled(obj: Any) -> bytes:
    from conveyor._core import serialize

    return serialize.dumps(obj)


def _rebuild(state: _PipeState, end: int, incoming: ProcessQueue | None, outgoing: ProcessQueue | None) -> Any:
    key = (state._segment.name, end)
    with _ends_lock:
        existing = _ends.get(key)
        if existing is None or existing.closed:
            existing = ProcessConnection(state, end, incoming, outgoing)
            _ends[key] = existing
    state.arrived(end)
    return existing


def make_pipe(duplex: bool = True) -> tuple[ProcessConnection, ProcessConnection]:
    """Two connected ends; with ``duplex=False`` the first only receives and the second only sends."""
    state = _PipeState()
    to_first = ProcessQueue(capacity=PIPE_CAPACITY)
    if duplex:
        to_second = ProcessQueue(capacity=PIPE_CAPACITY)
        first = ProcessConnection(state, 0, to_first, to_second)
        second = ProcessConnection(state, 1, to_second, to_first)
    else:
        first = ProcessConnection(state, 0, to_first, None)
        second = ProcessConnection(state, 1, None, to_first)
    with _ends_lock:
        _ends[(state._segment.name, 0)] = first
        _ends[(state._segment.name, 1)] = second
    return first, second
