"""Fork is safe beside subprocess and other pools: a process conveyor forks (a pool's worker, a task
group's process) keeps no copy of the pipes and sockets that other threads and pools opened, so none
of them waits for it; the files, stdio and inheritable descriptors a user's code relies on stay.

The races themselves run in a subprocess (``scenarios/fork_fds.py``) under a timeout: on a fork child
that keeps every inherited descriptor they deadlock or wait, most of the time within the first few
iterations. The mechanism is checked directly here too, without a race: a pipe and a socket pair
opened before the pool reach end of file as soon as the parent closes its copies, while the worker
lives.
"""

from __future__ import annotations

import multiprocessing
import os
import select
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import cloudpickle
import pytest

import conveyor
from conftest import bounded, wait_until

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="no fork start method here"),
]
cloudpickle.register_pickle_by_value(sys.modules[__name__])

TESTS = Path(__file__).parent


def run_scenario(name: str) -> subprocess.CompletedProcess[str]:
    """Run ``scenarios/fork_fds.py NAME`` with this conveyor; a deadlock ends in the timeout."""
    source = str(Path(conveyor.__file__).parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([source, str(TESTS)])}
    try:
        return subprocess.run([sys.executable, "-X", "faulthandler", "-m", "scenarios.fork_fds", name],
                              cwd=TESTS, env=env, capture_output=True, text=True, timeout=bounded(60),
                              check=False)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"scenario {name!r} deadlocked (no end within {exc.timeout:.0f}s)")


# -- the races -------------------------------------------------------------------------------
def test_subprocess_run_beside_a_fork_pool_that_replaces_its_workers():
    done = run_scenario("popen")
    assert done.returncode == 0, done.stderr[-3000:]


def test_subprocess_run_beside_fork_task_group_processes():
    done = run_scenario("group")
    assert done.returncode == 0, done.stderr[-3000:]


def test_shutdown_of_one_fork_pool_does_not_wait_for_another_pools_workers():
    done = run_scenario("two_pools")
    assert done.returncode == 0, done.stderr[-3000:]


def test_close_of_a_fork_pool_sees_its_workers_exit_beside_a_stdlib_fork_pool():
    done = run_scenario("stdlib_pool")
    assert done.returncode == 0, done.stderr[-3000:]


def test_a_module_the_caller_imports_right_after_pool_does_not_deadlock_a_fork_worker():
    done = run_scenario("importing")
    assert done.returncode == 0, done.stderr[-3000:]


# -- the mechanism, without a race -----------------------------------------------------------------------
def _reaches_end_of_file(read_end: int, sock: socket.socket) -> bool:
    """Both the pipe's read end and the socket see end of file within a bounded wait."""
    for end in (read_end, sock):
        ready, _, _ = select.select([end], [], [], bounded(5))
        if not ready:
            return False
    return os.read(read_end, 1) == b"" and sock.recv(1) == b""


@pytest.mark.parametrize("starter", ["pool", "group"])
def test_a_fork_child_keeps_no_copy_of_the_parents_pipes_and_sockets(starter):
    """What another thread's Popen or another pool would wait on: its end of file comes once the
    parent closes its copies, whatever the forked child does."""
    read_end, write_end = os.pipe()
    mine, theirs = socket.socketpair()
    try:
        if starter == "pool":
            with conveyor.Pool(1, backend="process", start_method="fork") as pool:
                worker = pool.submit(os.getpid).result(timeout=bounded(30))
                os.close(write_end)
                theirs.close()
                assert _reaches_end_of_file(read_end, mine)
                assert pool.submit(os.getpid).result(timeout=bounded(30)) == worker  # it lived all along
        else:
            with conveyor.TaskGroup("process", start_method="fork") as group:
                task = group.spawn(time.sleep, 60)
                assert wait_until(lambda: task.pid is not None, 10)
                os.close(write_end)
                theirs.close()
                try:
                    assert _reaches_end_of_file(read_end, mine)
                    assert task.is_alive()
                finally:
                    task.kill()
    finally:
        os.close(read_end)
        mine.close()
        theirs.close()
        try:
            os.close(write_end)
        except OSError:
            pass


def _write_and_report(fd: int, data: bytes) -> str:
    try:
        os.write(fd, data)
    except OSError as exc:
        return type(exc).__name__
    return "written"


def test_files_stdio_and_inheritable_descriptors_survive_in_a_fork_worker(tmp_path, capfd):
    """A file the parent opened before the pool (a log, say) and a descriptor marked inheritable still
    work in a fork worker, as with multiprocessing's fork; a non-inheritable pipe is a dead end there:
    writing it raises BrokenPipeError (never a write into whatever file reused its number)."""
    kept_read, kept_write = os.pipe()
    os.set_inheritable(kept_write, True)
    dropped_read, dropped_write = os.pipe()
    try:
        with open(tmp_path / "log", "wb") as log, \
                conveyor.Pool(1, backend="process", start_method="fork") as pool:
            assert pool.submit(_write_and_report, log.fileno(), b"from a worker\n").result() == "written"
            assert pool.submit(_write_and_report, kept_write, b"k").result() == "written"
            assert pool.submit(_write_and_report, 1, b"worker stdout\n").result() == "written"
            assert pool.submit(_write_and_report, dropped_write, b"d").result() == "BrokenPipeError"
        assert (tmp_path / "log").read_bytes() == b"from a worker\n"
        assert os.read(kept_read, 1) == b"k"
        assert "worker stdout" in capfd.readouterr().out
        os.set_blocking(dropped_read, False)
        with pytest.raises(BlockingIOError):
            os.read(dropped_read, 1)  # nothing arrived, and the parent's write end is still open
    finally:
        for fd in (kept_read, kept_write, dropped_read, dropped_write):
            os.close(fd)


def _keep_connection(conn) -> None:
    conveyor.worker_state().conn = conn


def _send_on_kept_connection(message: str) -> str:
    conveyor.worker_state().conn.send(message)
    return "sent"


def _send_on(conn, message: str) -> str:
    conn.send(message)
    return "sent"


def test_a_connection_passed_to_the_initializer_still_works_in_a_fork_worker():
    """A multiprocessing connection pickles as its descriptor's number: passed in initargs (the way
    multiprocessing.Pool users pass one), the fork worker keeps that descriptor, replacements too."""
    reader, writer = multiprocessing.Pipe(duplex=False)
    try:
        with conveyor.Pool(1, backend="process", start_method="fork", initializer=_keep_connection,
                           initargs=(writer,), max_tasks_per_worker=1) as pool:
            for message in ("first worker", "its replacement"):
                assert pool.submit(_send_on_kept_connection, message).result(timeout=bounded(30)) == "sent"
                assert reader.poll(bounded(5))
                assert reader.recv() == message
    finally:
        reader.close()
        writer.close()


def test_a_connection_passed_to_a_fork_task_still_works_there():
    reader, writer = multiprocessing.Pipe(duplex=False)
    try:
        with conveyor.TaskGroup("process", start_method="fork") as group:
            task = group.spawn(_send_on, writer, "from a task")
        assert task.result() == "sent"
        assert reader.poll(bounded(5))
        assert reader.recv() == "from a task"
    finally:
        reader.close()
        writer.close()


def _nested_pool(method: str) -> list[int]:
    with conveyor.Pool(2, backend="process", start_method=method) as pool:
        return pool.map(abs, [-1, -2, -3])


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_a_fork_worker_still_starts_pools_of_its_own(method):
    """What multiprocessing needs in the child (its resource tracker) is kept. (Not forkserver: the
    stdlib's fork server object, copied into a fork child, waits for a server that is its parent's
    child, and fails with ChildProcessError whatever conveyor does.)"""
    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"no {method} start method here")
    with conveyor.Pool(1, backend="process", start_method="fork") as pool:
        assert pool.submit(_nested_pool, method).result(timeout=bounded(60)) == [1, 2, 3]


def test_fork_workers_outlive_the_thread_that_made_their_pool():
    """The first workers are forked by the thread calling ``Pool()``; a parent-death signal tied to
    that thread would kill them all when it ends."""
    made: list[conveyor.Pool] = []
    maker = threading.Thread(target=lambda: made.append(conveyor.Pool(2, backend="process", start_method="fork")))
    maker.start()
    maker.join()
    [pool] = made
    try:
        time.sleep(0.5)  # a signal would have landed by now
        assert pool.map(abs, range(-8, 0)) == list(range(8, 0, -1))
        stats = pool.statistics()
        assert (stats["workers_started"], stats.get("workers_crashed", 0)) == (2, 0), stats
    finally:
        pool.shutdown()
