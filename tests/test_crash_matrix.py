"""The crash matrix: {raise, KeyboardInterrupt, sys.exit, os._exit, segfault, SIGKILL} × {pickling the
task, unpickling it in the worker, the initializer, the task body, pickling the result, unpickling it
in the caller}, on every backend and start method where the fault can be isolated at all.

Each row runs in a subprocess (``scenarios/crash_matrix.py``), so a hang fails that row only. Each cell
must give the affected task a documented error within 5 s, return every other task's result, keep
serving new work (a failing initializer instead makes ``submit`` raise at once), and keep the
accounting exact.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import START_METHODS, bounded
from scenarios.faults import CRASHES, KINDS, PLACES, applies

pytestmark = pytest.mark.timeout(300)

TESTS = Path(__file__).parent
ERROR_SECONDS = 5.0

ROWS = [("process", method, place) for method in START_METHODS for place in PLACES]
ROWS += [(backend, "-", place) for backend in ("thread", "serial") for place in ("task_body", "initializer")]


def expected_error(kind: str, place: str) -> str:
    """The documented error for each cell (docs/reliability.md)."""
    if place == "initializer":
        return "InitializerError"
    crashed = kind in CRASHES
    if place == "task_body":
        return "WorkerCrashedError" if crashed else {"raise": "InjectedError", "keyboard": "KeyboardInterrupt",
                                                     "sysexit": "SystemExit"}[kind]
    if place in ("pickle_task", "pickle_result"):
        return "WorkerCrashedError" if crashed else "PicklingError"
    return "WorkerCrashedError" if crashed else "UnpicklingError"


def run_row(backend: str, method: str, place: str) -> list[dict]:
    done = subprocess.run(
        [sys.executable, "-X", "faulthandler", "-m", "scenarios.crash_matrix", backend, method, place],
        cwd=TESTS, capture_output=True, text=True, timeout=bounded(240),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("backend,method,place", ROWS, ids=["-".join(row) for row in ROWS])
def test_crash_matrix_row(backend, method, place):
    results = run_row(backend, method, place)
    kinds = [kind for kind in KINDS if applies(backend, kind, place)]
    assert [r["kind"] for r in results] == kinds
    for result in results:
        kind = result["kind"]
        want = expected_error(kind, place)
        where = f"{backend}/{method}/{place}/{kind}"
        assert result["submit_error"]["type"] == want, (where, result)
        assert result["submit_seconds"] < bounded(ERROR_SECONDS), (where, result)
        assert result["accounting_ok"], (where, result)
        if place == "initializer":
            assert result["resubmit_error"]["type"] == want, (where, result)
            assert result["resubmit_seconds"] < bounded(0.5), (where, result)  # a broken pool says so at once
            continue
        assert result["map_error"]["type"] == want, (where, result)
        assert result["map_seconds"] < bounded(ERROR_SECONDS), (where, result)
        assert result["others_ok"], (where, result)
        assert result["serves_after"], (where, result)
        if want == "WorkerCrashedError":
            assert "worker process" in result["submit_error"]["message"], (where, result)
