"""conveyor.Pool against multiprocessing, concurrent.futures and optional peers, in one run.

Scenarios (all with ``--workers`` workers, default 2):

1. tiny tasks: ``map(square, range(items))``, ``square(x) = x * x`` -- pure dispatch overhead.
   Steady state (pools created and warmed beforehand) and "cold" (pool creation + map + shutdown).
2. CPU-bound: ``--tasks`` tasks (default 200) of a busy loop calibrated to ``--task-ms`` (default 5 ms)
   of pure-Python CPU each -- speedup = serial time / parallel time.

Every contender is timed ``--repeat`` times, interleaved round-robin, and reported by median and min.
Peers (joblib, loky, mpire, pebble) are optional: ``pip install -e '.[bench]'``.

Run:  python benchmarks/bench_pool.py [--quick] [--repeat N] [--items N] [--workers N]

Benchmarks report, they do not assert: the exit code is 0 whatever the numbers (2 on a usage error).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import faulthandler
import importlib
import math
import multiprocessing
import os
import statistics
import sys
import time
from typing import Any, Callable

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
import _common as c  # noqa: E402
import fresh_start  # noqa: E402

PEERS = ("joblib", "loky", "mpire", "pebble")
CPU_TARGET_FRACTION = 0.95


# -- the work (module level, so every start method can import it) ---------------------------------
def square(x: int) -> int:
    return x * x


def burn(n: int) -> int:
    """Pure-Python CPU for a time proportional to ``n`` (holds the GIL, no I/O, no allocation growth)."""
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


# -- helpers ---------------------------------------------------------------------------------------
def mp_chunksize(n: int, workers: int) -> int:
    """multiprocessing.Pool.map's own default: ceil(n / (4 * workers))."""
    return max(1, math.ceil(n / (4 * workers)))


def try_import(name: str) -> tuple[Any, str | None]:
    try:
        return importlib.import_module(name), None
    except ModuleNotFoundError:
        return None, "not installed"
    except Exception as exc:  # noqa: BLE001 - a broken optional peer is a row, not a crash
        return None, f"import failed: {type(exc).__name__}"


class Log:
    def __init__(self, verbose: bool) -> None:
        self.verbose = verbose
        self.tty = sys.stderr.isatty()

    def __call__(self, message: str) -> None:
        if self.verbose:
            print(f"  .. {message}", file=sys.stderr, flush=True)
        elif self.tty:
            print(f"\r\x1b[K  .. {message}", end="", file=sys.stderr, flush=True)

    def section(self, message: str) -> None:
        if self.tty and not self.verbose:
            print("\r\x1b[K", end="", file=sys.stderr)
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Pools:
    """Every long-lived pool of the run: created and warmed once, shut down at the end."""

    def __init__(self, workers: int, log: Log) -> None:
        self.workers = workers
        self.log = log
        self.made: dict[str, Any] = {}
        self.failed: dict[str, str] = {}
        self.closers: list[tuple[str, Callable[[], Any]]] = []

    def make(self, key: str, create: Callable[[], Any], close: Callable[[Any], Any],
             warm: Callable[[Any], Any]) -> Any:
        """Create and warm one pool; on failure remember why (the rows show it) and return None."""
        self.log(f"starting {key}")
        try:
            pool = create()
        except Exception as exc:  # noqa: BLE001
            self.failed[key] = f"setup failed: {type(exc).__name__}: {exc}"[:100]
            return None
        self.closers.append((key, lambda: close(pool)))
        try:
            warm(pool)
        except Exception as exc:  # noqa: BLE001
            self.failed[key] = f"warm-up failed: {type(exc).__name__}: {exc}"[:100]
            return None
        self.made[key] = pool
        return pool

    def skip(self, key: str) -> str | None:
        return None if key in self.made else self.failed.get(key, "not available")

    def close_all(self) -> list[str]:
        problems = []
        for key, close in reversed(self.closers):
            self.log(f"shutting down {key}")
            start = time.perf_counter()
            try:
                close()
            except Exception as exc:  # noqa: BLE001
                problems.append(f"{key}: shutdown raised {type(exc).__name__}: {exc}")
            took = time.perf_counter() - start
            if took > 2.0:
                problems.append(f"{key}: shutdown took {took:.1f}s")
        self.closers.clear()
        return problems


def warm_pool_map(pmap: Callable[[Callable[..., Any], list[Any]], Any], workers: int, burn_n: int) -> None:
    """Make every worker start and see every function: naps (so all workers take some), then the rest."""
    pmap(nap, [0.01] * (4 * workers))
    pmap(square, list(range(64)))
    pmap(burn, [min(burn_n, 1000)] * (2 * workers))


# -- pools -----------------------------------------------------------------------------------------
def build_pools(args: argparse.Namespace, peers: dict[str, tuple[Any, str | None]], burn_n: int,
                log: Log) -> tuple[Pools, list[str]]:
    import conveyor

    w = args.workers
    pools = Pools(w, log)

    def cv_close(pool: Any) -> None:
        pool.shutdown(wait=True)

    default = pools.make("conveyor", lambda: conveyor.Pool(w, backend="process"), cv_close,
                         lambda p: warm_pool_map(p.map, w, burn_n))
    default_method = default.statistics().get("start_method", "?") if default is not None else "?"
    methods = [m for m in ("fork", "forkserver", "spawn") if m in multiprocessing.get_all_start_methods()]
    others = [m for m in methods if m != default_method]
    for method in others:
        pools.make(f"conveyor/{method}",
                   lambda method=method: conveyor.Pool(w, backend="process", start_method=method), cv_close,
                   lambda p: warm_pool_map(p.map, w, burn_n))

    def mp_close(pool: Any) -> None:
        pool.close()
        pool.join()

    pools.make("multiprocessing", lambda: multiprocessing.Pool(w), mp_close,
               lambda p: warm_pool_map(p.map, w, burn_n))
    pools.make("ppe", lambda: concurrent.futures.ProcessPoolExecutor(w), lambda p: p.shutdown(wait=True),
               lambda p: warm_pool_map(lambda f, xs: list(p.map(f, xs)), w, burn_n))

    joblib, _ = peers["joblib"]
    if joblib is not None:
        def joblib_create() -> Any:
            parallel = joblib.Parallel(n_jobs=w)
            parallel.__enter__()   # keep the backend (and its loky workers) alive between calls
            return parallel

        def joblib_close(parallel: Any) -> None:
            parallel.__exit__(None, None, None)
            # joblib keeps a process-wide reusable loky executor alive after the Parallel block ends.
            from joblib.externals.loky import reusable_executor
            executor = getattr(reusable_executor, "_executor", None)
            if executor is not None:
                executor.shutdown(wait=True)

        pools.make("joblib", joblib_create, joblib_close,
                   lambda par: warm_pool_map(lambda f, xs: par(joblib.delayed(f)(x) for x in xs), w, burn_n))
    loky, _ = peers["loky"]
    if loky is not None:
        # timeout: loky's default lets idle workers exit after 10 s; between rounds they can idle longer.
        pools.make("loky", lambda: loky.get_reusable_executor(max_workers=w, timeout=3600),
                   lambda p: p.shutdown(wait=True),
                   lambda p: warm_pool_map(lambda f, xs: list(p.map(f, xs)), w, burn_n))
    mpire, _ = peers["mpire"]
    if mpire is not None:
        # keep_alive: without it mpire starts fresh workers on every map call.
        pools.make("mpire", lambda: mpire.WorkerPool(n_jobs=w, keep_alive=True), lambda p: p.stop_and_join(),
                   lambda p: warm_pool_map(p.map, w, burn_n))
    pebble, _ = peers["pebble"]
    if pebble is not None:
        def pebble_close(pool: Any) -> None:
            pool.close()
            pool.join()

        pools.make("pebble", lambda: pebble.ProcessPool(max_workers=w), pebble_close,
                   lambda p: warm_pool_map(lambda f, xs: list(p.map(f, xs).result()), w, burn_n))
    return pools, [default_method] + others


def peer_skip(pools: Pools, peers: dict[str, tuple[Any, str | None]], name: str) -> str | None:
    _, reason = peers[name]
    return reason if reason is not None else pools.skip(name)


# -- scenario 1: tiny tasks ------------------------------------------------------------------------
def conveyor_rows(pools: Pools, methods: list[str], fn: Callable[[Any], Any], inputs: list[Any], n: int,
                  same: Callable[[Any], bool]) -> list[c.Contender]:
    """One row per start method: conveyor's default adaptive chunking on the warmed pool."""
    rows = []
    for i, method in enumerate(methods):
        key = "conveyor" if i == 0 else f"conveyor/{method}"
        label = f"conveyor {method}" + (" (default)" if i == 0 else "")
        pool = pools.made.get(key)
        rows.append(c.Contender(f"{label}, auto chunks", pool and (lambda p=pool: p.map(fn, inputs)), n, same,
                                pools.skip(key)))
    return rows


def tiny_contenders(args: argparse.Namespace, pools: Pools, peers: dict[str, Any], methods: list[str],
                    xs: list[int], slow_xs: list[int]) -> list[c.Contender]:
    n = len(xs)
    w = args.workers
    cs = mp_chunksize(n, w)
    expected = [square(x) for x in xs]
    expected_slow = expected[:len(slow_xs)]

    def same(result: Any) -> bool:
        return result == expected

    def same_slow(result: Any) -> bool:
        return result == expected_slow

    m = pools.made
    out: list[c.Contender] = conveyor_rows(pools, methods, square, xs, n, same)
    pool = m.get("conveyor")
    out.append(c.Contender(f"conveyor {methods[0]}, chunksize={cs}",
                           pool and (lambda p=pool: p.map(square, xs, chunksize=cs)), n, same,
                           pools.skip("conveyor"), note="diagnostic: mp.Pool's chunks"))
    pool = m.get("multiprocessing")
    out.append(c.Contender(f"multiprocessing.Pool ({multiprocessing.get_start_method()}), default chunks",
                           pool and (lambda p=pool: p.map(square, xs)), n, same, pools.skip("multiprocessing"),
                           note=f"chunksize={cs}", group="reference"))
    pool = m.get("ppe")
    note = "" if len(slow_xs) == n else f"{len(slow_xs)} items only (--quick / --slow-items)"
    out.append(c.Contender("ProcessPoolExecutor chunksize=1",
                           pool and (lambda p=pool: list(p.map(square, slow_xs))), len(slow_xs), same_slow,
                           pools.skip("ppe"), note=note))
    out.append(c.Contender(f"ProcessPoolExecutor chunksize={cs}",
                           pool and (lambda p=pool: list(p.map(square, xs, chunksize=cs))), n, same,
                           pools.skip("ppe")))
    joblib, _ = peers["joblib"]
    par = m.get("joblib")
    out.append(c.Contender("joblib batch_size=auto",
                           par and (lambda p=par: p(joblib.delayed(square)(x) for x in xs)), n, same,
                           peer_skip(pools, peers, "joblib")))
    pool = m.get("loky")
    out.append(c.Contender(f"loky chunksize={cs}",
                           pool and (lambda p=pool: list(p.map(square, xs, chunksize=cs))), n, same,
                           peer_skip(pools, peers, "loky")))
    pool = m.get("mpire")
    out.append(c.Contender("mpire (fork), default chunks", pool and (lambda p=pool: p.map(square, xs)), n, same,
                           peer_skip(pools, peers, "mpire"), note="keep_alive=True"))
    pool = m.get("pebble")
    out.append(c.Contender(f"pebble chunksize={cs}",
                           pool and (lambda p=pool: list(p.map(square, xs, chunksize=cs).result())), n, same,
                           peer_skip(pools, peers, "pebble")))
    # One untimed round first (the pools are already warm; this also primes per-function state, e.g.
    # mpire reuses its workers only for the same function). Not for the slow chunksize=1 row.
    for contender in out:
        if contender.run is not None and not contender.name.startswith("ProcessPoolExecutor chunksize=1"):
            contender.warm = contender.run
    return out


def cold_contenders(args: argparse.Namespace, methods: list[str], xs: list[int],
                    phases: dict[str, dict[str, list[float]]]) -> list[c.Contender]:
    import conveyor

    n = len(xs)
    w = args.workers
    expected = [square(x) for x in xs]

    def same(result: Any) -> bool:
        return result == expected

    def record(name: str, t0: float, t1: float, t2: float, t3: float) -> None:
        phase = phases.setdefault(name, {"create": [], "map": [], "shutdown": []})
        phase["create"].append(t1 - t0)
        phase["map"].append(t2 - t1)
        phase["shutdown"].append(t3 - t2)

    def conveyor_cold(name: str, method: str | None) -> Callable[[], Any]:
        def run() -> Any:
            t0 = time.perf_counter()
            pool = conveyor.Pool(w, backend="process", start_method=method)
            t1 = time.perf_counter()
            result = pool.map(square, xs)
            t2 = time.perf_counter()
            pool.shutdown(wait=True)
            record(name, t0, t1, t2, time.perf_counter())
            return result
        return run

    def mp_cold(name: str) -> Callable[[], Any]:
        def run() -> Any:
            t0 = time.perf_counter()
            pool = multiprocessing.Pool(w)
            t1 = time.perf_counter()
            result = pool.map(square, xs)
            t2 = time.perf_counter()
            pool.close()
            pool.join()
            record(name, t0, t1, t2, time.perf_counter())
            return result
        return run

    out = []
    for i, method in enumerate(methods):
        name = f"[cold] conveyor {method}" + (" (default)" if i == 0 else "")
        out.append(c.Contender(name, conveyor_cold(name, None if i == 0 else method), n, same))
    name = f"[cold] multiprocessing.Pool ({multiprocessing.get_start_method()})"
    out.append(c.Contender(name, mp_cold(name), n, same, group="reference"))
    return out


# -- scenario 2: CPU-bound -------------------------------------------------------------------------
def cpu_contenders(args: argparse.Namespace, pools: Pools, peers: dict[str, Any], methods: list[str],
                   burn_n: int) -> list[c.Contender]:
    tasks = args.tasks
    inputs = [burn_n] * tasks
    expected = [burn(burn_n)] * tasks

    def same(result: Any) -> bool:
        return list(result) == expected

    m = pools.made
    out = [c.Contender("serial (this process)", lambda: [burn(x) for x in inputs], tasks, same, group="serial")]
    out += conveyor_rows(pools, methods, burn, inputs, tasks, same)
    pool = m.get("multiprocessing")
    out.append(c.Contender(f"multiprocessing.Pool ({multiprocessing.get_start_method()}), default chunks",
                           pool and (lambda p=pool: p.map(burn, inputs)), tasks, same, pools.skip("multiprocessing"),
                           note=f"chunksize={mp_chunksize(tasks, args.workers)}", group="reference"))
    pool = m.get("ppe")
    out.append(c.Contender("ProcessPoolExecutor chunksize=1",
                           pool and (lambda p=pool: list(p.map(burn, inputs))), tasks, same, pools.skip("ppe")))
    joblib, _ = peers["joblib"]
    par = m.get("joblib")
    out.append(c.Contender("joblib batch_size=auto",
                           par and (lambda p=par: p(joblib.delayed(burn)(x) for x in inputs)), tasks, same,
                           peer_skip(pools, peers, "joblib")))
    pool = m.get("loky")
    out.append(c.Contender("loky chunksize=1", pool and (lambda p=pool: list(p.map(burn, inputs))), tasks, same,
                           peer_skip(pools, peers, "loky")))
    pool = m.get("mpire")
    out.append(c.Contender("mpire (fork), default chunks", pool and (lambda p=pool: p.map(burn, inputs)), tasks,
                           same, peer_skip(pools, peers, "mpire"), note="keep_alive=True"))
    pool = m.get("pebble")
    out.append(c.Contender("pebble chunksize=1",
                           pool and (lambda p=pool: list(p.map(burn, inputs).result())), tasks, same,
                           peer_skip(pools, peers, "pebble")))
    for contender in out[1:]:
        if contender.run is not None:
            contender.warm = contender.run  # one untimed round, as in scenario 1
    return out


# -- tables ----------------------------------------------------------------------------------------
def reference(timings: list[c.Timing]) -> c.Timing | None:
    for t in timings:
        if t.contender.group == "reference" and t.ok:
            return t
    return None


def throughput_table(title: str, timings: list[c.Timing], extra_notes: list[str],
                     phases: dict[str, dict[str, list[float]]] | None = None) -> c.Table:
    ref = reference(timings)
    columns = ["contender", "items", "median s", "min s", "max s", "items/s (median)", "vs mp.Pool", "note"]
    rows, data = [], []
    for t in timings:
        name = t.contender.name
        if not t.ok:
            rows.append([name, str(t.contender.items), "-", "-", "-", "-", "-", t.status])
            data.append({"contender": name, "status": t.status})
            continue
        ratio = t.rate / ref.rate if ref is not None else float("nan")
        note = t.contender.note
        if phases is not None and name in phases:
            ph = phases[name]
            med = {k: statistics.median(v) for k, v in ph.items()}
            note = f"create {med['create']:.3f} + map {med['map']:.3f} + shutdown {med['shutdown']:.3f}"
        rows.append([name, str(t.contender.items), c.fmt_seconds(t.median), c.fmt_seconds(t.best),
                     c.fmt_seconds(t.worst), c.fmt_rate(t.rate), c.fmt_ratio(ratio), note])
        data.append({"contender": name, "items": t.contender.items, "samples": t.samples, "median": t.median,
                     "min": t.best, "max": t.worst, "items_per_s": t.rate, "vs_mp": ratio, "note": note})
    notes = ["vs mp.Pool = items/s ÷ multiprocessing.Pool's items/s (medians); > 1 is faster."] + extra_notes
    return c.Table(title, columns, rows, notes, data)


def speedup_table(title: str, timings: list[c.Timing], extra_notes: list[str]) -> c.Table:
    serial = timings[0] if timings and timings[0].contender.group == "serial" and timings[0].ok else None
    ref = reference(timings)
    columns = ["contender", "tasks", "median s", "min s", "max s", "speedup (median)", "speedup (min)",
               "vs mp.Pool", "note"]
    rows, data = [], []
    for t in timings:
        name = t.contender.name
        if not t.ok:
            rows.append([name, str(t.contender.items), "-", "-", "-", "-", "-", "-", t.status])
            data.append({"contender": name, "status": t.status})
            continue
        speed = serial.median / t.median if serial is not None else float("nan")
        speed_min = serial.best / t.best if serial is not None else float("nan")
        ratio = ref.median / t.median if ref is not None else float("nan")
        rows.append([name, str(t.contender.items), c.fmt_seconds(t.median), c.fmt_seconds(t.best),
                     c.fmt_seconds(t.worst), c.fmt_ratio(speed), c.fmt_ratio(speed_min), c.fmt_ratio(ratio),
                     t.contender.note])
        data.append({"contender": name, "tasks": t.contender.items, "samples": t.samples, "median": t.median,
                     "min": t.best, "max": t.worst, "speedup": speed, "speedup_min": speed_min, "vs_mp": ratio})
        if t is serial:
            rows.append([])
    notes = ["speedup = serial median ÷ contender median (speedup (min): min ÷ min); "
             "vs mp.Pool = mp.Pool median ÷ contender median; > 1 is faster."] + extra_notes
    return c.Table(title, columns, rows, notes, data)


def targets_table(tiny: list[c.Timing], cpu: list[c.Timing], workers: int) -> c.Table:
    rows, data = [], []
    cores = c.usable_cores()
    goal = CPU_TARGET_FRACTION * min(workers, cores)
    conveyor_cpu = cpu[1] if len(cpu) > 1 else None
    serial = cpu[0] if cpu else None
    if conveyor_cpu is not None and conveyor_cpu.ok and serial is not None and serial.ok:
        speed = serial.median / conveyor_cpu.median
        value, verdict = f"{speed:.2f}x (min-based {serial.best / conveyor_cpu.best:.2f}x)", \
            "PASS" if speed >= goal else "FAIL"
    else:
        speed, value, verdict = float("nan"), "not measured", "FAIL"
    target = f"CPU-bound speedup >= {CPU_TARGET_FRACTION} x {min(workers, cores)} = {goal:.2f}"
    rows.append([target, conveyor_cpu.contender.name if conveyor_cpu else "-", value, verdict])
    data.append({"target": target, "value": speed, "verdict": verdict})

    conveyor_tiny = tiny[0] if tiny else None
    ref = reference(tiny)
    if conveyor_tiny is not None and conveyor_tiny.ok and ref is not None:
        ratio = conveyor_tiny.rate / ref.rate
        best_ratio = ref.best / conveyor_tiny.best
        # Both were timed in the same rounds, one after the other: a burst of load hits a round's pair.
        paired = statistics.median(theirs / ours for ours, theirs in zip(conveyor_tiny.samples, ref.samples))
        value = (f"{conveyor_tiny.rate:,.0f} vs {ref.rate:,.0f} items/s = {ratio:.2f}x "
                 f"(min-based {best_ratio:.2f}x, median of per-round ratios {paired:.2f}x)")
        verdict = "PASS" if ratio >= 1.0 else "FAIL"
    else:
        ratio, value, verdict = float("nan"), "not measured", "FAIL"
    target = "tiny-task throughput >= multiprocessing.Pool.map"
    rows.append([target, conveyor_tiny.contender.name if conveyor_tiny else "-", value, verdict])
    data.append({"target": target, "value": ratio, "verdict": verdict})
    return c.Table("targets (medians decide; informational, exit code is 0 either way)",
                   ["target", "measured on", "value", "verdict"], rows, [], data, align="llll")


def leftover_children(wait: float = 3.0) -> list[str]:
    """Our descendant processes still alive ``wait`` s after every pool was shut down."""
    try:
        import psutil
    except ImportError:
        return ["(psutil not installed: not checked)"]
    me = psutil.Process()
    deadline = time.monotonic() + wait
    while True:
        alive = []
        for child in me.children(recursive=True):
            try:
                if child.status() == psutil.STATUS_ZOMBIE:
                    continue
                cmd = " ".join(child.cmdline())[:100]
            except psutil.Error:
                continue
            alive.append((child, cmd))
        unexpected = [(p, cmd) for p, cmd in alive if "forkserver" not in cmd and "resource_tracker" not in cmd]
        if not unexpected or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    out = []
    for p, cmd in alive:
        expected = "forkserver" in cmd or "resource_tracker" in cmd
        tag = "expected until exit (stdlib helper)" if expected else "UNEXPECTED"
        try:
            parent = p.ppid()
        except psutil.Error:
            parent = "?"
        out.append(f"pid {p.pid} (parent {parent}) {tag}: {cmd}")
    return out


# -- main ------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=None,
                        help="timed rounds per contender (default 5, or 3 with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help="fewer rounds, and ProcessPoolExecutor chunksize=1 on 10 000 items only")
    parser.add_argument("--items", type=int, default=100_000, help="inputs of the tiny-task map (default 100 000)")
    parser.add_argument("--slow-items", type=int, default=None,
                        help="inputs for ProcessPoolExecutor chunksize=1 (default: --items, or 10 000 with --quick)")
    parser.add_argument("--workers", type=int, default=2, help="workers per pool (default 2)")
    parser.add_argument("--tasks", type=int, default=200, help="CPU-bound tasks (default 200)")
    parser.add_argument("--task-ms", type=float, default=5.0, help="serial milliseconds of one CPU-bound task (default 5)")
    parser.add_argument("--no-cold", action="store_true", help="skip the cold (create + map + shutdown) rows")
    parser.add_argument("--no-fresh", action="store_true",
                        help="skip the COLD row (whole programs in fresh interpreters, timed from outside)")
    parser.add_argument("--fresh-repeat", type=int, default=None,
                        help="runs per contender of the COLD row (default 9, or 5 with --quick)")
    parser.add_argument("--no-peers", action="store_true", help="skip joblib, loky, mpire and pebble")
    parser.add_argument("--no-save", action="store_true", help="do not write benchmarks/results/")
    parser.add_argument("--hang-timeout", type=float, default=300.0,
                        help="a scenario may run S x (repeat + 1) seconds before every thread's stack is dumped and "
                             "the run aborts (default 300)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every measurement to stderr")
    args = parser.parse_args(argv)
    if args.repeat is None:
        args.repeat = 3 if args.quick else 5
    if args.fresh_repeat is None:
        args.fresh_repeat = 5 if args.quick else 9
    if args.slow_items is None:
        args.slow_items = min(args.items, 10_000) if args.quick else args.items
    for name in ("repeat", "items", "slow_items", "workers", "tasks", "fresh_repeat"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.task_ms <= 0:
        parser.error("--task-ms must be > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    log = Log(args.verbose)
    started = time.perf_counter()
    faulthandler.enable()
    peers = {name: (None, "skipped (--no-peers)") if args.no_peers else try_import(name) for name in PEERS}
    info = c.machine_info(("conveyor",) + PEERS)
    print(f"bench_pool: workers={args.workers} repeat={args.repeat} items={args.items} "
          f"tasks={args.tasks}x{args.task_ms:g}ms{' (quick)' if args.quick else ''}")
    print(c.format_info(info))
    if args.workers > c.usable_cores():
        print(f"note: {args.workers} workers on {c.usable_cores()} usable cores: speedups are capped by cores")

    log.section("calibrating the CPU-bound task")
    burn_n, per_task = c.calibrate(burn, args.task_ms / 1000.0)

    log.section("starting and warming pools")
    t0 = time.perf_counter()
    pools, methods = build_pools(args, peers, burn_n, log)
    setup_s = time.perf_counter() - t0

    def rr(contenders: list[c.Contender], label: str) -> list[c.Timing]:
        # Any single measurement hanging: dump every thread's stack and abort (children may be left).
        faulthandler.dump_traceback_later(args.hang_timeout * (args.repeat + 1), exit=True)
        try:
            return c.run_round_robin(contenders, args.repeat, label=label, log=log)
        finally:
            faulthandler.cancel_dump_traceback_later()

    tables: list[c.Table] = []
    xs = list(range(args.items))
    slow_xs = xs[:args.slow_items]
    log.section(f"scenario 1: tiny tasks, {args.items} x square, steady state")
    tiny = rr(tiny_contenders(args, pools, peers, methods, xs, slow_xs), "tiny")
    cs = mp_chunksize(args.items, args.workers)
    tables.append(throughput_table(
        f"1. tiny tasks: map(square, range({args.items})) on {args.workers} workers, steady state "
        f"(pools created and warmed before timing)", tiny,
        [f"conveyor 'auto chunks' is its default adaptive chunking; chunksize={cs} is "
         f"multiprocessing.Pool's default for this input (ceil(n / (4 x workers))).",
         "joblib / loky / mpire / pebble use their default start method (loky: loky; others: fork)."]))
    c.print_table(tables[-1])

    cold: list[c.Timing] = []
    if not args.no_cold:
        log.section("scenario 1b: tiny tasks, cold (create + map + shutdown)")
        phases: dict[str, dict[str, list[float]]] = {}
        cold = rr(cold_contenders(args, methods, xs, phases), "cold")
        tables.append(throughput_table(
            f"1b. tiny tasks, cold: pool creation + map(square, range({args.items})) + shutdown(wait)", cold,
            ["note = median seconds of each phase. conveyor.Pool() returns before its workers are up (they "
             "start in the background), so its worker start-up lands in 'map'; multiprocessing.Pool() "
             "starts them in the constructor.",
             "The forkserver process itself is already running (started by the steady-state pools), "
             "as it would be after a program's first pool."], phases))
        c.print_table(tables[-1])

    if not args.no_fresh:
        log.section("COLD: whole programs in fresh interpreters")
        faulthandler.dump_traceback_later(args.hang_timeout * (args.fresh_repeat + 1), exit=True)
        try:
            tables.append(fresh_start.measure(args.workers, fresh_start.ITEMS, args.fresh_repeat, log))
        finally:
            faulthandler.cancel_dump_traceback_later()
        c.print_table(tables[-1])

    log.section(f"scenario 2: CPU-bound, {args.tasks} tasks of ~{args.task_ms:g} ms")
    cpu = rr(cpu_contenders(args, pools, peers, methods, burn_n), "cpu")
    serial_per_task = cpu[0].median / args.tasks if cpu and cpu[0].ok else float("nan")
    ideal = min(args.workers, c.usable_cores())
    tables.append(speedup_table(
        f"2. CPU-bound: map(burn, [{burn_n}] * {args.tasks}) on {args.workers} workers", cpu,
        [f"burn({burn_n}) calibrated to {per_task * 1000:.2f} ms at start; measured serially in the runs: "
         f"{serial_per_task * 1000:.2f} ms per task (median). Ideal speedup: {ideal}x."]))
    c.print_table(tables[-1])

    # pool statistics before shutdown: restarts or crashes here would be an anomaly
    stats_notes = []
    for key, pool in pools.made.items():
        if key.startswith("conveyor"):
            s = pool.statistics()
            stats_notes.append(f"{key}: start_method={s.get('start_method')} workers_started="
                               f"{s.get('workers_started', 0)} crashed={s.get('workers_crashed', 0)} "
                               f"submitted={s.get('submitted')} failed={s.get('failed')}")

    log.section("shutting down pools")
    problems = pools.close_all()
    leftovers = leftover_children()

    tables.append(targets_table(tiny, cpu, args.workers))
    c.print_table(tables[-1])

    print("\nhousekeeping")
    print("============")
    print(f"  pool start-up and warm-up (untimed): {setup_s:.1f}s; whole run: {time.perf_counter() - started:.1f}s")
    for note in stats_notes:
        print(f"  {note}")
    for problem in problems:
        print(f"  ANOMALY: {problem}")
    print(f"  child processes alive after every shutdown: {len(leftovers) or 'none'}")
    for line in leftovers:
        print(f"    {line}")
    if not args.no_save:
        written = c.save_results("bench_pool", info, tables, {
            "args": vars(args), "calibration": {"burn_n": burn_n, "per_task_s": per_task},
            "conveyor_statistics": stats_notes, "shutdown_problems": problems, "leftover_children": leftovers})
        print(f"  results: {', '.join(os.path.relpath(p) for p in written if 'latest' not in p.name)} "
              "(and *-latest.*)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
