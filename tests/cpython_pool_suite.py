"""Run CPython's own Pool tests against a pool implementation; one start method per run.

    python tests/cpython_pool_suite.py {conveyor|stdlib} START_METHOD RESULTS.jsonl

The tests are the ``_TestPool``, ``_TestPoolWorkerErrors`` and ``_TestPoolWorkerLifetime`` classes of
the running interpreter's ``test._test_multiprocessing``, used in place (never copied). They are wired
as the file's own ``ProcessesMixin`` and ``ThreadsMixin`` wire them, with the Pool under test instead
of the stdlib's. The two lifetime/error classes call ``multiprocessing.Pool`` by name, so the suite
module's ``multiprocessing`` global becomes a view of the stdlib module whose ``Pool`` is the one
under test. (The ``manager`` variants test a stdlib pool served by a Manager process: not ours.)

One JSON line per test goes to RESULTS (``{"test", "outcome", "detail"}``) as soon as it ends, so a
run cut short still says how far it got. A test that hangs makes faulthandler print every thread's
stack and end the process: a failure with a stack, never a hang. Exit code 3: the interpreter has
no ``test`` package.

``EXCLUDED`` are the tests that read the stdlib Pool's private attributes and the deliberate
differences; each is explained in docs/compat.md (test_cpython_pool_suite.py checks that).
"""

from __future__ import annotations

import faulthandler
import json
import os
import sys
import time
import types
import unittest
from typing import Any

PER_TEST_SECONDS = float(os.environ.get("CONVEYOR_TEST_SLOWDOWN", "1")) * 60
"""A test running longer than this is a hang (the slowest take about 2 s)."""

CLASSES = ("_TestPool", "_TestPoolWorkerErrors", "_TestPoolWorkerLifetime")
TYPES = ("processes", "threads")

EXCLUDED = {
    "test_make_pool": "reads the stdlib Pool's private list of worker processes (`_pool`)",
    "test_resource_warning": "sets the stdlib Pool's private `_state`",
    "test_pool_worker_lifetime": "reads `_pool` and calls `_repopulate_pool()`, private to the stdlib Pool",
    "test_worker_finalization_via_atexit_handler_of_multiprocessing":
        "runs the stdlib's own `multiprocessing.Pool` in a child interpreter, never the Pool under test",
    "test_unpickleable_result":
        "deliberate: results are pickled with cloudpickle, so the lambda the test returns as an unpicklable "
        "result crosses fine",
    "test_map_unplicklable":
        "deliberate: an unpicklable input fails with conveyor's `PicklingError` (a `pickle.PicklingError`), "
        "not with the exception its `__reduce__` raised",
    "test_imap_handle_iterable_exception":
        "deliberate: when the input iterator raises, the inputs it gave before still give their results",
    "test_traceback":
        "deliberate: the cause is a `conveyor.RemoteTraceback`, a subclass of "
        "`multiprocessing.pool.RemoteTraceback`; the test asks for the exact class",
}
"""Test method name → why it does not run against conveyor (the same words as docs/compat.md)."""


class _StdlibView(types.ModuleType):
    """``multiprocessing`` as the suite sees it: the stdlib module, but ``Pool`` is the one under test."""

    def __init__(self, real: types.ModuleType, pool: Any) -> None:
        super().__init__(real.__name__)
        self._real = real
        self.Pool = pool

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


TARGET_VARIABLE = "CONVEYOR_POOL_SUITE_TARGET"
"""Which pool the test classes use; workers that unpickle a test's bound method rebuild the same."""


def _build(target: str) -> dict[str, type]:
    """The test classes, installed in this module so that workers find them by name (the tests send
    bound methods of their own class to the pool, as the suite's installer makes possible)."""
    import multiprocessing
    import multiprocessing.pool

    from test import _test_multiprocessing as cpython

    if target == "conveyor":
        import conveyor.multiprocessing as drop_in

        pools = {"processes": drop_in.Pool, "threads": drop_in.ThreadPool}
        cpython.multiprocessing = _StdlibView(multiprocessing, drop_in.Pool)  # type: ignore[attr-defined]
    else:
        pools = {"processes": multiprocessing.Pool, "threads": multiprocessing.pool.ThreadPool}
    mixins = {"processes": cpython.ProcessesMixin, "threads": cpython.ThreadsMixin}
    cases = {}
    for class_name in CLASSES:
        base = getattr(cpython, class_name)
        for kind in TYPES:
            if kind not in base.ALLOWED_TYPES:
                continue
            namespace: dict[str, Any] = {"Pool": staticmethod(pools[kind]), "__module__": __name__}
            if target == "conveyor":
                for test, reason in EXCLUDED.items():
                    if hasattr(base, test):
                        namespace[test] = unittest.skip(f"excluded: {reason}")(getattr(base, test))
            name = "With" + kind.capitalize() + class_name[1:]
            cases[name] = type(name, (base, mixins[kind], unittest.TestCase), namespace)
    globals().update(cases)
    return cases


def __getattr__(name: str) -> Any:
    """A worker unpickling ``cpython_pool_suite.WithProcessesTestPool._test_traceback`` builds the
    classes on first use."""
    if name.startswith("With"):
        cases = _build(os.environ.get(TARGET_VARIABLE, "stdlib"))
        if name in cases:
            return cases[name]
    raise AttributeError(name)


def _suite(target: str) -> unittest.TestSuite:
    suite = unittest.TestSuite()
    loader = unittest.TestLoader()
    for case in _build(target).values():
        suite.addTests(loader.loadTestsFromTestCase(case))
    return suite


class _Recorder(unittest.TextTestResult):
    """Writes each outcome as it happens, and arms faulthandler for the length of each test."""

    def __init__(self, out: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._out = out
        self._started = 0.0

    def _record(self, test: unittest.TestCase, outcome: str, detail: str = "") -> None:
        line = {"test": test.id().rsplit(".", 2)[-2] + "." + test.id().rsplit(".", 1)[-1],
                "outcome": outcome, "detail": detail, "seconds": round(time.monotonic() - self._started, 3)}
        self._out.write(json.dumps(line) + "\n")
        self._out.flush()

    def startTest(self, test: unittest.TestCase) -> None:
        super().startTest(test)
        self._started = time.monotonic()
        faulthandler.dump_traceback_later(PER_TEST_SECONDS, exit=True)

    def stopTest(self, test: unittest.TestCase) -> None:
        faulthandler.cancel_dump_traceback_later()
        super().stopTest(test)

    def addSuccess(self, test: unittest.TestCase) -> None:
        super().addSuccess(test)
        self._record(test, "passed")

    def addFailure(self, test: unittest.TestCase, err: Any) -> None:
        super().addFailure(test, err)
        self._record(test, "failed", self.failures[-1][1])

    def addError(self, test: unittest.TestCase, err: Any) -> None:
        super().addError(test, err)
        if isinstance(test, unittest.TestCase):
            self._record(test, "failed", self.errors[-1][1])
        else:  # a class or module fixture (setUpClass, tearDownClass)
            self._out.write(json.dumps({"test": str(test), "outcome": "failed", "detail": self.errors[-1][1],
                                        "seconds": 0}) + "\n")
            self._out.flush()

    def addSkip(self, test: unittest.TestCase, reason: str) -> None:
        super().addSkip(test, reason)
        self._record(test, "skipped", reason)

    def addExpectedFailure(self, test: unittest.TestCase, err: Any) -> None:
        super().addExpectedFailure(test, err)
        self._record(test, "failed", "expected failure")

    def addUnexpectedSuccess(self, test: unittest.TestCase) -> None:
        super().addUnexpectedSuccess(test)
        self._record(test, "passed")


def main(argv: list[str]) -> int:
    target, method, results = argv
    if target not in ("conveyor", "stdlib"):
        raise SystemExit(f"unknown target {target!r}")
    os.environ["CONVEYOR_START_METHOD"] = method  # read when conveyor is imported
    os.environ[TARGET_VARIABLE] = target
    import multiprocessing

    multiprocessing.set_start_method(method, force=True)  # what the suite's own setUpModule does
    try:
        import test._test_multiprocessing  # noqa: F401
    except ImportError as exc:
        print(f"no test._test_multiprocessing in {sys.executable}: {exc}", file=sys.stderr)
        return 3
    faulthandler.enable()
    with open(results, "w") as out:
        runner = unittest.TextTestRunner(stream=sys.stderr, verbosity=2,
                                         resultclass=lambda *a, **k: _Recorder(out, *a, **k))
        runner.run(_suite(target))
    return 0


if __name__ == "__main__":
    # Run as the module it is, so that the test classes are this module's, importable by workers.
    import cpython_pool_suite

    sys.exit(cpython_pool_suite.main(sys.argv[1:]))
