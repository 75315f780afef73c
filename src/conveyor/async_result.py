"""The ``multiprocessing`` style result handle (``apply_async``, ``map_async``) over a Future.

Why a module of its own: it is the ``multiprocessing.Pool`` dialect's one object, a thin adapter with
its own rule (the callbacks have run by the time the result is ready), used by ``Pool`` and by the
``conveyor.multiprocessing`` drop-in.
"""

from __future__ import annotations

import functools
import threading

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing before the fork server starts
if TYPE_CHECKING:
    import concurrent.futures
    from typing import Any, Callable

__all__ = ["AsyncResult"]


class AsyncResult:
    """The ``multiprocessing`` style handle returned by ``apply_async`` / ``map_async``.

    As in ``multiprocessing``, the callbacks have run by the time the result is ready: code that
    waits for it (``wait()``, ``get()``) may rely on what the callback did.
    """

    def __init__(self, future: concurrent.futures.Future[Any], callback: Callable[[Any], Any] | None = None,
                 error_callback: Callable[[BaseException], Any] | None = None) -> None:
        self._future = future
        self._settled = threading.Event()
        future.add_done_callback(functools.partial(_settle, self._settled, callback, error_callback))

    @property
    def future(self) -> concurrent.futures.Future[Any]:
        return self._future

    def get(self, timeout: float | None = None) -> Any:
        """The result, or the task's exception raised here.

        Raises:
            ResultTimeoutError: not ready within ``timeout`` (also a ``multiprocessing.TimeoutError``).
        """
        if not self._settled.wait(timeout):
            from conveyor._core.errors import ResultTimeoutError

            raise ResultTimeoutError(f"result not ready within {timeout}s")
        return self._future.result()

    def wait(self, timeout: float | None = None) -> None:
        self._settled.wait(timeout)

    def ready(self) -> bool:
        return self._settled.is_set()

    def successful(self) -> bool:
        if not self.ready():
            raise ValueError(f"{self!r} not ready")
        return not self._future.cancelled() and self._future.exception() is None


def _settle(settled: threading.Event, callback: Callable[[Any], Any] | None,
            error_callback: Callable[[BaseException], Any] | None,
            future: concurrent.futures.Future[Any]) -> None:
    """Run the callback that fits the outcome, then mark the result ready (``multiprocessing``'s order).

    A callback's exception is logged by ``concurrent.futures`` (logger ``concurrent.futures``); the
    result is ready all the same.
    """
    try:
        if future.cancelled():
            return
        error = future.exception()
        if error is None:
            if callback is not None:
                callback(future.result())
        elif error_callback is not None:
            error_callback(error)
    finally:
        settled.set()
