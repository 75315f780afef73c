"""Locks, conditions, semaphores, events, barriers, queues and shared values on a Ray cluster.

Ray has no lock of its own, so every object lives in one small actor per process (per Ray
connection), the *hub*: a threaded actor (no CPU reserved, so it starts even while every CPU runs
tasks) holding the real state, mostly the stdlib's own objects (``threading.Lock``, ``Semaphore``,
``BoundedSemaphore``, ``Event``, conveyor's in-process queues). Each factory (a context's, a pool's)
keeps its objects under a key prefix of its own and drops them when it closes. The objects users
hold are thin clients that name their hub and key::

    caller / any Ray task                                 the hub actor (one per process)
    RayLock.acquire() ── hub.call(key, "acquire", (owner, 0.2)) ──► the lock's state, a thread per call
                      ◄─────────────── True / False / an exception ──┘

Every blocking operation is sliced: the hub waits at most ``_SLICE_SECONDS`` per call and the client
calls again until its own timeout, so a timeout is exact to a slice, Ctrl-C in the client is seen
within a slice, and a call whose client died ends by itself. All calls of an object go through one
actor, which serialises them: operations are atomic, and a notify can never be lost between a
waiter's release of the lock and its wait (the hub does both in one call).

Objects pickle by hub name and key (a named actor in the ``conveyor`` namespace), so they can be
passed to Ray tasks, and conveyor's own pickling of task inputs carries them too; a rebuilt object
looks its hub up on first use. The semantics are the stdlib's; the differences are in
``docs/clusters.md`` (chiefly: a holder that dies leaves its lock held; there is no
``OwnerDiedError``).
"""

from __future__ import annotations

import array
import collections
import functools
import os
import queue as _stdlib_queue
import threading
import time
import uuid
import weakref
from typing import Any, Callable, Iterable, Iterator

import ray
import ray.exceptions

from conveyor._backends._shared.managed.proxies import DictProxy, ListProxy, NamespaceProxy
from conveyor._backends.ray.hub import HubActor
from conveyor._core import serialize
from conveyor._core.errors import OwnerGoneError, unsupported
from conveyor._core.waiting import bounded_timeout, lock_timeout, queue_timeout, wait_for

NAMESPACE = "conveyor"
_SLICE_SECONDS = 0.2
_HUB_THREADS = 256
"""Calls served at once by a hub; a blocked call holds a thread for at most one slice."""

# -- in the caller and in tasks -------------------------------------------------------------------------

_handles: dict[str, Any] = {}
_handles_lock = threading.Lock()
_process: list[Any] = [None, ""]


def _owner() -> str:
    """This thread of this process, for lock ownership (a fresh id after a fork)."""
    if _process[0] != os.getpid():
        _process[0], _process[1] = os.getpid(), uuid.uuid4().hex
    return f"{_process[1]}:{threading.get_ident()}"


def _hub(name: str) -> Any:
    with _handles_lock:
        handle = _handles.get(name)
    if handle is None:
        try:
            handle = ray.get_actor(name, namespace=NAMESPACE)
        except ValueError as exc:
            raise OwnerGoneError(f"the Ray actor holding this object ({name}) is gone: the context or pool "
                                 "that made it was closed") from exc
        with _handles_lock:
            _handles[name] = handle
    return handle


def _call(hub: str, key: str, method: str, args: tuple[Any, ...],
          undo: Callable[[], Any] | None = None) -> Any:
    """One call of an object's method in its hub; its exception is raised here as itself.

    ``undo``: for a call that takes something (a lock, a token) and is interrupted (Ctrl-C) while
    the hub still runs it, what gives the taken thing back once the call turns out to have taken it.
    """
    if _dropped:
        _send_drops()
    ref = _hub(hub).call.remote(key, method, args)
    try:
        ok, result = ray.get(ref)
    except ray.exceptions.RayActorError as exc:
        raise OwnerGoneError(f"the Ray actor holding this object ({hub}) is gone: the context or pool "
                             "that made it was closed") from exc
    except BaseException:
        if undo is not None:
            threading.Thread(target=_undo_when_taken, args=(ref, undo), name="conveyor-ray-undo",
                             daemon=True).start()
        raise
    if not ok:
        raise result
    return result


def _undo_when_taken(ref: Any, undo: Callable[[], Any]) -> None:
    try:
        ok, taken = ray.get(ref, timeout=_SLICE_SECONDS * 50)
        if ok and taken:
            undo()
    except Exception:  # noqa: BLE001 - the hub or Ray is gone: nothing is held any more
        pass


def _sliced(attempt: Callable[[float], Any], done: Callable[[Any], bool], timeout: float | None) -> Any:
    """Call ``attempt(slice)`` until ``done(result)`` or ``timeout`` passes; the last result.

    ``timeout=0`` makes one non-blocking attempt."""
    bounded_timeout(timeout)
    end = None if timeout is None else time.monotonic() + timeout
    while True:
        remaining = _SLICE_SECONDS if end is None else min(_SLICE_SECONDS, max(0.0, end - time.monotonic()))
        result = attempt(remaining)
        if done(result) or (end is not None and time.monotonic() >= end):
            return result


_dropped: collections.deque[tuple[str, str]] = collections.deque()
"""(hub, key prefix) of collected factories, whose objects this process's next call to a hub drops.
A finalizer only appends here (atomic, no lock): it runs wherever a garbage collection happens,
possibly inside a Ray call of the same thread, where calling Ray again could deadlock (the Ray
Client's lock is not re-entrant)."""


def _forget(used: list[str | None], prefix: str) -> None:
    if used[0] is not None:
        _dropped.append((used[0], prefix))


def _send_drops() -> None:
    """Drop from their hubs the objects of the factories collected since the last call (unawaited)."""
    while True:
        try:
            hub, prefix = _dropped.popleft()
        except IndexError:
            return
        try:
            _hub(hub).drop.remote(prefix)
        except Exception:  # noqa: BLE001 - the hub or Ray is gone: so are the objects
            pass


def _keep(_factory: Any) -> None:
    """The finalizer of an object: it holds the object's factory (its argument) until then."""


def _hub_of(space: str) -> str:
    return space.partition("#")[0]


def _new_key(space: str, kind: str) -> tuple[str, str]:
    """A new object of a factory: its hub, and a key under the factory's prefix. A *space* is
    ``"hub#prefix"``: what a factory hands its objects, so that closing it drops them all."""
    hub, _, prefix = space.partition("#")
    return hub, f"{prefix}{kind}-{uuid.uuid4().hex}"


class _Object:
    """A client of one object in a hub; pickles as (hub, key)."""

    kind = "object"

    def __init__(self, space: str, key: str | None = None, *args: Any) -> None:
        self._hub_name, self._key = _new_key(space, self.kind) if key is None else (_hub_of(space), key)
        if key is None:
            ray.get(_hub(self._hub_name).make.remote(self._key, self.kind, self._make_args(*args)))

    def _make_args(self, *args: Any) -> tuple[Any, ...]:
        return args

    def _state(self) -> tuple[Any, ...]:
        return ()

    def _restore(self, *state: Any) -> None:
        """Set up an unpickled object from what :meth:`_state` gave (each kind defines its own)."""

    def __reduce__(self) -> Any:
        return (_rebuild, (type(self), self._hub_name, self._key, self._state()))

    def _call(self, method: str, *args: Any) -> Any:
        return _call(self._hub_name, self._key, method, args)

    def __repr__(self) -> str:
        return f"<conveyor ray {type(self).__name__} {self._key}>"


def _rebuild(cls: type[_Object], hub: str, key: str, state: tuple[Any, ...]) -> Any:
    obj = cls.__new__(cls)
    obj._hub_name, obj._key = hub, key
    obj._restore(*state)
    return obj


class _Acquirable:
    """``with obj:`` for whatever has ``acquire()`` and ``release()``."""

    def __enter__(self) -> bool:
        return self.acquire()  # type: ignore[attr-defined, no-any-return]

    def __exit__(self, *exc: Any) -> None:
        self.release()  # type: ignore[attr-defined]


class RayLock(_Acquirable, _Object):
    """``threading.Lock``: any process may release it."""

    kind = "lock"

    def _restore(self) -> None:
        pass

    def acquire(self, blocking: bool = True, timeout: float = -1, *, _depth: int = 1) -> bool:
        owner = _owner()
        release = functools.partial(_call, self._hub_name, self._key, "release", (owner,))
        return bool(_sliced(lambda wait: _call(self._hub_name, self._key, "acquire", (owner, wait, _depth), release),
                            bool, lock_timeout(blocking, timeout)))

    def release(self) -> None:
        self._call("release", _owner())

    def locked(self) -> bool:
        return bool(self._call("locked"))

    def _is_owned(self) -> bool:
        return bool(self._call("owned", _owner()))

    def __repr__(self) -> str:
        holder, depth = self._call("state")
        return (f"<{'locked' if depth else 'unlocked'} conveyor ray {type(self).__name__} {self._key} "
                f"owner={holder} count={depth}>")


class RayRLock(RayLock):
    """``threading.RLock``: the holding thread (of the holding process) may acquire it again."""

    kind = "rlock"


class RayCondition(_Acquirable, _Object):
    """``threading.Condition`` around a lock of the same hub (a new RLock by default)."""

    kind = "condition"

    def __init__(self, hub: str, lock: RayLock | None = None) -> None:
        if lock is None:
            lock = RayRLock(hub)
        if not isinstance(lock, RayLock):
            raise TypeError("a ray Condition needs a lock made by a ray context or pool (ctx.Lock(), ctx.RLock())")
        self._lock = lock
        super().__init__(hub, None, lock._key)

    def _state(self) -> tuple[Any, ...]:
        return (self._lock,)

    def _restore(self, lock: RayLock) -> None:
        self._lock = lock

    def acquire(self, *args: Any, **kwargs: Any) -> bool:
        return self._lock.acquire(*args, **kwargs)

    def release(self) -> None:
        self._lock.release()

    def wait(self, timeout: float | None = None) -> bool:
        bounded_timeout(timeout)  # before this waiter is registered in the hub
        token, depth = self._call("begin", _owner())
        woken = False
        try:
            woken = bool(_sliced(lambda wait: self._call("poll", token, wait), bool, timeout))
        finally:
            woken = bool(self._call("end", token)) or woken
            self._lock.acquire(_depth=depth)
        return woken

    def wait_for(self, predicate: Callable[[], Any], timeout: float | None = None) -> Any:
        return wait_for(self.wait, predicate, timeout)

    def notify(self, n: int = 1) -> None:
        self._call("notify", _owner(), n)

    def notify_all(self) -> None:
        self.notify(1 << 30)


class RaySemaphore(_Acquirable, _Object):
    """``threading.Semaphore``: any process may release."""

    kind = "semaphore"

    def __init__(self, hub: str, value: int = 1) -> None:
        if value < 0:
            raise ValueError("semaphore initial value must be >= 0")
        super().__init__(hub, None, value)

    def _restore(self) -> None:
        pass

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        if not blocking and timeout is not None:
            raise ValueError("can't specify timeout for non-blocking acquire")
        if timeout is not None and timeout < 0:
            raise ValueError("timeout value must be a non-negative number")
        wait = 0.0 if not blocking else timeout
        release = functools.partial(_call, self._hub_name, self._key, "release", (1,))
        return bool(_sliced(lambda left: _call(self._hub_name, self._key, "acquire",
                                               (left > 0, left if left > 0 else None), release), bool, wait))

    def release(self, n: int = 1) -> None:
        self._call("release", n)

    @property
    def _value(self) -> int:
        """The tokens left, as ``threading.Semaphore._value``."""
        return int(ray.get(_hub(self._hub_name).attribute.remote(self._key, "_value")))


class RayBoundedSemaphore(RaySemaphore):
    """A semaphore whose over-release raises ValueError."""

    kind = "bsemaphore"


class RayEvent(_Object):
    """``threading.Event``."""

    kind = "event"

    def _restore(self) -> None:
        pass

    def is_set(self) -> bool:
        return bool(self._call("is_set"))

    def set(self) -> None:
        self._call("set")

    def clear(self) -> None:
        self._call("clear")

    def wait(self, timeout: float | None = None) -> bool:
        return bool(_sliced(lambda left: self._call("wait", left), bool, timeout))


class RayBarrier(_Object):
    """``threading.Barrier``; the action runs in the party that arrives last, as in the stdlib."""

    kind = "barrier"

    def __init__(self, hub: str, parties: int, action: Callable[[], Any] | None = None,
                 timeout: float | None = None) -> None:
        if parties < 1:
            raise ValueError("parties must be > 0")
        self.parties, self._action, self._timeout = parties, action, timeout
        super().__init__(hub, None, parties)

    def _state(self) -> tuple[Any, ...]:
        return (self.parties, self._action, self._timeout)

    def _restore(self, parties: int, action: Any, timeout: float | None) -> None:
        self.parties, self._action, self._timeout = parties, action, timeout

    def wait(self, timeout: float | None = None) -> int:
        if timeout is None:
            timeout = self._timeout
        bounded_timeout(timeout)  # before this party is counted as arrived
        generation, index, last = self._call("arrive")
        if last:
            if self._action is not None:
                try:
                    self._action()
                except BaseException:
                    self._call("open", generation, False)
                    raise
            self._call("open", generation, True)
            return index
        try:
            state = _sliced(lambda left: self._call("poll", generation, left), lambda s: s != "waiting", timeout)
        finally:
            state = self._call("give_up", generation)
        if state != "passed":
            raise threading.BrokenBarrierError
        return index

    def abort(self) -> None:
        self._call("abort")

    def reset(self) -> None:
        self._call("reset")

    @property
    def n_waiting(self) -> int:
        return int(self._call("n_waiting"))

    @property
    def broken(self) -> bool:
        return bool(self._call("broken"))


class RayQueue(_Object):
    """``queue.Queue`` with ``shutdown(immediate=False)``, ``put_many``/``get_many`` and
    ``task_done``/``join``. Items live in the hub's memory: keep them small, pass big data as task
    arguments instead."""

    kind = "queue"

    def __init__(self, hub: str, maxsize: int = 0) -> None:
        self.maxsize = maxsize
        super().__init__(hub, None, maxsize)

    def _state(self) -> tuple[Any, ...]:
        return (self.maxsize,)

    def _restore(self, maxsize: int) -> None:
        self.maxsize = maxsize

    _wait_of = staticmethod(queue_timeout)

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        self.put_many([item], block, timeout)

    def put_nowait(self, item: Any) -> None:
        self.put(item, block=False)

    def put_many(self, items: Iterable[Any], block: bool = True, timeout: float | None = None) -> None:
        """Put every item in order; ``queue.Full`` if room runs out in time (the earlier ones stay put)."""
        pending = list(items)
        wait = self._wait_of(block, timeout)
        end = None if wait is None else time.monotonic() + wait
        while pending:
            left = _SLICE_SECONDS if end is None else min(_SLICE_SECONDS, max(0.0, end - time.monotonic()))
            pending = pending[self._call("put_some", pending, left):]
            if pending and end is not None and time.monotonic() >= end:
                raise _stdlib_queue.Full

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        return self.get_many(1, block, timeout)[0]

    def get_nowait(self) -> Any:
        return self.get(block=False)

    def get_many(self, max_items: int, block: bool = True, timeout: float | None = None) -> list[Any]:
        """Wait for the first item, then take up to ``max_items`` of what is there."""
        if max_items < 1:
            raise ValueError(f"max_items must be >= 1, got {max_items}")
        wait = self._wait_of(block, timeout)
        end = None if wait is None else time.monotonic() + wait
        while True:
            left = _SLICE_SECONDS if end is None else min(_SLICE_SECONDS, max(0.0, end - time.monotonic()))
            try:
                return self._call("get_many", max_items, left > 0, left if left > 0 else None)
            except _stdlib_queue.Empty:
                if end is not None and time.monotonic() >= end:
                    raise

    def qsize(self) -> int:
        return int(self._call("qsize"))

    def empty(self) -> bool:
        return bool(self._call("empty"))

    def full(self) -> bool:
        return bool(self._call("full"))

    def task_done(self) -> None:
        self._call("task_done")

    def join(self) -> None:
        _sliced(lambda left: self._call("join_for", left), bool, None)

    def shutdown(self, immediate: bool = False) -> None:
        """Refuse new items; consumers drain what is left, then ``get`` raises ShutDown."""
        self._call("shutdown", immediate)

    @property
    def is_shutdown(self) -> bool:
        return bool(ray.get(_hub(self._hub_name).attribute.remote(self._key, "is_shutdown")))


class RayLifoQueue(RayQueue):
    kind = "lifoqueue"


class RayPriorityQueue(RayQueue):
    kind = "priorityqueue"


class RayValue(_Object):
    """``multiprocessing.Value``-like: ``.value`` in the hub, ``get_lock()`` for read-modify-write."""

    kind = "value"

    def __init__(self, hub: str, typecode_or_type: Any, value: Any = 0, lock: Any = True) -> None:
        if lock is True:
            lock = RayRLock(hub)
        elif lock is not False and lock is not None and not isinstance(lock, RayLock):
            raise TypeError("lock must be True, False or a lock made by a ray context or pool")
        self._typecode, self._lock = typecode_or_type, lock or None
        super().__init__(hub, None, value)

    def _state(self) -> tuple[Any, ...]:
        return (self._typecode, self._lock)

    def _restore(self, typecode: Any, lock: Any) -> None:
        self._typecode, self._lock = typecode, lock

    @property
    def value(self) -> Any:
        return self._call("get")

    @value.setter
    def value(self, new: Any) -> None:
        self._call("set", new)

    def get_lock(self) -> Any:
        if self._lock is None:
            raise AttributeError("this Value was made with lock=False")
        return self._lock

    def get_obj(self) -> Any:
        return self.value


class _InHub:
    """The transport of a shared container: the process backend's proxy API (``DictProxy`` and
    friends), with each operation run by the hub. ``_ref`` is ``(kind, hub, None, key, 0)``."""

    __slots__ = ()

    @classmethod
    def _make(cls, space: str, kind: str, args: tuple[Any, ...]) -> Any:
        hub, key = _new_key(space, kind)
        ray.get(_hub(hub).make.remote(key, kind, args))
        return cls._attach_ray((cls._kind, hub, None, key, 0))  # type: ignore[attr-defined]

    @classmethod
    def _attach_ray(cls, ref: tuple[Any, ...]) -> Any:
        self = object.__new__(cls)
        object.__setattr__(self, "_ref", ref)
        return self

    def _call(self, op: str, *args: Any) -> Any:
        ref = self._ref  # type: ignore[attr-defined]
        return serialize.loads(_call(ref[1], ref[3], "apply", (op, args)))

    def __reduce__(self) -> Any:
        return (_rebuild_container, (type(self), self._ref))  # type: ignore[attr-defined]

    def _repr_of(self, fetch: Callable[[], str]) -> str:
        try:
            return fetch()
        except Exception as exc:  # noqa: BLE001 - a repr must not raise (it is used in error messages)
            return f"<{type(self).__name__} on Ray: {type(exc).__name__}>"


def _rebuild_container(cls: type, ref: tuple[Any, ...]) -> Any:
    return cls._attach_ray(ref)  # type: ignore[attr-defined]


class RayDict(_InHub, DictProxy):
    """A ``dict`` kept by the hub: the same API and atomicity as the process backend's shared dict."""

    __slots__ = ()


class RayList(_InHub, ListProxy):
    """A ``list`` kept by the hub."""

    __slots__ = ()


class RayNamespace(_InHub, NamespaceProxy):
    """Attributes kept by the hub."""

    __slots__ = ()


class RayArray(_InHub):
    """``multiprocessing.Array``-like: numbers of one typecode kept by the hub (an ``array.array``);
    indexing, slicing (a list, as from ``multiprocessing``), ``len``, and ``get_lock()`` for
    read-modify-write."""

    __slots__ = ("_lock", "_ref", "__weakref__")
    _kind = "Array"
    # Set with object.__setattr__ (by _attach_ray) and by _rebuild_array, not by __init__.
    _ref: tuple[Any, ...]
    _lock: Any  # the lock of get_lock(), or None when made with lock=False

    def __getitem__(self, index: Any) -> Any:
        got = self._call("getitem", index)
        return list(got) if isinstance(index, slice) else got

    def __setitem__(self, index: Any, value: Any) -> None:
        if isinstance(index, slice):
            value = array.array(self._call("copy").typecode, value)
        self._call("setitem", index, value)

    def __len__(self) -> int:
        return int(self._call("len"))

    def __iter__(self) -> Iterator[Any]:
        return iter(self[:])

    def get_obj(self) -> list[Any]:
        return self[:]

    def get_lock(self) -> Any:
        if self._lock is None:
            raise AttributeError("this Array was made with lock=False")
        return self._lock

    def __reduce__(self) -> Any:
        return (_rebuild_array, (self._ref, self._lock))

    def __repr__(self) -> str:
        return self._repr_of(lambda: f"<conveyor ray Array {self[:]!r}>")


def _rebuild_array(ref: tuple[Any, ...], lock: Any) -> RayArray:
    made = RayArray._attach_ray(ref)
    made._lock = lock
    return made


def _typecode(typecode_or_type: Any) -> str:
    """``"d"``, or a ctypes type such as ``ctypes.c_double`` (whose typecode is its ``_type_``)."""
    code = getattr(typecode_or_type, "_type_", typecode_or_type)
    if not isinstance(code, str) or code not in array.typecodes:
        raise TypeError(f"a ray Array needs an array typecode or a ctypes number type, got {typecode_or_type!r}")
    return code


_shared_hub: dict[str, Any] = {"job": None, "name": None}
_shared_hub_lock = threading.Lock()


def shared_hub() -> str:
    """The name of this process's hub, started on first use for the current Ray connection.

    One hub for every factory of the process: an actor costs a worker process and about a second to
    start, and creating and killing one per context or pool would leave Ray's connections to dead
    workers behind. It belongs to this process (not detached): it ends with the Ray connection.
    """
    # The job alone does not name a connection: a local Ray started again after the first one was shut
    # down numbers its jobs from the start, and the old hub's name would be reused for a dead actor.
    # The node's id is new with every Ray started.
    context = ray.get_runtime_context()
    job = (context.get_job_id(), context.get_node_id())
    with _shared_hub_lock:
        if _shared_hub["job"] != job:
            name = f"conveyor-hub-{job[0]}-{uuid.uuid4().hex[:12]}"
            actor = HubActor.options(name=name, namespace=NAMESPACE, num_cpus=0, max_concurrency=_HUB_THREADS,
                                     max_restarts=0).remote()
            with _handles_lock:
                _handles[name] = actor
            _shared_hub.update(job=job, name=name)
        return str(_shared_hub["name"])


class RayPrimitives:
    """The factory behind ``conveyor.context("ray").Lock()`` and ``pool.Queue()`` on Ray.

    Its objects live in the process's hub under a prefix of its own, for as long as the factory: it
    is kept alive by its maker (a context or a pool) and by each object it made (in this process), so
    a pool's objects outlive the pool, as on the other backends, and an object passed straight to a
    task (``g.spawn(f, ctx.Event())``) lives while its factory does. When the factory is collected,
    its objects are dropped with the process's next call to the hub; :meth:`close` (a context's
    factory, when the context goes) drops them at once. Later calls on them raise
    ``OwnerGoneError``, in every process.

    Args:
        session: the Ray connection this factory holds (a context's), released by ``close()``; a
            pool's factory holds none (the pool does).
    """

    def __init__(self, session: Any = None) -> None:
        self._session = session
        self._prefix = f"{uuid.uuid4().hex}/"
        self._used: list[str | None] = [None]   # the hub this factory put objects in
        self._lock = threading.Lock()
        self._collected = weakref.finalize(self, _forget, self._used, self._prefix)
        self._collected.atexit = False  # at exit the hub ends with the connection

    def _hub(self) -> str:
        """The space of this factory's objects: ``"hub#prefix"``."""
        hub = shared_hub()
        with self._lock:
            self._used[0] = hub
        return f"{hub}#{self._prefix}"

    def _adopt(self, obj: Any) -> Any:
        """An object made here keeps this factory (and so itself) alive while this process holds it."""
        weakref.finalize(obj, _keep, self).atexit = False
        return obj

    def close(self) -> None:
        """Drop this factory's objects from the hub and release the connection (once)."""
        self._collected.detach()
        with self._lock:
            used, self._used[0] = self._used[0], None
        if used is not None:
            try:
                ray.get(_hub(used).drop.remote(self._prefix), timeout=_SLICE_SECONDS * 50)
            except Exception:  # noqa: BLE001 - Ray or the hub is already down: the objects went with it
                pass
        if self._session is not None:
            self._session.close()
            self._session = None

    def Lock(self) -> RayLock:  # noqa: N802 - the stdlib's names
        return self._adopt(RayLock(self._hub()))

    def RLock(self) -> RayRLock:  # noqa: N802
        return self._adopt(RayRLock(self._hub()))

    def Condition(self, lock: Any = None) -> RayCondition:  # noqa: N802
        return self._adopt(RayCondition(self._hub(), lock))

    def Semaphore(self, value: int = 1) -> RaySemaphore:  # noqa: N802
        return self._adopt(RaySemaphore(self._hub(), value))

    def BoundedSemaphore(self, value: int = 1) -> RayBoundedSemaphore:  # noqa: N802
        return self._adopt(RayBoundedSemaphore(self._hub(), value))

    def Event(self) -> RayEvent:  # noqa: N802
        return self._adopt(RayEvent(self._hub()))

    def Barrier(self, parties: int, action: Any = None, timeout: float | None = None) -> RayBarrier:  # noqa: N802
        return self._adopt(RayBarrier(self._hub(), parties, action, timeout))

    def Queue(self, maxsize: int = 0) -> RayQueue:  # noqa: N802
        return self._adopt(RayQueue(self._hub(), maxsize))

    def LifoQueue(self, maxsize: int = 0) -> RayLifoQueue:  # noqa: N802
        return self._adopt(RayLifoQueue(self._hub(), maxsize))

    def PriorityQueue(self, maxsize: int = 0) -> RayPriorityQueue:  # noqa: N802
        return self._adopt(RayPriorityQueue(self._hub(), maxsize))

    def Value(self, typecode_or_type: Any, value: Any = 0, lock: Any = True) -> RayValue:  # noqa: N802
        return self._adopt(RayValue(self._hub(), typecode_or_type, value, lock))

    def dict(self, *args: Any, **kwargs: Any) -> RayDict:
        return self._adopt(RayDict._make(self._hub(), "container", (dict(*args, **kwargs),)))

    def list(self, iterable: Iterable[Any] = ()) -> RayList:
        return self._adopt(RayList._make(self._hub(), "container", (list(iterable),)))

    def Namespace(self, **attributes: Any) -> RayNamespace:  # noqa: N802
        import types

        return self._adopt(RayNamespace._make(self._hub(), "container", (types.SimpleNamespace(**attributes),)))

    def Array(self, typecode_or_type: Any, size_or_initializer: Any, lock: Any = True) -> RayArray:  # noqa: N802
        code = _typecode(typecode_or_type)
        init = [0] * size_or_initializer if isinstance(size_or_initializer, int) else list(size_or_initializer)
        space = self._hub()
        made = RayArray._make(space, "array", (code, init))
        made._lock = RayRLock(space) if lock is True else (lock or None)
        return self._adopt(made)

    # Not made on Ray (``RayBackend.capabilities.primitives`` leaves them out, so the front end
    # refuses them first); here for a caller of the factory itself.
    def Pipe(self, duplex: bool = True) -> tuple[Any, Any]:  # noqa: N802
        raise unsupported("Pipe", "ray", "use a Queue (or two, one each way)")

    def SharedArray(self, shape: Any, dtype: Any = "float64", lock: bool = True) -> Any:  # noqa: N802
        raise unsupported("SharedArray", "ray", "use Array")
