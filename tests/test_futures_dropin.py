"""conveyor.futures as a drop-in for concurrent.futures: signatures, crash isolation seen as the
stdlib's BrokenProcessPool, map's timeout and buffersize, shutdown semantics."""

from __future__ import annotations

import concurrent.futures
import concurrent.futures.process
import inspect
import os
import pickle
import threading
import time

import pytest

import conveyor
import conveyor.futures as cf
from conftest import bounded


def _sleep_then(seconds, value):
    time.sleep(seconds)
    return value


@pytest.mark.parametrize("name", ["ProcessPoolExecutor", "ThreadPoolExecutor"])
def test_signatures_are_the_stdlib_ones(name):
    ours = inspect.signature(getattr(cf, name))
    theirs = inspect.signature(getattr(concurrent.futures, name))
    assert [(p.name, p.kind, p.default) for p in ours.parameters.values()] == \
           [(p.name, p.kind, p.default) for p in theirs.parameters.values()]
    for method in ("submit", "shutdown"):
        ours_m = inspect.signature(getattr(getattr(cf, name), method))
        theirs_m = inspect.signature(getattr(concurrent.futures.Executor, method))
        assert list(ours_m.parameters) == list(theirs_m.parameters)
    params = inspect.signature(getattr(cf, name).map).parameters
    assert list(params) == ["self", "fn", "iterables", "timeout", "chunksize", "buffersize"]


def test_reexports_are_the_stdlib_objects():
    for name in ("Future", "as_completed", "wait", "FIRST_COMPLETED", "FIRST_EXCEPTION", "ALL_COMPLETED",
                 "CancelledError", "TimeoutError", "BrokenExecutor", "InvalidStateError", "Executor"):
        assert getattr(cf, name) is getattr(concurrent.futures, name), name
    assert issubclass(cf.ThreadPoolExecutor, concurrent.futures.ThreadPoolExecutor)
    assert issubclass(cf.ProcessPoolExecutor, concurrent.futures.ProcessPoolExecutor)


@pytest.mark.timeout(bounded(30))
def test_asyncio_takes_it_as_default_executor():
    import asyncio

    async def main(executor):
        loop = asyncio.get_running_loop()
        loop.set_default_executor(executor)  # TypeError unless a ThreadPoolExecutor
        return await loop.run_in_executor(None, abs, -3)

    executor = cf.ThreadPoolExecutor(2)
    assert asyncio.run(main(executor)) == 3  # asyncio.run shuts the default executor down
    with pytest.raises(RuntimeError, match="after shutdown"):
        executor.submit(abs, 1)


def test_errors_are_what_stdlib_users_catch():
    assert issubclass(conveyor.WorkerCrashedError, concurrent.futures.process.BrokenProcessPool)
    assert issubclass(conveyor.PicklingError, pickle.PicklingError)


@pytest.mark.timeout(bounded(60))
def test_killed_worker_is_a_broken_process_pool_and_the_executor_goes_on():
    with cf.ProcessPoolExecutor(2) as executor:
        crashed = executor.submit(os._exit, 7)
        with pytest.raises(concurrent.futures.process.BrokenProcessPool) as info:
            crashed.result(timeout=bounded(30))
        assert isinstance(info.value, conveyor.WorkerCrashedError) and info.value.exitcode == 7
        assert executor.submit(pow, 2, 5).result(timeout=bounded(30)) == 32  # only that future failed


@pytest.mark.timeout(bounded(60))
def test_lambdas_and_chunks_work_on_processes():
    offset = 10
    with cf.ProcessPoolExecutor(2) as executor:
        assert list(executor.map(lambda x: x + offset, range(7), chunksize=3)) == list(range(10, 17))
        with pytest.raises(ValueError, match="chunksize"):
            executor.map(abs, [1], chunksize=0)


@pytest.mark.timeout(bounded(30))
def test_map_timeout_is_measured_from_the_call():
    with cf.ThreadPoolExecutor(2) as executor:
        results = executor.map(_sleep_then, [0, 2], ["quick", "slow"], timeout=0.5)
        assert next(results) == "quick"
        with pytest.raises(cf.TimeoutError):
            next(results)


@pytest.mark.timeout(bounded(30))
def test_buffersize_bounds_the_calls_submitted_ahead():
    started = []
    lock = threading.Lock()

    def note(x):
        with lock:
            started.append(x)
        return x

    def endless():
        n = 0
        while True:
            yield n
            n += 1

    with cf.ThreadPoolExecutor(4) as executor:
        results = executor.map(note, endless(), buffersize=3)
        for consumed in range(1, 20):
            assert next(results) == consumed - 1
            with lock:
                assert len(started) <= consumed + 3 - 1 + 1  # read ones plus at most 3 ahead
        results.close()
        with pytest.raises(TypeError):
            executor.map(note, [1], buffersize=1.5)
        with pytest.raises(ValueError):
            executor.map(note, [1], buffersize=0)


@pytest.mark.timeout(bounded(30))
def test_shutdown_cancel_futures_and_submit_after_shutdown():
    started, gate = threading.Event(), threading.Event()

    def hold():
        started.set()
        return gate.wait(bounded(20))

    executor = cf.ThreadPoolExecutor(1)
    running = executor.submit(hold)
    assert started.wait(bounded(20))
    waiting = [executor.submit(abs, -i) for i in range(5)]
    executor.shutdown(wait=False, cancel_futures=True)
    gate.set()
    assert running.result(timeout=bounded(20)) is True
    # A worker's worth (1) of the tasks not started still runs, as in the stdlib's process pool.
    assert waiting[0].result(timeout=bounded(20)) == 0
    assert all(future.cancelled() for future in waiting[1:])
    with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown") as info:
        executor.submit(abs, 1)
    assert type(info.value) is RuntimeError
    executor.shutdown(wait=True)


@pytest.mark.timeout(bounded(30))
def test_thread_names_honour_the_prefix():
    with cf.ThreadPoolExecutor(2, thread_name_prefix="fetch") as executor:
        names = {executor.submit(lambda: threading.current_thread().name).result() for _ in range(4)}
    assert names and all(name.startswith("fetch_") for name in names)


def test_stdlib_argument_checks():
    with pytest.raises(ValueError, match="max_workers must be greater than 0"):
        cf.ThreadPoolExecutor(0)
    with pytest.raises(TypeError, match="initializer must be a callable"):
        cf.ThreadPoolExecutor(1, initializer=3)
    with pytest.raises(ValueError, match="incompatible with the 'fork'"):
        cf.ProcessPoolExecutor(1, mp_context="fork", max_tasks_per_child=2)


_AT_EXIT = """
import atexit, sys, time
import conveyor
import conveyor.futures as cf

@atexit.register
def submit_late():  # registered first, so it runs after conveyor's exit hook
    for name, pool in (("executor", executor), ("pool", pool_)):
        try:
            pool.submit(abs, -1)
        except RuntimeError as exc:
            print(name, type(exc).__name__, exc, flush=True)

if __name__ == "__main__":
    executor = cf.{kind}(2)
    pool_ = conveyor.Pool(1, backend="thread")
    executor.submit(lambda: (time.sleep(0.3), print("finished", flush=True)))
"""


@pytest.mark.timeout(bounded(60))
@pytest.mark.parametrize("kind", ["ThreadPoolExecutor", "ProcessPoolExecutor"])
def test_interpreter_exit_finishes_work_then_submit_raises(tmp_path, kind):
    """As the stdlib: work submitted to an executor never shut down finishes at exit, and a submit
    after the exit hook raises RuntimeError (on conveyor.Pool too), instead of a failed future."""
    import subprocess
    import sys

    script = tmp_path / "at_exit.py"
    script.write_text(_AT_EXIT.replace("{kind}", kind))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=bounded(50),
                          check=False)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "finished", done.stdout + done.stderr
    assert "executor RuntimeError cannot schedule new futures after interpreter shutdown" in lines
    assert "pool PoolClosedError cannot schedule new futures after interpreter shutdown" in lines


@pytest.mark.timeout(bounded(30))
def test_dropped_executor_finishes_its_work():
    """As the stdlib: an executor garbage-collected without shutdown still runs what was submitted."""
    import gc

    executor = cf.ThreadPoolExecutor(2)
    futures = [executor.submit(_sleep_then, 0.05, i) for i in range(6)]
    del executor
    gc.collect()
    assert [future.result(timeout=bounded(20)) for future in futures] == list(range(6))
