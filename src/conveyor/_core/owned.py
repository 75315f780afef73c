"""What this process made and must remove itself, because it may end without finalizers.

A worker or task process ends with ``os._exit`` once its work is reported (no interpreter teardown: a
user's atexit hook or a stuck thread must not keep a finished process alive), so the shared-memory
segments it created would outlive it. Each module that creates such segments registers its cleanup
here when it is first imported; ``release_all`` runs them just before that exit.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable

_releasers: list[Callable[[], None]] = []


def on_exit(release: Callable[[], None]) -> Callable[[], None]:
    """Run ``release`` in ``release_all`` (usable as a decorator)."""
    _releasers.append(release)
    return release


def release_all() -> None:
    """Run every registered cleanup; one that fails does not stop the others."""
    for release in list(_releasers):
        try:
            release()
        except Exception:  # noqa: BLE001, S112 - the process is ending; the rest must still run
            continue
