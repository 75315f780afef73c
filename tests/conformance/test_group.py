"""TaskGroup on each chosen backend (and a local process backend under every start method: the ``kind``
argument, see conftest.py). Signals, crashes and one engine's specifics are in tests/test_group.py.

Task functions defined here travel by value (cloudpickle), so child processes do not import this test
module; exception types come from ``tasks`` so they keep their identity across processes.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time

import cloudpickle
import pytest

import conveyor
import tasks
from conftest import START_METHODS, bounded, capabilities, wait_until

pytestmark = pytest.mark.timeout(60)
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def backend_and_method(kind: str) -> tuple[str, str | None]:
    """A ``kind`` (see conformance/conftest.py) is a backend, or a backend and a start method."""
    backend, _, method = kind.rpartition("-")
    return (backend, method) if method in START_METHODS else (kind, None)


def own_process(kind: str) -> bool:
    """Whether each task runs in a process of its own (on processes, and on Dask and Ray: a process
    started by a worker or an actor, with the process backend's exit codes and remote tracebacks)."""
    return capabilities(backend_and_method(kind)[0]).needs_pickle


def make_context(kind: str) -> conveyor.Context:
    backend, method = backend_and_method(kind)
    return conveyor.context(backend, start_method=method) if method else conveyor.context(backend)


# -- task functions --------------------------------------------------------------------------------
def describe(a, b=0, *, c=0):
    """Who ran the call, and with what."""
    if multiprocessing.parent_process() is not None:
        name = multiprocessing.current_process().name
    else:
        name = threading.current_thread().name
    return {"sum": a + b + c, "pid": os.getpid(), "name": name}


def wait_for_event(event):
    event.wait()
    return "released"


def produce_then_fail(q, count):
    for i in range(count):
        q.put(i)
    raise tasks.CustomError(3, "producer broke")


def fail_at_barrier(barrier, error):
    barrier.wait()
    raise error


# -- results and attributes, everywhere ------------------------------------------------------------
def test_results_names_pids_and_exit_codes(kind):
    ctx = make_context(kind)
    with ctx.TaskGroup() as g:
        first = g.spawn(describe, 1, 2, c=3, name="first")
        second = g.spawn(describe, 10, name="second")
    for task, total in ((first, 6), (second, 10)):
        info = task.result()
        assert info["sum"] == total
        if capabilities(backend_and_method(kind)[0]).in_background:  # else: in the caller's own thread
            assert task.name == info["name"]
        assert task.pid == info["pid"]
        assert task.exitcode == 0
        assert not task.is_alive()
        assert task.done()
        assert task.join(0.01) is None
    if own_process(kind):
        assert first.pid != os.getpid() and first.pid != second.pid
    else:
        assert first.pid == os.getpid()
    assert first.name == "first" and second.name == "second"
    assert g.tasks == (first, second) and g.errors == []


def test_lambdas_closures_and_default_names(kind):
    offset = 100
    ctx = make_context(kind)
    with ctx.TaskGroup() as g:
        task = g.spawn(lambda x: x + offset, 1)
        named = g.spawn(tasks.square, 5)
    assert task.result() == 101 and named.result() == 25
    assert task.name == "<lambda>" and named.name == "square"


def test_an_exception_is_raised_at_exit_with_its_type(kind):
    ctx = make_context(kind)
    with pytest.raises(tasks.CustomError) as caught, ctx.TaskGroup() as g:
        task = g.spawn(tasks.fail_after, 0.0)
    assert caught.value.code == 7
    assert g.errors == [caught.value]
    assert task.exitcode == 1
    with pytest.raises(tasks.CustomError):
        task.result()
    if own_process(kind):
        assert isinstance(caught.value.__cause__, conveyor.RemoteTraceback)
        assert "fail_after" in str(caught.value.__cause__)


def test_top_level_pool_and_context_groups(backend):
    with conveyor.TaskGroup(backend) as g:
        a = g.spawn(tasks.add, 1, 2)
    with conveyor.Pool(1, backend=backend) as pool, pool.TaskGroup() as g2:
        b = g2.spawn(tasks.add, 3, 4)
    with conveyor.config(backend=backend), conveyor.TaskGroup() as g3:
        c = g3.spawn(tasks.add, 5, 6)
    assert (a.result(), b.result(), c.result()) == (3, 7, 11)
    assert g.backend == g2.backend == g3.backend == backend


# -- a running task --------------------------------------------------------------------------------
@pytest.mark.needs("in_background")  # tasks run concurrently with the block
def test_running_task_is_alive_and_join_times_out(backend):
    ctx = conveyor.context(backend)
    event = ctx.Event()
    with ctx.TaskGroup() as g:
        task = g.spawn(wait_for_event, event)
        assert task.join(0.2) is None
        assert task.is_alive() and task.exitcode is None and not task.done()
        with pytest.raises(conveyor.ResultTimeoutError):
            task.result(timeout=0.1)
        event.set()
        task.join(bounded(30))
        assert not task.is_alive()
    assert task.result() == "released" and task.exitcode == 0


# -- failure cancels the others --------------------------------------------------------------------


@pytest.mark.needs("in_background")  # tasks run concurrently with the block
def test_failure_cancels_siblings_while_the_block_still_runs(backend):
    ctx = conveyor.context(backend)
    with pytest.raises(tasks.CustomError), ctx.TaskGroup() as g:
        sibling = g.spawn(tasks.sleep_loop, 60)
        failing = g.spawn(tasks.fail_after, 0.1)
        # The block goes on; the group noticed the failure by itself and cancelled the sibling.
        assert wait_until(lambda: not sibling.is_alive(), 10)
        assert failing.done()
        with pytest.raises(conveyor.PoolClosedError, match="cancelling"):
            g.spawn(tasks.sleep_loop, 60)  # refused; the block's exit raises the task's failure instead


@pytest.mark.needs("in_background")  # tasks run concurrently with the block
def test_failed_producer_cancels_a_consumer_blocked_on_the_queue(backend):
    ctx = conveyor.context(backend)
    q = ctx.Queue(maxsize=4)
    with pytest.raises(tasks.CustomError, match="producer broke"), ctx.TaskGroup() as g:
        consumer = g.spawn(tasks.consume_until_shutdown, q, name="consumer")
        g.spawn(produce_then_fail, q, 10, name="producer")
    with pytest.raises(conveyor.TaskCancelledError):
        consumer.result()


@pytest.mark.parametrize("error", [KeyError, KeyboardInterrupt])
@pytest.mark.needs("in_background")  # tasks run concurrently with the block
def test_the_block_s_exception_wins_and_cancels_every_task(backend, error):
    ctx = conveyor.context(backend)
    start = time.monotonic()
    with pytest.raises(error), ctx.TaskGroup() as g:
        running = [g.spawn(tasks.sleep_loop, 60) for _ in range(2)]
        raise error("from the block")
    assert time.monotonic() - start < bounded(5)
    assert g.errors == []
    for task in running:
        assert not task.is_alive()
        with pytest.raises(conveyor.TaskCancelledError):
            task.result()


@pytest.mark.needs("in_background")  # tasks run concurrently with the block
def test_several_failures_first_is_raised_and_others_are_kept(backend):
    ctx = conveyor.context(backend)
    barrier = ctx.Barrier(2)
    with pytest.raises((ValueError, KeyError)) as caught, ctx.TaskGroup() as g:
        g.spawn(fail_at_barrier, barrier, ValueError("one"))
        g.spawn(fail_at_barrier, barrier, KeyError("two"))
    assert g.errors[0] is caught.value
    assert {type(error) for error in g.errors} <= {ValueError, KeyError}
    if len(g.errors) == 2 and sys.version_info >= (3, 11):  # both failed before either was cancelled
        assert "1 other task(s) failed too" in caught.value.__notes__[-1]


# -- crashes and terminate() -----------------------------------------------------------------------


@pytest.mark.needs("in_background")  # tasks run concurrently with the block
def test_terminate_cancels_one_task_without_failing_the_group(backend):
    ctx = conveyor.context(backend)
    with ctx.TaskGroup() as g:
        victim = g.spawn(tasks.sleep_loop, 60)
        other = g.spawn(tasks.add, 1, 1)
        time.sleep(0.1)
        victim.terminate()
        victim.join(bounded(10))
        assert not victim.is_alive()
    assert g.errors == [] and other.result() == 2
    with pytest.raises(conveyor.TaskCancelledError):
        victim.result()
    assert victim.exitcode == (-signal.SIGTERM if own_process(backend) else 1)


# -- spawn errors ----------------------------------------------------------------------------------


def test_spawn_outside_the_block_is_refused(backend):
    group = conveyor.TaskGroup(backend)
    with pytest.raises(conveyor.PoolClosedError, match="enter"):
        group.spawn(tasks.square, 2)
    with group as g:
        g.spawn(tasks.square, 2)
    with pytest.raises(conveyor.PoolClosedError, match="exited"):
        g.spawn(tasks.square, 3)
    with pytest.raises(conveyor.PoolClosedError), group:
        pass
    assert isinstance(conveyor.PoolClosedError("x"), RuntimeError)


# -- producer / consumer ---------------------------------------------------------------------------


# -- Ctrl-C in a real program ----------------------------------------------------------------------


def _serve_forever():
    while True:
        time.sleep(0.05)


@pytest.mark.needs("in_background")  # tasks run concurrently with the block
def test_system_exit_from_a_sigterm_handler_while_waiting_stops_the_tasks(backend):
    """Only KeyboardInterrupt used to cancel the tasks when the block's wait was interrupted: a
    SystemExit (the usual SIGTERM handler) left them running, and the interpreter hung at exit."""
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM))
    try:
        timer.start()
        with pytest.raises(SystemExit), conveyor.context(backend).TaskGroup() as g:
            task = g.spawn(_serve_forever)
    finally:
        timer.join()
        signal.signal(signal.SIGTERM, previous)
    task.join(bounded(10))
    assert not task.is_alive()
