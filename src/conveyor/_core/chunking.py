"""Automatic chunk size: big enough that dispatch cost vanishes, small enough to balance the tail.

The sizer starts with one probe item per worker (so the first results arrive quickly and slow tasks
are never lumped together), then sizes each batch from the measured time per item so that a batch runs
for about ``TARGET_SECONDS``. When the total is known it also never exceeds a quarter of a fair share,
so the last batches still spread over all workers. It needs no ``len()``: an infinite generator works.

Why no slow ramp-up and no shrinking tail: every batch costs a round trip to a worker, and for tiny
tasks those round trips are the whole cost. A batch is never longer than ``TARGET_SECONDS``, so the
imbalance at the end is bounded by that without shrinking batches.
"""

from __future__ import annotations

import math

TARGET_SECONDS = 0.01
MAX_UNSIZED = 4096


class ChunkSizer:
    """Chooses the size of the next batch of one call.

    Args:
        workers: how many workers share the call.
        total: number of inputs, if known.
        fixed: a user-given chunk size, used as is.
        cap: a hard upper bound from the backend (e.g. ``max_tasks_per_worker``).
    """

    def __init__(self, workers: int, total: int | None = None, fixed: int | None = None,
                 cap: int | None = None) -> None:
        if fixed is not None and fixed < 1:
            raise ValueError(f"chunksize must be >= 1, got {fixed}")
        self.workers = max(1, workers)
        self.total = total
        self.fixed = fixed
        self.cap = cap
        self._size = fixed or 1
        self._items = 0
        self._busy = 0.0

    @property
    def size(self) -> int:
        return self._size

    def next_size(self) -> int:
        return self._size

    @property
    def probing(self) -> bool:
        """True until the first measurement: the caller should send one probe batch per worker."""
        return self.fixed is None and self._items == 0

    def observe(self, items: int, busy: float) -> None:
        """Feed back how long ``items`` inputs took to run."""
        if self.fixed is not None or items <= 0:
            return
        self._items += items
        self._busy += busy
        per_item = self._busy / self._items
        ideal = TARGET_SECONDS / per_item if per_item > 0 else float("inf")
        if self.total is not None:
            cap = max(1, math.ceil(self.total / (4 * self.workers)))
        else:
            cap = MAX_UNSIZED
        if self.cap is not None:
            cap = min(cap, self.cap)
        self._size = int(max(1, min(ideal, cap)))
