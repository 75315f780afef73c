"""Per-task overhead of the cluster backends: ``map`` of many tiny tasks on a local 2-worker cluster,
against the process backend and against one engine task per item.

    python benchmarks/bench_clusters.py [--items N] [--repeat R] [--per-item-sample M]

Prints a table: seconds for the map, the ratio to the process backend (target: within 5×), and the
speedup over submitting one engine task per item (target: at least 50×; that time is extrapolated from
``--per-item-sample`` items, since 100 000 engine tasks take minutes).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

import conveyor


def square(x: int) -> int:
    return x * x


def _best_map(pool: conveyor.Pool, items: int, repeat: int) -> float:
    pool.map(square, range(1000))  # workers up, function shipped
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        pool.map(square, range(items))
        times.append(time.perf_counter() - started)
    return min(times)


def _per_engine_task(pool: conveyor.Pool, engine: str, sample: int) -> float:
    """Seconds per item when every item is its own engine task."""
    if engine == "dask":
        client = pool._backend._client
        started = time.perf_counter()
        client.gather(client.map(square, range(sample), pure=False))
        return (time.perf_counter() - started) / sample
    if engine == "ray":
        import ray

        remote = ray.remote(square).options(max_retries=0)
        ray.get([remote.remote(x) for x in range(100)])  # the function exported, workers warm
        started = time.perf_counter()
        ray.get([remote.remote(x) for x in range(sample)])
        return (time.perf_counter() - started) / sample
    raise ValueError(engine)


def main(argv: list[str] | None = None) -> int:
    # A local Ray binds to the machine's network address unless told it is no cluster node: keep it
    # on the loopback address (nothing here needs another machine).
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--per-item-sample", type=int, default=3000)
    args = parser.parse_args(argv)
    print(f"# map(square) over {args.items} ints, 2 workers, best of {args.repeat}, Python {sys.version.split()[0]}\n")
    print("| backend | seconds | × process backend | one engine task per item (extrapolated) | speedup |")
    print("|---|---|---|---|---|")
    with conveyor.Pool(2, backend="process") as pool:
        reference = _best_map(pool, args.items, args.repeat)
    print(f"| process | {reference:.3f} | 1.00 | | |")
    for engine in ("dask", "ray"):
        try:
            pool: Any = conveyor.Pool(2, backend=engine)
        except conveyor.BackendUnavailableError as exc:
            print(f"| {engine} | not installed ({exc}) | | | |")
            continue
        with pool:
            seconds = _best_map(pool, args.items, args.repeat)
            per_item = _per_engine_task(pool, engine, args.per_item_sample) * args.items
        print(f"| {engine} | {seconds:.3f} | {seconds / reference:.2f} | {per_item:.1f} s | {per_item / seconds:,.0f}× |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
