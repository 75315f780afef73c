"""Test harness: per-test timeouts (pyproject), bounded waits, an autouse leak check, and the choice of
backends for the conformance suite (``--backend``, ``--backend-plugin``; see tests/conformance/).

The leak check fails a test that leaves behind a child process (searched recursively), a thread, a
file descriptor or a /dev/shm entry. The multiprocessing forkserver and resource tracker are long-lived
helpers shared by the whole session, so they are started once up front and not counted.
"""

from __future__ import annotations

import gc
import importlib
import multiprocessing
import os
import re
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any, Callable

import psutil
import pytest

import conveyor

SLOWDOWN = float(os.environ.get("CONVEYOR_TEST_SLOWDOWN", "1"))
"""The one slow-machine factor: every bounded wait in the tests (``bounded()``, ``wait_until()``, the
leak check's grace) and every test's time limit are multiplied by it (set it above 1 on a slow or
loaded machine)."""

LEAK_GRACE = 5.0 * SLOWDOWN

DEFAULT_BACKENDS = "serial,thread,process"
"""The backends the conformance suite (tests/conformance/) runs on unless ``--backend`` says otherwise."""

CLUSTER: str | None = None
"""The first chosen backend that runs on a cluster (``Capabilities.cross_host``), if any (set at
configure time from ``--backend``): its engine client's process-wide threads are started once up
front, and its engine's connection cache is not counted as our leak (see ``no_leaks``)."""


def chosen_backends(config: pytest.Config) -> tuple[str, ...]:
    """The backends named by ``--backend`` (or ``CONVEYOR_TEST_BACKEND``), in order."""
    return tuple(name.strip() for name in config.getoption("--backend").split(",") if name.strip())


def capabilities(backend: str) -> Any:
    """What ``backend`` declares (its ``conveyor.abc.Capabilities``)."""
    from conveyor._core.registry import backend_class

    return backend_class(backend).capabilities


START_METHODS = tuple(m for m in ("fork", "forkserver", "spawn") if m in multiprocessing.get_all_start_methods())


def requires(backend: str, capability: str, why: str) -> None:
    """Skip unless ``backend`` has ``capability`` (a field of ``conveyor.abc.Capabilities``), saying why.

    Expectations follow what a backend declares, not its name, so a third-party backend that declares
    the same capabilities is held to the same tests. (To leave a backend out at collection time
    instead, mark the test ``@pytest.mark.needs(...)``: see tests/conformance/conftest.py.)"""
    if not getattr(capabilities(backend), capability):
        pytest.skip(f"{backend} lacks {capability}: {why}")


def bounded(seconds: float) -> float:
    """A wait limit scaled for slow machines."""
    return seconds * SLOWDOWN


def wait_until(predicate: Callable[[], bool], seconds: float, interval: float = 0.02) -> bool:
    """Poll ``predicate`` until true or ``seconds`` (scaled) pass; returns the last value."""
    deadline = time.monotonic() + bounded(seconds)
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return predicate()
        time.sleep(interval)


def workers_started(pool: Any) -> int:
    """How many workers ``pool`` ever started (each of which should run its finalizer once, if not
    killed), read from its statistics."""
    stats = pool.statistics()
    if "workers_started" in stats:  # workers of their own, counted by the backend
        return stats["workers_started"]
    if "workers_replaced" in stats:  # a fixed set of workers, replaced when recycled
        return pool.workers + stats["workers_replaced"]
    return 1  # the caller's thread (tasks run inside submit), once


def in_thread(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` in another thread, joined before returning; its result, or its exception re-raised."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = fn()
        except BaseException as error:  # noqa: BLE001 - handed back to the caller
            box["error"] = error

    thread = threading.Thread(target=run, name="test-helper")
    thread.start()
    thread.join(bounded(10))
    assert not thread.is_alive(), "the helper thread hung"
    if "error" in box:
        raise box["error"]
    return box["result"]


def _is_session_helper(proc: psutil.Process) -> bool:
    try:
        text = " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False
    return "forkserver" in text or "resource_tracker" in text


def _children() -> set[int]:
    me = psutil.Process()
    found = set()
    for child in me.children(recursive=True):
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                continue
        except psutil.NoSuchProcess:
            continue
        if not _is_session_helper(child):
            found.add(child.pid)
    return found


_SHARED_THREADS = ("tqdm_monitor",)
"""tqdm's bar monitor: one per process, started by the first bar, by design."""


def _threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.is_alive() and t.name not in _SHARED_THREADS}


def _fds() -> set[int]:
    try:
        listed = os.listdir("/proc/self/fd")
    except FileNotFoundError:  # not Linux
        return set()
    # Only those still open: the listing's own descriptor is closed by now (and its number depends
    # on which others are open, so counting it would blame a test for a number that moved).
    return {int(fd) for fd in listed if os.path.lexists(f"/proc/self/fd/{fd}")}


def _engine_sockets(fds: set[int]) -> set[int]:
    """Among ``fds``, the sockets connected to a process of the Ray cluster (when Ray is the chosen backend).

    Ray's core worker keeps a connection to every worker process it has called (a pool's worker
    actors, the primitives' hub) and closes it in its own time, after the process has gone; that is
    the engine's cache, not a leak of the test. Any other descriptor still counts.
    """
    if CLUSTER != "ray" or not fds:
        return set()
    ours = {c.fd: c.raddr for c in psutil.Process().net_connections(kind="inet") if c.fd in fds and c.raddr}
    if not ours:
        return set()
    owners = {(c.laddr.ip, c.laddr.port): c.pid for c in psutil.net_connections(kind="inet") if c.pid}
    engine = set()
    for fd, peer in ours.items():
        pid = owners.get((peer.ip, peer.port))
        try:
            name = " ".join(psutil.Process(pid).cmdline()) if pid else ""
        except psutil.Error:
            name = ""
        if pid is None or "ray" in name:  # the peer is gone (a worker Ray ended), or is Ray's
            engine.add(fd)
    return engine


_SHM_PREFIXES = ("conveyor", "psm_", "sem.mp-", "mp-")
"""Shared-memory names made by conveyor or the stdlib; other programs on a shared machine make theirs."""

SEMAPHORE_PREFIX = f"/mp-t{os.getpid()}"
"""multiprocessing names its semaphores ``<semprefix>-<random>`` (``/dev/shm/sem.mp-<random>`` by
default), with no trace of who made them. This run's processes, and every process they start through
multiprocessing under any start method (the prefix travels with the process object), name theirs
after this run's pid instead, so that the leak check counts the semaphores this run made and not
those of another program on the machine."""
_config = multiprocessing.process.current_process()._config
if _config.get("semprefix", "/mp") == "/mp":  # a worker of this run that imports conftest keeps the run's
    _config["semprefix"] = SEMAPHORE_PREFIX
else:
    SEMAPHORE_PREFIX = _config["semprefix"]


def _made_by_another_run(names: set[str]) -> set[str]:
    """Among ``names``, the multiprocessing semaphores not named after this run (see SEMAPHORE_PREFIX)."""
    ours = "sem" + SEMAPHORE_PREFIX.replace("/", ".", 1) + "-"
    return {name for name in names if name.startswith("sem.mp-") and not name.startswith(ours)}


def _shm() -> set[str]:
    try:
        return {name for name in os.listdir("/dev/shm") if name.startswith(_SHM_PREFIXES)}
    except FileNotFoundError:
        return set()


def own_segments(kind: str) -> set[str]:
    """This process's conveyor segments of one kind (``w``: its workers', ``s``: shared objects,
    ``p``: primitives, ``q``: queue spills). Never count by a looser pattern: /dev/shm is shared with
    every other program on the machine, and may hold leftovers of programs killed long ago."""
    return {name for name in _shm() if name.startswith(f"conveyor-{os.getpid()}{kind}")}


def _in_use_elsewhere(names: set[str]) -> set[str]:
    """The names among ``names`` mapped by a process outside this test run (not us, not our
    descendants): on a shared machine, another test run's live segments are not our leak."""
    ours = {os.getpid()} | {child.pid for child in psutil.Process().children(recursive=True)}
    found = set()
    for pid in psutil.pids():
        if pid in ours:
            continue
        try:
            with open(f"/proc/{pid}/maps") as maps:
                text = maps.read()
        except OSError:
            continue
        found |= {name for name in names if f"/dev/shm/{name}" in text}
    return found


def _made_elsewhere(names: set[str]) -> set[str]:
    """Among ``names``, conveyor's segments (``conveyor-<maker pid>...``) made by a live process that is
    neither this test run nor one of its descendants: another program's, on a shared machine."""
    ours = {os.getpid()} | {child.pid for child in psutil.Process().children(recursive=True)}
    found = set()
    for name in names:
        maker = re.match(r"conveyor-(\d+)", name)
        if maker and int(maker.group(1)) not in ours and psutil.pid_exists(int(maker.group(1))):
            found.add(name)
    return found


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--all-start-methods", action="store_true", default=bool(os.environ.get("CONVEYOR_TEST_ALL_START_METHODS")),
        help="also run the tests marked all_start_methods (CPython's suites under every start method; "
             "or set CONVEYOR_TEST_ALL_START_METHODS=1)")
    parser.addoption(
        "--backend", default=os.environ.get("CONVEYOR_TEST_BACKEND") or DEFAULT_BACKENDS, metavar="NAME[,NAME...]",
        help=f"the backends the conformance suite (tests/conformance/) runs on (default: {DEFAULT_BACKENDS}; "
             "or set CONVEYOR_TEST_BACKEND)")
    parser.addoption(
        "--backend-plugin", action="append", metavar="MODULE",
        default=[m for m in os.environ.get("CONVEYOR_TEST_BACKEND_PLUGIN", "").split(",") if m],
        help="a module imported before the run, which registers a third-party backend with "
             "conveyor.register_backend() (repeatable; or set CONVEYOR_TEST_BACKEND_PLUGIN)")


def pytest_configure(config: pytest.Config) -> None:
    global CLUSTER
    for module in config.getoption("--backend-plugin"):
        importlib.import_module(module)
    chosen = chosen_backends(config)
    if not chosen:
        raise pytest.UsageError("--backend names no backend")
    for name in chosen:
        try:
            declared = capabilities(name)
        except conveyor.BackendUnavailableError as error:
            raise pytest.UsageError(f"--backend {name}: {error}") from None
        if CLUSTER is None and declared.cross_host:
            CLUSTER = name


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if SLOWDOWN != 1:  # every test's own time limit scales with the waits in it
        default = float(config.getini("timeout") or 0)
        for item in items:
            marker = item.get_closest_marker("timeout")
            seconds = float(marker.args[0]) if marker is not None and marker.args else default
            if seconds:
                item.add_marker(pytest.mark.timeout(seconds * SLOWDOWN), append=False)
    if not config.getoption("--all-start-methods"):
        skip = pytest.mark.skip(reason="under every start method only with --all-start-methods")
        for item in items:
            if item.get_closest_marker("all_start_methods"):
                item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _session_helpers() -> Iterator[None]:
    """Start the forkserver and resource tracker once (on a cluster backend: the engine client's
    process-wide threads), so that no test is blamed for them."""
    if CLUSTER is not None:
        with conveyor.Pool(1, backend=CLUSTER) as pool:
            pool.map(abs, [1])
        conveyor.context(CLUSTER).Lock()
    if "forkserver" in START_METHODS:
        with conveyor.Pool(1, backend="process", start_method="forkserver") as pool:
            pool.map(abs, [1])
    yield


@pytest.fixture(autouse=True)
def no_leaks(request: pytest.FixtureRequest) -> Iterator[None]:
    if request.node.get_closest_marker("allow_leaks"):
        yield
        return
    children, threads, fds, shm = _children(), _threads(), _fds(), _shm()
    yield
    gc.collect()  # objects caught in reference cycles release their resources now, not "eventually"
    ok = wait_until(lambda: not (_children() - children) and not (_threads() - threads), LEAK_GRACE)
    problems = []
    if not ok:
        extra_children = _children() - children
        extra_threads = _threads() - threads
        if extra_children:
            problems.append(f"child processes left: {sorted(extra_children)}")
            for pid in extra_children:  # clean up so one leak does not cascade into later tests
                try:
                    psutil.Process(pid).kill()
                except psutil.NoSuchProcess:
                    pass
        if extra_threads:
            problems.append(f"threads left: {sorted(t.name for t in extra_threads)}")
    wait_until(lambda: not (_fds() - fds), 2.0)
    extra_fds = _fds() - fds
    extra_fds -= _engine_sockets(extra_fds)
    if extra_fds:
        details = []
        for fd in sorted(extra_fds):
            try:
                details.append(f"{fd}->{os.readlink(f'/proc/self/fd/{fd}')}")
            except OSError:
                details.append(str(fd))
        problems.append(f"file descriptors left: {details}")
    # Segments and semaphores are unlinked by their finalizers and by the resource tracker, a moment
    # after their last user lets go: give them the same grace as threads.
    wait_until(lambda: not (_shm() - shm - _made_by_another_run(_shm() - shm)), 2.0)
    extra_shm = _shm() - shm
    if extra_shm:
        extra_shm -= _made_by_another_run(extra_shm)
        extra_shm -= _in_use_elsewhere(extra_shm)
        extra_shm -= _made_elsewhere(extra_shm)
    if extra_shm:
        problems.append(f"/dev/shm entries left: {sorted(extra_shm)}")
    if problems:
        pytest.fail("leak check: " + "; ".join(problems), pytrace=False)


PY = sys.executable
