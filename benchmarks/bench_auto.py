"""``backend="auto"`` against each fixed backend, in one run: does measuring pick the best one?

Three scenarios, each a one-shot call (the pool is made, maps, and shuts down: ``conveyor.map``'s
shape, and what ``auto`` must get right, probe included), with ``--workers`` workers (default 2):

1. CPU: ``--cpu-tasks`` calls (default 100) of pure-Python CPU, about 10 ms each.
2. waiting: ``--io-tasks`` calls (default 1 000) of ``time.sleep(0.01)``; ``thread`` is given 64
   threads (the usual I/O pool), ``auto`` chooses its own count.
3. tiny: ``abs`` over ``--tiny-items`` integers (default 100 000).

Every contender runs ``--repeat`` times, interleaved; the table gives medians, the ratio to the best
fixed backend of the scenario (target for auto: 1.1x or better), and what auto chose.

Run:  python benchmarks/bench_auto.py [--quick] [--repeat N]

Benchmarks report, they do not assert: the exit code is 0 whatever the numbers.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
import _common as c  # noqa: E402

import conveyor  # noqa: E402
from bench_pool import burn  # noqa: E402 - the same pure-Python CPU work


def nap(x: int) -> int:
    time.sleep(0.01)
    return x


def one_shot(fn, items, backend, workers, chosen=None):
    """Make a pool, map, shut down (what ``conveyor.map`` does); record auto's choice."""
    with conveyor.Pool(workers, backend=backend) as pool:
        result = pool.map(fn, items)
        if chosen is not None:
            decisions = pool.statistics().backend_statistics.decisions
            chosen.append(decisions[-1][1] if decisions else "?")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cpu-tasks", type=int, default=100)
    parser.add_argument("--io-tasks", type=int, default=1000)
    parser.add_argument("--tiny-items", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="3 rounds")
    args = parser.parse_args()
    repeat = 3 if args.quick else args.repeat
    workers = args.workers
    n_burn, _ = c.calibrate(burn, 0.01)

    cpu_items = [n_burn] * args.cpu_tasks
    io_items = list(range(args.io_tasks))
    tiny_items = list(range(-args.tiny_items // 2, args.tiny_items // 2))
    scenarios = [
        ("CPU: pure Python, ~10 ms a call", burn, cpu_items, {"thread": workers}),
        ("waiting: time.sleep(0.01)", nap, io_items, {"thread": 64}),
        ("tiny: abs", abs, tiny_items, {"thread": workers}),
    ]
    rows = []
    for title, fn, items, sizes in scenarios:
        expected = [fn(x) for x in items[:50]]
        chosen: list[str] = []
        contenders = []
        for backend in ("serial", "thread", "process"):
            size = sizes.get(backend, workers)
            contenders.append(c.Contender(f"{backend} x{size if backend != 'serial' else 1}",
                                          lambda fn=fn, items=items, backend=backend, size=size:
                                          one_shot(fn, items, backend, size), len(items)))
        contenders.append(c.Contender("auto", lambda fn=fn, items=items: one_shot(fn, items, "auto", None, chosen),
                                      len(items)))
        for contender in contenders:
            contender.check = lambda result, expected=expected: list(result[:50]) == expected
        timings = c.run_round_robin(contenders, repeat, label=title)
        best = min(t.median for t in timings[:3] if t.ok)
        for timing in timings:
            note = ""
            if timing.contender.name == "auto":
                note = "chose " + ", ".join(sorted(set(chosen)))
            rows.append([title, timing.contender.name, c.fmt_seconds(timing.median),
                         c.fmt_ratio(timing.median / best) if timing.ok else "-", note or timing.status])
        rows.append([])
    table = c.Table(f"auto against fixed backends, one-shot calls, {workers} workers, median of {repeat}",
                    ["scenario", "backend", "median", "vs best fixed", "note"], rows[:-1],
                    notes=["vs best fixed: median / the fastest of serial, thread, process in that scenario"],
                    align="llrrl")
    c.print_table(table)
    print(c.format_info(c.machine_info()))


if __name__ == "__main__":
    main()
