"""The process Condition wakes whom ``threading.Condition`` would wake: ``notify(n)`` goes to up to ``n``
of the waiters waiting at the time of the call, never to a ``wait()`` that starts after it, and never
to a waiter whose process was killed.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time

import pytest

import conveyor
from conftest import START_METHODS, bounded, wait_until
from conveyor._backends.process import condition

pytestmark = pytest.mark.timeout(120)

FORK = multiprocessing.get_context("fork")
WOKEN, TIMED_OUT = 1, 2


@pytest.fixture
def ctx():
    return conveyor.context("process")


def _wait_once(cond, started, results, index, timeout):
    with cond:
        started.set()  # still holding the lock: we are waiting by the time anyone else gets it
        results[index] = WOKEN if cond.wait(timeout) else TIMED_OUT


def _start(mp_ctx, cond, started, results, index, timeout):
    started.clear()
    child = mp_ctx.Process(target=_wait_once, args=(cond, started, results, index, timeout))
    child.start()
    assert started.wait(bounded(30)), "the waiter never started"
    with cond:  # taken once the waiter let go of the lock inside wait(): it is waiting now
        pass
    return child


def _join(*children):
    for child in children:
        child.join(bounded(30))
        if child.is_alive():
            child.kill()
            child.join()
            raise AssertionError(f"process {child.pid} did not finish")


@pytest.mark.parametrize("method", START_METHODS)
def test_a_notify_does_not_go_to_a_wait_that_started_after_it(ctx, method):
    cond, started, results = ctx.Condition(), ctx.Event(), ctx.Array("i", 1)
    waiter = _start(multiprocessing.get_context(method), cond, started, results, 0, bounded(20))
    try:
        with cond:
            cond.notify()
            # The notify was for the waiter: the notifier's own next wait must not take it.
            assert cond.wait(0.5) is False
    finally:
        _join(waiter)
    assert results[0] == WOKEN, "the waiter that was waiting at the notify timed out"


def test_notify_n_wakes_only_waiters_of_its_time(ctx):
    """notify(1) with one waiter, then a second waiter: the second is not woken by the first's notify."""
    cond, started, results = ctx.Condition(), ctx.Event(), ctx.Array("i", 2)
    first = _start(FORK, cond, started, results, 0, bounded(20))
    with cond:
        cond.notify(1)
        second = _start_while_holding(cond, started, results)
    try:
        assert started.wait(bounded(30)), "the second waiter never started"
        with cond:  # it is waiting now
            pass
        _join(first)
        assert results[0] == WOKEN
        time.sleep(0.3)
        assert results[1] == 0, "the second waiter took a notify made before it waited"
        with cond:
            cond.notify(5)
        _join(second)
        assert results[1] == WOKEN
    finally:
        for child in (first, second):
            if child.is_alive():
                child.kill()
                child.join()


def _start_while_holding(cond, started, results):
    """Start a second waiter while this process holds the condition's lock; release it to let it in."""
    started.clear()
    child = FORK.Process(target=_wait_once, args=(cond, started, results, 1, bounded(20)))
    child.start()
    return child


def _player(cond, turn, me, rounds, timeouts):
    real_wait = type(cond).wait

    def counted_wait(timeout=None):
        woken = real_wait(cond, timeout)
        if not woken:
            timeouts[me] += 1
        return woken

    cond.wait = counted_wait  # wait_for() waits through this
    for _ in range(rounds):
        with cond:
            while not cond.wait_for(lambda: turn.value == me, timeout=bounded(2.0)):
                pass
            turn.value = 1 - me
            cond.notify_all()


def test_ping_pong_turn_taking_never_needs_a_timeout(ctx):
    cond, turn, timeouts = ctx.Condition(), ctx.Value("i", 0, lock=False), ctx.Array("i", 2)
    rounds = 15
    players = [FORK.Process(target=_player, args=(cond, turn, me, rounds, timeouts)) for me in (0, 1)]
    for player in players:
        player.start()
    try:
        _join(*players)
    finally:
        for player in players:
            if player.is_alive():
                player.kill()
                player.join()
    assert [p.exitcode for p in players] == [0, 0]
    assert timeouts[:] == [0, 0], "waits that ran out of time although the other player had notified"


def test_a_waiter_killed_while_waiting_absorbs_no_notify(ctx):
    cond, started, results = ctx.Condition(), ctx.Event(), ctx.Array("i", 2)
    doomed = _start(FORK, cond, started, results, 0, bounded(60))
    os.kill(doomed.pid, signal.SIGKILL)
    doomed.join(bounded(30))
    live = _start(FORK, cond, started, results, 1, bounded(20))
    try:
        with cond:
            cond.notify(1)  # the killed waiter waited longer: it must be skipped
        _join(live)
        assert results[1] == WOKEN, "the live waiter timed out: the notify went to the killed one"
        with cond:
            cond.notify_all()  # nobody alive waits: nothing is kept for later
        with cond:
            started_at = time.monotonic()
            assert cond.wait(0.5) is False, "a wait with no notify after it returned True"
            assert time.monotonic() - started_at >= 0.45
    finally:
        if live.is_alive():
            live.kill()
            live.join()


def test_a_wake_up_given_to_a_waiter_that_dies_before_taking_it_goes_to_another(ctx):
    """A waiter stopped, marked by notify(1), then killed: the waiter that was also waiting at that
    notify gets the wake-up instead (within a few slices), and a later wait does not."""
    cond, started, results = ctx.Condition(), ctx.Event(), ctx.Array("i", 1)
    doomed = _start(FORK, cond, started, results, 0, bounded(60))
    os.kill(doomed.pid, signal.SIGSTOP)
    woken = []

    def waiter():
        with cond:
            woken.append(cond.wait(bounded(20)))

    thread = threading.Thread(target=waiter)
    try:
        with cond:
            thread.start()
        assert wait_until(lambda: _waiting(cond) == 2, 10)
        with cond:
            cond.notify(1)  # to the stopped one: it waited longest, and is alive
        os.kill(doomed.pid, signal.SIGKILL)
        doomed.join(bounded(30))
        started_at = time.monotonic()
        thread.join(bounded(30))
        assert woken == [True]
        assert time.monotonic() - started_at < bounded(5)
        with cond:
            assert cond.wait(0.3) is False
    finally:
        if doomed.is_alive():
            doomed.kill()
            doomed.join()
        if thread.ident is not None:
            thread.join(bounded(30))


def _waiting(cond):
    state = cond._segment.state
    table = [state[cond._TABLE + 3 * slot] for slot in range(cond._SLOTS)]
    return sum(1 for pid in table if pid) + state[cond._OVERFLOW]


def test_more_waiters_than_slots_lose_no_wake_up(ctx):
    cond = ctx.Condition()
    count = condition.ProcessCondition._SLOTS + 6
    results = []
    ready = threading.Barrier(count + 1)

    def waiter():
        ready.wait()
        with cond:
            results.append(cond.wait(bounded(60)))

    threads = [threading.Thread(target=waiter) for _ in range(count)]
    for thread in threads:
        thread.start()
    try:
        ready.wait()
        assert wait_until(lambda: _waiting(cond) == count, 20)
        assert cond._segment.state[cond._OVERFLOW] == 6
        for _ in range(count):  # one notify per waiter: each wakes at least one
            with cond:
                cond.notify()
        assert wait_until(lambda: len(results) == count, 20)
        assert results == [True] * count
        assert _waiting(cond) == 0
        with cond:
            assert cond.wait(0.2) is False
    finally:
        with cond:
            cond.notify_all()
        for thread in threads:
            thread.join(bounded(30))


def test_notify_wakes_exactly_n_of_the_waiters_in_order_of_arrival(ctx):
    cond = ctx.Condition()
    woken = []

    def waiter(index):
        with cond:
            if cond.wait(bounded(30)):
                woken.append(index)

    threads = []
    for index in range(4):
        threads.append(threading.Thread(target=waiter, args=(index,)))
        threads[-1].start()
        assert wait_until(lambda expected=index + 1: _waiting(cond) == expected, 10)
    try:
        with cond:
            cond.notify(2)
        assert wait_until(lambda: len(woken) == 2, 10)
        time.sleep(0.2)
        assert sorted(woken) == [0, 1]
        with cond:
            cond.notify(0)  # as threading: nothing
            cond.notify(-1)
        time.sleep(0.2)
        assert len(woken) == 2
    finally:
        with cond:
            cond.notify_all()
        for thread in threads:
            thread.join(bounded(30))
    assert sorted(woken) == [0, 1, 2, 3]


def test_wait_and_notify_need_the_lock(ctx):
    cond = ctx.Condition(ctx.Lock())
    with pytest.raises(RuntimeError):
        cond.wait(0)
    with pytest.raises(RuntimeError):
        cond.notify()
    with pytest.raises(RuntimeError):
        cond.notify_all()
    with cond:
        assert cond.wait(0) is False
        assert cond.wait_for(lambda: 7, timeout=0) == 7
    assert _waiting(cond) == 0
