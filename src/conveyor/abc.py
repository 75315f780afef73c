"""The backend contract: what a backend must do, and the records it exchanges with the core.

The front end never talks to a concrete backend. It builds :class:`Batch` objects (a function plus a
few inputs) and hands them to a :class:`Backend`; the backend runs them and reports one
:class:`Outcome` per batch. Policy (retries, re-running lost inputs, ordering, accounting) lives in the
core, so a backend only reports facts: "this input raised that", "this input was running when the
worker died", "these inputs never ran".

Protocol for every batch a backend accepts through :meth:`Backend.submit`:

1. When the backend is about to start it, it calls :meth:`Batch.claim`. ``False`` means the work was
   cancelled meanwhile: the backend drops it and reports nothing.
2. Otherwise it eventually calls :meth:`Batch.finish` exactly once, even on shutdown or crash.
3. A batch never claimed when the backend shuts down with ``cancel_pending`` is passed to
   :meth:`Batch.abandon`.

Separately from batches, :meth:`Backend.spawn` starts one long-lived call on a thread or process of
its own (``conveyor.TaskGroup``) and returns a :class:`SpawnedTask` that reports how it ended.
"""

from __future__ import annotations

import abc
import enum
import itertools
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterable, Protocol, Sequence

from conveyor._core.chunking import too_short_to_time
from conveyor._core.errors import unsupported
from conveyor._core.statistics import BackendStatistics

__all__ = ["PRIMITIVES", "Backend", "BackendConfig", "Batch", "BatchOwner", "CallKind", "Capabilities", "Outcome",
           "PrimitiveFactory", "SpawnedTask", "TaskFunction"]

PRIMITIVES = frozenset({"Lock", "RLock", "Condition", "Semaphore", "BoundedSemaphore", "Event", "Barrier", "Queue",
                        "LifoQueue", "PriorityQueue", "Pipe", "Value", "Array", "SharedArray", "dict", "list",
                        "Namespace"})
"""The names of :class:`PrimitiveFactory`'s methods: what ``ctx.Lock()``, ``pool.Queue()``... forward to."""


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do; the front end checks these as data, never by catching errors.

    Attributes:
        cancel_running: a running task can be stopped (its worker killed).
        enforce_timeout: ``task_timeout`` stops the task, not only its result.
        needs_pickle: functions, arguments and results cross a process boundary.
        isolates_crashes: a crashing task cannot take the caller down.
        shared_memory: workers can map the caller's shared-memory segments.
        cross_host: workers may run on other machines.
        in_background: tasks run beside the caller, on workers of their own; False: each task runs
            inside ``submit``, in the caller's thread (serial), so nothing is ever pending or running
            behind the caller's back.
        primitives: the primitives its factory makes (names of :data:`PRIMITIVES`); asking for any
            other raises :class:`~conveyor.UnsupportedError` before the factory is called.
    """

    cancel_running: bool = False
    enforce_timeout: bool = False
    needs_pickle: bool = False
    isolates_crashes: bool = False
    shared_memory: bool = False
    cross_host: bool = False
    in_background: bool = True
    primitives: frozenset[str] = PRIMITIVES


@dataclass(frozen=True)
class BackendConfig:
    """Everything a backend needs to start its workers.

    ``finalizer(*finalargs)`` is the counterpart of ``initializer(*initargs)``: each worker calls it
    when it ends normally (see :class:`conveyor.Pool` for what "normally" means on each backend).
    """

    workers: int
    initializer: Callable[..., Any] | None = None
    initargs: tuple[Any, ...] = ()
    finalizer: Callable[..., Any] | None = None
    finalargs: tuple[Any, ...] = ()
    max_tasks_per_worker: int | None = None
    max_memory_per_worker: int | None = None
    start_method: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    workers_given: bool = True
    """False when the user left the number of workers to conveyor (``workers`` is then the backend's
    default): a backend that picks how to run the work may pick the number too."""


class CallKind(enum.IntEnum):
    """How a batch item becomes a call: ``fn(x)``, ``fn(*x)`` or ``fn(*args, **kwargs)``."""

    ONE = 0
    STAR = 1
    FULL = 2


_function_keys = itertools.count(1)


class TaskFunction:
    """The function of a call, with its serialized form computed at most once.

    ``key`` is unique for the life of the process, so a worker can cache the unpickled function and the
    caller can send the bytes only once per worker.
    """

    __slots__ = ("fn", "key", "_blob", "_lock", "_calls", "_busy")

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.key = next(_function_keys)
        self._blob: bytes | None = None
        self._lock = threading.Lock()
        self._calls = 0
        self._busy = 0.0

    def observe(self, calls: int, busy: float) -> None:
        """Record that ``calls`` calls took ``busy`` seconds (the core does, after each batch)."""
        self._calls += calls
        self._busy += busy

    @property
    def seconds_per_call(self) -> float | None:
        """Measured mean duration of one call, or None before the first batch returns.

        Backends may use it to pick a cheaper way to run very short calls. As for batch sizes
        (``conveyor._core.chunking``), a measurement too short to time that reads as tiny calls is
        0.0: one probe call of a few hundred nanoseconds measures as microseconds of timer and
        first-call cost, which would make it look like a call worth tracking one by one.
        """
        if not self._calls:
            return None
        per_call = self._busy / self._calls
        return 0.0 if too_short_to_time(self._busy, per_call) else per_call

    def blob(self, dumps: Callable[[Any], bytes]) -> bytes:
        """Serialize once with ``dumps`` and cache it (a snapshot taken at the first call)."""
        if self._blob is None:
            with self._lock:
                if self._blob is None:
                    self._blob = dumps(self.fn)
        return self._blob

    @property
    def name(self) -> str:
        return getattr(self.fn, "__qualname__", None) or type(self.fn).__qualname__


@dataclass
class Outcome:
    """What happened to each input of a batch (positions are indices into ``Batch.items``).

    Attributes:
        values: results, aligned with the batch's items; entries at failed or lost positions are unused.
        errors: position -> the exception that failed that input.
        lost: positions that never ran or whose result was lost in a crash; the core runs them again
            without counting an attempt.
        suspects: like ``lost``, but each is run again alone, in its own batch: one of them broke the
            batch (a crash or a decoding failure) and the backend could not tell which.
        busy: seconds spent running the task code, for chunk sizing and statistics.
    """

    values: list[Any]
    errors: dict[int, BaseException] = field(default_factory=dict)
    lost: Sequence[int] = ()
    suspects: Sequence[int] = ()
    busy: float = 0.0


class BatchOwner(Protocol):
    """The core object a batch reports to (one per user call)."""

    def claim(self, batch: Batch) -> bool: ...

    def finish(self, batch: Batch, outcome: Outcome) -> None: ...

    def abandon(self, batch: Batch) -> None: ...


class Batch:
    """A few inputs of one call, run together to amortize dispatch cost.

    Attributes:
        function: the function to call.
        kind: how an item becomes a call.
        items: the inputs.
        indices: each item's position in the user's call (for messages and reassembly).
        timeout: per-item time limit in seconds, or None.
        isolate: the core asks for items to be (de)serialized one by one, because an earlier attempt
            could not tell which item broke the batch.
    """

    __slots__ = ("function", "kind", "items", "indices", "timeout", "isolate", "owner")

    def __init__(
        self,
        function: TaskFunction,
        kind: CallKind,
        items: list[Any],
        indices: Sequence[int],
        *,
        owner: BatchOwner,
        timeout: float | None = None,
        isolate: bool = False,
    ) -> None:
        self.function = function
        self.kind = kind
        self.items = items
        self.indices = indices
        self.timeout = timeout
        self.isolate = isolate
        self.owner = owner

    def __len__(self) -> int:
        return len(self.items)

    def claim(self) -> bool:
        """Call right before running; False means cancelled, drop the batch."""
        return self.owner.claim(self)

    def finish(self, outcome: Outcome) -> None:
        """Report the outcome; exactly once per claimed batch."""
        self.owner.finish(self, outcome)

    def abandon(self) -> None:
        """Report that the batch was never started and never will be (cancelling shutdown)."""
        self.owner.abandon(self)


class PrimitiveFactory(Protocol):
    """What :meth:`Backend.primitives` returns: the stdlib's primitives, made for one backend's workers.

    Every method has the stdlib's name and signature (``threading``, ``queue``, ``multiprocessing``);
    the objects behave as the stdlib's do, across that backend's workers. A primitive a backend does
    not make is left out of its :attr:`Capabilities.primitives` and raises
    :class:`~conveyor.UnsupportedError` (``conveyor._core.errors.unsupported``). mypy checks, over
    ``src/``, that every backend's factory satisfies this protocol (``tests/test_typing.py``).
    """

    def Lock(self) -> Any: ...  # noqa: N802 - the stdlib's names, here and below

    def RLock(self) -> Any: ...  # noqa: N802

    def Condition(self, lock: Any = None) -> Any: ...  # noqa: N802

    def Semaphore(self, value: int = 1) -> Any: ...  # noqa: N802

    def BoundedSemaphore(self, value: int = 1) -> Any: ...  # noqa: N802

    def Event(self) -> Any: ...  # noqa: N802

    def Barrier(self, parties: int, action: Callable[[], Any] | None = None,  # noqa: N802
                timeout: float | None = None) -> Any: ...

    def Queue(self, maxsize: int = 0) -> Any: ...  # noqa: N802

    def LifoQueue(self, maxsize: int = 0) -> Any: ...  # noqa: N802

    def PriorityQueue(self, maxsize: int = 0) -> Any: ...  # noqa: N802

    def Pipe(self, duplex: bool = True) -> tuple[Any, Any]: ...  # noqa: N802

    def Value(self, typecode_or_type: Any, value: Any = 0, lock: Any = True) -> Any: ...  # noqa: N802

    def Array(self, typecode_or_type: Any, size_or_initializer: Any, lock: Any = True) -> Any: ...  # noqa: N802

    def SharedArray(self, shape: Any, dtype: Any = "float64", lock: bool = True) -> Any: ...  # noqa: N802

    def dict(self, *args: Any, **kwargs: Any) -> Any: ...

    def list(self, iterable: Iterable[Any] = ()) -> Any: ...

    def Namespace(self, **attributes: Any) -> Any: ...  # noqa: N802


class Backend(abc.ABC):
    """Runs batches on some workers. One instance per pool.

    Subclasses set ``name`` and ``capabilities`` and implement :meth:`submit` and :meth:`shutdown`.
    They are registered by name in ``conveyor._core.registry``.
    """

    name: ClassVar[str]
    capabilities: ClassVar[Capabilities]
    option_names: ClassVar[frozenset[str]] = frozenset()
    """The backend-specific keywords it reads from ``config.options`` (``Pool(address=...)``). Any
    other keyword given to a pool, context or task group of this backend is a ``TypeError``."""

    def __init__(self, config: BackendConfig) -> None:
        self.config = config

    @property
    def workers(self) -> int:
        return self.config.workers

    def workers_for(self, function: TaskFunction) -> int:
        """How many workers run ``function``'s batches: :attr:`workers`, unless the backend runs
        different functions on different sets of workers (``backend="auto"``). A map call reads it as
        it sends batches, to size them and its window of inputs in flight."""
        return self.workers

    @classmethod
    def default_workers(cls, cores: int) -> int:
        """Workers of a pool that does not say, given the usable cores: one per core, for CPU-bound work."""
        return cores

    @classmethod
    def primitives(cls, config: BackendConfig) -> PrimitiveFactory:
        """The factory of locks, queues, shared values... that work with this backend's workers.

        A context can ask for it without starting workers, so it is a class method. A backend with
        none says so in its capabilities (``primitives=frozenset()``); this default is never reached then.
        """
        raise unsupported("synchronization primitives", cls.name)

    def worker_primitives(self) -> PrimitiveFactory:
        """The factory of primitives for *this* backend's workers (what ``pool.Lock()`` uses).

        By default the class-level factory (:meth:`primitives`); a cluster backend returns one bound
        to its own cluster, so that a pool's locks and queues live where its workers are.
        """
        return type(self).primitives(self.config)

    @classmethod
    def context_options(cls, options: dict[str, Any]) -> tuple[dict[str, Any], Any]:
        """What a context's pools and primitives must share, added to the context's options.

        Called once per context, on first use. Returns the options to use from then on, and an
        object to keep alive (and close, if it has ``close()``) for as long as the context lives —
        a local cluster, for a cluster backend, so that ``ctx.Lock()`` and ``ctx.Pool()`` meet on one.
        By default: the options unchanged, nothing to keep.
        """
        return options, None

    def group_options(self) -> dict[str, Any]:
        """The options of a TaskGroup made by this pool (``pool.TaskGroup()``), so that its tasks run
        where the pool's do: the pool's own options by default; a backend that started a cluster of
        its own adds where it is."""
        return dict(self.config.options)

    @classmethod
    def spawn(cls, config: BackendConfig, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
              name: str, on_done: Callable[[SpawnedTask], None] | None = None) -> SpawnedTask:
        """Start ``fn(*args, **kwargs)`` on a thread or process of its own (``conveyor.TaskGroup``).

        One call per thread or process, outside any pool's workers, so it is a class method: a context
        spawns without starting workers. It returns once the call is started and does not wait for it
        (the serial backend, the reference semantics, runs the call to its end here).

        Args:
            config: the context's or pool's settings (``start_method`` for processes).
            fn, args, kwargs: the call.
            name: the task's name (thread or process name).
            on_done: called once with the task when it has settled (see :class:`SpawnedTask`), in
                whichever thread settles it; it must be short and must not raise.

        Raises:
            PicklingError: the call cannot be sent to another process (raised here, in the caller).
            NotImplementedError: this backend cannot spawn tasks.
        """
        raise NotImplementedError(f"the {cls.name!r} backend cannot spawn tasks")

    @property
    def max_batch_size(self) -> int | None:
        """The largest batch this backend accepts, or None for no limit."""
        return None

    batches_per_worker: ClassVar[int] = 4
    """For a call of known length, the automatic chunk size aims at no fewer than this many batches
    per worker (balance at the end against dispatch cost). A cluster, where every task costs
    milliseconds of scheduling, asks for fewer, bigger batches."""

    @abc.abstractmethod
    def submit(self, batch: Batch) -> None:
        """Accept a batch; never blocks on the work itself. Thread-safe."""

    @abc.abstractmethod
    def shutdown(self, *, wait: bool = True, cancel_pending: bool = False, kill: bool = False) -> None:
        """Stop accepting work.

        Args:
            wait: block until the workers are gone.
            cancel_pending: abandon batches not yet started.
            kill: stop running batches now; they finish with ``TaskCancelledError``.
        """

    def cancel_running(self, owner: BatchOwner) -> None:
        """Stop the batches of ``owner`` that have started (the user cancelled their call: an awaiting
        task was cancelled), where the backend can, and report them with ``TaskCancelledError``.

        Called after the owner was closed, so its batches not yet started are refused when claimed.
        A backend that declares ``cancel_running`` kills the workers that run them and starts others;
        other calls' batches those workers held run again elsewhere. By default nothing: running
        threads cannot be stopped, so their tasks run to the end and their results are dropped.
        """

    def broken(self) -> BaseException | None:
        """The reason this backend cannot run work any more, or None."""
        return None

    def statistics(self) -> BackendStatistics:
        """Backend-specific counters (worker restarts, ...): a subclass of
        :class:`~conveyor.BackendStatistics` of the backend's own; the base has none."""
        return BackendStatistics()


class SpawnedTask(abc.ABC):
    """One call running on a thread or process of its own, as returned by :meth:`Backend.spawn`.

    The front end's ``conveyor.TaskHandle`` wraps it. A backend's subclass starts the call, implements
    the abstract members, and calls :meth:`_settle` exactly once, when the call's outcome is known and
    its thread or process has ended (a thread settles as its very last step). Settling runs the
    ``on_done`` callback given to ``spawn``.

    Attributes:
        name: the name given to ``spawn``.
        cancel_requested: :meth:`terminate` (or :meth:`kill`) was called before the task settled.
    """

    def __init__(self, name: str, on_done: Callable[[SpawnedTask], None] | None = None) -> None:
        self.name = name
        self.cancel_requested = False
        self._on_done = on_done
        self._settled = threading.Event()
        self._value: Any = None
        self._error: BaseException | None = None

    @property
    @abc.abstractmethod
    def pid(self) -> int | None:
        """The id of the process that runs the call."""

    @property
    @abc.abstractmethod
    def exitcode(self) -> int | None:
        """None while running; then 0 (returned), 1 (raised), or ``-N`` (killed by signal N)."""

    @abc.abstractmethod
    def is_alive(self) -> bool:
        """Whether the thread or process still runs."""

    @abc.abstractmethod
    def join(self, timeout: float | None = None) -> None:
        """Wait until the task has settled and its thread or process has ended, or ``timeout`` passes."""

    @abc.abstractmethod
    def terminate(self) -> None:
        """Ask the call to stop now, without waiting for it; sets ``cancel_requested`` if it still runs."""

    def kill(self) -> None:
        """Stop the call as hard as the backend can (a process: SIGKILL); by default :meth:`terminate`."""
        self.terminate()

    def done(self) -> bool:
        """Whether the task has settled: its outcome is known."""
        return self._settled.is_set()

    def outcome(self) -> tuple[Any, BaseException | None]:
        """``(value, None)`` if the call returned, ``(None, exception)`` if not; only once :meth:`done`."""
        if not self._settled.is_set():
            raise RuntimeError(f"task {self.name!r} has not finished")
        return self._value, self._error

    def _settle(self, value: Any, error: BaseException | None) -> None:
        """Record the outcome (once) and run ``on_done``."""
        self._value, self._error = value, error
        self._settled.set()
        if self._on_done is not None:
            self._on_done(self)
