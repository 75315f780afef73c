"""A context: the factory for everything that must work with one backend's workers.

``conveyor.context("process")`` returns an object whose ``Pool`` (and, as they arrive, locks, queues and
shared values) all fit that backend, in the spirit of ``multiprocessing.get_context``.
"""

from __future__ import annotations

import atexit
import threading
import weakref
from typing import Any, Callable, Iterable

from conveyor._core import config as _config
from conveyor._core.options import check_keywords
from conveyor._core.registry import backend_class
from conveyor.abc import BackendConfig
from conveyor.group import TaskGroup
from conveyor.pool import POOL_KEYWORDS, Pool
from conveyor.primitives import PrimitiveFactories

__all__ = ["Context", "context", "map"]

_CALL_OPTIONS = ("timeout", "chunksize", "task_timeout", "retries", "progress")
_POOL_PARAMETERS = frozenset(POOL_KEYWORDS)


def _close_in_order(resources: list[Any]) -> None:
    for resource in resources:
        try:
            resource.close()
        except Exception:  # noqa: BLE001 - at exit or collection: nothing left to tell
            pass


class Context(PrimitiveFactories):
    """Makes pools, locks, queues and shared values for one backend, with shared defaults.

    Example:
        >>> import conveyor
        >>> ctx = conveyor.context("thread")
        >>> q = ctx.Queue()
        >>> with ctx.Pool(2) as pool:
        ...     _ = pool.map(q.put, range(3))
        >>> sorted(q.get() for _ in range(3))
        [0, 1, 2]

    Args:
        backend: backend name (default from :func:`conveyor.config`).
        **defaults: default keyword arguments for every :class:`Pool` this context makes.
    """

    def __init__(self, backend: str | None = None, **defaults: Any) -> None:
        self.backend = backend or _config.setting("backend")
        self._backend_class = backend_class(self.backend)  # fails now, with the install hint
        check_keywords(defaults, _POOL_PARAMETERS | self._backend_class.option_names,
                       f"context({self.backend!r})")
        self._given = defaults
        self._shared: dict[str, Any] | None = None
        self._lock = threading.Lock()
        self._primitives: object | None = None
        self._resources: list[Any] = []   # closed in this order when the context goes (users first)

    @property
    def _defaults(self) -> dict[str, Any]:
        """The context's options, completed on first use with what its pools and primitives share."""
        with self._lock:
            if self._shared is None:
                options, keep = self._backend_class.context_options(dict(self._given))
                if keep is not None and hasattr(keep, "close"):
                    self._resources.append(keep)
                    weakref.finalize(self, _close_in_order, self._resources)
                    # At exit too, and before the engine's own exit hooks (registered earlier, so
                    # run later) close the cluster under clients that would then try to reconnect.
                    atexit.register(_close_in_order, self._resources)
                self._keep = keep
                self._shared = options
            return self._shared

    def _primitive_backend(self) -> tuple[Any, str]:
        return self._backend_class.capabilities, self.backend

    def _primitive_factory(self) -> Any:
        if self._primitives is None:
            defaults = self._defaults
            start_method = defaults.get("start_method") or _config.setting("start_method")
            self._primitives = self._backend_class.primitives(BackendConfig(
                workers=defaults.get("workers") or 1, start_method=start_method,
                options={name: value for name, value in defaults.items() if name not in _POOL_PARAMETERS}))
            if hasattr(self._primitives, "close"):
                self._resources.insert(0, self._primitives)  # before what they connect to
        return self._primitives

    def Pool(self, workers: int | None = None, **options: Any) -> Pool:  # noqa: N802 - mirrors multiprocessing
        """A :class:`conveyor.Pool` on this context's backend."""
        merged = {**self._defaults, **options}
        if workers is not None:
            merged["workers"] = workers
        return Pool(backend=self.backend, **merged)

    def TaskGroup(self) -> TaskGroup:  # noqa: N802 - a factory, named after what it makes
        """A :class:`conveyor.TaskGroup` of threads or processes on this context's backend (on a cluster:
        the context's own, through its options, as for its pools and primitives)."""
        defaults = self._defaults
        return TaskGroup(self.backend, start_method=defaults.get("start_method"),
                         **{name: value for name, value in defaults.items() if name not in _POOL_PARAMETERS})

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any], **options: Any) -> list[Any]:
        """One-shot :meth:`Pool.map` on a pool that lives for this call only."""
        check_keywords(options, _POOL_PARAMETERS.union(_CALL_OPTIONS, self._backend_class.option_names),
                       f"map(backend={self.backend!r})")
        call = {name: options.pop(name) for name in _CALL_OPTIONS if name in options}
        with self.Pool(**options) as pool:
            return pool.map(fn, *iterables, **call)

    def __repr__(self) -> str:
        return f"<conveyor.Context backend={self.backend!r}>"


def context(backend: str | None = None, **defaults: Any) -> Context:
    """The factory for pools (and primitives) that work with ``backend``'s workers."""
    return Context(backend, **defaults)


def map(fn: Callable[..., Any], *iterables: Iterable[Any], backend: str | None = None,  # noqa: A001
        **options: Any) -> list[Any]:
    """``conveyor.map(fn, items, backend="process", workers=4)``: a pool for one call, then gone.

    Without a ``backend`` (and none configured) it is ``"auto"``: serial, threads or processes, chosen
    by measuring the first calls (``docs/choosing.md``). Keyword options are those of :class:`Pool`
    plus ``timeout``, ``chunksize``, ``task_timeout``, ``retries`` and ``progress`` for the call.
    """
    from conveyor._core import config as _config

    return Context(backend or _config.one_shot_backend()).map(fn, *iterables, **options)
