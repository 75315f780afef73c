"""Random cells of the crash matrix, again and again, on pools of random sizes and start methods.

Run as ``python -m scenarios.stress SEED COUNT`` from the tests folder; prints a JSON summary. Each
cell must give the documented error, keep the other results right and keep the pool serving.
"""

from __future__ import annotations

import json
import multiprocessing
import random
import sys

import conveyor
from scenarios.crash_matrix import one_cell
from scenarios.faults import KINDS, PLACES, applies

EXPECTED_KINDS = {"raise": "InjectedError", "keyboard": "KeyboardInterrupt", "sysexit": "SystemExit"}


def expected(kind: str, place: str) -> str:
    if kind in ("exit", "segv", "kill"):
        return "WorkerCrashedError"
    if place == "task_body":
        return EXPECTED_KINDS[kind]
    return "PicklingError" if place.startswith("pickle") else "UnpicklingError"


def main(seed: int, count: int) -> dict[str, object]:
    rng = random.Random(seed)
    methods = multiprocessing.get_all_start_methods()
    places = [place for place in PLACES if place != "initializer"]
    problems, cells = [], 0
    while cells < count:
        method = rng.choice(methods)
        with conveyor.Pool(rng.randint(1, 3), backend="process", start_method=method) as pool:
            for _ in range(rng.randint(1, 4)):
                kind, place = rng.choice(KINDS), rng.choice(places)
                if not applies("process", kind, place):
                    continue
                cells += 1
                result = one_cell(pool, place, kind)
                want = expected(kind, place)
                ok = (result["map_error"]["type"] == want and result["submit_error"]["type"] == want
                      and result["others_ok"] and result["serves_after"])
                if not ok:
                    problems.append({"method": method, "place": place, "kind": kind, "result": result})
        stats = pool.statistics()
        if stats["in_flight"] or stats["submitted"] != stats["succeeded"] + stats["failed"] + stats["cancelled"]:
            problems.append({"method": method, "accounting": stats})
    return {"cells": cells, "problems": problems}


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]), int(sys.argv[2]))))
