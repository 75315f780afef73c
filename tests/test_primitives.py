"""The process primitives under every start method, and their faults (a holder dying, a barrier party
killed, primitives made while workers fork). Every backend's primitives: conformance/test_primitives.py.
"""

from __future__ import annotations

import os
import threading
import time

import pytest

import conveyor
from conftest import START_METHODS, bounded

pytestmark = pytest.mark.timeout(60)


def _hold_and_die(lock):
    lock.acquire()
    os._exit(3)


def _locked_increment(args):
    lock, path, times = args
    for _ in range(times):
        with lock:
            value = int(path.read_text())
            path.write_text(str(value + 1))


def _wait_for(event):
    return event.wait(bounded(10))


def _take(sem):
    return sem.acquire(timeout=bounded(10))


@pytest.mark.parametrize("method", START_METHODS)
def test_process_lock_serializes_tasks_of_a_running_pool(method, tmp_path):
    path = tmp_path / "counter"
    path.write_text("0")
    with conveyor.Pool(2, backend="process", start_method=method) as pool:
        lock = pool.Lock()
        pool.map(_locked_increment, [(lock, path, 50)] * 6, chunksize=1)
    assert path.read_text() == "300"


@pytest.mark.parametrize("method", START_METHODS)
def test_process_lock_whose_holder_died_is_reported_then_free(method):
    with conveyor.Pool(1, backend="process", start_method=method) as pool:
        lock = pool.Lock()
        with pytest.raises(conveyor.WorkerCrashedError):
            pool.submit(_hold_and_die, lock).result(timeout=bounded(20))
        started = time.monotonic()
        with pytest.raises(conveyor.OwnerDiedError, match="died while holding"):
            lock.acquire(timeout=bounded(5))
        assert time.monotonic() - started < bounded(1.0)
        assert lock.acquire(timeout=bounded(5))
        lock.release()


@pytest.mark.parametrize("method", START_METHODS)
def test_process_event_and_semaphore_reach_workers(method):
    with conveyor.Pool(2, backend="process", start_method=method) as pool:
        event, sem = pool.Event(), pool.BoundedSemaphore(1)
        sem.acquire()
        waiting = pool.submit(_wait_for, event)
        taking = pool.submit(_take, sem)
        time.sleep(0.2)
        assert not waiting.done() and not taking.done()
        event.set()
        sem.release()
        assert waiting.result(timeout=bounded(10)) is True
        assert taking.result(timeout=bounded(10)) is True


def _make_lock_in_worker(_):
    lock = conveyor.context("process").Lock()
    _make_lock_in_worker.keep = lock  # alive until the worker exits
    return lock._segment.name


def test_primitives_made_inside_workers_are_removed_when_the_worker_exits():
    with conveyor.Pool(1, backend="process") as pool:
        name = pool.submit(_make_lock_in_worker, 0).result(timeout=bounded(20))
        assert os.path.exists(f"/dev/shm/{name}")
    assert not os.path.exists(f"/dev/shm/{name}")


def test_a_barrier_party_killed_while_waiting_breaks_the_barrier():
    with conveyor.Pool(1, backend="process") as pool:
        barrier = pool.Barrier(3)
        worker = pool.statistics()
        waiting = pool.submit(barrier.wait)
        time.sleep(0.3)
        pids = pool.statistics()["worker_pids"]
        assert waiting.running() and pids, worker
        os.kill(pids[0], 9)
        started = time.monotonic()
        with pytest.raises(threading.BrokenBarrierError):
            barrier.wait(timeout=bounded(10))
        assert time.monotonic() - started < bounded(2.0)
        with pytest.raises(conveyor.WorkerCrashedError):
            waiting.result(timeout=bounded(10))


def test_primitives_made_while_fork_workers_start_do_not_hang_them(tmp_path):
    """Under fork, a worker forked while another thread held a lock inherits it held: creating
    primitives concurrently with worker start-up must not leave workers stuck."""
    path = tmp_path / "counter"
    for _ in range(5):
        path.write_text("0")
        with conveyor.Pool(2, backend="process", start_method="fork") as pool:
            lock = pool.Lock()
            pool.map(_locked_increment, [(lock, path, 5)] * 4, chunksize=1, timeout=bounded(20))
        assert path.read_text() == "20"
