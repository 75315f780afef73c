"""What the conformance suite cannot show of the Dask primitives: the hub's objects used from tasks
(containers, LIFO and priority queues, ``task_done``/``join``, arrays), how many calls an operation
costs, Ctrl-C during a blocked acquire, a holder killed while it holds a lock, and the errors when
an object's factory or the hub's worker is gone. (The stdlib semantics themselves are checked by
the conformance suite on Dask: ``python tests/clusters.py dask tests/conformance/test_primitives.py``;
the hub without an engine by test_hub.py.)

Every scenario runs as a script of its own (a Dask client keeps process-wide threads) against one
2-worker cluster for the module, started in a process tree of its own (tests/clusters.py).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from clusters import clean_environment, running_cluster
from conftest import bounded
from scenarios.cluster_script import TASKS

pytest.importorskip("distributed")

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def cluster_environment():
    with running_cluster("dask") as environment:
        yield environment


def _scenario(environment: dict[str, str], body: str) -> str:
    """Run ``body`` as a script, with ``ctx``: a context on the cluster that ``environment`` names
    (or, if it names none, on a local cluster of the script's own); its output."""
    script = TASKS + "import conveyor\nctx = conveyor.context('dask')\n" + textwrap.dedent(body)
    done = subprocess.run([sys.executable, "-c", script + "\nprint('DONE', flush=True)\n"], env=environment,
                          capture_output=True, text=True, timeout=bounded(180))
    assert done.returncode == 0 and "DONE" in done.stdout, done.stdout[-2000:] + done.stderr[-4000:]
    return done.stdout


def test_containers_queues_and_arrays_work_from_tasks(cluster_environment):
    _scenario(cluster_environment, """
        import operator

        def count(args):
            counts, seen, status, word = args
            counts.modify(word, operator.add, 1, default=0)   # one atomic step in the hub
            seen.append(word)
            status.last = word
            return counts.get(word)

        def fill(args):
            arr, i = args
            arr[i] = i * i                                      # each element its own write

        def consume(q):
            done = 0
            while True:
                try:
                    q.get(timeout=30)
                except conveyor.ShutDown:
                    return done
                q.task_done()
                done += 1

        counts, seen, status = ctx.dict(), ctx.list(), ctx.Namespace(last=None)
        words = "the cat and the hat and the bat".split()
        stack, jobs, work, arr = ctx.LifoQueue(), ctx.PriorityQueue(), ctx.Queue(), ctx.Array("d", 8)
        with ctx.Pool(2) as pool:
            pool.map(count, [(counts, seen, status, w) for w in words], chunksize=1)
            assert counts == {"the": 3, "cat": 1, "and": 2, "hat": 1, "bat": 1}, counts.copy()
            assert sorted(seen) == sorted(words) and status.last in words
            pool.map(jobs.put, [(3, "low"), (1, "urgent"), (2, "normal")], chunksize=1)
            assert [jobs.get(timeout=10)[1] for _ in range(3)] == ["urgent", "normal", "low"]
            pool.map(stack.put, [1], chunksize=1)
            stack.put_many([2, 3])
            assert stack.get_many(3) == [3, 2, 1]
            pool.map(fill, [(arr, i) for i in range(8)], chunksize=1)
            assert arr[:] == [float(i * i) for i in range(8)] and len(arr) == 8
            consumers = [pool.submit(consume, work) for _ in range(2)]
            work.put_many(range(50))
            work.join()                                        # every item marked done by a task
            work.shutdown()
            assert sum(c.result(timeout=60) for c in consumers) == 50
            expect(ValueError, work.task_done)                 # one more than were put
    """)


def test_an_operation_is_one_call(cluster_environment):
    """A queue or lock operation is one call to the hub (not a lock, a read and a write); taking
    an RLock again too (its depth is the hub's, so that every copy of it agrees)."""
    _scenario(cluster_environment, """
        from conveyor._backends.dask import hub as dask_hub

        calls = []
        real = dask_hub.DaskHub.request

        def counted(self, method, *args, **kwargs):
            calls.append(method)
            return real(self, method, *args, **kwargs)

        dask_hub.DaskHub.request = counted

        def cost(operation):
            del calls[:]
            operation()
            return calls.count("call")

        q, lock, rlock = ctx.Queue(maxsize=10), ctx.Lock(), ctx.RLock()
        for name, operation in [("put", lambda: q.put(1)), ("put_many", lambda: q.put_many([2, 3, 4])),
                                ("get", q.get), ("get_many", lambda: q.get_many(5)),
                                ("qsize", q.qsize), ("task_done", q.task_done),
                                ("acquire", lock.acquire), ("locked", lock.locked), ("release", lock.release),
                                ("rlock", rlock.acquire), ("rlock again", rlock.acquire)]:
            assert cost(operation) == 1, (name, calls)
        rlock.release()
        rlock.release()
    """)


def test_ctrl_c_in_a_blocked_acquire_gives_back_what_is_granted_meanwhile(cluster_environment):
    """Interrupted, a blocked acquire's request is still waiting in the hub; a release right then
    grants it after all. That grant must be given back: else the lock stays held by nobody (its
    lease kept by this live process), or the semaphore's token is gone."""
    _scenario(cluster_environment, """
        import os, signal, threading, time

        def interrupted(acquire):
            threading.Timer(0.25, os.kill, (os.getpid(), signal.SIGINT)).start()
            started = time.monotonic()
            try:
                acquire()
            except KeyboardInterrupt:
                assert time.monotonic() - started < 2, "Ctrl-C was not seen at once"
                return
            raise AssertionError("acquired while held")

        lock, sem = ctx.Lock(), ctx.Semaphore(0)
        for _ in range(3):
            holder = threading.Thread(target=lock.acquire)
            holder.start()
            holder.join()
            interrupted(lock.acquire)
            lock.release()                        # (any thread of any process may release it)
            interrupted(sem.acquire)
            sem.release()
            time.sleep(0.5)                       # what the pending requests got, given back
            assert not lock.locked(), "an interrupted acquire kept the lock"
            assert sem._value == 1, sem._value
            assert sem.acquire(timeout=5)
    """)


def test_objects_live_while_any_of_their_factory_s_is_held_then_go(cluster_environment):
    _scenario(cluster_environment, """
        import gc, pickle

        q, keep = ctx.Queue(), ctx.Queue()               # keep: the hub stays
        blob = pickle.dumps(q)
        del q
        gc.collect()
        pickle.loads(blob).put(1)                        # alive: keep holds their space
        assert pickle.loads(blob).get(timeout=10) == 1
        del keep
        gc.collect()                                     # the last of them: the hub goes
        expect(conveyor.OwnerGoneError, pickle.loads(blob).put, 1)
    """)


def test_a_dead_holder_s_lock_is_freed_after_its_lease(cluster_environment):
    _scenario(cluster_environment, """
        check_a_dead_holder_s_lock_is_freed_after_its_lease(ctx)
    """)


def test_the_hubs_worker_killed_fails_its_objects_with_owner_gone_not_a_hang():
    """(On a cluster of the script's own: its nanny starts a new worker, which must go with it.)"""
    _scenario(clean_environment(), """
        import os, signal, time
        import distributed

        q, d, lock = ctx.Queue(), ctx.dict(a=1), ctx.Lock()
        q.put(1)
        hub = q._space.transport
        client = distributed.Client(hub._address, set_as_default=False)
        worker = hub._pickled[1]                           # where Dask keeps the hub actor
        os.kill(client.run(os.getpid, workers=[worker])[worker], signal.SIGKILL)
        started = time.monotonic()
        for call in (lambda: q.get(timeout=5), lambda: d["a"], lambda: lock.acquire(timeout=5)):
            expect(conveyor.OwnerGoneError, call)          # also a ConnectionError
        assert time.monotonic() - started < 15            # (not Dask's 30 s of trying to reconnect)
        client.close()
    """)
