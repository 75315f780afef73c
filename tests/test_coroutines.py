"""Coroutine tasks where one backend behaves its own way: a process that dies while many coroutine
calls await in it (which of them killed it is not known, so each runs again alone and only the
culprit fails), a serial pool called from inside an event loop, and the thread backend's loops.
What every backend must do is in conformance/test_coroutines.py.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

import conveyor
import tasks

pytestmark = pytest.mark.timeout(90)


def test_a_process_dying_mid_batch_fails_only_the_input_that_killed_it():
    with conveyor.Pool(2, backend="process", concurrency=10) as pool:
        outputs = pool.imap(tasks.nap_then_crash, range(30), [7] * 30)
        seen = []
        for _ in range(30):
            try:
                seen.append(next(outputs))
            except conveyor.WorkerCrashedError as error:
                assert error.task_index == 7 and error.exitcode == 7
                seen.append("crashed")
        stats = pool.statistics()
    assert seen == [x if x != 7 else "crashed" for x in range(30)]
    assert stats["failed"] == 1 and stats["succeeded"] == 29
    assert stats.backend_statistics.workers_crashed >= 1


def test_a_serial_pool_called_inside_a_running_loop_runs_coroutine_tasks_beside_it():
    async def main():
        with conveyor.Pool(backend="serial") as pool:
            return pool.map(tasks.nap, range(20))  # blocks this loop, as any blocking call does

    assert asyncio.run(main()) == list(range(20))


def test_thread_workers_close_their_event_loops_when_they_end():
    before = threading.active_count()
    with conveyor.Pool(3, backend="thread", concurrency=5) as pool:
        assert pool.map(tasks.nap, range(60)) == list(range(60))
    assert threading.active_count() == before
    # the autouse leak check finds no file descriptor left (a loop's selector and self-pipe)


def test_a_pipeline_stage_may_be_a_coroutine_function():
    pipeline = (conveyor.Pipeline(range(100))
                .map(tasks.nap, backend="process", workers=2)
                .filter(tasks.nap_or_fail, backend="thread", errors="collect")  # 3 fails; 0 is dropped
                .map(tasks.square, backend="serial"))
    assert pipeline.run() == [x * x for x in range(1, 100) if x != 3]
    assert [failure.item for failure in pipeline.errors] == [3]
