"""The COLD row: a whole short program, each run in a fresh interpreter and timed from outside.

What a user of a command-line tool or a short script waits for: interpreter start, the import, a pool of
``--workers``, ``map(square, range(items))`` over a few tiny inputs, ``close()`` + ``join()``, interpreter
exit. Contenders: conveyor with its default start method (forkserver on Linux), and
``multiprocessing.Pool`` under fork and under forkserver. They run interleaved (A B C A B C ...), each
after one untimed run that writes the byte-code caches (``PYTHONDONTWRITEBYTECODE`` is dropped from the
child's environment: a user's second run of a program finds them). Each program checks its own result.

Targets: conveyor's median at most ``multiprocessing.Pool``'s under forkserver, and at most 2x its
median under fork.

``--floor`` adds two programs that are not pools at all: the least any design built on the stdlib's
fork server can do (two ``multiprocessing.Process`` workers on pipes, their loop preloaded by the fork
server, one batch each), once serializing with cloudpickle in the caller and the fork server as
conveyor does, once with plain pickle. They bound from below what conveyor can reach without changing
how it serializes or starts its workers.

Run alone:  python benchmarks/fresh_start.py [--repeat N] [--items N] [--workers N] [--floor]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
import _common as c

CONVEYOR_PROGRAM = '''\
import conveyor


def square(x):
    return x * x


if __name__ == "__main__":
    pool = conveyor.Pool({workers})
    result = pool.map(square, range({items}))
    pool.close()
    pool.join()
    assert result == [x * x for x in range({items})]
'''

MULTIPROCESSING_PROGRAM = '''\
import multiprocessing


def square(x):
    return x * x


if __name__ == "__main__":
    pool = multiprocessing.get_context({method!r}).Pool({workers})
    result = pool.map(square, range({items}))
    pool.close()
    pool.join()
    assert result == [x * x for x in range({items})]
'''

FLOOR_WORKER = '''\
import {pickler}


def work(conn):
    """Receive the function, then batches until an empty message; send back each batch's results."""
    fn = {pickler}.loads(conn.recv_bytes())
    while True:
        data = conn.recv_bytes()
        if not data:
            return
        conn.send_bytes({pickler}.dumps([fn(x) for x in {pickler}.loads(data)]))
'''

FLOOR_PROGRAM = '''\
import multiprocessing


def square(x):
    return x * x


if __name__ == "__main__":
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([{module!r}])
    multiprocessing.forkserver.ensure_running()
    import {pickler}
    import {module}

    workers = []
    for _ in range({workers}):
        mine, theirs = ctx.Pipe()
        process = ctx.Process(target={module}.work, args=(theirs,))
        process.start()
        theirs.close()
        workers.append((process, mine))
    function = {pickler}.dumps(square)
    inputs = list(range({items}))
    share = -(-len(inputs) // len(workers))
    for index, (_, conn) in enumerate(workers):
        conn.send_bytes(function)
        conn.send_bytes({pickler}.dumps(inputs[index * share:(index + 1) * share]))
    result = []
    for process, conn in workers:
        result += {pickler}.loads(conn.recv_bytes())
        conn.send_bytes(b"")
        process.join()
    assert result == [x * x for x in range({items})]
'''

CONVEYOR = "conveyor.Pool (default: forkserver)"
MP_FORKSERVER = "multiprocessing.Pool (forkserver)"
MP_FORK = "multiprocessing.Pool (fork)"
FLOOR_CLOUDPICKLE = "floor: 2 Processes + pipes (forkserver), cloudpickle"
FLOOR_PICKLE = "floor: 2 Processes + pipes (forkserver), pickle"
ITEMS = 100
"""Inputs of the map: a handful of tiny tasks, so that start-up and shutdown are what is measured."""
FORK_LIMIT = 2.0
"""conveyor may take at most this many times multiprocessing.Pool's time under fork."""


def child_environment() -> dict[str, str]:
    """The caller's environment, with byte-code caches allowed (see the module docstring)."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def program_runner(path: str, env: dict[str, str]) -> Callable[[], Any]:
    """Run ``path`` in a fresh interpreter; True when it exits with 0 (its own assert checked the result)."""
    def run() -> bool:
        done = subprocess.run([sys.executable, path], check=False, env=env, stdin=subprocess.DEVNULL, timeout=120)
        return done.returncode == 0
    return run


def contenders(directory: str, workers: int, items: int, floor: bool = False) -> list[c.Contender]:
    """The programs, written to ``directory``, as contenders of ``run_round_robin``."""
    import multiprocessing

    env = child_environment()
    programs = {CONVEYOR: CONVEYOR_PROGRAM.format(workers=workers, items=items)}
    for method, name in (("forkserver", MP_FORKSERVER), ("fork", MP_FORK)):
        programs[name] = MULTIPROCESSING_PROGRAM.format(method=method, workers=workers, items=items)
    if floor:
        for pickler, name in (("cloudpickle", FLOOR_CLOUDPICKLE), ("pickle", FLOOR_PICKLE)):
            module = f"floor_worker_{pickler}"
            with open(os.path.join(directory, f"{module}.py"), "w") as source:
                source.write(FLOOR_WORKER.format(pickler=pickler))
            programs[name] = FLOOR_PROGRAM.format(pickler=pickler, module=module, workers=workers, items=items)
    out = []
    for index, (name, source) in enumerate(programs.items()):
        path = os.path.join(directory, f"fresh_{index}.py")
        with open(path, "w") as script:
            script.write(source)
        method = "forkserver" if name.startswith("floor") else name[name.index("(") + 1:-1].replace("default: ", "")
        skip = None if method in multiprocessing.get_all_start_methods() else f"no {method} here"
        run = program_runner(path, env)
        out.append(c.Contender(name, run, items, lambda ok: ok is True, skip=skip, warm=run,
                               group="reference" if name != CONVEYOR else ""))
    return out


def verdicts(timings: list[c.Timing]) -> dict[str, tuple[float, str]]:
    """Target name -> (conveyor's median ÷ the reference's median, PASS/FAIL)."""
    by_name = {t.contender.name: t for t in timings}
    mine = by_name.get(CONVEYOR)
    out: dict[str, tuple[float, str]] = {}
    for ref_name, limit in ((MP_FORKSERVER, 1.0), (MP_FORK, FORK_LIMIT)):
        ref = by_name.get(ref_name)
        target = f"<= {limit:g} x {ref_name}"
        if mine is None or ref is None or not mine.ok or not ref.ok:
            out[target] = (float("nan"), "FAIL (not measured)")
            continue
        ratio = mine.median / ref.median
        out[target] = (ratio, "PASS" if ratio <= limit else "FAIL")
    return out


def table(timings: list[c.Timing], workers: int, items: int) -> c.Table:
    by_name = {t.contender.name: t for t in timings}
    columns = ["contender", "median s", "min s", "max s", "÷ mp forkserver", "÷ mp fork"]
    rows, data = [], []
    for t in timings:
        name = t.contender.name
        if not t.ok:
            rows.append([name, "-", "-", "-", "-", t.status])
            data.append({"contender": name, "status": t.status})
            continue
        ratios = []
        for ref_name in (MP_FORKSERVER, MP_FORK):
            ref = by_name.get(ref_name)
            ratios.append(t.median / ref.median if ref is not None and ref.ok else float("nan"))
        rows.append([name, c.fmt_seconds(t.median), c.fmt_seconds(t.best), c.fmt_seconds(t.worst),
                     c.fmt_ratio(ratios[0]), c.fmt_ratio(ratios[1])])
        data.append({"contender": name, "samples": t.samples, "median": t.median, "min": t.best,
                     "max": t.worst, "vs_mp_forkserver": ratios[0], "vs_mp_fork": ratios[1]})
    notes = [("Each sample is one fresh interpreter running the whole program, timed from outside "
              "(start, import, pool, map, close + join, exit); ratios are medians, < 1 is faster.")]
    for target, (ratio, verdict) in verdicts(timings).items():
        notes.append(f"target: conveyor {target}: {c.fmt_ratio(ratio)} {verdict}")
        data.append({"target": f"conveyor {target}", "value": ratio, "verdict": verdict})
    return c.Table(f"COLD. fresh interpreter: start + import + Pool({workers}) + map(square, range({items})) "
                   "+ close/join + exit", columns, rows, notes, data)


def measure(workers: int, items: int, repeat: int, log: Callable[[str], None] | None = None,
            floor: bool = False) -> c.Table:
    with tempfile.TemporaryDirectory(prefix="conveyor-fresh-") as directory:
        timings = c.run_round_robin(contenders(directory, workers, items, floor), repeat, label="fresh", log=log)
    return table(timings, workers, items)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=9, help="runs per contender (default 9)")
    parser.add_argument("--items", type=int, default=ITEMS, help=f"inputs of the map (default {ITEMS})")
    parser.add_argument("--workers", type=int, default=2, help="workers per pool (default 2)")
    parser.add_argument("--floor", action="store_true",
                        help="add the two floor programs (see the module docstring)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    c.print_table(measure(args.workers, args.items, args.repeat, floor=args.floor))
    print(f"\n{time.perf_counter() - started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
