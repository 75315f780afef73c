"""Stress: random crash-matrix cells over and over, and a churn of short tasks while workers are
SIGKILLed every half second. Short by default; ``CONVEYOR_STRESS=N`` multiplies the work (for a long
run before a release: ``CONVEYOR_STRESS=50 python -m pytest tests/test_stress.py``).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

import conveyor
import tasks
from conftest import bounded

SCALE = int(os.environ.get("CONVEYOR_STRESS", "1"))
pytestmark = pytest.mark.timeout(300 * SCALE)


def test_random_crash_cells_again_and_again():
    seed = random.randrange(10**6)
    done = subprocess.run([sys.executable, "-m", "scenarios.stress", str(seed), str(12 * SCALE)],
                          cwd=Path(__file__).parent, capture_output=True, text=True, timeout=bounded(240 * SCALE))
    assert done.returncode == 0, (seed, done.stderr[-3000:])
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["cells"] >= 12 * SCALE
    assert not summary["problems"], (seed, summary["problems"])


def test_churn_with_a_worker_killed_every_half_second():
    total = 3000 * SCALE
    kills = []
    stop = threading.Event()
    with conveyor.Pool(2, backend="process", retries=2) as pool:

        def killer():
            while not stop.wait(0.5):
                pids = pool.statistics()["worker_pids"]
                if pids:
                    victim = random.choice(pids)
                    try:
                        os.kill(victim, signal.SIGKILL)
                        kills.append(victim)
                    except ProcessLookupError:
                        pass

        thread = threading.Thread(target=killer)
        thread.start()
        try:
            started = time.monotonic()
            results = Counter(pool.imap_unordered(tasks.sleep_then, range(total), [0.001] * total))
        finally:
            stop.set()
            thread.join()
        seconds = time.monotonic() - started
        stats = pool.statistics()
    assert results == Counter(range(total)), "every input exactly once"
    assert len(kills) >= min(3, int(seconds / 0.5) - 1), (kills, seconds)
    assert stats["failed"] == 0 and stats["in_flight"] == 0, stats
    assert stats["workers_crashed"] >= 1, stats
