"""A three-stage pipeline: conveyor against the same pipeline written by hand with
``multiprocessing.Queue`` + ``threading``, and against pypeln when it is installed.

    source ─► download: 10 ms sleep (16 threads) ─► parse: ~2 ms CPU (2 processes) ─► light sink

The ideal wall time is set by the slowest stage: ``items × 2 ms / 2 workers`` for the CPU stage on two
cores (``items × 10 ms / 16`` for the sleeping one). Prints a table of wall times, the ratio to that
ideal, and each contender's time relative to conveyor.

    python benchmarks/bench_pipeline.py [--items N] [--repeat R]
"""

from __future__ import annotations

import argparse
import multiprocessing
import queue
import statistics
import sys
import threading
import time
from typing import Any, Callable

import conveyor

SLEEP_SECONDS = 0.010
CPU_SECONDS = 0.002
THREADS = 16
PROCESSES = 2


def calibrate() -> tuple[int, float]:
    """Rounds of the CPU loop that take about CPU_SECONDS here, and what one call then really takes
    (the best of several timings, after a warm-up, so that the ideal is not set by a noisy one)."""
    _spin(200_000)  # warm-up: the CPU clock and the interpreter's caches
    best = min(_timed(100_000) for _ in range(5))
    rounds = max(1, int(100_000 * CPU_SECONDS / best))
    per_call = min(_timed(rounds) for _ in range(20))
    return rounds, per_call


def _timed(rounds: int) -> float:
    started = time.perf_counter()
    _spin(rounds)
    return time.perf_counter() - started


def _spin(rounds: int) -> int:
    total = 0
    for i in range(rounds):
        total += i * i
    return total


def download(item: int) -> int:
    time.sleep(SLEEP_SECONDS)
    return item


def parse(args: tuple[int, int]) -> int:
    item, rounds = args
    _spin(rounds)
    return item


def with_conveyor(items: int, rounds: int) -> list[int]:
    pipe = (conveyor.Pipeline(range(items))
            .map(download, workers=THREADS, backend="thread")
            .map(lambda item: parse((item, rounds)), workers=PROCESSES, backend="process"))
    return pipe.run()                       # the light sink: collecting in the caller


def with_pypeln(items: int, rounds: int) -> list[int]:
    import pypeln as pl  # type: ignore[import-not-found]

    stage = pl.thread.map(download, range(items), workers=THREADS, maxsize=64)
    stage = pl.process.map(parse, ((item, rounds) for item in stage), workers=PROCESSES, maxsize=64)
    return list(stage)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    rounds, per_call = calibrate()
    ideal = max(args.items * per_call / PROCESSES, args.items * SLEEP_SECONDS / THREADS)
    contenders: list[tuple[str, Callable[[int, int], list[int]]]] = [
        ("conveyor Pipeline", with_conveyor),
        ("multiprocessing.Queue + threading, by hand", by_hand),
    ]
    try:
        import pypeln  # type: ignore[import-not-found]  # noqa: F401

        contenders.append(("pypeln", with_pypeln))
    except ImportError:
        print("pypeln: not installed (pip install pypeln)")
    print(f"# {args.items} items: {SLEEP_SECONDS * 1000:.0f} ms sleep × {THREADS} threads → "
          f"{per_call * 1000:.2f} ms CPU × {PROCESSES} processes → sink; ideal {ideal:.2f} s; "
          f"median of {args.repeat}, Python {sys.version.split()[0]}\n")
    print("| contender | seconds | × ideal | × conveyor |")
    print("|---|---|---|---|")
    reference = None
    for name, run in contenders:
        times = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            out = run(args.items, rounds)
            times.append(time.perf_counter() - started)
            if sorted(out) != list(range(args.items)):
                raise SystemExit(f"{name} lost or duplicated items")
        seconds = statistics.median(times)
        reference = reference or seconds
        print(f"| {name} | {seconds:.2f} | {seconds / ideal:.2f} | {seconds / reference:.2f} |")
    return 0


def by_hand(items: int, rounds: int) -> list[int]:
    """What people write: threads feeding processes through multiprocessing queues, ended by
    sentinels (one per parser once the downloads are done), with no answer to a worker dying."""
    ctx = multiprocessing.get_context("fork")
    todo: queue.Queue = queue.Queue()
    downloaded, parsed = ctx.Queue(1000), ctx.Queue(1000)

    def downloader() -> None:
        while (item := todo.get()) is not None:
            downloaded.put(download(item))

    threads = [threading.Thread(target=downloader) for _ in range(THREADS)]
    parsers = [ctx.Process(target=_parse_until_none, args=(downloaded, parsed, rounds)) for _ in range(PROCESSES)]
    for worker in (*threads, *parsers):
        worker.start()
    for item in range(items):
        todo.put(item)
    for _ in threads:
        todo.put(None)
    out: list[int] = []
    finished = 0
    for thread in threads:
        thread.join()
    for _ in parsers:
        downloaded.put(None)
    while finished < PROCESSES:
        item = parsed.get()
        if item is None:
            finished += 1
        else:
            out.append(item)
    for parser_process in parsers:
        parser_process.join()
    return out


def _parse_until_none(inbox: Any, outbox: Any, rounds: int) -> None:
    while (item := inbox.get()) is not None:
        outbox.put(parse((item, rounds)))
    outbox.put(None)


if __name__ == "__main__":
    raise SystemExit(main())
