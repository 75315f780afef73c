"""An in-process transport to a hub, for testing the cluster primitives without a cluster.

The hub runs on an event loop in a thread of this process, as an engine would run it in an actor;
the transport's ``request`` is the same one round trip the Dask and Ray transports make. So the
clients, the hub and its state are tested here exactly as they run on an engine, minus the engine.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import conveyor

from conveyor._backends._shared.hub.core import OK, Hub
from conveyor._backends._shared.hub.factory import HubPrimitives
from conveyor._backends._shared.hub.space import Space

_hubs: dict[str, LoopbackHub] = {}


def _find(name: str) -> LoopbackHub:
    return _hubs[name]


class LoopbackHub:
    engine = "loopback"

    def __init__(self, name: str) -> None:
        self.name = name
        self.hub = Hub()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=f"loopback-{name}", daemon=True)
        self.thread.start()
        self.requests = 0
        _hubs[name] = self

    def __reduce__(self) -> Any:
        return (_find, (self.name,))

    def request(self, method: str, args: tuple[Any, ...], wait: float,
                undo: tuple[str, tuple[Any, ...]] | None = None) -> tuple[str, Any]:
        self.requests += 1
        if self.loop.is_closed():
            raise conveyor.OwnerGoneError(f"the loopback hub {self.name} is closed")
        pending = asyncio.run_coroutine_threadsafe(getattr(self.hub, method)(*args), self.loop)
        try:
            return pending.result(timeout=wait + 30)
        except BaseException:
            if undo is not None:
                def give_back(done: Any) -> None:
                    if not done.cancelled() and done.exception() is None and done.result() == (OK, True):
                        asyncio.run_coroutine_threadsafe(getattr(self.hub, undo[0])(*undo[1]), self.loop)
                pending.add_done_callback(give_back)
            raise

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()
        _hubs.pop(self.name, None)


class LoopbackPrimitives(HubPrimitives):
    engine = "loopback"

    def __init__(self, hub: LoopbackHub) -> None:
        super().__init__()
        self.hub = hub

    def _open(self) -> Space:
        return Space(self.hub)
