"""Large read-only objects placed once in shared memory: ``conveyor.shared(obj)``.

::

    caller: shared(obj) ── pickle-5 ──► one segment [pickle bytes | buffer | buffer ...]
                                              ▲ mapped read-only, once per process
    task:   handle.get() ── first call in this process: map + unpickle (arrays rebuilt on the
                            mapped memory, no copy) ── later calls: the same object

The handle pickles as the segment's name, so passing it to tasks (or ``Pool(shared=...)``, which
puts it in each worker's ``conveyor.worker_state().shared``) costs the same whatever the object's
size, under fork, forkserver and spawn alike. NumPy arrays (and other pickle-5 buffers) in the object
are read-only views of the one copy; its other Python objects are unpickled once per process.
The creator removes the segment on ``close()``, when the handle is collected, or at exit; the
stdlib's resource tracker does it if the program is killed. Processes that already read the object
keep it after that.
"""

from __future__ import annotations

import os
import pickle
import struct
import threading
import weakref
from typing import Any, Generic, TypeVar

from conveyor._core import owned, serialize, shm

__all__ = ["Shared", "shared"]

T = TypeVar("T")

_loaded: dict[str, Any] = {}
_owned: weakref.WeakSet[Shared[Any]] = weakref.WeakSet()
_loaded_lock = threading.Lock()
_HEADER = struct.Struct("<QQ")  # pickle bytes offset, length


class Shared(Generic[T]):
    """A handle to an object placed once in shared memory; ``get()`` returns it in any process."""

    def __init__(self, obj: T) -> None:
        if not shm.available():
            raise NotImplementedError("conveyor.shared needs POSIX shared memory")
        data, buffers = serialize.dumps_out_of_band(obj, threshold=0)
        data_at = shm.align(_HEADER.size)
        buffers_at = shm.align(data_at + len(data))
        segment = shm.Segment.create(f"conveyor-{os.getpid()}s", buffers_at + shm.span_size(buffers))
        try:
            segment.map[:_HEADER.size] = _HEADER.pack(data_at, len(data))
            segment.map[data_at:data_at + len(data)] = data
            spans = []
            view = memoryview(segment.map)
            offset = buffers_at
            for buffer in buffers:
                raw = buffer.raw()
                view[offset:offset + raw.nbytes] = raw
                spans.append((offset, raw.nbytes))
                offset += shm.align(raw.nbytes)
            view.release()
        except BaseException:
            segment.destroy()
            raise
        segment.map.close()
        self.name = segment.name
        self.spans = spans
        self.nbytes = segment.size
        # None in a handle attached from a pickle: only the creator removes the segment.
        self._creator: int | None = os.getpid()
        self._finalizer: weakref.finalize[[str], Shared[T]] | None = weakref.finalize(self, _remove, segment.name)
        _owned.add(self)

    @classmethod
    def attach(cls, name: str, spans: list[tuple[int, int]], nbytes: int) -> Shared[Any]:
        handle = cls.__new__(cls)
        handle.name, handle.spans, handle.nbytes = name, spans, nbytes
        handle._creator = None
        handle._finalizer = None
        return handle

    def __reduce__(self) -> Any:
        return (Shared.attach, (self.name, self.spans, self.nbytes))

    def get(self) -> T:
        """The object: mapped and unpickled on the first call in this process, then the same one.

        Raises:
            FileNotFoundError: the creator closed it before this process first read it.
        """
        obj = _loaded.get(self.name, _loaded)
        if obj is not _loaded:
            return obj
        with _loaded_lock:
            if self.name not in _loaded:
                try:
                    mapping = shm.open_map(self.name, readonly=True)
                except FileNotFoundError:
                    raise FileNotFoundError(
                        f"the shared object {self.name} was closed by its creator before this process read it"
                    ) from None
                data_at, length = _HEADER.unpack_from(mapping, 0)
                data = mapping[data_at:data_at + length]
                _loaded[self.name] = pickle.loads(data, buffers=shm.views(mapping, self.spans, readonly=True))
            return _loaded[self.name]

    def close(self) -> None:
        """Remove the segment (creator only; processes that read the object keep it)."""
        if self._finalizer is not None:
            self._finalizer()

    def __enter__(self) -> Shared[T]:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<conveyor.Shared {self.name} {self.nbytes} bytes>"


def _remove(name: str) -> None:
    # No _loaded_lock here: this finalizer may run inside a garbage collection in a thread that holds
    # it (get() unpickling); a single dict.pop is atomic anyway.
    shm.unlink(name)
    _loaded.pop(name, None)


@owned.on_exit
def release_owned() -> None:
    """Remove the segments of handles this process made (a worker, which exits without finalizers)."""
    me = os.getpid()
    for handle in list(_owned):
        if handle._creator == me:
            handle.close()


def _forget_after_fork() -> None:
    global _loaded_lock
    _loaded_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)


def shared(obj: T) -> Shared[T]:
    """Place ``obj`` once in shared memory; pass the returned handle to tasks, which call ``.get()``.

    Every process (worker) maps it and unpickles it once; NumPy arrays in it are read-only views of
    the one copy, never copied per task. Works the same under fork, forkserver and spawn.

    Example:
        >>> import conveyor
        >>> table = conveyor.shared({"a": 1})
        >>> table.get()["a"]
        1
        >>> table.close()
    """
    return Shared(obj)
