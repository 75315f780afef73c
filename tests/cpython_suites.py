"""Running one of CPython's own test suites against conveyor, in a subprocess (the ``cpython_*_suite.py``
scripts), and reading back its per-test results.

The script gets the conveyor under test (not another installed copy) and this folder on its path. It
writes one JSON line per test as the test ends, and exits with 3 when the interpreter has no
``test`` package: the caller's test is then skipped, with ``missing`` saying what to install.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import conveyor
from conftest import bounded

TESTS = Path(__file__).parent


def run_cpython_suite(script: str, args: list[str], tmp_path: Path, seconds: float,
                      missing: str) -> tuple[list[dict], str]:
    """``python TESTS/script *args RESULTS``: the per-test records and the unittest report."""
    results = tmp_path / "results.jsonl"
    env = dict(os.environ)
    source = str(Path(conveyor.__file__).resolve().parent.parent)  # the conveyor under test, not another
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [source, str(TESTS), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, str(TESTS / script), *args, str(results)],
        cwd=TESTS, env=env, capture_output=True, text=True, timeout=bounded(seconds), check=False,
    )
    if done.returncode == 3:
        pytest.skip(f"{sys.executable} has no test package ({missing}): install the interpreter's test "
                    "suite (Debian/Ubuntu: libpython3.X-testsuite) to run CPython's own tests")
    records = [json.loads(line) for line in results.read_text().splitlines()] if results.exists() else []
    assert done.returncode == 0, (
        f"the suite did not finish (a hang is reported with every thread's stack); last results: "
        f"{records[-3:]}\n{done.stderr[-6000:]}")
    return records, done.stderr
