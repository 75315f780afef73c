"""Pipelines on every combination of the local backends (a stage on each): results, order, errors raised
or collected, a stage worker killed, the consumer stopping early, a failing source, an infinite source
with a bounded consumer, Ctrl-C, and statistics. Single-backend pipelines: conformance/test_pipeline.py."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

import conveyor
from conveyor._core.chunking import MAX_UNSIZED
from conftest import bounded

pytestmark = pytest.mark.timeout(90)

COMBINATIONS = {
    "thread-process-thread": ("thread", "process", "thread"),
    "process-process": ("process", "process", "process"),
    "serial": ("serial", "serial", "serial"),
    "thread-serial-process": ("thread", "serial", "process"),
}


def _expected(items):
    out = []
    for x in items:
        y = x * 2 + 1
        if y % 3:
            out.extend([y, -y])
    return [sum(out[i:i + 4]) for i in range(0, len(out), 4)]


@pytest.mark.parametrize("backends", COMBINATIONS.values(), ids=COMBINATIONS.keys())
def test_map_filter_flat_map_batch_keep_order_on_every_combination(backends):
    first, second, third = backends
    pipe = (conveyor.Pipeline(range(300))
            .map(lambda x: x * 2, workers=3, backend=first)
            .map(lambda x: x + 1, workers=2, backend=second)
            .filter(lambda y: y % 3, backend=third)
            .flat_map(lambda y: (y, -y), backend=first)
            .batch(4)
            .map(sum, backend=second, maxsize=2))
    assert pipe.run() == _expected(range(300))
    stats = pipe.statistics()
    assert [s["items_in"] for s in stats["stages"]][:3] == [300, 300, 300]
    assert stats["stages"][2]["dropped"] == 100


def test_a_pipeline_can_be_run_again_and_extended_without_changing_the_original():
    base = conveyor.Pipeline(range(5)).map(lambda x: x + 1, backend="thread")
    longer = base.map(lambda x: x * 10, backend="thread")
    assert base.run() == [1, 2, 3, 4, 5]
    assert longer.run() == [10, 20, 30, 40, 50]
    assert base.run() == [1, 2, 3, 4, 5]
    total = []
    assert longer.run(sink=total.append) == 5 and total == [10, 20, 30, 40, 50]


def _fail_on_13(x):
    if x == 13:
        raise ValueError(f"bad item {x}")
    return x


def _three_stages(source, backends, middle, **options):
    first, second, third = backends
    return (conveyor.Pipeline(source, **options)
            .map(lambda x: x, workers=2, backend=first)
            .map(middle, workers=2, backend=second, name="checker")
            .map(lambda x: x, workers=2, backend=third))


@pytest.mark.parametrize("backends", COMBINATIONS.values(), ids=COMBINATIONS.keys())
def test_a_failing_item_stops_everything_and_is_raised_with_its_stage_and_input(backends):
    backend = backends[1]
    pipe = _three_stages(itertools.count(), backends, _fail_on_13)  # infinite: only the failure ends it
    started = time.monotonic()
    with pytest.raises(ValueError, match="bad item 13") as raised:
        for _ in pipe:
            pass
    assert time.monotonic() - started < bounded(20)
    assert any("'checker'" in note and "13" in note for note in raised.value.__notes__)
    [failure] = pipe.errors
    assert failure.stage == "checker" and failure.item == 13
    if backend == "process":
        assert isinstance(raised.value.__cause__, conveyor.RemoteTraceback)


@pytest.mark.parametrize("backends", COMBINATIONS.values(), ids=COMBINATIONS.keys())
def test_collected_failures_are_reported_and_the_rest_goes_on(backends):
    pipe = _three_stages(range(40), backends, _fail_on_13, errors="collect")
    assert pipe.run() == [x for x in range(40) if x != 13]
    [failure] = pipe.errors
    assert failure.item == 13 and isinstance(failure.error, ValueError)
    assert pipe.statistics()["stages"][1]["failed"] == 1


def _die_on_7(x):
    if x == 7:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


WITH_A_PROCESS_STAGE = {name: backends for name, backends in COMBINATIONS.items() if backends[1] == "process"}


@pytest.mark.parametrize("backends", WITH_A_PROCESS_STAGE.values(), ids=WITH_A_PROCESS_STAGE.keys())
def test_a_stage_worker_killed_is_a_failure_of_its_item(backends):
    """(A SIGKILL in a thread or serial stage would kill the caller itself: only process stages.)"""
    pipe = _three_stages(range(30), backends, _die_on_7, errors="collect")
    assert pipe.run() == [x for x in range(30) if x != 7]
    [failure] = pipe.errors
    assert isinstance(failure.error, conveyor.WorkerCrashedError) and "7" in (failure.item_repr or "")
    with pytest.raises(conveyor.WorkerCrashedError):
        _three_stages(range(30), backends, _die_on_7).run()


def _slow(x):
    time.sleep(0.05)
    return x


@pytest.mark.parametrize("backends", COMBINATIONS.values(), ids=COMBINATIONS.keys())
def test_the_consumer_stopping_early_stops_every_stage(backends):
    pipe = _three_stages(itertools.count(), backends, _slow).map(lambda x: x + 1, backend=backends[2])
    started = time.monotonic()
    got = []
    for value in pipe:
        got.append(value)
        if len(got) == 10:
            break
    assert got == list(range(1, 11))
    assert time.monotonic() - started < bounded(20)
    # the autouse leak check then finds no thread and no process left


def _failing_source(at):
    for value in range(100):
        if value == at:
            raise RuntimeError(f"source broke at {at}")
        yield value


@pytest.mark.parametrize("at", [0, 50])
@pytest.mark.parametrize("backends", COMBINATIONS.values(), ids=COMBINATIONS.keys())
def test_a_source_that_raises_is_raised_to_the_consumer_after_what_came_before(at, backends):
    got = []
    with pytest.raises(RuntimeError, match=f"source broke at {at}") as raised:
        for value in _three_stages(_failing_source(at), backends, lambda x: x):
            got.append(value)
    assert any("source" in note for note in raised.value.__notes__)
    assert got == list(range(len(got))) and len(got) <= at


@pytest.mark.parametrize("backends", COMBINATIONS.values(), ids=COMBINATIONS.keys())
def test_an_infinite_source_with_a_slow_consumer_is_held_back_by_the_bounded_feeds(backends):
    pulled = itertools.count()

    def source():
        while True:
            yield next(pulled)

    first, second, third = backends
    pipe = (conveyor.Pipeline(source(), maxsize=4)
            .map(lambda x: x, workers=2, backend=first, maxsize=8)
            .map(lambda x: x, workers=2, backend=second, maxsize=8)
            .map(lambda x: x, workers=2, backend=third, maxsize=8))
    iterator = iter(pipe)
    first = [next(iterator) for _ in range(5)]
    time.sleep(1.0)                         # the consumer dawdles: the stages must wait, not pile up
    held_back = next(pulled)
    time.sleep(0.5)
    assert next(pulled) - held_back == 1    # nothing more was pulled while we waited
    # Bounded by design, not by timing: the source's feed, then per stage its feed and its stream's
    # window (_core/stream.py: 2 * workers + 2 batches of at most MAX_UNSIZED inputs). How far below
    # that it stays depends on the batch sizes the sizer chose, which depend on the machine's load.
    assert held_back <= 4 + 3 * (8 + (2 * 2 + 2) * MAX_UNSIZED), held_back
    iterator.close()
    assert first == list(range(5))


def test_statistics_name_the_slowest_stage_as_the_bottleneck():
    pipe = (conveyor.Pipeline(range(60))
            .map(lambda x: x, workers=2, backend="thread", name="quick")
            .map(_slow, workers=1, backend="thread", name="slow", maxsize=4)
            .map(lambda x: x, workers=2, backend="thread", name="sink"))
    pipe.run()
    stats = pipe.statistics()
    assert stats["bottleneck"] == "slow"
    slow = stats["stages"][1]
    assert slow["busy_seconds"] >= 60 * 0.05 * 0.9 and slow["utilization"] > 0.5
    assert stats["stages"][0]["blocked_on_output"] > 0   # held back by the slow stage


def test_bad_arguments_fail_at_once():
    with pytest.raises(TypeError):
        conveyor.Pipeline(5)
    with pytest.raises(ValueError):
        conveyor.Pipeline([], errors="ignore")
    with pytest.raises(TypeError):
        conveyor.Pipeline([]).map("not callable")
    with pytest.raises(ValueError):
        conveyor.Pipeline([]).map(abs, workers=0)
    with pytest.raises(ValueError):
        conveyor.Pipeline([]).batch(0)


@pytest.mark.timeout(60)
def test_ctrl_c_stops_every_stage_and_leaves_no_process():
    script = textwrap.dedent("""
        import itertools, os, sys, time
        import conveyor

        def slow(x):
            time.sleep(0.01)
            return x

        if __name__ == "__main__":
            pipe = (conveyor.Pipeline(itertools.count())
                    .map(slow, workers=4, backend="thread")
                    .map(slow, workers=2, backend="process")
                    .map(lambda x: x, backend="thread"))
            try:
                for i, value in enumerate(pipe):
                    if i == 20:
                        print("RUNNING", flush=True)
            except KeyboardInterrupt:
                print("INTERRUPTED", flush=True)
                sys.exit(0)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == "RUNNING"
        descendants = psutil.Process(proc.pid).children(recursive=True)
        assert descendants, "the process stage should have worker processes"
        sent = time.monotonic()
        os.kill(proc.pid, signal.SIGINT)
        assert proc.stdout.readline().strip() == "INTERRUPTED"
        assert proc.wait(timeout=bounded(10)) == 0
        assert time.monotonic() - sent < bounded(5)
        gone, alive = psutil.wait_procs(descendants, timeout=bounded(5))
        assert not alive, f"left behind: {alive}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stdout.close()


def _hang_on_3(x):
    if x == 3:
        time.sleep(60)
    return x


def test_a_stage_task_timeout_fails_only_the_item_that_hung():
    pipe = conveyor.Pipeline(range(8), errors="collect").map(_hang_on_3, workers=2, backend="process",
                                                            task_timeout=0.5)
    started = time.monotonic()
    assert pipe.run() == [0, 1, 2, 4, 5, 6, 7]
    assert time.monotonic() - started < bounded(20)
    [failure] = pipe.errors
    assert isinstance(failure.error, conveyor.TaskTimeoutError)


def test_a_stage_with_retries_runs_a_crashing_item_again(tmp_path):
    """``retries`` covers what the pool can retry: here a worker that dies on an item's first try."""
    pipe = conveyor.Pipeline([(x, str(tmp_path)) for x in range(6)]).map(
        _die_first_time, workers=2, backend="process", retries=1)
    assert pipe.run() == list(range(6))


def _die_first_time(args):
    x, folder = args
    marker = os.path.join(folder, str(x))
    if x == 2 and not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    return x
