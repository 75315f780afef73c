"""Multi-process stress tests of the process primitives: many tasks of a process pool increment a shared
counter under a process ``Lock``, a ``BoundedSemaphore(2)`` never lets more than two of them in at
once, and a process lock's life across threads, drops, exits and forks. The model-based tests, on every
backend, are in conformance/test_primitive_models.py.
"""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import pytest

import conveyor
from conftest import START_METHODS, bounded, in_thread

pytestmark = pytest.mark.timeout(120)


# -- many processes at once ---------------------------------------------------------------------------


def _add_under_lock(args: tuple[Any, Any, int]) -> int:
    lock, counter, times = args
    for _ in range(times):
        with lock:
            value = counter.value  # an unguarded read-modify-write would lose updates
            time.sleep(0)
            counter.value = value + 1
    return times


def _crowd_the_semaphore(args: tuple[Any, Any, Any, int]) -> int:
    sem, holders, peak, rounds = args
    for _ in range(rounds):
        with sem:
            with holders.get_lock():
                holders.value += 1
                inside = holders.value
            with peak.get_lock():
                peak.value = max(peak.value, inside)
            time.sleep(0.002)
            with holders.get_lock():
                holders.value -= 1
    return rounds


@pytest.mark.parametrize("method", START_METHODS)
def test_tasks_of_many_processes_increment_a_counter_under_a_process_lock(method: str) -> None:
    ctx = conveyor.context("process")
    with conveyor.Pool(4, backend="process", start_method=method) as pool:
        for _ in range(3):
            lock, counter = ctx.Lock(), ctx.Value("q", 0, lock=False)
            done = pool.map(_add_under_lock, [(lock, counter, 150)] * 8, chunksize=1, timeout=bounded(60))
            assert sum(done) == 1200
            assert counter.value == 1200
            assert not lock.locked()
            assert lock.acquire(blocking=False)
            lock.release()


@pytest.mark.parametrize("method", START_METHODS)
def test_a_bounded_semaphore_lets_at_most_two_processes_in(method: str) -> None:
    ctx = conveyor.context("process")
    with conveyor.Pool(4, backend="process", start_method=method) as pool:
        for _ in range(3):
            sem = ctx.BoundedSemaphore(2)
            holders, peak = ctx.Value("i", 0), ctx.Value("i", 0)
            done = pool.map(_crowd_the_semaphore, [(sem, holders, peak, 20)] * 8, chunksize=1,
                            timeout=bounded(60))
            assert sum(done) == 160
            assert holders.value == 0
            assert peak.value == 2  # never more than two; and two did get in together
            assert sem.acquire(blocking=False) and sem.acquire(blocking=False)
            assert not sem.acquire(blocking=False)
            sem.release(2)
            with pytest.raises(ValueError):
                sem.release()


# -- regressions: what the models and the stress above ran into ------------------------------------------

DROPPED_WHILE_HELD = """
import gc, os, threading
import conveyor

ctx = conveyor.context("process")
lock = ctx.Lock()
lock.acquire()
name = lock._segment.name
del lock  # dropped while held: it stays held (mapped) for good, and its name goes
gc.collect()
assert not os.path.exists("/dev/shm/" + name), "a dropped lock's segment is removed, held or not"
box = {"lock": ctx.Lock()}
taken, go = threading.Event(), threading.Event()


def hold_then_lock_more():
    box["lock"].acquire()
    taken.set()
    go.wait(10)
    for _ in range(50):
        other = ctx.Lock()
        other.acquire()
        other.release()


thread = threading.Thread(target=hold_then_lock_more)
thread.start()
taken.wait(10)
del box["lock"]  # dropped while another thread of ours holds it
gc.collect()
go.set()
thread.join()
for _ in range(50):  # new segments are mapped where the dropped ones were
    other = ctx.Lock()
    other.acquire()
    other.release()
print("OK", flush=True)
"""


def test_a_process_lock_dropped_while_held_does_not_break_later_locks():
    """A held robust mutex is linked into its thread's robust list: unmapping it (the Lock dropped while
    held) used to make the thread's next lock of any process primitive crash (SIGSEGV)."""
    result = subprocess.run([sys.executable, "-c", DROPPED_WHILE_HELD], capture_output=True, text=True,
                            check=False, timeout=bounded(60))
    assert result.returncode == 0 and "OK" in result.stdout, (result.returncode, result.stderr)


EXITS_HOLDING = """
import pickle, subprocess, sys
import conveyor

lock = conveyor.context("process").Lock()
holder = subprocess.run(
    [sys.executable, "-c",
     "import pickle, sys; lock = pickle.loads(bytes.fromhex(sys.argv[1])); lock.acquire(); print('HELD')",
     pickle.dumps(lock).hex()],
    capture_output=True, text=True, timeout=60)  # the holder exits normally: its finalizers run
assert holder.returncode == 0 and "HELD" in holder.stdout, holder.stderr
try:
    taken = lock.acquire(timeout=5)
except conveyor.OwnerDiedError:
    print("OWNER DIED", flush=True)
else:
    print("TAKEN" if taken else "STILL HELD", flush=True)
assert lock.acquire(timeout=5)
lock.release()
"""


def test_a_process_that_exits_normally_holding_a_lock_is_reported_dead():
    """At exit, the holder's finalizers used to unmap the held mutex before the kernel marked it
    "owner died": the lock stayed held by nobody, and every other process waited forever."""
    result = subprocess.run([sys.executable, "-c", EXITS_HOLDING], capture_output=True, text=True,
                            check=False, timeout=bounded(60))
    assert result.returncode == 0 and "OWNER DIED" in result.stdout, (result.stdout, result.stderr)


HALF_BUILT_AT_FORK = """
import os, threading, time
from conveyor._backends.process import condition, segments, sync

real = sync.ProcessRLock
inside = threading.Event()


def slow_rlock():
    inside.set()
    time.sleep(0.3)
    return real()


condition.ProcessRLock = slow_rlock  # a Condition's default lock: made after its segment is registered
box = {}
maker = threading.Thread(target=lambda: box.setdefault("cond", condition.ProcessCondition()))
maker.start()
inside.wait(10)
names = [name for name, obj in list(segments._attached.items()) if isinstance(obj, condition.ProcessCondition)]
pid = os.fork()  # as a pool's supervisor thread forks a worker while the main thread builds primitives
if pid == 0:
    code = 0
    try:
        for name in names:  # as a task argument arriving by name
            cond = segments.attach(condition.ProcessCondition, name, (), {"_lock": real()})
            with cond:
                cond.notify()
    except BaseException as error:
        print("child:", repr(error), flush=True)
        code = 1
    segments.release_owned()
    os._exit(code)
_, status = os.waitpid(pid, 0)
maker.join()
print("OK" if os.waitstatus_to_exitcode(status) == 0 else "CHILD FAILED", flush=True)
"""


def test_a_primitive_half_built_when_a_worker_forks_is_not_reused_in_the_worker():
    result = subprocess.run([sys.executable, "-c", HALF_BUILT_AT_FORK], capture_output=True, text=True,
                            check=False, timeout=bounded(60))
    assert result.returncode == 0 and "OK" in result.stdout, (result.stdout, result.stderr)


def test_a_process_lock_can_be_released_by_another_thread_like_threading_lock():
    lock = conveyor.context("process").Lock()
    lock.acquire()
    try:
        in_thread(lock.release)
        released = not lock.locked()
    except RuntimeError:
        released = False
    finally:
        if lock.locked():
            lock.release()
        del lock  # not kept alive by the failure's traceback: its segment goes now
    assert released
