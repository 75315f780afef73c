"""The conformance suite's one ``backend`` fixture: the backends chosen by ``--backend`` (see
tests/conftest.py), each test keeping those whose declared capabilities it needs.

A test asks for a backend with the ``backend`` argument (or ``kind``: a backend, and a local process
backend once per start method) and says what it needs with a marker, checked at collection time
against ``conveyor.abc.Capabilities``, never against the backend's name::

    @pytest.mark.needs("in_background")                 # a field that must be true
    @pytest.mark.needs("in_background", "not cross_host")   # "not ...": a field that must be false
    @pytest.mark.needs(primitives={"Pipe"})             # primitives the backend's factory makes

A chosen backend that lacks what a test needs gets no instance of it; a test that fits none of the
chosen backends is reported as skipped. What can be decided only inside the test uses
``conftest.requires(backend, capability, why)``, a skip with the reason.

The harness (timeouts, the leak check, the options) is tests/conftest.py's; this file adds no
autouse fixture.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any, Callable

import pytest

import conveyor
from conftest import START_METHODS, capabilities, chosen_backends


def fits(backend: str, marker: pytest.Mark) -> bool:
    """Whether ``backend`` declares everything a ``needs`` marker asks for."""
    declared = capabilities(backend)
    if set(marker.kwargs) - {"primitives"}:
        raise TypeError(f"needs() takes capability names and primitives=, not {sorted(marker.kwargs)}")
    for name in marker.args:
        negated = name.startswith("not ")
        value = getattr(declared, name.removeprefix("not ").strip())  # a misspelt field fails loudly
        if bool(value) == negated:
            return False
    return set(marker.kwargs.get("primitives", ())) <= set(declared.primitives)


def starts_local_processes(backend: str) -> bool:
    """Whether a backend's tasks run in processes of this machine that it starts itself (and so by a
    start method): they cross a process boundary, and not to another host."""
    declared = capabilities(backend)
    return declared.needs_pickle and not declared.cross_host


def kinds(backend: str) -> list[str]:
    """``backend``, or ``backend-<method>`` for each start method of a local process backend."""
    return [f"{backend}-{method}" for method in START_METHODS] if starts_local_processes(backend) else [backend]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    needs = list(metafunc.definition.iter_markers("needs"))
    chosen = [b for b in chosen_backends(metafunc.config) if all(fits(b, marker) for marker in needs)]
    for name in ("backend", "kind"):
        if name not in metafunc.fixturenames:
            continue
        values = chosen if name == "backend" else [kind for backend in chosen for kind in kinds(backend)]
        if not values:  # one skipped instance that says why (rather than pytest's "empty parameter set")
            wanted = "; ".join(", ".join([*m.args, *(f"primitives {sorted(p)}" for p in m.kwargs.values())])
                               for m in needs)
            skip = pytest.mark.skip(reason=f"no chosen backend ({', '.join(chosen_backends(metafunc.config))}) "
                                           f"has what it needs: {wanted}")
            metafunc.parametrize(name, [pytest.param(None, marks=skip)], ids=["none"])
        else:
            metafunc.parametrize(name, values, ids=values)


@pytest.fixture
def prelude(request: pytest.FixtureRequest) -> str:
    """Python code that a fresh interpreter started by a test runs first (a line of its own, at the
    top of a script): it imports the ``--backend-plugin`` modules, so that a plugin's backend exists
    there too. Empty when there is no plugin."""
    plugins = request.config.getoption("--backend-plugin")
    if not plugins:
        return ""
    return f"import sys, importlib; sys.path[:0] = {sys.path!r}; [importlib.import_module(m) for m in {plugins!r}]"


@pytest.fixture
def conveyor_command(prelude: str) -> list[str]:
    """The command that runs ``conveyor`` (``python -m conveyor``) in a fresh interpreter, with the plugins."""
    if not prelude:
        return [sys.executable, "-m", "conveyor"]
    return [sys.executable, "-c", f"{prelude}; from conveyor.cli import main; raise SystemExit(main())"]


@pytest.fixture
def make_pool(backend: str) -> Iterator[Callable[..., conveyor.Pool]]:
    """Pools for the current backend, shut down (and their accounting checked) after the test."""
    pools: list[conveyor.Pool] = []

    def make(workers: int = 2, **options: Any) -> conveyor.Pool:
        pool = conveyor.Pool(workers, backend=options.pop("backend", backend), **options)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.shutdown(wait=True, kill=True)
    for pool in pools:
        stats = pool.statistics()
        assert stats["in_flight"] == 0, stats
        assert stats["submitted"] == stats["succeeded"] + stats["failed"] + stats["cancelled"], stats
