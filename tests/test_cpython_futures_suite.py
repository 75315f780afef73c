"""CPython's own ``test_concurrent_futures`` executor tests against ``conveyor.futures``.

The package is CPython 3.13's, used in place from that interpreter's install (the default Python of
the project may lack it): ``CONVEYOR_CPYTHON_TESTS_PYTHON`` names the interpreter, or the newest
``$(pyenv root)/versions/3.13*`` is used; without one the tests skip, saying why. The suite runs in a
virtual environment of that interpreter built here (``.cpython-tests/``, git-ignored, rebuilt when
pyproject.toml or the interpreter changes) with conveyor installed from this checkout, by
``cpython_futures_suite.py`` in a subprocess, each test module in a process of its own under a
per-test faulthandler watchdog. Every test must pass except the listed exclusions, each of which must
exist, still fail, and be explained in docs/compat.md. Threads and processes under the default start
method run always; fork, forkserver and spawn with ``--all-start-methods``.
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import json
import os
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from conftest import START_METHODS, bounded
from conveyor._core.config import default_start_method
from cpython_futures_suite import DELIBERATE, EXCLUDED, PRIVATE, SUBSTITUTE_VARIABLE
from cpython_suites import run_in_own_session

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
COMPAT = ROOT / "docs" / "compat.md"
CACHE = ROOT / ".cpython-tests"
DEFAULT = default_start_method()
OTHERS = [method for method in START_METHODS if method != DEFAULT]
PTH = (f'import os, sys; os.environ.get("{SUBSTITUTE_VARIABLE}") and (sys.path.append(os.environ['
       f'"{SUBSTITUTE_VARIABLE}"]) or __import__("cpython_futures_suite").substitute())\n')
"""Makes every interpreter of the environment use conveyor's executors while the suite runs (the
package's shutdown tests start child interpreters of their own)."""


def _interpreter() -> str | None:
    named = os.environ.get("CONVEYOR_CPYTHON_TESTS_PYTHON")
    if named:
        return named
    try:
        root = subprocess.run(["pyenv", "root"], capture_output=True, text=True, timeout=30, check=False).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        root = ""
    root = root or os.path.expanduser("~/.pyenv")
    found = sorted(glob.glob(os.path.join(root, "versions", "3.13*", "bin", "python3.13")))
    return found[-1] if found else None


def _environment(python: str) -> Path:
    """The suite's virtual environment, built (once, under a lock) if missing or stale."""
    stamp = hashlib.sha256()
    for part in (os.path.realpath(python), (ROOT / "pyproject.toml").read_text(), PTH):
        stamp.update(part.encode())
    CACHE.mkdir(exist_ok=True)
    venv = CACHE / f"venv-{Path(python).name}"
    with open(CACHE / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        stamp_file = venv / "conveyor-stamp"
        if stamp_file.exists() and stamp_file.read_text() == stamp.hexdigest():
            return venv
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([python, "-m", "venv", str(venv)], check=True, timeout=bounded(300))
        subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "-e", str(ROOT)],
                       check=True, timeout=bounded(600))
        site = subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                              check=True, capture_output=True, text=True).stdout.strip()
        Path(site, "conveyor_cpython_futures_suite.pth").write_text(PTH)
        stamp_file.write_text(stamp.hexdigest())
    return venv


def suite_python() -> str:
    python = _interpreter()
    if python is None or not os.path.exists(python):
        pytest.skip("no Python 3.13 for CPython's test_concurrent_futures: set CONVEYOR_CPYTHON_TESTS_PYTHON "
                    "or install 3.13 with pyenv")
    has = subprocess.run([python, "-c", "import test.test_concurrent_futures.util"], capture_output=True,
                         timeout=bounded(60), check=False)
    if has.returncode != 0:
        pytest.skip(f"{python} has no test.test_concurrent_futures (install its test suite)")
    return str(_environment(python) / "bin" / "python")


def run_suite(target: str, kind: str, tmp_path: Path) -> list[dict]:
    """The suite's per-test results for one executor kind (``thread`` or a start method)."""
    python = suite_python()
    results = tmp_path / f"{target}-{kind}.jsonl"
    env = {name: value for name, value in os.environ.items() if not name.startswith("CONVEYOR_START")}
    env["PYTHONPATH"] = str(TESTS)
    if kind != "thread":
        env["CONVEYOR_START_METHOD"] = kind  # the default for pools made without mp_context
    done = run_in_own_session([python, str(TESTS / "cpython_futures_suite.py"), target, kind, str(results)],
                              tmp_path, env, bounded(1500))
    records = [json.loads(line) for line in results.read_text().splitlines()] if results.exists() else []
    assert done.returncode == 0, (f"a module's run ended early (a hang is reported with every thread's "
                                  f"stack): {[r for r in records if r['outcome'] == 'failed'][-3:]}\n"
                                  f"{done.stderr[-6000:]}")
    return records


def check(records: list[dict], kind: str) -> None:
    """Every test passes but the exclusions: each test excluded for a private attribute was skipped
    in some class (the suite skips it only where its source still reads the attribute), each
    deliberate difference ran here and failed."""
    family = "thread" if kind == "thread" else "process"
    outcomes = {record["test"]: record for record in records}
    counts = Counter(record["outcome"] for record in records)
    print(f"CPython test_concurrent_futures on conveyor, {kind}: {dict(counts)}")
    by_method: dict[str, list[dict]] = {}
    for test, record in outcomes.items():
        by_method.setdefault(test.rsplit(".", 1)[-1], []).append(record)
    deliberate = {name for name, (kinds, _) in DELIBERATE.items() if family in kinds}
    private = {name for name, (kinds, _) in PRIVATE.items() if family in kinds}
    broken = [f"{test}:\n{record['detail']}" for test, record in outcomes.items()
              if record["outcome"] == "failed" and test.rsplit(".", 1)[-1] not in deliberate]
    assert not broken, "\n\n".join(broken)
    missing = (deliberate | private) - set(by_method)
    assert not missing, f"exclusions naming no test of this CPython on {kind}: {missing}"
    passing = sorted(record["test"] for name in deliberate for record in by_method[name]
                     if record["outcome"] != "failed")
    assert not passing, f"deliberate differences that now pass (remove them from the lists and docs): {passing}"
    # (A class whose test of that name reads no private attribute runs it, and it must pass above.)
    stale = sorted(name for name in private
                   if not any(record["detail"].startswith("excluded: ") for record in by_method[name]))
    assert not stale, f"excluded for a private attribute no test of that name reads any more: {stale}"
    assert counts["passed"] > 0


@pytest.mark.timeout(bounded(1800))
@pytest.mark.parametrize("kind", ["thread", DEFAULT])
def test_cpython_futures_suite_default(tmp_path, kind):
    check(run_suite("conveyor", kind, tmp_path), kind)


@pytest.mark.all_start_methods
@pytest.mark.timeout(bounded(1800))
@pytest.mark.parametrize("method", OTHERS)
def test_cpython_futures_suite_other_start_methods(tmp_path, method):
    check(run_suite("conveyor", method, tmp_path), method)


def test_every_exclusion_is_explained_in_compat_doc():
    text = COMPAT.read_text()
    section = text.split("## concurrent.futures", 1)
    assert len(section) == 2, "docs/compat.md has no '## concurrent.futures' section"
    body = section[1].split("\n## ", 1)[0]
    missing = [name for name in EXCLUDED if f"`{name}`" not in body]
    assert not missing, f"excluded from CPython's executor tests but not explained in docs/compat.md: {missing}"
    documented = {name for name in body.split("`") if name.startswith("test_")}
    assert documented <= set(EXCLUDED), f"docs/compat.md explains tests that are not excluded: " \
                                        f"{documented - set(EXCLUDED)}"
