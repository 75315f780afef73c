"""Start the stdlib's fork server as soon as a process pool is asked for, before the backend is imported.

Why: under the forkserver start method (conveyor's default on Linux) the first worker can start only
once the fork server is up, and bringing it up means a new interpreter that imports ``multiprocessing``
and then conveyor's worker (its preload, so that every worker forks from it warm instead of importing
on its own). That takes longer than anything else in a short program. Started here, from
``Pool()`` before the caller imports the process backend and pickles the first batch, the two run at
the same time on two cores instead of one after the other.

This module must stay cheap to import: it is what runs before everything else.
"""

from __future__ import annotations

from conveyor._core.config import default_start_method

WORKER_MODULE = "conveyor._backends.process.worker"
"""What the fork server imports before it forks a worker (``worker_main`` lives there)."""


def preload(extra: tuple[str, ...] = ()) -> list[str]:
    """The fork server's preload list: the worker module, then ``extra``."""
    return [WORKER_MODULE, *extra]


ON_THE_FORK_SERVER = frozenset({"process"})
"""Backends whose workers fork from the stdlib's fork server (under the forkserver start method)."""


def start_for(backend: str, start_method: str | None) -> None:
    """``start_early`` for a pool on ``backend``, by name: called before the backend is imported."""
    if backend in ON_THE_FORK_SERVER:
        start_early(start_method)


def start_early(start_method: str | None) -> None:
    """Start the fork server now (without waiting for it) if ``start_method`` resolves to forkserver.

    A no-op for other start methods and when the server is already running. A failure is left for
    the backend to report when it starts its first worker, where it has always been reported.
    """
    if (start_method or default_start_method()) != "forkserver":
        return
    from multiprocessing import forkserver

    try:
        forkserver.set_forkserver_preload(preload())
        forkserver.ensure_running()
    except Exception:  # noqa: BLE001, S110 - reported by the backend's first worker start instead
        pass
