"""A process SIGKILLed while it waits on a process primitive leaves nothing behind.

With glibc's process-shared condition variables it did: a waiter killed inside
``pthread_cond_clockwait`` never gave back its reference, and the next signal blocked forever in C,
holding the primitive's mutex, so every live process using it hung past any timeout. Everything that
could hang here runs in a child process, joined with a bound; the test process only makes the
objects, kills and checks.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time

import pytest

import conveyor
from conftest import bounded

pytestmark = pytest.mark.timeout(120)

WAITERS = 4
ROUNDS = 200
fork = multiprocessing.get_context("fork")


def _hold_until(lock, holding, release):
    with lock:
        holding.set()
        release.wait(60)


def _acquire(lock):
    lock.acquire(timeout=60)


def _get(q):
    try:
        q.get(timeout=60)
    except Exception:  # noqa: BLE001 - killed long before
        pass


def _contend(lock):
    for _ in range(ROUNDS):
        with lock:
            time.sleep(0.0002)


def _consume(q):
    for _ in range(ROUNDS):
        q.get(timeout=30)


def _produce(q):
    for item in range(ROUNDS):
        q.put(item)
        time.sleep(0.0005)


def _start(target, *args):
    process = fork.Process(target=target, args=args, daemon=True)
    process.start()
    return process


def _kill_while_waiting(processes):
    time.sleep(bounded(0.4))  # long enough to be asleep in the wait
    for process in processes:
        os.kill(process.pid, signal.SIGKILL)
    for process in processes:
        process.join()


def _all_finish(processes, seconds):
    try:
        for process in processes:
            process.join(bounded(seconds))
        return [process.exitcode for process in processes]
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
                process.join()


def test_waiters_killed_in_lock_acquire_do_not_hang_the_next_release():
    ctx = conveyor.context("process")
    lock, holding, release = ctx.Lock(), ctx.Event(), ctx.Event()
    holder = _start(_hold_until, lock, holding, release)
    assert holding.wait(bounded(20))
    _kill_while_waiting([_start(_acquire, lock) for _ in range(WAITERS)])
    release.set()
    assert _all_finish([holder], 20) == [0]
    assert _all_finish([_start(_contend, lock) for _ in range(2)], 30) == [0, 0]
    assert lock.acquire(timeout=bounded(5))
    lock.release()


def test_consumers_killed_in_queue_get_do_not_hang_producers_or_consumers():
    q = conveyor.context("process").Queue()
    _kill_while_waiting([_start(_get, q) for _ in range(WAITERS)])
    assert _all_finish([_start(_consume, q), _start(_produce, q)], 30) == [0, 0]
    assert q.empty()
