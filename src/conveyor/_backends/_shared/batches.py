"""Batches on their way through a worker's pipe: pickling in the caller, decoding the results.

Pickling runs in the caller's thread (so the supervisor never spends its time there) and is
whole-batch first, item by item only when the whole fails, so that only the guilty inputs fail.
"""

from __future__ import annotations

from typing import Any

from conveyor._backends._shared import bulk
from conveyor._core import serialize
from conveyor._core.errors import short_repr
from conveyor.abc import Batch, CallKind, Outcome

TINY_CALL_SECONDS = 2e-6
"""Calls shorter than this run in strides: tracking each one would cost as much as the call."""
STRIDE = 64
"""The fewest inputs in a stride."""
MAX_STRIDE = 1024
"""The most inputs in a stride: a crash among them re-runs at most this many alone."""
STRIDE_SECONDS = 1e-4
"""A stride holds about this much work, between ``STRIDE`` and ``MAX_STRIDE`` inputs: each step of
the loop around the strides costs about a microsecond (a slice, a slot write), a few percent of
a 64-input stride of calls of a tenth of a microsecond."""


def describe_input(batch: Batch, position: int) -> str:
    """The input of one task as the user wrote it: ``x``, ``(a, b)`` or ``(a, b, key=value)``."""
    item = batch.items[position]
    if isinstance(item, (bulk.Frozen, bulk.Snapshot)):
        return item.description
    if batch.kind == CallKind.FULL:
        args, kwargs = item
        parts = [short_repr(arg, 80) for arg in args] + [f"{k}={short_repr(v, 80)}" for k, v in kwargs.items()]
        text = "(" + ", ".join(parts) + ")"
        return text if len(text) <= 200 else text[:197] + "..."
    return short_repr(item)


class Sent:
    """A batch encoded for the pipe, on its way to or inside a worker."""

    __slots__ = ("batch", "seq", "stride", "positions", "errors", "payload", "function_blob", "leases")

    def __init__(self, batch: Batch, positions: Any, errors: dict[int, BaseException], payload: bytes,
                 function_blob: bytes, leases: list[bulk.Lease] | None = None) -> None:
        self.batch = batch
        self.seq = 0
        self.stride = 1                   # inputs per progress-slot update in the worker
        self.positions = positions        # batch positions that travel (the others failed to encode)
        self.errors = errors              # batch position -> encoding error
        self.payload = payload
        self.function_blob = function_blob
        self.leases = leases or []     # shared-memory segments of its large inputs (bulk.py)


def _freeze(batch: Batch, arena: Any) -> bytes:
    """Move the large buffers of a batch's inputs into shared memory (``bulk.py``), or without an
    ``arena`` (or room in it) take a pickled snapshot of those inputs: a re-run sends the same.

    Returns the pickled batch when nothing in it was large (pickled once, with the probe), else b"".
    An input that fails to pickle is left as it is: the usual path below reports it.
    """
    items = batch.items
    if not batch.isolate:
        try:
            payload, large = bulk.has_large_buffers(items)
        except KeyboardInterrupt:
            raise
        except BaseException:  # noqa: BLE001 - found again, item by item, below
            payload, large = b"", True
        if not large:
            return payload or b""
    for position, item in enumerate(items):
        if isinstance(item, (bulk.Frozen, bulk.Snapshot)):
            continue
        try:
            items[position] = bulk.freeze(item, arena, describe_input(batch, position))
        except KeyboardInterrupt:
            raise
        except BaseException:  # noqa: BLE001 - reported by the usual path
            pass
    return b""


def encode(batch: Batch, arena: Any = None) -> Sent | dict[int, BaseException]:
    """Pickle a batch; inputs that cannot be pickled fail here, alone, before anything is sent.

    With an ``arena`` (``conveyor._core.shm.Arena``), large buffers go through shared memory.

    Returns the batch ready for the pipe, or (when nothing in it can be sent) an error per position.
    """
    items = batch.items
    try:
        function_blob = batch.function.blob(serialize.dumps)
    except KeyboardInterrupt:
        raise  # the user's Ctrl-C, in their own process
    except BaseException as exc:  # noqa: BLE001 - every input of this call fails the same way
        error = serialize.pickling_error(batch.function.fn, exc, "the task function")
        return dict.fromkeys(range(len(items)), error)
    errors: dict[int, BaseException] = {}
    positions: Any = range(len(items))
    payload = _freeze(batch, arena)
    if not batch.isolate and not payload:
        try:
            payload = serialize.dumps(items)
        except KeyboardInterrupt:
            raise
        except BaseException:  # noqa: BLE001 - find the culprits one by one below
            payload = b""
    if not payload:
        blobs, bad = serialize.dumps_each(items, "the task's input", in_caller=True)
        for position, error in bad.items():
            errors[position] = tag(error, batch, position)
        positions = [position for position in range(len(items)) if position not in bad]
        if not positions:
            return errors
        payload = serialize.dumps([blobs[position] for position in positions])
        batch.isolate = True
    leases = bulk.leases_of(items) if arena is not None else None
    return Sent(batch, positions, errors, payload, function_blob, leases)


def tag(error: BaseException, batch: Batch, position: int) -> BaseException:
    """Prefix an error's message with the task's index in its call."""
    error.args = (f"task #{batch.indices[position]}: {error.args[0]}",) if error.args else error.args
    return error


def decode_values(blob: bytes, isolated: bool, segment: Any = None, on_release: Any = None,
                  ) -> tuple[list[Any] | None, dict[int, BaseException]]:
    """Results from a worker: (values, position -> error), or (None, ...) when the whole list failed.

    ``segment``: where the worker put the large buffers of the list (``bulk.load_values``)."""
    if isolated:
        return serialize.loads_each(serialize.loads(blob), "the task's result in the caller")
    try:
        return bulk.load_values(blob, segment, on_release), {}
    except BaseException as exc:  # noqa: BLE001 - the caller decides: re-run isolated, or fail
        return None, {0: serialize.unpickling_error(exc, "the task's result in the caller")}


def decode_items(payload: bytes, isolate: bool) -> tuple[list[Any] | None, dict[int, BaseException]]:
    """In a worker: the batch's inputs and the errors of those that cannot be unpickled, or
    ``(None, {})`` when the whole batch cannot (the caller then re-sends it one input per batch)."""
    if isolate:
        return serialize.loads_each(serialize.loads(payload), "the task's input in the worker")
    try:
        return serialize.loads(payload), {}
    except BaseException:  # noqa: BLE001 - the caller re-sends item by item to find the culprit
        return None, {}


def encode_results(values: list[Any], errors: dict[int, BaseException], isolate: bool,
                   ) -> tuple[bool, dict[int, bytes], bytes]:
    """In a worker: ``(isolated, position -> pickled exception, pickled values)``.

    Whole-list first; when that fails, value by value, so that only the unpicklable results fail
    (``isolated`` then tells the caller that the values travel one blob each)."""
    encoded_errors = {position: serialize.dumps_exception(exc) for position, exc in errors.items()}
    isolated = bool(isolate)
    try:
        values_blob = serialize.dumps(values)
    except BaseException:  # noqa: BLE001 - find the unpicklable results one by one
        blobs, bad = serialize.dumps_each(values, "the task's result")
        for position, error in bad.items():
            if position not in encoded_errors:
                encoded_errors[position] = serialize.dumps_exception(error)
        values_blob = serialize.dumps(blobs)
        isolated = True
    else:
        if isolated:
            values_blob = serialize.dumps(serialize.dumps_each(values, "the task's result")[0])
    return isolated, encoded_errors, values_blob


def encode_results_bulk(values: list[Any], errors: dict[int, BaseException], isolate: bool,
                        results: bulk.WorkerResults | None) -> tuple[bool, dict[int, bytes], bytes, Any]:
    """:func:`encode_results`, with the large buffers of the whole list in the worker's shared
    memory: ``(isolated, errors, values blob, segment or None)``."""
    if isolate or results is None:
        return (*encode_results(values, errors, isolate), None)
    try:
        values_blob, segment = bulk.encode_values(values, results)
    except BaseException:  # noqa: BLE001 - the usual path finds the unpicklable results one by one
        return (*encode_results(values, errors, isolate), None)
    encoded_errors = {position: serialize.dumps_exception(exc) for position, exc in errors.items()}
    return False, encoded_errors, values_blob, segment


def decode_reply(sent: Sent, busy: float, isolated: bool, encoded_errors: dict[int, bytes], undecodable: bool,
                 values_blob: bytes, ran: int, segment: Any = None, on_release: Any = None) -> Outcome:
    """In the caller: a worker's reply for ``sent`` as the batch's :class:`Outcome`.

    Inputs the worker could not unpickle, or results the caller cannot, are re-run one per batch
    (suspects) when several travelled together; ``ran`` below the inputs sent means the worker
    stopped early, and the rest are re-run at no cost (lost)."""
    batch = sent.batch
    positions = sent.positions
    errors = dict(sent.errors)
    if undecodable:
        return Outcome([None] * len(batch), errors, suspects=list(positions))
    values, decode_errors = decode_values(values_blob, isolated, segment, on_release)
    if values is None:
        if len(positions) > 1:
            return Outcome([None] * len(batch), errors, suspects=list(positions), busy=busy)
        values = [None]
        decode_errors = {0: decode_errors[0]}
    for wpos, blob in encoded_errors.items():
        try:
            errors[positions[wpos]] = serialize.loads_exception(blob)
        except BaseException as exc:  # noqa: BLE001
            errors[positions[wpos]] = serialize.unpickling_error(exc, "the task's exception")
    for wpos, error in decode_errors.items():
        errors.setdefault(positions[wpos], tag(error, batch, positions[wpos]))
    if not isinstance(positions, range) or len(positions) != len(batch):
        full: list[Any] = [None] * len(batch)
        for wpos, position in enumerate(positions):
            full[position] = values[wpos]
        values = full
    unrun = list(positions[ran:])
    for position in unrun:
        errors.pop(position, None)
    return Outcome(values, errors, lost=unrun, busy=busy)


def stride(batch: Batch) -> int:
    """How many inputs a worker may run between two progress-slot updates.

    One, unless calls are known to be tiny: then the worker runs about ``STRIDE_SECONDS`` of them at a
    time at C speed (``STRIDE`` to ``MAX_STRIDE`` inputs), and a crash among them re-runs those few
    alone to find the culprit.
    """
    per_call = batch.function.seconds_per_call
    if (batch.kind == CallKind.ONE and batch.timeout is None and not batch.isolate
            and per_call is not None and per_call < TINY_CALL_SECONDS):
        if per_call <= STRIDE_SECONDS / MAX_STRIDE:
            return MAX_STRIDE
        return max(STRIDE, min(MAX_STRIDE, int(STRIDE_SECONDS / per_call)))
    return 1
