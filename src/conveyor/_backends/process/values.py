"""Shared numbers and arrays for worker processes: ``multiprocessing.Value``/``Array`` semantics
(``.value``, indexing, ``get_lock()``) without a manager process and without inheritance — they live
in a named shared-memory segment and travel to tasks by name, like the locks (``segments.py``)."""

from __future__ import annotations

import contextlib
import ctypes
from typing import Any

from conveyor._backends.process.segments import STATE_OFFSET, SegmentBacked, attach
from conveyor._backends.process.sync import ProcessRLock


class _Guarded(SegmentBacked):
    """A ctypes object in shared memory, read and written under an optional process RLock."""

    _lock: Any
    _obj: Any

    def get_lock(self) -> Any:
        if self._lock is None:
            raise AttributeError(f"this {type(self).__name__} was made with lock=False")
        return self._lock

    def get_obj(self) -> Any:
        """The ctypes object itself; it keeps this object (and so the shared memory under it) alive,
        as ``multiprocessing``'s does: used after its maker was dropped, it would read unmapped memory."""
        self._obj._conveyor_owner = self
        return self._obj

    def _guard(self) -> Any:
        return self._lock if self._lock is not None else contextlib.nullcontext()

    def _lock_argument(self) -> Any:
        return self._lock if self._lock is not None else False


class ProcessValue(_Guarded):
    """``multiprocessing.Value`` without a server or inheritance: a ctypes value in shared memory."""

    def __init__(self, typecode_or_type: Any, value: Any = 0, lock: Any = True, *, _name: str | None = None) -> None:
        self._type = _ctype(typecode_or_type)
        self._typecode = typecode_or_type
        self._fields = -(-ctypes.sizeof(self._type) // 8)
        self._init_segment(_name)
        self._obj = self._type.from_address(self._segment.base + STATE_OFFSET)
        self._lock = ProcessRLock() if lock is True else (lock or None)
        if _name is None:
            self._obj.value = value

    def __reduce__(self) -> Any:
        return (attach, (type(self), self._segment.name, (self._typecode,),
                          {"lock": self._lock_argument()}))

    @property
    def value(self) -> Any:
        with self._guard():
            return self._obj.value

    @value.setter
    def value(self, new: Any) -> None:
        with self._guard():
            self._obj.value = new


class ProcessArray(_Guarded):
    """``multiprocessing.Array`` without a server or inheritance: a ctypes array in shared memory."""

    def __init__(self, typecode_or_type: Any, size_or_initializer: Any, lock: Any = True, *,
                 _name: str | None = None, _length: int | None = None) -> None:
        self._typecode = typecode_or_type
        item = _ctype(typecode_or_type)
        initial = None
        if _length is not None:
            length = _length
        elif isinstance(size_or_initializer, int):
            length = size_or_initializer
        else:
            initial = list(size_or_initializer)
            length = len(initial)
        self._type = item * length
        self._fields = -(-max(ctypes.sizeof(self._type), 1) // 8)
        self._init_segment(_name)
        self._obj = self._type.from_address(self._segment.base + STATE_OFFSET)
        self._lock = ProcessRLock() if lock is True else (lock or None)
        if initial is not None:
            self._obj[:] = initial

    def __reduce__(self) -> Any:
        return (attach, (ProcessArray, self._segment.name, (self._typecode, len(self)),
                          {"lock": self._lock_argument(), "_length": len(self)}))

    def __len__(self) -> int:
        return len(self._obj)

    def __getitem__(self, index: Any) -> Any:
        with self._guard():
            return self._obj[index]

    def __setitem__(self, index: Any, value: Any) -> None:
        with self._guard():
            self._obj[index] = value


def _ctype(typecode_or_type: Any) -> Any:
    # The stdlib's own table of typecodes, undocumented and absent from the stubs.
    from multiprocessing.sharedctypes import typecode_to_type  # type: ignore[attr-defined]

    if isinstance(typecode_or_type, str):
        return typecode_to_type[typecode_or_type]
    return typecode_or_type
