"""The process's Ray connection, shared by every Ray pool, context and task group in it.

A process has one Ray connection (``ray.init``). conveyor reference-counts its users: without an
address, the first user starts a private local Ray and the last one stops it; a connection to a
cluster (an address, ``RAY_ADDRESS``) stays open for the rest of the program, and one the user made
with ``ray.init`` is used as it is.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import ray

_session_lock = threading.RLock()
"""Re-entrant: a context collected while this thread is inside :func:`open_session` (the garbage
collector runs finalizers anywhere) closes its session from within it."""
_session_users = 0
_session_ours = False   # conveyor started a local Ray, so the last of its users stops it


def configured_address(options: dict[str, Any]) -> str | None:
    """The cluster to use: the ``address`` option, else ``RAY_ADDRESS`` (which ``ray.init`` itself
    honours); None means "start a local Ray"."""
    return options.get("address") or os.environ.get("RAY_ADDRESS") or None


def _current_address() -> str | None:
    try:
        return ray.get_runtime_context().gcs_address
    except Exception:  # noqa: BLE001 - a Ray client connection has no GCS address here
        return None


def open_session(address: str | None, workers: int, init_options: dict[str, Any] | None = None) -> None:
    """Use this process's Ray connection, making it if there is none; pair with :func:`close_session`.

    Without an address, a local Ray with ``workers`` CPUs is started (``address="local"``: never
    someone else's instance found on the machine), and stopped by the last :func:`close_session`. A
    connection to a cluster stays open until the program ends (Ray's exit hook closes it): the next
    pool needs no new connection, and Ray's process-wide threads are started once. A connection the
    user made with ``ray.init`` is used as it is.
    """
    global _session_users, _session_ours
    with _session_lock:
        _session_users += 1  # first: a session closed meanwhile (see _session_lock) cannot stop Ray under us
        try:
            if ray.is_initialized():
                current = _current_address()
                if (address and address != "auto" and not address.startswith("ray://") and current
                        and address != current):
                    raise ValueError(f"this process is already connected to the Ray cluster at {current}; "
                                     f"a process has one Ray connection, so it cannot also use {address}")
            else:
                options: dict[str, Any] = {"logging_level": logging.ERROR, **(init_options or {})}
                if address is None:
                    ray.init(address="local", num_cpus=workers, include_dashboard=False, **options)
                    _session_ours = True
                else:
                    ray.init(address=address, **options)
        except BaseException:
            close_session()
            raise


def close_session() -> None:
    """One user fewer; the last one stops the local Ray that conveyor started."""
    global _session_users, _session_ours
    with _session_lock:
        _session_users -= 1
        if _session_users == 0 and _session_ours:
            _session_ours = False
            ray.shutdown()


class Session:
    """A context's hold on the Ray connection, released by ``close()`` (once)."""

    def __init__(self, address: str | None, workers: int, init_options: dict[str, Any] | None = None) -> None:
        open_session(address, workers, init_options)
        self._open = True

    def close(self) -> None:
        if self._open:
            self._open = False
            close_session()
