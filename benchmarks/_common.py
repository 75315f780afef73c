"""Shared helpers for the benchmark scripts in this directory (not part of the ``conveyor`` package).

What is here:

* :class:`Contender` / :func:`run_round_robin`: time several contenders ``repeat`` times each,
  interleaved (round-robin), so a burst of noise on a shared machine hits every contender alike.
* :class:`Timing`: the samples of one contender, with median / min / max.
* :func:`format_table` / :func:`print_table`: an aligned plain-text table.
* :func:`machine_info`: what the numbers were measured on (Python, cores, load, git commit, versions).
* :func:`save_results`: the same tables as JSON and Markdown under ``benchmarks/results/`` (gitignored).

Benchmarks report, they do not assert: nothing here raises on a slow result.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

RESULTS_DIR = Path(__file__).resolve().parent / "results"


# -- timing ----------------------------------------------------------------------------------------
@dataclasses.dataclass
class Contender:
    """One thing to time.

    Args:
        name: label in the tables.
        run: the measured call; its return value is passed to ``check`` (outside the timed region).
        items: how many work items one ``run()`` processes (for items/s).
        check: optional result validator; a False result marks the contender "WRONG RESULT".
        skip: a reason not to run it at all (e.g. "not installed"); shown instead of numbers.
        note: free text for the table.
        group: contenders are compared within a group (e.g. "steady" vs "cold").
        warm: called once (untimed) before the first round, e.g. one small map on a pool.
    """

    name: str
    run: Callable[[], Any] | None
    items: int = 1
    check: Callable[[Any], bool] | None = None
    skip: str | None = None
    note: str = ""
    group: str = ""
    warm: Callable[[], Any] | None = None


@dataclasses.dataclass
class Timing:
    """The samples (seconds) of one contender, or why there are none."""

    contender: Contender
    samples: list[float] = dataclasses.field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.contender.skip is None and self.error is None and bool(self.samples)

    @property
    def median(self) -> float:
        return statistics.median(self.samples) if self.samples else float("nan")

    @property
    def best(self) -> float:
        return min(self.samples) if self.samples else float("nan")

    @property
    def worst(self) -> float:
        return max(self.samples) if self.samples else float("nan")

    @property
    def rate(self) -> float:
        """Items per second at the median time."""
        return self.contender.items / self.median if self.ok and self.median > 0 else float("nan")

    @property
    def status(self) -> str:
        return self.contender.skip or self.error or ""


def time_once(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Wall-clock seconds of one call (perf_counter), after a ``gc.collect()`` outside the timing."""
    gc.collect()
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def run_round_robin(contenders: Sequence[Contender], repeat: int, *, label: str = "",
                    log: Callable[[str], None] | None = None) -> list[Timing]:
    """Time every contender ``repeat`` times, interleaved: c1 c2 c3, c1 c2 c3, ...

    Each contender's ``warm`` runs first (untimed). A contender that raises, or fails its ``check``,
    is reported with that error and not run again (one failure does not stop the others).
    """
    timings = [Timing(c) for c in contenders]
    for timing in timings:
        contender = timing.contender
        if contender.skip is None and contender.warm is not None:
            if log is not None:
                log(f"{label} warm-up: {contender.name}")
            try:
                contender.warm()
            except Exception as exc:  # noqa: BLE001
                timing.error = f"ERROR in warm-up {type(exc).__name__}: {exc}"[:120]
    for round_no in range(1, repeat + 1):
        for timing in timings:
            contender = timing.contender
            if contender.skip is not None or timing.error is not None or contender.run is None:
                continue
            if log is not None:
                log(f"{label} round {round_no}/{repeat}: {contender.name}")
            try:
                seconds, result = time_once(contender.run)
            except Exception as exc:  # noqa: BLE001 - report it as the row's result
                timing.error = f"ERROR {type(exc).__name__}: {exc}"[:120]
                continue
            if contender.check is not None and not contender.check(result):
                timing.error = "WRONG RESULT"
                continue
            timing.samples.append(seconds)
            del result
    return timings


def calibrate(fn: Callable[[int], Any], target_seconds: float, *, start: int = 1000,
              samples: int = 7) -> tuple[int, float]:
    """Find ``n`` such that ``fn(n)`` takes about ``target_seconds``; returns (n, measured seconds).

    Grows ``n`` until one call takes >= 1/4 of the target, scales linearly, then checks the scaled
    ``n`` with the median of ``samples`` calls and corrects once more.
    """
    n = start
    while True:
        seconds, _ = time_once(lambda: fn(n))
        if seconds >= target_seconds / 4:
            break
        n *= 2
    for _ in range(2):
        n = max(1, int(n * target_seconds / seconds))
        runs = []
        for _ in range(samples):
            begin = time.perf_counter()
            fn(n)
            runs.append(time.perf_counter() - begin)
        seconds = statistics.median(runs)
    return n, seconds


# -- tables ----------------------------------------------------------------------------------------
@dataclasses.dataclass
class Table:
    """A titled table: ``columns`` are headers, ``rows`` are lists of already formatted cells."""

    title: str
    columns: list[str]
    rows: list[list[str]]
    notes: list[str] = dataclasses.field(default_factory=list)
    data: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # raw numbers for JSON
    align: str = ""  # one "l"/"r" per column; default: first (and a last "note") column left, others right

    def to_json(self) -> dict[str, Any]:
        return {"title": self.title, "columns": self.columns, "rows": self.rows, "notes": self.notes,
                "data": self.data}


def format_table(table: Table) -> str:
    """Aligned plain text, columns aligned as ``table.align`` says."""
    widths = [len(c) for c in table.columns]
    for row in table.rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    if table.align:
        left = {i for i, a in enumerate(table.align) if a == "l"}
    else:
        left = {0} | ({len(widths) - 1} if table.columns[-1].lower() == "note" else set())

    def line(cells: Sequence[str]) -> str:
        return "  ".join(cell.ljust(widths[i]) if i in left else cell.rjust(widths[i])
                         for i, cell in enumerate(cells)).rstrip()

    rule = "  ".join("-" * w for w in widths)
    parts = [table.title, "=" * len(table.title), line(table.columns), rule]
    parts += [line(row) if row else rule for row in table.rows]
    parts += [f"  {note}" for note in table.notes]
    return "\n".join(parts)


def format_markdown(table: Table) -> str:
    align = table.align or "l" + "r" * (len(table.columns) - 2) + (
        "l" if table.columns[-1].lower() == "note" else "r")
    parts = [f"### {table.title}", "", "| " + " | ".join(table.columns) + " |",
             "|" + "|".join(":---" if a == "l" else "---:" for a in align) + "|"]
    parts += ["| " + " | ".join(cell or " " for cell in row) + " |" for row in table.rows if row]
    if table.notes:
        parts.append("")
        parts += [f"- {note}" for note in table.notes]
    return "\n".join(parts)


def print_table(table: Table) -> None:
    print()
    print(format_table(table))
    sys.stdout.flush()


def fmt_seconds(value: float) -> str:
    if value != value:  # NaN
        return "-"
    return f"{value:.4f}" if value < 10 else f"{value:.2f}"


def fmt_rate(value: float) -> str:
    if value != value:
        return "-"
    return f"{value:,.0f}"


def fmt_ratio(value: float) -> str:
    if value != value:
        return "-"
    return f"{value:.2f}x" if abs(value) >= 0.1 else f"{value:.2g}x"


# -- context and output ----------------------------------------------------------------------------
def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=Path(__file__).resolve().parent, capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def package_version(name: str) -> str | None:
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover
        return None
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def machine_info(packages: Iterable[str] = ()) -> dict[str, Any]:
    """Where and when the numbers were taken."""
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    commit = _git("rev-parse", "--short", "HEAD")
    dirty = _git("status", "--porcelain", "--", "../src")
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "usable_cores": usable_cores(),
        "loadavg": None if load is None else [round(x, 2) for x in load],
        "git": None if commit is None else commit + ("+dirty-src" if dirty else ""),
        "versions": {name: package_version(name) for name in packages},
    }


def format_info(info: dict[str, Any]) -> str:
    versions = ", ".join(f"{k} {v}" if v else f"{k} (not installed)" for k, v in info["versions"].items())
    return (f"{info['date']} | {info['python']} | {info['platform']}\n"
            f"cores: {info['usable_cores']} usable of {info['cpu_count']} | load average: {info['loadavg']}"
            f" | git: {info['git']}\n"
            f"versions: {versions}")


def save_results(name: str, info: dict[str, Any], tables: Sequence[Table], extra: dict[str, Any] | None = None
                 ) -> list[Path]:
    """Write ``results/<name>-<timestamp>.{json,md}`` and ``results/<name>-latest.{json,md}``."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    payload = {"benchmark": name, "info": info, "tables": [t.to_json() for t in tables], **(extra or {})}
    text_json = json.dumps(payload, indent=2, default=str)
    text_md = "\n\n".join([f"## {name}", f"```\n{format_info(info)}\n```"] + [format_markdown(t) for t in tables])
    written = []
    for base in (f"{name}-{stamp}", f"{name}-latest"):
        for suffix, text in ((".json", text_json), (".md", text_md + "\n")):
            path = RESULTS_DIR / (base + suffix)
            path.write_text(text)
            written.append(path)
    return written
