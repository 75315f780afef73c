"""The worker-side call loop: run a batch's inputs through the task function, one result or error each.

Shared by every backend whose workers run batches in another process (the process worker, the Ray
pool worker, the cluster batch runner). Progress goes to a *slot*, three floats the owner of the
worker can read while the batch runs (shared memory for the process backend, a plain list
elsewhere): the batch's sequence number, the position of the input running (or a ``PHASE_*``), and
when that input started (written only when a deadline applies). If the worker dies, the slot names
the input that killed it.
"""

from __future__ import annotations

import os
import time

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing in every worker
if TYPE_CHECKING:
    from typing import Any, Callable

SLOT_SEQ = 0
SLOT_POSITION = 1
SLOT_STARTED = 2
SLOT_SIZE = 3

PHASE_IDLE = -1.0
PHASE_DECODE = -2.0
PHASE_ENCODE = -3.0
PHASE_CONCURRENT = -4.0
"""A batch of coroutine calls runs, many at once: the slot cannot name one of them."""


def call_one(fn: Callable[..., Any], item: Any) -> Any:
    return fn(item)


def call_star(fn: Callable[..., Any], item: Any) -> Any:
    return fn(*item)


def call_full(fn: Callable[..., Any], item: Any) -> Any:
    return fn(*item[0], **item[1])


CALLERS = (call_one, call_star, call_full)
"""The call of each ``CallKind`` by its value: ``fn(x)``, ``fn(*x)``, ``fn(*x[0], **x[1])``."""


def run_plain(fn: Callable[..., Any], items: list[Any], slot: Any, errors: dict[int, BaseException],
               stride: int) -> list[Any]:
    """The hot loop for ``fn(x)`` without a deadline.

    The slot write before each input is what lets the supervisor name the input if this process dies
    mid-batch. For tiny calls the supervisor asks for a ``stride``: the slot is written once per
    ``stride`` inputs, which then run at C speed (``list.extend(map(...))``, which keeps the results
    before an exception, so its position is ``len(values)``; a StopIteration ends ``map`` early
    instead, seen as a short stride).
    """
    values: list[Any] = []
    if stride <= 1:
        append = values.append
        for position, item in enumerate(items):
            slot[1] = position  # SLOT_POSITION, inlined: this loop runs once per input
            try:
                append(fn(item))
            except BaseException as exc:  # noqa: BLE001 - any failure of the task is its result
                append(None)
                errors[position] = exc
        return values
    extend = values.extend
    start, count = 0, len(items)
    while start < count:
        slot[1] = start
        end = min(start + stride, count)
        try:
            extend(map(fn, items[start:end]))
        except BaseException as exc:  # noqa: BLE001 - any failure of the task is its result
            failed = len(values)
            values.append(None)
            errors[failed] = exc
            start = failed + 1
            continue
        if len(values) < end:
            # fn raised StopIteration, which map() takes for its own end: the stride stopped short
            # without a word. That input failed (with a StopIteration whose value is lost).
            failed = len(values)
            values.append(None)
            errors[failed] = StopIteration()
            start = failed + 1
        else:
            start = end
    return values


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_bytes() -> int:
    """This process's resident memory, cheaply (``/proc`` on Linux, psutil elsewhere)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE
    except OSError:
        import psutil

        return int(psutil.Process().memory_info().rss)


def run_general(fn: Callable[..., Any], call: Callable[[Callable[..., Any], Any], Any], items: list[Any],
                 slot: Any, errors: dict[int, BaseException], timed: bool,
                 memory_limit: int | None = None) -> list[Any]:
    """Any call kind, inputs that failed to decode, deadlines (start time written per input), and a
    memory limit (checked after each input; the batch stops early once it is passed)."""
    values: list[Any] = []
    append = values.append
    monotonic = time.monotonic
    for position, item in enumerate(items):
        if memory_limit is not None and position and resident_bytes() > memory_limit:
            break
        if position in errors:
            append(None)
            continue
        if timed:
            slot[SLOT_STARTED] = monotonic()
        slot[SLOT_POSITION] = position
        try:
            append(call(fn, item))
        except BaseException as exc:  # noqa: BLE001 - any failure of the task is its result
            append(None)
            errors[position] = exc
    return values
