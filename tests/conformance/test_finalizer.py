"""The worker finalizer (``Pool(finalizer=..., finalargs=...)``), the counterpart of the initializer, on
each chosen backend; recycling, kills and the engines' own cases are in tests/test_finalizer.py.

Each finalizer here appends ``pid thread-name text`` to a file, so a test can count which workers ran
it. A worker runs it when it ends normally (graceful shutdown, recycling); a killed process does not.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import pytest

import conveyor
import tasks
from conftest import capabilities, workers_started

pytestmark = pytest.mark.timeout(60)


def _check_once_per_worker(pool: conveyor.Pool, path: Path) -> list[list[str]]:
    """One line per worker started, each from a different worker, in the worker itself."""
    lines = tasks.lines_appended(path)
    assert len(lines) == workers_started(pool), lines
    workers = {(pid, name) for pid, name, *_ in lines}
    assert len(workers) == len(lines), lines
    declared = pool.capabilities
    if declared.needs_pickle:  # in processes of their own
        assert str(os.getpid()) not in {pid for pid, *_ in lines}
    elif declared.in_background:  # in worker threads of this process, not the caller's
        assert all(pid == str(os.getpid()) for pid, *_ in lines), lines
        assert threading.current_thread().name not in {name for _, name, *_ in lines}, lines
    return lines


def test_finalizer_runs_once_in_each_worker_on_graceful_shutdown(backend, tmp_path):
    path = tmp_path / "final"
    with conveyor.Pool(2, backend=backend, finalizer=tasks.append_line, finalargs=(str(path), "bye")) as pool:
        assert pool.map(tasks.square, range(20)) == [x * x for x in range(20)]
        assert tasks.lines_appended(path) == []  # not before the end
    lines = _check_once_per_worker(pool, path)
    assert len(lines) == (2 if capabilities(backend).in_background else 1)
    assert all(text == ["bye"] for _, _, *text in lines)


def test_close_and_join_run_the_finalizer(backend, tmp_path):
    path = tmp_path / "final"
    pool = conveyor.Pool(2, backend=backend, finalizer=tasks.append_line, finalargs=(str(path),))
    pool.map(tasks.square, range(4))
    pool.close()
    pool.join()
    _check_once_per_worker(pool, path)


def test_a_raising_finalizer_does_not_break_shutdown(backend, tmp_path, caplog):
    path = tmp_path / "final"
    with caplog.at_level(logging.WARNING, logger="conveyor"), \
            conveyor.Pool(2, backend=backend, finalizer=tasks.append_line_then_raise,
                          finalargs=(str(path),)) as pool:
        assert pool.map(tasks.square, range(4)) == [0, 1, 4, 9]
    _check_once_per_worker(pool, path)
    if not pool._backend.capabilities.needs_pickle:  # the workers are threads of this process: logged here
        warnings = [r for r in caplog.records if "finalizer" in r.getMessage()]
        assert len(warnings) == len(tasks.lines_appended(path))
        assert all("finalizer is broken" in repr(r.exc_info[1]) for r in warnings)


def test_a_finalizer_must_be_callable(backend):
    with pytest.raises(TypeError, match="finalizer must be callable"):
        conveyor.Pool(1, backend=backend, finalizer="not a function")
