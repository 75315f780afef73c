"""The typed backend contract: capabilities say which primitives a backend makes, the front end refuses
the others with one error type before the factory is called, and mypy proves over ``src/`` that every
backend's factory satisfies ``conveyor.abc.PrimitiveFactory``."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import threading

import pytest

import conveyor
from conveyor._core import registry
from conveyor.abc import PRIMITIVES, Backend, BackendConfig, Capabilities
from conftest import bounded

pytestmark = pytest.mark.timeout(120)

ROOT = pathlib.Path(__file__).resolve().parent.parent


class _LockOnlyFactory:
    """Makes locks; records every call, so a test can see that a refused primitive never got here."""

    calls: list[str] = []

    def __getattr__(self, name: str):
        def make(*args, **kwargs):
            _LockOnlyFactory.calls.append(name)
            return threading.Lock()
        return make


class _LockOnlyBackend(Backend):
    name = "lock-only"
    capabilities = Capabilities(primitives=frozenset({"Lock"}))

    @classmethod
    def primitives(cls, config: BackendConfig):
        return _LockOnlyFactory()

    def submit(self, batch):  # pragma: no cover - never given work here
        raise AssertionError("no batch expected")

    def shutdown(self, wait=True, *, cancel_pending=False, kill=False):  # pragma: no cover
        pass


@pytest.fixture
def lock_only():
    registry.register_backend("lock-only", lambda: _LockOnlyBackend)
    _LockOnlyFactory.calls.clear()
    try:
        yield "lock-only"
    finally:
        with registry._lock:
            registry._registry.pop("lock-only", None)


def test_a_primitive_outside_the_capabilities_is_refused_before_the_factory_is_called(lock_only):
    ctx = conveyor.context(lock_only)
    assert ctx.Lock() is not None
    assert _LockOnlyFactory.calls == ["Lock"]
    for make in (ctx.Queue, ctx.Event, ctx.Pipe, ctx.RLock):
        with pytest.raises(conveyor.UnsupportedError, match=rf"{make.__name__}: not available on the lock-only backend"):
            make()
    assert _LockOnlyFactory.calls == ["Lock"]
    # One error type, and what callers of the stdlib-like API already catch.
    assert issubclass(conveyor.UnsupportedError, NotImplementedError)
    assert issubclass(conveyor.UnsupportedError, conveyor.ConveyorError)


def test_every_backend_declares_its_primitives_as_names_of_the_protocol():
    for name in ("serial", "thread", "process"):
        capabilities = registry.backend_class(name).capabilities
        assert capabilities.primitives == PRIMITIVES, name


@pytest.mark.parametrize("engine", ["dask", "ray"])
def test_cluster_backends_refuse_pipe_and_shared_array_with_a_way_out_and_start_nothing(engine):
    pytest.importorskip(engine if engine == "ray" else "distributed")
    backend = registry.backend_class(engine)
    assert {"Pipe", "SharedArray"}.isdisjoint(backend.capabilities.primitives)
    assert PRIMITIVES - backend.capabilities.primitives == {"Pipe", "SharedArray"}
    ctx = conveyor.context(engine)
    with pytest.raises(conveyor.UnsupportedError, match=f"Pipe: not available on the {engine} backend; use a Queue"):
        ctx.Pipe()
    with pytest.raises(conveyor.UnsupportedError, match=f"SharedArray: not available on the {engine} backend"):
        ctx.SharedArray(3)
    assert ctx._primitives is None  # refused by the front end: no cluster, no factory was made


def test_mypy_proves_every_backend_factory_satisfies_the_protocol():
    """mypy over ``src/`` (the override of ``Backend.primitives`` by each backend returns its own factory
    class, which mypy checks against the protocol) finds nothing."""
    pytest.importorskip("mypy")
    done = subprocess.run([sys.executable, "-m", "mypy", "src/conveyor"], cwd=ROOT, capture_output=True, text=True,
                          timeout=bounded(300), env={**os.environ, "MYPY_FORCE_COLOR": "0"})
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
