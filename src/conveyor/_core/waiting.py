"""Waiting for a predicate on a condition variable of any kind (the stdlib's ``Condition.wait_for``).

Process and cluster conditions both implement ``wait(timeout)``; the loop that re-checks the
predicate and keeps the overall deadline is the same for all of them.
"""

from __future__ import annotations

import time
from typing import Any, Callable


def wait_for(wait: Callable[[float | None], Any], predicate: Callable[[], Any], timeout: float | None) -> Any:
    """Call ``wait(remaining)`` until ``predicate()`` is true or ``timeout`` passes; the last result."""
    end = None if timeout is None else time.monotonic() + timeout
    result = predicate()
    while not result:
        remaining = None if end is None else end - time.monotonic()
        if remaining is not None and remaining <= 0:
            break
        wait(remaining)
        result = predicate()
    return result
