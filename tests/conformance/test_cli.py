"""The ``conveyor`` command line on each chosen backend (``--backend``), run as a user runs it:
``python -m conveyor ...`` in a subprocess. The command line's own options and errors are in
tests/test_cli.py."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.timeout(90)


def cli(command: list[str], *args: str, stdin: str | None = None, cwd: Path | None = None, timeout: float = 60,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m conveyor ARGS`` (``command``: see ``conveyor_command`` in conftest.py) in a subprocess,
    with text stdin, stdout and stderr.

    ``env`` is added to this process's environment (a value of ``""`` removes the variable).
    """
    environment = None if env is None else {
        **{key: value for key, value in os.environ.items() if key not in env},
        **{key: value for key, value in env.items() if value}}
    return subprocess.run([*command, *args], input=stdin, capture_output=True,
                          text=True, timeout=timeout, cwd=cwd, env=environment, check=False)


def results(proc: subprocess.CompletedProcess[str]) -> list[Any]:
    return [json.loads(line) for line in proc.stdout.splitlines()]


# -- conveyor run: inputs and order ----------------------------------------------------------------
def test_range_with_module_function_in_order(backend: str, conveyor_command: list[str]) -> None:
    proc = cli(conveyor_command, "run", "--range", "0:200", "operator:neg", "--backend", backend, "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    assert results(proc) == [-i for i in range(200)]


@pytest.mark.needs("in_background")  # a result comes out while the next line is awaited
def test_live_stdin_result_comes_out_before_the_next_line(backend: str, conveyor_command: list[str]) -> None:
    command = [*conveyor_command, "run", "--json", "operator:neg", "--backend", backend,
               "--workers", "2", "--quiet"]
    lines: queue.Queue[str] = queue.Queue()
    with subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as proc:
        reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout])  # type: ignore
        reader.start()
        try:
            proc.stdin.write("7\n")  # type: ignore[union-attr]
            proc.stdin.flush()  # type: ignore[union-attr]
            first = lines.get(timeout=30)  # one line, and stdin stays open: its result comes out anyway
            proc.stdin.write("8\n")  # type: ignore[union-attr]
            proc.stdin.flush()  # type: ignore[union-attr]
            second = lines.get(timeout=30)
        finally:
            proc.stdin.close()  # type: ignore[union-attr]
            reader.join(timeout=30)
        assert proc.wait(timeout=30) == 0
    assert (first, second) == ("-7\n", "-8\n")
    assert lines.empty()


# -- conveyor run: functions from a file -----------------------------------------------------------


# -- conveyor run: failures ------------------------------------------------------------------------


# -- conveyor run: usage errors exit 2 without a traceback -----------------------------------------


# -- conveyor run: summary and progress ------------------------------------------------------------


# -- main() in-process -----------------------------------------------------------------------------


# -- conveyor doctor, --version, --help ------------------------------------------------------------
