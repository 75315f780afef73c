"""``backend="auto"``: serial, threads or processes chosen per function by measuring its first calls.

Each test checks the decision (``pool.statistics().backend_statistics.decisions``), that the results
are right and every input ran exactly once (the probed ones are not run again), and that the choice
is said. How fast each choice is, against the best fixed backend, is in benchmarks/bench_auto.py: a
test never asserts a wall-clock figure.
"""

from __future__ import annotations

import logging
import threading
import time

import pytest

import conveyor
import tasks
from conveyor._backends.auto import probe as probing

pytestmark = pytest.mark.timeout(120)


def burn(n: int) -> int:
    """Pure-Python CPU: holds the GIL throughout."""
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


def decisions(pool: conveyor.Pool) -> dict[str, tuple[str, str]]:
    return {name: (backend, reason) for name, backend, reason in pool.statistics().backend_statistics.decisions}


def test_pure_python_cpu_work_goes_to_processes():
    with conveyor.Pool(2, backend="auto") as pool:
        assert pool.map(burn, [100_000] * 24) == [burn(100_000)] * 24
        chosen, reason = decisions(pool)["burn"]
    assert chosen == "process", reason
    assert "GIL" in reason


def test_waiting_work_goes_to_many_threads():
    with conveyor.Pool(backend="auto") as pool:  # the pool's size is left to conveyor
        assert pool.map(tasks.sleep_then, range(1000), [0.01] * 1000) == list(range(1000))
        chosen, reason = decisions(pool)["sleep_then"]
        stats = pool.statistics()
    assert chosen == "thread", reason
    assert "waiting" in reason
    threads = dict(stats.backend_statistics.backends)["thread"]
    assert threads.workers_alive + threads.workers_replaced >= 32  # many threads for waiting work
    assert stats["succeeded"] == 1000 and stats["submitted"] == 1000


def test_an_unpicklable_closure_goes_to_threads_and_says_why():
    lock = threading.Lock()
    calls = []

    def guarded(n):  # a closure over a lock: cannot be pickled
        with lock:
            calls.append(n)
            return burn(n)

    with conveyor.Pool(2, backend="auto") as pool:
        assert pool.map(guarded, [50_000] * 20) == [burn(50_000)] * 20
        chosen, reason = decisions(pool)["test_an_unpicklable_closure_goes_to_threads_and_says_why.<locals>.guarded"]
    assert chosen == "thread", reason
    assert "cannot be pickled" in reason
    assert len(calls) == 20  # each input ran once: the probed ones were not run again


def test_tiny_work_stays_serial():
    with conveyor.Pool(2, backend="auto") as pool:
        assert pool.map(abs, range(-5000, 5000)) == [abs(x) for x in range(-5000, 5000)]
        chosen, reason = decisions(pool)["abs"]
        stats = pool.statistics()
    assert chosen == "serial", reason
    assert stats["succeeded"] == 10_000 and stats["failed"] == 0


def test_every_input_runs_once_and_failures_stay_at_their_inputs(tmp_path):
    path = tmp_path / "lines"
    with conveyor.Pool(2, backend="auto") as pool:
        outputs = pool.imap(tasks.fail_on, range(40), chunksize=1)
        seen = []
        for _ in range(40):
            try:
                seen.append(next(outputs))
            except ValueError:
                seen.append("failed")
        assert seen == [x if x != 3 else "failed" for x in range(40)]
        pool.map(tasks.append_line, [str(path)] * 30)
    assert len(tasks.lines_appended(path)) == 30


def test_the_decision_is_fixed_after_the_probe_and_logged(caplog):
    switch = threading.Event()

    def changes(x):  # waits at first, computes once switched
        if not switch.is_set():
            time.sleep(0.005)
            return x
        burn(20_000)
        return x

    with caplog.at_level(logging.DEBUG, logger="conveyor"):
        with conveyor.Pool(2, backend="auto") as pool:
            assert pool.map(changes, range(50)) == list(range(50))
            first = decisions(pool)
            switch.set()
            assert pool.map(changes, range(50)) == list(range(50))
            assert decisions(pool) == first  # the same function keeps its first choice
    assert list(first.values())[0][0] == "thread"
    assert any("backend='auto' chose thread" in record.getMessage() for record in caplog.records)


def test_submit_and_the_async_api_work_on_auto():
    import asyncio

    with conveyor.Pool(2, backend="auto") as pool:
        assert pool.submit(burn, 1000).result() == burn(1000)

        async def main():
            return [value async for value in pool.amap(tasks.square, range(100))]

        assert asyncio.run(main()) == [x * x for x in range(100)]


def test_a_free_threaded_interpreter_runs_computing_work_on_threads(monkeypatch):
    # Free-threaded builds are not installable here: the rule is checked on measured readings.
    computing = probing.Probe(calls=10, wall=0.05, cpu=0.05, in_calls=0.05, gil_share=1.0)
    assert probing.choose(computing).backend == "process"
    monkeypatch.setattr("sys._is_gil_enabled", lambda: False, raising=False)
    decision = probing.choose(computing)
    assert decision.backend == "thread" and "without the GIL" in decision.reason


def test_conveyor_map_is_auto_unless_a_backend_is_configured(monkeypatch):
    assert conveyor.map(abs, [-1, -2, 3]) == [1, 2, 3]
    from conveyor._core import config

    assert config.one_shot_backend() == "auto"
    with conveyor.config(backend="thread"):
        assert config.one_shot_backend() == "thread"


def test_a_pool_closed_while_it_probes_finishes_the_work_and_leaves_nothing():
    pool = conveyor.Pool(2, backend="auto")
    results = pool.map_async(tasks.slow_identity, range(20))
    pool.close()
    pool.join()
    assert results.get(30) == list(range(20))
    # the autouse leak check: no thread or process of the chosen backend is left


def test_a_pool_killed_while_it_probes_cancels_what_waits():
    pool = conveyor.Pool(2, backend="auto")
    futures = [pool.submit(tasks.sleep_then, x, 0.2) for x in range(10)]
    time.sleep(0.05)
    pool.shutdown(wait=True, kill=True)
    outcomes = [f.exception(30) for f in futures]
    stopped = [e for e in outcomes if isinstance(e, (conveyor.TaskCancelledError, conveyor.PoolClosedError))]
    assert len(stopped) >= len(futures) - 2, outcomes  # only what the probe was running may have finished
    assert all(e is None or e in stopped for e in outcomes), outcomes
    time.sleep(0.5)  # the probe's call (in this process) ends on its own


def test_a_pipeline_stage_on_auto_chooses_for_its_function():
    pipeline = conveyor.Pipeline(range(40)).map(burn, backend="auto").map(tasks.square, backend="thread")
    assert pipeline.run() == [burn(x) ** 2 for x in range(40)]
    assert pipeline.statistics()["stages"][0]["backend"] == "auto"


def _count_and_burn(data):
    return len(data) + burn(3_000)


def test_inputs_that_cost_more_to_send_than_to_compute_stay_in_threads():
    lists = [list(range(1_000_000))] * 6  # ~5 MB pickled each, for ~0.2 ms of work
    with conveyor.Pool(2, backend="auto") as pool:
        assert pool.map(_count_and_burn, lists) == [1_000_000 + burn(3_000)] * 6
        chosen, reason = decisions(pool)["_count_and_burn"]
    assert chosen == "thread", reason
    assert "sending a call's input and result to another process" in reason


def test_statistics_name_the_choice_as_soon_as_a_short_map_returns():
    with conveyor.Pool(2, backend="auto") as pool:
        assert pool.map(tasks.square, range(5)) == [0, 1, 4, 9, 16]
        assert "square" in decisions(pool)  # the probe, waiting for more inputs, decides at once
