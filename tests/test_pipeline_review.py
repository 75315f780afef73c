"""Review of Pipeline and Feed: reproductions of bugs found by trying to break them (each test is
bounded; the autouse leak check in conftest.py also applies)."""

from __future__ import annotations

import itertools
import resource
import threading
import time

import pytest

import conveyor
from conftest import backends, bounded

pytestmark = pytest.mark.timeout(60)


def _ident(x):
    return x


def _slow(x):
    time.sleep(0.02)
    return x


def _first_three(items):
    for _, item in zip(range(3), items):
        yield item


@pytest.mark.parametrize("backend", backends("thread", "process"))
def test_a_generator_stage_that_stops_reading_early_finishes_at_once_and_leaves_nothing(backend):
    """The output ends normally while the stages before the generator stage are still blocked putting
    into its feed: the normal end used to join them for STOP_SECONDS (5 s) and then leave them
    (threads, and the upstream pool's workers) running forever."""
    pipe = (conveyor.Pipeline(range(10_000))
            .map(_ident, workers=2, backend="process")
            .map(_first_three, backend=backend))
    outputs = iter(pipe)
    assert [next(outputs) for _ in range(3)] == [0, 1, 2]
    # Timed from the last output, not from the start: what is measured is the end, not how long the
    # stage's backend takes to start its workers (seconds for a Ray actor).
    ended = time.monotonic()
    assert list(outputs) == []
    assert time.monotonic() - ended < bounded(3)
    # the autouse leak check finds no thread and no process left


def _failing_source(at):
    for value in range(100):
        if value == at:
            raise RuntimeError(f"source broke at {at}")
        yield value


@pytest.mark.parametrize("backend", backends("thread", "process", "serial"))
def test_a_source_that_raises_delivers_every_item_before_it(backend):
    """docs/pipelines.md: "An exception raised by the source itself always stops the pipeline: the items
    before it are delivered, then it is raised." They were dropped (the feeds closed at once)."""
    got = []
    pipe = conveyor.Pipeline(_failing_source(50)).map(_slow, workers=2, backend=backend).map(_ident, backend="thread")
    with pytest.raises(RuntimeError, match="source broke at 50") as raised:
        for value in pipe:
            got.append(value)
    assert got == list(range(50))
    assert any("source" in note for note in raised.value.__notes__)


def _fails_on_13(items):
    for item in items:
        if item == 13:
            raise ValueError("generator broke on 13")
        yield item


@pytest.mark.parametrize("backend", backends("thread", "process"))
@pytest.mark.parametrize("errors", ["raise", "collect"])
def test_a_generator_stage_failure_names_its_stage_and_is_recorded(backend, errors):
    """A generator stage's exception was raised bare: no note naming the stage, ``pipe.errors`` empty
    and ``failed`` 0 in the statistics (and, with errors="collect", nothing said why it still raised)."""
    pipe = conveyor.Pipeline(itertools.count(), errors=errors).map(_fails_on_13, workers=2, backend=backend,
                                                                   name="gen")
    with pytest.raises(ValueError, match="generator broke on 13") as raised:
        for _ in pipe:
            pass
    assert any("'gen'" in note for note in raised.value.__notes__)
    [failure] = pipe.errors
    assert failure.stage == "gen" and failure.error is raised.value
    assert pipe.statistics()["stages"][0]["failed"] == 1


def _broken_start():
    raise RuntimeError("on_start broke")


@pytest.mark.parametrize("backend", backends("thread", "process", "serial"))
def test_a_stage_error_without_an_input_does_not_claim_input_none(backend):
    """An error that belongs to no item (an ``on_start`` that raises) was noted as
    "failed on input None" (thread, process) or not attributed to any stage at all (serial)."""
    pipe = conveyor.Pipeline(range(10)).map(_ident, backend=backend, on_start=_broken_start, name="starter")
    with pytest.raises(Exception) as raised:  # noqa: PT011 - InitializerError, whatever its wording
        pipe.run()
    notes = getattr(raised.value, "__notes__", [])
    assert any("'starter'" in note for note in notes), notes
    assert not any("input None" in note for note in notes), notes
    [failure] = pipe.errors
    assert failure.stage == "starter"


def _passthrough(items):
    for item in items:
        yield item


@pytest.mark.parametrize("backend", backends("thread", "process"))
def test_a_generator_stage_waiting_on_its_input_is_not_busy(backend):
    """A generator stage's busy time was the wall time of its worker (waiting on input included), so a
    pass-through stage behind a slow one showed utilization 1.0 and could be named the bottleneck."""
    pipe = (conveyor.Pipeline(range(60))
            .map(_slow, workers=1, backend="thread", name="slow")
            .map(_passthrough, workers=1, backend=backend, name="gen"))
    assert pipe.run() == list(range(60))
    stats = pipe.statistics()
    assert stats["bottleneck"] == "slow"
    assert stats["stages"][1]["utilization"] < 0.5, stats


def test_an_idle_pipeline_waiting_on_a_slow_source_burns_no_cpu():
    def source():
        for value in range(3):
            time.sleep(0.7)
            yield value

    pipe = (conveyor.Pipeline(source())
            .map(_ident, workers=4, backend="thread")
            .map(_ident, workers=2, backend="process")
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
            .map(_ident, workers=3, backend="process")
            .map(_ident, workers=3, backend="thread")
            .map(_ident, backend="serial"))
    got = []
    for value in pipe:
        got.append(value)
        received[value].set()
    assert got == list(range(8))


@pytest.mark.parametrize("backend", backends("thread", "process"))
def test_a_pipeline_as_the_source_of_another_stops_with_it(backend):
    inner = conveyor.Pipeline(itertools.count()).map(_ident, workers=2, backend=backend)
    outer = conveyor.Pipeline(inner).map(lambda x: x * 2, backend="thread")
    got = []
    for value in outer:
        got.append(value)
        if len(got) == 20:
            break
    assert got == [2 * x for x in range(20)]


def test_every_item_failing_with_collect_gives_an_empty_result_and_every_failure():
    pipe = conveyor.Pipeline(range(100), errors="collect").map(_always_fails, workers=2, backend="process",
                                                               ordered=False)
    assert pipe.run() == []
    assert sorted(f.item for f in pipe.errors) == list(range(100))
    assert pipe.statistics()["stages"][0]["failed"] == 100


def _always_fails(x):
    raise ValueError(x)


def test_the_same_pipeline_iterated_concurrently_gives_each_run_everything():
    pipe = conveyor.Pipeline(range(300)).map(_slow, workers=8, backend="thread").map(_ident, backend="process")
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
        conveyor.Pipeline(range(10)).map(_ident, backend="thread").map(uses_a_lock, workers=2,
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


def _on_start_raises():
    raise RuntimeError("on_start failed")


@pytest.mark.parametrize("backend", backends("thread", "process"))
def test_a_stage_whose_workers_cannot_start_stops_even_an_endless_pipeline_in_collect_mode(backend):
    """A broken pool fails every item it is given: in collect mode each was recorded as one item's
    failure, so a finite pipeline gave [] and an endless one never finished."""
    pipe = conveyor.Pipeline(itertools.count(), errors="collect").map(_ident, backend=backend, workers=2,
                                                                      on_start=_on_start_raises)
    with pytest.raises(conveyor.InitializerError):
        pipe.run()
    assert len(pipe.errors) == 1


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
