"""The factory behind ``conveyor.context("dask").Lock()``, ``pool.Queue()`` and friends on Dask.

What each object is built on, and why, is in the modules that build them: ``dask/sync.py`` (locks,
events, semaphores, conditions, barriers), ``dask/queues.py``, ``dask/shared.py`` (values, arrays,
containers); ``dask/connection.py`` says how they reach the cluster, ``dask/hub.py`` is the actor
that keeps what Dask's scheduler cannot. Semantics are the standard library's; the differences are
in ``docs/clusters.md``.

A factory's objects share one connection (a Dask client of the factory's own, opened with the first
object) and, once one needs it, one hub actor. The objects hold them, the factory only refers to
them: a pool's primitives keep working after the pool is shut down (on a cluster that outlives the
pool), and the client is closed when the last of them is gone, or at once by
:meth:`DaskPrimitives.close` (a context that started its own cluster calls it before closing it).
"""

from __future__ import annotations

import threading
import types
import weakref
from typing import Any, Callable, Iterable

from conveyor._backends.dask.connection import Connection, HubRef
from conveyor._backends.dask.queues import DaskLifoQueue, DaskPriorityQueue, DaskQueue
from conveyor._backends.dask.shared import (
    DaskArray,
    DaskDict,
    DaskList,
    DaskNamespace,
    DaskValue,
    make_container,
)
from conveyor._backends.dask.sync import (
    DaskBarrier,
    DaskBoundedSemaphore,
    DaskCondition,
    DaskEvent,
    DaskLock,
    DaskRLock,
    DaskSemaphore,
)
from conveyor._core.errors import unsupported


class DaskPrimitives:
    """Makes primitives on the Dask cluster whose scheduler is at ``address``, through a client of
    its own, or through ``client`` (borrowed: the objects go when its owner closes it).

    The factory holds its connection and its hub only weakly: its objects hold them. So a context
    or a pool whose primitives are all gone has no client open (and no hub) until it makes another.
    """

    def __init__(self, address: str, client: Any = None) -> None:
        self._address = address
        self._borrowed = client
        self._connection_ref: Callable[[], Connection | None] = lambda: None
        self._hub_ref: Callable[[], HubRef | None] = lambda: None
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close this factory's own client now (its objects stop working; its hub goes with it)."""
        connection = self._connection_ref()
        if connection is not None:
            connection.close()

    @property
    def _connection(self) -> Connection:
        with self._lock:
            connection = self._connection_ref()
            if connection is None:
                connection = Connection(self._address, self._borrowed)
                self._connection_ref = weakref.ref(connection)
            return connection

    def _hub(self) -> HubRef:
        """The hub actor, started when first needed (a Dask task: it waits for a free worker thread)."""
        connection = self._connection
        with self._lock:
            hub = self._hub_ref()
            if hub is None:
                hub = HubRef.start(connection)
                self._hub_ref = weakref.ref(hub)
            return hub

    def _guard(self, lock: Any) -> Any:
        """A value's or array's lock: a new cluster RLock for ``True``, none for ``False``."""
        if lock is True:
            return DaskRLock(self._connection)
        return lock or None

    def Lock(self) -> DaskLock:  # noqa: N802 - the stdlib's names
        return DaskLock(self._connection)

    def RLock(self) -> DaskRLock:  # noqa: N802
        return DaskRLock(self._connection)

    def Condition(self, lock: Any = None) -> DaskCondition:  # noqa: N802
        return DaskCondition(self._hub(), DaskRLock(self._connection) if lock is None else lock)

    def Semaphore(self, value: int = 1) -> DaskSemaphore:  # noqa: N802
        return DaskSemaphore(self._hub(), value)

    def BoundedSemaphore(self, value: int = 1) -> DaskBoundedSemaphore:  # noqa: N802
        return DaskBoundedSemaphore(self._hub(), value)

    def Event(self) -> DaskEvent:  # noqa: N802
        return DaskEvent(self._connection)

    def Barrier(self, parties: int, action: Callable[[], Any] | None = None,  # noqa: N802
                timeout: float | None = None) -> DaskBarrier:
        return DaskBarrier(self._hub(), parties, action, timeout)

    def Queue(self, maxsize: int = 0) -> DaskQueue:  # noqa: N802
        return DaskQueue(self._hub(), maxsize)

    def LifoQueue(self, maxsize: int = 0) -> DaskLifoQueue:  # noqa: N802
        return DaskLifoQueue(self._hub(), maxsize)

    def PriorityQueue(self, maxsize: int = 0) -> DaskPriorityQueue:  # noqa: N802
        return DaskPriorityQueue(self._hub(), maxsize)

    def Value(self, typecode_or_type: Any, value: Any = 0, lock: Any = True) -> DaskValue:  # noqa: N802
        return DaskValue(self._connection, typecode_or_type, value, self._guard(lock))

    def Array(self, typecode_or_type: Any, size_or_initializer: Any, lock: Any = True) -> DaskArray:  # noqa: N802
        return DaskArray(self._hub(), typecode_or_type, size_or_initializer, self._guard(lock))

    def dict(self, *args: Any, **kwargs: Any) -> DaskDict:
        return make_container(DaskDict, self._hub(), dict(*args, **kwargs))  # type: ignore[no-any-return]

    def list(self, iterable: Iterable[Any] = ()) -> DaskList:
        return make_container(DaskList, self._hub(), list(iterable))  # type: ignore[no-any-return]

    def Namespace(self, **attributes: Any) -> DaskNamespace:  # noqa: N802
        return make_container(DaskNamespace, self._hub(), types.SimpleNamespace(**attributes))  # type: ignore[no-any-return]

    # Not made on Dask (``DaskBackend.capabilities.primitives`` leaves them out, so the front end
    # refuses them first); here for a caller of the factory itself.
    def Pipe(self, duplex: bool = True) -> tuple[Any, Any]:  # noqa: N802
        raise unsupported("Pipe", "dask", "use a Queue (or two, one each way)")

    def SharedArray(self, shape: Any, dtype: Any = "float64", lock: bool = True) -> Any:  # noqa: N802
        raise unsupported("SharedArray", "dask", "use Array")
