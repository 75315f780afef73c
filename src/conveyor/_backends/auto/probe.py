"""Measuring a task function on its first inputs, and choosing serial, threads or processes from it.

In CPython the GIL lets one thread run Python bytecode at a time: threads help work that waits (I/O,
sleeps, C code that releases the GIL, such as NumPy or hashlib on large buffers), processes help
Python code that computes, and work smaller than a dispatch is best left in the caller. The probe
runs the first inputs in a thread of its own and reads three things of them:

* **wall time per call**: below ``TINY_SECONDS``, dispatching the call costs more than running it;
* **CPU share**: the thread's CPU time (``time.thread_time``) over its wall time; low means it waits;
* **GIL share**: while the calls run, a *sidecar* thread counts how many Python steps it gets to run,
  against how many it runs alone. Calls that hold the GIL take it from the sidecar (which then runs
  about half as fast, or less); calls that compute in C with the GIL released leave it running.

The rules (:func:`choose`) turn these into a :class:`Decision` with its reason in words. A function,
input or result that cannot be pickled never goes to processes. A free-threaded build (no GIL) runs
computing work on threads too.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
import time
from typing import Any, Callable

PLAIN_SECONDS = 0.01
"""The probe first runs calls alone for this long..."""
PROBE_MAX_CALLS = 256
"""...or this many calls;"""
SIDECAR_SECONDS = 0.01
"""then, if they compute, this long beside the sidecar."""
ARRIVAL_SECONDS = 0.02
"""Out of inputs before the probe is done, it waits this long for the call to send more..."""
ENOUGH_CALLS = 32
ENOUGH_SECONDS = 0.005
"""...unless it has run this many calls, or this long in calls: then it decides at once."""
TINY_SECONDS = 20e-6
"""Calls shorter than this stay in the caller: a dispatch to a worker costs more than the call."""
WAITING_CPU_SHARE = 0.5
"""Below this share of CPU time over wall time, calls mostly wait: threads."""
CLEARLY_WAITING = 0.1
"""Below this share the calls wait however busy the machine is; between it and ``WAITING_CPU_SHARE``
the share is read against what one thread of this process can get now (a 10 ms measurement)."""
GIL_RELEASED_SIDECAR_SHARE = 0.6
"""Calls and sidecar that ran side by side at least this much (``1 - gil_share``) saw the GIL left
free: C code. On a machine too busy to run both at once this reads as "held", and the work goes to
processes, which run C code in parallel too (at the cost of pickling)."""
COPY_BYTES_PER_SECOND = 5e8
"""How fast a call's pickled input and result travel through a pipe to a worker process and back..."""
SHARED_BYTES_PER_SECOND = 5e9
"""...and how fast large buffers (NumPy arrays, bytes) travel through shared memory instead."""
MAX_WAITING_THREADS = 128
"""The most threads for waiting work when the pool's size was left to conveyor."""
UNDECIDED_WORKERS_PER_CORE = 8
"""Until a function is decided, a map call sizes its batches as if for this many workers per core."""


@dataclasses.dataclass(frozen=True)
class Decision:
    """What ``backend="auto"`` chose for one function, and why.

    Attributes:
        backend: ``"serial"``, ``"thread"`` or ``"process"``.
        reason: the measurement and the rule, in words.
        seconds_per_call: mean wall time of a probed call (None if none ran).
        cpu_share: the probed calls' CPU time over their wall time.
        gil_share: how much the calls kept a Python thread beside them from running (0: it ran
            alongside, they released the GIL; 1: they took turns, the calls held it).
        calls: how many calls the probe ran.
    """

    backend: str
    reason: str
    seconds_per_call: float | None = None
    cpu_share: float | None = None
    gil_share: float | None = None
    calls: int = 0


@dataclasses.dataclass
class Probe:
    """The probe's readings of the calls it ran."""

    calls: int = 0
    wall: float = 0.0
    cpu: float = 0.0
    gil_share: float | None = None
    available: float = 1.0  # the CPU share one busy thread of this process got when the probe began
    unpicklable: str | None = None
    travel: float | None = None  # seconds to send one call's input and result to a process and back
    in_calls: float = 0.0  # wall time inside the calls themselves, without the probe's own steps


def gil_enabled() -> bool:
    """False on a free-threaded build with the GIL off (Python 3.13t+); True everywhere else."""
    check = getattr(sys, "_is_gil_enabled", None)
    return True if check is None else bool(check())


class _Sidecar:
    """A thread that runs Python code until stopped, and measures its own CPU time: beside calls that
    hold the GIL it gets about half of their time (they take turns); beside calls that release it
    (sleeps, C code) it runs alongside them."""

    def __init__(self) -> None:
        self.cpu = 0.0
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="conveyor-auto-sidecar", daemon=True)

    def _run(self) -> None:
        started = time.thread_time()
        steps = 0
        while not self._stop:
            steps += 1
        self.cpu = time.thread_time() - started

    def __enter__(self) -> _Sidecar:
        self.started = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop = True
        self._thread.join()
        self.seconds = time.perf_counter() - self.started

    @property
    def share(self) -> float:
        """Its CPU time over its wall time."""
        return self.cpu / self.seconds if self.seconds > 0 else 0.0


def _cpu_share_now() -> float:
    """How much of a core one busy thread of this process gets now (the sidecar alone for 10 ms, this
    thread asleep): the machine's load, measured right before the sidecar runs beside the calls."""
    with _Sidecar() as sidecar:
        time.sleep(0.01)
    return sidecar.share


class Prober:
    """Runs calls and measures them, over one or more batches of the same function: first alone
    (wall, CPU and blocking of the calls, ``PLAIN_SECONDS``), then, only if they compute, beside the
    sidecar (who holds the GIL, ``SIDECAR_SECONDS``). ``with Prober() as prober: prober.run(...)``
    until ``prober.spent``; the readings are in ``prober.probe`` once the block is left."""

    def __init__(self, on_computing: Callable[[], Any] | None = None) -> None:
        self.probe = Probe()
        self._on_computing = on_computing
        self._sidecar: _Sidecar | None = None
        self._solo = 0.0
        self._sidecar_cpu = 0.0
        self._done = False

    def __enter__(self) -> Prober:
        self._wall, self._cpu = time.perf_counter(), time.thread_time()
        return self

    @property
    def spent(self) -> bool:
        return self._done

    @property
    def enough(self) -> bool:
        """Whether the calls so far say enough to decide, if no more come soon: a few, or a few ms."""
        return self.probe.calls >= ENOUGH_CALLS or self.probe.in_calls >= ENOUGH_SECONDS

    def run(self, fn: Callable[..., Any], call: Callable[[Callable[..., Any], Any], Any], items: list[Any],
            values: list[Any], errors: dict[int, BaseException]) -> None:
        """Run ``items`` in order (at least one) until the probe is spent, appending to ``values`` and
        filling ``errors`` by position."""
        clock = time.perf_counter
        for position, item in enumerate(items):
            started = clock()
            try:
                values.append(call(fn, item))
            except BaseException as error:  # noqa: BLE001 - the call's own failure is its result
                values.append(None)
                errors[position] = error
            self.probe.in_calls += clock() - started
            self._after_call()
            if self._done:
                return

    def _after_call(self) -> None:
        probe = self.probe
        probe.calls += 1
        if self._sidecar is None:
            if probe.calls >= PROBE_MAX_CALLS or time.perf_counter() - self._wall >= PLAIN_SECONDS:
                self._end_plain()
                if computing(probe) and not tiny(probe):
                    if self._on_computing is not None:
                        self._on_computing()  # processes are likely: their start can begin now
                    self._solo = _cpu_share_now()
                    self._sidecar_cpu = time.thread_time()
                    self._sidecar = _Sidecar().__enter__()
                else:
                    self._done = True
        elif time.perf_counter() - self._sidecar.started >= SIDECAR_SECONDS:
            self._end_sidecar()
            self._done = True

    def _end_plain(self) -> None:
        probe = self.probe
        probe.wall = time.perf_counter() - self._wall
        probe.cpu = time.thread_time() - self._cpu
        if probe.wall > 0 and CLEARLY_WAITING <= probe.cpu / probe.wall < WAITING_CPU_SHARE:
            probe.available = _cpu_share_now()  # in between: is it the work waiting, or the machine busy?

    def _end_sidecar(self) -> None:
        """``gil_share`` from how much the calls and the sidecar ran at the same time: their CPU
        time together over the wall time, in units of what one thread gets now. About 1: they took
        turns (the calls held the GIL); about 2: they ran side by side (the calls released it)."""
        assert self._sidecar is not None
        calls_cpu = time.thread_time() - self._sidecar_cpu
        self._sidecar.__exit__()
        if self._solo > 0 and self._sidecar.seconds > 0:
            together = (calls_cpu + self._sidecar.cpu) / self._sidecar.seconds / self._solo
            self.probe.gil_share = min(1.0, max(0.0, 2.0 - together))

    def __exit__(self, *exc: object) -> None:
        if self._done:
            return
        if self._sidecar is None:
            self._end_plain()
        else:
            self._end_sidecar()


def tiny(probe: Probe) -> bool:
    """Whether a call takes less than a dispatch to a worker costs."""
    return bool(probe.calls) and probe.in_calls / probe.calls < TINY_SECONDS


def cpu_share(probe: Probe) -> float | None:
    """The calls' CPU time over their wall time, in units of what one thread gets on this machine now
    (on a busy machine a computing thread waits for a core too: that is not the work waiting)."""
    if not probe.calls or probe.wall <= 0:
        return None
    return min(1.0, probe.cpu / probe.wall / max(probe.available, 0.05))


def computing(probe: Probe) -> bool:
    """Whether the calls mostly ran on the CPU rather than waited."""
    share = cpu_share(probe)
    return share is not None and share >= WAITING_CPU_SHARE


def choose(probe: Probe) -> Decision:
    """The backend for calls measured as ``probe`` says (see the module's rules)."""
    per_call = probe.in_calls / probe.calls if probe.calls else None
    share = cpu_share(probe)

    def made(backend: str, reason: str) -> Decision:
        return Decision(backend, reason, per_call, share, probe.gil_share, probe.calls)

    if per_call is not None and per_call < TINY_SECONDS:
        return made("serial", f"each call takes about {per_call * 1e6:.1f} µs, less than a dispatch to a "
                              "worker costs: run in the caller")
    if probe.unpicklable is not None:
        return made("thread", f"{probe.unpicklable} cannot be pickled, so it cannot go to another "
                              "process: threads")
    if probe.calls and not computing(probe):
        return made("thread", f"calls spend {(1 - (share or 0)) * 100:.0f}% of their time waiting (I/O, "
                              "sleeps): threads")
    if not gil_enabled():
        return made("thread", "this interpreter runs without the GIL: threads compute in parallel")
    if probe.gil_share is not None and probe.gil_share < 1 - GIL_RELEASED_SIDECAR_SHARE:  # kept its speed
        return made("thread", "calls compute with the GIL released (C code): threads run them in "
                              "parallel without pickling")
    if probe.travel is not None and per_call is not None and probe.travel > per_call:
        return made("thread", f"sending a call's input and result to another process (about "
                              f"{probe.travel * 1e3:.2f} ms) costs more than the call ({per_call * 1e3:.2f} ms): "
                              "threads")
    return made("process", "calls compute in Python holding the GIL "
                           f"(CPU {(share or 0) * 100:.0f}% of their time): processes")


def thread_count(decision: Decision, cores: int) -> int:
    """Threads for waiting work when the pool's size was left to conveyor: enough to keep the cores
    busy given how much of each call waits (cores / CPU share), up to ``MAX_WAITING_THREADS``."""
    share = decision.cpu_share if decision.cpu_share else 0.0
    if share <= 0:
        return MAX_WAITING_THREADS
    return max(cores, min(MAX_WAITING_THREADS, int(cores / share)))
