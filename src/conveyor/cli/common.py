"""What the ``conveyor`` commands share: exit codes and the errors ``main`` turns into them."""

from __future__ import annotations

import sys

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(Exception):
    """A mistake on the command line (bad target, missing file, bad option): exit code 2."""


class OutputError(Exception):
    """The results could not be written (a full disk, a lost connection): exit code 1."""


def error(message: str) -> None:
    """Say what went wrong on stderr, as argparse does for a usage error."""
    print(f"conveyor: error: {message}", file=sys.stderr)
