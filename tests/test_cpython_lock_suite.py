"""CPython's own lock and queue tests (``Lib/test/lock_tests.py``, ``Lib/test/test_queue.py``) against
the primitives of ``conveyor.context("thread")`` and ``conveyor.context("process")``.

The files are the running interpreter's, used in place by ``cpython_lock_suite.py`` in a subprocess
(faulthandler ends a test that hangs, with every thread's stack). Every test must pass except the
listed exclusions, which must fail (they still run) and which docs/compat.md explains.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import bounded
from cpython_lock_suite import EXCLUDED, KINDS, LOCK_CLASSES, QUEUE_CLASSES
from cpython_suites import run_cpython_suite

TESTS = Path(__file__).parent
COMPAT = TESTS.parent / "docs" / "compat.md"


def run_suite(kind: str, tmp_path: Path) -> tuple[list[dict], str]:
    """The suite's per-test results and its report, for conveyor's primitives of ``kind``."""
    return run_cpython_suite("cpython_lock_suite.py", ["conveyor", kind], tmp_path, 150,
                             "test.lock_tests, test.test_queue")


def check(kind: str, records: list[dict], report: str) -> None:
    ran = re.search(r"^Ran (\d+) tests?", report, re.MULTILINE)
    assert ran and int(ran.group(1)) == len(records), report[-3000:]
    failed = [f"{r['test']} ({r['outcome']}):\n{r['detail']}" for r in records
              if r["outcome"] not in ("passed", "excluded")]
    assert not failed, "\n\n".join(failed)
    prefix = kind.capitalize()
    excluded = {r["test"][len(prefix):] for r in records if r["outcome"] == "excluded"}
    assert excluded == set(EXCLUDED[kind]), (
        f"exclusions naming no test of this CPython: {set(EXCLUDED[kind]) - excluded}")
    ran_classes = {r["test"].split(".")[0] for r in records}
    missing = [name for name in (*LOCK_CLASSES, *QUEUE_CLASSES) if prefix + name not in ran_classes]
    assert not missing, f"suite classes that did not run: {missing}"


@pytest.mark.timeout(bounded(180))
@pytest.mark.parametrize("kind", KINDS)
def test_cpython_lock_and_queue_suites(tmp_path, kind):
    check(kind, *run_suite(kind, tmp_path))


def test_every_exclusion_is_explained_in_compat_doc():
    text = COMPAT.read_text()
    section = text.split("\n## Primitives", 1)
    assert len(section) == 2, "docs/compat.md has no '## Primitives' section"
    body = section[1].split("\n## ", 1)[0]
    listed = {name: reason for kind in KINDS for name, reason in EXCLUDED[kind].items()}
    rows = dict(re.findall(r"^\| `([\w.]+)` \| [^|]*\| (.+?) \|$", body, re.MULTILINE))
    assert rows == listed, (
        f"docs/compat.md's Primitives table and cpython_lock_suite.EXCLUDED differ:\n"
        f"only in the doc: {sorted(set(rows) - set(listed))}\nonly in the list: {sorted(set(listed) - set(rows))}\n"
        f"different reasons: {sorted(n for n in set(rows) & set(listed) if rows[n] != listed[n])}")


def _records(kind: str, outcomes: dict[str, str]) -> tuple[list[dict], str]:
    """A run's records as the suite writes them: every class ran, every exclusion failed as expected,
    then ``outcomes`` (``Class.test`` → outcome) on top."""
    prefix = kind.capitalize()
    rows = {f"{prefix}{name}.test_x": "passed" for name in (*LOCK_CLASSES, *QUEUE_CLASSES)}
    rows.update({prefix + name: "excluded" for name in EXCLUDED[kind]})
    rows.update({prefix + name: outcome for name, outcome in outcomes.items()})
    records = [{"test": test, "outcome": outcome, "detail": ""} for test, outcome in rows.items()]
    return records, f"Ran {len(records)} tests in 1.0s\n"


def test_the_check_fails_on_a_failure_an_unexpected_success_or_a_stale_exclusion():
    check("process", *_records("process", {}))  # the baseline passes
    with pytest.raises(AssertionError, match="test_timeout"):
        check("process", *_records("process", {"LockTests.test_timeout": "failed"}))
    excluded = next(iter(EXCLUDED["process"]))
    with pytest.raises(AssertionError, match="unexpected success"):
        check("process", *_records("process", {excluded: "unexpected success"}))
    records, _ = _records("process", {})
    stale = [r for r in records if not r["test"].endswith(excluded)]
    with pytest.raises(AssertionError, match="naming no test"):
        check("process", stale, f"Ran {len(stale)} tests in 1.0s\n")


def test_an_interpreter_without_the_test_package_is_reported_with_exit_code_3(tmp_path):
    fake = tmp_path / "fake" / "test"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")  # a `test` package without lock_tests or test_queue
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(fake.parent), str(TESTS)]))
    done = subprocess.run([sys.executable, str(TESTS / "cpython_lock_suite.py"), "conveyor", "thread",
                           str(tmp_path / "results.jsonl")], env=env, capture_output=True, text=True,
                          timeout=bounded(60), check=False)
    assert done.returncode == 3, done.stderr[-2000:]
    assert "no test.lock_tests or test.test_queue" in done.stderr
