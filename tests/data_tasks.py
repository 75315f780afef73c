"""Task functions for tests/test_data.py (importable by worker processes under every start method)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

import conveyor

_KEPT: list[Any] = []


def total(a: Any) -> float:
    return float(np.asarray(a).sum())


def total_after(a: Any, event: Any) -> float:
    """Wait until the caller says go (it has changed its array by then), then sum."""
    assert event.wait(30)
    return float(a.sum())


def add_one_and_total(a: Any) -> float:
    a += 1
    return float(a.sum())


def identity(x: Any) -> Any:
    return x


def describe(x: Any) -> tuple[str, int, bool]:
    """(type name, size in bytes, writable?) of what the task received."""
    view = memoryview(x)
    return type(x).__name__, view.nbytes, not view.readonly


def ones(n: int) -> Any:
    return np.ones(n)


def keep(a: Any) -> float:
    _KEPT.append(a)
    return float(a.sum())


def kept_total(_: Any = None) -> float:
    return float(_KEPT[-1].sum())


def crash_once_then_total(a: Any, marker: str) -> float:
    """The first attempt kills its worker; the retry sums what it received."""
    path = Path(marker)
    if not path.exists():
        path.write_text("crashed")
        os._exit(1)
    return float(a.sum())


def fail_once_then_total(a: Any, marker: str) -> float:
    path = Path(marker)
    if not path.exists():
        path.write_text("failed")
        a[:] = -1  # the retry must not see this either
        raise ValueError("first attempt")
    return float(a.sum())


def shared_total(i: int) -> float:
    return float(conveyor.worker_state().shared[i].sum())


def shared_keys(_: Any = None) -> list[str]:
    return sorted(conveyor.worker_state().shared)


def state_value(_: Any = None) -> Any:
    return conveyor.worker_state().value


def set_state(value: Any) -> None:
    conveyor.worker_state().value = value


def pid_and_state(_: Any = None) -> tuple[int, Any]:
    return os.getpid(), conveyor.worker_state().value


def add_to_shared(array: Any, index: int, times: int) -> None:
    for _ in range(times):
        with array.get_lock():
            array[index] += 1


def read_shared_handle(handle: Any, i: int) -> float:
    return float(handle.get()[i].sum())


def writable(handle: Any) -> bool:
    return bool(handle.get().flags.writeable)


def shared_total_after(i: int, event: Any) -> float:
    assert event.wait(30)
    return float(conveyor.worker_state().shared[i].sum())


def segment_then_die(owner: int) -> None:
    """Make a segment named as this worker's own (as its result arena does), then die without removing it."""
    from conveyor._core import shm

    shm.Segment.create(f"conveyor-{owner}w{os.getpid()}", 4096)
    os._exit(1)


def crash_once_after_go_then_total(a: Any, marker: str, event: Any) -> float:
    """The first attempt waits until the caller changed its array, then kills its worker."""
    path = Path(marker)
    if not path.exists():
        assert event.wait(30)
        path.write_text("crashed")
        os._exit(1)
    return float(a.sum())
