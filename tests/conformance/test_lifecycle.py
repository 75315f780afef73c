"""Lifetimes at their edges, on each chosen backend whose tasks run in the background: shutting down
while work is still moving, pools nobody holds on to. Each test is a regression test for a hang, a
lost task or a wrong count found in review (more, specific to one engine, in tests/test_lifecycle.py).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time

import pytest

import conveyor
import tasks
from conftest import bounded

pytestmark = pytest.mark.timeout(90)


@pytest.mark.needs("in_background")
def test_submissions_racing_shutdown_all_complete(backend):
    pool = conveyor.Pool(2, backend=backend)
    futures, refused = [], []

    def keep_submitting():
        for i in range(300):
            try:
                futures.append(pool.submit(tasks.square, i))
            except conveyor.PoolClosedError:
                refused.append(i)

    feeder = threading.Thread(target=keep_submitting)
    feeder.start()
    time.sleep(0.01)
    pool.shutdown(wait=True)
    feeder.join()
    for future in futures:
        try:
            future.result(timeout=bounded(20))
        except conveyor.PoolClosedError:
            pass
    stats = pool.statistics()
    assert stats["in_flight"] == 0, stats
    assert len(futures) + len(refused) == 300


@pytest.mark.needs("in_background")
def test_imap_on_a_pool_nobody_holds(backend):
    assert sum(conveyor.Pool(2, backend=backend).imap(tasks.square, range(1000))) == sum(x * x for x in range(1000))


@pytest.mark.needs("in_background")
def test_work_submitted_before_close_finishes_at_interpreter_exit(tmp_path, backend, prelude):
    script = textwrap.dedent(f"""
        {prelude}
        import sys
        sys.path.insert(0, {str(tasks.__file__.rsplit('/', 1)[0])!r})
        import conveyor, tasks
        if __name__ == "__main__":
            pool = conveyor.Pool(2, backend={backend!r})
            for i in range(6):
                pool.submit(tasks.record_start_and_sleep, i, {str(tmp_path)!r}, 0.2)
            pool.close()
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=bounded(60),
                          check=False)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert len(list(tmp_path.glob("start-*"))) == 6
