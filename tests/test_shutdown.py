"""The shutdown grid: wait × cancel_futures × kill, with tasks running and more queued.

- kill: returns within 5 s; running tasks fail with a CancelledError; queued ones are cancelled.
- cancel_futures: running tasks finish; nothing starts after shutdown returns.
- neither: every task completes.
Also checked: accounting, and no start recorded after a cancelling shutdown returned.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import time
from pathlib import Path

import pytest

import conveyor
import tasks
from conftest import bounded

pytestmark = pytest.mark.timeout(120)

TASKS, SECONDS, WORKERS = 8, 0.6, 2
GRID = list(itertools.product(("process", "thread"), (True, False), (True, False), (True, False)))


def _starts(directory: Path) -> dict[int, float]:
    return {int(p.name.split("-")[1]): float(p.read_text()) for p in directory.glob("start-*")}


@pytest.mark.parametrize("backend,wait,cancel,kill", GRID,
                         ids=[f"{b}-wait{int(w)}-cancel{int(c)}-kill{int(k)}" for b, w, c, k in GRID])
def test_shutdown_grid(tmp_path, backend, wait, cancel, kill):
    pool = conveyor.Pool(WORKERS, backend=backend)
    futures = [pool.submit(tasks.record_start_and_sleep, i, str(tmp_path), SECONDS) for i in range(TASKS)]
    time.sleep(0.25)
    started = time.monotonic()
    pool.shutdown(wait=wait, cancel_futures=cancel, kill=kill)
    returned = time.monotonic()
    took = returned - started
    if kill:
        assert took < bounded(5.0)
    elif not wait:
        assert took < bounded(0.5)
    elif not cancel:
        assert all(f.done() for f in futures)
    done, not_done = concurrent.futures.wait(futures, timeout=bounded(30))
    assert not not_done
    outcomes = []
    for future in futures:
        if future.cancelled():
            outcomes.append("cancelled")
        elif isinstance(future.exception(), concurrent.futures.CancelledError):
            outcomes.append("stopped")
        else:
            assert future.result() in range(TASKS)
            outcomes.append("done")
    starts = _starts(tmp_path)
    if kill or cancel:
        # Nothing starts after a cancelling shutdown returns (a few ms of slack for the file write).
        late = {i: t - returned for i, t in starts.items() if t > returned + 0.05}
        assert not late, (outcomes, late)
        assert outcomes.count("done") <= len(starts)
        assert "cancelled" in outcomes or "stopped" in outcomes, outcomes
    else:
        assert outcomes == ["done"] * TASKS
    if kill:
        assert "done" not in outcomes[:WORKERS] or backend == "thread" and outcomes[:WORKERS].count("done") == 0
    stats = pool.statistics()
    assert stats["in_flight"] == 0, stats
    assert stats["submitted"] == stats["succeeded"] + stats["failed"] + stats["cancelled"], stats
    assert stats["cancelled"] == outcomes.count("cancelled") + outcomes.count("stopped"), (stats, outcomes)
