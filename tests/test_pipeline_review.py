"""Review of Pipeline and Feed on fixed backends: reproductions of bugs found by trying to break them
(each test is bounded; the autouse leak check in conftest.py also applies). The part run on every
backend is in conformance/test_pipeline_review.py."""

from __future__ import annotations

import resource
import threading
import time

import pytest

import conveyor
import tasks
from conftest import bounded

pytestmark = pytest.mark.timeout(60)


def _passthrough(items):
    for item in items:
        yield item


def test_an_idle_pipeline_waiting_on_a_slow_source_burns_no_cpu():
    def source():
        for value in range(3):
            time.sleep(0.7)
            yield value

    pipe = (conveyor.Pipeline(source())
            .map(tasks.identity, workers=4, backend="thread")
            .map(tasks.identity, workers=2, backend="process")
            .batch(2)
            .map(_passthrough, backend="thread"))
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.monotonic()
    assert pipe.run() == [[0, 1], [2]]
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert wall < 2.1 + bounded(1.5)
    assert cpu < 0.25 * wall, (cpu, wall)


def test_items_from_a_slow_source_are_not_held_back_by_lost_wake_ups():
    """Each item must come out while the source holds back the next one: a lost wake-up anywhere
    (a feed, a stream, a pool) would leave the item waiting for the next arrival, which never comes
    until it is delivered. No latency bound: the wait is for the item itself, however busy the machine."""
    received = [threading.Event() for _ in range(8)]

    def source():
        for value in range(8):
            yield value
            if not received[value].wait(bounded(20)):
                raise AssertionError(f"item {value} was held back until the next one came")

    pipe = (conveyor.Pipeline(source())
            .map(tasks.identity, workers=3, backend="process")
            .map(tasks.identity, workers=3, backend="thread")
            .map(tasks.identity, backend="serial"))
    got = []
    for value in pipe:
        got.append(value)
        received[value].set()
    assert got == list(range(8))


def test_every_item_failing_with_collect_gives_an_empty_result_and_every_failure():
    pipe = conveyor.Pipeline(range(100), errors="collect").map(_always_fails, workers=2, backend="process",
                                                               ordered=False)
    assert pipe.run() == []
    assert sorted(f.item for f in pipe.errors) == list(range(100))
    assert pipe.statistics()["stages"][0]["failed"] == 100


def _always_fails(x):
    raise ValueError(x)


def test_the_same_pipeline_iterated_concurrently_gives_each_run_everything():
    pipe = conveyor.Pipeline(range(300)).map(tasks.slow_identity, workers=8, backend="thread").map(tasks.identity, backend="process")
    results = {}

    def run(key):
        results[key] = pipe.run()

    threads = [threading.Thread(target=run, args=(key,)) for key in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(bounded(30))
    assert results == {key: list(range(300)) for key in range(3)}


def test_a_process_generator_stage_that_cannot_be_started_leaves_nothing_behind():
    lock = threading.Lock()

    def uses_a_lock(items):          # closes over a lock: cannot be sent to a process
        with lock:
            pass
        yield from items

    with pytest.raises(Exception, match="pickle"):  # noqa: PT011
        conveyor.Pipeline(range(10)).map(tasks.identity, backend="thread").map(uses_a_lock, workers=2,
                                                                      backend="process").run()


def test_a_finished_process_generator_stage_releases_its_queues_while_the_pipeline_is_kept():
    """The stage's two process queues (shared memory, descriptors) stayed open for as long as the
    Pipeline object lived (``_last`` → the run's cleanups), e.g. while one reads its statistics."""
    import gc
    import os

    from conftest import _in_use_elsewhere

    def segments():
        return {name for name in os.listdir("/dev/shm") if name.startswith("psm_")}

    before = segments()
    pipe = conveyor.Pipeline(range(20)).map(_passthrough, workers=2, backend="process")
    assert sorted(pipe.run()) == list(range(20))
    gc.collect()
    left = segments() - before
    left -= _in_use_elsewhere(left)
    assert not left
    assert pipe.statistics()["stages"][0]["items_in"] == 20


def _fails_to_rebuild():
    raise RuntimeError("this value cannot be rebuilt")


class _Unrebuildable:
    def __reduce__(self):
        return (_fails_to_rebuild, ())


def _yields_an_unrebuildable_fifth(items):
    for item in items:
        yield _Unrebuildable() if item == 5 else item


@pytest.mark.parametrize("errors", ["raise", "collect"])
def test_a_process_generator_stage_value_that_cannot_be_unpickled_stops_the_pipeline(errors):
    """The collector of a generator stage on processes took every error of its outbox for 'empty' and
    dropped the value without a word, even with errors='raise'."""
    pipe = conveyor.Pipeline(range(10), errors=errors).map(_yields_an_unrebuildable_fifth, backend="process",
                                                           workers=1)
    with pytest.raises(RuntimeError, match="cannot be rebuilt"):
        pipe.run()
    assert [type(failure.error) for failure in pipe.errors] == [RuntimeError]


def _count_then_fail_slowly(args):
    attempts, item = args
    with attempts.get_lock():
        attempts.value += 1
    time.sleep(1.0)
    raise ValueError(f"bad {item}")


def test_a_stage_retries_a_raise_like_pool_imap_each_attempt_with_its_own_time_limit():
    """The stage function used to be retried inside the task as well as by the pool: (retries + 1)²
    attempts, under one time limit for all of them, reported as a timeout instead of the raise."""
    attempts = conveyor.context("process").Value("i", 0)
    pipe = conveyor.Pipeline([(attempts, 1)], errors="collect").map(
        _count_then_fail_slowly, backend="process", workers=1, retries=2, task_timeout=2.5)
    assert pipe.run() == []
    assert [type(failure.error) for failure in pipe.errors] == [ValueError]
    assert attempts.value == 3
