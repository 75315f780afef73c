"""The Dask shell of the cluster primitives: the hub as a Dask actor, and the transport to it.

A factory's hub (``_shared/hub/core.py``) is a Dask actor, that is an ordinary object that Dask
keeps on one of its workers and whose methods the caller or any task can call. Its methods are
coroutines, so Dask runs them on the worker's event loop, one at a time: each operation is atomic,
with no lock, and a waiting call never ties up a thread of the worker. Everything else the
primitives do is the same on every engine (``_shared/hub``); this module is only the way there.
"""

from __future__ import annotations

import threading
import time
import uuid
import weakref
from typing import Any

from conveyor._backends._shared.hub.core import OK, Hub
from conveyor._backends._shared.hub.space import SLICE_SECONDS
from conveyor._backends.dask.connection import Connection, connection_for, dispose
from conveyor._core.errors import OwnerGoneError

ANSWER_SECONDS = 30.0
"""How long a call may go unanswered, beyond its own wait, before the hub counts as unreachable."""

_hubs: weakref.WeakValueDictionary[str, DaskHub] = weakref.WeakValueDictionary()
_hubs_lock = threading.Lock()


def _rebuild_hub(pickled: tuple[Any, ...], address: str) -> DaskHub:
    """Unpickle a hub: this process's transport to it, if it has one, else one bound on first use
    (never here: Dask unpickles a task's arguments before the task runs, outside it)."""
    with _hubs_lock:
        hub = _hubs.get(pickled[2])
        if hub is None:
            hub = _hubs[pickled[2]] = DaskHub(None, address, pickled)
        return hub


class DaskHub:
    """A factory's hub actor as this process sees it: a :class:`~conveyor._backends._shared.hub.space.Transport`.

    The factory's own transport holds the future of the actor, which is what keeps Dask from
    dropping it; others (unpickled in tasks) only call it. A call answers, or raises
    :class:`~conveyor.OwnerGoneError` if the hub cannot be reached (its worker died, or the factory
    that made it was closed): it never waits for ever.
    """

    engine = "dask"

    def __init__(self, connection: Connection | None, address: str, pickled: tuple[Any, ...],
                 future: Any = None) -> None:
        self._connection = connection
        self._address = address
        self._pickled = pickled  # (class, worker address, key): how Dask pickles an actor handle
        self._future = future
        self._actor: Any = None
        self._lock = threading.Lock()
        self.name = str(pickled[2])

    @classmethod
    def start(cls, connection: Connection) -> DaskHub:
        """Start a hub on the cluster (a Dask task: it waits for a worker thread to be free)."""
        future = connection.client.submit(Hub, actor=True, pure=False, key=f"conveyor-hub-{uuid.uuid4().hex}",
                                          priority=1 << 20)  # ahead of queued work
        pickled = future.result().__reduce__()[1]
        hub = cls(connection, connection.address, pickled, future)
        with _hubs_lock:
            _hubs[pickled[2]] = hub
        return hub

    def __reduce__(self) -> Any:
        return (_rebuild_hub, (self._pickled, self._address))

    @property
    def connection(self) -> Connection:
        """The client this hub is reached through (in a task: the worker's)."""
        self._handle()
        assert self._connection is not None  # set by _handle()
        return self._connection

    def _handle(self) -> Any:
        if self._actor is None:
            with self._lock:
                if self._actor is None:
                    if self._connection is None:
                        self._connection = connection_for(self._address)
                    self._actor = self._connection.actor(self._pickled)
        return self._actor

    def _exists(self) -> bool:
        """Whether Dask still has the actor: the factory's own handle knows (its worker died, it
        was released); a copy asks the scheduler where it is."""
        if self._future is not None:
            return bool(self._future.status == "finished")
        try:
            client = self.connection.client
            where = client.sync(client.scheduler.who_has, keys=[self.name], callback_timeout=ANSWER_SECONDS)
        except Exception:  # noqa: BLE001 - the scheduler cannot say: the call's own limit decides
            return True
        return bool(where.get(self.name))

    def _unreachable(self, cause: BaseException | None) -> OwnerGoneError:
        why = f" ({type(cause).__name__}: {cause})" if cause is not None else ""
        return OwnerGoneError(
            f"the Dask actor holding this object (on worker {self._pickled[1]}) cannot be reached{why}: "
            f"its worker died, or the context or pool that made it was closed, and its data went with it")

    def request(self, method: str, args: tuple[Any, ...], wait: float,
                undo: tuple[str, tuple[Any, ...]] | None = None) -> tuple[str, Any]:
        try:
            pending = getattr(self._handle(), method)(*args)
        except Exception as exc:  # noqa: BLE001 - Dask's "worker holding Actor was lost", a closed client
            raise self._unreachable(exc) from exc
        limit = time.monotonic() + wait + ANSWER_SECONDS
        while True:
            try:
                return pending.result(timeout=wait + SLICE_SECONDS)  # type: ignore[no-any-return]
            except TimeoutError:
                # Dask would go on trying to reach a lost actor for its connect timeout, and a copy's
                # call to an actor released meanwhile is never answered: ask whether it is still there.
                if not self._exists() or time.monotonic() > limit:
                    raise self._unreachable(None) from None
            except Exception as exc:  # noqa: BLE001 - the hub itself never raises: this is Dask's
                raise self._unreachable(exc) from exc
            except BaseException:
                connection = self._connection  # set by _handle() above
                if undo is not None and connection is not None:
                    dispose(connection.loop, _undo_when_done, pending, self._actor, undo)
                raise


async def _undo_when_done(pending: Any, actor: Any, undo: tuple[str, tuple[Any, ...]]) -> None:
    """On the loop: once an interrupted call has answered, undo it if it took something."""
    try:
        status, value = await pending
    except Exception:  # noqa: BLE001 - it never arrived: nothing to give back
        return
    if status == OK and value is True:
        getattr(actor, undo[0])(*undo[1])  # an actor call returns at once; nobody waits for this one


__all__ = ["DaskHub"]
