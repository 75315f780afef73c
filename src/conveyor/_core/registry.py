"""Backend name -> backend class, imported only when first used.

Optional backends (dask, ray) must not cost an import, or fail, unless someone asks for them; a
third party adds its own with :func:`register_backend` (one line, no change to conveyor).
"""

from __future__ import annotations

import importlib
import threading
from typing import Callable, Union

from conveyor._core.errors import BackendUnavailableError
from conveyor.abc import Backend

BackendFactory = Union[str, Callable[[], "type[Backend]"]]

_INSTALL_HINTS = {
    "dask": 'pip install "conveyor[dask]"',
    "ray": 'pip install "conveyor[ray]"',
}

_registry: dict[str, BackendFactory] = {
    "auto": "conveyor._backends.auto.backend:AutoBackend",
    "serial": "conveyor._backends.local.serial:SerialBackend",
    "thread": "conveyor._backends.local.thread:ThreadBackend",
    "process": "conveyor._backends.process.backend:ProcessBackend",
    "dask": "conveyor._backends.dask.backend:DaskBackend",
    "ray": "conveyor._backends.ray.backend:RayBackend",
}
_lock = threading.Lock()


def register_backend(name: str, factory: BackendFactory) -> None:
    """Make ``backend=name`` available.

    Args:
        name: the name users pass as ``backend=``.
        factory: ``"package.module:ClassName"`` (imported lazily) or a callable returning the class.
    """
    if not name or not isinstance(name, str):
        raise ValueError("backend name must be a non-empty string")
    with _lock:
        _registry[name] = factory


def available_backends() -> list[str]:
    """Registered backend names (whether or not their optional dependency is installed)."""
    with _lock:
        return sorted(_registry)


def backend_class(name: str) -> type[Backend]:
    """Resolve a backend name, importing its module on first use."""
    with _lock:
        factory = _registry.get(name)
    if factory is None:
        raise BackendUnavailableError(
            f"unknown backend {name!r}; choose one of {', '.join(available_backends())}"
        )
    if callable(factory):
        return factory()
    module_name, _, attribute = factory.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        hint = _INSTALL_HINTS.get(name)
        message = f"backend {name!r} is not available: {exc}"
        if hint:
            message += f". Install it with: {hint}"
        raise BackendUnavailableError(message) from exc
    return getattr(module, attribute)
