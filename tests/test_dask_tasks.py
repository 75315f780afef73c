"""TaskGroup on Dask, what only Dask has: a task is a process started by a worker, outside its slots.

tests/conformance/test_group.py runs on Dask in test_cluster_conformance.py (by hand: ``python
tests/clusters.py dask tests/conformance/test_group.py``); these run in every run, on a cluster in a
process tree of their own (so that the leak check still sees a task process left behind: it is our
descendant), and check what that suite cannot: where the task's process runs, that stopping it leaves
its worker and the other tasks alone, that a task not yet started is dropped without ever running, and
what a worker's death does to its task.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import cloudpickle
import psutil
import pytest

pytest.importorskip("distributed")

import dask  # noqa: E402
import distributed  # noqa: E402

import conveyor  # noqa: E402
import tasks  # noqa: E402
from clusters import running_cluster  # noqa: E402
from conftest import bounded, wait_until  # noqa: E402
from scenarios.caller_dies import gone, kill_the_caller  # noqa: E402

pytestmark = pytest.mark.timeout(120)
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def address():
    """A 2-worker cluster for the module, its client-side threads started before any test counts them."""
    with running_cluster("dask") as environment:
        address = environment["DASK_SCHEDULER_ADDRESS"]
        with conveyor.TaskGroup("dask", address=address) as g:
            g.spawn(tasks.add, 1, 1)
        yield address


def unique(what):
    return f"conveyor-test-{what}-{os.getpid()}-{time.monotonic_ns()}"


# Coordination through Dask's own events, by name: the task's process has a default Dask client.
def wait_then(name, value):
    distributed.Event(name).wait()
    return value


def meet(names, mine):
    """Says it runs, then waits for all the others to say so too."""
    distributed.Event(names[mine]).set()
    for name in names:
        distributed.Event(name).wait()
    return mine


def wait_on_dask_event(name):
    """Holds a worker's only thread (a plain Dask task does not leave its slot)."""
    distributed.Event(name).wait()


def mark_ran(name):
    distributed.Variable(name).set("ran")


def ignore_sigterm(ready):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    distributed.Event(ready).set()
    while True:
        time.sleep(0.02)


def worker_pids(client):
    return set(client.run(os.getpid).values())


def worker_of(pid, workers):
    """The Dask worker process that started task process ``pid`` (its parent, or the fork server's)."""
    for ancestor in psutil.Process(pid).parents():
        if ancestor.pid in workers:
            return ancestor.pid
    raise AssertionError(f"process {pid} does not descend from a Dask worker {workers}")


def test_more_tasks_than_workers_run_at_once(address):
    # Four tasks wait for each other on a two-worker cluster: a task that held a worker's slot would
    # leave the other two queued for ever.
    names = [unique(f"meet-{i}") for i in range(4)]
    with conveyor.TaskGroup("dask", address=address) as g:
        meeting = [g.spawn(meet, names, i) for i in range(4)]
    assert [task.result() for task in meeting] == [0, 1, 2, 3]
    assert len({task.pid for task in meeting}) == 4


def test_terminate_stops_one_process_and_leaves_its_worker_and_siblings_alone(address):
    release = unique("release")
    with distributed.Client(address, set_as_default=False) as client:
        workers = worker_pids(client)
        with conveyor.TaskGroup("dask", address=address) as g:
            victim = g.spawn(wait_then, release, "victim", name="victim")
            sibling = g.spawn(wait_then, release, "sibling", name="sibling")
            assert wait_until(lambda: victim.pid is not None and sibling.pid is not None, 30)
            for task in (victim, sibling):  # each a process of its own, started by a worker
                assert task.pid not in workers and task.pid != os.getpid()
                worker_of(task.pid, workers)
            victim.terminate()
            victim.join(bounded(10))
            assert not victim.is_alive() and sibling.is_alive()
            distributed.Event(release, client=client).set()
        assert victim.exitcode == -signal.SIGTERM
        with pytest.raises(conveyor.TaskCancelledError, match="victim"):
            victim.result()
        assert sibling.result() == "sibling" and g.errors == []
        assert worker_pids(client) == workers  # no worker was restarted
        assert gone(victim.pid)


def test_a_task_that_has_not_started_is_dropped_without_running(address):
    marker, gate = unique("marker"), unique("gate")
    with distributed.Client(address, set_as_default=False) as client:
        # Both single-threaded workers busy with plain Dask tasks: the spawned task waits in the queue.
        blockers = [client.submit(wait_on_dask_event, gate, pure=False) for _ in range(2)]
        assert wait_until(lambda: sum(map(len, client.processing().values())) == 2, 30)
        with conveyor.TaskGroup("dask", address=address) as g:
            queued = g.spawn(mark_ran, marker)
            time.sleep(0.3)
            assert queued.is_alive() and queued.pid is None
            started = time.monotonic()
            queued.terminate()
            queued.join(bounded(10))
            assert not queued.is_alive() and time.monotonic() - started < bounded(5)
        with pytest.raises(conveyor.TaskCancelledError, match="before it started"):
            queued.result()
        assert queued.pid is None and queued.exitcode == -signal.SIGTERM and g.errors == []
        distributed.Event(gate, client=client).set()
        client.gather(blockers)
        time.sleep(0.5)  # time enough for a task that was not really dropped to run
        with pytest.raises(TimeoutError):
            distributed.Variable(marker, client=client).get(timeout=0.5)


@pytest.mark.parametrize("how", ["terminate", "kill"])
def test_a_process_ignoring_sigterm_is_sigkilled(address, how):
    ready = unique("ready")
    with distributed.Client(address, set_as_default=False) as client:
        with conveyor.TaskGroup("dask", address=address) as g:
            task = g.spawn(ignore_sigterm, ready)
            assert distributed.Event(ready, client=client).wait(bounded(30))
            assert wait_until(lambda: task.pid is not None, 10)
            started = time.monotonic()
            getattr(task, how)()
            task.join(bounded(10))
            elapsed = time.monotonic() - started
    if how == "terminate":
        assert 0.8 < elapsed < bounded(5)  # SIGTERM ignored: SIGKILL after the process backend's grace
    else:
        assert elapsed < bounded(0.8)
    assert task.exitcode == -signal.SIGKILL
    with pytest.raises(conveyor.TaskCancelledError):
        task.result()


def test_unpicklable_argument_raises_at_spawn_and_options_are_checked(address):
    import threading

    with conveyor.TaskGroup("dask", address=address) as g:
        with pytest.raises(conveyor.PicklingError, match="argument 1"):
            g.spawn(tasks.identity, 1, threading.Lock())
        assert g.tasks == ()
    with pytest.raises(TypeError, match="unexpected keyword argument .adress.: did you mean address"), conveyor.TaskGroup("dask", adress=address) as g:
        g.spawn(tasks.add, 1, 2)


def test_without_a_cluster_spawn_says_how_to_get_one():
    with dask.config.set({"scheduler-address": None}):
        with pytest.raises(NotImplementedError, match="context"), conveyor.TaskGroup("dask") as g:
            g.spawn(tasks.add, 1, 2)


CONTEXT_WITHOUT_ADDRESS = """
import conveyor, tasks

if __name__ == "__main__":
    ctx = conveyor.context("dask", workers=1)  # starts a local cluster, shared by what it makes
    with ctx.TaskGroup() as g:
        task = g.spawn(tasks.add, 1, 2)
    assert task.result() == 3 and task.exitcode == 0, (task.result(), task.exitcode)

    # a pool without an address starts a cluster of its own; its TaskGroup's tasks run on that one
    with conveyor.Pool(1, backend="dask") as pool, pool.TaskGroup() as g:
        where = g.spawn(tasks.scheduler_address)
    assert where.result() == pool.statistics()["scheduler"], (where.result(), pool.statistics())
    print("OK")
"""


def test_a_context_without_address_spawns_on_its_own_cluster():
    # In a process of its own: a local cluster in this one would start Dask's process-wide threads.
    environment = {key: value for key, value in os.environ.items() if not key.startswith("DASK_")}
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [os.path.dirname(tasks.__file__),
                                                             environment.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, "-c", CONTEXT_WITHOUT_ADDRESS], capture_output=True, text=True,
                          env=environment, timeout=bounded(100))
    assert done.returncode == 0 and done.stdout.strip() == "OK", done.stderr[-3000:]


def test_a_worker_that_dies_fails_its_task_with_worker_crashed():
    with running_cluster("dask") as environment:  # a cluster of its own: one of its workers dies
        _kill_the_worker_under_a_task(environment["DASK_SCHEDULER_ADDRESS"])


def _kill_the_worker_under_a_task(address):
    ready = unique("ready")
    with distributed.Client(address, set_as_default=False) as client:
        workers = worker_pids(client)
        with pytest.raises(conveyor.WorkerCrashedError, match="died") as caught, \
                conveyor.TaskGroup("dask", address=address) as g:
            task = g.spawn(wait_then, unique("never"), None, name="orphan")
            g.spawn(distributed.Event(ready, client=client).set)
            assert distributed.Event(ready, client=client).wait(bounded(30))
            assert wait_until(lambda: task.pid is not None, 30)
            os.kill(worker_of(task.pid, workers), signal.SIGKILL)
        assert caught.value.pid == task.pid and not task.is_alive()
        assert wait_until(lambda: gone(task.pid), 10)  # it died with its worker


def test_a_task_dies_with_the_program_that_spawned_it(address):
    kill_the_caller("dask", address, 10)
