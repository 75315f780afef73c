"""The ``conveyor`` command: run a function over many inputs in parallel, and check the machine first.

Why a command line: the most common parallel job is "apply this function to every line of that file".
Writing it by hand means the same boilerplate every time (a ``__main__`` guard, a pool, keeping the
order, reporting the one input that failed) and the same mistakes (reading everything into memory
first, a function from a script that worker processes cannot import). ``conveyor run`` does it once:
inputs are read lazily, results come out in input order as JSON lines, so it composes with pipes::

    conveyor run examples/word_lengths.py:count_words book.txt > counts.jsonl
    seq 100 | conveyor run --json math:sqrt --progress

``conveyor doctor`` prints what to know before choosing a backend and a number of workers: the cores
and memory this process can really use, the start method and why, and whether the GIL is on.

Exit codes: 0 success, 1 a task or an input failed, 2 a mistake on the command line, 130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from typing import Sequence

import conveyor
from conveyor.cli import doctor, run
from conveyor.cli.common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    OutputError,
    UsageError,
    error,
)
from conveyor.cli.doctor import machine_report
from conveyor.cli.run import load_function

__all__ = ["load_function", "machine_report", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The ``conveyor`` argument parser with its ``run`` and ``doctor`` commands."""
    parser = argparse.ArgumentParser(
        prog="conveyor", description="Parallel work from the command line. See 'conveyor COMMAND --help'.")
    parser.add_argument("--version", action="version",
                        version=f"conveyor {conveyor.__version__} (Python {platform.python_version()})")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    run.add_parser(commands)
    doctor.add_parser(commands)
    return parser


def _silence_stdout() -> None:
    """After a closed pipe (``conveyor run ... | head``), stop Python's final flush from complaining."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``conveyor`` command.

    Args:
        argv: the arguments without the program name (default: ``sys.argv[1:]``).

    Returns:
        The exit code: 0 success, 1 a task or an input failed, 2 a usage error, 130 interrupted.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error argparse has already printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE if exc.code else EXIT_OK
    try:
        return args.handler(args)
    except UsageError as exc:
        error(str(exc))
        return EXIT_USAGE
    except OutputError as exc:
        error(str(exc))
        return EXIT_FAILED
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_FAILED
    except KeyboardInterrupt:
        error("interrupted")
        return EXIT_INTERRUPTED
