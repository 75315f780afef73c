"""Small local clusters for the conformance suite (tests/conformance/), each in a process tree of its own.

Used by test_cluster_conformance.py; also runnable by hand to run any part of the suite on an engine
(the nested pytest gets ``--backend <engine>``)::

    python tests/clusters.py dask tests/conformance/test_primitives.py -x     # extra arguments go to pytest

The cluster's workers get the tests folder on their ``PYTHONPATH``: tasks defined in test modules
are pickled by reference, and on a cluster (as for any user) the workers must be able to import them.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import psutil

TESTS = Path(__file__).resolve().parent

# engine -> (module that must import, a script that starts the cluster, prints as JSON the environment
# a client needs to reach it (the engine's own address variable and, for Ray, its authentication mode),
# and closes the cluster when its stdin closes)
CLUSTERS = {
    "dask": ("distributed", """
        import json, sys
        from conveyor._backends.dask.backend import local_cluster
        if __name__ == "__main__":
            cluster = local_cluster(2)
            print(json.dumps({"DASK_SCHEDULER_ADDRESS": cluster.scheduler_address}), flush=True)
            sys.stdin.read()
            cluster.close()
    """),
    "ray": ("ray", """
        import json, logging, os, sys
        import ray
        if __name__ == "__main__":
            info = ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR)
            auth = {k: v for k, v in os.environ.items() if k.startswith("RAY_AUTH_")}  # set by ray.init
            print(json.dumps({"RAY_ADDRESS": info.address_info["gcs_address"], **auth}), flush=True)
            sys.stdin.read()
            ray.shutdown()
    """),
}


def clean_environment() -> dict[str, str]:
    """This environment without any engine address or choice of backends inherited from a caller."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("DASK_", "RAY_", "CONVEYOR_TEST_BACKEND"))}


@contextlib.contextmanager
def running_cluster(engine: str, wait_seconds: float = 60.0) -> Iterator[dict[str, str]]:
    """Start a 2-worker cluster of ``engine``; yields the environment of a nested run that reaches it
    (the engine's own address setting: a pool or context of the engine attaches to the cluster).
    On exit the cluster is closed and every one of its processes is waited for (killed if need be);
    raises AssertionError if any had to be killed."""
    _, script = CLUSTERS[engine]
    env = clean_environment()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")]))
    cluster = psutil.Popen([sys.executable, "-c", textwrap.dedent(script)], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, text=True, env=env)
    members: list[psutil.Process] = []
    try:
        reached_by = cluster.stdout.readline().strip()
        if not reached_by:
            raise RuntimeError(f"the {engine} cluster did not start")
        members = cluster.children(recursive=True)
        yield {**clean_environment(), **json.loads(reached_by)}
    finally:
        with contextlib.suppress(psutil.NoSuchProcess):
            members += cluster.children(recursive=True)
        cluster.stdin.close()
        try:
            cluster.wait(timeout=wait_seconds)
        except psutil.TimeoutExpired:
            cluster.kill()
        _, alive = psutil.wait_procs(members, timeout=wait_seconds / 2)
        for process in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
    if alive:
        raise AssertionError(f"{engine} cluster processes left after it closed: {alive}")


def nested_pytest(engine: str, arguments: list[str]) -> list[str]:
    """The command of a nested pytest run of the conformance suite on ``engine`` over ``arguments``
    (never this suite's runner itself)."""
    return [sys.executable, "-m", "pytest", "-p", "no:randomly", "-p", "no:cacheprovider",
            "--rootdir", str(TESTS.parent), f"--ignore={TESTS / 'test_cluster_conformance.py'}",
            "--backend", engine, *arguments]


if __name__ == "__main__":
    engine, *arguments = sys.argv[1:]
    with running_cluster(engine) as environment:
        code = subprocess.call(nested_pytest(engine, arguments or [str(TESTS / "conformance")]), env=environment,
                               cwd=TESTS.parent)
    sys.exit(code)
