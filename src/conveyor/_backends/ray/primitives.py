"""The factory behind ``conveyor.context("ray").Lock()``, ``pool.Queue()`` and friends on Ray.

The primitives themselves are the same on every engine (``_shared/hub``); on Ray a factory's
objects live in its process's hub actor (``ray/hub.py``) under a key prefix of the factory's own.
The semantics are the standard library's; the differences are in ``docs/clusters.md``.
"""

from __future__ import annotations

from typing import Any

from conveyor._backends._shared.hub.factory import HubPrimitives
from conveyor._backends._shared.hub.space import Space
from conveyor._backends.ray.hub import process_hub


class RayPrimitives(HubPrimitives):
    """Makes primitives in this process's Ray hub.

    Args:
        session: the Ray connection this factory holds (a context's), released by ``close()``; a
            pool's factory holds none (the pool does).
    """

    engine = "ray"

    def __init__(self, session: Any = None) -> None:
        super().__init__()
        self._session = session

    def _open(self) -> Space:
        return Space(process_hub())

    def close(self) -> None:
        """Drop this factory's objects from the hub and release the connection (once)."""
        super().close()
        session, self._session = self._session, None
        if session is not None:
            session.close()
