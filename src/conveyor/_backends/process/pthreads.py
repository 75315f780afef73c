"""Process-shared, robust POSIX mutexes and condition variables in shared memory, through ctypes.

Why not ``multiprocessing.Lock``: a process that dies while holding one wedges every other process
forever, and it cannot be passed to an already running worker. A *robust* mutex tells the next
locker that its owner died (``EOWNERDEAD``) instead; living in a named shared-memory segment, it can
be pickled by name and attached anywhere.

Condition variables are not glibc's: a process SIGKILLed inside ``pthread_cond_clockwait`` never gives
back its reference to the condition variable (glibc 2.36), and the next ``pthread_cond_signal`` then
blocks forever, in C, holding the mutex: every process using the primitive hangs, past any timeout
and Ctrl-C. Here a condition variable is a 32-bit sequence word waited on with the ``futex`` system
call: a waiter reads it holding the mutex, lets the mutex go and sleeps only while the word is
unchanged; a signal bumps the word and wakes the kernel's waiters. A killed waiter leaves nothing
behind. (Where the futex call number is unknown, glibc's condition variables are used.)

All waits use ``CLOCK_MONOTONIC`` deadlines and wake at least every ``SLICE_SECONDS``, so Ctrl-C is
handled promptly and a wake-up lost to a waiter that died costs at most one slice. Linux (glibc)
only; :func:`available` says whether this build has the functions.
"""

from __future__ import annotations

import ctypes
import errno
import platform
import threading
import time
from typing import Any

SLICE_SECONDS = 0.1
MUTEX_BYTES = 64     # sizeof(pthread_mutex_t) is 40 on x86-64 glibc; leave room
COND_BYTES = 64      # sizeof(pthread_cond_t) is 48
_ATTR_BYTES = 16
_PTHREAD_PROCESS_SHARED = 1
_PTHREAD_MUTEX_ROBUST = 1


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


try:
    _libc: Any = ctypes.CDLL(None, use_errno=True)
    _HAVE = all(hasattr(_libc, name) for name in (
        "pthread_mutexattr_setrobust", "pthread_mutex_consistent", "pthread_mutex_clocklock",
        "pthread_cond_clockwait", "pthread_condattr_setclock"))
except OSError:  # pragma: no cover - no C library to load
    _libc, _HAVE = None, False


_SYS_FUTEX = {"x86_64": 202, "amd64": 202, "aarch64": 98, "arm64": 98, "riscv64": 98, "ppc64le": 221,
              "ppc64": 221, "s390x": 238}.get(platform.machine().lower())
_FUTEX_WAIT = 0  # not the _PRIVATE ones: the word is shared between processes
_FUTEX_WAKE = 1
_WAKE_ALL = 0x7FFFFFFF
_u32 = ctypes.c_uint32
_FUTEX_TID_MASK = 0x3FFFFFFF  # the owner's thread id in a robust mutex's futex word
_SLICE = _Timespec(int(SLICE_SECONDS), int((SLICE_SECONDS % 1.0) * 1e9))
_futex: Any = None
if _HAVE and _SYS_FUTEX is not None:
    # A function object of its own with declared arguments: plain ints go straight in (these calls are
    # on every blocking get and put), and the mutex calls below take addresses as ints too.
    _futex = ctypes.CFUNCTYPE(ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32,
                              ctypes.POINTER(_Timespec), ctypes.c_void_p, ctypes.c_int,
                              use_errno=True)(("syscall", _libc))
    _libc.pthread_mutex_lock.argtypes = _libc.pthread_mutex_unlock.argtypes = [ctypes.c_void_p]


def available() -> bool:
    """Whether robust process-shared mutexes can be used here."""
    return _HAVE


class OwnerDied(Exception):
    """Internal: the mutex was taken, and its previous owner had died holding it."""


def _deadline_after(seconds: float) -> _Timespec:
    deadline = time.clock_gettime(time.CLOCK_MONOTONIC) + seconds
    return _Timespec(int(deadline), int((deadline % 1.0) * 1e9))


def _check(code: int, what: str) -> None:
    if code:
        raise OSError(code, f"{what}: {errno.errorcode.get(code, code)}")


def init_mutex(address: int) -> None:
    attr = ctypes.create_string_buffer(_ATTR_BYTES)
    _check(_libc.pthread_mutexattr_init(attr), "pthread_mutexattr_init")
    _check(_libc.pthread_mutexattr_setpshared(attr, _PTHREAD_PROCESS_SHARED), "setpshared")
    _check(_libc.pthread_mutexattr_setrobust(attr, _PTHREAD_MUTEX_ROBUST), "setrobust")
    _check(_libc.pthread_mutex_init(ctypes.c_void_p(address), attr), "pthread_mutex_init")


def init_cond(address: int) -> None:
    if _futex is not None:
        _u32.from_address(address).value = 0
        _u32.from_address(address + 4).value = 0
        return
    attr = ctypes.create_string_buffer(_ATTR_BYTES)
    _check(_libc.pthread_condattr_init(attr), "pthread_condattr_init")
    _check(_libc.pthread_condattr_setpshared(attr, _PTHREAD_PROCESS_SHARED), "setpshared")
    _check(_libc.pthread_condattr_setclock(attr, time.CLOCK_MONOTONIC), "setclock")
    _check(_libc.pthread_cond_init(ctypes.c_void_p(address), attr), "pthread_cond_init")


def holder_tid(mutex: int) -> int:
    """The thread id holding a robust mutex, 0 if none: its futex word holds it (kernel ABI)."""
    return _u32.from_address(mutex).value & _FUTEX_TID_MASK


def held_here(mutex: int) -> bool:
    """Whether this thread holds the mutex. Only for deciding after an interrupt, which can land
    just after a lock or unlock call."""
    return holder_tid(mutex) == threading.get_native_id()


def lock(mutex: int, timeout: float | None) -> bool:
    """Take the mutex; False on timeout. Raises :class:`OwnerDied` (holding it) if its owner died.

    These mutexes are never taken twice by one thread on purpose, so one this thread already holds
    was taken on a path that an interrupt (Ctrl-C) cut short: it is simply held, not waited for
    forever. An interrupt raised here after the mutex was taken lets it go again.
    """
    pointer = ctypes.c_void_p(mutex)
    try:
        code = _libc.pthread_mutex_trylock(pointer)  # uncontended: no deadline to compute
        if code == errno.EBUSY:
            if held_here(mutex):
                return True
            if timeout is not None and timeout <= 0:
                return False
            end = None if timeout is None else time.monotonic() + timeout
            while True:
                step = SLICE_SECONDS if end is None else min(SLICE_SECONDS, max(0.0, end - time.monotonic()))
                code = _libc.pthread_mutex_clocklock(pointer, time.CLOCK_MONOTONIC,
                                                     ctypes.byref(_deadline_after(step)))
                if code != errno.ETIMEDOUT:
                    break
                if end is not None and time.monotonic() >= end:
                    return False
                time.sleep(0)  # back in Python between slices: a pending Ctrl-C is raised here
    except BaseException:
        if held_here(mutex):  # taken just before the interrupt: let it go again
            _libc.pthread_mutex_consistent(pointer)  # EINVAL (ignored) unless it came back EOWNERDEAD
            _libc.pthread_mutex_unlock(pointer)
        raise
    _raise_if_owner_died(code, pointer)
    _check(code, "pthread_mutex_lock")
    return True


def _raise_if_owner_died(code: int, pointer: Any) -> None:
    """After a lock call: its previous owner died holding it. Make the mutex usable again (we hold
    it now) and say so."""
    if code == errno.EOWNERDEAD:
        _check(_libc.pthread_mutex_consistent(pointer), "pthread_mutex_consistent")
        raise OwnerDied


def lock_internal(mutex: int) -> None:
    """Take a mutex that guards conveyor's own state (a counter, a flag): an owner that died left
    that state consistent (every update is one store), so simply carry on."""
    try:
        lock(mutex, None)
    except OwnerDied:
        pass


def unlock(mutex: int) -> None:
    _check(_libc.pthread_mutex_unlock(ctypes.c_void_p(mutex)), "pthread_mutex_unlock")


def wait(cond: int, mutex: int, seconds: float) -> bool:
    """Wait on ``cond`` (holding ``mutex``) for at most ``min(seconds, SLICE_SECONDS)``.

    Returns True when woken (possibly spuriously), False when the slice ran out; the mutex is held
    again either way, even if its owner died meanwhile.
    """
    step = min(max(seconds, 0.0), SLICE_SECONDS)
    if _futex is None:
        return _pthread_wait(cond, mutex, step)
    if step <= 0.0:
        return False  # the kernel would still sleep its timer slack (~50 µs) on a zero timeout
    seen = _u32.from_address(cond).value  # read holding the mutex: a later signal changes it
    sleepers = _u32.from_address(cond + 4)
    sleepers.value += 1  # so a signal knows to make the system call (a killed waiter's count only costs that)
    timed_out = False
    try:
        _libc.pthread_mutex_unlock(mutex)
        timeout = _SLICE if step == SLICE_SECONDS else _Timespec(int(step), int((step % 1.0) * 1e9))
        timed_out = _futex(_SYS_FUTEX, cond, _FUTEX_WAIT, seen, timeout, None, 0) == -1 and \
            ctypes.get_errno() == errno.ETIMEDOUT
    finally:
        # Held again whatever happened, once (an interrupt may land before or after the unlock): the
        # caller's own code releases it. A Ctrl-C is raised after this.
        if not held_here(mutex):
            code = _libc.pthread_mutex_lock(mutex)
            if code == errno.EOWNERDEAD:
                _check(_libc.pthread_mutex_consistent(ctypes.c_void_p(mutex)), "pthread_mutex_consistent")
                code = 0
            _check(code, "pthread_mutex_lock")
        if sleepers.value:
            sleepers.value -= 1
    return not timed_out


def _pthread_wait(cond: int, mutex: int, step: float) -> bool:
    code = _libc.pthread_cond_clockwait(ctypes.c_void_p(cond), ctypes.c_void_p(mutex), time.CLOCK_MONOTONIC,
                                        ctypes.byref(_deadline_after(step)))
    if code == errno.EOWNERDEAD:
        _check(_libc.pthread_mutex_consistent(ctypes.c_void_p(mutex)), "pthread_mutex_consistent")
        return True
    if code == errno.ETIMEDOUT:
        return False
    _check(code, "pthread_cond_clockwait")
    return True


def _wake(cond: int, count: int) -> None:
    """Bump the word (so a waiter between reading it and sleeping does not sleep) and wake ``count``
    of the sleepers. Called holding the mutex, so only waiters already asleep can be woken, and the
    count of waiters (the word after it) is exact but for waiters killed while waiting."""
    word = _u32.from_address(cond)
    word.value = (word.value + 1) & 0xFFFFFFFF
    if _u32.from_address(cond + 4).value:  # else nobody waits: no system call (most puts and releases)
        _futex(_SYS_FUTEX, cond, _FUTEX_WAKE, count, None, None, 0)


def signal(cond: int) -> None:
    if _futex is None:
        _check(_libc.pthread_cond_signal(ctypes.c_void_p(cond)), "pthread_cond_signal")
    else:
        _wake(cond, 1)


def broadcast(cond: int) -> None:
    if _futex is None:
        _check(_libc.pthread_cond_broadcast(ctypes.c_void_p(cond)), "pthread_cond_broadcast")
    else:
        _wake(cond, _WAKE_ALL)


def try_lock(mutex: Any) -> bool:
    """Take the mutex if it is free, without blocking; ``mutex`` is a ``ctypes.c_void_p``.

    The cheapest way in (one C call): the hot paths of the queue try this before :func:`lock`.
    Raises :class:`OwnerDied` (holding it) if its owner died.
    """
    code = _libc.pthread_mutex_trylock(mutex)
    if code == 0:
        return True
    if code == errno.EBUSY:
        return False
    _raise_if_owner_died(code, mutex)
    _check(code, "pthread_mutex_trylock")
    return False


def unlock_pointer(mutex: Any) -> None:
    """:func:`unlock` for a prepared ``ctypes.c_void_p`` (saves building one per call)."""
    _libc.pthread_mutex_unlock(mutex)
