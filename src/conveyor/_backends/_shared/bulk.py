"""Large buffers between the caller and its workers through shared memory instead of the pipe.

::

    caller (submit)                              worker
    ───────────────                              ──────
    pickle-5 probe: a buffer >= 1 MiB?
      yes: copy it once into an arena segment ─► map the segment copy-on-write (private): the
           the input becomes a Frozen snapshot     task gets a writable array on that memory, its
           (re-runs send the same snapshot)        writes stay in its own process
                                                 after the batch: mapping still referenced? → "kept"
    DONE: give the lease back (reused for the ◄──
    next large input), or remove it if kept
                                                 results: pickle-5, buffers >= 1 MiB copied once
    map the result segment copy-on-write: the ◄── into the worker's own arena segment
    result array lives on it; when the caller
    drops it, the segment goes back to the ────► (named in the next RUN) reused for the next result
    worker

Copy semantics hold both ways: the caller's array is copied when the input is taken (a later
change by the caller is never seen, not by a re-run either), and a task's writes to its input land
in private pages of its own process. Small buffers and everything else stay in the pipe.

Large ``bytes``, ``bytearray`` and contiguous ``memoryview`` objects (which pickle in-band) are
found by a shallow walk of an input or result (containers up to 4 levels deep), only when its
pickle came out large.
"""

from __future__ import annotations

import collections
import ctypes
import mmap
import os
import pickle
import sys
import threading
import weakref
from typing import Any

from conveyor._core import owned, serialize, shm

THRESHOLD = shm.THRESHOLD
dumps_out_of_band = serialize.dumps_out_of_band


# -- inputs: the caller's side -------------------------------------------------------------------------
class Lease:
    """An arena segment lent to one frozen input.

    It goes back to the arena once the input is dropped (no re-run can need it) and no worker maps
    it; a worker that kept a mapping (the task stored its input somewhere) makes it "tainted": it is
    then removed instead of reused, and the worker's mapping keeps its memory alive.
    """

    __slots__ = ("segment", "arena", "holders", "dropped", "tainted", "returned", "_lock")

    def __init__(self, segment: shm.Segment, arena: shm.Arena) -> None:
        self.segment = segment
        self.arena = arena
        self.holders = 0
        self.dropped = False
        self.tainted = False
        self.returned = False
        self._lock = threading.Lock()

    def hold(self) -> None:
        with self._lock:
            self.holders += 1

    def unhold(self, kept: bool = False) -> None:
        with self._lock:
            self.holders -= 1
            self.tainted = self.tainted or kept
        self._maybe_return()

    def drop(self) -> None:
        with self._lock:
            self.dropped = True
        self._maybe_return()

    def _maybe_return(self) -> None:
        with self._lock:
            if self.returned or not self.dropped or self.holders > 0:
                return
            self.returned = True
        self.arena.give_back(self.segment, reusable=not self.tainted)


class Frozen:
    """An input whose large buffers were copied into shared memory when it was first sent.

    It replaces the input in its batch, so a re-run (a retry, or after a crash) sends this same
    snapshot, never the caller's object as it is by then.
    """

    __slots__ = ("data", "lease", "spans", "description", "__weakref__")

    def __init__(self, data: bytes, lease: Lease, spans: list[tuple[int, int]], description: str) -> None:
        self.data = data
        self.lease = lease
        self.spans = spans
        self.description = description
        # Not lease.drop itself: a finalizer may run inside a garbage collection in a thread that
        # holds the arena's (or the lease's) lock, and drop takes both.
        weakref.finalize(self, lease.arena.later, lease.drop)
        _frozen_alive.add(self)

    def __reduce__(self) -> Any:
        return (thaw, (self.data, self.lease.segment.name, self.spans))

    def __repr__(self) -> str:
        return self.description


_frozen_alive: weakref.WeakSet[Frozen] = weakref.WeakSet()


def leases_of(items: list[Any]) -> list[Lease]:
    """The leases of the frozen inputs among ``items``. Without a live :class:`Frozen` in this
    process there is none, and the inputs are not looked at: a batch of many small inputs pays no
    Python step per input for what only large inputs use."""
    if not _frozen_alive:
        return []
    return [item.lease for item in items if isinstance(item, Frozen)]


class Snapshot:
    """An input with large buffers that goes through the pipe (shared memory is off, or full),
    pickled when it was first sent: like :class:`Frozen`, a re-run sends this, not the caller's
    object as it is by then."""

    __slots__ = ("blob", "description")

    def __init__(self, blob: bytes, description: str) -> None:
        self.blob = blob
        self.description = description

    def __reduce__(self) -> Any:
        return (serialize.loads, (self.blob,))

    def __repr__(self) -> str:
        return self.description


def freeze(item: Any, arena: shm.Arena | None, description: str) -> Any:
    """``item`` itself, or a snapshot of it when it holds large buffers: :class:`Frozen` in shared
    memory, or a :class:`Snapshot` pickled in-band when there is no ``arena`` or no room in it.

    Raises:
        whatever pickling ``item`` raises (the caller reports it as that input's error).
    """
    if isinstance(item, Snapshot):
        return item
    data, big = dumps_out_of_band(item)
    if not big:
        return item
    try:
        if arena is None:
            raise OSError("no shared memory")
        segment = arena.lease(sum(shm.align(memoryview(b).nbytes) for b in big))
    except OSError:
        # No room in shared memory (or it is off): this input goes through the pipe, as it is now.
        del data, big
        return Snapshot(serialize.dumps(item), description)
    try:
        spans = shm.write_buffers(segment, big)
    except BaseException:
        arena.give_back(segment)
        raise
    return Frozen(data, Lease(segment, arena), spans, description)


def has_large_buffers(items: list[Any]) -> tuple[bytes | None, bool]:
    """Pickle a batch's items once: ``(payload, False)`` when nothing is large (the payload is
    ready for the pipe), ``(None, True)`` when some input holds a large buffer.

    Raises:
        whatever pickling raises.
    """
    data, big = dumps_out_of_band(items)
    if big:
        return None, True
    return data, False


# -- inputs: the worker's side -------------------------------------------------------------------------
_CACHE_ENTRIES = 8
_PAGE = mmap.PAGESIZE
_TOP = 7 if sys.byteorder == "little" else 0
"""Index of the byte holding bits 56-63 in a native-order 64-bit pagemap entry."""


class _Mapped:
    """A private (copy-on-write) mapping of an input segment, kept between batches: when the caller
    reuses the segment for its next large input, the pages are already mapped here, and only the
    copy in the caller is paid for. Kept only while no page of it was written (a task's write makes
    private copies of pages, which would hide the caller's next data)."""

    __slots__ = ("map", "address", "pages")

    def __init__(self, name: str) -> None:
        self.map = shm.open_map(name, private=True)
        anchor = ctypes.c_char.from_buffer(self.map)
        self.address = ctypes.addressof(anchor)
        del anchor
        self.pages = -(-len(self.map) // _PAGE)

    def written(self) -> bool:
        """Whether a page of this mapping is a private copy now (the pagemap: present, not a file
        page); True when that cannot be read."""
        try:
            with open("/proc/self/pagemap", "rb", buffering=0) as pagemap:
                pagemap.seek(self.address // _PAGE * 8)
                data = pagemap.read(self.pages * 8)
        except OSError:
            return True
        if len(data) != self.pages * 8:
            return True
        return any_written(data)


def any_written(pagemap: bytes) -> bool:
    """Whether any of these native-order 64-bit ``/proc/self/pagemap`` entries of a private file
    mapping is a page of this process's own: present and not a file page (a copy-on-write copy), or
    swapped out (only anonymous pages, so only such copies, are swapped out of a file mapping)."""
    return b"\x01" in pagemap[_TOP::8].translate(_WRITTEN_PAGE)


_WRITTEN_PAGE = bytes(1 if b & 0xA0 == 0x80 or b & 0x40 else 0 for b in range(256))
"""Top byte of a pagemap entry: bit 63 present, bit 62 swapped, bit 61 file page (or shared)."""

_cache: collections.OrderedDict[str, _Mapped] = collections.OrderedDict()
_mapped: list[tuple[str, Any, _Mapped]] = []
"""(segment name, weak reference to the view's exporter, mapping) of the inputs of the current batch."""


def _forget_after_fork() -> None:
    _cache.clear()
    _mapped.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


def thaw(data: bytes, name: str, spans: list[tuple[int, int]]) -> Any:
    """In a worker: rebuild a frozen input on a private, writable mapping of its segment."""
    mapped = _cache.pop(name, None)
    if mapped is None:
        mapped = _Mapped(name)
    exporter = (ctypes.c_char * len(mapped.map)).from_buffer(mapped.map)
    _mapped.append((name, weakref.ref(exporter), mapped))
    whole = memoryview(exporter).cast("B")
    return pickle.loads(data, buffers=[whole[offset:offset + length] for offset, length in spans])


def forget(names: Any) -> None:
    """The caller removed these segments: drop their cached mappings (which pin their memory)."""
    for name in names:
        mapped = _cache.pop(name, None)
        if mapped is not None:
            mapped.map.close()


def kept_mappings() -> list[str]:
    """The segments of this batch's inputs still referenced now that the batch is done (the task
    kept its input somewhere): the caller must not reuse those. The others stay mapped for the
    next batch unless a page of them was written."""
    kept = []
    for name, ref, mapped in _mapped:
        if ref() is not None:
            kept.append(name)  # its objects keep the mapping alive; never reused here either
        elif mapped.written():
            mapped.map.close()
        else:
            _cache[name] = mapped
    _mapped.clear()
    while len(_cache) > _CACHE_ENTRIES:
        _cache.popitem(last=False)[1].map.close()
    return kept


# -- results -------------------------------------------------------------------------------------------
class WorkerResults:
    """A worker's arena for large results, and the segments the caller still maps."""

    def __init__(self, prefix: str) -> None:
        self.arena = shm.Arena(prefix, idle_limit=shm.IDLE_LIMIT // 2)
        self.lent: dict[str, shm.Segment] = {}

    def store(self, big: list[Any]) -> tuple[str, list[tuple[int, int]]] | None:
        try:
            segment = self.arena.lease(sum(shm.align(memoryview(b).nbytes) for b in big))
        except OSError:
            return None
        spans = shm.write_buffers(segment, big)
        self.lent[segment.name] = segment
        return segment.name, spans

    def released(self, names: Any) -> None:
        for name in names:
            segment = self.lent.pop(name, None)
            if segment is not None:
                self.arena.give_back(segment)

    def close(self) -> None:
        self.arena.close()
        for segment in self.lent.values():
            segment.destroy()
        self.lent.clear()


_results: WorkerResults | None = None


def worker_results(prefix: str) -> WorkerResults:
    global _results
    if _results is None:
        _results = WorkerResults(prefix)
    return _results


@owned.on_exit
def release_all() -> None:
    """At a worker's exit: remove its result segments (the caller's mappings stay valid)."""
    if _results is not None:
        _results.close()


def encode_values(values: list[Any], results: WorkerResults | None) -> tuple[bytes, Any]:
    """In a worker: pickle the result list, large buffers into shared memory.

    Returns ``(blob, segment)``: ``segment`` is ``(name, spans)`` or None (everything in the blob).

    Raises:
        whatever pickling raises (the caller then pickles value by value).
    """
    if results is None:
        return serialize.dumps(values), None
    blob, big = dumps_out_of_band(values)
    if not big:
        return blob, None
    stored = results.store(big)
    if stored is None:
        wrapped = [serialize.wrap_bytes(value)[0] for value in values]
        return serialize.dumps(wrapped), None  # no room in shared memory: in-band
    return blob, stored


def load_values(blob: bytes, segment: Any, on_release: Any) -> Any:
    """In the caller: rebuild the results, large buffers on a private mapping of the worker's
    segment; ``on_release(name)`` runs once the caller no longer maps it."""
    if segment is None:
        return serialize.loads(blob)
    name, spans = segment
    try:
        mapping = shm.open_map(name, private=True)
    except FileNotFoundError:
        raise RuntimeError(f"the shared-memory segment {name} holding the result is gone") from None
    weakref.finalize(mapping, on_release, name)
    return pickle.loads(blob, buffers=shm.views(mapping, spans))
