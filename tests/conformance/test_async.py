"""The async API on each chosen backend: ``await pool.arun(...)``, ``async for`` over ``pool.amap(...)``
and ``pool.amap_unordered(...)``, ``async with``; the event loop keeps running meanwhile, and a
cancelled task cancels its call. Each test runs its own loop (``asyncio.run``) under the suite's
timeout. Process-specific stopping of running work is in tests/test_async.py.
"""

from __future__ import annotations

import asyncio
import time

import pytest

import conveyor
import tasks
from conftest import bounded, wait_until

pytestmark = pytest.mark.timeout(90)


class Heartbeat:
    """A coroutine that ticks every 10 ms while the code under test awaits: the longest gap between
    two ticks tells whether anything blocked the loop."""

    def __init__(self) -> None:
        self.ticks = 0
        self.longest_gap = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _beat(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            self.longest_gap = max(self.longest_gap, now - last)
            self.ticks += 1
            last = now

    def __enter__(self) -> Heartbeat:
        self._task = asyncio.get_running_loop().create_task(self._beat())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


async def _numbers(count: int):
    for value in range(count):
        if value % 10 == 0:
            await asyncio.sleep(0)
        yield value


def test_arun_returns_the_result_and_raises_the_task_s_error(backend):
    async def main():
        with conveyor.Pool(2, backend=backend) as pool:
            assert await pool.arun(tasks.add, 2, b=3) == 5
            with pytest.raises(tasks.CustomError):
                await pool.arun(tasks.raise_custom, 1)
            results = await asyncio.gather(*(pool.arun(tasks.square, x) for x in range(20)))
            assert results == [x * x for x in range(20)]

    asyncio.run(main())


def test_amap_yields_in_order_and_amap_unordered_yields_every_result(backend):
    async def main():
        with conveyor.Pool(2, backend=backend) as pool:
            ordered = [value async for value in pool.amap(tasks.square, range(500))]
            assert ordered == [x * x for x in range(500)]
            unordered = [value async for value in pool.amap_unordered(tasks.square, range(500))]
            assert sorted(unordered) == ordered

    asyncio.run(main())


def test_amap_takes_an_async_iterable(backend):
    async def main():
        with conveyor.Pool(2, backend=backend) as pool:
            return [value async for value in pool.amap(tasks.square, _numbers(300))]

    assert asyncio.run(main()) == [x * x for x in range(300)]


def test_a_failed_item_raises_at_its_position_and_iteration_goes_on(backend):
    async def main():
        with conveyor.Pool(2, backend=backend) as pool:
            results = pool.amap(tasks.fail_on, range(6), chunksize=1)
            seen = []
            while True:
                try:
                    seen.append(await results.__anext__())
                except ValueError as error:
                    seen.append(f"failed: {error}")
                except StopAsyncIteration:
                    return seen

    seen = asyncio.run(main())
    assert seen[:3] == [0, 1, 2] and seen[4:] == [4, 5]
    assert seen[3].startswith("failed:")


def test_the_loop_keeps_running_during_arun_and_amap(backend):
    async def main():
        with conveyor.Pool(2, backend=backend) as pool:
            with Heartbeat() as during_arun:
                assert await pool.arun(tasks.sleep_then, "done", 1.0) == "done"
            total = 0
            with Heartbeat() as during_amap:
                async for value in pool.amap(tasks.square, range(10_000)):
                    total += value
            assert total == sum(x * x for x in range(10_000))
        return during_arun, during_amap

    during_arun, during_amap = asyncio.run(main())
    # Blocked, the loop would miss every tick of the call (1 s, or the whole map).
    assert during_arun.ticks >= 20, during_arun.ticks
    assert during_arun.longest_gap < bounded(0.25), during_arun.longest_gap
    assert during_amap.ticks >= 1
    assert during_amap.longest_gap < bounded(0.25), during_amap.longest_gap


def test_async_with_shuts_the_pool_down_and_refuses_work_after(backend):
    async def main():
        async with conveyor.Pool(2, backend=backend) as pool:
            assert await pool.arun(tasks.square, 4) == 16
        return pool

    pool = asyncio.run(main())
    with pytest.raises(conveyor.PoolClosedError):
        pool.submit(tasks.square, 1)
    # the autouse leak check: no worker thread or process is left


def test_leaving_an_amap_early_drops_the_inputs_not_started(backend):
    async def main():
        async with conveyor.Pool(2, backend=backend) as pool:
            results = pool.amap(tasks.slow_identity, (x for x in range(100_000)), chunksize=1)
            taken = []
            async for value in results:
                taken.append(value)
                if len(taken) == 5:
                    break
            await results.aclose()
            assert wait_until(lambda: pool.statistics()["in_flight"] == 0, 10)
            return taken, pool.statistics()

    taken, stats = asyncio.run(main())
    assert taken == [0, 1, 2, 3, 4]
    assert stats["submitted"] < 1_000  # bounded like imap: only a window of inputs was ever pulled


def test_cancelling_the_awaiting_task_cancels_the_work_not_started(backend):
    async def main():
        async with conveyor.Pool(1, backend=backend) as pool:
            first = asyncio.ensure_future(pool.arun(tasks.sleep_then, "first", 0.3))
            queued = [asyncio.ensure_future(pool.arun(tasks.sleep_then, i, 0.3)) for i in range(5)]
            await asyncio.sleep(0.05)
            for task in queued:
                task.cancel()
            await asyncio.gather(*queued, return_exceptions=True)
            assert await first == "first"
            assert wait_until(lambda: pool.statistics()["in_flight"] == 0, 10)
            return pool.statistics()

    stats = asyncio.run(main())
    assert stats["succeeded"] >= 1
    assert stats["succeeded"] + stats["cancelled"] + stats["failed"] == stats["submitted"]
    assert stats["succeeded"] < 6  # the queued calls did not all run
