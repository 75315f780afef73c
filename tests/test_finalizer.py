"""The worker finalizer where one engine behaves its own way: recycling, kills, timeouts, logging, and
the serial and thread backends' rules. What every backend must do is in conformance/test_finalizer.py;
both use ``tasks.append_line``, whose lines name the worker that ran the finalizer."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

import conveyor
import tasks
from conftest import bounded, wait_until, workers_started

pytestmark = pytest.mark.timeout(60)


def _check_once_per_worker(pool: conveyor.Pool, path: Path) -> list[list[str]]:
    """One line per worker started, each from a different worker, in the worker itself."""
    lines = tasks.lines_appended(path)
    assert len(lines) == workers_started(pool), lines
    workers = {(pid, name) for pid, name, *_ in lines}
    assert len(workers) == len(lines), lines
    if pool.backend_name == "process":
        assert str(os.getpid()) not in {pid for pid, *_ in lines}
    if pool.backend_name == "thread":
        assert all(name.startswith("conveyor-thread-") for _, name, *_ in lines), lines
    return lines


@pytest.mark.parametrize("backend", ("thread", "process"))  # recycling: local backends (clusters refuse it)
def test_each_recycled_worker_runs_the_finalizer(backend, tmp_path):
    path = tmp_path / "final"
    with conveyor.Pool(1, backend=backend, max_tasks_per_worker=1, finalizer=tasks.append_line,
                       finalargs=(str(path),)) as pool:
        pids = pool.map(tasks.pid, range(3), chunksize=1)
        if backend == "process":
            assert len(set(pids)) == 3
            # Recycled workers finalize as they go, before the pool is shut down.
            assert wait_until(lambda: len(tasks.lines_appended(path)) >= 2, 10)
    lines = _check_once_per_worker(pool, path)
    assert len(lines) >= 3  # a fourth worker may have started before the shutdown


def test_killed_process_workers_do_not_run_the_finalizer(tmp_path):
    path, starts = tmp_path / "final", tmp_path / "starts"
    starts.mkdir()
    pool = conveyor.Pool(1, backend="process", finalizer=tasks.append_line, finalargs=(str(path),))
    future = pool.submit(tasks.record_start_and_sleep, 0, str(starts), 30)
    assert wait_until(lambda: any(starts.iterdir()), 30)
    pool.shutdown(wait=True, kill=True)
    with pytest.raises(conveyor.TaskCancelledError):
        future.result(timeout=bounded(10))
    assert tasks.lines_appended(path) == []


def test_a_process_worker_killed_for_its_timeout_does_not_run_the_finalizer(tmp_path):
    path = tmp_path / "final"
    with conveyor.Pool(1, backend="process", task_timeout=0.5, finalizer=tasks.append_line,
                       finalargs=(str(path),)) as pool:
        with pytest.raises(conveyor.TaskTimeoutError):
            pool.submit(tasks.sleep_then, "slow", 30).result(timeout=bounded(30))
        assert pool.submit(tasks.square, 3).result(timeout=bounded(30)) == 9
    started = pool.statistics()["workers_started"]
    assert started >= 2
    assert len(tasks.lines_appended(path)) == started - 1  # all but the killed one


def test_a_raising_finalizer_is_logged_on_the_worker_stderr(tmp_path, capfd):
    # spawn: the worker's stderr is this process's (captured) stderr.
    path = tmp_path / "final"
    with conveyor.Pool(1, backend="process", start_method="spawn", finalizer=tasks.append_line_then_raise,
                       finalargs=(str(path),)) as pool:
        assert pool.submit(tasks.square, 2).result(timeout=bounded(30)) == 4
    assert len(tasks.lines_appended(path)) == 1
    err = capfd.readouterr().err
    assert "the worker finalizer tasks.append_line_then_raise raised" in err
    assert "RuntimeError: finalizer is broken" in err


def test_shutdown_with_kill_stops_a_hanging_finalizer(tmp_path):
    path = tmp_path / "final"
    pool = conveyor.Pool(1, backend="process", finalizer=tasks.append_line_then_sleep, finalargs=(str(path), 60))
    assert pool.submit(tasks.square, 2).result(timeout=bounded(30)) == 4
    pool.shutdown(wait=False)
    assert wait_until(lambda: len(tasks.lines_appended(path)) == 1, 30)
    begin = time.monotonic()
    pool.shutdown(wait=True, kill=True)
    assert time.monotonic() - begin < bounded(10)
    assert [text for _, _, *text in tasks.lines_appended(path)] == [["started"]]


class _Unpicklable:
    def __call__(self) -> None:
        pass

    def __reduce__(self) -> object:
        raise TypeError("this finalizer refuses to be pickled")


def test_an_unpicklable_finalizer_fails_at_construction():
    with pytest.raises(conveyor.PicklingError, match="finalizer"):
        conveyor.Pool(1, backend="process", finalizer=_Unpicklable())
    with pytest.raises(conveyor.PicklingError, match="finalargs"):
        conveyor.Pool(1, backend="process", finalizer=tasks.append_line, finalargs=(_Unpicklable(),))


def test_serial_runs_the_finalizer_once_unless_the_initializer_failed(tmp_path):
    path = tmp_path / "final"
    pool = conveyor.Pool(backend="serial", finalizer=tasks.append_line, finalargs=(str(path),))
    pool.shutdown()
    pool.shutdown()
    assert len(tasks.lines_appended(path)) == 1
    broken = conveyor.Pool(backend="serial", initializer=tasks.init_fails, finalizer=tasks.append_line,
                           finalargs=(str(path),))
    broken.shutdown()
    assert len(tasks.lines_appended(path)) == 1


def test_a_thread_whose_initializer_failed_does_not_run_the_finalizer(tmp_path):
    path = tmp_path / "final"
    pool = conveyor.Pool(2, backend="thread", initializer=tasks.init_fails, finalizer=tasks.append_line,
                         finalargs=(str(path),))
    with pytest.raises(conveyor.InitializerError):
        pool.submit(tasks.square, 2).result(timeout=bounded(30))
    pool.shutdown()
    assert tasks.lines_appended(path) == []


def test_context_passes_the_finalizer_to_its_pools(tmp_path):
    path = tmp_path / "final"
    ctx = conveyor.context("thread", finalizer=tasks.append_line, finalargs=(str(path),))
    with ctx.Pool(3) as pool:
        pool.map(tasks.square, range(6))
    assert len(tasks.lines_appended(path)) == 3
