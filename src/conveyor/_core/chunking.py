"""Automatic chunk size: big enough that dispatch cost vanishes, small enough to balance the tail.

The sizer starts with one probe input per worker (so the first results arrive quickly and slow tasks
are never lumped together), then uses the measured time per input:

- ``floor``: the smallest batch worth a round trip to a worker (``TARGET_SECONDS`` of work; none
  while the calls measured so far are too short to time, see ``TINY_CALL_SECONDS``);
- ``guided``: a fair share of what is left (``remaining / (2 × workers)``), so batches start large and
  shrink towards the end, and the last ones spread over all workers;
- ``cap``: a quarter of a fair share of the whole input when its length is known (as
  ``multiprocessing.Pool`` does; a backend whose every task costs milliseconds, such as a cluster,
  asks for fewer, bigger batches with ``Backend.batches_per_worker``), else ``MAX_UNSIZED`` to bound
  memory in flight.

size = clamp(guided, floor, cap). Tiny tasks hit ``cap`` (few round trips, which are their whole cost);
slow ones hit ``floor`` near the end, so the final imbalance is at most ``TARGET_SECONDS``. No ``len()``
is needed: an infinite generator works.
"""

from __future__ import annotations

import math
import threading
import weakref
from typing import Any

TARGET_SECONDS = 0.02
MAX_UNSIZED = 16384
RESOLUTION_SECONDS = 1e-4
TINY_CALL_SECONDS = 2e-5
"""While less than ``RESOLUTION_SECONDS`` of work has been measured, a time per input below
``TINY_CALL_SECONDS`` says only "tiny calls": one fast probe input costs more in timer and first-call
effects than in work (several microseconds for a call of a few hundred nanoseconds), and taking that
at face value would cut the first batches to a fraction of the cap. That costs nothing on a local
backend but a whole extra round of engine tasks on a cluster. A slower probe is taken as it is."""


def too_short_to_time(busy: float, per_call: float) -> bool:
    """Whether ``busy`` seconds measured over calls of ``per_call`` seconds each say only "tiny calls"
    (see ``TINY_CALL_SECONDS``)."""
    return busy < RESOLUTION_SECONDS and per_call < TINY_CALL_SECONDS


class ChunkSizer:
    """Chooses the size of the next batch of one call.

    Args:
        workers: how many workers share the call.
        total: number of inputs, if known.
        fixed: a user-given chunk size, used as is.
        cap: a hard upper bound from the backend (e.g. ``max_tasks_per_worker``).
    """

    def __init__(self, workers: int, total: int | None = None, fixed: int | None = None,
                 cap: int | None = None, batches_per_worker: int = 4) -> None:
        if fixed is not None and fixed < 1:
            raise ValueError(f"chunksize must be >= 1, got {fixed}")
        self.workers = max(1, workers)
        self.total = total
        self.fixed = fixed
        self.cap = cap
        self.batches_per_worker = max(1, batches_per_worker)
        self._size = fixed or 1
        self._items = 0
        self._busy = 0.0

    @property
    def size(self) -> int:
        return self._size

    def next_size(self, remaining: int | None = None) -> int:
        """Size of the next batch; ``remaining`` is how many inputs are left, when known."""
        if self.fixed is not None or self._items == 0:
            return self._size
        size = self._size  # the floor, clamped to the cap by observe()
        if remaining is not None:
            size = max(size, math.ceil(remaining / (2 * self.workers)))
        return max(1, min(size, self._cap()))

    def _cap(self) -> int:
        cap = (MAX_UNSIZED if self.total is None
               else max(1, math.ceil(self.total / (self.batches_per_worker * self.workers))))
        return cap if self.cap is None else min(cap, self.cap)

    @property
    def per_item(self) -> float | None:
        """Seconds per input measured so far, or None while too little was measured to time."""
        if self._items == 0 or self._busy < RESOLUTION_SECONDS:
            return None
        return self._busy / self._items

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
        if too_short_to_time(self._busy, per_item):
            per_item = 0.0  # tiny calls: batches at the cap
        cap = self._cap()
        self._size = max(1, min(math.ceil(TARGET_SECONDS / per_item), cap)) if per_item > 0 else cap


KNOWN_TINY_SECONDS = 2e-6
"""A function measured below this per call (over at least ``RESOLUTION_SECONDS`` of work) in one call
is taken to be tiny in its next call too: cap-sized batches of it then run in milliseconds."""

_tiny: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()
_tiny_lock = threading.Lock()


def remember(fn: Any, per_item: float | None) -> None:
    """After a call of ``fn``: what it measured per input (None: too little to say)."""
    if per_item is None:
        return
    try:
        with _tiny_lock:
            if per_item < KNOWN_TINY_SECONDS:
                _tiny[fn] = per_item
            else:
                _tiny.pop(fn, None)
    except TypeError:  # not weakly referenceable, or not hashable: nothing is remembered
        pass


def known_tiny(fn: Any) -> float | None:
    """The time per call of ``fn`` if its last measured call found it tiny, else None.

    A call of such a function over an input of known length needs no probe: its first batches are
    the size the probe would have led to (the cap, a quarter of a worker's fair share). Only
    functions whose whole batch of the cap runs in milliseconds are remembered; one that turns out
    slower on other inputs runs its first batches bigger than ideal, on every worker, and the sizer
    adapts from the measurements of that call as usual.
    """
    try:
        with _tiny_lock:
            return _tiny.get(fn)
    except TypeError:
        return None
