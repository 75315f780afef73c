"""CPython's own Pool tests (``_TestPool``, ``_TestPoolWorkerErrors``, ``_TestPoolWorkerLifetime`` of
``Lib/test/_test_multiprocessing.py``) against ``conveyor.multiprocessing.Pool`` and ``ThreadPool``.

The file is the running interpreter's, used in place by ``cpython_pool_suite.py`` in a subprocess
(faulthandler ends a test that hangs, with every thread's stack). Every test must pass except the
listed exclusions, each of which docs/compat.md explains. The default start method runs always; the
others with ``--all-start-methods``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import START_METHODS, bounded
from conveyor._core.config import default_start_method
from cpython_pool_suite import CLASSES, EXCLUDED
from cpython_suites import run_cpython_suite

COMPAT = Path(__file__).parent.parent / "docs" / "compat.md"
DEFAULT = default_start_method()
OTHERS = [method for method in START_METHODS if method != DEFAULT]


def run_suite(method: str, tmp_path: Path) -> tuple[list[dict], str]:
    """The suite's per-test results and its report, under one start method."""
    return run_cpython_suite("cpython_pool_suite.py", ["conveyor", method], tmp_path, 240,
                             "test._test_multiprocessing")


def check(records: list[dict], report: str) -> None:
    ran = re.search(r"^Ran (\d+) tests?", report, re.M)
    assert ran and int(ran.group(1)) == len(records), report[-3000:]
    failed = [f"{r['test']}:\n{r['detail']}" for r in records if r["outcome"] == "failed"]
    assert not failed, "\n\n".join(failed)
    excluded = {r["test"].rsplit(".", 1)[1] for r in records if r["detail"].startswith("excluded: ")}
    assert excluded == set(EXCLUDED), f"exclusions naming no test of this CPython: {set(EXCLUDED) - excluded}"
    passed = {r["test"].split(".")[0] for r in records if r["outcome"] == "passed"}
    for class_name in CLASSES:  # every class really ran, on processes (and threads where it has them)
        assert "WithProcesses" + class_name[1:] in passed, sorted(passed)
    assert "WithThreadsTestPool" in passed, sorted(passed)


@pytest.mark.timeout(bounded(300))
def test_cpython_pool_suite_default_start_method(tmp_path):
    check(*run_suite(DEFAULT, tmp_path))


@pytest.mark.all_start_methods
@pytest.mark.timeout(bounded(300))
@pytest.mark.parametrize("method", OTHERS)
def test_cpython_pool_suite_other_start_methods(tmp_path, method):
    check(*run_suite(method, tmp_path))


def test_every_exclusion_is_explained_in_compat_doc():
    text = COMPAT.read_text()
    section = text.split("## multiprocessing.Pool", 1)
    assert len(section) == 2, "docs/compat.md has no '## multiprocessing.Pool' section"
    body = section[1].split("\n## ", 1)[0]
    missing = [name for name in EXCLUDED if f"`{name}`" not in body]
    assert not missing, f"excluded from CPython's Pool tests but not explained in docs/compat.md: {missing}"
