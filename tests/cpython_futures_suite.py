"""Run CPython's own ``test_concurrent_futures`` executor tests against one executor kind.

    python tests/cpython_futures_suite.py {conveyor|stdlib} {thread|fork|forkserver|spawn} RESULTS.jsonl

The tests are the executor-parametrized classes of the running interpreter's
``test.test_concurrent_futures`` package (3.13 has it; never copied here): every class built on the
package's ``ThreadPoolMixin`` for ``thread``, on its ``ProcessPool<Method>Mixin`` for a start
method. For ``conveyor``, :func:`substitute` puts conveyor's executors in the place of the stdlib's
in ``concurrent.futures`` before the package is imported, so its mixins, its direct calls
(``futures.ThreadPoolExecutor(...)``) and the child interpreters its shutdown tests start (through
a ``.pth`` file of the suite's virtual environment, when ``SUBSTITUTE_VARIABLE`` is set) all get
conveyor's.

Each test module runs in a process of its own, with faulthandler armed for every test: a test that
hangs prints every thread's stack and ends that module's process, a failure with a stack, never a
hang, and the other modules still run. One JSON line per test goes to RESULTS as soon as it ends.
Exit code 3: the interpreter has no ``test.test_concurrent_futures``.

``EXCLUDED`` are the tests that read the stdlib executors' private attributes and the deliberate
differences; each is explained in docs/compat.md (test_cpython_futures_suite.py checks that, and that
each excluded test exists and still fails).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import unittest
from typing import Any

from sessions import end_session

PACKAGE = "test.test_concurrent_futures"
KINDS = ("thread", "fork", "forkserver", "spawn")
SUBSTITUTE_VARIABLE = "CONVEYOR_FUTURES_SUITE_TESTS"
"""Set to this directory: every interpreter of the suite's environment runs :func:`substitute`."""
MODULE_SECONDS = float(os.environ.get("CONVEYOR_TEST_SLOWDOWN", "1")) * 300
"""A whole module running longer than this is a hang that even faulthandler could not end."""

THREAD, PROCESS, BOTH = ("thread",), ("process",), ("thread", "process")
PRIVATE: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "test_initializer": (BOTH, ("_broken",)),
    "test_context_manager_shutdown": (BOTH, ("_threads", "_processes")),
    "test_shutdown_no_wait": (BOTH, ("_threads", "_processes")),
    "test_saturation": (BOTH, ("_max_workers",)),
    "test_del_shutdown": (BOTH, ("_threads", "_executor_manager_thread")),
    "test_thread_names_assigned": (THREAD, ("_threads",)),
    "test_thread_names_default": (THREAD, ("_threads",)),
    "test_threads_terminate": (THREAD, ("_threads",)),
    "test_idle_thread_reuse": (THREAD, ("_threads",)),
    "test_default_workers": (THREAD, ("_max_workers",)),
    "test_idle_process_reuse_one": (PROCESS, ("_max_workers",)),
    "test_idle_process_reuse_multiple": (PROCESS, ("_max_workers",)),
    "test_killed_child": (PROCESS, ("_processes",)),
    "test_max_tasks_per_child": (PROCESS, ("_processes",)),
    "test_max_tasks_per_child_defaults_to_spawn_context": (PROCESS, ("_mp_context",)),
    "test_processes_terminate": (PROCESS, ("_processes",)),
    "test_shutdown_deadlock_pickle": (PROCESS, ("_executor_manager_thread",)),
}
"""Tests that read a private attribute of the stdlib executor (test name → the kinds it is excluded
on, the attributes). They are skipped, not run: some leave their tasks blocked when the attribute is
missing, and the run would hang. Each is skipped only while its source still reads one of them."""
_PICKLE = ("deliberate: a task whose input or result cannot cross (an error or `SystemExit` while "
           "pickling or unpickling it) fails alone with conveyor's `PicklingError` or `UnpicklingError`; "
           "the stdlib breaks the executor (`BrokenProcessPool`)")
DELIBERATE: dict[str, tuple[tuple[str, ...], str]] = {
    "test_error_at_task_unpickle": (PROCESS, _PICKLE),
    "test_exit_at_task_unpickle": (PROCESS, _PICKLE),
    "test_exit_during_result_pickle_on_worker": (PROCESS, _PICKLE),
    "test_error_during_result_unpickle_in_result_handler": (PROCESS, _PICKLE),
    "test_exit_during_result_unpickle_in_result_handler": (PROCESS, _PICKLE),
    "test_python_finalization_error": (PROCESS, ("deliberate: it makes the stdlib's own thread start fail "
                                        "to break the executor; conveyor's executor has started its "
                                        "threads already, so it does not break and the tasks run")),
    "test_traceback": (PROCESS, ("deliberate: the cause is a `conveyor.RemoteTraceback` (a "
                                 "`multiprocessing.pool.RemoteTraceback`), not the stdlib's private "
                                 "`_RemoteTraceback`")),
}
"""Deliberate differences (test name → kinds, why): they run, and must fail."""
EXCLUDED = {**{name: (kinds, f"reads the stdlib executor's private {' or '.join(f'`{a}`' for a in attributes)}")
               for name, (kinds, attributes) in PRIVATE.items()}, **DELIBERATE}
"""Every excluded test → (kinds, why): the same words as docs/compat.md."""


def substitute() -> None:
    """``concurrent.futures.ThreadPoolExecutor`` and ``ProcessPoolExecutor`` become conveyor's."""
    import concurrent.futures

    import conveyor.futures

    concurrent.futures.ThreadPoolExecutor = conveyor.futures.ThreadPoolExecutor  # type: ignore[misc]
    concurrent.futures.ProcessPoolExecutor = conveyor.futures.ProcessPoolExecutor  # type: ignore[misc]


def kind_of(mixin_names: set[str]) -> str | None:
    """The executor kind of a test class, from the names of the package's mixins it is built on."""
    if "ThreadPoolMixin" in mixin_names:
        return "thread"
    for kind in KINDS[1:]:
        if f"ProcessPool{kind.capitalize()}Mixin" in mixin_names:
            return kind
    return None


def _source(case: type, test: str) -> str:
    """A test's source ("" if the class has no such test): a private read that is gone is run again."""
    import inspect

    function = getattr(case, test, None)
    return inspect.getsource(function) if function is not None else ""


def _family(kind: str) -> str:
    return "thread" if kind == "thread" else "process"


def _cases(module: Any, kind: str, target: str) -> list[type]:
    """The module's test classes for ``kind``; against conveyor, with the tests that read private
    attributes skipped."""
    cases = []
    for value in vars(module).values():
        if not (isinstance(value, type) and issubclass(value, unittest.TestCase)):
            continue
        if value.__module__ != module.__name__:
            continue
        if kind_of({base.__name__ for base in value.__mro__}) != kind:
            continue
        if target == "conveyor":
            for test, (kinds, attributes) in PRIVATE.items():
                source = _source(value, test)
                if _family(kind) in kinds and any(f".{attribute}" in source for attribute in attributes):
                    skip = unittest.skip(f"excluded: {EXCLUDED[test][1]}")
                    setattr(value, test, skip(getattr(value, test)))
        cases.append(value)
    return sorted(cases, key=lambda case: case.__name__)


def _modules() -> list[str]:
    import pkgutil

    package = __import__(PACKAGE, fromlist=["util"])
    return sorted(f"{PACKAGE}.{info.name}" for info in pkgutil.iter_modules(package.__path__)
                  if info.name.startswith("test_"))


def run_module(target: str, kind: str, name: str, results: str) -> int:
    """This process: one test module's classes for ``kind``, recorded as they end."""
    import importlib

    from cpython_pool_suite import _Recorder

    class Recorder(_Recorder):
        def stopTest(self, test: unittest.TestCase) -> None:
            """A test that failed before its ``shutdown()`` (a deliberate difference) leaves its
            executor in a cycle with the failure's traceback: collect it now, so that its workers
            end before the module's cleanup stops the forkserver they came from."""
            super().stopTest(test)
            import gc

            gc.collect()

    if target == "conveyor":
        substitute()
    module = importlib.import_module(name)
    loader = unittest.TestLoader()
    suite = unittest.TestSuite(loader.loadTestsFromTestCase(case) for case in _cases(module, kind, target))
    if not suite.countTestCases():
        return 0
    import faulthandler

    faulthandler.enable()
    with open(results, "a") as out:
        runner = unittest.TextTestRunner(stream=sys.stderr, verbosity=2,
                                         resultclass=lambda *a, **k: Recorder(out, *a, **k))
        runner.run(suite)
    return 0


def run_in_own_session(command: list[str], env: dict[str, str]) -> int | None:
    """Run one module's tests in a session of their own: its exit code, or None after
    ``MODULE_SECONDS``. Whatever the module leaves behind is killed with its session when it ends (a
    test that failed or was ended by its watchdog may never shut down the manager or pool it started,
    and such a process would keep this run's output open, and its caller waiting, for good)."""
    process = subprocess.Popen(command, env=env, start_new_session=True)
    try:
        return process.wait(timeout=MODULE_SECONDS)
    except subprocess.TimeoutExpired:
        return None
    finally:
        end_session(process)


def main(argv: list[str]) -> int:
    target, kind, results = argv
    if target not in ("conveyor", "stdlib") or kind not in KINDS:
        raise SystemExit(f"usage: {__doc__.splitlines()[2].strip()}")
    try:
        modules = _modules()
    except ImportError as exc:
        print(f"no {PACKAGE} in {sys.executable}: {exc}", file=sys.stderr)
        return 3
    env = dict(os.environ)
    here = os.path.dirname(os.path.abspath(__file__))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [here, env.get("PYTHONPATH")]))
    env.pop(SUBSTITUTE_VARIABLE, None)
    if target == "conveyor":
        env[SUBSTITUTE_VARIABLE] = here
    open(results, "w").close()
    status = 0
    for name in modules:
        code = run_in_own_session([sys.executable, os.path.abspath(__file__), "--module", target, kind, name,
                                   results], env)
        if code != 0:  # a hang ended by faulthandler or the timeout (None), or a crash
            status = 1
            with open(results, "a") as out:
                out.write(json.dumps({"test": f"{name.rsplit('.', 1)[1]}", "outcome": "failed", "seconds": 0,
                                      "detail": f"the module's run ended early: {code}"})
                          + "\n")
    return status


if __name__ == "__main__":
    # Run as the module it is (cpython_futures_suite), so that what the tests pickle by name is found.
    import cpython_futures_suite

    if sys.argv[1] == "--module":
        sys.exit(cpython_futures_suite.run_module(*sys.argv[2:]))
    sys.exit(cpython_futures_suite.main(sys.argv[1:]))
