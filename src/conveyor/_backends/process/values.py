"""Shared numbers and arrays for worker processes: ``multiprocessing.Value``/``Array`` semantics
(``.value``, indexing, ``get_lock()``) without a manager process and without inheritance — they live
in a named shared-memory segment and travel to tasks by name, like the locks in ``sync.py``."""

from __future__ import annotations

import ctypes
from typing import Any

from conveyor._backends.process.sync import _STATE, ProcessRLock, _attach, _Shared


class ProcessValue(_Shared):
    """``multiprocessing.Value`` without a server or inheritance: a ctypes value in shared memory."""

    def __init__(self, typecode_or_type: Any, value: Any = 0, lock: Any = True, *, _name: str | None = None) -> None:
        self._type = _ctype(typecode_or_type)
        self._typecode = typecode_or_type
        self._fields = -(-ctypes.sizeof(self._type) // 8)
        self._init_segment(_name)
        self._obj = self._type.from_address(self._segment.base + _STATE)
        self._lock = ProcessRLock() if lock is True else (lock or None)
        if _name is None:
            self._obj.value = value

    def __reduce__(self) -> Any:
        return (_attach, (type(self), self._segment.name, (self._typecode,),
                          {"lock": self._lock if self._lock is not None else False}))

    def get_lock(self) -> Any:
        if self._lock is None:
            raise AttributeError("this Value was made with lock=False")
        return self._lock

    def get_obj(self) -> Any:
        return self._obj

    @property
    def value(self) -> Any:
        if self._lock is None:
            return self._obj.value
        with self._lock:
            return self._obj.value

    @value.setter
    def value(self, new: Any) -> None:
        if self._lock is None:
            self._obj.value = new
            return
        with self._lock:
            self._obj.value = new


class ProcessArray(_Shared):
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
        self._obj = self._type.from_address(self._segment.base + _STATE)
        self._lock = ProcessRLock() if lock is True else (lock or None)
        if initial is not None:
            self._obj[:] = initial

    def __reduce__(self) -> Any:
        return (_attach, (ProcessArray, self._segment.name, (self._typecode, len(self)),
                          {"lock": self._lock if self._lock is not None else False, "_length": len(self)}))

    def get_lock(self) -> Any:
        if self._lock is None:
            raise AttributeError("this Array was made with lock=False")
        return self._lock

    def get_obj(self) -> Any:
        return self._obj

    def __len__(self) -> int:
        return len(self._obj)

    def __getitem__(self, index: Any) -> Any:
        if self._lock is None:
            return self._obj[index]
        with self._lock:
            return self._obj[index]

    def __setitem__(self, index: Any, value: Any) -> None:
        if self._lock is None:
            self._obj[index] = value
            return
        with self._lock:
            self._obj[index] = value


def _ctype(typecode_or_type: Any) -> Any:
    from multiprocessing.sharedctypes import typecode_to_type

    if isinstance(typecode_or_type, str):
        return typecode_to_type[typecode_or_type]
    return typecode_or_type
