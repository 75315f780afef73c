"""The async API where one backend behaves its own way: a cancelled call's running work is stopped on
processes (the worker is killed and replaced) and runs to its end on threads; ``async for`` over a
pipeline. What every backend must do is in conformance/test_async.py.
"""

from __future__ import annotations

import asyncio
import functools

import psutil
import pytest

import conveyor
import tasks
from conftest import bounded, wait_until

pytestmark = pytest.mark.timeout(90)


def _started_pids(path) -> list[int]:
    return [int(pid) for pid, _, text in tasks.lines_appended(path) if text == "started"]


def test_cancelling_arun_kills_the_process_that_runs_it_and_the_pool_goes_on(tmp_path):
    path = tmp_path / "lines"

    async def main():
        async with conveyor.Pool(2, backend="process") as pool:
            running = asyncio.ensure_future(pool.arun(tasks.append_line_then_sleep, str(path), 60))
            assert await asyncio.get_running_loop().run_in_executor(
                None, wait_until, lambda: _started_pids(path), 30)
            victim = _started_pids(path)[0]
            running.cancel()
            with pytest.raises(asyncio.CancelledError):
                await running
            gone = await asyncio.get_running_loop().run_in_executor(
                None, wait_until, lambda: not psutil.pid_exists(victim), 10)
            assert gone, f"worker {victim} still runs the cancelled call"
            assert await pool.arun(tasks.square, 5) == 25  # a replacement took its place
            stats = pool.statistics()
        return stats

    stats = asyncio.run(main())
    assert stats["cancelled"] == 1 and stats["in_flight"] == 0
    assert stats.backend_statistics.workers_started >= 3
    assert "woke" not in {text for *_, text in tasks.lines_appended(path)}


def test_cancelling_an_amap_mid_run_stops_its_running_processes(tmp_path):
    path = tmp_path / "lines"

    async def consume(pool):
        sleeper = functools.partial(tasks.append_line_then_sleep, seconds=60)
        async for _ in pool.amap(sleeper, [str(path)] * 50, chunksize=1):
            pass

    async def main():
        async with conveyor.Pool(2, backend="process") as pool:
            task = asyncio.ensure_future(consume(pool))
            assert await asyncio.get_running_loop().run_in_executor(
                None, wait_until, lambda: len(_started_pids(path)) >= 2, 30)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            victims = _started_pids(path)
            assert await asyncio.get_running_loop().run_in_executor(
                None, wait_until, lambda: not any(psutil.pid_exists(pid) for pid in victims), 10)
            assert await asyncio.get_running_loop().run_in_executor(
                None, wait_until, lambda: pool.statistics()["in_flight"] == 0, 10)
            return pool.statistics()

    stats = asyncio.run(main())
    assert stats["succeeded"] == 0
    assert stats["submitted"] <= 10  # a window of the 50 inputs, never all of them


def test_a_cancelled_call_on_threads_runs_to_its_end_and_its_result_is_dropped():
    async def main():
        async with conveyor.Pool(1, backend="thread") as pool:
            running = asyncio.ensure_future(pool.arun(tasks.sleep_then, "late", 0.5))
            await asyncio.sleep(0.1)
            running.cancel()
            with pytest.raises(asyncio.CancelledError):
                await running
            assert await pool.arun(tasks.square, 3) == 9  # waited for the thread to be free
            return pool.statistics()

    stats = asyncio.run(main())
    assert stats["in_flight"] == 0 and stats["submitted"] == 2


def test_async_for_over_a_pipeline_gives_its_output_without_blocking_the_loop():
    pipeline = conveyor.Pipeline(range(200)).map(tasks.square, backend="thread", workers=2).map(
        tasks.slow_identity, backend="process", workers=2)

    async def main():
        ticks = 0

        async def beat():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        heartbeat = asyncio.ensure_future(beat())
        results = [value async for value in pipeline]
        heartbeat.cancel()
        return results, ticks

    results, ticks = asyncio.run(main())
    assert results == [x * x for x in range(200)]
    assert ticks >= 10  # 200 × 20 ms over two workers: two seconds of loop time


def test_leaving_async_for_over_a_pipeline_stops_every_stage():
    pipeline = conveyor.Pipeline(range(1_000_000)).map(tasks.slow_identity, backend="process", workers=2)

    async def main():
        results = pipeline.__aiter__()
        taken = [await results.__anext__() for _ in range(3)]
        await results.aclose()
        return taken

    assert asyncio.run(main()) == [0, 1, 2]
    stats = pipeline.statistics()
    assert stats["stages"][0]["items_in"] < 10_000
    # the autouse leak check: no runner thread and no worker process is left


def test_a_pool_closed_under_an_async_call_raises_in_the_awaiting_task():
    async def main():
        pool = conveyor.Pool(1, backend="process")
        running = asyncio.ensure_future(pool.arun(tasks.sleep_then, "x", 30))
        await asyncio.sleep(0.2)
        await asyncio.get_running_loop().run_in_executor(None, pool.terminate)
        with pytest.raises(conveyor.TaskCancelledError):
            await asyncio.wait_for(running, bounded(10))

    asyncio.run(main())
