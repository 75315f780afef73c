"""Timeouts and predicate waits shared by every backend's primitives.

The stdlib's locks refuse a timeout they cannot wait for (``OverflowError`` above
``threading.TIMEOUT_MAX``) and, for locks and queues, a negative one (``ValueError``). Each backend's
primitives (process, Dask, Ray, the in-process queues) check their timeouts here, so that they all
refuse the same values with the same errors. ``wait_for`` is the stdlib's ``Condition.wait_for``
loop, for any condition that implements ``wait(timeout)``.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Iterator

TIMEOUT_MAX = threading.TIMEOUT_MAX


def bounded_timeout(timeout: float | None) -> float | None:
    """``timeout`` itself; ``OverflowError`` above ``threading.TIMEOUT_MAX``, as the stdlib's locks.

    Checked on every call, whether or not the call would have to wait, so that a wrong timeout is
    found at once rather than on the day the primitive happens to be busy."""
    if timeout is not None and timeout > TIMEOUT_MAX:
        raise OverflowError("timeout value is too large")
    return timeout


def lock_timeout(blocking: bool, timeout: float) -> float | None:
    """How long ``Lock.acquire(blocking, timeout)`` may wait (None: forever), with the stdlib's errors."""
    if not blocking:
        if timeout != -1:
            raise ValueError("can't specify a timeout for a non-blocking call")
        return 0.0
    if timeout == -1:
        return None
    if timeout < 0:
        raise ValueError("timeout value must be a non-negative number")
    return bounded_timeout(timeout)


def queue_timeout(block: bool, timeout: float | None) -> float | None:
    """How long ``Queue.put/get(block, timeout)`` may wait (None: forever; 0: not at all), with the
    stdlib's errors: a negative timeout of a blocking call is a ``ValueError``."""
    if not block:
        return 0.0
    if timeout is not None and timeout < 0:
        raise ValueError("'timeout' must be a non-negative number")
    return bounded_timeout(timeout)


def slices(timeout: float | None, slice_seconds: float) -> Iterator[float]:
    """The waits of one blocking call cut into slices: ``slice_seconds`` at a time for ever
    (``None``), or until ``timeout`` has passed (a single wait of 0 for ``timeout=0``: try once).

    A wait on something another process keeps is cut so that Ctrl-C is seen within a slice and a
    waiter that dies leaves nothing waiting for long; the caller asks again after each slice."""
    if timeout is None:
        while True:
            yield slice_seconds
    end = time.monotonic() + timeout
    left = timeout
    while left > slice_seconds:
        yield slice_seconds
        left = end - time.monotonic()
    yield max(0.0, left)


def wait_for(wait: Callable[[float | None], Any], predicate: Callable[[], Any], timeout: float | None) -> Any:
    """Call ``wait(remaining)`` until ``predicate()`` is true or ``timeout`` passes; the last result."""
    bounded_timeout(timeout)
    end = None if timeout is None else time.monotonic() + timeout
    result = predicate()
    while not result:
        remaining = None if end is None else end - time.monotonic()
        if remaining is not None and remaining <= 0:
            break
        wait(remaining)
        result = predicate()
    return result
