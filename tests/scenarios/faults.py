"""Fault injection: objects and functions that fail in one chosen way at one chosen place.

Kinds: ``raise`` (an ordinary exception), ``keyboard`` (KeyboardInterrupt), ``sysexit`` (SystemExit),
``exit`` (``os._exit``), ``segv`` (a segmentation fault), ``kill`` (SIGKILL from outside).

Places: ``pickle_task`` (the caller pickles an argument), ``unpickle_task`` (the worker rebuilds it),
``initializer``, ``task_body``, ``pickle_result`` (the worker pickles the result), ``unpickle_result``
(the caller rebuilds it).
"""

from __future__ import annotations

import ctypes
import faulthandler
import os
import signal
from typing import Any

KINDS = ("raise", "keyboard", "sysexit", "exit", "segv", "kill")
PLACES = ("pickle_task", "unpickle_task", "initializer", "task_body", "pickle_result", "unpickle_result")
CRASHES = ("exit", "segv", "kill")


class InjectedError(Exception):
    """The ordinary exception of the ``raise`` kind."""


def fault(kind: str) -> Any:
    """Fail now, in the way ``kind`` says."""
    if kind == "raise":
        raise InjectedError("injected fault")
    if kind == "keyboard":
        raise KeyboardInterrupt
    if kind == "sysexit":
        raise SystemExit(3)
    if kind == "exit":
        os._exit(9)
    if kind == "segv":
        faulthandler.disable()  # pytest's handler, inherited under fork, would print a dump
        ctypes.string_at(0)
    if kind == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    raise ValueError(f"unknown fault kind {kind!r}")


class FailsToPickle:
    """Fails while being pickled (``__reduce__`` runs the fault)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def __reduce__(self) -> Any:
        fault(self.kind)
        return (str, ("unreachable",))


class FailsToUnpickle:
    """Pickles fine; rebuilding it runs the fault."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def __reduce__(self) -> Any:
        return (fault, (self.kind,))


def echo(x: Any) -> Any:
    return x


def square(x: int) -> int:
    return x * x


def return_failing_to_pickle(kind: str) -> FailsToPickle:
    return FailsToPickle(kind)


def return_failing_to_unpickle(kind: str) -> FailsToUnpickle:
    return FailsToUnpickle(kind)


def applies(backend: str, kind: str, place: str) -> bool:
    """Whether a cell can be isolated at all.

    A crash (``exit``, ``segv``, ``kill``) in the caller's own process takes the caller down on every
    library; so does one in a thread or serial task, which runs inside the caller. Nothing is pickled
    on the thread and serial backends. A KeyboardInterrupt raised in the caller's own thread (a serial
    task, pickling arguments) is the user's Ctrl-C and stops the caller, by design (tested on its own).
    """
    in_caller = place in ("pickle_task", "unpickle_result") or backend != "process"
    if kind in CRASHES and in_caller:
        return False
    if kind == "keyboard" and (backend == "serial" or place == "pickle_task"):
        return False  # by design a KeyboardInterrupt in the caller's own code is their Ctrl-C
    if backend != "process" and place not in ("task_body", "initializer"):
        return False
    return True
