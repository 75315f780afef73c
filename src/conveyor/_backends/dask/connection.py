"""How a Dask primitive reaches its cluster from wherever it is used: which client, which hub.

::

    the caller                                         a Dask worker running a task
    ctx.Lock() / pool.Queue()                          the same object, unpickled by name
      └─ factory ─ Connection: a client of our own      └─ WorkerConnection: the worker's client
                    (opened on first use, closed              (the worker's to close)
                     when the factory and all its
                     objects are gone)
                          │                                     │
                          ├──► scheduler: Dask Lock, Event, Variable ◄──┤
                          └──► hub actor on a worker (dask/hub.py) ◄────┘

An object never looks for a client when it is unpickled: Dask unpickles a task's arguments before
the task runs, outside it. It binds on first use, to the worker it runs on if it is in a Dask task,
else to a client of its own to the scheduler it names (shared by every such object of this process,
and closed with the last of them). Objects made by a factory use the factory's connection.

Every wait on the cluster is sliced: one call waits at most ``SLICE_SECONDS``, and the caller calls
again until its own timeout, so timeouts are kept, Ctrl-C is seen at once, and nothing waits on a
worker or the scheduler for a client that has gone.
"""

from __future__ import annotations

import concurrent.futures
import functools
import gc
import threading
import time
import uuid
import weakref
from collections import deque
from typing import Any, Callable, Iterator

import distributed
from distributed.actor import Actor

from conveyor._backends.dask.hub import ERROR, GONE, LATER, OK, Hub
from conveyor._core import serialize
from conveyor._core.errors import OwnerGoneError

SLICE_SECONDS = 0.1
ANSWER_SECONDS = 30.0
"""How long a call may go unanswered, beyond its own wait, before the hub counts as unreachable."""

TIMED_OUT = object()
"""What a hub call returns when what it waited for did not happen in time."""


def slices(timeout: float | None) -> Iterator[float]:
    """The waits of one blocking call: a slice at a time for ever (``None``), or until ``timeout``
    has passed (a single wait of 0 for ``timeout=0``: try once, do not wait)."""
    if timeout is None:
        while True:
            yield SLICE_SECONDS
    end = time.monotonic() + timeout
    left = timeout
    while left > SLICE_SECONDS:
        yield SLICE_SECONDS
        left = end - time.monotonic()
    yield max(0.0, left)


def dispose(loop: Any, job: Callable[..., Any], *args: Any) -> None:
    """Run ``job`` on a Dask event loop without waiting for it: clean-up from a finalizer, which
    may run in any thread, the loop's own included, or after the loop has closed (then: nothing)."""
    try:
        loop.add_callback(job, *args)
    except Exception:  # noqa: BLE001 - the loop is closed: what the job would clean went with it
        pass


def on_loop(loop: Any, call: Callable[..., Any], *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
    """Run a Dask method on its event loop (where it returns an awaitable); its outcome as a future.

    Unlike Dask's own blocking call, an interrupted wait (Ctrl-C) leaves the call running and its
    outcome known: the caller can give back a lock that is granted after all."""
    done: concurrent.futures.Future[Any] = concurrent.futures.Future()

    async def run() -> None:
        try:
            done.set_result(await call(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
            done.set_exception(exc)

    loop.add_callback(run)
    return done


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

    def lock(self, name: str) -> Any:
        client = self.client
        return distributed.Lock(name, scheduler_rpc=client.scheduler, loop=client.loop)

    def event(self, name: str) -> Any:
        return distributed.Event(name, client=self.client)

    def variable(self, name: str) -> Any:
        return distributed.Variable(name, client=self.client)

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

    def lock(self, name: str) -> Any:
        return distributed.Lock(name, scheduler_rpc=self._worker.scheduler, loop=self._worker.loop)

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


# -- objects on the scheduler: one per name per process ------------------------------------------------

_objects: weakref.WeakValueDictionary[tuple[type, str], Any] = weakref.WeakValueDictionary()
_objects_lock = threading.Lock()  # held for lookups only: a worker's event loop unpickles too


def rebuild(cls: type, name: str, address: str, state: tuple[Any, ...]) -> Any:
    """Unpickle a :class:`Named` object: this process's object of that name, if it has one (so a
    lock's holder and depth are the same for every task of a worker), else one bound on first use."""
    with _objects_lock:
        obj = _objects.get((cls, name))
        if obj is None:
            obj = object.__new__(cls)
            obj.__dict__.update(_name=name, _address=address, _unbound=state, _binding=threading.Lock())
            _objects[(cls, name)] = obj
        return obj


class Named:
    """A Dask primitive kept by the scheduler under a name; pickles as that name and its cluster.

    Subclasses set up their Dask objects in ``_bind(connection, *state)``: at creation with the
    factory's connection, or, in another process, on first use (through ``__getattr__``). Binding
    also registers what must be cleaned when the object goes (see :func:`dispose`).
    """

    _kind = "object"
    _owner = False  # the object a factory made (it removes the scheduler's state when it goes)
    _name: str
    _address: str

    def _create(self, connection: Connection, *state: Any) -> None:
        self._owner = True
        self._name = f"conveyor-{self._kind}-{uuid.uuid4().hex}"
        self._address = connection.address
        with _objects_lock:
            _objects[(type(self), self._name)] = self
        self._connection = connection  # held: its client stays open while the object lives
        self._bind(connection, *state)

    def _bind(self, connection: Connection, *state: Any) -> None:
        raise NotImplementedError

    def _state(self) -> tuple[Any, ...]:
        return ()

    def __getattr__(self, attribute: str) -> Any:
        # Called only for attributes not set: those that binding sets, on first use of a rebuilt object.
        binding = self.__dict__.get("_binding")
        if binding is None or attribute.startswith("__"):
            raise AttributeError(attribute)
        with binding:  # (binding may wait for the worker's client: never under _objects_lock)
            state = self.__dict__.pop("_unbound", None)
            if state is not None:
                self._connection = connection_for(self._address)
                self._bind(self._connection, *state)
        return object.__getattribute__(self, attribute)

    def __reduce__(self) -> Any:
        # Not bound yet: pickle what it was unpickled from. (Dask's scheduler, for one, unpickles a
        # task's arguments and pickles them again for the worker: binding there would connect the
        # scheduler to itself, from its own event loop.)
        state = self.__dict__.get("_unbound")
        return (rebuild, (type(self), self._name, self._address, self._state() if state is None else state))

    def __repr__(self) -> str:
        return f"<conveyor dask {type(self).__name__} {self._name}>"


# -- the hub actor ---------------------------------------------------------------------------------------

_hubs: weakref.WeakValueDictionary[str, HubRef] = weakref.WeakValueDictionary()
_hubs_lock = threading.Lock()


def _rebuild_hub(pickled: tuple[Any, ...], address: str) -> HubRef:
    with _hubs_lock:
        hub = _hubs.get(pickled[2])
        if hub is None:
            hub = _hubs[pickled[2]] = HubRef(None, address, pickled)
        return hub


class HubRef:
    """A factory's hub actor as this process sees it.

    The factory's own reference holds the future of the actor, which is what keeps Dask from
    dropping it; others (unpickled in tasks) only call it. Calls report the hub's answer, or raise
    :class:`~conveyor.OwnerGoneError` if the hub cannot be reached (its worker died, or the factory
    that made it was closed): a call never waits for ever.
    """

    def __init__(self, connection: Connection | None, address: str, pickled: tuple[Any, ...],
                 future: Any = None) -> None:
        self._connection = connection
        self._address = address
        self._pickled = pickled  # (class, worker address, key): how Dask pickles an actor handle
        self._future = future
        self._actor: Any = None
        self._lock = threading.Lock()
        self._gone: deque[str] = deque()  # keys whose owners have gone: dropped by the next call

    @classmethod
    def start(cls, connection: Connection) -> HubRef:
        """Start a hub on the cluster (a Dask task: it waits for a worker thread to be free)."""
        client = connection.client
        future = client.submit(Hub, actor=True, pure=False, key=f"conveyor-hub-{uuid.uuid4().hex}",
                               priority=1 << 20)  # ahead of queued work
        pickled = future.result().__reduce__()[1]
        hub = cls(connection, connection.address, pickled, future)
        with _hubs_lock:
            _hubs[pickled[2]] = hub
        return hub

    def __reduce__(self) -> Any:
        return (_rebuild_hub, (self._pickled, self._address))

    def _handle(self) -> Any:
        if self._actor is None:
            with self._lock:
                if self._actor is None:
                    if self._connection is None:
                        self._connection = connection_for(self._address)
                    self._actor = self._connection.actor(self._pickled)
        return self._actor

    def _unreachable(self, kind: str, cause: BaseException | None) -> OwnerGoneError:
        why = f" ({type(cause).__name__}: {cause})" if cause is not None else ""
        return OwnerGoneError(
            f"the Dask actor holding this shared {kind} (on worker {self._pickled[1]}) cannot be "
            f"reached{why}: its worker died, or the context or pool that made it was closed, and its "
            f"data went with it")

    def _request(self, kind: str, method: str, *args: Any, wait: float = 0.0,
                 undo: Callable[[Any], None] | None = None) -> Any:
        """One call of the hub's ``method``, which answers within ``wait`` seconds plus the way
        there and back; its answer as the hub gave it. Interrupted (Ctrl-C), the call goes on in
        the hub: ``undo(actor)`` then runs if it succeeds after all (gives back what it took)."""
        try:
            pending = getattr(self._handle(), method)(*args)
        except Exception as exc:  # noqa: BLE001 - Dask's "worker holding Actor was lost", a closed client
            raise self._unreachable(kind, exc) from exc
        limit = time.monotonic() + wait + ANSWER_SECONDS
        while True:
            try:
                return pending.result(timeout=wait + SLICE_SECONDS)
            except TimeoutError:
                # The factory's own handle knows when Dask has lost the actor (its worker died):
                # then Dask would go on trying to reach the dead worker for its connect timeout.
                lost = self._future is not None and self._future.status != "finished"
                if lost or time.monotonic() > limit:
                    raise self._unreachable(kind, None) from None
            except Exception as exc:  # noqa: BLE001 - the hub itself never raises: this is Dask's
                raise self._unreachable(kind, exc) from exc
            except BaseException:
                connection = self._connection  # set by _handle() above
                if undo is not None and connection is not None:
                    dispose(connection.loop, _undo_when_done, pending, self._actor, undo)
                raise

    def make(self, kind: str, state: str, *args: Any) -> str:
        """A new object of the hub's ``state`` class, made with ``args``; its key."""
        key = f"{state}-{uuid.uuid4().hex}"
        status, value = self._request(kind, "make", key, state, args)
        if status == ERROR:
            raise value
        return key

    def forget(self, key: str) -> None:
        """An object's owner is gone (a finalizer): the next call drops it from the hub. Nothing is
        sent now: a finalizer may run in any thread, and if the hub goes too, there is nothing to do."""
        self._gone.append(key)

    def call(self, kind: str, key: str, op: str, *args: Any, timeout: float | None = 0.0,
             undo: tuple[str, tuple[Any, ...]] | None = None) -> Any:
        """``op`` on an object of the hub: its result, or :data:`TIMED_OUT` if it had to wait and
        ``timeout`` passed (``None``: wait for ever, a slice at a time; ``0``: do not wait).
        ``undo`` (an operation and its arguments) gives back what an interrupted ``op`` took."""
        give_back = None if undo is None else functools.partial(_call_without_waiting, key, *undo)
        for wait in slices(timeout):
            gone = [self._gone.popleft() for _ in range(len(self._gone))]  # (appends may race)
            status, value = self._request(kind, "call", key, op, args, wait, gone, wait=wait, undo=give_back)
            if status != LATER:
                break
        else:
            return TIMED_OUT
        if status == ERROR:
            raise serialize.loads_exception(value) if isinstance(value, bytes) else value
        if status == GONE:
            raise ReferenceError(f"this shared {kind} no longer exists: the process that made it dropped "
                                 f"its last reference to it. Keep a reference to it there for as long as "
                                 f"others use it")
        return value


async def _undo_when_done(pending: Any, actor: Any, undo: Callable[[Any], None]) -> None:
    """On the loop: once an interrupted hub call has answered, undo it if it took something."""
    try:
        status, value = await pending
    except Exception:  # noqa: BLE001 - it never arrived: nothing to give back
        return
    if status == OK and value is True:
        undo(actor)


def _call_without_waiting(key: str, op: str, args: tuple[Any, ...], actor: Any) -> None:
    actor.call(key, op, args, 0.0, [])  # an actor call returns at once; nobody waits for this one


class OnHub:
    """An object kept by a hub: its key, and the hub, which pickles with it.

    ``_holds`` names its state class in the hub, ``_kind`` names it in errors. The object made by a
    factory owns the hub's entry: when it is garbage-collected, the entry goes.
    """

    _holds = "object"
    _kind = "object"
    _hub: HubRef
    _key: str

    def _create(self, hub: HubRef, *args: Any) -> None:
        key = hub.make(self._kind, self._holds, *args)
        object.__setattr__(self, "_hub", hub)  # (a shared Namespace refuses plain assignment)
        object.__setattr__(self, "_key", key)
        finalizer = weakref.finalize(self, hub.forget, key)
        finalizer.atexit = False  # at exit the hub goes with its client

    def _call(self, op: str, *args: Any, timeout: float | None = 0.0,
              undo: tuple[str, tuple[Any, ...]] | None = None) -> Any:
        return self._hub.call(self._kind, self._key, op, *args, timeout=timeout, undo=undo)

    def _state(self) -> tuple[Any, ...]:
        return ()

    def _restore(self, *state: Any) -> None:
        pass

    def __reduce__(self) -> Any:
        return (_rebuild_on_hub, (type(self), self._hub, self._key, self._state()))

    def __repr__(self) -> str:
        return f"<conveyor dask {type(self).__name__} {self._key}>"


def _rebuild_on_hub(cls: type[OnHub], hub: HubRef, key: str, state: tuple[Any, ...]) -> Any:
    obj = object.__new__(cls)
    object.__setattr__(obj, "_hub", hub)
    object.__setattr__(obj, "_key", key)
    obj._restore(*state)
    return obj
