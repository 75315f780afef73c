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
import tempfile
from pathlib import Path

import pytest

import conveyor
from conftest import bounded
from sessions import end_session

TESTS = Path(__file__).parent


def run_in_own_session(command: list[str], cwd: Path, env: dict[str, str],
                       seconds: float) -> subprocess.CompletedProcess[str]:
    """``subprocess.run(command)`` with its output in files and in a session of its own, which is
    killed when the command ends: a process a failed test left behind (a manager, a pool's worker)
    can neither hold the output open, keeping the caller waiting, nor outlive the test."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=err, text=True,
                                   start_new_session=True)
        try:
            process.wait(timeout=seconds)
        finally:
            end_session(process)
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(command, process.returncode, out.read(), err.read())


def run_cpython_suite(script: str, args: list[str], tmp_path: Path, seconds: float,
                      missing: str) -> tuple[list[dict], str]:
    """``python TESTS/script *args RESULTS``: the per-test records and the unittest report."""
    results = tmp_path / "results.jsonl"
    env = dict(os.environ)
    source = str(Path(conveyor.__file__).resolve().parent.parent)  # the conveyor under test, not another
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [source, str(TESTS), env.get("PYTHONPATH")]))
    done = run_in_own_session([sys.executable, str(TESTS / script), *args, str(results)], TESTS, env,
                              bounded(seconds))
    if done.returncode == 3:
        pytest.skip(f"{sys.executable} has no test package ({missing}): install the interpreter's test "
                    "suite (Debian/Ubuntu: libpython3.X-testsuite) to run CPython's own tests")
    records = [json.loads(line) for line in results.read_text().splitlines()] if results.exists() else []
    assert done.returncode == 0, (
        f"the suite did not finish (a hang is reported with every thread's stack); last results: "
        f"{records[-3:]}\n{done.stderr[-6000:]}")
    return records, done.stderr
