"""TaskGroup on Ray, what only Ray has: a task is a process started by an actor of its own.

tests/conformance/test_group.py runs on Ray in test_cluster_conformance.py (by hand: ``python
tests/clusters.py ray tests/conformance/test_group.py``); these run in every run, on a Ray in a process
tree of their own (so that the leak check still sees a task process or actor left behind: they are our
descendants), and check what that suite cannot: where the task's process runs, that more tasks than CPUs
run at once, that stopping one leaves the others alone, that a task stopped before it started never
runs, and what the death of its actor or of the program that spawned it does to a task.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time

import cloudpickle
import psutil
import pytest

pytest.importorskip("ray")

import ray  # noqa: E402

import conveyor  # noqa: E402
import tasks  # noqa: E402
from clusters import clean_environment, running_cluster  # noqa: E402
from conftest import bounded, wait_until  # noqa: E402
from scenarios.caller_dies import gone, kill_the_caller  # noqa: E402

pytestmark = pytest.mark.timeout(120)
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def address():
    """A 2-CPU Ray for the module, connected to (and its client-side threads started) before any test
    counts them; the connection is dropped afterwards, as the Ray goes."""
    with running_cluster("ray") as environment, pytest.MonkeyPatch.context() as patch:
        for name, value in environment.items():
            if name.startswith("RAY_AUTH_"):
                patch.setenv(name, value)  # the cluster's token mode, for this process's connection...
        ray._raylet.Config.initialize("")  # ...which Ray read when it was imported (as ray.init re-reads it)
        address = environment["RAY_ADDRESS"]
        context = conveyor.context("ray", address=address)
        context.Event()  # the hub of this process's primitives: started once, as a session would
        with context.TaskGroup() as g:
            g.spawn(tasks.add, 1, 1)
        yield address
        del context
        ray.shutdown()


@pytest.fixture
def ctx(address):
    return conveyor.context("ray", address=address)


def descendants():
    return {child.pid: child for child in psutil.Process().children(recursive=True)}


def name_of(process):
    try:
        return process.name()
    except psutil.NoSuchProcess:
        return None


def actor_of(pid):
    """The Ray worker (the task's actor) that started task process ``pid``."""
    for ancestor in psutil.Process(pid).parents():
        if ancestor.name().startswith("ray::"):
            return ancestor
    raise AssertionError(f"process {pid} does not descend from a Ray worker")


def raylets():
    """Our Ray's raylet (its node's manager of workers), not those of other Rays on the machine."""
    return {pid for pid, process in descendants().items() if name_of(process) == "raylet"}


# -- task functions ----------------------------------------------------------------------------------
def meet(events, mine):
    """Says it runs, then waits for all the others to say so too (conveyor's Ray events)."""
    events[mine].set()
    return mine if all(event.wait(bounded(60)) for event in events) else None


def wait_then(event, value):
    event.wait()
    return value


def set_and_return(event, value):
    event.set()
    return value


def note_sigterm(folder, ready):
    """Notes the SIGTERM it gets and runs on (only a SIGKILL ends it)."""
    def noted(signum, frame):
        with open(os.path.join(folder, "sigterm"), "w") as mark:
            mark.write(str(signum))

    signal.signal(signal.SIGTERM, noted)
    ready.set()
    while True:
        time.sleep(0.02)


def where():
    return os.getpid(), ray.is_initialized()


# -- tests ----------------------------------------------------------------------------------------------
def test_values_exceptions_names_and_exit_codes(ctx):
    with pytest.raises(tasks.CustomError) as caught, ctx.TaskGroup() as g:
        probe = g.spawn(where, name="probe")
        probe.join(bounded(60))  # done before its sibling fails (a failure cancels the others)
        failing = g.spawn(tasks.raise_custom, 5)
    pid, connected = probe.result()
    assert pid == probe.pid and pid != os.getpid() and connected  # its own process, connected to Ray
    assert probe.exitcode == 0 and probe.name == "probe" and not probe.is_alive()
    assert caught.value.code == 5 and failing.exitcode == 1 and g.errors == [caught.value]
    assert isinstance(caught.value.__cause__, conveyor.RemoteTraceback)
    assert "raise_custom" in str(caught.value.__cause__)


def test_more_tasks_than_cpus_run_at_once(ctx):
    # Four tasks wait for each other on a two-CPU Ray, through conveyor's Ray events: a task that
    # held a CPU would leave the others waiting for ever.
    events = [ctx.Event() for _ in range(4)]
    with ctx.TaskGroup() as g:
        meeting = [g.spawn(meet, events, i) for i in range(4)]
    assert [task.result() for task in meeting] == [0, 1, 2, 3]
    assert len({task.pid for task in meeting}) == 4 and os.getpid() not in {task.pid for task in meeting}


def test_terminate_stops_one_process_and_leaves_its_siblings_and_ray_alone(ctx):
    release = ctx.Event()
    before = raylets()
    with ctx.TaskGroup() as g:
        victim = g.spawn(wait_then, release, "victim", name="victim")
        sibling = g.spawn(wait_then, release, "sibling", name="sibling")
        assert wait_until(lambda: victim.pid is not None and sibling.pid is not None, 60)
        actors = {actor_of(task.pid).pid for task in (victim, sibling)}
        assert len(actors) == 2  # an actor each, neither of them this process
        sibling_actor = actor_of(sibling.pid)
        victim.terminate()
        victim.join(bounded(30))
        assert not victim.is_alive() and sibling.is_alive()
        assert sibling_actor.is_running() and not gone(sibling.pid)
        release.set()
    assert before and raylets() == before  # Ray itself untouched
    assert victim.exitcode == -signal.SIGTERM
    with pytest.raises(conveyor.TaskCancelledError, match="victim"):
        victim.result()
    assert sibling.result() == "sibling" and sibling.exitcode == 0 and g.errors == []
    assert gone(victim.pid)


@pytest.mark.parametrize("how", ["terminate", "kill"])
def test_a_task_stopped_before_its_actor_is_up_never_runs(address, how):
    # Its actor waits for a resource that no node has: the call is never sent, and a stop drops it.
    ctx = conveyor.context("ray", address=address, ray_options={"resources": {"conveyor-test-none": 1}})
    ran = ctx.Event()
    with ctx.TaskGroup() as g:
        queued = g.spawn(set_and_return, ran, "ran")
        time.sleep(0.3)
        assert queued.is_alive() and queued.pid is None
        getattr(queued, how)()
        queued.join(bounded(30))
        assert not queued.is_alive()
    with pytest.raises(conveyor.TaskCancelledError, match="before it started"):
        queued.result()
    signum = signal.SIGTERM if how == "terminate" else signal.SIGKILL
    assert queued.pid is None and queued.exitcode == -signum and g.errors == []
    assert not ran.wait(0.5)


def test_a_task_stopped_at_once_is_cancelled(ctx):
    # Stopped before its pid is known: dropped before its call is sent, or (if its actor was that
    # quick) its process is terminated; cancelled either way.
    before = descendants()
    with ctx.TaskGroup() as g:
        task = g.spawn(tasks.add, 1, 2)
        task.terminate()
    with pytest.raises(conveyor.TaskCancelledError):
        task.result()
    assert task.exitcode == -signal.SIGTERM and g.errors == []
    # No task process or actor is left. An actor killed while Ray was starting a worker for it leaves
    # that worker in Ray's pool of idle workers of this program, for its next actor or task: Ray's,
    # not the task's, so ended here for the leak check.
    def new():
        return {pid: process for pid, process in descendants().items() if pid not in before}

    assert wait_until(lambda: {name_of(process) for process in new().values()} <= {"ray::IDLE", None}, 10), new()
    for process in new().values():
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(list(new().values()), timeout=bounded(10))


@pytest.mark.parametrize("how", ["terminate", "kill"])
def test_terminate_is_sigterm_then_sigkill_and_kill_is_sigkill(ctx, tmp_path, how):
    ready = ctx.Event()
    with ctx.TaskGroup() as g:
        task = g.spawn(note_sigterm, str(tmp_path), ready)
        assert ready.wait(bounded(60))
        assert wait_until(lambda: task.pid is not None, 10)
        getattr(task, how)()
        task.join(bounded(30))
    assert task.exitcode == -signal.SIGKILL  # the process ran on after SIGTERM: the grace ran out
    assert (tmp_path / "sigterm").exists() == (how == "terminate")
    with pytest.raises(conveyor.TaskCancelledError):
        task.result()


def test_unpicklable_argument_raises_at_spawn_and_options_are_checked(address):
    with conveyor.TaskGroup("ray", address=address) as g:
        with pytest.raises(conveyor.PicklingError, match="argument 1"):
            g.spawn(tasks.identity, 1, threading.Lock())
        assert g.tasks == ()
    with pytest.raises(TypeError, match="unexpected keyword argument .adress.: did you mean address"), conveyor.TaskGroup("ray", adress=address) as g:
        g.spawn(tasks.add, 1, 2)
    with pytest.raises(ValueError, match="fork"), conveyor.TaskGroup("ray", address=address,
                                                                     start_method="fork") as g:
        g.spawn(tasks.add, 1, 2)


def test_processes_start_with_the_group_s_method(address):
    with conveyor.TaskGroup("ray", address=address, start_method="spawn") as g:
        task = g.spawn(where)
    assert task.result() == (task.pid, True) and task.exitcode == 0


def test_a_dead_actor_fails_its_task_with_worker_crashed(ctx):
    started = ctx.Event()
    with pytest.raises(conveyor.WorkerCrashedError, match="died") as caught, ctx.TaskGroup() as g:
        task = g.spawn(wait_then, ctx.Event(), None, name="orphan")
        g.spawn(set_and_return, started, None)
        assert started.wait(bounded(60))
        assert wait_until(lambda: task.pid is not None, 30)
        actor_of(task.pid).kill()
    assert caught.value.pid == task.pid and not task.is_alive() and task.exitcode is None
    assert wait_until(lambda: gone(task.pid), 10)  # it died with its actor


def test_a_task_dies_with_the_program_that_spawned_it(address):
    kill_the_caller("ray", address, 30)


WITHOUT_ADDRESS = """
import ray, conveyor, tasks

if __name__ == "__main__":
    with conveyor.TaskGroup("ray") as g:                 # starts a local Ray for its task...
        task = g.spawn(tasks.add, 1, 2)
    assert task.result() == 3 and task.exitcode == 0, (task.result(), task.exitcode)
    assert not ray.is_initialized()                      # ...stopped with its last user
    ctx = conveyor.context("ray", workers=1)             # a context holds its Ray for its groups
    queue = ctx.Queue()
    with ctx.TaskGroup() as g:
        g.spawn(queue.put, "through the queue")
    assert queue.get(timeout=30) == "through the queue" and ray.is_initialized()
    print("OK")
"""


@pytest.mark.timeout(240)
def test_a_group_without_address_starts_and_stops_its_own_ray():
    # In a process of its own: a Ray of its own, with Ray's process-wide state.
    environment = clean_environment()
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [os.path.dirname(tasks.__file__),
                                                             environment.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, "-c", WITHOUT_ADDRESS], capture_output=True, text=True,
                          env=environment, timeout=bounded(200), check=False)
    assert done.returncode == 0 and done.stdout.strip() == "OK", done.stderr[-3000:]
