"""Why a shared object cannot be reached, told apart so the caller knows what to fix.

A failed connection alone does not say whether the owner exited (its data is gone: keep the owner
running) or is alive but dropped its last reference (the object is gone: keep a reference in the
owner); the owner's process state does.
"""

from __future__ import annotations

import os
import socket
import time

from conveyor._backends._shared.liveness import alive
from conveyor._backends._shared.managed import wire
from conveyor._core.errors import OwnerGoneError

_EXIT_GRACE_SECONDS = 0.25


def released_error(kind: str, owner: int) -> ReferenceError:
    return ReferenceError(
        f"this shared {kind} no longer exists: process {owner}, which made it, dropped its last "
        f"reference to it. Keep a reference to the {kind} in that process for as long as others use it")


def gone_error(kind: str, owner: int, cause: BaseException) -> Exception:
    """The error for a connection to ``owner`` that failed with ``cause``."""
    if _owner_exited(owner):
        return OwnerGoneError(
            f"this shared {kind} is gone: process {owner}, which made it and held its data, has exited. "
            f"Keep the process that makes a shared {kind} running for as long as others use it")
    if isinstance(cause, (TimeoutError, socket.timeout)):
        return ConnectionError(f"the server of this shared {kind} in process {owner} did not answer in "
                               f"{wire.HANDSHAKE_SECONDS:g} s")
    return released_error(kind, owner)


def _owner_exited(owner: int) -> bool:
    """Whether the owner is gone. A dying process closes its sockets a moment before it stops being
    listed as running, so a connection that just failed gets that moment before we call it alive."""
    if owner == os.getpid():
        return False
    deadline = time.monotonic() + _EXIT_GRACE_SECONDS
    while alive(owner):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True

