"""A TaskGroup task on a cluster dies with the program that spawned it (tests/test_dask_tasks.py,
tests/test_ray_tasks.py): that program runs as ``python -c CALLER_DIES engine address``, prints its
task's pid once the task runs, and is then SIGKILLed by the test."""

from __future__ import annotations

import subprocess
import sys

import psutil

from conftest import bounded, wait_until

CALLER_DIES = """
import sys, time, conveyor

def forever():
    while True:
        time.sleep(0.05)

if __name__ == "__main__":
    with conveyor.TaskGroup(sys.argv[1], address=sys.argv[2]) as g:
        task = g.spawn(forever)
        while task.pid is None:
            time.sleep(0.02)
        print(task.pid, flush=True)
        time.sleep(100)
"""


def gone(pid: int) -> bool:
    return not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def kill_the_caller(engine: str, address: str, seconds: float) -> None:
    """Start the caller and SIGKILL it once its task runs; fail unless the task's process is gone
    within ``seconds`` (scaled)."""
    caller = subprocess.Popen([sys.executable, "-c", CALLER_DIES, engine, address], stdout=subprocess.PIPE,
                              text=True)
    try:
        pid = int(caller.stdout.readline())
        assert not gone(pid)
        caller.kill()
        caller.wait(bounded(10))
        assert wait_until(lambda: gone(pid), seconds), f"task process {pid} outlived the program that spawned it"
    finally:
        caller.kill()
        caller.wait()
        caller.stdout.close()
