"""Shared ``Value``, ``Array``, ``dict``, ``list`` and ``Namespace`` on a Dask cluster.

``Value`` is a Dask ``Variable`` (kept by the scheduler: one round trip to read or write it), with
a cluster ``RLock`` for read-modify-write, as ``multiprocessing.Value`` has. ``Array`` and the
containers live in the factory's hub actor (``dask/hub.py``), where each operation is one atomic
step: an element written by one process never undoes another's write to another element, and
the containers keep the process backend's interface (``DictProxy`` and friends: ``modify``,
snapshots for views, values as copies). Values convert as ``ctypes`` converts them, as in the
standard library: ``Value("i", ...)`` refuses a float.
"""

from __future__ import annotations

import contextlib
import pickle
import weakref
from typing import Any, Callable

from conveyor._backends._shared.managed.proxies import DictProxy, ListProxy, NamespaceProxy
from conveyor._backends.dask.connection import ANSWER_SECONDS, Connection, HubRef, Named, OnHub, dispose
from conveyor._core import serialize


def item_type(typecode_or_type: Any) -> Any:
    """The ctypes type of a ``multiprocessing`` typecode (``"i"``, ``"d"``...), or the type given."""
    # The stdlib's own table of typecodes, undocumented and absent from the stubs.
    from multiprocessing.sharedctypes import typecode_to_type  # type: ignore[attr-defined]

    return typecode_to_type.get(typecode_or_type, typecode_or_type)


class _Guarded:
    """``get_lock()`` as ``multiprocessing``'s synchronized values have it."""

    _lock: Any

    def get_lock(self) -> Any:
        if self._lock is None:
            raise AttributeError(f"this {type(self).__name__} was made with lock=False")
        return self._lock


class DaskValue(_Guarded, Named):
    """``multiprocessing.Value`` on the cluster: ``.value`` in a Dask ``Variable``.

    ``counter.value += 1`` is a read and a write: hold ``get_lock()`` around it, as with
    ``multiprocessing``.
    """

    _kind = "value"

    def __init__(self, connection: Connection, typecode_or_type: Any, value: Any, lock: Any) -> None:
        self._create(connection, typecode_or_type, lock)
        self.value = value

    def _state(self) -> tuple[Any, ...]:
        return (self._typecode, self._lock)

    def _bind(self, connection: Connection, typecode_or_type: Any, lock: Any) -> None:
        self._typecode = typecode_or_type
        self._type = item_type(typecode_or_type)
        self._lock = lock
        self._variable = connection.variable(self._name)
        if self._owner:  # Dask keeps a variable until it is deleted
            weakref.finalize(self, dispose, connection.loop, self._variable.delete).atexit = False

    @property
    def value(self) -> Any:
        try:
            return self._variable.get(timeout=ANSWER_SECONDS)
        except TimeoutError:  # a variable is set when it is made: this one was deleted
            raise ReferenceError("this shared Value no longer exists: the process that made it dropped "
                                 "its last reference to it") from None

    @value.setter
    def value(self, new: Any) -> None:
        self._variable.set(self._type(new).value)  # converted (or refused) as ctypes does


class DaskArray(_Guarded, OnHub):
    """``multiprocessing.Array`` on the cluster: a ctypes array in the hub. Indexing and slicing
    are one call each; ``len()`` is known locally."""

    _holds = "array"
    _kind = "Array"

    def __init__(self, hub: HubRef, typecode_or_type: Any, size_or_initializer: Any, lock: Any) -> None:
        if not isinstance(size_or_initializer, int):
            size_or_initializer = list(size_or_initializer)
        self._create(hub, item_type(typecode_or_type), size_or_initializer)
        length = size_or_initializer if isinstance(size_or_initializer, int) else len(size_or_initializer)
        self._restore(typecode_or_type, length, lock)

    def _state(self) -> tuple[Any, ...]:
        return (self._typecode, self._length, self._lock)

    def _restore(self, typecode_or_type: Any, length: int, lock: Any) -> None:
        self._typecode, self._length, self._lock = typecode_or_type, length, lock

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: Any) -> Any:
        return self._call("getitem", index)

    def __setitem__(self, index: Any, value: Any) -> None:
        if isinstance(index, slice):
            value = list(value)
        self._call("setitem", index, value)

    def __iter__(self) -> Any:
        return iter(self[:])


class _Contained(OnHub):
    """The transport of a shared container: each of the process backend's proxy operations is one
    hub call (arguments and results pickled here and in the hub, so they are copies)."""

    _holds = "container"

    def _call(self, op: str, *args: Any, timeout: float | None = 0.0,  # noqa: ARG002
              undo: tuple[str, tuple[Any, ...]] | None = None) -> Any:  # OnHub's signature (only locks undo)
        return pickle.loads(self._hub.call(self._kind, self._key, "apply", op, serialize.dumps(args)))

    def _repr_of(self, fetch: Callable[[], str]) -> str:
        with contextlib.suppress(Exception):  # a repr must not raise (it is used in error messages)
            return fetch()
        return f"<{type(self).__name__} {self._key} (unreachable)>"

    def __repr__(self) -> str:
        return super(OnHub, self).__repr__()  # the proxy's: its contents


class DaskDict(_Contained, DictProxy):
    """A ``dict`` kept by the hub, with the process backend's ``DictProxy`` interface."""

    _kind = "dict"  # (OnHub's would hide the proxy's)


class DaskList(_Contained, ListProxy):
    """A ``list`` kept by the hub, with the process backend's ``ListProxy`` interface."""

    _kind = "list"  # (OnHub's would hide the proxy's)


class DaskNamespace(_Contained, NamespaceProxy):
    """Attributes kept by the hub, with the process backend's ``NamespaceProxy`` interface."""

    _kind = "Namespace"  # (OnHub's would hide the proxy's)


def make_container(cls: type[_Contained], hub: HubRef, value: Any) -> Any:
    obj = object.__new__(cls)
    obj._create(hub, serialize.dumps(value))
    return obj
