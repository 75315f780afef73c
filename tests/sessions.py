"""Ending a child's whole session: what a test run leaves behind goes with it.

Used by the runners of CPython's suites (``cpython_suites.py``, and ``cpython_futures_suite.py``,
which runs under another interpreter without pytest: so this module needs nothing but the stdlib).
"""

from __future__ import annotations

import os
import signal
import subprocess


def end_session(process: subprocess.Popen) -> None:
    """Kill every process left in ``process``'s session (it was started with
    ``start_new_session=True``), then reap ``process`` itself."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # nothing left behind
    process.wait()
