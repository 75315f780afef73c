"""The fault table: for each injected fault, what the affected task gets and how long until it gets it.

Runs the crash matrix (tests/scenarios/crash_matrix.py) for each start method, plus timeouts, in
subprocesses, and prints a markdown table: scenario -> outcome -> time to error. The figures go in
docs/reliability.md.

    python benchmarks/bench_faults.py [--methods forkserver,spawn,fork]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import subprocess
import sys
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests"
PLACES = ("task_body", "pickle_task", "unpickle_task", "pickle_result", "unpickle_result", "initializer")


def run_row(method: str, place: str) -> list[dict]:
    done = subprocess.run([sys.executable, "-m", "scenarios.crash_matrix", "process", method, place],
                          cwd=TESTS, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


TIMEOUT_SCRIPT = """
import sys, time, conveyor
sys.path.insert(0, {tests!r})
import tasks
if __name__ == "__main__":
    with conveyor.Pool(1, backend="process", start_method={method!r}, task_timeout=0.5) as pool:
        pool.submit(tasks.square, 1).result()
        for name, fn, arg in [("CPU loop", tasks.spin, 5.0), ("ignores SIGTERM", tasks.ignore_sigterm_and_sleep, 5.0),
                              ("blocked in C", tasks.block_in_c, 5)]:
            started = time.monotonic()
            try:
                pool.submit(fn, arg).result()
            except conveyor.TaskTimeoutError:
                print(name, time.monotonic() - started, flush=True)
"""


def timeout_rows(method: str) -> list[tuple[str, float]]:
    script = TIMEOUT_SCRIPT.format(tests=str(TESTS), method=method)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    rows = []
    for line in done.stdout.splitlines():
        name, _, seconds = line.rpartition(" ")
        rows.append((name, float(seconds)))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default=",".join(m for m in ("forkserver", "spawn", "fork")
                                                      if m in multiprocessing.get_all_start_methods()))
    args = parser.parse_args(argv)
    methods = args.methods.split(",")
    print(f"# fault table ({time.strftime('%Y-%m-%d %H:%M')}, Python {sys.version.split()[0]}, "
          f"start methods: {', '.join(methods)})\n")
    print("| fault | place | outcome for the affected task | time to error, max over start methods |")
    print("|---|---|---|---|")
    table: dict[tuple[str, str], tuple[str, float]] = {}
    for method in methods:
        for place in PLACES:
            for result in run_row(method, place):
                key = (result["kind"], place)
                outcome = result["submit_error"]["type"]
                seconds = max(result["submit_seconds"], result.get("map_seconds") or 0.0)
                if place == "initializer":
                    outcome += " (and submit raises it at once)"
                previous = table.get(key)
                table[key] = (outcome, max(seconds, previous[1] if previous else 0.0))
    for (kind, place), (outcome, seconds) in sorted(table.items(), key=lambda kv: (PLACES.index(kv[0][1]), kv[0][0])):
        print(f"| {kind} | {place} | {outcome} | {seconds * 1000:.0f} ms |")
    print("\n| task_timeout=0.5 s on | outcome | time to error, max over start methods |")
    print("|---|---|---|")
    worst: dict[str, float] = {}
    for method in methods:
        for name, seconds in timeout_rows(method):
            worst[name] = max(worst.get(name, 0.0), seconds)
    for name, seconds in worst.items():
        print(f"| {name} | TaskTimeoutError, worker killed and replaced | {seconds:.2f} s |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
