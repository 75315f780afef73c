"""Coroutine tasks and the async API, against the standard library's ways of waiting on I/O, in one run.

Scenario: ``--tasks`` waits of ``--wait-ms`` each (default 1 000 × 10 ms), the shape of many small
network calls. Ideal with 2 × 100 in flight: 1000 / 200 × 10 ms = 50 ms.

Contenders (warm: pools made and used once before timing):

* ``asyncio.gather`` in one loop, with a semaphore of ``workers × concurrency``: the floor, no pool.
* conveyor ``Pool(workers, backend="process", concurrency=...)`` ``.map(async_nap, ...)``.
* conveyor ``Pool(workers, backend="thread", concurrency=...)`` ``.map(async_nap, ...)``.
* conveyor ``await pool.amap(...)`` on processes, from inside an event loop.
* ``ThreadPoolExecutor(64)`` ``.map(time.sleep-based nap, ...)``: the stdlib's usual answer.
* ``multiprocessing.Pool(workers)`` ``.map(...)`` of the blocking nap: what CPU pools give I/O work.

Run:  python benchmarks/bench_async.py [--quick] [--repeat N] [--tasks N] [--workers N]

Benchmarks report, they do not assert: the exit code is 0 whatever the numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import multiprocessing
import os
import sys
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
import _common as c  # noqa: E402

import conveyor  # noqa: E402

WAIT = 0.01


async def async_nap(x: int) -> int:
    await asyncio.sleep(WAIT)
    return x


def blocking_nap(x: int) -> int:
    time.sleep(WAIT)
    return x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="3 rounds")
    args = parser.parse_args()
    repeat = 3 if args.quick else args.repeat
    n, workers, concurrency = args.tasks, args.workers, args.concurrency
    expected = list(range(n))

    def gather() -> list[int]:
        async def run() -> list[int]:
            gate = asyncio.Semaphore(workers * concurrency)

            async def one(x: int) -> int:
                async with gate:
                    return await async_nap(x)

            return list(await asyncio.gather(*(one(x) for x in range(n))))

        return asyncio.run(run())

    process_pool = conveyor.Pool(workers, backend="process", concurrency=concurrency)
    thread_pool = conveyor.Pool(workers, backend="thread", concurrency=concurrency)
    executor = concurrent.futures.ThreadPoolExecutor(64)
    mp_pool = multiprocessing.get_context("forkserver").Pool(workers)

    def amap() -> list[int]:
        async def run() -> list[int]:
            return [value async for value in process_pool.amap(async_nap, range(n))]

        return asyncio.run(run())

    contenders = [
        c.Contender("asyncio.gather, one loop (floor)", gather, n),
        c.Contender("conveyor process, coroutines", lambda: process_pool.map(async_nap, range(n)), n,
                    warm=lambda: process_pool.map(async_nap, range(workers * concurrency))),
        c.Contender("conveyor thread, coroutines", lambda: thread_pool.map(async_nap, range(n)), n,
                    warm=lambda: thread_pool.map(async_nap, range(workers * concurrency))),
        c.Contender("conveyor process, async for amap", amap, n),
        c.Contender("ThreadPoolExecutor(64), time.sleep", lambda: list(executor.map(blocking_nap, range(n))), n,
                    warm=lambda: list(executor.map(blocking_nap, range(64)))),
        c.Contender(f"multiprocessing.Pool({workers}), time.sleep", lambda: mp_pool.map(blocking_nap, range(n)), n,
                    warm=lambda: mp_pool.map(blocking_nap, range(workers))),
    ]
    for contender in contenders:
        contender.check = lambda result: list(result) == expected
    try:
        timings = c.run_round_robin(contenders, repeat, label="async")
    finally:
        process_pool.shutdown()
        thread_pool.shutdown()
        executor.shutdown()
        mp_pool.terminate()
        mp_pool.join()
    floor = timings[0].median
    ideal = n / (workers * concurrency) * WAIT
    rows = []
    for timing in timings:
        if not timing.ok:
            rows.append([timing.contender.name, "-", "-", "-", timing.status])
            continue
        rows.append([timing.contender.name, c.fmt_seconds(timing.median), c.fmt_seconds(timing.best),
                     c.fmt_ratio(timing.median / floor), ""])
    table = c.Table(f"{n} waits of {WAIT * 1000:.0f} ms, {workers} workers x {concurrency} in flight "
                    f"(ideal {ideal * 1000:.0f} ms), median of {repeat}",
                    ["contender", "median", "best", "vs floor", "note"], rows,
                    notes=["vs floor: median time / asyncio.gather's (one loop, no pool, no processes)"])
    c.print_table(table)
    print(c.format_info(c.machine_info()))


if __name__ == "__main__":
    main()
