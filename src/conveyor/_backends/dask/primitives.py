"""The factory behind ``conveyor.context("dask").Lock()``, ``pool.Queue()`` and friends on Dask.

The primitives themselves are the same on every engine (``_shared/hub``); on Dask a factory's
objects live in a hub actor of its own (``dask/hub.py``), reached through a Dask client of the
factory's own, opened with the first object, or through ``client`` (borrowed: the objects go when
its owner closes it). The semantics are the standard library's; the differences are in
``docs/clusters.md``.
"""

from __future__ import annotations

from typing import Any

from conveyor._backends._shared.hub.factory import HubPrimitives
from conveyor._backends._shared.hub.space import Space
from conveyor._backends.dask.connection import Connection
from conveyor._backends.dask.hub import DaskHub


class DaskPrimitives(HubPrimitives):
    """Makes primitives on the Dask cluster whose scheduler is at ``address``.

    The connection and the hub are opened with the first object and held by the objects (through
    their space): when the last of them is gone, the client closes and Dask drops the hub.
    """

    engine = "dask"

    def __init__(self, address: str, client: Any = None) -> None:
        super().__init__()
        self._address = address
        self._borrowed = client

    def _open(self) -> Space:
        return Space(DaskHub.start(Connection(self._address, self._borrowed)))

    def _closed(self, space: Space) -> None:
        """Close the factory's own client now (a context that started its own cluster closes it next)."""
        space.transport.connection.close()  # type: ignore[attr-defined]
