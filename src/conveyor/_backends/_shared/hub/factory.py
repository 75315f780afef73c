"""The factory behind ``ctx.Lock()``, ``pool.Queue()`` and friends on a cluster engine.

An engine's factory (``dask/primitives.py``, ``ray/primitives.py``) only says how to open its
space in a hub (:meth:`HubPrimitives._open`) and how to close what it opened; making each object is
the same on every engine, here.

**Lifetime, one rule on every engine:** a factory's objects live while the process that made them
holds any of them (all of them: a queue kept alive keeps the event passed to a task alive too), or
until the factory is closed (a context closes its factory when it goes). Then they are dropped
from the hub at once, and later calls on them raise :class:`~conveyor.OwnerGoneError`, in every
process. The factory itself holds its space only weakly: a context or a pool whose objects are all
gone holds nothing on the cluster (no client, no hub) until it makes another.
"""

from __future__ import annotations

import threading
import types
import weakref
from typing import Any, Callable, Iterable

from conveyor._backends._shared.hub import data, sync
from conveyor._backends._shared.hub.space import Space
from conveyor._core.errors import unsupported


class HubPrimitives:
    """Makes primitives in a hub, in a space of its own opened on first use."""

    engine = "cluster"

    def __init__(self) -> None:
        self._opened: Callable[[], Space | None] = lambda: None
        self._lock = threading.Lock()

    def _open(self) -> Space:
        """A new space of this factory in a hub of the engine (called under the factory's lock)."""
        raise NotImplementedError

    def _closed(self, space: Space) -> None:
        """After :meth:`close` dropped ``space``: release what opening it took (an engine's client)."""

    def _space(self) -> Space:
        with self._lock:
            space = self._opened()
            if space is None:
                space = self._open()
                self._opened = weakref.ref(space)
            return space

    def close(self) -> None:
        """Drop this factory's objects from their hub now; later calls on them raise OwnerGoneError."""
        with self._lock:
            space, self._opened = self._opened(), lambda: None
        if space is not None:
            space.close()
            self._closed(space)

    def Lock(self) -> sync.Lock:  # noqa: N802 - the stdlib's names
        return sync.Lock(self._space())

    def RLock(self) -> sync.RLock:  # noqa: N802
        return sync.RLock(self._space())

    def Condition(self, lock: Any = None) -> sync.Condition:  # noqa: N802
        return sync.Condition(self._space(), lock)

    def Semaphore(self, value: int = 1) -> sync.Semaphore:  # noqa: N802
        return sync.Semaphore(self._space(), value)

    def BoundedSemaphore(self, value: int = 1) -> sync.BoundedSemaphore:  # noqa: N802
        return sync.BoundedSemaphore(self._space(), value)

    def Event(self) -> sync.Event:  # noqa: N802
        return sync.Event(self._space())

    def Barrier(self, parties: int, action: Callable[[], Any] | None = None,  # noqa: N802
                timeout: float | None = None) -> sync.Barrier:
        return sync.Barrier(self._space(), parties, action, timeout)

    def Queue(self, maxsize: int = 0) -> data.Queue:  # noqa: N802
        return data.Queue(self._space(), maxsize)

    def LifoQueue(self, maxsize: int = 0) -> data.LifoQueue:  # noqa: N802
        return data.LifoQueue(self._space(), maxsize)

    def PriorityQueue(self, maxsize: int = 0) -> data.PriorityQueue:  # noqa: N802
        return data.PriorityQueue(self._space(), maxsize)

    def Value(self, typecode_or_type: Any, value: Any = 0, lock: Any = True) -> data.Value:  # noqa: N802
        return data.Value(self._space(), typecode_or_type, value, lock)

    def Array(self, typecode_or_type: Any, size_or_initializer: Any, lock: Any = True) -> data.Array:  # noqa: N802
        return data.Array(self._space(), typecode_or_type, size_or_initializer, lock)

    def dict(self, *args: Any, **kwargs: Any) -> data.Dict:
        return data.make_container(data.Dict, self._space(), dict(*args, **kwargs))  # type: ignore[no-any-return]

    def list(self, iterable: Iterable[Any] = ()) -> data.List:
        return data.make_container(data.List, self._space(), list(iterable))  # type: ignore[no-any-return]

    def Namespace(self, **attributes: Any) -> data.Namespace:  # noqa: N802
        return data.make_container(data.Namespace, self._space(),  # type: ignore[no-any-return]
                                   types.SimpleNamespace(**attributes))

    # Not made on a cluster (the engines' ``capabilities.primitives`` leave them out, so the front
    # end refuses them first); here for a caller of the factory itself.
    def Pipe(self, duplex: bool = True) -> tuple[Any, Any]:  # noqa: N802
        raise unsupported("Pipe", self.engine, "use a Queue (or two, one each way)")

    def SharedArray(self, shape: Any, dtype: Any = "float64", lock: bool = True) -> Any:  # noqa: N802
        raise unsupported("SharedArray", self.engine, "use Array")
