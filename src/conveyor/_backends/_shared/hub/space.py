"""How a client reaches its hub: the engine's transport, a factory's space in the hub, and leases.

::

    client object ── Space.call(key, op, args, timeout) ── a slice at a time ──► Transport.request
      (clients.py)     the factory's key prefix, the lease,                      (dask/hub.py, ray/hub.py:
                       drops of collected factories                               one round trip)

A :class:`Transport` is all an engine provides: one round trip to a method of its hub actor, an
answer within the call's wait plus the way there and back, or :class:`~conveyor.OwnerGoneError`
when the hub cannot be reached. It pickles by name, so the objects that carry it can go to tasks.
Everything else (cutting waits into slices, reading answers, giving back what an interrupted call
took, dropping a closed factory's objects, keeping a lock holder's lease) is here, once.
"""

from __future__ import annotations

import collections
import os
import threading
import time
import uuid
import weakref
from typing import Any, Callable, Protocol

from conveyor._backends._shared.hub.core import ERROR, GONE, LATER, OK
from conveyor._core import serialize
from conveyor._core.errors import OwnerGoneError
from conveyor._core.waiting import slices

SLICE_SECONDS = 0.1
"""The longest a single hub call waits; a blocking operation calls again until its own timeout."""

LEASE_SECONDS = 10.0
"""A lock whose holder's process is silent this long is freed (``CONVEYOR_CLUSTER_LEASE`` sets it)."""

TIMED_OUT = object()
"""What :meth:`Space.call` returns when what it waited for did not happen in time."""


class Transport(Protocol):
    """One engine's way to its hub actor (see the module docstring)."""

    name: str
    """Unique per hub: the key under which this process keeps state about it."""
    engine: str
    """The engine's name, for messages and reprs ("dask", "ray")."""

    def request(self, method: str, args: tuple[Any, ...], wait: float,
                undo: tuple[str, tuple[Any, ...]] | None = None) -> tuple[str, Any]:
        """Call the hub's ``method(*args)``; its answer ``(status, value)``.

        ``wait`` is how long the hub may take before answering (beyond the way there and back).
        ``undo`` is a hub method and its arguments: if this call is interrupted (Ctrl-C) and its
        answer turns out to be ``(OK, True)`` (it took a lock or a token), send that, unawaited.

        Raises:
            OwnerGoneError: the hub cannot be reached.
        """
        ...  # pragma: no cover - a Protocol


# -- who is calling -----------------------------------------------------------------------------------------

_process: list[Any] = [None, ""]


def process_token() -> str:
    """This process, as the hub knows it (a fresh one after a fork: the child holds nothing)."""
    if _process[0] != os.getpid():
        _process[0], _process[1] = os.getpid(), uuid.uuid4().hex
    return str(_process[1])


def owner() -> str:
    """This thread of this process, for lock ownership."""
    return f"{process_token()}:{threading.get_ident()}"


def lease_seconds() -> float:
    return float(os.environ.get("CONVEYOR_CLUSTER_LEASE") or LEASE_SECONDS)


# -- keeping a lock holder's lease ------------------------------------------------------------------------

class LeaseKeeper:
    """While this process holds a lock in a hub, a daemon thread tells that hub so, often enough
    that the lease never runs out; it stops when the process holds nothing there any more.

    Hubs are held weakly: a hub whose objects are all gone here needs no lease kept (a lock
    dropped while held is then freed by its lease, as if its holder had died)."""

    def __init__(self) -> None:
        self._hubs: dict[str, tuple[Callable[[], Transport | None], int]] = {}  # name -> (hub, generation)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._interval = 1.0

    def hold(self, transport: Transport, lease: float) -> None:
        with self._lock:
            generation = self._hubs[transport.name][1] + 1 if transport.name in self._hubs else 0
            self._hubs[transport.name] = (weakref.ref(transport), generation)
            self._interval = min(self._interval, max(0.05, lease / 4))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="conveyor-lease", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(self._interval)
            with self._lock:
                hubs = list(self._hubs.items())
                if not hubs:
                    self._thread = None
                    return
            for name, (hub, generation) in hubs:
                if not self._touch(hub):
                    with self._lock:
                        if self._hubs.get(name, (None, -1))[1] == generation:  # nothing taken since
                            del self._hubs[name]
            del hubs

    @staticmethod
    def _touch(hub: Callable[[], Transport | None]) -> bool:
        """Tell the hub this process is alive; whether it still holds a lock there."""
        transport = hub()
        if transport is None:
            return False
        try:
            status, held = transport.request("touch", (process_token(),), 0.0)
        except Exception:  # noqa: BLE001 - the hub is gone, and the lock with it
            return False
        return status != OK or bool(held)

    def forget_all(self) -> None:
        """In a forked child: the parent's holdings are not ours, nor is its thread."""
        self._hubs.clear()
        self._lock = threading.Lock()
        self._thread = None


leases = LeaseKeeper()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=leases.forget_all)


# -- a factory's space in a hub ---------------------------------------------------------------------------

_drops: dict[str, collections.deque[str]] = collections.defaultdict(collections.deque)
"""Per hub: key prefixes of collected factories, whose objects the next call to that hub drops. A
finalizer only appends here (atomic, no lock): it runs wherever a garbage collection happens,
possibly inside an engine call of the same thread, where calling the engine again could deadlock."""


def _forget(name: str, prefix: str) -> None:
    _drops[name].append(prefix)


class Space:
    """A factory's part of a hub: its transport and the key prefix of its objects.

    The factory's own space (in the process that made it) drops the factory's objects from the hub
    when it is closed or collected; every object made in it holds it, so the objects live as long
    as their factory or any of them does. A space unpickled elsewhere only calls.
    """

    def __init__(self, transport: Transport, prefix: str | None = None, *, owned: bool = True) -> None:
        self.transport = transport
        self.prefix = prefix or f"{uuid.uuid4().hex}/"
        self.engine = transport.engine
        self._collected = weakref.finalize(self, _forget, transport.name, self.prefix) if owned else None
        if self._collected is not None:
            self._collected.atexit = False  # at exit the hub ends with the engine's connection

    def __reduce__(self) -> Any:
        return (_unpickle_space, (self.transport, self.prefix))

    def close(self, wait: float = 5.0) -> None:
        """Drop this space's objects from the hub now (a closed factory's); later calls on them
        raise ``OwnerGoneError``, in every process."""
        if self._collected is None or self._collected.detach() is None:
            return
        try:
            self.transport.request("drop", (self.prefix,), wait)
        except Exception:  # noqa: BLE001 - the hub is gone already, and the objects with it
            pass

    def make(self, kind: str, *args: Any) -> str:
        """A new object of the hub's ``kind``, made with ``args``; its key."""
        key = f"{self.prefix}{kind}-{uuid.uuid4().hex}"
        status, value = self.transport.request("make", (key, kind, args), 0.0)
        if status == ERROR:
            raise value
        if status == GONE:
            raise self._gone("object")
        return key

    def call(self, key: str, op: str, args: tuple[Any, ...], timeout: float | None = 0.0,
             undo: tuple[str, tuple[Any, ...]] | None = None) -> Any:
        """``op`` on an object of the hub: its result, or :data:`TIMED_OUT` if it had to wait and
        ``timeout`` passed (``None``: wait for ever, a slice at a time; ``0``: do not wait).
        ``undo`` (an operation and its arguments) gives back what an interrupted ``op`` took."""
        pending = _drops.get(self.transport.name)
        give_back: tuple[str, tuple[Any, ...]] | None = None if undo is None else ("call", (key, undo[0], undo[1], 0.0, process_token(), []))
        for wait in slices(timeout, SLICE_SECONDS):
            drops = [pending.popleft() for _ in range(len(pending))] if pending else []
            status, value = self.transport.request("call", (key, op, args, wait, process_token(), drops),
                                                   wait, give_back)
            if status != LATER:
                break
        else:
            return TIMED_OUT
        if status == ERROR:
            raise serialize.loads_exception(value) if isinstance(value, bytes) else value
        if status == GONE:
            raise self._gone(key.rpartition("/")[2].partition("-")[0])
        return value

    def _gone(self, kind: str) -> OwnerGoneError:
        return OwnerGoneError(f"this {kind} is gone from its {self.engine} hub: the context or pool that "
                              f"made it was closed or dropped")


def _unpickle_space(transport: Transport, prefix: str) -> Space:
    return Space(transport, prefix, owned=False)


__all__ = ["LEASE_SECONDS", "SLICE_SECONDS", "TIMED_OUT", "Space", "Transport", "leases", "owner",
           "process_token"]
