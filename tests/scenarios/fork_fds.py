"""Races between a fork start and another thread's descriptors (tests/test_fork_safety.py).

Run as ``python -m scenarios.fork_fds NAME`` from the tests folder. Each scenario exits 0 when it
went through; a scenario that deadlocks is ended by its caller's timeout, and one that sees another
pool wait on it exits 1 with the reason. Functions run in workers by value (cloudpickle), so the
workers never import this module.

- ``popen``: ``subprocess.run`` in the caller after each submit to a fork pool that replaces its
  worker after every task. A worker forked while ``Popen`` holds the write end of its exec-status pipe
  keeps that copy, and ``Popen`` waits for its end of file: the caller hangs while the worker, waiting
  for the next task the caller would submit, lives.
- ``group``: the same beside a ``TaskGroup`` whose process tasks are forked from the caller's thread
  while another thread runs ``subprocess.run`` (the tasks sleep: a copy they keep is kept for good).
- ``two_pools``: one fork pool replaces workers while others start theirs; a worker of another pool
  forked while the first pool's supervisor holds the write end of a new worker's sentinel pipe keeps
  it, and the first pool's ``shutdown(wait=True)`` waits for the other pool's worker to exit.
- ``stdlib_pool``: a ``multiprocessing.Pool`` (fork) made while a conveyor fork pool starts its workers.
  Its workers, forked from the caller's thread by the stdlib (conveyor cannot tidy them), may keep a
  copy of a conveyor worker's sentinel pipe; the conveyor pool's ``shutdown(wait=True)`` must still see
  that worker exit.
- ``importing``: the caller imports a slow module right after ``Pool()`` returns, then sends the
  workers an object of that module. A worker forked by another thread during that import inherits
  the module's import lock, held by a thread it does not have, and deadlocks when it unpickles the
  object; the first workers must be forked before ``Pool()`` returns.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import subprocess
import sys
import tempfile
import threading
import time

import cloudpickle

import conveyor
from conftest import bounded

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def identity(x):
    return x


def popen() -> None:
    with conveyor.Pool(2, backend="process", start_method="fork", max_tasks_per_worker=1) as pool:
        for n in range(100):
            pool.submit(identity, n)  # runs, and its worker retires: the supervisor forks a replacement
            subprocess.run(["true"], check=True)


def group() -> None:
    stop = threading.Event()
    runs = [0]

    def run_processes() -> None:
        while not stop.is_set():
            subprocess.run(["true"], check=True)
            runs[0] += 1

    runner = threading.Thread(target=run_processes, daemon=True)
    with conveyor.TaskGroup("process", start_method="fork") as tasks:
        runner.start()
        sleepers = [tasks.spawn(time.sleep, 60) for _ in range(20)]
        before = runs[0]
        deadline = time.monotonic() + bounded(10)
        while runs[0] < before + 20 and time.monotonic() < deadline:
            time.sleep(0.01)
        stop.set()
        runner.join(bounded(5))
        for sleeper in sleepers:
            sleeper.kill()
        if runner.is_alive():
            print("subprocess.run waited for a task's process", file=sys.stderr)
            sys.exit(1)


def _churn(pool: conveyor.Pool, stop: threading.Event) -> None:
    while not stop.is_set():
        pool.map(identity, range(4))


def _shut_down(pool: conveyor.Pool, closed: threading.Event) -> None:
    pool.shutdown(wait=True)
    closed.set()


def two_pools() -> None:
    for _attempt in range(3):
        first = conveyor.Pool(2, backend="process", start_method="fork", max_tasks_per_worker=1)
        stop = threading.Event()
        churner = threading.Thread(target=_churn, args=(first, stop))  # workers replaced all the time
        churner.start()
        others = []
        for _ in range(5):
            other = conveyor.Pool(4, backend="process", start_method="fork")
            other.map(identity, range(8))  # its workers are up (and stay, idle)
            others.append(other)
        stop.set()
        churner.join()
        closed = threading.Event()
        threading.Thread(target=_shut_down, args=(first, closed), daemon=True).start()
        if not closed.wait(bounded(10)):
            print("shutdown(wait=True) of one pool waited for another pool's workers", file=sys.stderr)
            sys.exit(1)
        for other in others:
            other.shutdown(wait=True)


def stdlib_pool() -> None:
    for _attempt in range(6):
        pool = conveyor.Pool(2, backend="process", start_method="fork")
        stdlib = multiprocessing.get_context("fork").Pool(2)  # forks while conveyor's workers start
        try:
            assert pool.map(identity, range(1000)) == list(range(1000))
            assert stdlib.map(identity, range(10)) == list(range(10))
            closed = threading.Event()
            threading.Thread(target=_shut_down, args=(pool, closed), daemon=True).start()
            if not closed.wait(bounded(10)):
                print("shutdown(wait=True) waited for a multiprocessing.Pool's workers", file=sys.stderr)
                sys.exit(1)
        finally:
            stdlib.terminate()
            stdlib.join()


def importing() -> None:
    with tempfile.TemporaryDirectory() as folder:
        sys.path.insert(0, folder)
        for attempt in range(3):
            name = f"slow_module_{os.getpid()}_{attempt}"
            with open(os.path.join(folder, f"{name}.py"), "w") as module:
                module.write("import time\ntime.sleep(0.3)\n\nclass Thing:\n    pass\n")
            with conveyor.Pool(2, backend="process", start_method="fork") as pool:
                thing = importlib.import_module(name).Thing  # as the supervisor would fork workers
                results = pool.map(type, [thing() for _ in range(4)], chunksize=1)
                assert [cls.__name__ for cls in results] == ["Thing"] * 4


SCENARIOS = {"popen": popen, "group": group, "two_pools": two_pools, "stdlib_pool": stdlib_pool,
             "importing": importing}

if __name__ == "__main__":
    SCENARIOS[sys.argv[1]]()
