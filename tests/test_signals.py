"""Ctrl-C, parent death and interpreter exit, each in a real subprocess so that a hang is a failure.

Every scenario runs a small script in its own session, injects the real signal, and then checks the
timing promised by the reliability contract and that no descendant process survives.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from conftest import START_METHODS, _shm, bounded, wait_until

pytestmark = pytest.mark.timeout(120)

TESTS = Path(__file__).parent


def _script(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "scenario.py"
    path.write_text(f"import sys\nsys.path.insert(0, {str(TESTS)!r})\n" + textwrap.dedent(body))
    return path


class Scenario:
    """A script running in its own process group, with its output read line by line."""

    def __init__(self, tmp_path: Path, body: str, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(_script(tmp_path, body)), *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        )
        self.descendants: set[int] = set()

    def expect(self, word: str, seconds: float = 60) -> str:
        deadline = time.monotonic() + bounded(seconds)
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            if line.startswith(word):
                return line.strip()
        self.kill()
        raise AssertionError(f"never saw {word!r}; stderr: {self.proc.stderr.read()}")

    def snapshot_descendants(self) -> set[int]:
        try:
            found = {p.pid for p in psutil.Process(self.proc.pid).children(recursive=True)}
        except psutil.NoSuchProcess:
            found = set()
        self.descendants |= found
        return found

    def wait(self, seconds: float) -> int:
        return self.proc.wait(timeout=bounded(seconds))

    def kill(self) -> None:
        for pid in self.descendants | {self.proc.pid}:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=10)

    def alive_descendants(self) -> set[int]:
        alive = set()
        for pid in self.descendants:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    alive.add(pid)
            except psutil.NoSuchProcess:
                pass
        return alive

    def close(self) -> None:
        self.proc.stdout.close()
        self.proc.stderr.close()


CTRL_C_DURING_CALL = """
import time, conveyor, tasks
if __name__ == "__main__":
    method, call = sys.argv[1], sys.argv[2]
    backend = method if method in ("thread", "serial") else "process"
    with conveyor.Pool(2, backend=backend, start_method=None if backend != "process" else method) as pool:
        pool.map(tasks.square, range(4))
        print("READY", flush=True)
        try:
            if call == "map":
                pool.map(tasks.sleep_then, range(100), [1.0] * 100)
            elif call == "imap":
                for _ in pool.imap(tasks.sleep_then, range(100), [1.0] * 100):
                    pass
            elif call == "coroutines":  # many coroutine calls awaiting at once in each worker
                pool.map(tasks.nap, range(1000), [1.0] * 1000)
            else:
                pool.submit(tasks.sleep_then, 1, 30).result()
        except KeyboardInterrupt:
            print("INTERRUPTED", time.monotonic(), flush=True)
            raise
"""


def _interrupt(scenario: Scenario, target: str) -> float:
    sent = time.monotonic()
    if target == "group":
        os.killpg(scenario.proc.pid, signal.SIGINT)
    else:
        os.kill(scenario.proc.pid, signal.SIGINT)
    return sent


CASES = [(m, c, t) for m in START_METHODS for c in ("map", "imap", "result") for t in ("group", "parent")
         if m == "forkserver" or c == "map"]
CASES += [("thread", call, "group") for call in ("map", "imap", "result")]  # "thread": the thread backend
CASES += [(method, "coroutines", "group") for method in ("forkserver", "thread", "serial")]
CASES += [("forkserver", "coroutines", "parent")]


@pytest.mark.parametrize("method,call,target", CASES, ids=["-".join(case) for case in CASES])
def test_ctrl_c_stops_everything(tmp_path, method, call, target):
    """KeyboardInterrupt within 1 s, the with-block exits within 5 s, no process left behind."""
    scenario = Scenario(tmp_path, CTRL_C_DURING_CALL, method, call)
    try:
        scenario.expect("READY")
        time.sleep(0.3)
        scenario.snapshot_descendants()
        sent = _interrupt(scenario, target)
        line = scenario.expect("INTERRUPTED", 10)
        assert float(line.split()[1]) - sent < bounded(1.0)
        assert scenario.wait(5) != 0
        assert "KeyboardInterrupt" in scenario.proc.stderr.read()
        assert wait_until(lambda: not scenario.alive_descendants(), 5), scenario.alive_descendants()
    finally:
        scenario.kill()
        scenario.close()


SECOND_CTRL_C = """
import time, conveyor, tasks
if __name__ == "__main__":
    with conveyor.Pool(2, backend="process") as pool:
        futures = [pool.submit(tasks.ignore_sigterm_and_sleep, 30) for _ in range(2)]
        time.sleep(1.0)  # both workers are now inside the task, ignoring SIGTERM
        print("READY", flush=True)
        try:
            futures[0].result()
        except KeyboardInterrupt:
            print("FIRST", time.monotonic(), flush=True)
            raise
"""


def test_a_second_ctrl_c_during_shutdown_kills_at_once(tmp_path):
    """Workers ignoring SIGTERM get a grace period; a second Ctrl-C cuts it short."""
    scenario = Scenario(tmp_path, SECOND_CTRL_C)
    try:
        scenario.expect("READY")
        time.sleep(0.5)
        scenario.snapshot_descendants()
        _interrupt(scenario, "parent")
        scenario.expect("FIRST", 10)
        time.sleep(0.1)
        second = _interrupt(scenario, "parent")
        scenario.wait(5)
        assert time.monotonic() - second < bounded(0.8)
        assert wait_until(lambda: not scenario.alive_descendants(), 5), scenario.alive_descendants()
    finally:
        scenario.kill()
        scenario.close()


PARENT_KILLED = """
import time, conveyor, tasks
if __name__ == "__main__":
    pool = conveyor.Pool(2, backend="process", start_method=sys.argv[1])
    futures = [pool.submit(tasks.sleep_then, i, 60) for i in range(4)]
    print("READY", flush=True)
    time.sleep(120)
"""


@pytest.mark.parametrize("method", START_METHODS)
def test_workers_exit_when_the_parent_is_killed(tmp_path, method):
    shm_before = _shm()
    scenario = Scenario(tmp_path, PARENT_KILLED, method)
    try:
        scenario.expect("READY")
        assert wait_until(lambda: len(scenario.snapshot_descendants()) >= 2, 20)
        time.sleep(0.3)
        scenario.snapshot_descendants()
        os.kill(scenario.proc.pid, signal.SIGKILL)
        scenario.wait(5)
        assert wait_until(lambda: not scenario.alive_descendants(), 5), scenario.alive_descendants()
        assert not (_shm() - shm_before), "leaked shared memory or semaphores"
    finally:
        scenario.kill()
        scenario.close()


EXIT_WITH_PENDING = """
import conveyor, tasks
if __name__ == "__main__":
    pool = conveyor.Pool(2, backend=sys.argv[1])
    futures = [pool.submit(tasks.sleep_then, i, 30) for i in range(10)]
    print("READY", flush=True)
    if sys.argv[2] == "drop":
        del pool, futures
        import gc, time
        gc.collect()
        print("DROPPED", flush=True)
        time.sleep(float(sys.argv[3]))
"""


@pytest.mark.parametrize("backend", ["process", "thread"])
def test_interpreter_exit_with_pending_work_is_quick_and_quiet(tmp_path, backend):
    scenario = Scenario(tmp_path, EXIT_WITH_PENDING, backend, "exit")
    try:
        scenario.expect("READY")
        scenario.snapshot_descendants()
        started = time.monotonic()
        assert scenario.wait(10) == 0
        assert time.monotonic() - started < bounded(10)
        assert scenario.proc.stderr.read() == ""
        assert wait_until(lambda: not scenario.alive_descendants(), 5)
    finally:
        scenario.kill()
        scenario.close()


def _is_multiprocessing_helper(pid: int) -> bool:
    """The resource tracker, or the fork server itself (asked now: a process seen mid-exec may since
    have become one). Workers forked from the server share its command line, but their parent is it."""
    try:
        process = psutil.Process(pid)
        text = " ".join(process.cmdline())
        parent = process.parent()
        parent_text = " ".join(parent.cmdline()) if parent is not None else ""
    except psutil.Error:
        return False
    server = "forkserver import main"
    return "resource_tracker" in text or (server in text and server not in parent_text)


def test_a_dropped_pool_stops_its_workers(tmp_path):
    scenario = Scenario(tmp_path, EXIT_WITH_PENDING, "process", "drop", "20")
    try:
        scenario.expect("READY")
        assert wait_until(lambda: len(scenario.snapshot_descendants()) >= 2, 20)
        scenario.expect("DROPPED")

        def workers_alive() -> set[int]:
            scenario.snapshot_descendants()
            return {pid for pid in scenario.alive_descendants() if not _is_multiprocessing_helper(pid)}

        assert wait_until(lambda: not workers_alive(), 5), workers_alive()
        assert scenario.proc.poll() is None  # the program itself goes on
    finally:
        scenario.kill()
        scenario.close()
