"""A third-party backend can run the conformance suite: a slice of it, in a pytest of its own, on the
backend that tests/conformance/example_plugin.py registers (``--backend-plugin``, ``--backend``)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import bounded

TESTS = Path(__file__).resolve().parent
SLICE = (
    "test_map_returns_list_in_input_order or test_lock_acquire_release_and_timeout or test_event"
    " or test_range_with_module_function_in_order"  # in a fresh interpreter: the plugin is imported there too
)


@pytest.mark.timeout(240)
def test_a_plugin_backend_runs_a_slice_of_the_conformance_suite():
    command = [sys.executable, "-m", "pytest", "-v", "-p", "no:randomly", "-p", "no:cacheprovider",
               "--rootdir", str(TESTS.parent), str(TESTS / "conformance"),
               "--backend-plugin", "conformance.example_plugin", "--backend", "thirdparty-thread", "-k", SLICE]
    run = subprocess.run(command, capture_output=True, text=True, timeout=bounded(180), cwd=TESTS.parent,
                         check=False)
    summary = (run.stdout.strip().splitlines() or [""])[-1]
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    passed = re.search(r"(\d+) passed", summary)
    assert passed and int(passed.group(1)) > 0, summary
    assert "failed" not in summary and "error" not in summary, summary
    ran = re.findall(r"^tests/conformance/\S+\[(\S+)\] PASSED", run.stdout, re.MULTILINE)
    assert ran and set(ran) == {"thirdparty-thread"}, run.stdout[-6000:]  # on the plugin's backend only


def test_an_unknown_backend_is_a_usage_error_that_names_it():
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(TESTS.parent),
               str(TESTS / "conformance"), "--backend", "no-such-backend", "--collect-only"]
    run = subprocess.run(command, capture_output=True, text=True, timeout=bounded(60), cwd=TESTS.parent,
                         check=False)
    assert run.returncode == 4, run.stdout[-3000:] + run.stderr[-3000:]  # pytest's usage error
    assert "no-such-backend" in run.stderr
