"""statistics() returns frozen, typed records that still read as the mappings they used to be."""

from __future__ import annotations

import dataclasses

import pytest

import conveyor


def square(x):
    return x * x


def fails_on_three(x):
    if x == 3:
        raise ValueError("three")
    return x


def check_record(stats):
    """Attribute and mapping access agree on every key; the record cannot be changed."""
    assert dataclasses.is_dataclass(stats)
    as_dict = dict(stats)
    assert as_dict, "a record shows its fields"
    assert list(stats.keys()) == list(as_dict)
    assert len(stats) == len(as_dict)
    for key, value in as_dict.items():
        assert key in stats
        assert stats[key] == value
        assert stats.get(key) == value
    assert stats == as_dict and as_dict == stats
    assert stats != {**as_dict, "extra": 1}
    assert "no_such_counter" not in stats
    assert stats.get("no_such_counter", "default") == "default"
    with pytest.raises(KeyError):
        stats["no_such_counter"]
    first = next(iter(as_dict))
    with pytest.raises(TypeError):
        stats[first] = 0  # type: ignore[index]
    return as_dict


@pytest.mark.parametrize("backend", ["serial", "thread", "process"])
def test_pool_statistics_is_a_frozen_record_that_reads_as_a_mapping(backend):
    with conveyor.Pool(2, backend=backend) as pool:
        assert pool.map(square, range(10)) == [x * x for x in range(10)]
        stats = pool.statistics()
    assert isinstance(stats, conveyor.PoolStatistics)
    as_dict = check_record(stats)
    # attribute access, typed fields
    assert stats.submitted == stats["submitted"] == 10
    assert stats.succeeded == 10 and stats.failed == 0 and stats.cancelled == 0
    assert stats.in_flight == stats["in_flight"] == 0
    assert stats.backend == backend and stats.workers == pool.workers
    assert stats.submitted == stats.succeeded + stats.failed + stats.cancelled + stats.in_flight
    # frozen
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.in_flight = 5  # type: ignore[misc]
    assert stats.in_flight == 0
    # the backend's own record reads flat in the mapping, after the pool's counters
    details = stats.backend_statistics
    assert isinstance(details, conveyor.BackendStatistics)
    assert "backend_statistics" not in stats
    assert list(as_dict)[:10] == ["submitted", "succeeded", "failed", "cancelled", "in_flight", "retried",
                                  "rerun_after_loss", "busy_seconds", "backend", "workers"]
    for key, value in details.items():
        assert stats[key] == value == getattr(details, key)


def test_each_backend_reports_its_own_typed_record():
    expected = {"serial": conveyor.BackendStatistics, "thread": conveyor.ThreadStatistics,
                "process": conveyor.ProcessStatistics}
    for backend, kind in expected.items():
        with conveyor.Pool(2, backend=backend) as pool:
            pool.map(square, range(4))
            details = pool.statistics().backend_statistics
        assert type(details) is kind, (backend, type(details))
        if len(details):  # the serial backend's base record has no fields
            check_record(details)
        else:
            assert dict(details) == {} and details == {}
        assert dict(details) == {field.name: getattr(details, field.name) for field in dataclasses.fields(details)}


def test_process_statistics_fields_are_always_there_and_immutable():
    with conveyor.Pool(2, backend="process") as pool:
        pool.map(square, range(4))
        stats = pool.statistics()
        pids = stats["worker_pids"]
    details = stats.backend_statistics
    assert isinstance(details, conveyor.ProcessStatistics)
    assert stats["workers_crashed"] == details.workers_crashed == 0  # present although nothing crashed
    assert details.workers_started >= 2 and stats["workers_started"] == details.workers_started
    assert isinstance(pids, tuple) and len(pids) == 2 and all(isinstance(pid, int) for pid in pids)
    assert details.start_method == stats["start_method"] != ""
    with pytest.raises(dataclasses.FrozenInstanceError):
        details.workers_crashed = 1  # type: ignore[misc]


def test_equality_with_an_equal_dict_and_a_different_one():
    stats = conveyor.ThreadStatistics(workers_alive=2, workers_replaced=0, queued_batches=1)
    assert stats == {"workers_alive": 2, "workers_replaced": 0, "queued_batches": 1}
    assert stats != {"workers_alive": 2, "workers_replaced": 0, "queued_batches": 2}
    assert stats != {"workers_alive": 2, "workers_replaced": 0}
    assert stats == conveyor.ThreadStatistics(2, 0, 1)
    assert stats != [("workers_alive", 2)]


def test_pool_statistics_count_failures():
    with conveyor.Pool(2, backend="thread") as pool:
        futures = [pool.submit(fails_on_three, x) for x in range(5)]
        outcomes = [future.exception() for future in futures]
        stats = pool.statistics()
    assert sum(isinstance(error, ValueError) for error in outcomes) == 1
    assert stats.failed == stats["failed"] >= 1
    assert stats.submitted == stats.succeeded + stats.failed + stats.cancelled + stats.in_flight


def test_pipeline_statistics_are_records_of_stage_records():
    pipe = (conveyor.Pipeline(range(30))
            .map(square, backend="thread", workers=2, name="square")
            .filter(lambda x: x % 2 == 0, backend="serial", name="even"))
    empty = pipe.statistics()
    assert isinstance(empty, conveyor.PipelineStatistics)
    assert empty == {"stages": (), "bottleneck": None, "seconds": 0.0}
    assert pipe.run() == [x * x for x in range(30) if x % 2 == 0]
    stats = pipe.statistics()
    assert isinstance(stats, conveyor.PipelineStatistics)
    check_record(stats)
    assert stats.bottleneck == stats["bottleneck"] in ("square", "even")
    assert stats.seconds == stats["seconds"] > 0
    assert isinstance(stats.stages, tuple) and len(stats.stages) == 2
    square_stage, even_stage = stats.stages
    assert isinstance(square_stage, conveyor.StageStatistics)
    check_record(square_stage)
    assert square_stage.name == square_stage["name"] == "square"
    assert square_stage.items_in == stats["stages"][0]["items_in"] == 30
    assert square_stage.items_out == 30
    assert even_stage.items_in == 30 and even_stage.dropped == 15 and even_stage.items_out == 15
    assert 0.0 <= square_stage.utilization <= 1.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        square_stage.items_in = 0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.bottleneck = None  # type: ignore[misc]
