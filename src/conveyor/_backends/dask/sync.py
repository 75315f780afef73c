"""Locks, events, semaphores, conditions and barriers on a Dask cluster, with ``threading`` semantics.

``Lock``/``RLock`` are Dask's own ``Lock`` and ``Event`` is Dask's ``Event``: the scheduler keeps
them, so they outlive any worker, and a lock whose holder dies is freed when its lease runs out.
``Semaphore``, ``BoundedSemaphore``, and the bookkeeping of ``Condition`` and ``Barrier`` live in the
factory's hub actor (``dask/hub.py``): Dask's semaphore is a lease that only its holder may give
back, which is not ``threading.Semaphore``. Every wait is sliced (``connection.slices``).
"""

from __future__ import annotations

import contextlib
import functools
import threading
import uuid
import weakref
from typing import Any, Callable

from conveyor._backends.dask.connection import (
    TIMED_OUT,
    Connection,
    HubRef,
    Named,
    OnHub,
    dispose,
    on_loop,
    slices,
)
from conveyor._core.waiting import bounded_timeout, lock_timeout, wait_for


async def _retire_lock(lock: Any, owner: bool) -> None:
    """Stop a Dask lock's lease refresh in this process; its owner also removes it from the
    scheduler (Dask keeps a lock's state until it is closed)."""
    with contextlib.suppress(Exception):
        if owner:
            await lock.close()
        else:
            lock.refresh_callback.stop()


def _give_back(loop: Any, lock: Any, acquired: Any) -> None:
    if not acquired.cancelled() and acquired.exception() is None and acquired.result():
        dispose(loop, lock.release)


class DaskLock(Named):
    """``threading.Lock`` on the cluster: a Dask ``Lock``, held by a process.

    Any thread of the process that acquired it may release it (as with ``threading.Lock``); another
    process may not (Dask gives the lease back only from the object that took it).
    """

    _kind = "lock"

    def __init__(self, connection: Connection) -> None:
        self._create(connection)

    def _bind(self, connection: Connection) -> None:
        self._lock = connection.lock(self._name)
        self._loop = connection.loop
        self._held = 0  # leases this process holds (0 or 1)
        self._count = threading.Lock()
        finalizer = weakref.finalize(self, dispose, self._loop, _retire_lock, self._lock, self._owner)
        finalizer.atexit = False  # at exit the client goes, and with it the leases

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        for wait in slices(lock_timeout(blocking, timeout)):
            pending = on_loop(self._loop, self._lock.acquire, timeout=wait)
            try:
                taken = pending.result()
            except BaseException:  # Ctrl-C: a lease granted after all must not stay with nobody
                pending.add_done_callback(functools.partial(_give_back, self._loop, self._lock))
                raise
            if taken:
                with self._count:
                    self._held += 1
                return True
        return False

    def release(self) -> None:
        with self._count:
            if not self._held:
                raise RuntimeError("release unlocked lock")
            self._held -= 1
        self._lock.release()

    def locked(self) -> bool:
        """Whether any process holds it (one question to the scheduler)."""
        return bool(self._lock.locked())

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()

    # What threading.Condition asks of its lock:
    def _is_owned(self) -> bool:
        return self._held > 0

    def _release_save(self) -> Any:
        self.release()

    def _acquire_restore(self, state: Any) -> None:
        self.acquire()


class DaskRLock(DaskLock):
    """``threading.RLock`` on the cluster: the holding thread of the holding process may take it
    again; the depth is counted in that process."""

    _kind = "rlock"

    def _bind(self, connection: Connection) -> None:
        super()._bind(connection)
        self._owner_thread: int | None = None
        self._depth = 0

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        me = threading.get_ident()
        if self._owner_thread == me:
            lock_timeout(blocking, timeout)  # the same argument errors as a first acquire
            self._depth += 1
            return True
        if not super().acquire(blocking, timeout):
            return False
        self._owner_thread, self._depth = me, 1
        return True

    def release(self) -> None:
        if self._owner_thread != threading.get_ident():
            raise RuntimeError("cannot release un-acquired lock")
        self._depth -= 1
        if not self._depth:
            self._owner_thread = None
            super().release()

    def _is_owned(self) -> bool:
        return self._owner_thread == threading.get_ident()

    def _release_save(self) -> Any:
        if not self._is_owned():
            raise RuntimeError("cannot release un-acquired lock")
        depth, self._owner_thread, self._depth = self._depth, None, 0
        DaskLock.release(self)
        return depth

    def _acquire_restore(self, state: Any) -> None:
        DaskLock.acquire(self)
        self._owner_thread, self._depth = threading.get_ident(), state

    def __repr__(self) -> str:
        owner = self.__dict__.get("_owner_thread")  # (a repr does not connect an object not used yet)
        held = "locked" if owner is not None else "unlocked"
        return f"<{held} conveyor dask RLock {self._name} owner={owner or 0} count={self.__dict__.get('_depth', 0)}>"


class DaskEvent(Named):
    """``threading.Event`` on the cluster: a Dask ``Event``."""

    _kind = "event"

    def __init__(self, connection: Connection) -> None:
        self._create(connection)

    def _bind(self, connection: Connection) -> None:
        self._event = connection.event(self._name)
        if self._owner:  # a cleared event with no waiters is forgotten by the scheduler
            weakref.finalize(self, dispose, connection.loop, self._event.clear).atexit = False

    def is_set(self) -> bool:
        return bool(self._event.is_set())

    def set(self) -> None:
        self._event.set()

    def clear(self) -> None:
        self._event.clear()

    def wait(self, timeout: float | None = None) -> bool:
        bounded_timeout(timeout)
        for wait in slices(None if timeout is None else max(0.0, timeout)):
            # Dask's wait(0) gives up before it looks (asyncio.wait_for with no time on Python 3.11)
            if self._event.wait(wait) if wait > 0 else self._event.is_set():
                return True
        return False


class DaskSemaphore(OnHub):
    """``threading.Semaphore`` on the cluster: a counter in the hub, which any process may release."""

    _holds = "semaphore"
    _kind = "Semaphore"

    def __init__(self, hub: HubRef, value: int = 1, *, bounded: bool = False) -> None:
        if value < 0:
            raise ValueError("semaphore initial value must be >= 0")
        self._create(hub, value, value if bounded else None)

    def acquire(self, blocking: bool = True, timeout: float | None = None) -> bool:
        if not blocking and timeout is not None:
            raise ValueError("can't specify timeout for non-blocking acquire")
        bounded_timeout(timeout)
        wait = 0.0 if not blocking else (None if timeout is None else max(0.0, timeout))
        return self._call("acquire", timeout=wait, undo=("release", (1,))) is True

    def release(self, n: int = 1) -> None:
        if n < 1:
            raise ValueError("n must be one or more")
        self._call("release", n)

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()

    @property
    def _value(self) -> int:
        """The counter, as ``threading.Semaphore`` keeps it (one question to the hub)."""
        return int(self._call("get_value"))


class DaskBoundedSemaphore(DaskSemaphore):
    """``threading.BoundedSemaphore``: releasing above the initial value raises ValueError (and
    changes nothing), checked by the hub in the same step as the release."""

    _kind = "BoundedSemaphore"

    def __init__(self, hub: HubRef, value: int = 1) -> None:
        super().__init__(hub, value, bounded=True)


class DaskCondition(OnHub):
    """``threading.Condition`` around a cluster ``Lock`` or ``RLock``; its waiters queue in the hub.

    A waiter enters the hub's queue before it lets go of the lock, so a notify that follows cannot
    miss it; ``notify(n)`` marks the ``n`` oldest in one step, and a waiter whose time runs out
    leaves in one step, keeping a notify that reached it meanwhile (it never swallows one meant
    for another).
    """

    _holds = "waiters"
    _kind = "Condition"

    def __init__(self, hub: HubRef, lock: Any) -> None:
        if not isinstance(lock, DaskLock):
            raise TypeError("a dask Condition needs a lock made by a dask context or pool "
                            "(ctx.Lock() or ctx.RLock())")
        self._create(hub)
        self._lock = lock

    def acquire(self, *args: Any, **kwargs: Any) -> bool:
        return self._lock.acquire(*args, **kwargs)

    def _is_owned(self) -> bool:
        return self._lock._is_owned()

    def release(self) -> None:
        self._lock.release()

    def wait(self, timeout: float | None = None) -> bool:
        if not self._is_owned():
            raise RuntimeError("cannot wait on un-acquired lock")
        bounded_timeout(timeout)
        if timeout is not None and timeout <= 0:
            # Nobody can notify while we hold the lock: let go of it and take it again, as the
            # stdlib does, without a trip to the hub.
            self._lock._acquire_restore(self._lock._release_save())
            return False
        token = uuid.uuid4().hex
        self._call("enter", token)
        saved = self._lock._release_save()
        try:
            notified = self._call("wait", token, timeout=timeout)
            if notified is TIMED_OUT:
                notified = self._call("leave", token)
        except BaseException:
            with contextlib.suppress(Exception):
                self._call("leave", token)  # interrupted: do not leave a waiter that takes a notify
            raise
        finally:
            self._lock._acquire_restore(saved)
        return bool(notified)

    def wait_for(self, predicate: Callable[[], Any], timeout: float | None = None) -> Any:
        return wait_for(self.wait, predicate, timeout)

    def notify(self, n: int = 1) -> None:
        if not self._lock._is_owned():
            raise RuntimeError("cannot notify on un-acquired lock")
        if n > 0:
            self._call("notify", n)

    def notify_all(self) -> None:
        if not self._lock._is_owned():
            raise RuntimeError("cannot notify on un-acquired lock")
        self._call("notify", None)

    def __enter__(self) -> bool:
        return self._lock.__enter__()

    def __exit__(self, *exc: Any) -> None:
        self._lock.__exit__(*exc)

    def _state(self) -> tuple[Any, ...]:
        return (self._lock,)

    def _restore(self, lock: Any) -> None:
        self._lock = lock


class DaskBarrier(OnHub):
    """``threading.Barrier`` on the cluster, counted by the hub.

    The last party to arrive runs the action in its own process before the others go on; a party
    whose time runs out, an abort, or a failing action breaks the barrier for every waiting party.
    """

    _holds = "barrier"
    _kind = "Barrier"

    def __init__(self, hub: HubRef, parties: int, action: Callable[[], Any] | None = None,
                 timeout: float | None = None) -> None:
        if parties < 1:
            raise ValueError("parties must be > 0")
        self._create(hub, parties)
        self.parties, self._action, self._timeout = parties, action, timeout

    def wait(self, timeout: float | None = None) -> int:
        bounded_timeout(self._timeout if timeout is None else timeout)
        generation, index, last = self._call("arrive", self._action is None, timeout=None)
        if not last:
            left = self._timeout if timeout is None else timeout
            if self._call("passed", generation, timeout=left) is TIMED_OUT:
                self._call("give_up", generation)  # raises BrokenBarrierError, unless it passed just now
            return index
        if self._action is not None:  # (without one, the hub tripped the barrier on arrival)
            try:
                self._action()
            except BaseException:
                self._call("trip", generation, False)  # breaks it for the others
                raise
            self._call("trip", generation, True)
        return index

    def _state(self) -> tuple[Any, ...]:
        return (self.parties, self._timeout, self._action)

    def _restore(self, parties: int, timeout: float | None, action: Callable[[], Any] | None) -> None:
        self.parties, self._timeout, self._action = parties, timeout, action

    @property
    def broken(self) -> bool:
        return bool(self._call("status")[1])

    @property
    def n_waiting(self) -> int:
        return int(self._call("status")[0])

    def abort(self) -> None:
        """Break the barrier: waiting parties and later ones get ``BrokenBarrierError``."""
        self._call("abort")

    def reset(self) -> None:
        """Mend it: parties waiting now get ``BrokenBarrierError``, later ones wait as usual."""
        self._call("reset")
