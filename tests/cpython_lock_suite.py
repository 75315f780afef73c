"""Run CPython's own lock and queue tests against one kind of primitives.

    python tests/cpython_lock_suite.py {conveyor|stdlib} {thread|process} RESULTS.jsonl

The tests are the running interpreter's ``test.lock_tests`` (``LockTests``, ``RLockTests``,
``EventTests``, ``ConditionTests``, ``SemaphoreTests``, ``BoundedSemaphoreTests``, ``BarrierTests``)
and ``test.test_queue`` (``QueueTest``, ``LifoQueueTest``, ``PriorityQueueTest``,
``FailingQueueTest``), used in place (never copied). They are wired as CPython's own
``test_threading`` and ``test_queue`` wire them, with the factories under test instead of the
stdlib's: for ``conveyor``, those of ``conveyor.context(KIND)``; for ``stdlib`` (the baseline),
``threading``/``queue`` on threads and ``multiprocessing`` on processes (which has no LIFO or
priority queue, and whose ``JoinableQueue`` stands for ``Queue``).

The queue tests pick the order they expect by the class's name (``Queue``, ``LifoQueue``,
``PriorityQueue``), and ``FailingQueueTest`` subclasses the queue class: each conveyor queue class is
given here a plain subclass with the stdlib's name, which changes nothing else.

One JSON line per test goes to RESULTS as soon as it ends (``{"test", "outcome", "detail"}``, as
``cpython_pool_suite.py`` writes them); a test that hangs makes faulthandler print every thread's
stack and end the process: a failure with a stack, never a hang. Exit code 3: the interpreter has
no ``test`` package.

``EXCLUDED`` (for conveyor only) are the tests that read the stdlib classes' private attributes and
the deliberate differences; each is explained in docs/compat.md (test_cpython_lock_suite.py checks).
They still run, as expected failures: one that passes is recorded as ``unexpected success``, so an
exclusion that no longer applies is noticed.
"""

from __future__ import annotations

import faulthandler
import importlib
import os
import sys
import types
import unittest
from typing import Any

KINDS = ("thread", "process")

LOCK_CLASSES = {  # the suite's base class → the attribute its tests call to make the primitive
    "LockTests": ("locktype", "Lock"),
    "RLockTests": ("locktype", "RLock"),
    "EventTests": ("eventtype", "Event"),
    "ConditionTests": ("condtype", "Condition"),
    "SemaphoreTests": ("semtype", "Semaphore"),
    "BoundedSemaphoreTests": ("semtype", "BoundedSemaphore"),
    "BarrierTests": ("barriertype", "Barrier"),
}
QUEUE_CLASSES = ("QueueTest", "LifoQueueTest", "PriorityQueueTest", "FailingQueueTest")
QUEUE_KINDS = ("Queue", "LifoQueue", "PriorityQueue")

_AT_FORK = ("private `_at_fork_reinit()`, which resets the lock in this process alone; a process lock is "
            "shared, so a child made by fork keeps it as it is")
EXCLUDED: dict[str, dict[str, str]] = {
    "thread": {},
    "process": {
        "LockTests.test_at_fork_reinit": _AT_FORK,
        "EventTests.test_at_fork_reinit": "reads the stdlib Event's private `_cond` and calls `_at_fork_reinit()`",
        "RLockTests.test_recursion_count": "calls the stdlib RLock's private `_recursion_count()`",
        "ConditionTests.test_acquire":
            "deliberate: a process `Condition` needs a process lock (`ctx.Lock()`/`ctx.RLock()`); the test "
            "passes a `threading.Lock`, which other processes cannot share",
        "FailingQueueTest.test_failing_queue":
            "overrides the stdlib Queue's private `_put`/`_get` hooks; a process queue stores records in "
            "shared memory and has no such hooks",
    },
}
"""Kind → ``Class.test`` → why it does not run against conveyor (the same words as docs/compat.md)."""


def _stdlib_factories(kind: str) -> dict[str, Any]:
    import multiprocessing
    import queue
    import threading

    if kind == "thread":
        names = (*(name for _, name in LOCK_CLASSES.values()), *QUEUE_KINDS)
        return {name: getattr(queue if "Queue" in name else threading, name) for name in names}
    context = multiprocessing.get_context()
    factories = {name: getattr(context, name) for _, name in LOCK_CLASSES.values()}
    factories["Queue"] = context.JoinableQueue
    return factories


def _conveyor_factories(kind: str) -> dict[str, Any]:
    import conveyor

    context = conveyor.context(kind)
    factories = {name: getattr(context, name) for _, name in LOCK_CLASSES.values()}
    for name in QUEUE_KINDS:
        made = getattr(context, name)()
        made_class = type(made)
        if hasattr(made, "shutdown"):
            made.shutdown(immediate=True)
        factories[name] = type(name, (made_class,), {"__module__": made_class.__module__,
                                                     "__doc__": made_class.__doc__})
    return factories


def _queue_module(factories: dict[str, Any]) -> types.ModuleType:
    """What the queue tests read as ``self.queue``: the classes under test, ``Full`` and ``Empty``."""
    import queue

    module = types.ModuleType("queue_under_test")
    module.Full, module.Empty = queue.Full, queue.Empty
    for name in QUEUE_KINDS:
        if name in factories:
            setattr(module, name, factories[name])
    return module


def build(target: str, kind: str) -> dict[str, type]:
    """The test classes, one per suite class the primitives of ``kind`` can run."""
    from test import lock_tests, test_queue

    factories = _conveyor_factories(kind) if target == "conveyor" else _stdlib_factories(kind)
    excluded = EXCLUDED[kind] if target == "conveyor" else {}
    queue_module = _queue_module(factories)
    prefix = kind.capitalize()
    cases: dict[str, type] = {}

    def make(base: type, class_name: str, namespace: dict[str, Any]) -> None:
        namespace["__module__"] = __name__
        for test in dir(base):
            if f"{class_name}.{test}" in excluded:  # runs, and must fail: a pass is reported
                namespace[test] = unittest.expectedFailure(getattr(base, test))
        bases = (base,) if issubclass(base, unittest.TestCase) else (base, unittest.TestCase)
        cases[prefix + class_name] = type(prefix + class_name, bases, namespace)

    for class_name, (attribute, factory) in LOCK_CLASSES.items():
        make(getattr(lock_tests, class_name), class_name, {attribute: staticmethod(factories[factory])})
    for class_name in QUEUE_CLASSES:
        needed = "Queue" if class_name == "FailingQueueTest" else class_name[:-len("Test")]
        if needed in factories:
            make(getattr(test_queue, class_name), class_name, {"queue": queue_module})
    return cases


def _suite(target: str, kind: str) -> unittest.TestSuite:
    suite = unittest.TestSuite()
    loader = unittest.TestLoader()
    for case in build(target, kind).values():
        suite.addTests(loader.loadTestsFromTestCase(case))
    return suite


def _recorder(out: Any, *args: Any, **kwargs: Any) -> Any:
    """The pool suite's recorder, with an excluded test's outcome told apart from a pass or a failure."""
    from cpython_pool_suite import _Recorder

    class Recorder(_Recorder):
        def addExpectedFailure(self, test: unittest.TestCase, err: Any) -> None:
            unittest.TextTestResult.addExpectedFailure(self, test, err)
            self._record(test, "excluded", "failed as expected")

        def addUnexpectedSuccess(self, test: unittest.TestCase) -> None:
            unittest.TextTestResult.addUnexpectedSuccess(self, test)
            self._record(test, "unexpected success", "an excluded test passed: drop its exclusion")

    return Recorder(out, *args, **kwargs)


def main(argv: list[str]) -> int:
    target, kind, results = argv
    if target not in ("conveyor", "stdlib") or kind not in KINDS:
        raise SystemExit(f"usage: cpython_lock_suite.py conveyor|stdlib thread|process RESULTS; got {argv}")
    try:
        for module in ("test.lock_tests", "test.test_queue"):
            importlib.import_module(module)
    except ImportError as exc:
        print(f"no test.lock_tests or test.test_queue in {sys.executable}: {exc}", file=sys.stderr)
        return 3
    faulthandler.enable()
    with open(results, "w") as out:
        runner = unittest.TextTestRunner(stream=sys.stderr, verbosity=2,
                                         resultclass=lambda *a, **k: _recorder(out, *a, **k))
        runner.run(_suite(target, kind))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    sys.exit(main(sys.argv[1:]))
