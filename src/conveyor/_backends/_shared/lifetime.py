"""A worker process's lifetime: it dies with the process that owns it, and ends without teardown.

Shared by the process backend's workers and the processes that run spawned tasks (locally, or on a
cluster's worker for it).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

from conveyor._backends._shared.liveness import alive
from conveyor._core import owned

STARTUP_FAILURES_BEFORE_BROKEN = 3
"""A pool whose new workers fail this many times in a row, before any of them ran a task, is broken."""
_PARENT_POLL_SECONDS = 0.5


def die_with_owner(owner: int, owner_is_parent: bool) -> None:
    """Exit soon after the process that owns the pool dies, however it dies.

    Under fork and spawn the owner is our parent: the kernel's parent-death signal covers it at once
    and a change of parent pid backs it up. Under forkserver our parent is the fork server, which
    outlives the owner for as long as any worker holds its keep-alive pipe, so the watchdog also
    checks the owner's pid itself.
    """
    parent = os.getppid()
    if owner_is_parent and parent != owner:
        os._exit(1)  # the owner died before this worker got going
    if owner_is_parent and sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass

    def watch() -> None:
        # A SIGTERM for this process must reach its main thread, whose handler is the one that counts
        # (a task's call may replace it for a while, as Ray's does, with SIGTERM blocked meanwhile):
        # delivered to this thread instead, it would run whatever handler is installed at that instant.
        if hasattr(signal, "pthread_sigmask"):
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        while True:
            if os.getppid() != parent or not alive(owner):
                os._exit(1)
            time.sleep(_PARENT_POLL_SECONDS)

    threading.Thread(target=watch, name="conveyor-owner-watch", daemon=True).start()


def exit_now(code: int) -> None:
    """End this worker or task process once its work is reported.

    Skips interpreter teardown: the work is done and a user's atexit hook or a stuck thread must not
    keep a finished process alive. Shared memory its tasks created is removed first (``_core.owned``).
    """
    owned.release_all()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
