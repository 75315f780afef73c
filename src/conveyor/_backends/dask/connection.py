"""How a Dask primitive reaches its cluster from wherever it is used: which client, which hub.

::

    the caller                                         a Dask worker running a task
    ctx.Lock() / pool.Queue()                          the same object, unpickled by name
      └─ factory ─ Connection: a client of our own      └─ WorkerConnection: the worker's client
                    (opened on first use, closed              (the worker's to close)
                     when the factory and all its
                     objects are gone)
                          │                                     │
                          └──► hub actor on a worker (dask/hub.py) ◄────┘

An object never looks for a client when it is unpickled: Dask unpickles a task's arguments before
the task runs, outside it. It binds on first use, to the worker it runs on if it is in a Dask task,
else to a client of its own to the scheduler it names (shared by every such object of this process,
and closed with the last of them). Objects made by a factory use the factory's connection.

How a wait is cut into slices, and everything else the primitives do, is the same on every
engine: ``_shared/hub``.
"""

from __future__ import annotations

import gc
import threading
import weakref
from typing import Any, Callable

import distributed
from distributed.actor import Actor

from conveyor._core.errors import OwnerGoneError


def dispose(loop: Any, job: Callable[..., Any], *args: Any) -> None:
    """Run ``job`` on a Dask event loop without waiting for it: clean-up from a finalizer, which
    may run in any thread, the loop's own included, or after the loop has closed (then: nothing)."""
    try:
        loop.add_callback(job, *args)
    except Exception:  # noqa: BLE001 - the loop is closed: what the job would clean went with it
        pass


def _close_client(client: Any) -> None:
    try:
        client.close()
    except Exception:  # noqa: BLE001 - the scheduler is gone: nothing left to close
        pass


def _close_later(client: Any) -> None:
    """Close a client from a finalizer. Closing waits for the client's event loop thread, under a
    lock that Dask also holds while it starts a client; a finalizer run by the garbage collector
    may be inside either (in a loop thread that is starting, say), so it only asks the client's own
    loop to start a short-lived thread that closes it."""
    try:
        client.loop.add_callback(_start_closer, client)
    except Exception:  # noqa: BLE001 - its loop is closed: so is the client
        pass


def _start_closer(client: Any) -> None:
    threading.Thread(target=_close_client, args=(client,), name="conveyor-dask-close", daemon=True).start()


_collections = [0]


def _count_collections(phase: str, info: dict[str, Any]) -> None:
    _collections[0] += 1 if phase == "start" else -1


gc.callbacks.append(_count_collections)  # so that close() knows whether it runs in a collection


class Connection:
    """A client of our own to ``address``, opened on first use and closed by :meth:`close` or when
    the last object holding this connection is garbage-collected; or someone else's ``client``,
    borrowed (never closed here)."""

    def __init__(self, address: str, client: Any = None) -> None:
        self.address = address
        self._client: Any = client
        self._closer: weakref.finalize | None = None
        self._closed = False
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        if self._client is None:
            with self._lock:
                if self._closed:
                    raise OwnerGoneError("the context or pool that made this object is closed, and its "
                                         "connection to the Dask cluster with it")
                if self._client is None:
                    client = distributed.Client(self.address, set_as_default=False)
                    self._closer = weakref.finalize(self, _close_later, client)
                    self._closer.atexit = False  # at exit Dask closes its clients itself
                    self._client = client
        return self._client

    @property
    def loop(self) -> Any:
        return self.client.loop

    def close(self) -> None:
        """Close our client now (later, from a garbage collection: see :func:`_close_later`)."""
        with self._lock:
            self._closed = True
            closer = self._closer
        if closer is not None and closer.detach() is not None:
            (_close_later if _collections[0] else _close_client)(self._client)

    def actor(self, pickled: tuple[Any, ...]) -> Any:
        """A handle on the actor that Dask pickled as ``pickled``, calling through our client."""
        client = self.client
        with client.as_current():  # an actor handle binds to the current client when made
            return Actor(*pickled)


class WorkerConnection(Connection):
    """Inside a Dask task: the worker's own scheduler connection and client (never ours to close)."""

    def __init__(self, worker: Any) -> None:
        super().__init__(worker.scheduler.address)
        self._worker = worker
        self._client = distributed.get_client()  # in a task: the worker's client

    @property
    def loop(self) -> Any:
        return self._worker.loop

    def close(self) -> None:
        pass

    def actor(self, pickled: tuple[Any, ...]) -> Any:
        return Actor(*pickled)  # binds itself to the worker it is made on


_shared: weakref.WeakValueDictionary[str, Connection] = weakref.WeakValueDictionary()
_shared_lock = threading.Lock()


def connection_for(address: str) -> Connection:
    """The connection for an object unpickled in this process, at its first use: the worker's in a
    Dask task; the default client's where the program made one for that scheduler (a TaskGroup
    task's process does); else a client of our own, shared by such objects of this process."""
    try:
        worker = distributed.get_worker()
    except ValueError:
        worker = None
    if worker is not None:
        return WorkerConnection(worker)
    try:
        default = distributed.default_client()
    except ValueError:  # none: we never make one
        default = None
    if default is not None and default.status == "running" and default.scheduler.address == address:
        return Connection(address, default)
    with _shared_lock:
        connection = _shared.get(address)
        if connection is None:
            connection = _shared[address] = Connection(address)
        return connection
