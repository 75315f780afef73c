"""The supervisor's view of one worker process: its pipe, its progress slot, what it holds."""

from __future__ import annotations

import collections
import os
from typing import Any

from conveyor._backends._shared.batches import Sent


class WorkerHandle:
    """The supervisor's view of one worker process."""

    def __init__(self, process: Any, conn: Any, slot: Any) -> None:
        self.process = process
        self.conn = conn
        self.slot = memoryview(slot).cast("B").cast("d")
        self.raw_slot = slot
        self.pid: int = process.pid
        self.ready = False
        self.inflight: collections.deque[Sent] = collections.deque()
        self.functions: collections.OrderedDict[int, None] = collections.OrderedDict()
        self.dispatched = 0
        self.retiring = False        # no new work; exits once idle
        self.doomed = False          # being killed; its work was already reported
        self.kill_at: float | None = None
        self.conn_open = True
        self.leases: dict[int, list[Any]] = {}   # batch seq -> shared-memory inputs it maps (bulk.py)
        self.released: list[str] = []            # its result segments the caller no longer maps
        self.forget: list[str] = []              # input segments removed: drop cached mappings

    @property
    def available(self) -> bool:
        return not (self.retiring or self.doomed)

    def signal(self, signum: int) -> None:
        try:
            os.kill(self.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass
