"""The Ray shell of the cluster primitives: the hub as a Ray actor, and the transport to it.

On Ray every factory of a process keeps its objects in one hub (``_shared/hub/core.py``) run as an
asynchronous Ray actor: no CPU reserved, so it starts even while every CPU runs tasks, and its
methods are coroutines on the actor's event loop, so operations run one at a time and a waiting
call holds no thread. An actor costs a worker process and about a second to start, and creating
and killing one per context or pool would leave Ray's connections to dead workers behind, so each
factory has a key prefix of its own in the process's hub instead. Everything else the primitives
do is the same on every engine (``_shared/hub``); this module is only the way there.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

import ray
import ray.exceptions

from conveyor._backends._shared.hub.core import OK, Hub
from conveyor._core.errors import OwnerGoneError

NAMESPACE = "conveyor"
ANSWER_SECONDS = 30.0
"""How long a call may go unanswered, beyond its own wait, before the hub counts as unreachable."""
_HUB_CALLS = 1024
"""Calls a hub serves at once (coroutines: a waiting call holds no thread)."""

HubActor = ray.remote(Hub)

_handles: dict[str, Any] = {}
_handles_lock = threading.Lock()


class RayHub:
    """A hub actor found by name in the ``conveyor`` namespace: a
    :class:`~conveyor._backends._shared.hub.space.Transport` that pickles as that name."""

    engine = "ray"

    def __init__(self, name: str) -> None:
        self.name = name

    def __reduce__(self) -> Any:
        return (RayHub, (self.name,))

    def _unreachable(self, cause: BaseException | None) -> OwnerGoneError:
        why = f" ({type(cause).__name__}: {cause})" if cause is not None else ""
        return OwnerGoneError(f"the Ray actor holding this object ({self.name}) cannot be reached{why}: the "
                              f"context or pool that made it was closed, or Ray shut down")

    def _handle(self) -> Any:
        with _handles_lock:
            handle = _handles.get(self.name)
        if handle is None:
            try:
                handle = ray.get_actor(self.name, namespace=NAMESPACE)
            except ValueError as exc:
                raise self._unreachable(exc) from exc
            with _handles_lock:
                _handles[self.name] = handle
        return handle

    def request(self, method: str, args: tuple[Any, ...], wait: float,
                undo: tuple[str, tuple[Any, ...]] | None = None) -> tuple[str, Any]:
        ref = getattr(self._handle(), method).remote(*args)
        try:
            return ray.get(ref, timeout=wait + ANSWER_SECONDS)  # type: ignore[no-any-return]
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError) as exc:
            raise self._unreachable(exc) from exc
        except BaseException:
            if undo is not None:
                threading.Thread(target=self._undo_when_done, args=(ref, undo), name="conveyor-ray-undo",
                                 daemon=True).start()
            raise

    def _undo_when_done(self, ref: Any, undo: tuple[str, tuple[Any, ...]]) -> None:
        """Once an interrupted call has answered, undo it if it took something."""
        try:
            status, taken = ray.get(ref, timeout=ANSWER_SECONDS)
            if status == OK and taken is True:
                getattr(self._handle(), undo[0]).remote(*undo[1])
        except Exception:  # noqa: BLE001 - the hub or Ray is gone: nothing is held any more
            pass


_process_hub: dict[str, Any] = {"job": None, "hub": None}
_process_hub_lock = threading.Lock()


def process_hub() -> RayHub:
    """This process's hub for the current Ray connection, started on first use.

    It belongs to this process (not detached): it ends with the Ray connection.
    """
    # The job alone does not name a connection: a local Ray started again after the first one was shut
    # down numbers its jobs from the start, and the old hub's name would be reused for a dead actor.
    # The node's id is new with every Ray started.
    context = ray.get_runtime_context()
    job = (context.get_job_id(), context.get_node_id())
    with _process_hub_lock:
        if _process_hub["job"] != job:
            name = f"conveyor-hub-{job[0]}-{uuid.uuid4().hex[:12]}"
            actor = HubActor.options(name=name, namespace=NAMESPACE, num_cpus=0, max_concurrency=_HUB_CALLS,
                                     max_restarts=0).remote()
            with _handles_lock:
                _handles[name] = actor
            _process_hub.update(job=job, hub=RayHub(name))
        return _process_hub["hub"]  # type: ignore[no-any-return]


__all__ = ["HubActor", "RayHub", "process_hub"]
