"""Large data on the process backend (issue 7): arrays and bytes through shared memory with copy
semantics, shared read-only objects, SharedArray, worker state, and shared-memory cleanup after
every kind of ending (faults injected for real: SIGKILL of a worker, SIGKILL of the parent, SIGINT).
Every test runs under fork, forkserver and spawn; the autouse leak check counts /dev/shm entries.
"""

from __future__ import annotations

import gc
import os
import signal
import struct
import sys
import threading
from pathlib import Path

import pytest

np = pytest.importorskip("numpy")

import conveyor  # noqa: E402
import data_tasks as t  # noqa: E402
from conftest import START_METHODS, _shm, bounded, own_segments, wait_until  # noqa: E402

pytestmark = pytest.mark.timeout(120)

BIG = (2 << 20) // 8  # 2 MiB of float64: above the 1 MiB threshold
TESTS = Path(__file__).parent


@pytest.fixture(params=START_METHODS)
def method(request: pytest.FixtureRequest) -> str:
    return request.param


def big_array(seed: int = 0):
    return np.random.default_rng(seed).random(BIG)


def arena(pool: conveyor.Pool):
    return pool._backend._arena


# -- transport and copy semantics ------------------------------------------------------------------
def test_large_arrays_go_through_shared_memory_both_ways(method):
    a = big_array()
    with conveyor.Pool(2, start_method=method) as pool:
        assert pool.submit(t.total, a).result() == pytest.approx(a.sum())
        back = pool.submit(t.identity, a).result()
        assert np.array_equal(back, a) and back is not a
        assert back.flags.writeable
        back[0] = -5.0  # the caller's result is its own: neither the input nor the worker sees it
        assert a[0] != -5.0
        fortran = np.asfortranarray(a.reshape(512, -1))
        assert np.array_equal(pool.submit(t.identity, fortran).result(), fortran)
        small = np.arange(10.0)
        assert np.array_equal(pool.submit(t.identity, small).result(), small)
        assert arena(pool).created >= 1


def test_the_caller_changing_its_array_after_submit_is_never_seen(method):
    a = big_array()
    expected = a.sum()
    ctx = conveyor.context("process", start_method=method)
    go = ctx.Event()
    with ctx.Pool(2) as pool:
        future = pool.submit(t.total_after, a, go)
        a[:] = 0.0
        go.set()
        assert future.result() == pytest.approx(expected)


def test_a_task_changing_its_input_never_changes_the_callers_array(method):
    a = big_array()
    before = a.copy()
    with conveyor.Pool(1, start_method=method) as pool:
        assert pool.submit(t.add_one_and_total, a).result() == pytest.approx((before + 1).sum())
        assert np.array_equal(a, before)
        # The same worker gets the same (recycled) segment next: it must see the new data, not the
        # pages its previous task wrote.
        assert pool.submit(t.total, a).result() == pytest.approx(before.sum())
        b = big_array(1)
        assert pool.submit(t.total, b).result() == pytest.approx(b.sum())


def test_segments_are_reused_and_a_kept_input_is_not(method):
    a, b = big_array(0), big_array(1)
    with conveyor.Pool(1, start_method=method) as pool:
        for _ in range(4):
            pool.submit(t.total, a).result()
        assert arena(pool).reused >= 2
        assert pool.submit(t.keep, a).result() == pytest.approx(a.sum())
        for _ in range(3):  # the kept segment must never be written again
            assert pool.submit(t.total, b).result() == pytest.approx(b.sum())
        assert pool.submit(t.kept_total).result() == pytest.approx(a.sum())


@pytest.mark.parametrize("task", [t.crash_once_then_total, t.fail_once_then_total], ids=["crash", "raise"])
def test_a_rerun_sees_the_snapshot_taken_at_submit(method, tmp_path, task):
    """Re-run after the worker crashed, or retried after the task raised (having written its input
    first): neither the caller's later change nor the failed attempt's writes are seen."""
    a = big_array()
    expected = a.sum()
    with conveyor.Pool(1, start_method=method, retries=1) as pool:
        future = pool.submit(task, a, str(tmp_path / "marker"))
        a[:] = 0.0
        assert future.result() == pytest.approx(expected)


@pytest.mark.parametrize("how", ["off", "full"])
def test_a_rerun_through_the_pipe_sees_the_snapshot_taken_at_submit(method, tmp_path, monkeypatch, how):
    """A large input that goes through the pipe (shared memory off, or full) is pickled once too:
    the re-run after a crash does not see the caller's later change."""
    from conveyor._core import shm

    if how == "full":
        def full(self, size):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(shm.Arena, "lease", full)
    a = big_array()
    expected = a.sum()
    ctx = conveyor.context("process", start_method=method)
    go = ctx.Event()
    with conveyor.Pool(1, start_method=method, retries=1, shared_memory=how == "full") as pool:
        future = pool.submit(t.crash_once_after_go_then_total, a, str(tmp_path / "marker"), go)
        a[:] = 0.0
        go.set()
        assert future.result() == pytest.approx(expected)


def test_map_over_many_large_inputs(method):
    arrays = [big_array(seed) for seed in range(6)]
    with conveyor.Pool(2, start_method=method) as pool:
        assert pool.map(t.total, arrays) == pytest.approx([a.sum() for a in arrays])
        results = pool.map(t.identity, arrays)
    assert all(np.array_equal(x, y) for x, y in zip(results, arrays))


def test_large_bytes_bytearray_and_memoryview(method):
    data = os.urandom(3 << 20)
    with conveyor.Pool(1, start_method=method) as pool:
        assert pool.submit(t.identity, data).result() == data
        assert pool.submit(t.describe, data).result() == ("bytes", len(data), False)
        array = bytearray(data)
        assert pool.submit(t.describe, array).result() == ("bytearray", len(data), True)
        back = pool.submit(t.identity, array).result()
        assert type(back) is bytearray and back == array
        assert pool.submit(t.describe, memoryview(array)).result() == ("memoryview", len(data), True)
        assert pool.submit(t.identity, (1, {"x": data})).result() == (1, {"x": data})


def test_a_large_result_is_given_back_to_its_worker_when_dropped(method):
    with conveyor.Pool(1, start_method=method) as pool:
        for _ in range(4):
            result = pool.submit(t.ones, BIG).result()
            assert result.sum() == BIG
            del result
        # The worker made at most two result segments: each one came back for reuse.
        assert len(own_segments("w")) <= 2


def test_shared_memory_can_be_turned_off(method):
    a = big_array()
    with conveyor.Pool(1, start_method=method, shared_memory=False) as pool:
        assert pool.submit(t.total, a).result() == pytest.approx(a.sum())
        assert pool._backend._arena is None


def test_pagemap_entries_that_count_as_written():
    """A page of a private mapping of a segment is this process's own (so the mapping cannot be
    reused for the caller's next data) when it is present and not a file page, or swapped out."""
    import mmap

    from conveyor._backends._shared import bulk
    from conveyor._core import shm

    present, swapped, file_page = 1 << 63, 1 << 62, 1 << 61

    def entries(*words: int) -> bytes:
        return struct.pack(f"={len(words)}Q", *words)  # native order, as /proc/self/pagemap

    assert not bulk.any_written(entries(0, present | file_page | 12345, file_page, 0))
    assert bulk.any_written(entries(present | file_page, present | 12345))  # a copy-on-write copy
    assert bulk.any_written(entries(0, swapped | 0x3f))                      # that copy, swapped out
    assert bulk.any_written(entries(present | file_page, swapped | file_page))
    assert shm.ALIGN % mmap.PAGESIZE == 0 and shm.align(1) >= mmap.PAGESIZE


def test_memoryviews_in_fortran_order_or_other_formats_come_back_as_their_bytes(method):
    """Only C-order views of a native one-character format are rebuilt as views; the others travel
    in-band as their bytes in logical order (never transposed, never a failed cast)."""
    fortran = memoryview(np.asfortranarray(np.arange(BIG, dtype=np.float64).reshape(512, -1)))
    big_endian = memoryview(np.arange(BIG, dtype=">f8"))
    records = memoryview(np.zeros(BIG // 2, dtype=[("a", "<f8"), ("b", "<i8")]))
    with conveyor.Pool(1, start_method=method) as pool:
        for view in (fortran, big_endian, records):
            back = pool.submit(t.identity, view).result()
            assert bytes(back) == view.tobytes()
        c_order = memoryview(np.arange(BIG, dtype=np.float64).reshape(512, -1))
        back = pool.submit(t.identity, c_order).result()
        assert back.shape == c_order.shape and back.tolist() == c_order.tolist()


def test_shared_memory_off_keeps_results_out_of_it_too(method):
    with conveyor.Pool(1, start_method=method, shared_memory=False) as pool:
        result = pool.submit(t.ones, BIG).result()
        assert result.sum() == BIG
        assert not own_segments("w")


def test_a_dead_workers_segments_are_removed_with_shared_memory_off(method):
    with conveyor.Pool(1, start_method=method, shared_memory=False) as pool:
        with pytest.raises(conveyor.WorkerCrashedError):
            pool.submit(t.segment_then_die, os.getpid()).result()
        assert wait_until(lambda: not own_segments("w"), 10)
        assert pool.submit(t.total, np.ones(3)).result() == 3.0


def test_an_interrupt_while_a_segment_is_made_leaves_none(monkeypatch):
    from conveyor._core import shm

    def interrupted(name: str) -> None:
        raise KeyboardInterrupt

    before = _shm()
    monkeypatch.setattr(shm, "_track", interrupted)
    with pytest.raises(KeyboardInterrupt):
        shm.Segment.create(f"conveyor-{os.getpid()}t", 4096)
    assert _shm() == before


def _finishes_holding(lock, action) -> bool:
    """Run ``action`` in a thread that holds ``lock`` (as a garbage collection may run a finalizer
    there); whether it finished rather than deadlocked."""
    done = threading.Event()

    def run() -> None:
        with lock:
            action()
        done.set()

    threading.Thread(target=run, name="holds-lock", daemon=True).start()
    return done.wait(bounded(10))


def test_a_frozen_inputs_finalizer_takes_no_lock():
    from conveyor._backends._shared import bulk
    from conveyor._core import shm

    pool_arena = shm.Arena(f"conveyor-{os.getpid()}")
    try:
        frozen = [bulk.freeze(big_array(), pool_arena, "a")]
        assert isinstance(frozen[0], bulk.Frozen)
        assert _finishes_holding(pool_arena._lock, frozen.clear)  # its finalizer runs in there
        gc.collect()
        pool_arena.run_later()
        assert pool_arena.idle_bytes > 0  # the segment came back for reuse
    finally:
        pool_arena.close()


def test_a_shared_handles_finalizer_takes_no_lock():
    from conveyor import sharing

    handle = conveyor.shared(np.arange(10.0))
    name = handle.name
    assert _finishes_holding(sharing._loaded_lock, handle.close)
    assert name not in _shm()


# -- shared objects, SharedArray, worker state ------------------------------------------------------
def test_pool_shared_object_is_read_only_and_placed_once(method):
    table = np.arange(4 * BIG, dtype=np.float64).reshape(4, BIG)
    with conveyor.Pool(2, start_method=method, shared=table) as pool:
        assert pool.map(t.shared_total, range(4)) == pytest.approx(list(table.sum(axis=1)))
        assert len(own_segments("s")) == 1


def test_a_closed_and_dropped_pool_keeps_its_shared_object_while_work_drains(method):
    """The pool's backend owns the segment of Pool(shared=...): a replacement worker started after the
    user dropped the pool still finds it; it is removed once the last worker is gone."""
    table = np.arange(2 * BIG, dtype=np.float64).reshape(2, BIG)
    ctx = conveyor.context("process", start_method=method)
    go = ctx.Event()
    pool = conveyor.Pool(1, start_method=method, shared=table, max_tasks_per_worker=1)
    backend = pool._backend
    futures = [pool.submit(t.shared_total_after, i % 2, go) for i in range(3)]
    pool.close()
    del pool
    gc.collect()
    go.set()
    try:
        assert [f.result(timeout=bounded(60)) for f in futures] == pytest.approx(
            [table[i % 2].sum() for i in range(3)])
    finally:
        backend.shutdown(wait=True)
    assert not own_segments("s")


def test_shared_array_refuses_object_dtypes():
    ctx = conveyor.context("process")
    for dtype in (object, [("a", "f8"), ("b", "O")]):
        with pytest.raises(TypeError, match="Python objects"):
            ctx.SharedArray(3, dtype)
    with conveyor.Pool(1, backend="thread") as pool, pytest.raises(TypeError, match="Python objects"):
        pool.SharedArray(3, object)


def test_shared_handle_passed_to_tasks(method):
    table = {"rows": np.arange(BIG, dtype=np.float64).reshape(2, -1)}
    with conveyor.shared(table["rows"]) as handle, conveyor.Pool(2, start_method=method) as pool:
        assert pool.map(t.read_shared_handle, [handle] * 2, [0, 1]) == pytest.approx(
            list(table["rows"].sum(axis=1)))
        assert pool.submit(t.writable, handle).result() is False
        assert handle.get().flags.writeable is False


def test_shared_array_is_written_by_every_worker_under_its_lock(method):
    ctx = conveyor.context("process", start_method=method)
    counts = ctx.SharedArray(4, "int64")
    with ctx.Pool(2) as pool:
        pool.starmap(t.add_to_shared, [(counts, i % 4, 50) for i in range(8)])
    assert counts.array.tolist() == [100, 100, 100, 100]
    assert counts.shape == (4,) and counts.dtype == np.dtype("int64")


def test_worker_state_from_the_initializer(method):
    with conveyor.Pool(2, start_method=method, initializer=t.set_state, initargs=("model",)) as pool:
        assert set(pool.map(t.state_value, range(8))) == {"model"}


# -- cleanup after real faults ----------------------------------------------------------------------
def test_worker_killed_while_holding_large_data(method):
    a = big_array()
    with conveyor.Pool(2, start_method=method) as pool:
        pool.map(t.total, [a, a])
        victims = pool.statistics()["worker_pids"]
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        assert wait_until(lambda: not set(victims) & set(pool.statistics()["worker_pids"]), 10)
        assert pool.submit(t.total, a).result() == pytest.approx(a.sum())
    # the leak check (conftest) counts /dev/shm entries after the test


def test_exception_in_the_with_block_cleans_up(method):
    a = big_array()
    with pytest.raises(RuntimeError):
        with conveyor.Pool(2, start_method=method) as pool:
            pool.submit(t.total, a).result()
            pool.submit(t.identity, a)
            raise RuntimeError("user code failed")


SCENARIO = """
import sys, time
sys.path.insert(0, {tests!r})
import numpy as np, conveyor, data_tasks as t
if __name__ == "__main__":
    a = np.ones({big})
    table = np.ones((2, {big}))
    with conveyor.Pool(2, start_method=sys.argv[1], shared=table) as pool:
        pool.submit(t.total, a).result()
        kept = pool.submit(t.identity, a).result()
        futures = [pool.submit(t.total_after, a, conveyor.context("process").Event()) for _ in range(2)]
        print("READY", flush=True)
        time.sleep(60)
"""


def _run_scenario(tmp_path: Path, method: str):
    import subprocess

    script = tmp_path / "scenario.py"
    script.write_text(SCENARIO.format(tests=str(TESTS), big=BIG))
    return subprocess.Popen([sys.executable, str(script), method], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _theirs(pid: int) -> set[str]:
    return {name for name in _shm() if name.startswith(f"conveyor-{pid}")}


@pytest.mark.parametrize("how", ["SIGKILL", "SIGINT"])
def test_parent_killed_or_interrupted_leaves_no_segment(tmp_path, method, how):
    import psutil

    proc = _run_scenario(tmp_path, method)
    try:
        assert proc.stdout.readline().startswith("READY"), proc.stderr.read()
        assert _theirs(proc.pid), "the scenario should hold segments now"
        descendants = psutil.Process(proc.pid).children(recursive=True)
        os.kill(proc.pid, getattr(signal, how))
        proc.wait(bounded(20))
        # Workers notice their owner is gone; the resource tracker removes what was registered.
        assert wait_until(lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE
                                          for p in descendants), 15)
        assert wait_until(lambda: not _theirs(proc.pid), 15), _theirs(proc.pid)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
