"""Review of Pipeline and Feed on each chosen backend: reproductions of bugs found by trying to break
them (each test is bounded; the autouse leak check in tests/conftest.py also applies). The rest of the
review, on fixed backends, is in tests/test_pipeline_review.py."""

from __future__ import annotations

import itertools
import time

import pytest

import conveyor
import tasks
from conftest import bounded

pytestmark = pytest.mark.timeout(60)


def _first_three(items):
    for _, item in zip(range(3), items):
        yield item


@pytest.mark.needs("in_background")
def test_a_generator_stage_that_stops_reading_early_finishes_at_once_and_leaves_nothing(backend):
    """The output ends normally while the stages before the generator stage are still blocked putting
    into its feed: the normal end used to join them for STOP_SECONDS (5 s) and then leave them
    (threads, and the upstream pool's workers) running forever."""
    pipe = (conveyor.Pipeline(range(10_000))
            .map(tasks.identity, workers=2, backend="process")
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


def test_a_source_that_raises_delivers_every_item_before_it(backend):
    """docs/pipelines.md: "An exception raised by the source itself always stops the pipeline: the items
    before it are delivered, then it is raised." They were dropped (the feeds closed at once)."""
    got = []
    pipe = conveyor.Pipeline(_failing_source(50)).map(tasks.slow_identity, workers=2, backend=backend).map(tasks.identity, backend="thread")
    with pytest.raises(RuntimeError, match="source broke at 50") as raised:
        for value in pipe:
            got.append(value)  # noqa: PERF402 - what came before the raise
    assert got == list(range(50))
    assert any("source" in note for note in raised.value.__notes__)


def _fails_on_13(items):
    for item in items:
        if item == 13:
            raise ValueError("generator broke on 13")
        yield item


@pytest.mark.needs("in_background")
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


def test_a_stage_error_without_an_input_does_not_claim_input_none(backend):
    """An error that belongs to no item (an ``on_start`` that raises) was noted as
    "failed on input None" (thread, process) or not attributed to any stage at all (serial)."""
    pipe = conveyor.Pipeline(range(10)).map(tasks.identity, backend=backend, on_start=_broken_start, name="starter")
    with pytest.raises(Exception) as raised:  # InitializerError, whatever its wording
        pipe.run()
    notes = getattr(raised.value, "__notes__", [])
    assert any("'starter'" in note for note in notes), notes
    assert not any("input None" in note for note in notes), notes
    [failure] = pipe.errors
    assert failure.stage == "starter"


def _passthrough(items):
    yield from items


@pytest.mark.needs("in_background")
def test_a_generator_stage_waiting_on_its_input_is_not_busy(backend):
    """A generator stage's busy time was the wall time of its worker (waiting on input included), so a
    pass-through stage behind a slow one showed utilization 1.0 and could be named the bottleneck."""
    pipe = (conveyor.Pipeline(range(60))
            .map(tasks.slow_identity, workers=1, backend="thread", name="slow")
            .map(_passthrough, workers=1, backend=backend, name="gen"))
    assert pipe.run() == list(range(60))
    stats = pipe.statistics()
    assert stats["bottleneck"] == "slow"
    assert stats["stages"][1]["utilization"] < 0.5, stats


@pytest.mark.needs("in_background")
def test_a_pipeline_as_the_source_of_another_stops_with_it(backend):
    inner = conveyor.Pipeline(itertools.count()).map(tasks.identity, workers=2, backend=backend)
    outer = conveyor.Pipeline(inner).map(lambda x: x * 2, backend="thread")
    got = []
    for value in outer:
        got.append(value)
        if len(got) == 20:
            break
    assert got == [2 * x for x in range(20)]


def _on_start_raises():
    raise RuntimeError("on_start failed")


@pytest.mark.needs("in_background")
def test_a_stage_whose_workers_cannot_start_stops_even_an_endless_pipeline_in_collect_mode(backend):
    """A broken pool fails every item it is given: in collect mode each was recorded as one item's
    failure, so a finite pipeline gave [] and an endless one never finished."""
    pipe = conveyor.Pipeline(itertools.count(), errors="collect").map(tasks.identity, backend=backend, workers=2,
                                                                      on_start=_on_start_raises)
    with pytest.raises(conveyor.InitializerError):
        pipe.run()
    assert len(pipe.errors) == 1
