"""The primitives every context and pool can make: ``ctx.Lock()``, ``pool.Queue()``, ``ctx.Value("i")``...

They come from the thing that runs the workers, so they work with its workers: a ``threading`` lock
for the thread backend, a process-safe one for processes. Names and semantics are the stdlib's.
This mixin only forwards each call to the backend's factory (``Backend.primitives``), after checking
the backend's capabilities: a primitive the backend does not make is an ``UnsupportedError`` here, the
one place that says so.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing before the fork server starts
if TYPE_CHECKING:
    from typing import Any, Callable, Iterable


_INSTEAD = {
    "Pipe": "use a Queue (or two, one each way)",
    "SharedArray": "use Array, or a backend with shared memory (process, thread); see docs/data.md",
}
"""What to use instead of a primitive a backend does not make, for the error message."""


class PrimitiveFactories:
    """Adds ``Lock``, ``RLock``, ``Condition``, ``Semaphore``, ``BoundedSemaphore``, ``Event``,
    ``Barrier``, ``Queue``, ``LifoQueue``, ``PriorityQueue``, ``Pipe``, ``Value``, ``Array``,
    ``SharedArray``, ``dict``, ``list`` and ``Namespace`` to a class that defines ``_primitive_factory()``."""

    def _primitive_factory(self) -> Any:
        raise NotImplementedError

    def _primitive_backend(self) -> tuple[Any, str]:
        """(the backend's capabilities, its name)."""
        raise NotImplementedError

    def _factory_for(self, name: str) -> Any:
        capabilities, backend = self._primitive_backend()
        if name not in capabilities.primitives:
            from conveyor._core.errors import unsupported

            raise unsupported(name, backend, _INSTEAD.get(name, ""))
        return self._primitive_factory()

    def Lock(self) -> Any:  # noqa: N802 - the stdlib's names
        """A mutual-exclusion lock (``acquire(blocking=True, timeout=-1)``, ``release``, ``with``)."""
        return self._factory_for("Lock").Lock()

    def RLock(self) -> Any:  # noqa: N802
        """A lock its holder may acquire again."""
        return self._factory_for("RLock").RLock()

    def Condition(self, lock: Any = None) -> Any:  # noqa: N802
        """``wait``/``wait_for``/``notify(n)``/``notify_all`` around ``lock`` (a new RLock by default)."""
        return self._factory_for("Condition").Condition(lock)

    def Semaphore(self, value: int = 1) -> Any:  # noqa: N802
        return self._factory_for("Semaphore").Semaphore(value)

    def BoundedSemaphore(self, value: int = 1) -> Any:  # noqa: N802
        """A semaphore whose over-release raises ValueError."""
        return self._factory_for("BoundedSemaphore").BoundedSemaphore(value)

    def Event(self) -> Any:  # noqa: N802
        return self._factory_for("Event").Event()

    def Barrier(self, parties: int, action: Callable[[], Any] | None = None,  # noqa: N802
                timeout: float | None = None) -> Any:
        """``wait``/``abort``/``reset``; a broken barrier raises ``threading.BrokenBarrierError``."""
        return self._factory_for("Barrier").Barrier(parties, action, timeout)

    def Queue(self, maxsize: int = 0) -> Any:  # noqa: N802
        """``queue.Queue`` semantics plus ``shutdown(immediate=False)`` and ``put_many``/``get_many``."""
        return self._factory_for("Queue").Queue(maxsize)

    def LifoQueue(self, maxsize: int = 0) -> Any:  # noqa: N802
        return self._factory_for("LifoQueue").LifoQueue(maxsize)

    def PriorityQueue(self, maxsize: int = 0) -> Any:  # noqa: N802
        return self._factory_for("PriorityQueue").PriorityQueue(maxsize)

    def Pipe(self, duplex: bool = True) -> tuple[Any, Any]:  # noqa: N802
        """Two connection ends: ``send``/``recv``/``poll``/``close``."""
        return self._factory_for("Pipe").Pipe(duplex)

    def Value(self, typecode_or_type: Any, value: Any = 0, lock: bool = True) -> Any:  # noqa: N802
        """A shared number (``.value``; ``get_lock()`` for read-modify-write)."""
        return self._factory_for("Value").Value(typecode_or_type, value, lock)

    def Array(self, typecode_or_type: Any, size_or_initializer: Any, lock: bool = True) -> Any:  # noqa: N802
        """A shared array of numbers (indexing, slicing, ``get_lock()``)."""
        return self._factory_for("Array").Array(typecode_or_type, size_or_initializer, lock)

    def SharedArray(self, shape: Any, dtype: Any = "float64", lock: bool = True) -> Any:  # noqa: N802
        """A writable NumPy array every worker sees (``.array``, indexing, ``get_lock()``): shared
        memory on processes, a plain array on threads. Needs NumPy. See docs/data.md."""
        return self._factory_for("SharedArray").SharedArray(shape, dtype, lock)

    def dict(self, *args: Any, **kwargs: Any) -> Any:
        return self._factory_for("dict").dict(*args, **kwargs)

    def list(self, iterable: Iterable[Any] = ()) -> Any:
        return self._factory_for("list").list(iterable)

    def Namespace(self, **attributes: Any) -> Any:  # noqa: N802
        return self._factory_for("Namespace").Namespace(**attributes)
