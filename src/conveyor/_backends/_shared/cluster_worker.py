"""What a cluster engine's worker runs for one batch: the code shared by the Dask and Ray backends.

A cluster is shared: several client processes (a script, the ``conveyor`` command, another user's
session, a pool opened inside a task) send functions to the same workers. The worker keeps unpickled
functions in a small cache, so a function's key must be unique across all of them, not only within
one client process: :func:`function_key` prefixes the client's per-process key with a random token
of that process (drawn again after a fork, so a forked child never shares its parent's).

Every item's failure is its own result (``sys.exit`` and ``KeyboardInterrupt`` included, as on the
process backend), returned pickled with its traceback. ``task_timeout`` is cooperative here, as on
the thread backend: an engine cannot stop one call without stopping its worker, so an overdue item
is reported at its deadline while the call runs on in the background of the worker.
"""

from __future__ import annotations

import collections
import os
import threading
import time
import uuid
from typing import Any, Callable

from conveyor._backends._shared import batches
from conveyor._backends._shared.inline import CALLERS
from conveyor._core import serialize
from conveyor._core.coroutines import is_coroutines
from conveyor.abc import CallKind, TaskFunction

_CACHED_FUNCTIONS = 64
_functions: collections.OrderedDict[str, Any] = collections.OrderedDict()
_functions_lock = threading.Lock()
_token = [0, ""]  # (pid, token) of the process whose keys the token makes unique


def function_key(function: TaskFunction) -> str:
    """A key for ``function`` that no other client process of the cluster uses."""
    pid = os.getpid()
    if _token[0] != pid:
        _token[:] = [pid, uuid.uuid4().hex]
    return f"{_token[1]}-{function.key}"


def cached_function(key: str, blob: Any, fetch: Callable[[Any], bytes] = lambda blob: blob) -> Any:
    """The function behind ``key``, unpickled on first use in this worker process (``fetch`` turns
    what was sent into the pickle, e.g. from an engine's object store). A function that cannot be
    unpickled is cached as its UnpicklingError: it fails every input of the call, not the worker."""
    with _functions_lock:
        fn = _functions.get(key)
        if fn is not None:
            _functions.move_to_end(key)
            return fn
    try:
        fn = serialize.loads(fetch(blob))
    except BaseException as exc:  # noqa: BLE001 - fails the call's inputs, not the worker
        fn = serialize.unpickling_error(exc, "the task function in the worker")
    with _functions_lock:
        _functions[key] = fn
        while len(_functions) > _CACHED_FUNCTIONS:
            _functions.popitem(last=False)
    return fn


class _Overdue(Exception):
    """The call outlived its ``task_timeout``; it goes on running in its thread."""


def _call_before(deadline: float, call: Callable[[], Any]) -> Any:
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            outcome["error"] = exc

    runner = threading.Thread(target=target, name="conveyor-timed-task", daemon=True)
    runner.start()
    runner.join(deadline)
    if runner.is_alive():
        raise _Overdue
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def run_encoded(key: str, blob: bytes, kind: int, payload: bytes, isolate: bool, timeout: float | None = None
                ) -> tuple[float, bool, dict[int, bytes], bool, bytes, dict[int, float]]:
    """Run every input of a batch encoded by ``_shared/batches.py`` in this worker.

    The engine carries only bytes: it never walks (or pickles again) a list of many thousand inputs,
    and an input or result that cannot be unpickled fails alone, as on the process backend.

    Returns:
        ``(busy, isolated, errors, undecodable, values, overdue)``: seconds spent; whether the values
        travel one blob each; position -> the pickled exception it raised; True when the inputs
        could not be unpickled as a whole (the caller re-sends them one by one); the pickled values;
        position -> seconds it had run when its ``timeout`` passed.
    """
    items, errors = batches.decode_items(payload, isolate)
    if items is None:
        return 0.0, False, {}, True, b"", {}
    fn = cached_function(key, blob)
    if isinstance(fn, BaseException):
        errors = dict.fromkeys(range(len(items)), fn)
    call = CALLERS[CallKind(kind)]
    started = time.perf_counter()  # the calls only: the chunk sizer divides this by the inputs
    overdue: dict[int, float] = {}
    if is_coroutines(fn):  # many calls at once on this thread's loop, with their own time limits
        values = fn.run_batch(call, items, errors)
    else:
        values = _run_each(fn, call, items, errors, timeout, overdue)
    busy = time.perf_counter() - started
    isolated, encoded_errors, values_blob = batches.encode_results(values, errors, isolate)
    return busy, isolated, encoded_errors, False, values_blob, overdue


def _run_each(fn: Any, call: Callable[[Any, Any], Any], items: list[Any], errors: dict[int, BaseException],
              timeout: float | None, overdue: dict[int, float]) -> list[Any]:
    """The calls one after another; ``overdue``: position -> seconds it had run when its ``timeout``
    passed."""
    values: list[Any] = []
    for position, item in enumerate(items):
        if position in errors:
            values.append(None)
            continue
        began = time.monotonic()
        try:
            if timeout is None:
                values.append(call(fn, item))
            else:
                values.append(_call_before(timeout, lambda: call(fn, item)))
        except _Overdue:
            values.append(None)
            overdue[position] = time.monotonic() - began
        except BaseException as exc:  # noqa: BLE001 - the item's own failure is its result
            values.append(None)
            errors[position] = exc
    return values
