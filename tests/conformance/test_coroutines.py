"""Coroutine functions as tasks on each chosen backend: ``pool.map(async_fn, items)`` runs each
worker's calls at once on an event loop of its own, up to ``concurrency``; a failure, a timeout and
``submit`` behave as for plain functions. A worker that dies mid-batch is in tests/test_coroutines.py.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

import conveyor
import tasks

pytestmark = pytest.mark.timeout(90)


def test_map_of_a_coroutine_function_gives_its_results_in_order(backend):
    with conveyor.Pool(2, backend=backend) as pool:
        assert pool.map(tasks.nap, range(300)) == list(range(300))
        assert sorted(pool.imap_unordered(tasks.nap, range(50))) == list(range(50))
        assert pool.starmap(tasks.nap, [(x, 0.001) for x in range(20)]) == list(range(20))
        assert pool.submit(tasks.nap, "one").result() == "one"


def test_each_worker_runs_up_to_concurrency_calls_at_once_and_no_more(backend):
    key = uuid.uuid4().hex
    with conveyor.Pool(1, backend=backend, concurrency=8) as pool:
        peaks = pool.map(tasks.nap_concurrently, range(40), [key] * 40)
    assert max(peaks) == 8  # eight awaited together, never more


def test_a_failing_coroutine_fails_its_own_input_only(backend):
    with conveyor.Pool(2, backend=backend) as pool:
        with pytest.raises(ValueError, match="bad input 3"):
            pool.map(tasks.nap_or_fail, range(10))
        outputs = pool.imap(tasks.nap_or_fail, range(6))
        seen = []
        for _ in range(6):
            try:
                seen.append(next(outputs))
            except ValueError:
                seen.append("failed")
    assert seen == [0, 1, 2, "failed", 4, 5]


def test_a_coroutine_over_its_task_timeout_is_cancelled_and_fails_alone(backend):
    with conveyor.Pool(1, backend=backend, task_timeout=0.5) as pool:
        outputs = pool.istarmap(tasks.nap, [(0, 0.01), (1, 30), (2, 0.01)])
        seen = []
        for _ in range(3):
            try:
                seen.append(next(outputs))
            except conveyor.TaskTimeoutError as error:
                assert "task_timeout of 0.5s" in str(error) and "cancelled" in str(error)
                seen.append("timed out")
        stats = pool.statistics()
    assert seen == [0, "timed out", 2]  # long before the 30 s nap could have ended (the test's limit)
    assert stats["in_flight"] == 0 and stats["failed"] == 1


def test_a_failed_coroutine_is_retried_as_a_plain_function_would_be(backend, tmp_path):
    with conveyor.Pool(2, backend=backend, retries=1) as pool:
        assert pool.map(tasks.nap_fail_once, range(6), [str(tmp_path)] * 6) == list(range(6))
        stats = pool.statistics()
    assert stats["retried"] == 6 and stats["failed"] == 0


def test_an_async_caller_awaits_coroutine_tasks_through_amap(backend):
    async def main():
        async with conveyor.Pool(2, backend=backend, concurrency=50) as pool:
            return [value async for value in pool.amap(tasks.nap, range(200))]

    assert asyncio.run(main()) == list(range(200))
