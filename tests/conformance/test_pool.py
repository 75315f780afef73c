"""The Pool conformance suite: the same calls give the same results on every backend.

Each test runs on every chosen backend (``--backend``; serial, thread and process by default) through
the ``make_pool`` fixture, which also checks the accounting invariant afterwards; what a backend
cannot do (``Capabilities``) is skipped with the reason.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import itertools
import multiprocessing
import threading
import time
from collections import Counter

import pytest

import conveyor
import tasks
from conftest import bounded, requires, wait_until
from conveyor._core.chunking import MAX_UNSIZED

pytestmark = pytest.mark.timeout(60)


# -- map family ---------------------------------------------------------------------------------------
def test_map_returns_list_in_input_order(make_pool):
    pool = make_pool()
    assert pool.map(tasks.square, range(1000)) == [x * x for x in range(1000)]


def test_map_zips_several_iterables_like_builtin_map(make_pool):
    pool = make_pool()
    assert pool.map(tasks.add, [1, 2, 3], [10, 20]) == [11, 22]


def test_map_of_empty_input_is_empty(make_pool):
    pool = make_pool()
    assert pool.map(tasks.square, []) == []
    assert list(pool.imap(tasks.square, iter([]))) == []


def test_map_accepts_generators_without_len(make_pool):
    pool = make_pool()
    assert pool.map(tasks.square, (x for x in range(500))) == [x * x for x in range(500)]


def test_map_with_explicit_chunksize(make_pool):
    pool = make_pool()
    assert pool.map(tasks.square, range(101), chunksize=7) == [x * x for x in range(101)]


def test_starmap_and_istarmap(make_pool):
    pool = make_pool()
    assert pool.starmap(pow, [(2, 5), (3, 2)]) == [32, 9]
    assert list(pool.istarmap(tasks.add, ((i, i) for i in range(50)))) == [2 * i for i in range(50)]


def test_imap_unordered_gives_every_result_once(make_pool):
    pool = make_pool()
    assert Counter(pool.imap_unordered(tasks.square, range(300))) == Counter(x * x for x in range(300))


def test_imap_is_lazy_and_bounded_over_an_infinite_generator(make_pool):
    pool = make_pool()
    pulled = itertools.count()

    def source():
        for i in itertools.count():
            next(pulled)
            yield i

    results = pool.imap(tasks.square, source())
    first = [next(results) for _ in range(2000)]
    assert first == [x * x for x in range(2000)]
    in_flight = next(pulled) - 2000
    # O(workers x chunk): the window is 2 x workers + 2 batches of at most MAX_UNSIZED inputs.
    assert in_flight <= MAX_UNSIZED * (2 * pool.workers + 3), in_flight
    results.close()


def test_imap_continues_after_a_failed_item(make_pool):
    pool = make_pool()
    results = pool.imap(tasks.fail_on, range(6))
    assert [next(results) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(ValueError, match="bad input 3"):
        next(results)
    assert list(results) == [4, 5]


def test_a_task_raising_stop_iteration_fails_that_input_and_never_ends_the_loop(make_pool):
    """A StopIteration from a task, raised by the results iterator, would end the caller's loop as if
    all results were in: it comes as a RuntimeError from it (PEP 479). On processes, tiny calls run
    through map() in strides, which took the StopIteration for its own end and shifted every later
    result of the batch by one."""
    pool = make_pool()
    inputs = [[i] for i in range(20_000)]
    inputs[15_100] = []
    results = pool.imap(tasks.first, inputs, chunksize=1000)
    assert list(itertools.islice(results, 15_100)) == list(range(15_100))
    with pytest.raises(RuntimeError, match="StopIteration") as raised:
        next(results)
    assert isinstance(raised.value.__cause__, StopIteration)
    assert list(results) == list(range(15_101, 20_000))
    with pytest.raises(RuntimeError, match="StopIteration"):
        pool.map(tasks.first, inputs)
    assert pool.submit(tasks.first, [7]).result() == 7


def test_map_raises_the_first_failure_in_input_order(make_pool):
    pool = make_pool()
    with pytest.raises(ValueError, match="bad input 2"):
        pool.map(tasks.fail_on, range(10), [(2, 7)] * 10)


def test_input_iterator_error_is_raised_after_the_items_before_it(make_pool):
    pool = make_pool()

    def source():
        yield 1
        yield 2
        raise LookupError("source broke")

    results = pool.imap(tasks.square, source())
    assert next(results) == 1
    assert next(results) == 4
    with pytest.raises(LookupError, match="source broke"):
        next(results)


def test_lambdas_and_closures_work(make_pool):
    pool = make_pool()
    offset = 10
    assert pool.map(lambda x: x + offset, range(5)) == [10, 11, 12, 13, 14]
    assert pool.submit(lambda: offset * 2).result(timeout=bounded(30)) == 20


def test_map_timeout_raises_result_timeout_error(make_pool, backend):
    requires(backend, "in_background", "serial runs each task in the caller; there is nothing to wait for")
    pool = make_pool()
    with pytest.raises(conveyor.ResultTimeoutError) as info:
        pool.map(tasks.sleep_then, [1, 2], [2.0, 2.0], timeout=0.2)
    assert isinstance(info.value, TimeoutError)
    assert isinstance(info.value, multiprocessing.TimeoutError)


# -- single tasks -------------------------------------------------------------------------------------
def test_pool_is_an_executor_and_submit_returns_futures(make_pool):
    pool = make_pool()
    assert isinstance(pool, concurrent.futures.Executor)
    futures = [pool.submit(tasks.add, i, b=i) for i in range(20)]
    done = {f.result(timeout=bounded(30)) for f in concurrent.futures.as_completed(futures, timeout=bounded(30))}
    assert done == {2 * i for i in range(20)}


def test_submit_passes_keyword_arguments(make_pool):
    pool = make_pool()
    assert pool.submit(tasks.kw, 1, b=2).result(timeout=bounded(30)) == (1, 2)


def test_run_in_executor(make_pool):
    pool = make_pool()

    async def main():
        loop = asyncio.get_running_loop()
        return await asyncio.gather(*(loop.run_in_executor(pool, tasks.square, i) for i in range(5)))

    assert asyncio.run(main()) == [0, 1, 4, 9, 16]


def test_apply_and_apply_async_with_callbacks(make_pool):
    pool = make_pool()
    assert pool.apply(tasks.add, (2, 3)) == 5
    got = []
    errors = []
    finished = threading.Event()
    ok = pool.apply_async(tasks.square, (4,), callback=got.append)
    bad = pool.apply_async(tasks.fail_on, (3,), error_callback=lambda e: (errors.append(e), finished.set()))
    assert ok.get(timeout=bounded(30)) == 16
    with pytest.raises(ValueError):
        bad.get(timeout=bounded(30))
    assert finished.wait(bounded(10))
    assert ok.ready() and ok.successful()
    assert bad.ready() and not bad.successful()
    assert wait_until(lambda: got == [16], 5)
    assert isinstance(errors[0], ValueError)


def test_async_result_get_timeout_and_successful_before_ready(make_pool, backend):
    requires(backend, "in_background", "serial finishes every task inside submit")
    pool = make_pool()
    result = pool.apply_async(tasks.sleep_then, ("x", 1.0))
    with pytest.raises(multiprocessing.TimeoutError):
        result.get(timeout=0.05)
    with pytest.raises(ValueError):
        result.successful()
    assert result.get(timeout=bounded(30)) == "x"


def test_map_async_and_starmap_async(make_pool):
    pool = make_pool()
    assert pool.map_async(tasks.square, range(10)).get(timeout=bounded(30)) == [x * x for x in range(10)]
    assert pool.starmap_async(tasks.add, [(1, 2)]).get(timeout=bounded(30)) == [3]
    with pytest.raises(ValueError):
        pool.map_async(tasks.fail_on, range(5)).get(timeout=bounded(30))


# -- errors -------------------------------------------------------------------------------------------
def test_user_exception_keeps_its_type_and_attributes(make_pool):
    pool = make_pool()
    with pytest.raises(tasks.CustomError) as info:
        pool.submit(tasks.raise_custom, 42).result(timeout=bounded(30))
    assert info.value.code == 42 and info.value.text == "custom"


def test_remote_traceback_is_attached_as_cause(make_pool, backend):
    pool = make_pool()
    with pytest.raises(ValueError) as info:
        pool.submit(tasks.fail_on, 3).result(timeout=bounded(30))
    if conveyor.Pool(1, backend=backend).capabilities.needs_pickle:
        cause = info.value.__cause__
        assert isinstance(cause, conveyor.RemoteTraceback)
        assert "fail_on" in str(cause) and "bad input 3" in str(cause)
    else:
        assert info.value.__traceback__ is not None


def test_exception_that_cannot_be_rebuilt_becomes_remote_error(make_pool, backend):
    pool = make_pool()
    crosses_processes = pool._backend.capabilities.needs_pickle
    expected = conveyor.RemoteError if crosses_processes else tasks.UnrebuildableError
    with pytest.raises(expected) as info:
        pool.submit(tasks.raise_unrebuildable, 1).result(timeout=bounded(30))
    if crosses_processes:
        assert info.value.type_name == "UnrebuildableError"
        assert "raise_unrebuildable" in info.value.remote_traceback


def test_sys_exit_in_a_task_fails_only_that_task(make_pool):
    pool = make_pool()
    with pytest.raises(SystemExit):
        pool.submit(tasks.crash, 1, "sysexit").result(timeout=bounded(30))
    assert pool.map(tasks.square, range(5)) == [0, 1, 4, 9, 16]


def test_retries_rerun_a_failing_task(make_pool, tmp_path):
    pool = make_pool(retries=1)
    assert pool.map(tasks.fail_once, range(6), [str(tmp_path)] * 6) == list(range(6))
    assert pool.statistics()["retried"] == 6
    no_retry = make_pool()
    with pytest.raises(RuntimeError, match="first attempt"):
        no_retry.submit(tasks.fail_once, 99, str(tmp_path)).result(timeout=bounded(30))


def test_task_timeout_fails_the_task_with_task_timeout_error(make_pool):
    pool = make_pool(task_timeout=0.3)
    futures = [pool.submit(tasks.sleep_then, "slow", 1.0), pool.submit(tasks.sleep_then, "quick", 0.0)]
    with pytest.raises(conveyor.TaskTimeoutError) as info:
        futures[0].result(timeout=bounded(30))
    assert isinstance(info.value, TimeoutError)
    assert futures[1].result(timeout=bounded(30)) == "quick"


# -- initializer --------------------------------------------------------------------------------------
def test_initializer_runs_in_every_worker(make_pool):
    pool = make_pool(initializer=tasks.remember, initargs=("ready",))
    assert set(pool.map(tasks.recall, range(20))) == {"ready"}


def test_failing_initializer_breaks_the_pool_with_its_cause(make_pool):
    pool = make_pool(initializer=tasks.init_fails)

    def first_failure():
        try:
            return pool.submit(tasks.square, 2).result(timeout=bounded(30))
        except conveyor.InitializerError as exc:
            return exc

    error = first_failure()
    assert isinstance(error, conveyor.InitializerError)
    assert isinstance(error, concurrent.futures.BrokenExecutor)
    assert "initializer is broken" in str(error)
    assert wait_until(lambda: pool._backend.broken() is not None, 10)
    with pytest.raises(conveyor.InitializerError):
        pool.submit(tasks.square, 3)


# -- lifetime -----------------------------------------------------------------------------------------
def test_submit_after_shutdown_raises(make_pool):
    pool = make_pool()
    pool.shutdown()
    with pytest.raises(conveyor.PoolClosedError) as info:
        pool.submit(tasks.square, 1)
    assert isinstance(info.value, RuntimeError)
    with pytest.raises(RuntimeError):
        pool.map(tasks.square, [1])


def test_with_block_waits_for_submitted_work(backend):
    with conveyor.Pool(2, backend=backend) as pool:
        futures = [pool.submit(tasks.sleep_then, i, 0.05) for i in range(6)]
    assert all(f.done() for f in futures)
    assert [f.result() for f in futures] == list(range(6))


def test_a_lazy_call_made_before_close_still_gets_every_result(make_pool):
    """multiprocessing's own pattern: imap, close(), then iterate. The inputs are sent as the consumer
    reads, so the closed pool must keep taking them (its workers used to be gone by then)."""
    pool = make_pool()
    ordered = pool.imap(tasks.square, range(60), chunksize=1)
    unordered = pool.imap_unordered(tasks.square, range(60), chunksize=1)
    pool.close()
    results = []
    for value in ordered:
        time.sleep(0.002)  # a slow consumer: the pool is idle between batches
        results.append(value)
    assert results == [x * x for x in range(60)]
    assert sorted(unordered) == [x * x for x in range(60)]
    pool.join()


def test_close_after_dropping_a_partly_read_imap_lets_the_workers_go(backend):
    """close() waits for lazy calls still feeding, so a dropped one must go at once: a thread
    worker's last batch kept its stream alive, and the closed pool's workers lived forever."""
    requires(backend, "in_background", "serial has no workers")
    pool = conveyor.Pool(2, backend=backend)
    results = pool.istarmap(tasks.sleep_then, ((i, 0.001) for i in range(100_000)), chunksize=1)
    assert next(results) == 0
    del results
    pool.close()

    def let_go() -> bool:  # the close() that waited for the stream is done, and so are the workers
        closing = any(thread.name == "conveyor-pool-close" for thread in threading.enumerate())
        return not closing and pool.statistics().get("workers_alive", 0) == 0

    assert wait_until(let_go, 20), pool.statistics()
    pool.join()


def test_a_closed_pool_with_a_map_async_running_is_not_killed_when_dropped(backend):
    """close() with a map_async still feeding returned early and left the pool's garbage-collection
    hook armed: dropping the closed pool killed the work it had accepted."""
    pool = conveyor.Pool(2, backend=backend)
    earlier = pool.submit(tasks.sleep_then, "done", 0.5)
    mapped = pool.starmap_async(tasks.sleep_then, [(i, 0.01) for i in range(20)])
    pool.close()
    del pool
    gc.collect()
    assert earlier.result(timeout=bounded(30)) == "done"
    assert mapped.get(timeout=bounded(30)) == list(range(20))


def test_imap_over_an_input_too_long_for_len(make_pool):
    pool = make_pool()
    results = pool.imap(tasks.square, range(2**64))
    assert list(itertools.islice(results, 3)) == [0, 1, 4]
    results.close()


def test_close_then_join_like_multiprocessing(make_pool):
    pool = make_pool()
    result = pool.map_async(tasks.square, range(10))
    with pytest.raises(ValueError):
        pool.join()
    pool.close()
    pool.join()
    assert result.get(timeout=bounded(30)) == [x * x for x in range(10)]


def test_cancel_a_pending_future(make_pool, backend):
    requires(backend, "in_background", "serial runs each task inside submit: nothing is ever pending")
    pool = make_pool(1)
    blocker = pool.submit(tasks.sleep_then, "blocker", 0.5)
    queued = [pool.submit(tasks.square, i) for i in range(5)]
    cancelled = [f.cancel() for f in queued[2:]]
    assert blocker.result(timeout=bounded(30)) == "blocker"
    assert any(cancelled)
    for future, was_cancelled in zip(queued[2:], cancelled):
        assert future.cancelled() == was_cancelled
    assert [f.result(timeout=bounded(30)) for f in queued[:2]] == [0, 1]


def test_shutdown_with_cancel_futures_cancels_pending_work(make_pool, backend):
    requires(backend, "in_background", "serial runs each task inside submit: nothing is ever pending")
    pool = make_pool(1)
    running = pool.submit(tasks.sleep_then, "running", 0.3)
    pending = [pool.submit(tasks.square, i) for i in range(10)]
    time.sleep(0.1)
    pool.shutdown(wait=True, cancel_futures=True)
    assert running.result(timeout=bounded(30)) == "running"
    assert all(f.done() for f in pending)
    assert sum(f.cancelled() for f in pending) >= 9
    stats = pool.statistics()
    assert stats["submitted"] == stats["succeeded"] + stats["failed"] + stats["cancelled"]


def test_terminate_stops_running_tasks(make_pool, backend):
    requires(backend, "in_background", "serial has nothing running in the background")
    pool = make_pool(1)
    running = pool.submit(tasks.sleep_then, "never", 2.0)
    time.sleep(0.2)
    started = time.monotonic()
    pool.terminate()
    assert time.monotonic() - started < bounded(5)
    with pytest.raises(concurrent.futures.CancelledError):
        running.result(timeout=bounded(10))


# -- options ------------------------------------------------------------------------------------------
def test_progress_callable_receives_counts(make_pool):
    pool = make_pool()
    seen = []
    pool.map(tasks.square, range(100), progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (100, 100)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_progress_true_draws_a_tqdm_bar(make_pool, capsys):
    pool = make_pool()
    pool.map(tasks.square, range(50), progress=True)
    assert "50/50" in capsys.readouterr().err


@pytest.mark.parametrize("bad", [{"workers": 0}, {"chunksize": 0}, {"retries": -1}, {"task_timeout": -1},
                                 {"workers": 1.5}])
def test_invalid_options_are_rejected(backend, bad):
    options = {"workers": 1, **bad}
    with pytest.raises(ValueError):
        conveyor.Pool(backend=backend, **options)


def test_non_callable_function_is_a_type_error(make_pool):
    pool = make_pool()
    with pytest.raises(TypeError):
        pool.submit(42)
    with pytest.raises(TypeError):
        pool.map(42, [1])


def test_statistics_account_for_every_task(make_pool):
    pool = make_pool()
    pool.map(tasks.square, range(100))
    with pytest.raises(ValueError):
        pool.map(tasks.fail_on, range(5))
    stats = pool.statistics()
    assert stats["submitted"] >= 101
    assert stats["failed"] >= 1
    assert stats["backend"] == pool.backend_name


def test_one_shot_map_context_and_config(backend):
    assert conveyor.map(tasks.square, range(5), backend=backend, workers=2) == [0, 1, 4, 9, 16]
    ctx = conveyor.context(backend)
    with ctx.Pool(2) as pool:
        assert pool.backend_name == backend
        assert pool.map(tasks.square, [3]) == [9]
    with conveyor.config(backend=backend, workers=1), conveyor.Pool() as pool:
        assert pool.backend_name == backend and pool.workers == 1
    with pytest.raises(TypeError):
        conveyor.config(not_a_setting=1)


def test_inputs_read_before_a_source_error_still_run(make_pool):
    pool = make_pool()

    def source():
        yield from range(5)
        raise LookupError("source broke")

    results = pool.imap(tasks.square, source(), chunksize=8)
    assert [next(results) for _ in range(5)] == [0, 1, 4, 9, 16]
    with pytest.raises(LookupError):
        next(results)
