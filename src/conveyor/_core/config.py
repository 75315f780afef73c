"""Scoped defaults: ``with conveyor.config(backend="thread"): ...`` changes them for that block only.

The values live in a ContextVar, so a block affects only its own thread or asyncio task. Environment
variables (``CONVEYOR_BACKEND``, ``CONVEYOR_START_METHOD``, ``CONVEYOR_WORKERS``) set the process-wide
starting point, which is how CI runs one test suite under every start method.
"""

from __future__ import annotations

import contextvars
import os
import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing before the fork server starts
if TYPE_CHECKING:
    from typing import Any

_KNOWN = ("backend", "workers", "start_method", "chunksize", "task_timeout", "retries", "progress",
          "max_tasks_per_worker")


def default_start_method() -> str:
    """The start method used when none is given.

    fork is fast but unsafe once the parent has threads (conveyor's own supervisor thread, or any of
    the user's): a child can inherit a lock held by a thread that does not exist in the child and
    hang forever. forkserver forks workers from a small single-threaded server started once, which is
    safe and still cheap, and is the POSIX default from Python 3.14 on. Where it does not exist (macOS
    before fork-safety work, Windows) spawn is the safe choice.
    """
    import multiprocessing

    methods = multiprocessing.get_all_start_methods()
    if sys.platform.startswith("linux") and "forkserver" in methods:
        return "forkserver"
    return "spawn"


def usable_cores() -> int:
    """Cores this process may really use: CPU affinity, further limited by a cgroup v2 CPU quota.

    A container limited to 2 CPUs on a 64-core host should get 2 workers, not 64.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:
        with open("/sys/fs/cgroup/cpu.max", encoding="ascii") as limits:
            quota, period = limits.read().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, int(-(-int(quota) // int(period)))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "kib": 2**10, "m": 10**6, "mb": 10**6, "mib": 2**20,
          "g": 10**9, "gb": 10**9, "gib": 2**30, "t": 10**12, "tb": 10**12, "tib": 2**40}


def parse_size(value: int | str | None, name: str = "size") -> int | None:
    """Bytes from an int or a string such as ``"512MB"``, ``"1.5 GiB"``; None stays None."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number of bytes or a size like '512MB', got {value!r}")
    if isinstance(value, (int, float)):
        number, unit = float(value), ""
    else:
        text = str(value).strip().lower().replace(" ", "")
        digits = text.rstrip("abcdefghijklmnopqrstuvwxyz")
        unit = text[len(digits):]
        try:
            number = float(digits)
        except ValueError:
            number = -1.0
        if unit not in _UNITS:
            raise ValueError(f"{name}: unknown unit {unit!r} in {value!r}; use B, KB, MB, GB, KiB, MiB or GiB")
    if number <= 0:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return int(number * _UNITS[unit])


class _Invalid:
    """An environment variable whose value its setting cannot take.

    It is read at import, where raising would break everything that imports conveyor, even
    ``conveyor --help`` and the ``conveyor doctor`` that should point at the mistake. So the error is
    kept and raised where the setting is used instead (see :class:`_Settings`).
    """

    def __init__(self, message: str) -> None:
        self.message = message

    def __repr__(self) -> str:
        return f"<invalid: {self.message}>"


class _Settings(dict):  # type: ignore[type-arg]
    """The defaults; reading one that came from an invalid environment variable raises ValueError."""

    def __getitem__(self, name: str) -> Any:
        value = super().__getitem__(name)
        if isinstance(value, _Invalid):
            raise ValueError(value.message)  # noqa: TRY004 - a bad value, as from the option itself
        return value

    def get(self, name: str, default: Any = None) -> Any:
        try:
            return self[name]
        except KeyError:
            return default

    def copy(self, **changes: Any) -> _Settings:  # type: ignore[override]
        """A copy with ``changes``; invalid values are copied as they are, not read (that raises)."""
        copied = _Settings(self.items())  # items() gives the stored values, __getitem__ is not called
        copied.update(changes)
        return copied


def _positive_environment_int(name: str, text: str) -> int | _Invalid:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value > 0:
        return value
    return _Invalid(f"environment variable {name} must be a positive integer, got {text!r}")


class _Default(str):
    """A setting's value that nobody chose (``backend``): a one-shot call may pick better."""


def _from_environment() -> _Settings:
    values = _Settings({"backend": _Default("process"), "workers": None, "start_method": None,
                        "chunksize": None, "task_timeout": None, "retries": 0, "progress": False,
                        "max_tasks_per_worker": None})
    if os.environ.get("CONVEYOR_BACKEND"):
        values["backend"] = os.environ["CONVEYOR_BACKEND"]
    if os.environ.get("CONVEYOR_START_METHOD"):
        values["start_method"] = os.environ["CONVEYOR_START_METHOD"]
    if os.environ.get("CONVEYOR_WORKERS"):
        values["workers"] = _positive_environment_int("CONVEYOR_WORKERS", os.environ["CONVEYOR_WORKERS"])
    return values


_current: contextvars.ContextVar[_Settings] = contextvars.ContextVar(
    "conveyor_config", default=_from_environment()
)


def current() -> dict[str, Any]:
    """A copy of the defaults in force here (reading an invalid one raises ValueError)."""
    return _current.get().copy()


def setting(name: str) -> Any:
    return _current.get()[name]


def one_shot_backend() -> str:
    """The backend of a one-shot call (``conveyor.map``, ``conveyor run``): the one configured
    (``CONVEYOR_BACKEND``, ``conveyor.config(backend=...)``), else ``"auto"``, which measures the work.
    A ``Pool`` keeps ``"process"`` as its default: a pool lives on, and its user can measure."""
    backend = _current.get()["backend"]
    return "auto" if isinstance(backend, _Default) else str(backend)


def problems() -> list[str]:
    """What is wrong with the defaults in force here (invalid environment variables), for a report."""
    return [value.message for value in _current.get().values() if isinstance(value, _Invalid)]


class config:  # noqa: N801 - used like a function: with conveyor.config(...)
    """Change conveyor's defaults for a ``with`` block.

    Example:
        >>> import conveyor
        >>> with conveyor.config(backend="thread", workers=2):
        ...     conveyor.map(abs, [-1, -2])
        [1, 2]
    """

    def __init__(self, **settings: Any) -> None:
        unknown = set(settings) - set(_KNOWN)
        if unknown:
            raise TypeError(f"unknown setting(s) {sorted(unknown)}; known: {', '.join(_KNOWN)}")
        self._settings = settings
        self._tokens: list[contextvars.Token[_Settings]] = []

    def __enter__(self) -> dict[str, Any]:
        merged = _current.get().copy(**self._settings)
        self._tokens.append(_current.set(merged))
        return merged.copy()

    def __exit__(self, *exc_info: object) -> None:
        _current.reset(self._tokens.pop())


def check_start_method(start_method: str) -> None:
    """A ValueError naming the choices, unless ``start_method`` exists on this system."""
    import multiprocessing  # here: this module is imported before the fork server starts

    if start_method not in multiprocessing.get_all_start_methods():
        raise ValueError(f"start method {start_method!r} is not available here; choose one of "
                         f"{', '.join(multiprocessing.get_all_start_methods())}")


def start_method_of(context: Any) -> str | None:
    """``context``: a ``multiprocessing`` context, a start method's name, or None for conveyor's
    default (``forkserver`` on Linux; the stdlib's global ``set_start_method()`` is not consulted)."""
    if context is None or isinstance(context, str):
        return context
    import multiprocessing.context  # here: this module is imported before the fork server starts

    if isinstance(context, multiprocessing.context.BaseContext):
        return context.get_start_method()
    raise TypeError(f"context must be a multiprocessing context or a start method's name, got {context!r}")
