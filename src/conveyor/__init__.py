"""conveyor: one API for parallel and concurrent Python.

Pools, pipelines and task groups over serial, thread and process backends with failures isolated to the task that caused them,
lazy bounded streams, and a command line. See the README for a tour.
"""

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
    WorkerCrashedError,
    WorkerRecycledWarning,
)
from conveyor._core.registry import available_backends, register_backend
from conveyor._core.state import WorkerState, worker_state
from conveyor.context import Context, context, map
from conveyor.group import TaskGroup, TaskHandle
from conveyor.pipeline import Pipeline, StageFailure
from conveyor.pool import AsyncResult, Pool
from conveyor.sharing import Shared, shared

__version__ = "0.1.0"

__all__ = [
    "AsyncResult",
    "BackendUnavailableError",
    "BrokenPoolError",
    "Context",
    "ConveyorError",
    "InitializerError",
    "OwnerDiedError",
    "OwnerGoneError",
    "PicklingError",
    "Pipeline",
    "Pool",
    "PoolClosedError",
    "RemoteError",
    "RemoteTraceback",
    "ResultTimeoutError",
    "SerializationError",
    "Shared",
    "ShutDown",
    "StageFailure",
    "TaskCancelledError",
    "TaskError",
    "TaskGroup",
    "TaskHandle",
    "TaskTimeoutError",
    "UnpicklingError",
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
