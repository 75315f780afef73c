"""Whether a process is still alive, as seen from another process.

``os.kill(pid, 0)`` alone says yes for a zombie: a process that has died but whose parent has not
reaped it yet. A worker killed a moment ago is exactly that, so those who wait on other processes
(a worker watching its owner, a pipe reader watching its writers, a barrier watching its parties,
a shared container's client watching its owner) ask this instead.
"""

from __future__ import annotations

import os


def alive(pid: int) -> bool:
    """True while process ``pid`` exists and is not a zombie waiting to be reaped."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: it exists
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            state = stat.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no /proc: os.kill is all we can check
    return state not in (b"Z", b"X")
