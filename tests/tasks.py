"""Task functions used by the tests, importable by worker processes."""

from __future__ import annotations

import asyncio
import ctypes
import faulthandler
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from conveyor import ShutDown


def square(x: int) -> int:
    return x * x


def add(a: int, b: int) -> int:
    return a + b


def kw(a: int, *, b: int = 0) -> tuple[int, int]:
    return a, b


def pid(_: Any = None) -> int:
    return os.getpid()


def sleep_then(value: Any, seconds: float) -> Any:
    time.sleep(seconds)
    return value


def fail_on(x: int, bad: int | tuple[int, ...] = 3) -> int:
    bads = bad if isinstance(bad, tuple) else (bad,)
    if x in bads:
        raise ValueError(f"bad input {x}")
    return x


class CustomError(Exception):
    """An exception whose constructor takes two arguments (pickles, rebuilds with care)."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(code, text)
        self.code = code
        self.text = text


class UnrebuildableError(Exception):
    """Pickles, but its __init__ signature makes unpickling fail (a common user bug)."""

    def __init__(self, a: int, b: int) -> None:
        super().__init__(f"{a}-{b}")


def raise_custom(x: int) -> None:
    raise CustomError(x, "custom")


def raise_unrebuildable(x: int) -> None:
    raise UnrebuildableError(x, x)


def crash(x: int, how: str = "exit", when: int | None = None) -> int:
    """Die in the way ``how`` says (when ``x == when``, or always when ``when`` is None)."""
    if when is not None and x != when:
        return x
    if how == "exit":
        os._exit(7)
    if how == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if how == "segv":
        faulthandler.disable()  # pytest's handler, inherited under fork, would print a dump
        ctypes.string_at(0)
    if how == "sysexit":
        raise SystemExit(5)
    if how == "keyboard":
        raise KeyboardInterrupt
    raise AssertionError(how)
    return x  # pragma: no cover


async def nap(value: Any, seconds: float = 0.01) -> Any:
    """A coroutine task: ``value`` after ``seconds`` of awaiting (an I/O wait)."""
    await asyncio.sleep(seconds)
    return value


async def nap_or_fail(x: int, bad: int = 3) -> int:
    """A coroutine task that raises ``ValueError`` for ``bad``, after a short await."""
    await asyncio.sleep(0.001)
    if x == bad:
        raise ValueError(f"bad input {x}")
    return x


async def nap_then_crash(x: int, when: int) -> int:
    """A coroutine task whose process dies (``os._exit``) at ``x == when``, while others await."""
    await asyncio.sleep(0.01)
    if x == when:
        os._exit(7)
    return x


async def nap_fail_once(x: int, marker_dir: str) -> int:
    """A coroutine task that fails its first attempt for each ``x`` (a marker file remembers)."""
    await asyncio.sleep(0.001)
    marker = Path(marker_dir, f"tried-{x}")
    if not marker.exists():
        marker.write_text("")
        raise ValueError(f"first attempt at {x}")
    return x


_awaiting: dict[str, list[int]] = {}


async def nap_concurrently(x: int, key: str) -> int:
    """A coroutine task that reports the most tasks of ``key`` this process has had awaiting at once
    (so far, itself included)."""
    counts = _awaiting.setdefault(key, [0, 0])  # [now, peak]
    counts[0] += 1
    counts[1] = max(counts[1], counts[0])
    await asyncio.sleep(0.02)
    counts[0] -= 1
    return counts[1]


def crash_once(x: int, marker_dir: str, how: str = "exit") -> int:
    """Crash the first time each input is seen (a marker file remembers), succeed afterwards."""
    marker = Path(marker_dir) / f"seen-{x}"
    if not marker.exists():
        marker.write_text("1")
        crash(x, how)
    return x


def fail_once(x: int, marker_dir: str) -> int:
    marker = Path(marker_dir) / f"seen-{x}"
    if not marker.exists():
        marker.write_text("1")
        raise RuntimeError(f"first attempt at {x} fails")
    return x


def spin(seconds: float) -> int:
    """Burn CPU in pure Python for ``seconds``."""
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        n += 1
    return n


def sleep_loop(seconds: float = 60.0) -> str:
    """A long task that stays in Python code (so a thread can be interrupted too)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.02)
    return "finished"


def fail_after(seconds: float, message: str = "boom") -> None:
    """Sleep, then raise ``CustomError(7, message)``: a task that fails while its siblings still run."""
    time.sleep(seconds)
    raise CustomError(7, message)


def ignore_sigterm_and_sleep(seconds: float) -> str:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(seconds)
    return "woke"


def block_in_c(seconds: float) -> str:
    """Sleep inside a C call (libc sleep), where no Python code runs."""
    libc = ctypes.CDLL(None)
    libc.sleep(int(seconds))
    return "woke"


def return_lock(_: Any) -> Any:
    return threading.Lock()


def return_unloadable(x: int) -> Any:
    return Unloadable(x)


def _refuse_to_load(x: int) -> Any:
    raise RuntimeError(f"refusing to unpickle {x}")


class Unloadable:
    """Pickles fine, but raises when unpickled."""

    def __init__(self, x: int) -> None:
        self.x = x

    def __reduce__(self) -> Any:
        return (_refuse_to_load, (self.x,))


def first(sequence: Any) -> Any:
    """The first element: ``StopIteration`` for an empty sequence (a tiny task, so it runs in strides)."""
    return next(iter(sequence))


def identity(x: Any) -> Any:
    return x


_state: dict[str, Any] = {}


def slow_identity(x: Any) -> Any:
    """``x``, after 20 ms: a stage slow enough that the items before it queue up."""
    time.sleep(0.02)
    return x


def consume_until_shutdown(q: Any) -> tuple[int, int]:
    """Take numbers from ``q`` until it is shut down; how many there were and their sum."""
    count = total = 0
    while True:
        try:
            item = q.get()
        except ShutDown:
            return count, total
        count += 1
        total += item


def remember(value: Any) -> None:
    _state["value"] = value


def recall(_: Any = None) -> Any:
    return _state.get("value")


def init_fails(*_: Any) -> None:
    raise RuntimeError("initializer is broken")


def grow_memory(megabytes: int) -> int:
    _state.setdefault("hog", []).append(bytearray(megabytes * 1024 * 1024))
    return os.getpid()


def record_start_and_sleep(x: int, directory: str, seconds: float) -> int:
    """Write when this task started (monotonic clock, shared by all processes on Linux), then sleep."""
    Path(directory, f"start-{x}").write_text(repr(time.monotonic()))
    time.sleep(seconds)
    return x


def append_line(path: str, text: str = "") -> None:
    """Append ``pid thread-name text`` to a file: a worker finalizer that leaves a trace."""
    with open(path, "a") as file:
        file.write(f"{os.getpid()} {threading.current_thread().name} {text}\n")


def lines_appended(path: str | Path) -> list[list[str]]:
    """What ``append_line`` wrote (none if nothing), each line split into ``[pid, thread name, text...]``."""
    path = Path(path)
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def append_line_then_raise(path: str) -> None:
    append_line(path, "raising")
    raise RuntimeError("finalizer is broken")


def append_line_then_sleep(path: str, seconds: float) -> None:
    append_line(path, "started")
    time.sleep(seconds)
    append_line(path, "woke")


def scheduler_address() -> str:
    """The address of the Dask scheduler this process's default client talks to (in a Dask task)."""
    import distributed

    return distributed.get_client().scheduler.address
