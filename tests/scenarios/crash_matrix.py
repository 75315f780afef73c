"""One row of the crash matrix: every fault kind at one place, on one backend and start method.

Run as ``python -m scenarios.crash_matrix BACKEND METHOD PLACE`` from the tests folder; prints one JSON
list, one record per fault kind: what error the affected task got and how fast, whether the other
tasks' results were right, whether the pool then served new work, and the pool's accounting.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import conveyor
from scenarios.faults import KINDS, FailsToPickle, FailsToUnpickle, applies, fault

GOOD = 10
BAD_AT = 5


def work(x: Any) -> Any:
    """Square ints; for a ``(action, kind)`` tuple, fail in that way."""
    if isinstance(x, tuple):
        action, kind = x
        if action == "fault":
            return fault(kind)
        if action == "result_fails_to_pickle":
            return FailsToPickle(kind)
        if action == "result_fails_to_unpickle":
            return FailsToUnpickle(kind)
    return x * x


def bad_input(place: str, kind: str) -> Any:
    return {
        "task_body": lambda: ("fault", kind),
        "pickle_task": lambda: FailsToPickle(kind),
        "unpickle_task": lambda: FailsToUnpickle(kind),
        "pickle_result": lambda: ("result_fails_to_pickle", kind),
        "unpickle_result": lambda: ("result_fails_to_unpickle", kind),
    }[place]()


def describe(error: BaseException) -> dict[str, Any]:
    return {"type": type(error).__name__, "message": str(error)[:300]}


def accounting(pool: conveyor.Pool) -> bool:
    stats = pool.statistics()
    return stats["in_flight"] == 0 and stats["submitted"] == stats["succeeded"] + stats["failed"] + stats["cancelled"]


def one_cell(pool: conveyor.Pool, place: str, kind: str) -> dict[str, Any]:
    items: list[Any] = list(range(GOOD))
    items.insert(BAD_AT, bad_input(place, kind))
    # 1. as one task of a chunked map: the other inputs of its batch must come back right.
    outcomes: list[Any] = []
    started = time.monotonic()
    error_seconds = None
    iterator = pool.imap(work, items, chunksize=4)
    while True:
        try:
            outcomes.append(next(iterator))
        except StopIteration:
            break
        except BaseException as exc:  # noqa: BLE001 - the injected fault, whatever its kind
            error_seconds = time.monotonic() - started
            outcomes.append(exc)
    errors = [i for i, o in enumerate(outcomes) if isinstance(o, BaseException)]
    others_ok = [o for i, o in enumerate(outcomes) if i != BAD_AT] == [x * x for x in range(GOOD)]
    map_error = describe(outcomes[BAD_AT]) if errors == [BAD_AT] else {"type": f"errors at {errors}"}
    # 2. alone, through submit: the time to the error is measured from submission.
    started = time.monotonic()
    future = pool.submit(work, bad_input(place, kind))
    try:
        future.result(timeout=60)
        submit_error: dict[str, Any] = {"type": "no error"}
    except BaseException as exc:  # noqa: BLE001
        submit_error = describe(exc)
    submit_seconds = time.monotonic() - started
    # 3. the pool goes on serving.
    serves = pool.map(work, range(20)) == [x * x for x in range(20)]
    return {"kind": kind, "map_error": map_error, "submit_error": submit_error, "others_ok": others_ok,
            "serves_after": serves, "map_seconds": error_seconds, "submit_seconds": submit_seconds}


def initializer_cell(backend: str, method: str | None, kind: str) -> dict[str, Any]:
    started = time.monotonic()
    with conveyor.Pool(2, backend=backend, start_method=method, initializer=fault, initargs=(kind,)) as pool:
        try:
            pool.submit(work, 2).result(timeout=60)
            first: dict[str, Any] = {"type": "no error"}
        except BaseException as exc:  # noqa: BLE001
            first = describe(exc)
        seconds = time.monotonic() - started
        again_started = time.monotonic()
        try:
            pool.submit(work, 3)
            again: dict[str, Any] = {"type": "accepted"}
        except BaseException as exc:  # noqa: BLE001
            again = describe(exc)
        again_seconds = time.monotonic() - again_started
    return {"kind": kind, "submit_error": first, "submit_seconds": seconds, "resubmit_error": again,
            "resubmit_seconds": again_seconds, "accounting_ok": accounting(pool)}


def run(backend: str, method: str | None, place: str) -> list[dict[str, Any]]:
    kinds = [kind for kind in KINDS if applies(backend, kind, place)]
    if place == "initializer":
        return [initializer_cell(backend, method, kind) for kind in kinds]
    results = []
    with conveyor.Pool(2, backend=backend, start_method=method) as pool:
        for kind in kinds:
            results.append(one_cell(pool, place, kind))
    ok = accounting(pool)
    for result in results:
        result["accounting_ok"] = ok
    return results


if __name__ == "__main__":
    backend, method, place = sys.argv[1], sys.argv[2], sys.argv[3]
    print(json.dumps(run(backend, None if method == "-" else method, place)))
