"""Cross-process queue throughput: conveyor's process Queue against multiprocessing.Queue (and
faster-fifo when installed), 1 producer -> 1 consumer and 4 -> 4, small and 100 KB messages, plus
conveyor's batched put_many/get_many. Prints a table of messages per second.

    python benchmarks/bench_queue.py [--messages N] [--repeat R]
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import time
from typing import Any, Callable

import conveyor

SENTINEL = None


def _producer(q: Any, count: int, payload: Any, batch: int) -> None:
    if batch > 1:
        for start in range(0, count, batch):
            q.put_many([payload] * min(batch, count - start))
    else:
        for _ in range(count):
            q.put(payload)


def _consumer(q: Any, count: int, batch: int, done: Any) -> None:
    got = 0
    try:
        while got < count:
            if batch > 1:
                got += len(q.get_many(min(batch, count - got)))  # exactly this consumer's share
            else:
                q.get()
                got += 1
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which fails the scenario
        done.put(f"consumer failed after {got} messages: {exc!r}")
        return
    done.put(got)


def run(make_queue: Callable[[], Any], producers: int, consumers: int, messages: int, payload: Any,
        batch: int = 1) -> float:
    """Seconds to move ``messages`` through the queue with the given numbers of processes."""
    ctx = multiprocessing.get_context("fork")
    q = make_queue()
    done = ctx.SimpleQueue()
    per_producer = messages // producers
    per_consumer = per_producer * producers // consumers
    procs = [ctx.Process(target=_consumer, args=(q, per_consumer, batch, done)) for _ in range(consumers)]
    procs += [ctx.Process(target=_producer, args=(q, per_producer, payload, batch)) for _ in range(producers)]
    started = time.perf_counter()
    for proc in procs:
        proc.start()
    failures = [report for report in (done.get() for _ in range(consumers)) if isinstance(report, str)]
    seconds = time.perf_counter() - started
    if failures:
        for proc in procs:
            proc.kill()
            proc.join()
        raise RuntimeError(failures[0])
    for proc in procs:
        proc.join()
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    ctx = conveyor.context("process")
    mp = multiprocessing.get_context("fork")
    contenders: list[tuple[str, Callable[[], Any], int]] = [
        ("multiprocessing.Queue", lambda: mp.Queue(1000), 1),
        ("conveyor Queue", lambda: ctx.Queue(1000), 1),
        ("conveyor Queue, put_many/get_many(64)", lambda: ctx.Queue(1000), 64),
    ]
    try:
        import faster_fifo  # type: ignore[import-not-found]

        contenders.append(("faster-fifo", lambda: faster_fifo.Queue(max_size_bytes=8 * 2**20), 1))
    except ImportError:
        print("faster-fifo: not installed (pip install faster-fifo)")
    print(f"# queue throughput, {args.messages} messages, median of {args.repeat}, Python {sys.version.split()[0]}\n")
    print("| scenario | contender | messages/s | vs multiprocessing.Queue |")
    print("|---|---|---|---|")
    for label, producers, consumers, payload, messages in [
        ("1 -> 1, 8-byte", 1, 1, 12345678, args.messages),
        ("4 -> 4, 8-byte", 4, 4, 12345678, args.messages),
        ("1 -> 1, 100 KB", 1, 1, b"x" * 100_000, args.messages // 10),
        ("4 -> 4, 100 KB", 4, 4, b"x" * 100_000, args.messages // 10),
    ]:
        reference = None
        for name, make, batch in contenders:
            try:
                times = [run(make, producers, consumers, messages, payload, batch) for _ in range(args.repeat)]
            except Exception as exc:  # noqa: BLE001 - a peer that cannot do this scenario
                print(f"| {label} | {name} | failed: {exc!r} | |")
                continue
            rate = messages / statistics.median(times)
            reference = reference or rate
            print(f"| {label} | {name} | {rate:,.0f} | {rate / reference:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
