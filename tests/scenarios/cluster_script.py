"""The opening of every cluster scenario script (tests/test_dask.py, tests/test_ray.py).

A scenario runs as ``python -c script`` in a process of its own (a cluster engine keeps process-wide
state). It uses the suite's task functions (``tests/tasks.py``), sent to the engine's workers by value
so that no import path needs setting up there, and helpers to check errors.
"""

from pathlib import Path

TASKS = f"""
import functools, os, sys
sys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r})
import cloudpickle
import tasks
cloudpickle.register_pickle_by_value(tasks)

fail_on_5 = functools.partial(tasks.fail_on, bad=5)          # ValueError("bad input 5")
die_on_7 = functools.partial(tasks.crash, how="kill", when=7)  # SIGKILLs its worker on 7

def die_first_time(args):
    x, folder = args                                           # SIGKILLs its worker on 3, once
    return tasks.crash_once(x, folder, how="kill") if x == 3 else x

def outcomes(iterator, count):
    # the next count results of an imap, each exception in its place
    got = []
    for _ in range(count):
        try:
            got.append(next(iterator))
        except Exception as error:
            got.append(error)
    return got

def expect(error_type, call, *args, **kwargs):
    try:
        call(*args, **kwargs)
    except error_type as error:
        return error
    raise AssertionError(f"{{call}} did not raise {{error_type.__name__}}")

def tagged(items):
    for item in items:
        yield os.getpid(), item * 10

def check_generator_stage_runs_on(backend):
    # a generator stage runs where its backend runs: on the engine's workers, not this process's threads
    import conveyor
    out = conveyor.Pipeline(range(6)).map(tagged, workers=2, backend=backend).run()
    assert sorted(value for _, value in out) == [x * 10 for x in range(6)], out
    assert os.getpid() not in {{pid for pid, _ in out}}, out

def hold_and_die(lock, holding):
    lock.acquire()
    holding.set()
    os.kill(os.getpid(), 9)

def check_a_dead_holder_s_lock_is_freed_after_its_lease(ctx, lease=3.0):
    # the dead-holder rule, the same on every engine: a lock whose holder's process dies is freed
    # once the holder has been silent for the lock's lease (a live holder keeps it: see test_hub.py)
    import time
    import conveyor
    os.environ["CONVEYOR_CLUSTER_LEASE"] = str(lease)   # read when a lock is made; it travels with it
    lock, holding = ctx.Lock(), ctx.Event()
    del os.environ["CONVEYOR_CLUSTER_LEASE"]
    try:
        with ctx.TaskGroup() as g:
            g.spawn(hold_and_die, lock, holding)            # in a process of its own, SIGKILLed
            assert holding.wait(60)
            assert lock.locked()                            # held by a process that is dead or dying
    except conveyor.ConveyorError as error:
        assert "9" in str(error) or "SIGKILL" in str(error), error
    began = time.monotonic()
    assert lock.acquire(timeout=60), "the dead holder's lock was never freed"
    assert time.monotonic() - began < 30
    lock.release()
"""
