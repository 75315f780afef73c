"""``conveyor doctor``: the facts that decide a backend and a worker count.

The cores are counted as the pools count them (``conveyor._core.config.usable_cores``: affinity,
then a cgroup CPU quota), so the report and ``Pool()`` never disagree.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.machinery
import importlib.metadata
import importlib.util
import json
import multiprocessing
import os
import platform
import shutil
import sys
import sysconfig
from typing import Any

import conveyor
from conveyor._core import config as _config
from conveyor.cli.common import EXIT_OK
from conveyor.pool import default_workers

OPTIONAL_PACKAGES = ("numpy", "dask", "distributed", "ray", "tqdm", "cloudpickle", "psutil")


# -- the report ------------------------------------------------------------------------------------
def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii") as file:
            return file.read().strip()
    except (OSError, ValueError):
        return None


def _cpu_quota() -> float | None:
    """Cores allowed by a cgroup CPU quota (containers), or None when there is no quota."""
    v2 = _read("/sys/fs/cgroup/cpu.max")  # "max 100000" or "200000 100000"
    if v2 is not None:
        quota, _, period = v2.partition(" ")
        return None if quota == "max" or not period else int(quota) / int(period)
    v1_quota = _read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")  # cgroup v1: -1 when there is no quota
    v1_period = _read("/sys/fs/cgroup/cpu/cpu.cfs_period_us")
    if v1_quota is None or v1_period is None or int(v1_quota) <= 0:
        return None
    return int(v1_quota) / int(v1_period)


def _memory_limit(total: int) -> int | None:
    """Bytes allowed by a cgroup memory limit, or None when there is none below physical memory."""
    text = _read("/sys/fs/cgroup/memory.max") or _read("/sys/fs/cgroup/memory/memory.limit_in_bytes")
    if text is None or not text.isdigit() or int(text) >= total:
        return None
    return int(text)


def _memory() -> dict[str, Any]:
    import psutil

    memory = psutil.virtual_memory()
    return {"total": memory.total, "available": memory.available, "limit": _memory_limit(memory.total)}


def _start_method() -> dict[str, Any]:
    configured = _config.current()["start_method"]
    method = configured or _config.default_start_method()
    if configured:
        reason = "set by CONVEYOR_START_METHOD"
    elif method == "forkserver":
        reason = "workers fork from a single-threaded server: safe with threads (plain fork is not), cheap"
    else:
        reason = "forkserver is used on Linux only, and fork is unsafe once threads exist"
    return {"default": method, "reason": reason, "available": multiprocessing.get_all_start_methods()}


def _gil() -> dict[str, bool]:
    enabled = sys._is_gil_enabled() if hasattr(sys, "_is_gil_enabled") else True
    free_threaded = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
    return {"enabled": bool(enabled), "free_threaded_build": free_threaded}


def _shm() -> dict[str, int] | None:
    if not os.path.isdir("/dev/shm"):
        return None
    usage = shutil.disk_usage("/dev/shm")
    return {"total": usage.total, "free": usage.free}


def _packages() -> dict[str, str | None]:
    """Versions from package metadata: nothing is imported, so heavy packages cost nothing."""
    versions: dict[str, str | None] = {}
    for name in OPTIONAL_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _default_workers() -> tuple[dict[str, int], str | None]:
    """The workers ``conveyor run`` uses without ``--workers``, and what set them, if not the cores."""
    try:
        configured = _config.current()["workers"]
    except ValueError:  # an invalid CONVEYOR_WORKERS: listed in the problems
        configured = None
    if configured is not None:
        source = "CONVEYOR_WORKERS" if os.environ.get("CONVEYOR_WORKERS") else "conveyor.config"
        return {"process": configured, "thread": configured}, source
    return {"process": default_workers("process"), "thread": default_workers("thread")}, None


def _problems() -> list[str]:
    """Environment settings that would make ``conveyor run`` (or a Pool) fail when it uses them."""
    problems = _config.problems()
    backend = os.environ.get("CONVEYOR_BACKEND")
    if backend and backend not in conveyor.available_backends():
        problems.append(f"environment variable CONVEYOR_BACKEND names an unknown backend {backend!r}; "
                        f"choose one of {', '.join(conveyor.available_backends())}")
    method, methods = os.environ.get("CONVEYOR_START_METHOD"), multiprocessing.get_all_start_methods()
    if method and method not in methods:
        problems.append(f"environment variable CONVEYOR_START_METHOD names a start method not available "
                        f"here: {method!r}; choose one of {', '.join(methods)}")
    return problems


def _advice(cores: int, gil_enabled: bool, thread_workers: int) -> dict[str, str]:
    """When threads, processes or coroutines win here, from this machine's cores and this
    interpreter's GIL (docs/choosing.md; ``backend="auto"`` measures each function instead)."""
    if not gil_enabled:
        computing = (f"threads: this interpreter runs without the GIL, so {cores} threads compute in "
                     "parallel, with no pickling")
    elif cores > 1:
        computing = (f"processes (up to {cores}x faster on {cores} cores); threads cannot speed up Python "
                     "code while the GIL is enabled")
    else:
        computing = "serial: one usable core, so neither processes nor threads run Python code faster"
    return {
        "python computing": computing,
        "waiting (I/O, sleeps)": f"threads ({thread_workers} by default; more if most of each call waits)",
        "C code that releases the GIL": f"threads (NumPy, hashlib, zlib on large buffers), up to {cores} at once",
        "thousands of waits at once": "coroutines: an async def task, Pool(concurrency=100) per worker",
        "calls of a few microseconds": "serial, or big batches: a dispatch costs more than the call",
        "not sure": 'backend="auto" measures the first calls and chooses (the default of conveyor.map and run)',
    }


def machine_report() -> dict[str, Any]:
    """Everything ``conveyor doctor`` reports, as plain JSON-ready data (sizes in bytes)."""
    workers, workers_from = _default_workers()
    return {
        "conveyor": conveyor.__version__,
        "python": {"version": platform.python_version(), "implementation": platform.python_implementation(),
                   "executable": sys.executable},
        "platform": platform.platform(),
        "cpu": {"logical": os.cpu_count(), "usable": _config.usable_cores(), "quota": _cpu_quota()},
        "memory": _memory(),
        "start_method": _start_method(),
        "gil": _gil(),
        "shm": _shm(),
        "default_workers": workers,
        "default_workers_from": workers_from,
        "environment": {key: os.environ[key] for key in sorted(os.environ) if key.startswith("CONVEYOR_")},
        "packages": _packages(),
        "backends": conveyor.available_backends(),
        "problems": _problems(),
        "advice": _advice(_config.usable_cores(), _gil()["enabled"], workers["thread"]),
    }


def _size(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024:
            return f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"


def _gil_text(gil: dict[str, bool]) -> str:
    if not gil["enabled"]:
        return "disabled (free-threaded build: threads run Python code in parallel)"
    if gil["free_threaded_build"]:
        return "enabled (free-threaded build, but the GIL was turned back on)"
    return "enabled (this build has no free-threading)"


def _doctor_lines(report: dict[str, Any]) -> list[tuple[str, str]]:
    cpu, memory, method, shm = report["cpu"], report["memory"], report["start_method"], report["shm"]
    workers_from = f" (from {report['default_workers_from']})" if report["default_workers_from"] else ""
    installed = [f"{name} {version}" for name, version in report["packages"].items() if version]
    missing = [name for name, version in report["packages"].items() if not version]
    return [
        ("python", f"{report['python']['version']} ({report['python']['implementation']}) "
                   f"{report['python']['executable']}"),
        ("platform", report["platform"]),
        ("cores", f"{cpu['usable']} usable of {cpu['logical']} logical"),
        ("cpu quota", "none" if cpu["quota"] is None else f"{cpu['quota']:g} cores (cgroup)"),
        ("memory", f"{_size(memory['total'])} total, {_size(memory['available'])} available"
                   + ("" if memory["limit"] is None else f", limit {_size(memory['limit'])} (cgroup)")),
        ("start method", f"{method['default']}: {method['reason']}"),
        ("start methods", ", ".join(method["available"])),
        ("default workers",
         ", ".join(f"{name} {n}" for name, n in report["default_workers"].items()) + workers_from),
        ("GIL", _gil_text(report["gil"])),
        ("/dev/shm", "absent" if shm is None else f"{_size(shm['total'])} total, {_size(shm['free'])} free"),
        ("environment", " ".join(f"{key}={value}" for key, value in report["environment"].items()) or "none"),
        ("packages", ", ".join(installed) + (f"; not installed: {', '.join(missing)}" if missing else "")),
        ("backends", ", ".join(report["backends"])),
        ("problems", "; ".join(report["problems"]) or "none"),
    ]


def command_doctor(args: argparse.Namespace) -> int:
    """``conveyor doctor``: print the facts that decide a backend and a worker count."""
    report = machine_report()
    if args.json:
        print(json.dumps(report, indent=2))
        return EXIT_OK
    print(f"conveyor {report['conveyor']}")
    lines = _doctor_lines(report)
    for label, value in lines[:-1]:
        print(f"  {label:<16} {value}")
    print("which backend wins here (docs/choosing.md):")
    for work, answer in report["advice"].items():
        print(f"  {work:<30} {answer}")
    label, value = lines[-1]  # the problems, last: what to fix, if anything
    print(f"  {label:<16} {value}")
    return EXIT_OK


def add_parser(commands: Any) -> None:
    doctor = commands.add_parser(
        "doctor", help="show cores, memory, start methods, GIL and installed extras",
        description="Show what matters before choosing a backend and a worker count.")
    doctor.add_argument("--json", action="store_true", help="print a JSON object instead of text")
    doctor.set_defaults(handler=command_doctor)
