"""Locks, conditions, semaphores, events and barriers kept by a hub, with ``threading`` semantics.

Every blocking call is cut into slices (``Space.call``): a timeout is kept to a slice, Ctrl-C is
seen within one, and a call whose client died ends by itself. An interrupted acquire gives back
what its pending call took. A lock held by a process that dies is freed when its lease runs out
(``LEASE_SECONDS``, the rule in ``core.py``); a semaphore's token is not owned, so it is not.
"""

from __future__ import annotations

import contextlib
import uuid
from typing import Any, Callable

from conveyor._backends._shared.hub.objects import Acquirable, HubObject
from conveyor._backends._shared.hub.space import TIMED_OUT, Space, lease_seconds, leases, owner
from conveyor._core.waiting import bounded_timeout, lock_timeout, wait_for


class Lock(Acquirable, HubObject):
    """``threading.Lock`` kept by the hub: any thread of any process may release it."""

    kind = "lock"
    reentrant = False

    def __init__(self, space: Space) -> None:
        self._create(space, self.reentrant)
        self._lease = lease_seconds()

    def _state(self) -> tuple[Any, ...]:
        return (self._lease,)

    def _restore(self, lease: float) -> None:
        self._lease = lease

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        return self._acquire(owner(), 1, lock_timeout(blocking, timeout))

    def _acquire(self, me: str, depth: int, wait: float | None) -> bool:
        taken = self._call("acquire", me, self._lease, depth, timeout=wait, undo=("release", (me,)))
        if taken is TIMED_OUT:
            return False
        leases.hold(self._space.transport, self._lease)
        return True

    def release(self) -> None:
        self._call("release", owner())

    def locked(self) -> bool:
        return bool(self._call("locked"))

    # What threading.Condition asks of its lock (and what ours uses):
    def _is_owned(self) -> bool:
        return bool(self._call("owned", owner()))

    def _release_save(self) -> Any:
        return self._call("release_all", owner())

    def _acquire_restore(self, depth: Any) -> None:
        self._acquire(owner(), depth, None)

    def __repr__(self) -> str:
        holder, depth = self._call("state")
        return (f"<{'locked' if depth else 'unlocked'} {super().__repr__()[1:-1]} "
                f"owner={holder} count={depth}>")


class RLock(Lock):
    """``threading.RLock``: the holding thread (of the holding process) may acquire it again."""

    reentrant = True


class Condition(Acquirable, HubObject):
    """``threading.Condition`` around a lock of the same hub (a new RLock by default)."""

    kind = "condition"

    def __init__(self, space: Space, lock: Lock | None = None) -> None:
        if lock is None:
            lock = RLock(space)
        if not isinstance(lock, Lock) or lock._space.transport.name != space.transport.name:
            raise TypeError(f"a {space.engine} Condition needs a lock made by the same {space.engine} "
                            f"context or pool (ctx.Lock(), ctx.RLock())")
        self._create(space, lock._key)
        self._lock = lock

    def _state(self) -> tuple[Any, ...]:
        return (self._lock,)

    def _restore(self, lock: Lock) -> None:
        self._lock = lock

    def acquire(self, *args: Any, **kwargs: Any) -> bool:
        return self._lock.acquire(*args, **kwargs)

    def release(self) -> None:
        self._lock.release()

    def _is_owned(self) -> bool:
        return self._lock._is_owned()

    def wait(self, timeout: float | None = None) -> bool:
        """Join the waiters and let go of the lock (one step in the hub), wait for a notify, then
        take the lock again at the depth it had."""
        bounded_timeout(timeout)  # before this waiter is registered in the hub
        me, token = owner(), uuid.uuid4().hex
        depth = self._call("begin", me, token)
        try:
            notified = self._call("wait", token, timeout=None if timeout is None else max(0.0, timeout))
            if notified is TIMED_OUT:
                notified = self._call("leave", token)
        except BaseException:
            with contextlib.suppress(Exception):
                self._call("leave", token)  # interrupted: do not leave a waiter that takes a notify
            raise
        finally:
            self._lock._acquire(me, depth, None)
        return bool(notified)

    def wait_for(self, predicate: Callable[[], Any], timeout: float | None = None) -> Any:
        return wait_for(self.wait, predicate, timeout)

    def notify(self, n: int = 1) -> None:
        self._call("notify", owner(), max(0, n))

    def notify_all(self) -> None:
        self._call("notify", owner(), None)


class Semaphore(Acquirable, HubObject):
    """``threading.Semaphore`` kept by the hub: any process may release."""

    kind = "semaphore"
    bounded = False

    def __init__(self, space: Space, value: int = 1) -> None:
        if value < 0:
            raise ValueError("semaphore initial value must be >= 0")
        self._create(space, value, value if self.bounded else None)

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

    @property
    def _value(self) -> int:
        """The counter, as ``threading.Semaphore`` keeps it (one question to the hub)."""
        return int(self._call("get_value"))


class BoundedSemaphore(Semaphore):
    """``threading.BoundedSemaphore``: releasing above the initial value raises ValueError (and
    changes nothing), checked by the hub in the same step as the release."""

    bounded = True


class Event(HubObject):
    """``threading.Event`` kept by the hub."""

    kind = "event"

    def __init__(self, space: Space) -> None:
        self._create(space)

    def is_set(self) -> bool:
        return bool(self._call("is_set"))

    def set(self) -> None:
        self._call("set")

    def clear(self) -> None:
        self._call("clear")

    def wait(self, timeout: float | None = None) -> bool:
        bounded_timeout(timeout)
        return self._call("wait", timeout=None if timeout is None else max(0.0, timeout)) is True


class Barrier(HubObject):
    """``threading.Barrier``, counted by the hub.

    The last party to arrive runs the action in its own process before the others go on; a party
    whose time runs out, an abort, or a failing action breaks the barrier for every waiting party.
    """

    kind = "barrier"

    def __init__(self, space: Space, parties: int, action: Callable[[], Any] | None = None,
                 timeout: float | None = None) -> None:
        if parties < 1:
            raise ValueError("parties must be > 0")
        self._create(space, parties)
        self.parties, self._action, self._timeout = parties, action, timeout

    def _state(self) -> tuple[Any, ...]:
        return (self.parties, self._timeout, self._action)

    def _restore(self, parties: int, timeout: float | None, action: Callable[[], Any] | None) -> None:
        self.parties, self._timeout, self._action = parties, timeout, action

    def wait(self, timeout: float | None = None) -> int:
        left = self._timeout if timeout is None else timeout
        bounded_timeout(left)  # before this party is counted as arrived
        generation, index, last = self._call("arrive", self._action is None, timeout=None)
        if not last:
            if self._call("passed", generation, timeout=None if left is None else max(0.0, left)) is TIMED_OUT:
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


__all__ = ["Barrier", "BoundedSemaphore", "Condition", "Event", "Lock", "RLock", "Semaphore"]
