"""Turning functions, inputs and results into bytes and back, with errors that name the culprit.

cloudpickle is used throughout: it is as fast as the stdlib pickler on plain data (it only steps in for
objects the stdlib pickler cannot handle by reference) and it makes lambdas, closures and functions
defined in ``__main__`` or a notebook work under every start method.

Lists of inputs or results are pickled whole, which is an order of magnitude cheaper than one call per
object for small items. When the whole list fails, each object is tried alone so that only the guilty
ones fail (:func:`dumps_each`).
"""

from __future__ import annotations

import pickle
import traceback
from typing import Any, Callable, SupportsIndex

import cloudpickle

from conveyor._core import errors as _errors
from conveyor._core.errors import PicklingError, RemoteError, UnpicklingError, short_repr

PROTOCOL = 5
THRESHOLD = 1 << 20
"""Buffers of at least this many bytes are worth moving out of band (shared memory, not a pipe)."""
_WALK_DEPTH = 4

_HINTS = (
    (("lock", "rlock", "semaphore", "condition"), "create the lock inside the task, or use the pool's own "
     "primitives (pool.Lock(), ...) which can be passed to tasks"),
    (("thread",), "threads cannot be sent to another process; start them inside the task or initializer"),
    (("socket", "connection", "ssl"), "open the connection inside the task, or once per worker in the "
     "initializer"),
    (("file", "textiowrapper", "bufferedreader", "bufferedwriter"), "pass the path and open it in the task"),
    (("generator",), "pass a list, or the arguments that create the generator"),
)


def _hint(obj: Any, exc: BaseException) -> str:
    text = (type(obj).__qualname__ + " " + str(exc)).lower()
    for words, hint in _HINTS:
        if any(word in text for word in words):
            return hint
    return ("make the object picklable (define __reduce__ or __getstate__), pass what is needed to rebuild "
            "it, or use backend=\"thread\" where nothing is pickled")


def short_name(fn: Any) -> str:
    """``module.qualname`` of a function, for messages."""
    module = getattr(fn, "__module__", None) or "?"
    return f"{module}.{getattr(fn, '__qualname__', None) or type(fn).__qualname__}"


def pickling_error(obj: Any, exc: BaseException, what: str) -> PicklingError:
    """A PicklingError that names the object, says where it was, and suggests a fix."""
    error = PicklingError(
        f"cannot pickle {what} {short_repr(obj)} of type {type(obj).__module__}.{type(obj).__qualname__}: "
        f"{type(exc).__name__}: {exc}. Fix: {_hint(obj, exc)}."
    )
    error.__cause__ = exc
    return error


def unpickling_error(exc: BaseException, what: str) -> UnpicklingError:
    error = UnpicklingError(f"cannot unpickle {what}: {type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error


def dumps(obj: Any, buffer_callback: Callable[[Any], Any] | None = None) -> bytes:
    """Pickle protocol 5; ``buffer_callback`` may keep large buffers out of band (see pickle)."""
    return cloudpickle.dumps(obj, protocol=PROTOCOL, buffer_callback=buffer_callback)


loads: Callable[..., Any] = pickle.loads


# -- large bytes-like objects, which pickle in-band ---------------------------------------------------
class _BigBytes:
    """Stands in for a large bytes / bytearray / memoryview so that it pickles out-of-band."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def __reduce_ex__(self, protocol: SupportsIndex) -> Any:
        obj = self.obj
        if isinstance(obj, memoryview):
            return (_rebuild_bytes, (pickle.PickleBuffer(obj), "memoryview", obj.format, obj.shape))
        return (_rebuild_bytes, (pickle.PickleBuffer(obj), type(obj).__name__, "B", None))


def _rebuild_bytes(buffer: Any, kind: str, fmt: str, shape: Any) -> Any:
    if kind == "bytes":
        return bytes(buffer)
    if kind == "bytearray":
        return bytearray(buffer)
    view = memoryview(buffer)
    if view.format != fmt or (shape is not None and view.shape != tuple(shape)):
        # The stubs take only literal formats; ``fmt`` is the sender's own, checked against _CASTABLE.
        view = view.cast("B").cast(fmt, shape)  # type: ignore[call-overload]
    return view


_CASTABLE = frozenset("bBhHiIlLqQnNfd?cP") | {"@" + c for c in "bBhHiIlLqQnNfd?cP"}
"""Formats ``memoryview.cast`` accepts (native, one character)."""


def wrap_bytes(obj: Any, depth: int = _WALK_DEPTH, threshold: int = THRESHOLD) -> tuple[Any, bool]:
    """``obj`` with its large bytes-like parts wrapped (a new container where anything changed)."""
    kind = type(obj)
    if kind in (bytes, bytearray):
        return (_BigBytes(obj), True) if len(obj) >= threshold else (obj, False)
    if kind is memoryview:
        # Only what _rebuild_bytes can rebuild as it was: C order (a Fortran-order view's bytes
        # would come back transposed) and a native one-character format (``cast`` takes no other);
        # any other view pickles in-band as before (its bytes, in logical order).
        if obj.nbytes >= threshold and obj.c_contiguous and obj.format in _CASTABLE:
            return _BigBytes(obj), True
        return obj, False
    if depth <= 0:
        return obj, False
    if kind in (tuple, list):
        parts = [wrap_bytes(part, depth - 1, threshold) for part in obj]
        if any(changed for _, changed in parts):
            return kind(part for part, _ in parts), True
        return obj, False
    if kind is dict:
        entries = {key: wrap_bytes(value, depth - 1, threshold) for key, value in obj.items()}
        if any(changed for _, changed in entries.values()):
            return {key: value for key, (value, _) in entries.items()}, True
        return obj, False
    return obj, False


def dumps_out_of_band(obj: Any, threshold: int = THRESHOLD) -> tuple[bytes, list[Any]]:
    """Pickle ``obj``; buffers of at least ``threshold`` bytes are left out and returned, for
    ``pickle.loads(data, buffers=...)``. Large bytes-like objects (which pickle in-band) are found
    by a shallow walk (containers up to 4 levels), only when the pickle came out large."""
    big: list[Any] = []

    def keep_large(buffer: Any) -> bool:
        if memoryview(buffer).nbytes >= threshold:
            big.append(buffer)
            return False
        return True

    data = dumps(obj, buffer_callback=keep_large)
    if not big and len(data) >= max(threshold, 1):
        wrapped, changed = wrap_bytes(obj, threshold=max(threshold, 1))
        if changed:
            data = dumps(wrapped, buffer_callback=keep_large)
    return data, big


def dumps_each(objects: list[Any], what: str, *, in_caller: bool = False,
               ) -> tuple[list[bytes | None], dict[int, PicklingError]]:
    """Pickle objects one by one: (blobs with None where it failed, position -> error).

    ``in_caller``: we run in the user's own process, where a KeyboardInterrupt is their Ctrl-C and
    must propagate; in a worker (which ignores SIGINT) it can only come from the object itself.
    """
    blobs: list[bytes | None] = []
    errors: dict[int, PicklingError] = {}
    for position, obj in enumerate(objects):
        try:
            blobs.append(dumps(obj))
        except KeyboardInterrupt:
            if in_caller:
                raise
            blobs.append(None)
            errors[position] = pickling_error(obj, KeyboardInterrupt(), what)
        except BaseException as exc:  # noqa: BLE001 - any failure of a user's __reduce__ fails that object
            blobs.append(None)
            errors[position] = pickling_error(obj, exc, what)
    return blobs, errors


def loads_each(blobs: list[bytes | None], what: str) -> tuple[list[Any], dict[int, BaseException]]:
    """Unpickle blobs one by one: (objects, position -> error); None blobs stay None."""
    objects: list[Any] = []
    errors: dict[int, BaseException] = {}
    for position, blob in enumerate(blobs):
        if blob is None:
            objects.append(None)
            continue
        try:
            objects.append(loads(blob))
        except BaseException as exc:  # noqa: BLE001 - a user's reducer may raise anything
            objects.append(None)
            errors[position] = unpickling_error(exc, what)
    return objects, errors


def format_exception(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def dumps_exception(exc: BaseException) -> bytes:
    """Pickle a task's exception with its traceback text; never fails.

    The exception goes as itself when it pickles and unpickles cleanly (checked here, because an
    exception class with a custom ``__init__`` often pickles but cannot be rebuilt); otherwise as a
    :class:`RemoteError` that keeps its type name, message and traceback.
    """
    text = format_exception(exc)
    try:
        own = dumps(exc)
        loads(own)
    except BaseException:  # noqa: BLE001 - fall back to a description that always travels
        own = None
    if own is None:
        return dumps((None, text, RemoteError(type(exc).__qualname__, str(exc), text)))
    return dumps((own, text, None))


def loads_exception(blob: bytes | memoryview) -> BaseException:
    """Rebuild a task's exception with the worker traceback attached as ``__cause__``."""
    own, text, fallback = loads(blob)
    exc: BaseException
    if own is not None:
        try:
            exc = loads(own)
        except BaseException as err:  # noqa: BLE001 - the class may not be importable here
            exc = RemoteError("exception", f"could not be rebuilt in the caller ({err!r})", text)
    else:
        exc = fallback
    exc.__cause__ = _errors.RemoteTraceback(text)  # looked up here: see errors.__getattr__
    return exc
