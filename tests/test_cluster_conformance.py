"""The conformance suite (tests/conformance/: Pool methods, primitives, TaskGroup, pipelines,
finalizers, the CLI) on the cluster engines: ``pytest tests/conformance --backend dask`` (resp. ray).

Each engine gets one small local cluster, started in a process tree of its own (so the suite's leak
check does not count the engine's processes as ours; see clusters.py), and a nested pytest run of the
suite on that backend, whose pools and contexts attach to the cluster through the engine's own address
setting. Which tests apply follows the engine's declared capabilities, as for any backend. Afterwards
no process of the cluster may be left. An engine that is not installed is skipped with the reason.
"""

from __future__ import annotations

import faulthandler
import importlib.util
import subprocess

import pytest

from clusters import CLUSTERS, TESTS, nested_pytest, running_cluster
from conftest import bounded

SUITE_MINUTES = 20  # a guard against a hang: quiet, Dask takes about 2 minutes and Ray 4; three times that beside two busy loops


@pytest.mark.timeout(SUITE_MINUTES * 60 + 180)
@pytest.mark.parametrize("engine", sorted(CLUSTERS))
def test_the_conformance_suite_passes_on(engine):
    # A run of minutes by design: no hang diagnostics (faulthandler_timeout) for it; its own timeouts,
    # and every nested test's, still hold.
    faulthandler.cancel_dump_traceback_later()
    module = CLUSTERS[engine][0]
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{engine} is not installed here (pip install \"conveyor[{engine}]\")")
    with running_cluster(engine) as environment:
        run = subprocess.run(nested_pytest(engine, ["-q", str(TESTS / "conformance")]), env=environment,
                             capture_output=True, text=True, timeout=bounded(SUITE_MINUTES * 60), cwd=TESTS.parent,
                             check=False)
    summary = (run.stdout.strip().splitlines() or [""])[-1]
    print(f"{engine}: {summary}")
    assert run.returncode == 0, run.stdout[-12000:] + run.stderr[-4000:]
    assert " passed" in summary and "failed" not in summary and "error" not in summary, summary
