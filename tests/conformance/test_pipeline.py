"""Pipelines whose stages run on each chosen backend: unordered stages, generator stages, per-worker
hooks. Mixes of the local backends (a stage on each) are in tests/test_pipeline.py."""

from __future__ import annotations

import os

import pytest

import conveyor
from conftest import capabilities

pytestmark = pytest.mark.timeout(90)


@pytest.mark.needs("in_background")
def test_unordered_stages_lose_and_duplicate_nothing(backend):
    pipe = conveyor.Pipeline(range(500)).map(lambda x: x * x, workers=4, backend=backend, ordered=False)
    assert sorted(pipe) == [x * x for x in range(500)]


_OPENED = []


def _connect():
    _OPENED.append(os.getpid())


def _uses_connection(x):
    return (x, bool(_OPENED))


def _per_worker(items):
    connection = {"pid": os.getpid(), "used": 0}     # state kept open for all of this worker's items
    for item in items:
        connection["used"] += 1
        yield (item, connection["pid"])


def test_generator_stages_run_once_per_worker_over_an_iterator(backend):
    workers = 2 if capabilities(backend).in_background else 1
    out = conveyor.Pipeline(range(200)).map(_per_worker, workers=workers, backend=backend).run()
    assert sorted(item for item, _ in out) == list(range(200))
    if capabilities(backend).needs_pickle:  # in processes of their own
        assert os.getpid() not in {pid for _, pid in out}


@pytest.mark.needs("in_background")
def test_on_start_runs_in_each_worker_before_its_items(backend):
    out = conveyor.Pipeline(range(20)).map(_uses_connection, workers=2, backend=backend, on_start=_connect).run()
    assert all(opened for _, opened in out)


    # the autouse leak check then finds no thread and no process left


def _write_line(path, text):
    with open(path, "a") as file:
        file.write(text + "\n")


@pytest.mark.parametrize("generator", [False, True], ids=["function", "generator"])
def test_on_start_and_on_stop_run_once_per_worker(tmp_path, backend, generator):
    log = tmp_path / "log"
    fn = _per_worker if generator else (lambda x: (x, os.getpid()))
    workers = 2 if capabilities(backend).in_background else 1
    out = conveyor.Pipeline(range(50)).map(
        fn, workers=workers, backend=backend,
        on_start=lambda: _write_line(log, f"start {os.getpid()}"),
        on_stop=lambda: _write_line(log, f"stop {os.getpid()}")).run()
    assert sorted(item for item, _ in out) == list(range(50))
    events = [line.split() for line in log.read_text().splitlines()]
    starts = sorted(pid for event, pid in events if event == "start")
    stops = sorted(pid for event, pid in events if event == "stop")
    assert starts == stops and 1 <= len(starts) <= workers
    if capabilities(backend).needs_pickle:  # in processes of their own
        assert str(os.getpid()) not in starts


def _raise_first_time(args):
    x, folder = args
    marker = os.path.join(folder, f"raised-{x}")
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise OSError(f"first try of {x} fails")
    return x


@pytest.mark.needs("in_background")
def test_a_stage_with_retries_tries_a_raising_item_again(tmp_path, backend):
    items = [(x, str(tmp_path)) for x in range(6)]
    assert conveyor.Pipeline(items).map(_raise_first_time, backend=backend, retries=1).run() == list(range(6))
    with pytest.raises(OSError, match="first try"):   # without retries, the first failure is final
        conveyor.Pipeline([(9, str(tmp_path))]).map(_raise_first_time, backend=backend).run()
