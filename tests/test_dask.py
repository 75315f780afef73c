"""The Dask backend: the Pool's results and errors on a local Dask cluster, a worker killed mid-map,
retries, an existing cluster by address. (Skipped where dask.distributed cannot be installed.)

Dask keeps process-wide threads, sockets and semaphores for the life of the interpreter, so each
scenario runs in a subprocess of its own; the test then checks that the cluster's worker processes
are gone once it has exited.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import psutil
import pytest

from conftest import bounded
from scenarios.cluster_script import TASKS

pytest.importorskip("distributed")

pytestmark = pytest.mark.timeout(180)

PRELUDE = TASKS + """
import tempfile
import distributed
import conveyor

def worker_pids(pool):
    pids = pool._backend._client.run(os.getpid)
    nannies = pool._backend._client.run(os.getppid)
    print("PIDS", *pids.values(), *nannies.values(), flush=True)
"""

SCENARIOS = {
    "results": """
        with conveyor.Pool(2, backend="dask") as pool:
            worker_pids(pool)
            assert pool.map(lambda x: x * x, range(1000)) == [x * x for x in range(1000)]
            assert list(pool.imap(abs, [-1, -2, 3])) == [1, 2, 3]
            assert sorted(pool.imap_unordered(abs, range(-50, 0))) == list(range(1, 51))
            assert pool.starmap(pow, [(2, 3), (3, 2)]) == [8, 9]
            assert pool.submit(divmod, 7, 2).result(timeout=30) == (3, 1)
        pipe = conveyor.Pipeline(range(10)).map(lambda x: x + 1, backend="thread").map(
            lambda x: x * 2, workers=2, backend="dask")
        assert pipe.run() == [2 * (x + 1) for x in range(10)]
        check_generator_stage_runs_on("dask")
    """,
    "errors": """
        with conveyor.Pool(2, backend="dask") as pool:
            worker_pids(pool)
            try:
                pool.map(fail_on_5, range(10))
                raise AssertionError("no error")
            except ValueError as error:
                assert str(error) == "bad input 5" and isinstance(error.__cause__, conveyor.RemoteTraceback)
            got = outcomes(pool.imap(fail_on_5, range(8)), 8)
            assert got[:5] + got[6:] == [0, 1, 2, 3, 4, 6, 7] and isinstance(got[5], ValueError), got
    """,
    "killed worker": """
        with conveyor.Pool(2, backend="dask") as pool:
            worker_pids(pool)
            results = outcomes(pool.imap(die_on_7, range(20), chunksize=4), 20)
            crashed = results.pop(7)
            assert isinstance(crashed, conveyor.WorkerCrashedError) and crashed.task_index == 7, crashed
            assert results == [*range(7), *range(8, 20)], results
            assert pool.map(abs, [-1]) == [1]       # the cluster replaced its worker
            worker_pids(pool)
    """,
    "retries": """
        with conveyor.Pool(2, backend="dask", retries=1) as pool, tempfile.TemporaryDirectory() as folder:
            worker_pids(pool)
            assert pool.map(die_first_time, [(x, folder) for x in range(6)]) == list(range(6))
            worker_pids(pool)
    """,
    "initializer and finalizer": """
        folder = tempfile.mkdtemp()

        def hook(event):
            with open(os.path.join(folder, f"{event}-{os.getpid()}"), "w"):
                pass

        def initialized(x):
            return os.path.exists(os.path.join(folder, f"start-{os.getpid()}"))

        with conveyor.Pool(2, backend="dask", initializer=hook, initargs=("start",),
                           finalizer=hook, finalargs=("stop",)) as pool:
            worker_pids(pool)
            assert all(pool.map(initialized, range(20)))
        names = os.listdir(folder)
        starts = {name.split("-")[1] for name in names if name.startswith("start")}
        stops = {name.split("-")[1] for name in names if name.startswith("stop")}
        assert len(starts) == 2 and stops == starts, names
    """,
    "primitives": """
        import queue, threading

        def locked_add(args):
            lock, counter, times = args
            for _ in range(times):
                with counter.get_lock():
                    counter.value += 1
            with lock:
                return True

        def produce(args):
            q, start = args
            q.put_many(range(start, start + 10))
            return start

        def wait_then_take(args):
            event, sem = args
            return event.wait(30) and sem.acquire(timeout=30)

        ctx = conveyor.context("dask", workers=2)
        lock, counter = ctx.Lock(), ctx.Value("i", 0)
        q, event, sem = ctx.Queue(maxsize=100), ctx.Event(), ctx.BoundedSemaphore(1)
        with ctx.Pool() as pool:
            worker_pids(pool)
            assert all(pool.map(locked_add, [(lock, counter, 5)] * 4, chunksize=1))
            assert counter.value == 20
            assert sorted(pool.map(produce, [(q, 0), (q, 10)], chunksize=1)) == [0, 10]
            received = []
            while len(received) < 20:
                received.extend(q.get_many(20, timeout=10))
            assert sorted(received) == list(range(20)) and q.empty()
            taken = pool.submit(wait_then_take, (event, sem))
            assert sem.acquire(timeout=10)                     # hold the only token
            event.set()
            try:
                taken.result(timeout=1)
                raise AssertionError("acquired a held semaphore")
            except TimeoutError:
                pass
            sem.release()
            assert taken.result(timeout=30) is True            # the worker got it once released
            sem.release()
            try:
                sem.release()
                raise AssertionError("over-release accepted")
            except ValueError:
                pass
        assert lock.acquire(timeout=5) and lock.locked()
        assert not lock.acquire(blocking=False)
        lock.release()
        assert not lock.locked()
        try:
            lock.release()
            raise AssertionError("released an unlocked lock")
        except RuntimeError:
            pass
        small = ctx.Queue(maxsize=1)
        small.put(1)
        try:
            small.put(2, timeout=0.2)
            raise AssertionError("no Full")
        except queue.Full:
            pass
        assert small.get() == 1
        try:
            small.get(timeout=0.2)
            raise AssertionError("no Empty")
        except queue.Empty:
            pass
        small.put(3)
        small.shutdown()
        assert small.get() == 3
        try:
            small.get()
            raise AssertionError("no ShutDown")
        except conveyor.ShutDown:
            pass
        try:
            small.put(4)
            raise AssertionError("put after shutdown")
        except conveyor.ShutDown:
            pass
    """,
    "condition and barrier": """
        import threading

        def wait_for_three(args):
            cond, count = args
            with cond:
                return cond.wait_for(lambda: count.value >= 3, timeout=60)

        ctx = conveyor.context("dask", workers=2)
        with ctx.Pool() as pool:
            worker_pids(pool)
            cond, count = ctx.Condition(), ctx.Value("i", 0, lock=False)
            waiting = pool.submit(wait_for_three, (cond, count))
            for _ in range(3):
                with cond:
                    count.value += 1
                    cond.notify_all()
            assert waiting.result(timeout=60) is True
            with cond:
                assert cond.wait(timeout=0.2) is False          # nobody notifies: a timeout
            try:
                cond.notify()
                raise AssertionError("notify without the lock")
            except RuntimeError:
                pass

            barrier = ctx.Barrier(3, timeout=60)
            others = [pool.submit(barrier.wait) for _ in range(2)]
            mine = barrier.wait()
            assert sorted([mine] + [other.result(timeout=60) for other in others]) == [0, 1, 2]
            lonely = ctx.Barrier(2, timeout=0.3)
            try:
                lonely.wait()
                raise AssertionError("a lonely barrier passed")
            except threading.BrokenBarrierError:
                assert lonely.broken
            lonely.reset()
            assert not lonely.broken
            aborted = ctx.Barrier(2)
            aborted.abort()
            try:
                aborted.wait()
                raise AssertionError("an aborted barrier passed")
            except threading.BrokenBarrierError:
                pass
    """,
    "address": """
        cluster = distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                           dashboard_address=":0")
        try:
            folder = tempfile.mkdtemp()

            def mark(name):
                open(os.path.join(folder, name), "w").close()

            with conveyor.Pool(backend="dask", address=cluster.scheduler_address,
                               initializer=mark, initargs=("start",), finalizer=mark, finalargs=("stop",)) as pool:
                worker_pids(pool)
                assert pool.map(abs, [-3, 4]) == [3, 4]
            assert sorted(os.listdir(folder)) == ["start", "stop"]   # the finalizer ran on detaching
        finally:
            cluster.close()
        try:
            conveyor.Pool(backend="dask", adress="tcp://x:1")
            raise AssertionError("a misspelled option was accepted")
        except TypeError as error:
            assert "adress" in str(error)
    """,
}


@pytest.mark.parametrize("scenario", SCENARIOS, ids=list(SCENARIOS))
def test_dask_scenario(scenario):
    script = PRELUDE + 'if __name__ == "__main__":\n' + textwrap.indent(textwrap.dedent(SCENARIOS[scenario]), "    ")
    script += '    print("OK", flush=True)\n'
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=bounded(150))
    assert done.returncode == 0 and "OK" in done.stdout, done.stderr[-4000:]
    pids = {int(pid) for line in done.stdout.splitlines() if line.startswith("PIDS") for pid in line.split()[1:]}
    assert pids
    alive = [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"dask worker processes left behind: {alive}"


class _FakeFuture:
    def __init__(self, status):
        self.status = status

    def exception(self):
        return None


class _Owner:
    def __init__(self):
        self.outcomes = []

    def finish(self, batch, outcome):
        self.outcomes.append(outcome)


def test_a_result_lost_with_its_worker_is_run_again_not_returned_as_none():
    """Dask reports status "lost" when a finished result dies with its worker before it is fetched
    (a later task on that worker killed it): those inputs must run again, never yield None."""
    from conveyor._backends._shared import batches
    from conveyor._backends.dask.backend import DaskBackend
    from conveyor.abc import Batch, CallKind, TaskFunction

    backend = object.__new__(DaskBackend)  # only its reporting step, no cluster
    owner = _Owner()
    batch = Batch(TaskFunction(abs), CallKind.ONE, [5], [5], owner=owner, isolate=True)
    backend._report(batches.encode(batch), _FakeFuture("lost"))
    [outcome] = owner.outcomes
    assert list(outcome.lost) == [0] and not outcome.errors
