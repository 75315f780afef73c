"""``ctx.SharedArray(shape, dtype)``: one writable NumPy array that every worker sees, with a lock.

On the process backend the array lives in a named shared-memory segment and pickles by name, so it
reaches tasks of a running pool under every start method (each process maps it once, and writes are
seen by all at once: no copy, no message). On threads and serial it is a plain array. It is the one
object whose writes cross processes: inputs and results are copies, ``conveyor.shared`` is read-only.

Writes are not atomic: guard read-modify-write with ``get_lock()`` (a process-safe RLock on processes).
"""

from __future__ import annotations

import math
import os
import threading
import weakref
from typing import Any

from conveyor._core import owned, shm

_attached: weakref.WeakValueDictionary[str, SharedArray] = weakref.WeakValueDictionary()
_attach_lock = threading.Lock()
_owned: weakref.WeakSet[SharedArray] = weakref.WeakSet()


def _numpy() -> Any:
    try:
        import numpy
    except ImportError as exc:  # pragma: no cover - numpy is optional
        raise ImportError("SharedArray needs NumPy: pip install numpy") from exc
    return numpy


def plain_dtype(dtype: Any) -> Any:
    """``numpy.dtype(dtype)``, refused when it holds Python objects.

    Raises:
        TypeError: an object dtype (its elements would be pointers into one process's memory:
            garbage, or a crash, in any other).
    """
    result = _numpy().dtype(dtype)
    if result.hasobject:
        raise TypeError(f"SharedArray needs a dtype of plain values (numbers, strings, records of them), "
                        f"not {result!r}, which holds Python objects")
    return result


class SharedArray:
    """A NumPy array visible to every worker; ``.array`` is the ndarray, indexing works directly.

    Args:
        shape: an int or a tuple of ints.
        dtype: anything ``numpy.dtype`` accepts.
        lock: the lock ``get_lock()`` returns (the factory passes one that fits its workers), or None.
    """

    def __init__(self, shape: Any, dtype: Any = "float64", lock: Any = None, *, in_process: bool = False,
                 _name: str | None = None) -> None:
        np = _numpy()
        self.shape = (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(int(n) for n in shape)
        self.dtype = plain_dtype(dtype)
        self._lock = lock
        self._finalizer: Any = None
        self.name: str | None = None
        if in_process:
            self.array = np.zeros(self.shape, self.dtype)
            return
        nbytes = max(math.prod(self.shape) * self.dtype.itemsize, 1)
        if _name is None:
            segment = shm.Segment.create(f"conveyor-{os.getpid()}", nbytes)  # zero-filled
            mapping = segment.map
            self.name = segment.name
            self._creator = os.getpid()
            self._finalizer = weakref.finalize(self, shm.unlink, segment.name)
            _owned.add(self)
        else:
            mapping = shm.open_map(_name, private=False)
            self.name = _name
        self.array = np.ndarray(self.shape, self.dtype, buffer=mapping)

    def __reduce__(self) -> Any:
        if self.name is None:
            raise TypeError("this SharedArray belongs to a thread or serial context: it is not sent to processes")
        return (attach, (self.name, self.shape, self.dtype.str, self._lock))

    def get_lock(self) -> Any:
        if self._lock is None:
            raise AttributeError("this SharedArray was made with lock=False")
        return self._lock

    def __array__(self, dtype: Any = None, copy: Any = None) -> Any:
        return self.array if dtype is None else self.array.astype(dtype)

    def __getitem__(self, index: Any) -> Any:
        return self.array[index]

    def __setitem__(self, index: Any, value: Any) -> None:
        self.array[index] = value

    def __len__(self) -> int:
        return len(self.array)

    def __repr__(self) -> str:
        where = self.name or "in-process"
        return f"<conveyor.SharedArray {where} shape={self.shape} dtype={self.dtype}>"


def attach(name: str, shape: tuple[int, ...], dtype: str, lock: Any) -> SharedArray:
    """In a task: the array by name, mapped once per process."""
    with _attach_lock:
        existing = _attached.get(name)
        if existing is None:
            existing = SharedArray(shape, dtype, lock, _name=name)
            _attached[name] = existing
        return existing


@owned.on_exit
def release_owned() -> None:
    """Remove the segments of arrays this process made (a worker, which exits without finalizers)."""
    me = os.getpid()
    for array in list(_owned):
        if array._creator == me and array._finalizer is not None:
            array._finalizer()


def _forget_after_fork() -> None:
    global _attach_lock
    _attached.clear()
    _attach_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)
