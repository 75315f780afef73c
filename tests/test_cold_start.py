"""A short program pays only for what it uses: ``import conveyor`` loads no backend, engine or stdlib
machinery; each public name still resolves on first use; the fork server starts from ``Pool()``.

Each check runs in a fresh interpreter, where ``sys.modules`` shows exactly what an import loaded.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from conftest import bounded

pytestmark = pytest.mark.timeout(120)

NOT_ON_IMPORT = (
    # engines and optional extras
    "dask", "distributed", "ray", "tqdm", "numpy", "psutil", "cloudpickle",
    # the stdlib machinery only a pool needs
    "concurrent.futures", "multiprocessing", "logging", "typing", "dataclasses", "inspect",
    # conveyor's own pool, backends and front ends
    "conveyor.pool", "conveyor.context", "conveyor.pipeline", "conveyor.sharing", "conveyor.abc",
    "conveyor._core.errors", "conveyor._core.stdlib_errors", "conveyor._backends.process.backend",
    "conveyor._backends.local.thread", "conveyor._backends.dask.backend", "conveyor._backends.ray.backend",
)


def run(code: str) -> str:
    """Run ``code`` in a fresh interpreter; its stdout (it must exit 0)."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=bounded(90), check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_import_conveyor_loads_none_of_the_heavy_modules():
    out = run(f"""
        import sys
        import conveyor
        loaded = [name for name in {NOT_ON_IMPORT!r} if name in sys.modules]
        print("LOADED", loaded)
        print("CONVEYOR", sorted(name for name in sys.modules if name.startswith("conveyor")))
    """)
    assert "LOADED []" in out, out
    assert "CONVEYOR ['conveyor']" in out, out


def test_every_public_name_resolves_to_the_object_its_module_defines():
    out = run("""
        import importlib
        import conveyor
        names = list(conveyor.__all__)
        assert set(conveyor._LAZY) == set(names) - {"__version__"}, set(conveyor._LAZY) ^ (set(names) - {"__version__"})
        assert set(names) <= set(dir(conveyor)), set(names) - set(dir(conveyor))
        for name in names:
            value = getattr(conveyor, name)
            home = conveyor._LAZY.get(name)
            if home is not None:
                assert value is getattr(importlib.import_module(home), name), name
        namespace = {}
        exec("from conveyor import *", namespace)
        assert set(names) <= set(namespace), set(names) - set(namespace)
        assert namespace["Pool"] is conveyor.Pool and namespace["map"] is conveyor.map
        try:
            conveyor.no_such_name
        except AttributeError as exc:
            assert "no_such_name" in str(exc)
        else:
            raise AssertionError("an unknown name must raise AttributeError")
        print("OK", len(names))
    """)
    assert out.startswith("OK "), out


def test_conveyor_context_stays_the_function_when_its_module_is_imported_first():
    """The module ``conveyor.context`` and the function ``conveyor.context`` share a name; importing
    the module (as ``conveyor.Pool``'s users never do, but other modules may) must not hide the function."""
    out = run("""
        import conveyor
        import conveyor.context
        from conveyor.context import Context
        assert callable(conveyor.context) and conveyor.context.__name__ == "context", conveyor.context
        assert conveyor.Context is Context
        print("OK")
    """)
    assert out.strip() == "OK", out


def test_errors_keep_their_stdlib_bases_without_importing_them_up_front():
    out = run("""
        import pickle
        import sys
        from conveyor._core import errors
        early = [name for name in ("concurrent.futures", "multiprocessing", "logging", "signal")
                 if name in sys.modules]
        import concurrent.futures
        import multiprocessing
        import multiprocessing.pool
        assert issubclass(errors.TaskCancelledError, (errors.TaskError, concurrent.futures.CancelledError))
        assert issubclass(errors.TaskCancelledError, concurrent.futures.CancelledError)
        assert issubclass(errors.BrokenPoolError, concurrent.futures.BrokenExecutor)
        assert issubclass(errors.InitializerError, errors.BrokenPoolError)
        assert issubclass(errors.ResultTimeoutError, multiprocessing.TimeoutError)
        assert issubclass(errors.ResultTimeoutError, TimeoutError)
        assert issubclass(errors.RemoteTraceback, multiprocessing.pool.RemoteTraceback)
        assert issubclass(errors.PicklingError, pickle.PicklingError)
        assert issubclass(errors.UnpicklingError, pickle.UnpicklingError)
        for name in ("TaskCancelledError", "BrokenPoolError", "InitializerError", "ResultTimeoutError"):
            cls = getattr(errors, name)
            assert cls.__module__ == "conveyor._core.errors", cls.__module__
            again = pickle.loads(pickle.dumps(cls("message")))
            assert type(again) is cls and str(again) == "message"
        assert "RemoteTraceback" in dir(errors)
        print("EARLY", early)
    """)
    assert "EARLY []" in out, out


def test_the_fork_server_preload_needs_no_executor_machinery():
    """What the fork server imports before it can fork the first worker: no ``concurrent.futures``,
    ``multiprocessing.pool``, conveyor front end or process primitives (they would delay every
    program's first worker)."""
    out = run("""
        import sys
        import conveyor._backends.process.worker
        print("LOADED", [name for name in ("concurrent.futures", "multiprocessing.pool", "conveyor.pool",
                                           "conveyor._core.stdlib_errors", "conveyor._backends.process.sync",
                                           "conveyor._backends.process.segments",
                                           "conveyor._backends.process.channel", "conveyor._backends.process.backend",
                                           "conveyor._backends.process.shared_queue",
                                           "multiprocessing.shared_memory",
                                           "psutil", "numpy")
                         if name in sys.modules])
    """)
    assert "LOADED []" in out, out


def test_a_thread_pool_starts_no_fork_server_and_loads_no_process_backend():
    out = run("""
        import sys
        from multiprocessing import forkserver
        import conveyor
        with conveyor.Pool(2, backend="thread") as pool:
            assert pool.map(abs, [-1, -2]) == [1, 2]
        with conveyor.Pool(1, backend="process", start_method="spawn") as pool:
            assert pool.map(abs, [-3]) == [3]
        print("SERVER", forkserver._forkserver._forkserver_pid)
    """)
    assert "SERVER None" in out, out


def test_a_default_process_pool_starts_the_fork_server_with_the_worker_preloaded():
    out = run("""
        import sys
        from multiprocessing import forkserver
        import conveyor
        pool = conveyor.Pool(2)
        # Pool() returns before any worker is up; the fork server is already on its way.
        started = forkserver._forkserver._forkserver_pid is not None
        assert pool.map(abs, range(-5, 0)) == [5, 4, 3, 2, 1]
        pool.close()
        pool.join()
        print("STARTED", started, forkserver._forkserver._preload_modules)
    """)
    if sys.platform.startswith("linux"):
        assert "STARTED True ['conveyor._backends.process.worker']" in out, out


POOL_MACHINERY = (
    # what a pool runs on, imported by Pool() only after it has started the fork server
    "conveyor._core.registry", "conveyor.abc", "conveyor._core.stream", "conveyor._core.task",
    "conveyor._core.stdlib_errors", "conveyor.progress", "conveyor.group", "conveyor._backends.process.backend",
    "cloudpickle", "dataclasses", "multiprocessing.pool",
)


def test_importing_the_pool_module_leaves_the_pool_machinery_for_pool():
    out = run(f"""
        import sys
        import conveyor.pool
        from conveyor import Pool
        assert Pool is conveyor.pool.Pool
        print("LOADED", [name for name in {POOL_MACHINERY!r} if name in sys.modules])
    """)
    assert "LOADED []" in out, out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forkserver is the default start method on Linux")
def test_pool_starts_the_fork_server_before_it_imports_the_pool_machinery():
    """The fork server's start-up (an interpreter, multiprocessing, the worker preload) is the long
    pole of a short program: it must begin before ``Pool()`` imports the registry, the backend,
    cloudpickle and the rest, so that the two proceed side by side."""
    out = run(f"""
        import sys
        from multiprocessing import forkserver
        import conveyor

        loaded_at_start = []
        original = forkserver.ensure_running

        def spy():
            if not loaded_at_start:
                loaded_at_start.append([name for name in {POOL_MACHINERY!r} if name in sys.modules])
            return original()

        forkserver.ensure_running = spy
        with conveyor.Pool(2) as pool:
            assert pool.map(abs, range(-3, 0)) == [3, 2, 1]
        print("AT START", loaded_at_start)
        print("AFTER", sorted(name for name in {POOL_MACHINERY!r} if name in sys.modules))
    """)
    assert "AT START [[]]" in out, out
    # The spy saw the modules arrive afterwards: the check above is not vacuous.
    assert "'conveyor._backends.process.backend'" in out.split("AFTER", 1)[1], out


def test_a_function_that_uses_the_conveyor_package_still_pickles_by_value():
    """The package is a ModuleType subclass (for ``conveyor.context``); cloudpickle must still send a
    reference to it, as to any module, inside a function it pickles by value."""
    out = run("""
        import pickle
        import cloudpickle
        import conveyor

        def uses_the_package():
            return conveyor.__name__, conveyor.Pool.__name__

        again = pickle.loads(cloudpickle.dumps(uses_the_package))
        assert again() == ("conveyor", "Pool")
        assert pickle.loads(pickle.dumps(conveyor)) is conveyor
        print("OK")
    """)
    assert out.strip() == "OK", out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork and forkserver side by side: Linux")
def test_primitives_load_before_a_fork_pool_forks_and_lazily_otherwise():
    """A fork child inherits any import lock another thread holds at the fork: a fork pool imports the
    primitives' modules before its first fork (so no child ever has to import them); other start
    methods leave them until a primitive is made."""
    out = run("""
        import sys
        import conveyor
        with conveyor.Pool(1, backend="process", start_method="forkserver") as pool:
            assert pool.map(abs, [-1]) == [1]
        lazily = "conveyor._backends.process.sync" not in sys.modules
        with conveyor.Pool(1, backend="process", start_method="fork") as pool:
            eagerly = "conveyor._backends.process.sync" in sys.modules
            assert pool.map(abs, [-2]) == [2]
            lock = pool.Lock()
            with lock:
                pass
        print("PRIMITIVES", lazily, eagerly)
    """)
    assert "PRIMITIVES True True" in out, out
