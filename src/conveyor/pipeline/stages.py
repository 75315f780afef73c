"""What a pipeline is made of: its stages as declared, the record of a failed item, the checks and
defaults the builder and a run share.

Kept apart from the builder (``__init__.py``) and the run (``run.py``), which both read them.
"""

from __future__ import annotations

import dataclasses
import reprlib
from typing import Any, Callable

DEFAULT_MAXSIZE = 64
"""Items that may wait in front of a stage (and at the output) when the stage sets no ``maxsize``."""
STOP_SECONDS = 5.0
"""How long stopping waits for a stage's runner to finish before leaving it (a daemon thread)."""
END_GRACE_SECONDS = 0.5
"""After the output has ended, how long the runners may take to finish before the rest is stopped."""
ERROR_MODES = ("raise", "collect")
_short = reprlib.Repr()
_short.maxstring = _short.maxother = 120


def short_repr(obj: Any) -> str:
    """A repr of at most about 120 characters: an input in a message, a traceback, a failure record."""
    return _short.repr(obj)


@dataclasses.dataclass(frozen=True)
class StageFailure:
    """One item that failed in a stage.

    Attributes:
        stage: the stage's name.
        item: the input that failed, when known (None when the worker died with it unreported).
        item_repr: a short repr of that input (also known from a crash report).
        error: the exception, with the worker's traceback as ``__cause__``.
    """

    stage: str
    item: Any
    item_repr: str | None
    error: BaseException


@dataclasses.dataclass(frozen=True)
class Stage:
    kind: str                       # map | filter | flat_map | batch | each
    fn: Callable[..., Any] | None
    name: str
    workers: int | None = None
    backend: str | None = None
    maxsize: int | None = None
    ordered: bool = True
    task_timeout: float | None = None
    retries: int = 0
    chunksize: int | None = None
    on_start: Callable[[], Any] | None = None
    on_stop: Callable[[], Any] | None = None
    errors: str | None = None
    size: int = 0                   # batch


def check_errors_mode(errors: str) -> None:
    if errors not in ERROR_MODES:
        raise ValueError(f"errors must be one of {', '.join(map(repr, ERROR_MODES))}, got {errors!r}")


def check_positive(name: str, value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
