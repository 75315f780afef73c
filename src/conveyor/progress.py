"""Progress sinks: where counts of finished tasks go. Never a print.

``progress=True`` shows a tqdm bar on stderr; a callable receives ``(done, total)`` after each batch
of finished tasks (``total`` is None when the input has no length); an object with ``update(n)`` and
``close()`` (a tqdm bar of your own, a rich task wrapper) is used as it is.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Protocol, Union


class ProgressSink(Protocol):
    def update(self, n: int) -> Any: ...

    def close(self) -> Any: ...


ProgressOption = Union[bool, Callable[[int, Optional[int]], Any], ProgressSink, None]


class CallbackProgress:
    """Adapts ``fn(done, total)`` to the sink interface."""

    def __init__(self, fn: Callable[[int, int | None], Any], total: int | None) -> None:
        self._fn = fn
        self._total = total
        self.done = 0

    def update(self, n: int) -> None:
        self.done += n
        self._fn(self.done, self._total)

    def close(self) -> None:
        pass


class _Borrowed:
    """A user's own sink: updated, but closed by its owner, not by us."""

    def __init__(self, sink: ProgressSink) -> None:
        self._sink = sink

    def update(self, n: int) -> None:
        self._sink.update(n)

    def close(self) -> None:
        pass


def make_progress(option: ProgressOption, total: int | None, description: str = "") -> ProgressSink | None:
    """The sink for a ``progress=`` option, or None for no progress reporting."""
    if option is None or option is False:
        return None
    if option is True:
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=description or None, unit="task", dynamic_ncols=True)
    if hasattr(option, "update"):
        return _Borrowed(option)  # type: ignore[arg-type]
    if callable(option):
        return CallbackProgress(option, total)
    raise TypeError(f"progress must be a bool, a callable(done, total) or an object with update(n); got {option!r}")
