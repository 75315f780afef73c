"""Named shared-memory segments for large data: create, map, recycle, and always remove.

A segment is a POSIX shared-memory object named ``conveyor-<owner pid>-...`` (so a leak is easy to
spot and to attribute), created with its memory reserved up front (``posix_fallocate``: a full
``/dev/shm`` is an ``OSError`` here, never a ``SIGBUS`` later in a copy).

Who removes a segment, in every case:

- its creator, when it is done with it (a pool's arena at shutdown, a ``conveyor.shared`` handle when
  closed or collected, a worker at its exit);
- the pool's supervisor, for the segments of a worker that died (by name prefix, ``conveyor-<owner
  pid>w<worker pid>-``);
- the stdlib's resource tracker, when the program is killed: every segment is registered with it
  while it exists, and the tracker (a process of its own, shared by the program and its workers)
  removes what is still registered once the last of them is gone.

Fresh shared memory is slow to make (the kernel zeroes and maps 4 KiB pages: about 0.4 ms per MiB
here, four times a plain copy), so segments are recycled through an :class:`Arena`: a pool writes
its next large argument into memory that is already there.
"""

from __future__ import annotations

import collections
import itertools
import mmap
import os
import sys
import threading
from multiprocessing import resource_tracker
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from multiprocessing.shared_memory import SharedMemory

try:
    import _posixshmem
except ImportError:  # pragma: no cover - Windows
    _posixshmem = None

THRESHOLD = 1 << 20
"""Buffers of at least this many bytes travel through shared memory; smaller ones in the pipe
(the same as ``serialize.THRESHOLD``)."""
ALIGN = max(4096, mmap.PAGESIZE)
"""Segments and the buffers in them start on a page (of this machine: at least 4 KiB)."""
IDLE_LIMIT = 1 << 30
"""An arena keeps at most this many bytes of idle segments for reuse; the rest are removed."""
SHM_DIR = "/dev/shm"

_names = itertools.count(1)
_names_lock = threading.Lock()


def fresh_name(kind: str) -> str:
    """A name for a segment made with the stdlib's ``SharedMemory`` (a primitive's state, a queue's
    spilled item): ``conveyor-<pid><kind>-<random>``, so that a leak in ``/dev/shm`` is attributable
    like the arena's, instead of an anonymous ``psm_...``."""
    return f"conveyor-{os.getpid()}{kind}-{os.urandom(6).hex()}"


def contents(segment: SharedMemory) -> memoryview:
    """The bytes of an open ``SharedMemory``: its ``buf``, which is None only once it is closed (using
    a closed segment is a bug of ours, said here instead of as a TypeError further on)."""
    buf = segment.buf
    if buf is None:
        raise ValueError(f"the shared memory segment {segment.name} is closed")
    return buf


def available() -> bool:
    return _posixshmem is not None and hasattr(os, "posix_fallocate")


def align(size: int) -> int:
    return -(-size // ALIGN) * ALIGN


def _track(name: str) -> None:
    try:
        resource_tracker.register("/" + name, "shared_memory")
    except Exception:  # noqa: BLE001 - no tracker (an exotic platform): cleanup is then ours alone
        pass


def _untrack(name: str) -> None:
    try:
        resource_tracker.unregister("/" + name, "shared_memory")
    except Exception:  # noqa: BLE001
        pass


def unlink(name: str, tracked: bool = True) -> None:
    """Remove a segment's name (mappings of it stay valid); quiet if already gone."""
    try:
        _posixshmem.shm_unlink("/" + name)
    except FileNotFoundError:
        return
    except OSError:
        return
    if tracked:
        _untrack(name)


def unlink_prefix(prefix: str) -> int:
    """Remove every segment whose name starts with ``prefix`` (a dead worker's); returns how many."""
    try:
        names = os.listdir(SHM_DIR)
    except OSError:
        return 0
    count = 0
    for name in names:
        if name.startswith(prefix):
            unlink(name)
            count += 1
    return count


class Segment:
    """One named segment, mapped shared and writable in the process that made or opened it."""

    __slots__ = ("name", "size", "map", "__weakref__")

    def __init__(self, name: str, size: int, mapping: mmap.mmap) -> None:
        self.name = name
        self.size = size
        self.map = mapping

    @classmethod
    def create(cls, prefix: str, size: int) -> Segment:
        """A new segment of ``size`` bytes (rounded up to a page), registered with the tracker.

        Raises:
            OSError: no room in shared memory (the caller falls back to the pipe).
        """
        size = align(max(size, 1))
        while True:
            with _names_lock:
                name = f"{prefix}-{next(_names)}"
            try:
                fd = _posixshmem.shm_open("/" + name, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
            except FileExistsError:
                continue  # a stale name from a dead program with our pid
            break
        tracked = False
        try:  # from the moment it exists: a KeyboardInterrupt even before _track must remove it
            _track(name)
            tracked = True
            os.posix_fallocate(fd, 0, size)
            mapping = mmap.mmap(fd, size, flags=mmap.MAP_SHARED)
        except BaseException:
            os.close(fd)
            unlink(name, tracked=tracked)
            raise
        os.close(fd)
        return cls(name, size, mapping)

    def destroy(self) -> None:
        unlink(self.name)
        try:
            self.map.close()
        except BufferError:
            pass  # a view is still exported: the mapping goes with it

    def __repr__(self) -> str:
        return f"<Segment {self.name} {self.size} bytes>"


def open_map(name: str, *, private: bool = True, readonly: bool = False) -> mmap.mmap:
    """Map an existing segment: a private copy-on-write view (writes stay in this process), or the
    shared memory itself, read-only or writable.

    Raises:
        FileNotFoundError: the segment is gone (its owner removed it).
    """
    fd = _posixshmem.shm_open("/" + name, os.O_RDONLY if readonly else os.O_RDWR, 0)
    try:
        size = os.fstat(fd).st_size
        if readonly:
            return mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
        return mmap.mmap(fd, size, flags=mmap.MAP_PRIVATE if private else mmap.MAP_SHARED)
    finally:
        os.close(fd)


def write_buffers(segment: Segment, buffers: list[Any]) -> list[tuple[int, int]]:
    """Copy pickle buffers into a segment, page-aligned; returns ``(offset, length)`` per buffer."""
    spans = []
    offset = 0
    view = memoryview(segment.map)
    try:
        for buffer in buffers:
            raw = buffer.raw()
            length = raw.nbytes
            view[offset:offset + length] = raw
            spans.append((offset, length))
            offset += align(length)
    finally:
        view.release()
    return spans


def span_size(buffers: list[Any]) -> int:
    return sum(align(buffer.raw().nbytes) for buffer in buffers)


def views(mapping: mmap.mmap, spans: list[tuple[int, int]], readonly: bool = False) -> list[memoryview]:
    whole = memoryview(mapping)
    if readonly:
        whole = whole.toreadonly()
    return [whole[offset:offset + length] for offset, length in spans]


class Arena:
    """Segments recycled for one owner (a pool, or one worker): lease one, give it back when every
    process that mapped it is done, and it is reused for the next large payload of a similar size.

    Thread-safe. After :meth:`close`, given-back segments are removed instead of kept.
    """

    def __init__(self, prefix: str, idle_limit: int = IDLE_LIMIT) -> None:
        self.prefix = prefix
        self.idle_limit = idle_limit
        self._free: list[Segment] = []
        self._leased: dict[str, Segment] = {}
        self._lock = threading.Lock()
        self._closed = False
        self.created = 0
        self.reused = 0
        self.destroyed: collections.deque[str] = collections.deque()
        """Names of the segments removed while the arena was open (for those that cache mappings)."""
        self._later: collections.deque[tuple[Any, tuple[Any, ...]]] = collections.deque()

    def later(self, fn: Any, *args: Any) -> None:
        """Run ``fn(*args)`` at the next :meth:`lease`, :meth:`run_later` or :meth:`close`. Lock-free,
        for finalizers: a garbage collection may run them in a thread that holds this arena's lock."""
        self._later.append((fn, args))

    def run_later(self) -> None:
        """Run what :meth:`later` queued (never call it with the arena's lock held)."""
        while True:
            try:
                fn, args = self._later.popleft()
            except IndexError:
                return
            fn(*args)

    def lease(self, size: int) -> Segment:
        """A segment of at least ``size`` bytes (reused when one of a similar size is idle).

        Raises:
            OSError: no room in shared memory.
        """
        size = align(max(size, 1))
        self.run_later()
        with self._lock:
            best = None
            for segment in self._free:
                if size <= segment.size <= 2 * size + (1 << 20) and (best is None or segment.size < best.size):
                    best = segment
            if best is not None:
                self._free.remove(best)
                self._leased[best.name] = best
                self.reused += 1
                return best
        segment = Segment.create(self.prefix, size)
        with self._lock:
            self.created += 1
            if self._closed:
                segment.destroy()
                raise OSError("this arena is closed")
            self._leased[segment.name] = segment
        return segment

    def give_back(self, segment: Segment, reusable: bool = True) -> None:
        with self._lock:
            self._leased.pop(segment.name, None)
            if reusable and not self._closed:
                idle = sum(s.size for s in self._free)
                if idle + segment.size <= self.idle_limit:
                    self._free.append(segment)
                    return
                # Make room by dropping the oldest idle segments, if that is enough.
                while self._free and idle + segment.size > self.idle_limit:
                    oldest = self._free.pop(0)
                    idle -= oldest.size
                    oldest.destroy()
                    self.destroyed.append(oldest.name)
                if idle + segment.size <= self.idle_limit:
                    self._free.append(segment)
                    return
            if not self._closed:
                self.destroyed.append(segment.name)
        segment.destroy()

    def close(self) -> None:
        """Remove every segment now, leased ones too (call once nobody maps them any more: mappings
        stay valid, but the memory of a removed segment is not reused)."""
        self.run_later()
        with self._lock:
            self._closed = True
            segments = self._free + list(self._leased.values())
            self._free, self._leased = [], {}
        for segment in segments:
            segment.destroy()

    @property
    def idle_bytes(self) -> int:
        with self._lock:
            return sum(s.size for s in self._free)


def linux() -> bool:
    return sys.platform.startswith("linux")
