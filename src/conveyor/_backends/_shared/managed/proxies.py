"""The proxies every process holds: a ``dict``, ``list`` or ``Namespace`` API over one object of an owner.

A proxy is only a reference, ``(kind, address, owner pid, key, object id)``, so it pickles small and
reconnects wherever it is unpickled. Where it is bound decides the path of a call: in the owner it
holds a count on the object and calls the server directly; anywhere else it goes through ``client``.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Iterable, Iterator, MutableMapping, MutableSequence
from typing import Any, Callable, Literal

from conveyor._backends._shared.managed import client
from conveyor._backends._shared.managed.errors import released_error
from conveyor._backends._shared.managed.ops import MISSING
from conveyor._backends._shared.managed.server import Server, local_server

__all__ = ["DictProxy", "ListProxy", "NamespaceProxy"]


def _rebuild(cls: type[_Proxy], ref: tuple[Any, ...]) -> Any:
    """Unpickle a proxy.

    A pickled proxy names this function and its class by module path
    (``conveyor._backends._shared.managed.proxies``): keep them in this module, under these names.
    """
    return cls._attach_new(ref)


class _Proxy:
    """What every process holds: (kind, address, owner pid, key, object id), and how to reach it."""

    __slots__ = ("_ref", "_pid", "_server", "__weakref__")
    _kind = "container"
    # Set with object.__setattr__ (a NamespaceProxy's own __setattr__ goes to the object it shares).
    _ref: tuple[Any, ...]
    _pid: int
    _server: Server | Literal[False] | None  # the local server; False: ours, but released; None: remote

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError(f"make a shared {self._kind} with conveyor.context('process').{self._kind}(...)")

    @classmethod
    def _attach_new(cls, ref: tuple[Any, ...], server: Server | None = None) -> Any:
        self = object.__new__(cls)
        object.__setattr__(self, "_ref", ref)
        self.attach(server)
        return self

    def attach(self, counted: Server | None = None) -> None:
        """Bind to this process: the local server when it owns the object, else a remote endpoint."""
        ref = self._ref
        pid = os.getpid()
        object.__setattr__(self, "_pid", pid)
        srv = counted or local_server(ref[1])
        if srv is not None and (counted is not None or srv.add_ref(ref[4])):
            object.__setattr__(self, "_server", srv)
            weakref.finalize(self, srv.release, ref[4])
        elif ref[2] == pid:
            object.__setattr__(self, "_server", False)  # ours, but already released
        else:
            object.__setattr__(self, "_server", None)
            client.attach(ref[1])
            weakref.finalize(self, client.detach, ref[1], pid)

    def _call(self, op: str, *args: Any) -> Any:
        if self._pid != os.getpid():
            self.attach()  # a forked child using its parent's proxy
        srv = self._server
        if srv:
            return srv.call_local(self._ref[4], op, args, self._kind)
        if srv is False:
            raise released_error(self._kind, self._ref[2])
        return client.call(self._ref, op, args)

    def __reduce__(self) -> Any:
        return (_rebuild, (type(self), self._ref))

    def _repr_of(self, fetch: Callable[[], str]) -> str:
        try:
            return fetch()
        except Exception as exc:  # noqa: BLE001 - a repr must not raise (it is used in error messages)
            return f"<{type(self).__name__} of process {self._ref[2]}: {type(exc).__name__}>"


class _Collection(_Proxy):
    """What a shared dict and a shared list have in common (unhashable, as they are)."""

    __slots__ = ()
    __hash__ = None  # type: ignore[assignment]

    def __getitem__(self, key: Any) -> Any:
        return self._call("getitem", key)

    def __delitem__(self, key: Any) -> None:
        self._call("delitem", key)

    def __contains__(self, item: Any) -> bool:
        return bool(self._call("contains", item))

    def __len__(self) -> int:
        return int(self._call("len"))

    def __eq__(self, other: Any) -> bool:
        return bool(self._call("copy") == other)

    def clear(self) -> None:
        self._call("clear")


def _plain_pairs(other: Any) -> Any:
    if isinstance(other, DictProxy):
        return other.copy()
    if hasattr(other, "keys"):
        return {key: other[key] for key in other.keys()}  # noqa: SIM118 - the mapping protocol
    return list(other)


def _plain_list(values: Iterable[Any]) -> list[Any]:
    return values.copy() if isinstance(values, ListProxy) else list(values)


class DictProxy(_Collection):
    """A ``dict`` that lives in the process that made it and works from any process.

    Each method is one atomic step. ``keys()``, ``values()`` and ``items()`` are views of a snapshot,
    and iteration goes over a snapshot of the keys. Values are copies: mutating one in place
    (``d[k].append(x)``) changes the copy only; write it back, or store a shared container in it.
    """

    __slots__ = ()
    _kind = "dict"

    def __setitem__(self, key: Any, value: Any) -> None:
        self._call("setitem", key, value)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._call("keys"))

    def __reversed__(self) -> Iterator[Any]:
        return reversed(self._call("keys"))

    def __or__(self, other: Any) -> Any:
        return self.copy() | other

    def __ror__(self, other: Any) -> Any:
        return other | self.copy()

    def __ior__(self, other: Any) -> DictProxy:
        self.update(other)
        return self

    def __repr__(self) -> str:
        return self._repr_of(lambda: f"DictProxy({self.copy()!r})")

    def copy(self) -> dict[Any, Any]:
        """A plain ``dict`` with the current contents."""
        return self._call("copy")  # type: ignore[no-any-return]

    def keys(self) -> Any:
        return dict.fromkeys(self._call("keys")).keys()

    def values(self) -> Any:
        return self.copy().values()

    def items(self) -> Any:
        return self.copy().items()

    def get(self, key: Any, default: Any = None) -> Any:
        return self._call("get", key, default)

    def pop(self, key: Any, *default: Any) -> Any:
        if len(default) > 1:
            raise TypeError(f"pop expected at most 2 arguments, got {1 + len(default)}")
        return self._call("pop", key, *default)

    def popitem(self) -> tuple[Any, Any]:
        return self._call("popitem")  # type: ignore[no-any-return]

    def setdefault(self, key: Any, default: Any = None) -> Any:
        return self._call("setdefault", key, default)

    def update(self, other: Any = (), /, **kwargs: Any) -> None:
        self._call("update", _plain_pairs(other), kwargs)

    def modify(self, key: Any, fn: Callable[..., Any], *args: Any, default: Any = MISSING) -> Any:
        """Atomically ``d[key] = fn(d[key], *args)``; returns the new value.

        ``default`` is used when the key is missing (else KeyError). ``fn`` runs in the process that
        made the dict, while every other access waits: keep it short. Example:
        ``d.modify("hits", operator.add, 1, default=0)``.
        """
        return self._call("modify", key, fn, args, default)


class ListProxy(_Collection):
    """A ``list`` that lives in the process that made it and works from any process.

    Each method is one atomic step; slicing and iteration return (go over) copies. Elements are
    copies: ``lst[0].append(x)`` changes a copy only.
    """

    __slots__ = ()
    _kind = "list"

    def __setitem__(self, index: Any, value: Any) -> None:
        if isinstance(index, slice):
            value = _plain_list(value)
        self._call("setitem", index, value)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.copy())

    def __reversed__(self) -> Iterator[Any]:
        return reversed(self.copy())

    def __lt__(self, other: Any) -> bool:
        return bool(self.copy() < other)

    def __le__(self, other: Any) -> bool:
        return bool(self.copy() <= other)

    def __gt__(self, other: Any) -> bool:
        return bool(self.copy() > other)

    def __ge__(self, other: Any) -> bool:
        return bool(self.copy() >= other)

    def __add__(self, other: list[Any] | ListProxy) -> list[Any]:  # what a list adds (and, here, a ListProxy)
        return self.copy() + (other.copy() if isinstance(other, ListProxy) else other)

    def __radd__(self, other: Any) -> list[Any]:
        return other + self.copy()  # type: ignore[no-any-return]

    def __iadd__(self, other: Iterable[Any]) -> ListProxy:  # any iterable, as list's own ``+=``
        self.extend(other)
        return self

    def __mul__(self, times: int) -> list[Any]:
        return self.copy() * times

    __rmul__ = __mul__

    def __imul__(self, times: int) -> ListProxy:
        self._call("imul", times)
        return self

    def __repr__(self) -> str:
        return self._repr_of(lambda: f"ListProxy({self.copy()!r})")

    def copy(self) -> list[Any]:
        """A plain ``list`` with the current contents."""
        return self._call("copy")  # type: ignore[no-any-return]

    def append(self, value: Any) -> None:
        self._call("append", value)

    def extend(self, values: Iterable[Any]) -> None:
        self._call("extend", _plain_list(values))

    def insert(self, index: int, value: Any) -> None:
        self._call("insert", index, value)

    def pop(self, index: int = -1) -> Any:
        return self._call("pop", index)

    def remove(self, value: Any) -> None:
        self._call("remove", value)

    def index(self, value: Any, *bounds: int) -> int:
        return int(self._call("index", value, *bounds))

    def count(self, value: Any) -> int:
        return int(self._call("count", value))

    def reverse(self) -> None:
        self._call("reverse")

    def sort(self, *, key: Callable[[Any], Any] | None = None, reverse: bool = False) -> None:
        self._call("sort", key, reverse)

    def modify(self, index: int, fn: Callable[..., Any], *args: Any) -> Any:
        """Atomically ``lst[index] = fn(lst[index], *args)``; returns the new value."""
        return self._call("modify", index, fn, args, MISSING)


class NamespaceProxy(_Proxy):
    """Attributes that live in the process that made them: ``ns.x = 1`` anywhere, ``ns.x`` anywhere.

    Names starting with ``_`` belong to the proxy and are not shared. ``ns.x += 1`` is a read then a
    write: not atomic across processes.
    """

    __slots__ = ()
    _kind = "Namespace"

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return self._call("getattr", name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            raise AttributeError(f"{name!r}: names starting with '_' are not shared by a Namespace")
        self._call("setattr", name, value)

    def __delattr__(self, name: str) -> None:
        if name.startswith("_"):
            raise AttributeError(f"{name!r}: names starting with '_' are not shared by a Namespace")
        self._call("delattr", name)

    def __repr__(self) -> str:
        def fetch() -> str:
            fields = ", ".join(f"{name}={value!r}" for name, value in self._call("vars").items())
            return f"Namespace({fields})"

        return self._repr_of(fetch)


MutableMapping.register(DictProxy)
MutableSequence.register(ListProxy)
