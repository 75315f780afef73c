"""Large data: conveyor's shared-memory transport against the stdlib pools and joblib, in one run.

Scenarios (all pools with ``--workers`` workers, default 2, created and warmed before timing):

1. send: a ``--mb`` MB (default 100) float64 array to a worker that returns its sum, as one task.
   Reference row: a plain ``numpy`` copy of the same array (the physical cost of moving it once).
2. receive: a worker returns a ``--mb`` MB array it holds (so the task itself costs nothing);
   also "received and summed in the caller", against "copy + sum".
3. shared object: a 1 000-task map where every task reads a shared object of ``--shared-mb`` MB
   (default 500) through ``conveyor.worker_state().shared``, and the same with a 5 MB object: the
   per-task cost must not depend on the object's size.

Ratios are to the plain copy (1, 2) or to the 5 MB object (3), all measured in this run.
joblib is optional (``pip install joblib``); its rows say "not installed" otherwise.

Run:  python benchmarks/bench_data.py [--quick] [--repeat N] [--mb N] [--shared-mb N] [--workers N]

Benchmarks report, they do not assert: the exit code is 0 whatever the numbers.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import os
import sys
import time
from typing import Any

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
import _common as c  # noqa: E402

import numpy as np  # noqa: E402

import conveyor  # noqa: E402

_HELD: dict[int, Any] = {}


# -- the work (module level, so every start method can import it) ---------------------------------
def total(a: Any) -> float:
    return float(a.sum())


def held(n: int) -> Any:
    """An array of n float64 this worker made once (so returning it costs only the transport)."""
    if n not in _HELD:
        _HELD[n] = np.ones(n)
    return _HELD[n]


def read_shared(i: int) -> float:
    table = conveyor.worker_state().shared
    return float(table[i % table.shape[0], 0])


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--shared-mb", type=int, default=500)
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)
    if args.repeat is None:
        args.repeat = 3 if args.quick else 7
    return args


def ratio_table(title: str, timings: list[c.Timing], reference: float, notes: list[str]) -> c.Table:
    """Ratios to ``reference``: the fastest plain copy of the run (a fresh 100 MB allocation is
    noisy: transparent huge pages make it 10 ms or, when memory must be compacted first, 200 ms)."""
    rows, data = [], []
    for timing in timings:
        if not timing.ok:
            rows.append([timing.contender.name, "-", "-", "-", "-", timing.status])
            continue
        rows.append([timing.contender.name, c.fmt_seconds(timing.median), c.fmt_seconds(timing.best),
                     c.fmt_ratio(timing.best / reference), c.fmt_ratio(timing.median / reference),
                     timing.contender.note])
        data.append({"name": timing.contender.name, "median_s": timing.median, "min_s": timing.best,
                     "min_ratio": timing.best / reference, "median_ratio": timing.median / reference})
    return c.Table(title, ["contender", "median s", "min s", "min x copy", "median x copy", "note"], rows, notes,
                   data)


def copy_reference(a: Any, rounds: int = 15) -> float:
    """The fastest of several plain copies in a row."""
    best = float("inf")
    for _ in range(rounds):
        seconds, _ = c.time_once(a.copy)
        best = min(best, seconds)
    return best


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    info = c.machine_info(("conveyor", "numpy", "joblib"))
    print(f"bench_data: workers={args.workers} repeat={args.repeat} array={args.mb} MB "
          f"shared={args.shared_mb} MB tasks={args.tasks}")
    print(c.format_info(info))
    n = args.mb * 2**20 // 8
    a = np.random.default_rng(0).random(n)
    expected = float(a.sum())
    close = lambda x: abs(x - expected) <= 1e-6 * abs(expected)  # noqa: E731
    try:
        import joblib
    except ImportError:
        joblib = None

    conveyor_pool = conveyor.Pool(args.workers, backend="process")
    mp_pool = multiprocessing.get_context("forkserver").Pool(args.workers)
    ppe = concurrent.futures.ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("forkserver"))
    parallel = joblib.Parallel(n_jobs=args.workers) if joblib is not None else None
    tables = []
    try:
        for warm in (lambda: conveyor_pool.map(nap, [0.05] * 4), lambda: mp_pool.map(nap, [0.05] * 4),
                     lambda: list(ppe.map(nap, [0.05] * 4))):
            warm()

        # -- 1. send ---------------------------------------------------------------------------
        joblib_skip = None if joblib is not None else "not installed (pip install joblib)"
        send = [
            c.Contender("numpy copy (reference)", lambda: a.copy()),
            c.Contender("conveyor process", lambda: conveyor_pool.submit(total, a).result(), check=close,
                        warm=lambda: conveyor_pool.map(total, [a] * args.workers),
                        note="shared memory, copy semantics"),
            c.Contender("multiprocessing.Pool", lambda: mp_pool.apply(total, (a,)), check=close,
                        note="pickled through a pipe"),
            c.Contender("ProcessPoolExecutor", lambda: ppe.submit(total, a).result(), check=close,
                        note="pickled through a pipe"),
            c.Contender("joblib (auto memmap)",
                        (lambda: parallel([joblib.delayed(total)(a)])[0]) if joblib else None, check=close,
                        skip=joblib_skip, warm=(lambda: parallel([joblib.delayed(total)(a)])) if joblib else None,
                        note="dumps the array to a file each call"),
        ]
        timings = c.run_round_robin(send, args.repeat, label="send")
        reference = min(copy_reference(a), timings[0].best)
        tables.append(ratio_table(f"1. send a {args.mb} MB float64 array to a worker that returns its sum "
                                  f"({args.workers} workers)", timings, reference,
                                  [f"x copy = seconds / the fastest plain numpy copy of the run ({reference * 1000:.1f} ms); a fresh "
                                   "100 MB allocation varies 10x here (huge pages, compaction), see its median.",
                                   "The task's own sum is inside every row but the reference."]))
        c.print_table(tables[-1])

        # -- 2. receive ------------------------------------------------------------------------
        sized = lambda r: getattr(r, "shape", None) == (n,)  # noqa: E731
        receive = [
            c.Contender("numpy copy (reference)", lambda: a.copy()),
            c.Contender("conveyor process", lambda: conveyor_pool.submit(held, n).result(), check=sized,
                        warm=lambda: conveyor_pool.map(held, [n] * (2 * args.workers)),
                        note="mapped from the worker's segment, no copy in the caller"),
            c.Contender("multiprocessing.Pool", lambda: mp_pool.apply(held, (n,)), check=sized,
                        warm=lambda: mp_pool.map(held, [n] * (2 * args.workers))),
            c.Contender("ProcessPoolExecutor", lambda: ppe.submit(held, n).result(), check=sized,
                        warm=lambda: list(ppe.map(held, [n] * (2 * args.workers)))),
            c.Contender("numpy copy + sum (reference)", lambda: a.copy().sum()),
            c.Contender("conveyor process, then summed", lambda: conveyor_pool.submit(held, n).result().sum(),
                        note="includes mapping every page in the caller"),
            c.Contender("multiprocessing.Pool, then summed", lambda: mp_pool.apply(held, (n,)).sum()),
        ]
        timings = c.run_round_robin(receive, args.repeat, label="receive")
        reference = min(reference, copy_reference(a), timings[0].best)
        tables.append(ratio_table(f"2. receive a {args.mb} MB float64 array from a worker", timings,
                                  reference,
                                  ["The worker holds the array already: only its way back is timed.",
                                   "The 'then summed' rows compare best with 'numpy copy + sum' "
                                   f"(min {c.fmt_seconds(timings[4].best)} s)."]))
        c.print_table(tables[-1])
    finally:
        conveyor_pool.shutdown()
        mp_pool.terminate()
        mp_pool.join()
        ppe.shutdown()

    # -- 3. a shared object read by 1 000 tasks ---------------------------------------------------
    rows, data = [], []
    per_task: dict[int, float] = {}
    for mb in (5, args.shared_mb):
        table = np.ones((1000, mb * 2**20 // 8 // 1000))
        begin = time.perf_counter()
        handle = conveyor.shared(table)
        placed = time.perf_counter() - begin
        del table
        with conveyor.Pool(args.workers, shared=handle) as pool:
            begin = time.perf_counter()
            pool.map(read_shared, range(2 * args.workers))
            started = time.perf_counter() - begin
            for _ in range(2):  # every worker touches its pages once: the steady state is timed
                pool.map(read_shared, range(args.tasks))
            runs = []
            for _ in range(args.repeat):
                begin = time.perf_counter()
                pool.map(read_shared, range(args.tasks))
                runs.append(time.perf_counter() - begin)
        handle.close()
        median = sorted(runs)[len(runs) // 2]
        per_task[mb] = min(runs) / args.tasks
        rows.append([f"{mb} MB shared object", c.fmt_seconds(placed), c.fmt_seconds(started),
                     c.fmt_seconds(median), f"{per_task[mb] * 1e6:.1f}",
                     c.fmt_ratio(per_task[mb] / per_task[5])])
        data.append({"mb": mb, "place_s": placed, "first_map_s": started, "map_s": median,
                     "per_task_us": per_task[mb] * 1e6})
    tables.append(c.Table(
        f"3. {args.tasks}-task map, each task reading the pool's shared object (Pool(shared=...))",
        ["object", "place s", "first map s", "map median s", "per task us (min)", "x 5 MB"], rows,
        ["place = conveyor.shared(obj): one copy into shared memory. first map = workers start and map "
         "the object once each (no copy).",
         "per task us = fastest map / tasks, after two untimed maps: the same whatever the object's size."],
        data))
    c.print_table(tables[-1])
    if not args.no_save:
        for path in c.save_results("bench_data", info, tables):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
