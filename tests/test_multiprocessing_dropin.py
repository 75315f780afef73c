"""``conveyor.multiprocessing``: the stdlib's Pool dialect on conveyor, and what conveyor keeps.

CPython's own Pool tests run in test_cpython_pool_suite.py; these are the regressions of this
project and what the excluded CPython tests check that still applies.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import gc
import io
import multiprocessing
import multiprocessing.pool
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings

import pytest

import conveyor
import conveyor.multiprocessing as mp
import tasks
from conftest import bounded, wait_until
from test_signals import Scenario

pytestmark = pytest.mark.timeout(60)

KINDS = [mp.Pool, mp.ThreadPool]


@pytest.fixture(params=KINDS, ids=["processes", "threads"])
def pool(request):
    with request.param(2) as made:
        yield made


def test_positional_chunksize(pool):
    assert pool.map(tasks.square, range(10), 3) == [x * x for x in range(10)]
    assert list(pool.imap(tasks.square, range(10), 3)) == [x * x for x in range(10)]
    assert sorted(pool.imap_unordered(tasks.square, range(10), 3)) == [x * x for x in range(10)]
    assert pool.starmap(tasks.add, [(1, 2), (3, 4)], 1) == [3, 7]
    assert pool.map_async(tasks.square, range(5), 2).get(bounded(30)) == [0, 1, 4, 9, 16]
    assert pool.starmap_async(tasks.add, [(1, 2)], 1).get(bounded(30)) == [3]
    with pytest.raises(ValueError):  # the third argument is a chunk size, not an iterable to zip
        pool.map(tasks.square, range(10), 0)
    with pytest.raises(ValueError):
        pool.imap(tasks.square, range(10), 0)


def test_apply_signature(pool):
    assert pool.apply(tasks.kw, (1,), {"b": 2}) == (1, 2)
    assert pool.apply_async(tasks.square, (7,)).get(bounded(30)) == 49


@pytest.mark.parametrize("end", ["close", "terminate"])
def test_closed_dropin_raises_value_error(end):
    pool = mp.Pool(1)
    getattr(pool, end)()
    for call in (lambda: pool.apply(tasks.square, (1,)), lambda: pool.apply_async(tasks.square, (1,)),
                 lambda: pool.map(tasks.square, [1]), lambda: pool.imap(tasks.square, [1]),
                 lambda: pool.map_async(tasks.square, [1]), lambda: pool.starmap(tasks.add, [(1, 2)])):
        with pytest.raises(ValueError):
            call()
    pool.join()


def test_closed_conveyor_pool_raises_both_dialects():
    pool = conveyor.Pool(1, backend="thread")
    pool.close()
    for error in (ValueError, RuntimeError, conveyor.PoolClosedError):
        with pytest.raises(error):
            pool.submit(tasks.square, 1)
        with pytest.raises(error):
            pool.map(tasks.square, [1])
    pool.join()


@pytest.mark.parametrize("make", [lambda: conveyor.Pool(1, backend="thread"), lambda: mp.Pool(1)],
                         ids=["conveyor", "dropin"])
@pytest.mark.parametrize("end", ["close", "terminate"])
def test_with_on_closed_pool_raises(make, end):
    pool = make()
    getattr(pool, end)()
    with pytest.raises(ValueError):
        with pool:
            pytest.fail("entered a closed pool")
    pool.join()


def test_dropin_with_terminates_and_cannot_be_reentered():
    """The end of a with block terminates, as the stdlib's does: a running task is killed."""
    pool = mp.Pool(2)
    with pool:
        slow = pool.apply_async(tasks.sleep_then, (1, 60))
        assert pool.apply(tasks.square, (3,)) == 9
    with pytest.raises(concurrent.futures.CancelledError):
        slow.get(bounded(10))
    with pytest.raises(ValueError):
        with pool:
            pass
    pool.join()


def test_join_before_close_raises(pool):
    with pytest.raises(ValueError):
        pool.join()


def test_invalid_arguments():
    for processes in (0, -1):
        with pytest.raises(ValueError):
            mp.Pool(processes)
        with pytest.raises(ValueError):
            mp.ThreadPool(processes)
    for value in (0, -1, 0.5, "12"):
        with pytest.raises(ValueError):
            mp.Pool(1, maxtasksperchild=value)
    with pytest.raises(TypeError):
        mp.Pool(1, initializer=1)
    with pytest.raises(TypeError):
        mp.Pool(1, context=3)


@pytest.mark.parametrize("context", ["spawn", multiprocessing.get_context("spawn")], ids=["name", "context"])
def test_context_chooses_start_method(context):
    with mp.Pool(1, context=context) as pool:
        assert pool.conveyor_pool._backend.config.start_method == "spawn"
        assert pool.apply(tasks.square, (4,)) == 16


def test_async_result_semantics(pool):
    result = pool.apply_async(tasks.sleep_then, (5, 0.5))
    with pytest.raises(ValueError):
        result.successful()  # not ready yet
    assert not result.ready()
    with pytest.raises(multiprocessing.TimeoutError):
        result.get(0.01)
    result.wait(bounded(30))
    assert result.ready() and result.successful() and result.get() == 5
    failed = pool.apply_async(tasks.fail_on, (3,))
    failed.wait(bounded(30))
    assert failed.ready() and not failed.successful()
    with pytest.raises(ValueError):
        failed.get()


def test_callbacks_have_run_when_the_result_is_ready(pool):
    """multiprocessing's order: callback, then ready. (A callback that takes a while shows it.)"""
    seen = []

    def slow_append(value):
        time.sleep(0.3)
        seen.append(value)

    pool.apply_async(tasks.square, (3,), callback=slow_append).wait(bounded(30))
    assert seen == [9]
    assert pool.map_async(tasks.square, [1, 2], callback=slow_append).get(bounded(30)) == [1, 4]
    assert seen == [9, [1, 4]]
    pool.apply_async(tasks.fail_on, (3,), error_callback=slow_append).wait(bounded(30))
    assert isinstance(seen[-1], ValueError)


def test_conveyor_pool_callbacks_have_run_when_the_result_is_ready():
    seen = []

    def slow_append(value):
        time.sleep(0.3)
        seen.append(value)

    with conveyor.Pool(1, backend="thread") as pool:
        assert pool.apply_async(tasks.square, (3,), callback=slow_append).get(bounded(30)) == 9
        assert seen == [9]


def test_lambdas_and_closures_work():
    offset = 10
    with mp.Pool(2) as pool:
        assert pool.map(lambda x: x + offset, [1, 2], 1) == [11, 12]
        assert pool.apply(lambda: (lambda: 42))() == 42  # a lambda as a result, too


def raise_with_comment():
    raise RuntimeError(123)  # the comment the traceback must show


def test_worker_traceback_reaches_the_caller():
    with mp.Pool(1) as pool:
        with pytest.raises(RuntimeError) as caught:
            pool.apply(raise_with_comment)
        assert caught.value.args == (123,)
        cause = caught.value.__cause__
        assert isinstance(cause, multiprocessing.pool.RemoteTraceback)
        assert "# the comment the traceback must show" in cause.tb
        printed = io.StringIO()
        with contextlib.redirect_stderr(printed):
            sys.excepthook(type(caught.value), caught.value, caught.value.__traceback__)
        assert "# the comment the traceback must show" in printed.getvalue()


@pytest.mark.parametrize("method", ["imap", "imap_unordered"])
def test_imap_next_with_timeout_goes_on(pool, method):
    """``IMapIterator.next(timeout)``: a timeout says "not yet", and the results still come."""
    results = getattr(pool, method)(functools.partial(tasks.sleep_then, seconds=0.5), [1, 2], 1)
    with pytest.raises(mp.TimeoutError):
        results.next(0.01)
    assert sorted([results.next(bounded(30)), results.next(timeout=bounded(30))]) == [1, 2]
    with pytest.raises(StopIteration):
        results.next(bounded(30))


def say_when(when):
    yield from range(when)
    raise KeyError("the input iterator failed")


def test_input_iterator_error_is_not_a_remote_one(pool):
    with pytest.raises(KeyError) as caught:
        pool.map(tasks.square, say_when(3), 1)
    assert caught.value.__cause__ is None
    results = pool.imap(tasks.square, say_when(5), 2)
    assert [next(results) for _ in range(5)] == [0, 1, 4, 9, 16]  # what came before the failure
    with pytest.raises(KeyError):
        next(results)


@pytest.mark.timeout(90)
def test_killed_worker_fails_only_its_task():
    with mp.Pool(2) as pool:
        others = [pool.apply_async(tasks.sleep_then, (i, 0.2)) for i in range(4)]
        killed = pool.apply_async(tasks.crash, (0, "kill"))
        mapped = pool.map_async(functools.partial(tasks.crash, how="kill", when=3), range(6), 1)
        with pytest.raises(conveyor.WorkerCrashedError) as caught:
            killed.get(bounded(30))
        assert caught.value.signal_name == "SIGKILL"
        assert [r.get(bounded(30)) for r in others] == [0, 1, 2, 3]
        with pytest.raises(conveyor.WorkerCrashedError):
            mapped.get(bounded(30))
        assert pool.map(tasks.square, range(20), 2) == [x * x for x in range(20)]  # the pool goes on
        assert list(pool.imap(functools.partial(tasks.crash, how="kill", when=9), [1, 2, 3], 1)) == [1, 2, 3]


@pytest.mark.timeout(90)
def test_worker_killed_from_outside_fails_only_its_task(tmp_path):
    """SIGKILL sent by someone else (the OOM killer, an operator) to a worker in the middle of a task."""
    trace = tmp_path / "trace"
    with mp.Pool(2) as pool:
        victim = pool.apply_async(tasks.append_line_then_sleep, (str(trace), 60))
        survivor = pool.apply_async(tasks.sleep_then, ("ok", 1.0))
        assert wait_until(lambda: trace.exists() and trace.read_text().endswith("\n"), 30)
        os.kill(int(trace.read_text().split()[0]), signal.SIGKILL)
        with pytest.raises(conveyor.WorkerCrashedError) as caught:
            victim.get(bounded(30))
        assert caught.value.signal_name == "SIGKILL"
        assert survivor.get(bounded(30)) == "ok"
        assert pool.map(tasks.square, range(6), 1) == [x * x for x in range(6)]  # the pool goes on


def test_maxtasksperchild_replaces_workers():
    with mp.Pool(2, maxtasksperchild=2) as pool:
        results = [pool.apply_async(tasks.sleep_then, (i, 0.05)) for i in range(4)]
        assert [r.get(bounded(30)) for r in results] == [0, 1, 2, 3]
        pids = {pool.apply(os.getpid) for _ in range(6)}
    assert len(pids) >= 3  # 6 tasks, at most 2 per worker


def test_early_close_with_short_lived_workers():
    pool = mp.Pool(3, maxtasksperchild=1)
    results = [pool.apply_async(tasks.sleep_then, (i, 0.1)) for i in range(6)]
    pool.close()
    pool.join()
    assert [r.get(0) for r in results] == list(range(6))


def test_pool_held_at_interpreter_exit(tmp_path):
    """A pool still open in a global object when the interpreter exits ends cleanly (CPython bpo-38744)."""
    script = tmp_path / "held.py"
    script.write_text(textwrap.dedent("""
        from conveyor.multiprocessing import Pool

        class A:
            def __init__(self):
                self.pool = Pool(processes=1)

        if __name__ == "__main__":
            problem = A()
            print(problem.pool.map(float, tuple(range(10))))
    """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=bounded(60))
    assert done.returncode == 0, done.stderr
    assert "9.0" in done.stdout and "Traceback" not in done.stderr, done.stderr


CTRL_C = """
import time, tasks
import conveyor.multiprocessing as mp
if __name__ == "__main__":
    with mp.Pool(2) as pool:
        pool.apply(tasks.square, (1,))
        print("READY", flush=True)
        try:
            pool.apply_async(tasks.sleep_then, (1, 60)).get()
        except KeyboardInterrupt:
            print("INTERRUPTED", flush=True)
            raise
"""


def test_ctrl_c_interrupts_get(tmp_path):
    scenario = Scenario(tmp_path, CTRL_C)
    try:
        scenario.expect("READY")
        time.sleep(0.3)
        scenario.snapshot_descendants()
        os.killpg(scenario.proc.pid, signal.SIGINT)
        scenario.expect("INTERRUPTED", seconds=5)
        assert scenario.wait(10) != 0
        assert wait_until(lambda: not scenario.alive_descendants(), 5), scenario.alive_descendants()
    finally:
        if scenario.proc.poll() is None:
            scenario.kill()
        scenario.close()


def test_conveyor_options_pass_through():
    with mp.Pool(1, task_timeout=0.5) as pool:
        with pytest.raises(conveyor.TaskTimeoutError):
            pool.apply(tasks.sleep_then, (1, 30))
        assert pool.apply(tasks.square, (2,)) == 4  # a replacement worker
        assert pool.conveyor_pool.statistics()["failed"] == 1


def test_dropping_a_running_pool_warns():
    pool = mp.ThreadPool(1)
    with pytest.warns(ResourceWarning, match="unclosed running multiprocessing pool"):
        del pool
        gc.collect()
    closed = mp.ThreadPool(1)
    closed.close()
    closed.join()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        del closed
        gc.collect()


def test_threadpool_runs_on_threads():
    main = threading.get_ident()
    with mp.ThreadPool(2) as pool:
        idents = set(pool.map(lambda _: threading.get_ident(), range(4), 1))
        assert main not in idents
        assert pool.apply(os.getpid) == os.getpid()


def test_module_exports():
    assert mp.TimeoutError is multiprocessing.TimeoutError
    assert issubclass(conveyor.ResultTimeoutError, mp.TimeoutError)
    assert mp.cpu_count() >= 1
    mp.freeze_support()
    assert not hasattr(mp, "get_context")  # the stdlib's would hand out the stdlib's own Pool
