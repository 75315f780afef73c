"""Pool behaviour specific to one backend or none (the conformance part, every backend's, is in
conformance/test_pool.py)."""

from __future__ import annotations

import os
import pickle
import threading

import pytest

import conveyor
import tasks
from conftest import bounded

pytestmark = pytest.mark.timeout(60)


# -- map family ---------------------------------------------------------------------------------------


# -- single tasks -------------------------------------------------------------------------------------


# -- errors -------------------------------------------------------------------------------------------


# -- initializer --------------------------------------------------------------------------------------


# -- lifetime -----------------------------------------------------------------------------------------


def test_map_async_right_before_close_always_runs(monkeypatch):
    """The background job made its stream only once its thread ran, after the caller's close() could
    have: PoolClosedError. Here the job's thread is held until close() has returned."""
    real_start = threading.Thread.start
    held: list[threading.Thread] = []

    def start_later(thread: threading.Thread) -> None:
        if thread.name.startswith("conveyor-map-async") or thread.name.startswith("conveyor-pool-close"):
            held.append(thread)
        else:
            real_start(thread)

    with conveyor.Pool(2, backend="thread") as pool:
        monkeypatch.setattr(threading.Thread, "start", start_later)
        try:
            result = pool.map_async(tasks.square, range(5))
            pool.close()
        finally:
            monkeypatch.undo()
            for thread in held:
                real_start(thread)
        assert result.get(timeout=bounded(10)) == [0, 1, 4, 9, 16]


# -- options ------------------------------------------------------------------------------------------


def test_unknown_backend_names_the_choices():
    with pytest.raises(conveyor.BackendUnavailableError, match="process"):
        conveyor.Pool(backend="nope")


def test_errors_pickle_round_trip():
    crash = conveyor.WorkerCrashedError(pid=1, exitcode=-9, task_index=3, task_input="5")
    again = pickle.loads(pickle.dumps(crash))
    assert (again.pid, again.exitcode, again.signal_name, again.task_index) == (1, -9, "SIGKILL", 3)
    assert "out-of-memory" in str(again)
    remote = pickle.loads(pickle.dumps(conveyor.RemoteError("X", "msg", "tb")))
    assert remote.type_name == "X" and remote.remote_traceback == "tb"


def test_keyboard_interrupt_in_a_serial_task_stops_the_caller_and_is_accounted():
    with conveyor.Pool(backend="serial") as pool:
        with pytest.raises(KeyboardInterrupt):
            pool.map(tasks.crash, [1, 2, 3], ["keyboard"] * 3, [2] * 3)
        assert pool.map(tasks.square, [3]) == [9]
        stats = pool.statistics()
    assert stats["in_flight"] == 0
    assert stats["submitted"] == stats["succeeded"] + stats["failed"] + stats["cancelled"]


def test_a_cluster_refuses_worker_recycling_with_a_clear_error():
    """Dask manages its workers' lives: recycling options are refused, not silently ignored."""
    pytest.importorskip("distributed")
    for option in ({"max_tasks_per_worker": 1}, {"max_memory_per_worker": 1 << 30}):
        with pytest.raises(NotImplementedError, match="max_tasks_per_worker and max_memory_per_worker"):
            conveyor.Pool(1, backend="dask", **option)


def test_cluster_function_keys_differ_between_processes_even_after_fork():
    """Workers of a shared cluster cache functions by key: two client processes (a forked child
    included) must never send the same key for different functions."""
    from conveyor._backends._shared.cluster_worker import function_key
    from conveyor.abc import TaskFunction

    function = TaskFunction(abs)
    mine = function_key(function)
    assert function_key(function) == mine  # stable within a process
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, function_key(function).encode())
        os._exit(0)
    os.close(write)
    try:
        child = os.read(read, 200).decode()
    finally:
        os.close(read)
        os.waitpid(pid, 0)
    assert child and child != mine and child.endswith(f"-{function.key}")
