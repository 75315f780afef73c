"""The Ray backend: the Pool's results and errors on a local Ray, a worker SIGKILLed mid-map, retries,
an existing Ray by address, and every primitive used from tasks. (Skipped where ray is not installed.)

Ray keeps process-wide state (one connection per process, its threads and sockets), so each scenario
runs in a subprocess of its own; the test then checks that every process the scenario started (the
local Ray's GCS, raylet and worker processes) is gone once it has exited. A Ray start costs seconds,
so each scenario covers several cases on one Ray.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from conftest import bounded, wait_until
from scenarios.cluster_script import TASKS

pytest.importorskip("ray")

pytestmark = pytest.mark.timeout(300)

ENV = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token"}
"""Ray binds a local instance to the machine's network address unless told that it is not a cluster
node: this keeps the tests' Ray on the loopback address. A new local Ray requires its (per-user)
token by default, and a driver that connects by address sends it only in token mode."""

PRELUDE = TASKS + """
import queue, sys, tempfile, threading, time
import psutil
import conveyor

def ray_pids():
    # every process this scenario started: the local Ray's GCS, raylet, workers and actors
    print("PIDS", *[child.pid for child in psutil.Process().children(recursive=True)], flush=True)
"""

SCENARIOS = {
    "pool": """
        folder = tempfile.mkdtemp()

        def started(tag):
            with open(os.path.join(folder, f"{tag}-{os.getpid()}"), "a") as marks:
                marks.write("x")

        def initialized(x):
            with open(os.path.join(folder, f"start-{os.getpid()}")) as marks:
                return marks.read() == "x"          # the initializer ran once in this process

        with conveyor.Pool(2, backend="ray", initializer=started, initargs=("start",)) as pool, \\
                conveyor.Pool(2, backend="ray", retries=1) as retrying:
            assert pool.workers == 2
            assert pool.map(lambda x: x * x, range(1000)) == [x * x for x in range(1000)]
            assert list(pool.imap(abs, [-1, -2, 3])) == [1, 2, 3]
            assert sorted(pool.imap_unordered(abs, range(-50, 0))) == list(range(1, 51))
            assert pool.starmap(pow, [(2, 3), (3, 2)]) == [8, 9]
            assert pool.submit(divmod, 7, 2).result(timeout=30) == (3, 1)
            assert all(pool.map(initialized, range(40), chunksize=1))

            # a pool opened inside a task: its function keys are its own, so the workers' caches (which
            # hold the square above under the driver's first key) do not mix them up
            def negate(x):
                return -x

            def nested(x):
                with conveyor.Pool(1, backend="ray") as inner:
                    return inner.map(negate, [x, x + 1])

            assert pool.submit(nested, 5).result(timeout=60) == [-5, -6]

            # a user's exception keeps its type, with the worker's traceback as its cause
            error = expect(ValueError, pool.map, fail_on_5, range(10))
            assert str(error) == "bad input 5" and isinstance(error.__cause__, conveyor.RemoteTraceback)
            got = outcomes(pool.imap(fail_on_5, range(8)), 8)
            assert got[:5] + got[6:] == [0, 1, 2, 3, 4, 6, 7] and isinstance(got[5], ValueError), got
            error = expect(conveyor.PicklingError, pool.map, abs, [1, threading.Lock()])
            assert "task #1" in str(error), error

            # a Ray worker SIGKILLed mid-map fails its input only; the others' results arrive
            results = outcomes(pool.imap(die_on_7, range(20), chunksize=4), 20)
            crashed = results.pop(7)
            assert isinstance(crashed, conveyor.WorkerCrashedError), crashed
            assert crashed.task_index == 7 and crashed.task_input == "7", crashed
            assert results == [*range(7), *range(8, 20)], results
            assert pool.map(abs, [-1, -2]) == [1, 2]           # Ray replaced its worker

            # with retries=1 the killed input runs again and succeeds
            assert retrying.map(die_first_time, [(x, folder) for x in range(6)], chunksize=1) == list(range(6))
            stats = retrying.statistics()
            assert stats["retried"] == 1 and stats["failed"] == 0, stats

            # a pipeline stage on ray
            pipe = conveyor.Pipeline(range(10)).map(lambda x: x + 1, backend="thread").map(
                lambda x: x * 2, workers=2, backend="ray")
            assert pipe.run() == [2 * (x + 1) for x in range(10)]

            # task_timeout kills the task (here blocked in C) and fails its input only
            began = time.monotonic()
            got = outcomes(pool.imap(time.sleep, [0, 60, 0, 0], chunksize=2, task_timeout=1), 4)
            assert got[:1] + got[2:] == [None, None, None] and isinstance(got[1], conveyor.TaskTimeoutError), got
            assert "task #1" in str(got[1]) and time.monotonic() - began < 30
            assert pool.submit(abs, -3).result(timeout=30) == 3       # a new worker took its place

            # what the backend does not do says so
            expect(NotImplementedError, conveyor.Pool, backend="ray", max_memory_per_worker=10**9)
            error = expect(TypeError, conveyor.Pool, backend="ray", adress="x:1")
            assert "adress" in str(error)
            ray_pids()
            stats = pool.statistics()
            assert stats["submitted"] == stats["succeeded"] + stats["failed"] + stats["cancelled"], stats

        import ray
        assert not ray.is_initialized()                      # the last pool stopped the Ray it started

        # each worker is a process of the pool's own: max_tasks_per_worker retires it after its finalizer,
        # and every worker started runs the finalizer once, in itself
        with conveyor.Pool(2, backend="ray", max_tasks_per_worker=2, finalizer=started, finalargs=("final",)) as pool:
            pids = pool.map(lambda x: os.getpid(), range(8), chunksize=1)
        finals = [name for name in os.listdir(folder) if name.startswith("final-")]
        assert len(set(pids)) >= 4 and all(pids.count(pid) <= 2 for pid in pids), pids
        assert len(finals) == pool.statistics()["workers_started"] >= 4, (finals, pool.statistics())
        assert {int(name.split("-")[1]) for name in finals} >= set(pids), (finals, pids)
        for name in finals:
            with open(os.path.join(folder, name)) as marks:
                assert marks.read() == "x", name
        with conveyor.Pool(2, backend="ray", max_tasks_per_worker=3) as pool:    # batches of 2, limit 3:
            pids = pool.map(lambda x: os.getpid(), range(12), chunksize=2)      # never 4 in one worker
        assert all(pids.count(pid) <= 3 for pid in pids), pids
        assert not ray.is_initialized()

        # a worker that dies in its initializer breaks the pool at once (not one worker per input)
        def die_starting():
            os.kill(os.getpid(), 9)

        with conveyor.Pool(2, backend="ray", initializer=die_starting) as pool:
            error = expect(conveyor.InitializerError, pool.map, abs, range(100))
            assert "initializer" in str(error) and pool.statistics()["workers_started"] <= 2, pool.statistics()

        # shutdown(kill=True) stops a running batch: it finishes with TaskCancelledError
        with conveyor.Pool(1, backend="ray") as pool:
            assert pool.map(abs, [1]) == [1]
            slow = pool.submit(time.sleep, 60)
            queued = pool.submit(abs, -1)
            started_at = time.monotonic()
            while not slow.running():
                time.sleep(0.01)
            time.sleep(0.5)
            ray_pids()
            pool.shutdown(wait=True, kill=True)
            assert time.monotonic() - started_at < 30
            expect(conveyor.TaskCancelledError, slow.result, timeout=5)
            assert queued.cancelled() or isinstance(queued.exception(timeout=5), conveyor.TaskCancelledError)
        assert not ray.is_initialized()
    """,
    "lifecycle": """
        keep = conveyor.context("ray", workers=2)
        keep.Event()                                  # the context holds one Ray for the pools below

        def broken():
            raise OSError("no database")

        # a failing initializer breaks the pool
        with conveyor.Pool(2, backend="ray", initializer=broken) as pool:
            error = expect(conveyor.InitializerError, pool.map, abs, range(10))
            assert isinstance(error.__cause__, OSError), repr(error.__cause__)
            expect(conveyor.InitializerError, pool.submit, abs, 1)

        # shutdown(cancel_futures=True): the running task finishes, the waiting one is cancelled
        with conveyor.Pool(1, backend="ray") as pool:
            running, waiting = pool.submit(time.sleep, 1), pool.submit(abs, -1)
            while not running.running():
                time.sleep(0.01)
            pool.shutdown(wait=True, cancel_futures=True)
            assert running.result(timeout=0) is None and waiting.cancelled()
            stats = pool.statistics()
            assert stats["succeeded"] == 1 and stats["cancelled"] == 1, stats

        # Ctrl-C during a map: KeyboardInterrupt at once, and leaving the block kills the running tasks
        import signal
        began = None
        try:
            with conveyor.Pool(2, backend="ray") as pool:
                threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT)).start()
                began = time.monotonic()
                pool.map(time.sleep, [60, 60, 60], chunksize=1)
            raise AssertionError("the map was not interrupted")
        except KeyboardInterrupt:
            assert began is not None and time.monotonic() - began < 10, time.monotonic() - began
        stats = pool.statistics()
        assert stats["in_flight"] == 0 and stats["succeeded"] == 0, stats

        # a pool left open with a task running when the program ends: the program still ends, and
        # its Ray processes with it (checked by the test)
        pool = conveyor.Pool(1, backend="ray")
        left = pool.submit(time.sleep, 120)
        while not left.running():
            time.sleep(0.01)
        ray_pids()
    """,
    "address": """
        import subprocess
        head = subprocess.Popen([sys.executable, "-c", (
            "import sys, ray\\n"
            "ray.init(address='local', num_cpus=2, include_dashboard=False)\\n"
            "print(ray.get_runtime_context().gcs_address, flush=True)\\n"
            "sys.stdin.read()\\n"
            "ray.shutdown()\\n")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            address = head.stdout.readline().strip()
            assert address, "the helper's Ray did not start"
            with conveyor.Pool(4, backend="ray", address=address) as pool:
                assert pool.map(abs, range(-20, 0)) == list(range(20, 0, -1))
                assert 1 <= pool.statistics()["workers_started"] <= 4   # the pool's own processes, at most 4
                ray_pids()
            import ray
            assert ray.is_initialized()                           # still connected, for the next pool
            ctx = conveyor.context("ray", address=address)
            lock = ctx.Lock()
            with ctx.Pool() as pool:
                assert pool.submit(lock.acquire, timeout=5).result(timeout=60) is True
                assert lock.locked() and not lock.acquire(timeout=0.1)
                lock.release()
                ray_pids()
            try:
                conveyor.Pool(backend="ray", address="127.0.0.1:1")
                raise AssertionError("a second cluster in one process was accepted")
            except ValueError as error:
                assert address in str(error)
            ctx_lock = lock
            del ctx
            import gc
            gc.collect()                                          # the context's hub goes with it...
            expect(conveyor.OwnerGoneError, ctx_lock.acquire)
            assert ray.is_initialized() and head.poll() is None   # ...the cluster stays
        finally:
            head.stdin.close()
            assert head.wait(60) == 0
    """,
    "primitives": """
        def locked_add(args):
            lock, counter, times = args
            for _ in range(times):
                with lock:
                    counter.value += 1
            return True

        def value_add(args):
            counter, times = args
            for _ in range(times):
                with counter.get_lock():
                    counter.value += 1
            return True

        def produce(args):
            q, start = args
            for item in range(start, start + 10):
                q.put(item, timeout=30)
            return start

        def consume(q):
            got = []
            while True:
                try:
                    got.append(q.get(timeout=60))
                except conveyor.ShutDown:
                    return got
                q.task_done()

        def step_to_three(args):
            cond, count = args
            for step in (1, 2, 3):
                time.sleep(0.1)
                with cond:
                    count.value = step
                    cond.notify()
            return count.value

        def wait_then_take(args):
            event, sem = args
            return event.wait(30) and sem.acquire(timeout=30)

        def rlock_twice(rlock):
            with rlock:
                with rlock:
                    return True

        def release_foreign(rlock):
            try:
                rlock.release()
            except RuntimeError:
                return "refused"
            return "released"

        def bump_first(numbers):
            with numbers.get_lock():
                numbers[0] = numbers[0] + 1
            return True

        def note(args):
            shared, log, space, key = args
            shared[key] = os.getpid()
            log.append(key)
            shared.modify("hits", lambda hits: hits + 1, default=0)   # atomic in the hub
            setattr(space, key, os.getpid())
            return key in shared

        ctx = conveyor.context("ray", workers=2)
        lock, counter = ctx.Lock(), ctx.Value("i", 0, lock=False)
        with ctx.Pool() as pool:
            # a lock around read-modify-write: the exact total
            assert all(pool.map(locked_add, [(lock, counter, 10)] * 4, chunksize=1))
            assert counter.value == 40
            value = ctx.Value("d", 1.5)
            assert all(pool.map(value_add, [(value, 5)] * 4, chunksize=1))
            assert value.value == 21.5

            # producers and a consumer on a bounded queue, ended by shutdown
            q = ctx.Queue(maxsize=3)
            consumer = pool.submit(consume, q)
            assert sorted(pool.map(produce, [(q, 0), (q, 10)], chunksize=1)) == [0, 10]
            q.join()                                             # every item marked done
            q.shutdown()
            assert sorted(consumer.result(timeout=60)) == list(range(20))
            expect(conveyor.ShutDown, q.put, 1)

            # a condition: the caller waits for a predicate that a task makes true...
            cond, count = ctx.Condition(), ctx.Value("i", 0, lock=False)
            stepping = pool.submit(step_to_three, (cond, count))
            with cond:
                assert cond.wait_for(lambda: count.value == 3, timeout=60)
            assert stepping.result(timeout=60) == 3
            expect(RuntimeError, cond.notify)                    # without the lock
            # ...and notify(n) wakes exactly n of the waiters (three threads here, three owners)
            arrived, woken = ctx.Value("i", 0, lock=False), queue.SimpleQueue()

            def sleeper():
                with cond:
                    arrived.value += 1
                    woken.put(cond.wait(timeout=30))

            sleepers = [threading.Thread(target=sleeper) for _ in range(3)]
            for thread in sleepers:
                thread.start()
            while True:
                with cond:                  # all three counted and released the lock: all wait
                    if arrived.value == 3:
                        cond.notify(2)
                        break
            assert [woken.get(timeout=10), woken.get(timeout=10)] == [True, True]
            expect(queue.Empty, woken.get, timeout=1)            # the third still waits
            with cond:
                cond.notify()
            assert woken.get(timeout=10) is True
            for thread in sleepers:
                thread.join(10)
            with cond:
                assert cond.wait(timeout=0.3) is False           # nobody notifies: a timeout

            # an event and a bounded semaphore
            event, sem = ctx.Event(), ctx.BoundedSemaphore(1)
            taken = pool.submit(wait_then_take, (event, sem))
            assert sem.acquire(timeout=10)                       # hold the only token
            event.set()
            expect(TimeoutError, taken.result, timeout=1)        # the task cannot have it
            sem.release()
            assert taken.result(timeout=30) is True              # it got it once released
            sem.release()
            expect(ValueError, sem.release)                      # over-release
            plain = ctx.Semaphore(0)
            assert not plain.acquire(timeout=0.2)
            plain.release(2)
            assert plain.acquire(blocking=False) and plain.acquire(timeout=1)

            # a barrier of the caller and two tasks
            barrier = ctx.Barrier(3, timeout=60)
            others = [pool.submit(barrier.wait) for _ in range(2)]
            mine = barrier.wait()
            assert sorted([mine] + [other.result(timeout=60) for other in others]) == [0, 1, 2]

            # RLock: re-entrant in a task; its owner alone may release it
            rlock = ctx.RLock()
            assert pool.submit(rlock_twice, rlock).result(timeout=30) is True
            rlock.acquire()
            assert rlock.acquire(timeout=1)                      # re-entrant here too
            assert pool.submit(release_foreign, rlock).result(timeout=30) == "refused"
            rlock.release()
            rlock.release()
            expect(RuntimeError, rlock.release)

            # a shared array
            numbers = ctx.Array("d", 3)
            assert all(pool.map(bump_first, [numbers] * 5, chunksize=1))
            assert numbers[:] == [5.0, 0.0, 0.0] and len(numbers) == 3
            numbers[1:] = [7, 8]
            assert list(numbers) == [5.0, 7.0, 8.0]
            expect(TypeError, numbers.__setitem__, 0, "x")

            # a shared dict, list and Namespace written by tasks
            shared, log, space = ctx.dict(a=1), ctx.list(), ctx.Namespace(a=0)
            assert all(pool.map(note, [(shared, log, space, key) for key in "bcd"], chunksize=1))
            assert sorted(shared) == ["a", "b", "c", "d", "hits"] and shared["a"] == 1 and shared["hits"] == 3
            assert shared.pop("a") == 1 and "a" not in shared and shared.get("a", 7) == 7
            assert sorted(log) == list("bcd") and space.b == shared["b"] and space.d == shared["d"]
            ray_pids()
        check_generator_stage_runs_on("ray")

        # Ctrl-C wakes a blocked wait at once, and an interrupted acquire holds nothing afterwards
        import signal
        for blocked, wake in ((lock.acquire, lock.release), (ctx.Queue().get, None)):
            if wake is not None:
                assert lock.acquire(timeout=5)                  # held: the next acquire blocks
            threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
            began = time.monotonic()
            expect(KeyboardInterrupt, blocked)
            assert time.monotonic() - began < 2.5
            if wake is not None:
                wake()
                assert lock.acquire(timeout=10), "the interrupted acquire kept the lock"
                lock.release()

        # the stdlib's semantics, in the caller
        assert lock.acquire(timeout=5) and lock.locked()
        assert not lock.acquire(blocking=False)
        assert not lock.acquire(timeout=0.2)
        lock.release()
        assert not lock.locked()
        expect(RuntimeError, lock.release)
        expect(ValueError, lock.acquire, False, 1)
        small = ctx.Queue(maxsize=1)
        small.put(1)
        assert small.full() and small.qsize() == 1
        expect(queue.Full, small.put, 2, timeout=0.2)
        expect(queue.Full, small.put_nowait, 2)
        assert small.get() == 1 and small.empty()
        expect(queue.Empty, small.get, timeout=0.2)
        expect(queue.Empty, small.get_nowait)
        small.put_many([3])
        assert not small.is_shutdown
        small.shutdown()
        assert small.is_shutdown
        assert small.get() == 3
        expect(conveyor.ShutDown, small.get)
        expect(conveyor.ShutDown, small.put, 4)
        many = ctx.Queue()
        many.put_many(range(10))
        assert many.get_many(4) == [0, 1, 2, 3] and many.qsize() == 6
        many.shutdown(immediate=True)
        expect(conveyor.ShutDown, many.get)
        lifo = ctx.LifoQueue()
        lifo.put_many([1, 2, 3])
        assert [lifo.get() for _ in range(3)] == [3, 2, 1]
        lonely = ctx.Barrier(2, timeout=0.3)
        expect(threading.BrokenBarrierError, lonely.wait)
        assert lonely.broken and lonely.n_waiting == 0
        lonely.reset()
        assert not lonely.broken
        aborted = ctx.Barrier(2)
        aborted.abort()
        expect(threading.BrokenBarrierError, aborted.wait)
        passed = []
        solo = ctx.Barrier(1, action=lambda: passed.append(True))
        assert solo.wait() == 0 and passed == [True]
        event = ctx.Event()
        assert not event.wait(0.2) and not event.is_set()
        event.set()
        assert event.wait(0) and event.is_set()
        event.clear()
        assert not event.is_set()
        notified = ctx.Condition(ctx.Lock())
        expect(RuntimeError, notified.wait, 0.1)                 # without the lock
        with notified:
            assert notified.wait(0.1) is False
        expect(NotImplementedError, ctx.Pipe)

        # a pool's objects outlive the pool; one passed on without a reference kept lives while its
        # factory does; once the pool and all it made are gone, so are the objects, for copies too
        import gc, pickle
        with ctx.Pool(1) as pool:
            kept, dropped = pool.Queue(), pool.dict(a=1)
            kept.put("after")
            passed_on = pickle.dumps(pool.Event())               # no reference to it kept here
            copies = pickle.dumps(dropped)
        assert kept.get(timeout=5) == "after"
        gc.collect()
        pickle.loads(passed_on).set()
        assert pickle.loads(passed_on).is_set()
        del pool, kept, dropped
        gc.collect()
        dropped_copy = pickle.loads(copies)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:      # the drop goes with this process's next hub call
            try:
                dropped_copy["a"]
            except conveyor.OwnerGoneError:
                break
            time.sleep(0.05)
        else:
            raise AssertionError("the objects of a pool that is gone are still in the hub")
    """,
    # A second context after the first one's Ray was shut down: its factory must make its objects in a
    # hub of the new Ray (the new Ray numbers its jobs from the start again, so the hub's name once
    # pointed at the dead actor: "Can't find actor" from every factory call).
    "dead_holder": """
        check_a_dead_holder_s_lock_is_freed_after_its_lease(conveyor.context("ray"))
        ray_pids()
    """,
    "two_rounds": """
        import gc
        import ray

        def inc(job):
            lock, counter, n = job
            for _ in range(n):
                with lock:
                    counter.value += 1
            return n

        for _ in range(2):
            ctx = conveyor.context("ray")
            lock, counter = ctx.Lock(), ctx.Value("i", 0)
            with ctx.Pool(2) as pool:
                assert pool.map(inc, [(lock, counter, 50)] * 2) == [50, 50]
            assert counter.value == 100, counter.value
            ray_pids()
            del ctx, lock, counter, pool
            gc.collect()
            assert not ray.is_initialized(), "the round's Ray is still up: the next round would not start anew"
    """,
}


def run_scenario(name: str) -> None:
    script = PRELUDE + 'if __name__ == "__main__":\n' + textwrap.indent(textwrap.dedent(SCENARIOS[name]), "    ")
    script += '    print("OK", flush=True)\n'
    began = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=bounded(240),
                          env=ENV)
    assert time.monotonic() - began < bounded(180), "the scenario took too long to end"
    assert done.returncode == 0 and "OK" in done.stdout, (done.stdout[-2000:], done.stderr[-6000:])
    pids = {int(pid) for line in done.stdout.splitlines() if line.startswith("PIDS") for pid in line.split()[1:]}
    assert pids, "the scenario started no Ray process"

    def alive() -> list[int]:
        found = []
        for pid in pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    found.append(pid)
            except psutil.NoSuchProcess:
                pass
        return found

    # Ray's own processes end a moment after the driver that started them (later on a loaded machine)
    assert wait_until(lambda: not alive(), 15), f"Ray processes left behind: {alive()}"


@pytest.mark.parametrize("scenario", SCENARIOS, ids=list(SCENARIOS))
def test_ray_scenario(scenario: str) -> None:
    run_scenario(scenario)


def test_without_ray_the_backend_says_how_to_install_it() -> None:
    script = textwrap.dedent("""
        import sys
        sys.modules["ray"] = None            # as if ray were not installed
        import conveyor
        try:
            conveyor.Pool(backend="ray")
        except conveyor.BackendUnavailableError as error:
            assert 'pip install "conveyor[ray]"' in str(error), error
            print("OK")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=bounded(60))
    assert "OK" in done.stdout, done.stderr[-3000:]


class _Owner:
    def __init__(self) -> None:
        self.outcomes: list = []

    def claim(self, batch) -> bool:
        return True

    def finish(self, batch, outcome) -> None:
        self.outcomes.append(outcome)


def _failed(items: list, exc: BaseException):
    """How the backend reports a task that failed as a whole, without starting Ray."""
    from conveyor._backends._shared import batches
    from conveyor._backends.ray.outcomes import task_failed
    from conveyor.abc import Batch, CallKind, TaskFunction

    batch = Batch(TaskFunction(abs), CallKind.ONE, items, [10 + i for i in range(len(items))], owner=_Owner())
    sent = batches.encode(batch)
    return task_failed(sent, exc)


def test_a_dead_worker_fails_a_lone_input_and_isolates_a_batch() -> None:
    """A task lost with its worker: with several inputs nobody knows which killed it (all re-run alone),
    with one input it is that input's WorkerCrashedError; a result lost after it was computed re-runs."""
    import ray.exceptions

    import conveyor

    outcome = _failed([1, 2, 3], ray.exceptions.WorkerCrashedError())
    assert list(outcome.suspects) == [0, 1, 2] and not outcome.errors
    outcome = _failed([7], ray.exceptions.WorkerCrashedError())
    error = outcome.errors[0]
    assert isinstance(error, conveyor.WorkerCrashedError) and error.task_index == 10 and error.task_input == "7"
    outcome = _failed([7], ray.exceptions.ObjectLostError("00" * 28, None, ""))
    assert list(outcome.lost) == [0] and not outcome.errors
    cause = KeyError("k")
    outcome = _failed([7], ray.exceptions.RayTaskError("run_batch", "traceback", cause))
    assert outcome.errors[0] is cause
