"""conveyor: one API for parallel and concurrent Python.

Pools, pipelines and task groups over serial, thread and process backends with failures isolated to the task that caused them,
lazy bounded streams, and a command line. See the README for a tour.
"""

import sys as _sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (type checkers know the name)
if TYPE_CHECKING:
    from conveyor._core.config import config
    from conveyor._core.errors import (
        BackendUnavailableError,
        BrokenPoolError,
        ConveyorError,
        InitializerError,
        OwnerDiedError,
        OwnerGoneError,
        PicklingError,
        PoolClosedError,
        RemoteError,
        RemoteTraceback,
        ResultTimeoutError,
        SerializationError,
        ShutDown,
        TaskCancelledError,
        TaskError,
        TaskTimeoutError,
        UnpicklingError,
        UnsupportedError,
        WorkerCrashedError,
        WorkerRecycledWarning,
    )
    from conveyor._core.registry import available_backends, register_backend
    from conveyor._core.state import WorkerState, worker_state
    from conveyor._core.statistics import (
        AutoStatistics,
        BackendStatistics,
        DaskStatistics,
        PipelineStatistics,
        PoolStatistics,
        ProcessStatistics,
        RayStatistics,
        StageStatistics,
        ThreadStatistics,
    )
    from conveyor.async_result import AsyncResult
    from conveyor.context import Context, context, map
    from conveyor.group import TaskGroup, TaskHandle
    from conveyor.pipeline import Pipeline, StageFailure
    from conveyor.pool import Pool
    from conveyor.sharing import Shared, shared

__version__ = "0.1.0"


__all__ = [
    "AsyncResult",
    "BackendStatistics",
    "BackendUnavailableError",
    "BrokenPoolError",
    "Context",
    "ConveyorError",
    "DaskStatistics",
    "InitializerError",
    "OwnerDiedError",
    "OwnerGoneError",
    "PicklingError",
    "Pipeline",
    "PipelineStatistics",
    "Pool",
    "PoolClosedError",
    "PoolStatistics",
    "AutoStatistics",
    "ProcessStatistics",
    "RayStatistics",
    "RemoteError",
    "RemoteTraceback",
    "ResultTimeoutError",
    "SerializationError",
    "Shared",
    "ShutDown",
    "StageFailure",
    "StageStatistics",
    "TaskCancelledError",
    "TaskError",
    "TaskGroup",
    "TaskHandle",
    "TaskTimeoutError",
    "ThreadStatistics",
    "UnpicklingError",
    "UnsupportedError",
    "WorkerCrashedError",
    "WorkerRecycledWarning",
    "WorkerState",
    "__version__",
    "available_backends",
    "config",
    "context",
    "map",
    "register_backend",
    "shared",
    "worker_state",
]

_LAZY = {
    "AsyncResult": "conveyor.async_result",
    "available_backends": "conveyor._core.registry",
    "BackendStatistics": "conveyor._core.statistics",
    "BackendUnavailableError": "conveyor._core.errors",
    "BrokenPoolError": "conveyor._core.errors",
    "config": "conveyor._core.config",
    "Context": "conveyor.context",
    "context": "conveyor.context",
    "ConveyorError": "conveyor._core.errors",
    "DaskStatistics": "conveyor._core.statistics",
    "InitializerError": "conveyor._core.errors",
    "map": "conveyor.context",
    "OwnerDiedError": "conveyor._core.errors",
    "OwnerGoneError": "conveyor._core.errors",
    "PicklingError": "conveyor._core.errors",
    "Pipeline": "conveyor.pipeline",
    "PipelineStatistics": "conveyor._core.statistics",
    "Pool": "conveyor.pool",
    "PoolClosedError": "conveyor._core.errors",
    "PoolStatistics": "conveyor._core.statistics",
    "AutoStatistics": "conveyor._core.statistics",
    "ProcessStatistics": "conveyor._core.statistics",
    "RayStatistics": "conveyor._core.statistics",
    "register_backend": "conveyor._core.registry",
    "RemoteError": "conveyor._core.errors",
    "RemoteTraceback": "conveyor._core.errors",
    "ResultTimeoutError": "conveyor._core.errors",
    "SerializationError": "conveyor._core.errors",
    "Shared": "conveyor.sharing",
    "shared": "conveyor.sharing",
    "ShutDown": "conveyor._core.errors",
    "StageFailure": "conveyor.pipeline",
    "StageStatistics": "conveyor._core.statistics",
    "TaskCancelledError": "conveyor._core.errors",
    "TaskError": "conveyor._core.errors",
    "TaskGroup": "conveyor.group",
    "TaskHandle": "conveyor.group",
    "TaskTimeoutError": "conveyor._core.errors",
    "ThreadStatistics": "conveyor._core.statistics",
    "UnpicklingError": "conveyor._core.errors",
    "UnsupportedError": "conveyor._core.errors",
    "worker_state": "conveyor._core.state",
    "WorkerCrashedError": "conveyor._core.errors",
    "WorkerRecycledWarning": "conveyor._core.errors",
    "WorkerState": "conveyor._core.state",
}
"""Every public name -> the module that defines it, imported on first use (PEP 562): ``import conveyor``
must cost a few milliseconds, not the pool, the process backend, cloudpickle and the stdlib modules
they need."""


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:
    from types import ModuleType as _ModuleType
else:
    _ModuleType = type(_sys)  # types.ModuleType, without importing types


class _Package(_ModuleType):
    """``conveyor.context`` is the function, although a module of the same name exists: importing that
    module (which the import system then records as an attribute of the package) must not hide it."""

    def __setattr__(self, name: str, value: object) -> None:
        if name == "context" and isinstance(value, type(_sys)):
            value = value.context
        super().__setattr__(name, value)

    def __reduce__(self) -> tuple[object, tuple[str]]:
        # As cloudpickle sends a plain module (a function that uses ``conveyor.`` names refers to it):
        # by name, imported again on the other side. Its dispatch table knows only ModuleType itself.
        return __import__, (self.__name__,)


_sys.modules[__name__].__class__ = _Package
