"""The cluster primitives without a cluster: the hub, its state and the clients, over a loopback.

Dask and Ray run the same hub (``_shared/hub/core.py``) and the same clients; only the transport
differs. Here the transport is in-process (``hub_loopback.py``), so these tests check everything
but the engine: the Hypothesis models of conformance/test_primitive_models.py against the hub's semantics, the
dead-holder rule (a lock whose holder goes silent is freed after its lease, and a live holder keeps
its lock however long it holds it), Ctrl-C giving back what a pending call took, the lifetime of a
factory's objects, and the cost of an operation in round trips. The engines' own tests
(test_dask_primitives.py, test_ray.py) repeat the dead-holder rule with a killed process.
"""

from __future__ import annotations

import gc
import itertools
import pickle
import threading
import time

import pytest
from hypothesis.stateful import RuleBasedStateMachine, run_state_machine_as_test

import conveyor
from conformance import test_primitive_models as models
from conftest import bounded, wait_until
from conveyor._backends._shared.hub import space as hub_space
from hub_loopback import LoopbackHub, LoopbackPrimitives

pytestmark = pytest.mark.timeout(120)

_names = itertools.count()


@pytest.fixture
def hub():
    made = LoopbackHub(f"test-{next(_names)}")
    yield made
    made.close()


@pytest.fixture
def factory(hub):
    return LoopbackPrimitives(hub)


# -- the Hypothesis models, against the hub ------------------------------------------------------------

MACHINES = {
    "Lock": models.LockMachine, "RLock": models.RLockMachine, "Semaphore": models.SemaphoreMachine,
    "BoundedSemaphore": models.BoundedSemaphoreMachine, "Event": models.EventMachine,
    "Condition": models.ConditionMachine, "Barrier": models.BarrierMachine, "Queue": models.QueueMachine,
}


@pytest.mark.parametrize("kind", sorted(MACHINES))
def test_the_hub_agrees_with_the_model_of(kind, hub):
    machine = MACHINES[kind]

    def __init__(self):
        RuleBasedStateMachine.__init__(self)
        self.ctx = LoopbackPrimitives(hub)
        if hasattr(machine, "__init__") and machine.__init__ is not models._Machine.__init__:
            machine.__init__(self)  # (a machine that makes its primitive in __init__; ctx is ours)
            self.ctx = LoopbackPrimitives(hub)

    bound = type(f"{machine.__name__}_on_the_hub", (machine,), {"__init__": __init__, "backend": "thread"})
    run_state_machine_as_test(bound, settings=models.SETTINGS)


# -- the dead-holder rule ----------------------------------------------------------------------------------

def test_a_lock_whose_holder_goes_silent_is_freed_after_its_lease(factory, monkeypatch):
    monkeypatch.setenv("CONVEYOR_CLUSTER_LEASE", "0.5")
    lock = factory.Lock()
    space = lock._space
    # A holder in another process, which then dies: it takes the lock and is never heard of again.
    assert space.call(lock._key, "acquire", ("a-dead-process:1", 0.5, 1)) is True
    assert lock.locked()
    assert not lock.acquire(timeout=0.2)                 # held: the lease has not run out
    started = time.monotonic()
    assert lock.acquire(timeout=bounded(10))             # freed once it has
    assert 0.2 < time.monotonic() - started < bounded(5)
    lock.release()


def test_a_live_holder_keeps_its_lock_for_longer_than_its_lease(factory, monkeypatch):
    monkeypatch.setenv("CONVEYOR_CLUSTER_LEASE", "0.3")
    lock = factory.Lock()
    assert lock.acquire()
    other = lock._space.call(lock._key, "acquire", ("another-process:1", 0.3, 1), 1.5)  # waits 1.5 s
    assert other is hub_space.TIMED_OUT                  # this process kept telling the hub it lives
    lock.release()
    assert wait_until(lambda: not any(t.name == "conveyor-lease" for t in threading.enumerate()), 5)


# -- interruption, lifetime, cost ---------------------------------------------------------------------

def test_an_interrupted_acquire_gives_back_what_its_pending_call_took(factory, hub):
    """Ctrl-C while an acquire waits in the hub: the call goes on there and may take the lock (or
    token) after all. The space hands the transport the call that gives it back; a transport sends
    it once the pending call answers that it took something, as this stand-in does."""
    lock, sem = factory.Lock(), factory.Semaphore(0)
    holder = threading.Thread(target=lock.acquire)
    holder.start()
    holder.join()
    for blocked, release in ((lock.acquire, lock.release), (sem.acquire, sem.release)):
        real, timer = hub.request, []

        def interrupted_while_pending(method, args, wait, undo=None):
            if method != "call" or args[1] != "acquire":
                return real(method, args, wait, undo)
            if not timer:
                timer.append(threading.Timer(0.2, release))  # granted while the caller is interrupted
                timer[0].start()
            answer = real(method, args, wait)
            if answer != ("ok", True):
                return answer                               # a slice passed: the client asks again
            assert undo is not None
            real(undo[0], undo[1], 0.0)                     # what the transport sends for it
            raise KeyboardInterrupt

        hub.request = interrupted_while_pending
        try:
            with pytest.raises(KeyboardInterrupt):
                blocked()
        finally:
            del hub.request
    assert not lock.locked(), "an interrupted acquire kept the lock"
    assert sem._value == 1, "an interrupted acquire kept the token"


def test_objects_live_while_the_maker_holds_any_of_them_and_go_when_the_factory_closes(factory):
    queue, event = factory.Queue(), factory.Event()
    sent = pickle.dumps(event)                             # as to a task, without keeping it here
    del event
    gc.collect()
    pickle.loads(sent).set()                               # alive: the queue keeps its space
    queue.put(1)
    factory.close()
    with pytest.raises(conveyor.OwnerGoneError, match="closed"):
        queue.get(timeout=1)
    with pytest.raises(conveyor.OwnerGoneError):
        pickle.loads(sent).is_set()


def test_objects_all_dropped_go_from_the_hub(factory, hub):
    blob = pickle.dumps(factory.Queue())
    gc.collect()
    factory.Event()                                       # a new space: the next call sends the drop
    gc.collect()
    keep = factory.Lock()
    keep.locked()
    with pytest.raises(conveyor.OwnerGoneError):
        pickle.loads(blob).put(1)


def test_an_operation_is_one_round_trip(factory, hub):
    q, lock, rlock, sem = factory.Queue(maxsize=10), factory.Lock(), factory.RLock(), factory.Semaphore()

    def cost(operation):
        before = hub.requests
        operation()
        return hub.requests - before

    for name, operation in [("put", lambda: q.put(1)), ("put_many", lambda: q.put_many([2, 3, 4])),
                            ("get", q.get), ("get_many", lambda: q.get_many(5)), ("qsize", q.qsize),
                            ("task_done", q.task_done), ("acquire", lock.acquire), ("locked", lock.locked),
                            ("release", lock.release), ("rlock", rlock.acquire), ("rlock again", rlock.acquire),
                            ("semaphore", sem.acquire), ("release", sem.release)]:
        assert cost(operation) == 1, name


def test_the_hub_forgets_silent_callers_that_hold_nothing(factory, hub, monkeypatch):
    """Every task process of a long run calls the hub once: it must not remember them all."""
    monkeypatch.setenv("CONVEYOR_CLUSTER_LEASE", "3600")
    lock = factory.Lock()
    lock._space.call(lock._key, "acquire", ("an-old-holder:1", 3600.0, 1))  # silent, but holding
    long_ago = time.monotonic() - 3600
    hub.hub._heard.update({f"finished-task-{n}": long_ago for n in range(300)})
    hub.hub._heard["an-old-holder"] = long_ago + 1
    hub.hub._next_expiry_check = 0.0
    assert lock.locked()                                   # any call looks
    assert "an-old-holder" in hub.hub._heard and lock.locked()
    assert not any(process.startswith("finished-task-") for process in hub.hub._heard)
