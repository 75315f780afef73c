"""Lifetimes at their edges, on one engine each: recycling while shutting down, callbacks that call back
into the pool, big closures. Each test is a regression test for a hang, a lost task or a wrong count
found in review; the part every backend must pass is in conformance/test_lifecycle.py.
"""

from __future__ import annotations

import sys
import threading
import time

import pytest

import conveyor
import tasks
from conftest import bounded

pytestmark = pytest.mark.timeout(90)


def test_big_closure_and_big_result_do_not_deadlock_the_supervisor():
    payload = b"x" * (4 * 1024 * 1024)
    with conveyor.Pool(1, backend="process") as pool:
        first = pool.submit(tasks.identity, payload + b"1")   # a big result on its way back...
        second = pool.submit(lambda: len(payload))            # ...while a big closure is queued
        assert first.result(timeout=bounded(30)) == payload + b"1"
        assert second.result(timeout=bounded(30)) == len(payload)


@pytest.mark.parametrize("backend", ("process", "thread"))  # recycling: local backends (clusters refuse it)
def test_recycled_workers_are_replaced_while_a_graceful_shutdown_drains(backend):
    pool = conveyor.Pool(1, backend=backend, max_tasks_per_worker=1)
    futures = [pool.submit(tasks.sleep_then, i, 0.05) for i in range(3)]
    pool.shutdown(wait=True)
    assert [f.result(timeout=0) for f in futures] == [0, 1, 2]


def test_a_thread_timeout_during_a_graceful_shutdown_does_not_strand_work():
    pool = conveyor.Pool(1, backend="thread", task_timeout=0.2)
    slow = pool.submit(tasks.sleep_then, "slow", 1.0)
    quick = pool.submit(tasks.sleep_then, "quick", 0.0)
    pool.shutdown(wait=False)
    with pytest.raises(conveyor.TaskTimeoutError):
        slow.result(timeout=bounded(10))
    assert quick.result(timeout=bounded(10)) == "quick"


def test_done_callbacks_may_shut_the_pool_down():
    pool = conveyor.Pool(2, backend="thread")
    finished = threading.Event()
    futures = [pool.submit(tasks.fail_on, 3, 3) for _ in range(2)]
    for future in futures:
        future.add_done_callback(lambda f: (pool.shutdown(wait=True), finished.set()))
    assert finished.wait(bounded(10))
    pool.shutdown(wait=True)


def test_a_callback_raising_system_exit_does_not_stop_the_supervisor(caplog):
    with conveyor.Pool(1, backend="process") as pool:
        first = pool.submit(tasks.square, 2)
        first.add_done_callback(lambda f: sys.exit("callback exits"))
        second = pool.submit(tasks.square, 3)
        assert first.result(timeout=bounded(20)) == 4
        assert second.result(timeout=bounded(20)) == 9
        assert pool.map(tasks.square, [4]) == [16]
    assert any("raised" in record.getMessage() for record in caplog.records)


def test_retries_and_reruns_still_happen_during_a_graceful_shutdown(tmp_path):
    with conveyor.Pool(2, backend="process", retries=2) as pool:
        futures = [pool.submit(tasks.crash_once, i, str(tmp_path), "exit") for i in range(4)]
    assert [f.result(timeout=0) for f in futures] == [0, 1, 2, 3]


def test_thread_kill_counts_unstarted_inputs_as_cancelled():
    pool = conveyor.Pool(1, backend="thread")
    results = pool.starmap_async(tasks.sleep_then, [(i, 0.3) for i in range(10)], chunksize=10)
    time.sleep(0.1)
    pool.terminate()
    with pytest.raises(conveyor.TaskCancelledError):
        results.get(timeout=bounded(10))
    stats = pool.statistics()
    assert stats["failed"] == 0 and stats["in_flight"] == 0, stats
    assert stats["cancelled"] == 10 - stats["succeeded"], stats


def _wait_for_event(event):
    return event.wait(bounded(60))


def test_work_is_not_queued_behind_a_long_call_while_other_workers_are_idle():
    """Two long-running calls (consumer loops) hold two of four workers: a map must run on the other
    two, not wait in the pipes of the busy ones."""
    with conveyor.Pool(4, backend="process") as pool:
        release = pool.Event()
        long_calls = [pool.submit(_wait_for_event, release) for _ in range(2)]
        try:
            result = pool.map_async(abs, range(-400, 0), chunksize=10)
            assert result.get(timeout=bounded(20)) == list(range(400, 0, -1))
        finally:
            release.set()
        assert all(call.result(timeout=bounded(20)) for call in long_calls)
