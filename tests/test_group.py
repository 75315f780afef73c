"""TaskGroup: what is specific to one backend (signals, crashes, start methods, the serial and thread
backends' own rules). What every backend must pass is in conformance/test_group.py.

Task functions defined here travel by value (cloudpickle), so child processes do not import this test
module; exception types come from ``tasks`` so they keep their identity across processes.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import cloudpickle
import psutil
import pytest

import conveyor
import tasks
from conftest import START_METHODS, bounded, wait_until
from test_signals import Scenario, _interrupt

pytestmark = pytest.mark.timeout(60)
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def make_context(kind: str) -> conveyor.Context:
    backend, _, method = kind.partition("-")
    return conveyor.context(backend, start_method=method) if method else conveyor.context(backend)


# -- task functions --------------------------------------------------------------------------------


def ignore_sigterm(ready):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    ready.set()
    return tasks.sleep_loop(60)


def produce(q, count):
    for i in range(count):
        q.put(i)
    q.shutdown()
    return count


def stubborn(stop):
    """Swallows its cancellation and runs on until told to stop."""
    while not stop.is_set():
        try:
            time.sleep(0.02)
        except conveyor.TaskCancelledError:
            pass
    return "stopped"


# -- results and attributes, everywhere ------------------------------------------------------------


# -- a running task --------------------------------------------------------------------------------


# -- failure cancels the others --------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["thread", *(f"process-{method}" for method in START_METHODS)])
def test_failure_cancels_a_long_sibling_and_is_raised_at_exit(kind):
    ctx = make_context(kind)
    start = time.monotonic()
    with pytest.raises(tasks.CustomError) as caught, ctx.TaskGroup() as g:
        sibling = g.spawn(tasks.sleep_loop, 60, name="sibling")
        g.spawn(tasks.fail_after, 0.3, name="failing")
    assert time.monotonic() - start < bounded(10)  # not the sibling's 60 s
    assert caught.value.text == "boom" and g.errors == [caught.value]
    assert not sibling.is_alive()
    with pytest.raises(conveyor.TaskCancelledError):
        sibling.result()
    if kind.startswith("process"):
        assert sibling.exitcode == -signal.SIGTERM
        assert "fail_after" in str(caught.value.__cause__)
    else:
        assert sibling.exitcode == 1


def test_serial_runs_each_task_at_spawn_and_refuses_after_a_failure():
    ctx = conveyor.context("serial")
    order = []
    with pytest.raises(tasks.CustomError), ctx.TaskGroup() as g:
        g.spawn(order.append, "a")
        assert order == ["a"]  # already ran, in the caller
        g.spawn(tasks.fail_after, 0)
        g.spawn(order.append, "never")  # raises PoolClosedError: the group is cancelling
    assert order == ["a"]


def test_ctrl_c_while_waiting_wins_over_the_block_s_exception():
    ctx = conveyor.context("thread")
    stop = threading.Event()
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    start = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt), ctx.TaskGroup() as g:
            task = g.spawn(stubborn, stop)
            raise KeyError("from the block")
        # The task ignored its cancellation: the group gave up waiting for it rather than hang Ctrl-C.
        assert time.monotonic() - start < bounded(6)
        assert task.is_alive()
    finally:
        stop.set()
        timer.join()
    task.join(bounded(5))
    assert task.result() == "stopped"


# -- crashes and terminate() -----------------------------------------------------------------------
@pytest.mark.parametrize("method", START_METHODS)
def test_a_killed_child_raises_worker_crashed_at_exit(method):
    ctx = conveyor.context("process", start_method=method)
    with pytest.raises(conveyor.WorkerCrashedError) as caught, ctx.TaskGroup() as g:
        sibling = g.spawn(tasks.sleep_loop, 60, name="sibling")
        victim = g.spawn(tasks.sleep_loop, 60, name="victim")
        time.sleep(0.2)
        os.kill(victim.pid, signal.SIGKILL)
    error = caught.value
    assert error.pid == victim.pid and error.exitcode == -signal.SIGKILL and error.signal_name == "SIGKILL"
    assert "victim" in str(error) and "SIGKILL" in str(error)
    assert victim.exitcode == -signal.SIGKILL
    assert not sibling.is_alive()


def test_a_child_exiting_without_reporting_raises_worker_crashed():
    with pytest.raises(conveyor.WorkerCrashedError) as caught, conveyor.context("process").TaskGroup() as g:
        task = g.spawn(tasks.crash, 0, "exit")
    assert caught.value.exitcode == 7 and caught.value.signal_name is None
    assert task.exitcode == 7


def test_terminate_interrupts_a_thread_blocked_on_a_conveyor_queue():
    ctx = conveyor.context("thread")
    q = ctx.Queue()
    with ctx.TaskGroup() as g:
        consumer = g.spawn(tasks.consume_until_shutdown, q)
        time.sleep(0.1)
        started = time.monotonic()
        consumer.terminate()
        consumer.join(bounded(5))
        assert not consumer.is_alive()
        assert time.monotonic() - started < bounded(1)
    with pytest.raises(conveyor.TaskCancelledError, match="terminate"):
        consumer.result()


@pytest.mark.parametrize("how", ["terminate", "kill"])
def test_a_process_ignoring_sigterm_is_sigkilled(how):
    ctx = conveyor.context("process")
    ready = ctx.Event()
    with ctx.TaskGroup() as g:
        task = g.spawn(ignore_sigterm, ready)
        assert ready.wait(bounded(30))
        started = time.monotonic()
        getattr(task, how)()
        task.join(bounded(10))
        elapsed = time.monotonic() - started
    if how == "terminate":
        assert 0.8 < elapsed < bounded(5)  # SIGTERM ignored: SIGKILL after the 1 s grace
    else:
        assert elapsed < bounded(0.8)      # SIGKILL at once
    assert task.exitcode == -signal.SIGKILL
    with pytest.raises(conveyor.TaskCancelledError):
        task.result()


# -- spawn errors ----------------------------------------------------------------------------------
def test_unpicklable_argument_raises_pickling_error_at_spawn():
    before = {child.pid for child in psutil.Process().children(recursive=True)}
    with conveyor.context("process").TaskGroup() as g:
        with pytest.raises(conveyor.PicklingError, match="argument 1") as caught:
            g.spawn(tasks.identity, 1, threading.Lock())
        with pytest.raises(conveyor.PicklingError, match="keyword argument 'lock'"):
            g.spawn(tasks.kw, 1, lock=threading.Lock())
        assert g.tasks == ()
    assert isinstance(caught.value, conveyor.SerializationError)
    assert {child.pid for child in psutil.Process().children(recursive=True)} <= before


def test_unpicklable_result_fails_that_task():
    with pytest.raises(conveyor.PicklingError, match="result"), conveyor.context("process").TaskGroup() as g:
        g.spawn(tasks.return_lock, None)


# -- producer / consumer ---------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["thread", *(f"process-{method}" for method in START_METHODS)])
def test_producer_consumer_through_a_bounded_queue(kind):
    ctx = make_context(kind)
    q = ctx.Queue(maxsize=8)
    with ctx.TaskGroup() as g:
        consumer = g.spawn(tasks.consume_until_shutdown, q, name="consumer")
        producer = g.spawn(produce, q, 500, name="producer")
    assert producer.result() == 500
    assert consumer.result() == (500, sum(range(500)))


def test_producer_consumer_on_serial_with_an_unbounded_queue():
    ctx = conveyor.context("serial")
    q = ctx.Queue()  # bounded, the producer would block forever: one thread runs everything
    with ctx.TaskGroup() as g:
        producer = g.spawn(produce, q, 50)
        consumer = g.spawn(tasks.consume_until_shutdown, q)
    assert producer.result() == 50 and consumer.result() == (50, sum(range(50)))


def test_thread_tasks_may_spawn_siblings():
    ctx = conveyor.context("thread")
    with ctx.TaskGroup() as g:
        parent = g.spawn(lambda: g.spawn(tasks.square, 4))
    child = parent.result()
    assert child.result() == 16 and child in g.tasks


# -- Ctrl-C in a real program ----------------------------------------------------------------------
CTRL_C = """
import time, conveyor

def sleeper():
    while True:
        time.sleep(0.05)

if __name__ == "__main__":
    where, method = sys.argv[1], sys.argv[2]
    with conveyor.context("process", start_method=method).TaskGroup() as g:
        running = [g.spawn(sleeper, name=f"sleeper-{i}") for i in range(2)]
        print("READY", *[task.pid for task in running], flush=True)
        if where == "block":
            time.sleep(60)
"""

CTRL_C_CASES = [(where, target, "forkserver") for where in ("block", "exit") for target in ("parent", "group")]
CTRL_C_CASES += [("exit", "parent", method) for method in START_METHODS if method != "forkserver"]


@pytest.mark.timeout(90)
@pytest.mark.parametrize("where,target,method", CTRL_C_CASES, ids=["-".join(case) for case in CTRL_C_CASES])
def test_ctrl_c_leaves_no_process_behind(tmp_path, where, target, method):
    scenario = Scenario(tmp_path, CTRL_C, where, method)
    try:
        pids = {int(pid) for pid in scenario.expect("READY").split()[1:]}
        time.sleep(0.3)
        assert pids <= scenario.snapshot_descendants()
        _interrupt(scenario, target)
        assert scenario.wait(10) != 0
        assert "KeyboardInterrupt" in scenario.proc.stderr.read()
        assert wait_until(lambda: not scenario.alive_descendants(), 5), scenario.alive_descendants()
    finally:
        scenario.kill()
        scenario.close()


PARENT_DIES = """
import time, threading, conveyor

def sleeper():
    while True:
        time.sleep(0.05)

def main(method):
    with conveyor.context("process", start_method=method).TaskGroup() as g:
        task = g.spawn(sleeper)
        print("READY", task.pid, flush=True)
        time.sleep(60)

if __name__ == "__main__":
    method, where = sys.argv[1], sys.argv[2]
    if where == "main":
        main(method)
    else:  # from another thread: no parent-death signal, the watchdog alone must notice
        worker = threading.Thread(target=main, args=(method,))
        worker.start()
        worker.join()
"""

PARENT_CASES = [(method, "main") for method in START_METHODS]
PARENT_CASES += [("fork", "thread")] if "fork" in START_METHODS else []


@pytest.mark.parametrize("method,where", PARENT_CASES, ids=["-".join(case) for case in PARENT_CASES])
def test_tasks_die_with_their_parent(tmp_path, method, where):
    scenario = Scenario(tmp_path, PARENT_DIES, method, where)
    try:
        pid = int(scenario.expect("READY").split()[1])
        scenario.snapshot_descendants()
        os.kill(scenario.proc.pid, signal.SIGKILL)
        scenario.wait(10)
        assert wait_until(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE,
                          5), f"task process {pid} outlived its parent"
        assert wait_until(lambda: not scenario.alive_descendants(), 5), scenario.alive_descendants()
    finally:
        scenario.kill()
        scenario.close()


@pytest.mark.parametrize("method", [m for m in START_METHODS if m == "fork"])
def test_many_short_tasks_under_fork_always_settle(method):
    """Every process start polls the children multiprocessing knows of, racing each task's reaper
    for the same pid; the loser took the finished process for a running one, its reaper died and
    the group waited forever for a task that never settled."""
    ctx = conveyor.context("process", start_method=method)
    for _ in range(5):
        with ctx.TaskGroup() as g:
            handles = [g.spawn(int, i) for i in range(60)]
        assert [handle.result() for handle in handles] == list(range(60))
