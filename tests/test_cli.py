"""The ``conveyor`` command line, run as a user runs it: ``python -m conveyor ...`` in a subprocess."""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import queue
import re
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

import conveyor
from conveyor._core.config import default_start_method
from conveyor.cli import main
from conveyor.pool import default_workers

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "word_lengths.py"
SUMMARY = re.compile(
    r"^conveyor: (\d+) items(?: \((\d+) failed\))? in [\d.]+ s \(\d+ items/s\) on (\w+) x(\d+)$"
)

pytestmark = pytest.mark.timeout(90)


def cli(*args: str, stdin: str | None = None, cwd: Path | None = None, timeout: float = 60,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m conveyor ARGS`` in a subprocess, with text stdin, stdout and stderr.

    ``env`` is added to this process's environment (a value of ``""`` removes the variable).
    """
    environment = None if env is None else {
        **{key: value for key, value in os.environ.items() if key not in env},
        **{key: value for key, value in env.items() if value}}
    return subprocess.run([sys.executable, "-m", "conveyor", *args], input=stdin, capture_output=True,
                          text=True, timeout=timeout, cwd=cwd, env=environment)


def results(proc: subprocess.CompletedProcess[str]) -> list[Any]:
    return [json.loads(line) for line in proc.stdout.splitlines()]


def write_job(tmp_path: Path, source: str, name: str = "job.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return path


# -- conveyor run: inputs and order ----------------------------------------------------------------


def test_range_with_step_and_fixed_chunksize() -> None:
    proc = cli("run", "--range", "1:30:4", "math:sqrt", "--backend", "process", "--workers", "2",
               "--chunksize", "3", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert results(proc) == [math.sqrt(i) for i in range(1, 30, 4)]
    assert proc.stderr == ""


def test_negative_range_start_with_equals_sign() -> None:
    proc = cli("run", "--range=-3:3", "builtins:abs", "--backend", "serial")
    assert proc.returncode == 0, proc.stderr
    assert results(proc) == [3, 2, 1, 0, 1, 2]


def test_stdin_lines_are_strings_without_newline() -> None:
    proc = cli("run", "builtins:len", "--backend", "thread", "--workers", "2", stdin="a\nbb\n\nccc dd\nlast")
    assert proc.returncode == 0, proc.stderr
    assert results(proc) == [1, 2, 0, 6, 4]


def test_dash_means_stdin_and_large_input_keeps_order_on_processes() -> None:
    lines = [f"line {i} " + "x" * (i % 50) for i in range(20_000)]
    proc = cli("run", "builtins:len", "-", "--backend", "process", "--workers", "2",
               stdin="\n".join(lines) + "\n")
    assert proc.returncode == 0, proc.stderr
    assert results(proc) == [len(line) for line in lines]


def test_input_file_and_output_file(tmp_path: Path) -> None:
    source = tmp_path / "in.txt"
    source.write_text("one two\n\nthree four five\n")
    target = tmp_path / "out.jsonl"
    proc = cli("run", f"{EXAMPLE}:count_words", str(source), "-o", str(target), "--backend", "process")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert target.read_text() == "2\n0\n3\n"


def test_a_mistake_on_the_command_line_leaves_an_existing_output_file_alone(tmp_path: Path) -> None:
    target = tmp_path / "results.jsonl"
    target.write_text("precious\n")
    proc = cli("run", "math:sqrt", "--range", "0:5", "-o", str(target), "--backend", "bogus")
    assert proc.returncode == 2
    assert "unknown backend 'bogus'" in proc.stderr
    assert target.read_text() == "precious\n"


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("to", ["-o", "stdout"])
def test_a_failed_write_is_one_error_line_and_exit_1(to: str) -> None:
    command = [sys.executable, "-m", "conveyor", "run", "--range", "0:100000", "operator:neg", "--backend",
               "thread", "--quiet"]
    with open("/dev/full", "w") as full:
        proc = subprocess.run(command + (["-o", "/dev/full"] if to == "-o" else []), stdout=full,
                              stderr=subprocess.PIPE, text=True, timeout=60)
    assert proc.returncode == 1
    name = "/dev/full" if to == "-o" else "stdout"
    assert proc.stderr == f"conveyor: error: cannot write {name}: No space left on device\n"


def test_values_json_cannot_hold_are_written_as_json(tmp_path: Path) -> None:
    job = write_job(tmp_path, """
        def weird(x):
            if x == "fail":
                raise ValueError(x)
            value = float(x)
            return [value, {"v": value}, (value, 1)] if x == "-inf" else value
    """)
    proc = cli("run", f"{job}:weird", "--backend", "serial", "--keep-going", "--quiet",
               stdin="nan\ninf\n-inf\n1.5\nfail\n")
    assert proc.returncode == 1

    def strict(constant: str) -> None:
        raise AssertionError(f"not JSON: {constant}")

    rows = [json.loads(line, parse_constant=strict) for line in proc.stdout.splitlines()]
    assert rows == ["nan", "inf", ["-inf", {"v": "-inf"}, ["-inf", 1]], 1.5,
                    {"error": "fail", "type": "ValueError", "input": "fail"}]


def test_keep_going_with_a_nan_input_writes_json() -> None:
    proc = cli("run", "--json", "builtins:len", "--backend", "serial", "--keep-going", "--quiet",
               stdin="NaN\n")
    assert proc.returncode == 1
    assert json.loads(proc.stdout, parse_constant=lambda constant: pytest.fail(constant)) == {
        "error": "object of type 'float' has no len()", "type": "TypeError", "input": "nan"}


def test_json_inputs_are_parsed() -> None:
    stdin = '{"a": 1}\n[1, 2]\n"x"\n3.5\nnull\n'
    proc = cli("run", "--json", "builtins:repr", "--backend", "thread", stdin=stdin)
    assert proc.returncode == 0, proc.stderr
    assert results(proc) == ["{'a': 1}", "[1, 2]", "'x'", "3.5", "None"]


def test_invalid_json_line_is_an_input_error() -> None:
    proc = cli("run", "--json", "builtins:repr", "--backend", "serial", stdin='1\n2\n{oops\n4\n')
    assert proc.returncode == 1
    assert "input line 3 is not valid JSON" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_non_json_results_are_written_as_strings_and_dotted_attributes_resolve() -> None:
    proc = cli("run", "--range", "1:3", "datetime:date.fromordinal", "--backend", "process", "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    assert results(proc) == ["0001-01-01", "0001-01-02"]


def test_stdin_is_streamed_not_read_to_the_end_first() -> None:
    command = [sys.executable, "-m", "conveyor", "run", "--json", "operator:neg", "--backend", "thread",
               "--workers", "1", "--chunksize", "1", "--quiet"]
    lines: queue.Queue[str] = queue.Queue()
    with subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as proc:
        reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout])  # type: ignore
        reader.start()
        try:
            proc.stdin.write("".join(f"{i}\n" for i in range(1, 41)))  # type: ignore[union-attr]
            proc.stdin.flush()  # type: ignore[union-attr]
            first = lines.get(timeout=30)  # stdin is still open: the first result came out anyway
        finally:
            proc.stdin.close()  # type: ignore[union-attr]
            reader.join(timeout=30)
    assert first == "-1\n"
    assert proc.returncode == 0
    assert [json.loads(first)] + [json.loads(lines.get_nowait()) for _ in range(lines.qsize())] == \
        [-i for i in range(1, 41)]


def test_failure_on_live_stdin_ends_the_command_while_stdin_stays_open(tmp_path: Path) -> None:
    job = write_job(tmp_path, INVERSE)
    command = [sys.executable, "-m", "conveyor", "run", "--json", f"{job}:inverse", "--backend", "thread"]
    with subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as proc:
        try:
            proc.stdin.write("2\n0\n")  # type: ignore[union-attr]
            proc.stdin.flush()  # type: ignore[union-attr]
            assert proc.wait(timeout=30) == 1  # the thread reading stdin does not keep it alive
        finally:
            proc.stdin.close()  # type: ignore[union-attr]
        stdout, stderr = proc.stdout.read(), proc.stderr.read()  # type: ignore[union-attr]
    assert stdout == "0.5\n"
    assert stderr.startswith("conveyor: error: item #1 (input 0) failed: ZeroDivisionError")


def test_invalid_json_after_good_lines_on_stdin_writes_their_results_first() -> None:
    proc = cli("run", "--json", "operator:neg", "--backend", "process", "--workers", "2", "--quiet",
               stdin="1\n2\n{oops\n4\n")
    assert proc.returncode == 1
    assert results(proc) == [-1, -2]
    assert proc.stderr == "conveyor: error: input line 3 is not valid JSON: Expecting property name " \
                          "enclosed in double quotes: line 1 column 2 (char 1)\n"


def test_crlf_lines_are_the_same_from_a_file_and_from_stdin(tmp_path: Path) -> None:
    data = b"ab\r\nc\n\r\nx\ry\nlast\r\n"
    source = tmp_path / "windows.txt"
    source.write_bytes(data)
    from_file = cli("run", "builtins:repr", str(source), "--backend", "serial", "--quiet")
    from_stdin = subprocess.run([sys.executable, "-m", "conveyor", "run", "builtins:repr", "--backend",
                                 "serial", "--quiet"], input=data, capture_output=True, timeout=60)
    assert from_file.returncode == from_stdin.returncode == 0, (from_file.stderr, from_stdin.stderr)
    assert results(from_file) == ["'ab'", "'c'", "''", "'x\\ry'", "'last'"]
    assert from_stdin.stdout.decode() == from_file.stdout


def test_range_too_long_for_len_is_lazy(tmp_path: Path) -> None:
    job = write_job(tmp_path, """
        def stop_at_5(x):
            if x == 5:
                raise ValueError("enough")
            return x
    """)
    proc = cli("run", "--range", "0:100000000000000000000", f"{job}:stop_at_5", "--backend", "thread",
               "--workers", "2", "--progress")
    assert proc.returncode == 1, proc.stderr
    assert results(proc) == [0, 1, 2, 3, 4]
    assert "Traceback" not in proc.stderr
    assert proc.stderr.endswith("conveyor: error: item #5 (input 5) failed: ValueError: enough. "
                                "Use --keep-going to record failures and continue\n")


def test_range_too_long_for_len_stops_quietly_when_the_reader_does() -> None:
    command = [sys.executable, "-m", "conveyor", "run", "--range", "0:100000000000000000000", "operator:neg",
               "--backend", "thread", "--workers", "2"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        first = [proc.stdout.readline() for _ in range(3)]  # type: ignore[union-attr]
        proc.stdout.close()  # type: ignore[union-attr] # as ``| head -3`` does
        assert proc.wait(timeout=30) == 1
        stderr = proc.stderr.read()  # type: ignore[union-attr]
    assert first == ["0\n", "-1\n", "-2\n"]
    assert stderr == ""


def test_inputs_too_long_for_len_have_an_unknown_length() -> None:
    from conveyor.cli.run import _Remembering

    with pytest.raises(TypeError):  # what Pool takes for "no length" (not an OverflowError)
        len(_Remembering(range(10**20)))


# -- conveyor run: functions from a file -----------------------------------------------------------
def test_function_from_a_file_runs_in_worker_processes(tmp_path: Path) -> None:
    job = write_job(tmp_path, """
        import os

        SCALE = 3

        def _helper(x):
            return SCALE * x

        def work(x):
            return [_helper(x), os.getpid()]
    """)
    command = [sys.executable, "-m", "conveyor", "run", "--range", "0:50", f"{job}:work",
               "--backend", "process", "--workers", "2"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    rows = [json.loads(line) for line in stdout.splitlines()]
    assert [value for value, _ in rows] == [3 * i for i in range(50)]
    assert proc.pid not in {pid for _, pid in rows}  # ran in workers, not in the command's process


@pytest.mark.parametrize("start_method", ["spawn", "forkserver"])
def test_file_named_like_a_stdlib_module_with_sibling_import(tmp_path: Path, start_method: str) -> None:
    (tmp_path / "jobs").mkdir()
    write_job(tmp_path, "def double(x):\n    return 2 * x\n", name="jobs/helpers_for_cli_test.py")
    job = write_job(tmp_path, """
        from helpers_for_cli_test import double

        def work(line):
            return double(int(line))
    """, name="jobs/json.py")  # must not shadow the real json module used to write the output
    proc = cli("run", "jobs/json.py:work", "--backend", "process", "--workers", "2", "--start-method",
               start_method, stdin="1\n2\n3\n", cwd=tmp_path)
    assert job.exists()
    assert proc.returncode == 0, proc.stderr
    assert results(proc) == [2, 4, 6]


def test_example_as_a_cli_target(tmp_path: Path) -> None:
    text = tmp_path / "text.txt"
    text.write_text("the quick brown fox\n\njumps\n")
    proc = cli("run", f"{EXAMPLE}:count_words", str(text))
    assert proc.returncode == 0, proc.stderr
    assert results(proc) == [4, 0, 1]


def test_example_as_a_script() -> None:
    proc = subprocess.run([sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert re.match(r"50000 lines, \d+ words, longest line: 30 words\n\d+ worker processes, [\d.]+ s\n$",
                    proc.stdout), proc.stdout


# -- conveyor run: failures ------------------------------------------------------------------------
INVERSE = """
    def inverse(x):
        return 1 / x
"""


def test_first_failure_stops_with_one_line_error(tmp_path: Path) -> None:
    job = write_job(tmp_path, INVERSE)
    proc = cli("run", "--range=-2:3", f"{job}:inverse", "--backend", "process", "--workers", "2",
               "--chunksize", "1")
    assert proc.returncode == 1
    assert results(proc) == [-0.5, -1.0]  # the results before the failure, in order
    error_lines = proc.stderr.strip().splitlines()
    assert error_lines == [
        "conveyor: error: item #2 (input 0) failed: ZeroDivisionError: division by zero. "
        "Use --keep-going to record failures and continue"
    ]


def test_keep_going_writes_an_error_line_and_continues(tmp_path: Path) -> None:
    job = write_job(tmp_path, INVERSE)
    proc = cli("run", "--range=-2:3", f"{job}:inverse", "--backend", "process", "--workers", "2",
               "--keep-going")
    assert proc.returncode == 1  # like make -k: everything ran, but not everything succeeded
    assert results(proc) == [
        -0.5, -1.0, {"error": "division by zero", "type": "ZeroDivisionError", "input": 0}, 1.0, 0.5,
    ]
    match = SUMMARY.match(proc.stderr.strip())
    assert match and match.groups() == ("5", "1", "process", "2"), proc.stderr


def test_keep_going_with_json_inputs_echoes_the_parsed_input() -> None:
    proc = cli("run", "--json", "math:sqrt", "--backend", "thread", "--keep-going", "--quiet",
               stdin='4\n"nine"\n9\n')
    assert proc.returncode == 1
    first, error, last = results(proc)
    assert (first, last) == (2.0, 3.0)
    assert error["type"] == "TypeError" and error["input"] == "nine" and "str" in error["error"]


def test_task_timeout_fails_the_slow_item(tmp_path: Path) -> None:
    job = write_job(tmp_path, """
        import time

        def nap(seconds):
            time.sleep(seconds)
            return seconds
    """)
    proc = cli("run", "--json", f"{job}:nap", "--backend", "process", "--workers", "2",
               "--task-timeout", "2", "--keep-going", stdin="0\n30\n0.1\n")
    assert proc.returncode == 1, proc.stderr
    rows = results(proc)
    assert rows[0] == 0 and rows[2] == 0.1
    assert rows[1]["type"] == "TaskTimeoutError" and rows[1]["input"] == 30


@pytest.mark.parametrize("retries, expected", [("1", [0, 10, 20]), ("0", None)])
def test_retries_are_passed_to_the_pool(tmp_path: Path, retries: str, expected: list[int] | None) -> None:
    job = write_job(tmp_path, """
        seen = set()

        def flaky(x):
            if x not in seen:  # fails the first attempt of every input
                seen.add(x)
                raise RuntimeError(f"first try of {x}")
            return 10 * x
    """)
    proc = cli("run", "--range", "0:3", f"{job}:flaky", "--backend", "serial", "--retries", retries)
    if expected is None:
        assert proc.returncode == 1
        assert "RuntimeError: first try of 0" in proc.stderr
    else:
        assert proc.returncode == 0, proc.stderr
        assert results(proc) == expected


# -- conveyor run: usage errors exit 2 without a traceback -----------------------------------------
@pytest.mark.parametrize("args, message", [
    (["run", "--range", "0:3", "math.sqrt"], "expected MODULE:FUNCTION"),
    (["run", "--range", "0:3", ":sqrt"], "expected MODULE:FUNCTION"),
    (["run", "--range", "0:3", "math:"], "expected MODULE:FUNCTION"),
    (["run", "--range", "0:3", "no_such_module_for_cli:f"], "cannot import module 'no_such_module_for_cli'"),
    (["run", "--range", "0:3", "math:no_such_function"], "'math' has no attribute 'no_such_function'"),
    (["run", "--range", "0:3", "math:pi"], "'pi' is not callable"),
    (["run", "--range", "0:3", "missing_dir/job.py:f"], "file not found: missing_dir/job.py"),
    (["run", "--range", "5", "math:sqrt"], "expected A:B or A:B:STEP"),
    (["run", "--range", "a:b", "math:sqrt"], "expected A:B or A:B:STEP"),
    (["run", "--range", "0:5:0", "math:sqrt"], "expected A:B or A:B:STEP"),
    (["run", "--range", "0:3", "math:sqrt", "input.txt"], "either INPUT or --range"),
    (["run", "--range", "0:3", "--json", "math:sqrt"], "not allowed with argument"),
    (["run", "math:sqrt", "no_such_input_file.txt"], "cannot read no_such_input_file.txt"),
    (["run", "--range", "0:3", "math:sqrt", "--workers", "0"], "expected a positive integer"),
    (["run", "--range", "0:3", "math:sqrt", "--task-timeout", "-1"], "expected a positive number"),
    (["run", "--range", "0:3", "math:sqrt", "--backend", "nope"], "unknown backend 'nope'"),
    (["run", "--range", "0:3", "math:sqrt", "--start-method", "nope"],
     "start method 'nope' is not available"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    ([], "the following arguments are required: COMMAND"),
])
def test_usage_errors_exit_2_with_a_clear_message(args: list[str], message: str) -> None:
    proc = cli(*args)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_a_file_that_fails_to_load_is_a_usage_error(tmp_path: Path) -> None:
    job = write_job(tmp_path, "raise RuntimeError('broken at import')\n\ndef f(x):\n    return x\n")
    proc = cli("run", "--range", "0:3", f"{job}:f")
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"conveyor: error: cannot load {job}: RuntimeError: broken at import"


# -- conveyor run: summary and progress ------------------------------------------------------------
def test_summary_line_on_stderr() -> None:
    proc = cli("run", "--range", "0:1000", "operator:neg", "--backend", "thread", "--workers", "3")
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == 1000
    match = SUMMARY.match(proc.stderr.strip())
    assert match and match.groups() == ("1000", None, "thread", "3"), proc.stderr


def test_without_a_backend_run_measures_and_says_what_it_chose() -> None:
    proc = cli("run", "--range", "0:300", "operator:neg", env={"CONVEYOR_BACKEND": ""})
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == 300
    summary = proc.stderr.strip()
    assert re.match(r"^conveyor: 300 items in [\d.]+ s \(\d+ items/s\) on auto: serial \(each call takes "
                    r"about [\d.]+ µs, less than a dispatch", summary), summary


def test_quiet_suppresses_the_summary() -> None:
    proc = cli("run", "--range", "0:10", "operator:neg", "--backend", "serial", "-q")
    assert proc.returncode == 0
    assert proc.stderr == ""
    assert results(proc) == [-i for i in range(10)]


def test_progress_bar_goes_to_stderr_with_the_total() -> None:
    proc = cli("run", "--range", "0:37", "operator:neg", "--backend", "thread", "--progress", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "37/37" in proc.stderr
    assert results(proc) == [-i for i in range(37)]  # the bar never mixes with the results


def test_progress_bar_is_finished_before_a_failure_is_reported(tmp_path: Path) -> None:
    job = write_job(tmp_path, INVERSE)
    proc = cli("run", "--range=-3:20", f"{job}:inverse", "--backend", "thread", "--workers", "2",
               "--progress")
    assert proc.returncode == 1
    message = ("conveyor: error: item #3 (input 0) failed: ZeroDivisionError: division by zero. "
               "Use --keep-going to record failures and continue\n")
    assert proc.stderr.endswith("\n" + message), proc.stderr  # on a line of its own, the bar not redrawn
    assert "inverse:" in proc.stderr[: -len(message)]


# -- main() in-process -----------------------------------------------------------------------------
def test_main_in_process_returns_exit_code_and_writes_stdout(capsys: pytest.CaptureFixture[str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))  # the CLI puts the current directory on sys.path
    assert main(["run", "--backend", "serial", "--range", "0:5", "operator:neg"]) == 0
    out, err = capsys.readouterr()
    assert out == "0\n-1\n-2\n-3\n-4\n"
    match = SUMMARY.match(err.strip())
    assert match and match.groups() == ("5", None, "serial", "1"), err


def test_main_in_process_usage_error_returns_2(capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))
    assert main(["run", "--backend", "serial", "--range", "0:5", "math:nope"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "conveyor: error: 'math' has no attribute 'nope'\n"


def test_main_in_process_help_and_version_return_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith(f"conveyor {conveyor.__version__} ")
    assert main(["run", "--help"]) == 0
    assert "MODULE_OR_FILE:FUNCTION" in capsys.readouterr().out


# -- conveyor doctor, --version, --help ------------------------------------------------------------
def test_doctor_text() -> None:
    proc = cli("doctor")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.startswith(f"conveyor {conveyor.__version__}\n")
    assert f"{len(os.sched_getaffinity(0))} usable of {os.cpu_count()} logical" in out
    assert re.search(rf"start method\s+{default_start_method()}: ", out)
    assert re.search(r"GIL\s+(enabled|disabled)", out)
    assert f"tqdm {importlib.metadata.version('tqdm')}" in out
    assert re.search(r"backends\s+" + ", ".join(conveyor.available_backends()), out)
    assert "which backend wins here" in out
    assert re.search(r"python computing\s+(processes|threads|serial)", out)
    assert re.search(r"waiting \(I/O, sleeps\)\s+threads", out)


def test_doctor_json() -> None:
    proc = cli("doctor", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert {"conveyor", "python", "platform", "cpu", "memory", "start_method", "gil", "shm", "packages",
            "backends"} <= set(report)
    assert report["python"]["version"] == ".".join(map(str, sys.version_info[:3]))
    assert report["cpu"] == {"logical": os.cpu_count(), "usable": len(os.sched_getaffinity(0)),
                             "quota": report["cpu"]["quota"]}
    assert 0 < report["memory"]["available"] <= report["memory"]["total"]
    assert report["start_method"]["default"] == default_start_method()
    assert report["start_method"]["default"] in report["start_method"]["available"]
    assert report["start_method"]["reason"]
    assert isinstance(report["gil"]["enabled"], bool)
    assert set(report["packages"]) == {"numpy", "dask", "distributed", "ray", "tqdm", "cloudpickle",
                                       "psutil"}
    assert report["packages"]["cloudpickle"] == importlib.metadata.version("cloudpickle")
    assert report["backends"] == conveyor.available_backends()
    advice = report["advice"]
    assert advice["python computing"].startswith("processes" if len(os.sched_getaffinity(0)) > 1 else "serial")
    assert advice["thousands of waits at once"].startswith("coroutines")


@pytest.mark.parametrize("value", ["3", ""])
def test_doctor_reports_the_workers_that_run_uses(value: str) -> None:
    env = {"CONVEYOR_WORKERS": value}
    report = json.loads(cli("doctor", "--json", env=env).stdout)
    text = cli("doctor", env=env).stdout
    if value:
        assert report["default_workers"] == {"process": 3, "thread": 3}
        assert report["default_workers_from"] == "CONVEYOR_WORKERS"
        assert re.search(r"default workers\s+process 3, thread 3 \(from CONVEYOR_WORKERS\)\n", text)
        run = cli("run", "--range", "0:2", "operator:neg", "--backend", "thread", env=env)
        assert SUMMARY.match(run.stderr.strip()).groups()[3] == "3"  # type: ignore[union-attr]
    else:
        assert report["default_workers"]["process"] == default_workers("process")
        assert report["default_workers_from"] is None
        assert re.search(r"default workers\s+process \d+, thread \d+\n", text)


@pytest.mark.parametrize("value", ["abc", "0", "-2", "2.5"])
def test_invalid_conveyor_workers_is_a_clear_error_where_it_is_used(value: str) -> None:
    env = {"CONVEYOR_WORKERS": value}
    message = f"environment variable CONVEYOR_WORKERS must be a positive integer, got {value!r}"
    assert cli("--help", env=env).returncode == 0
    doctor = cli("doctor", env=env)
    assert doctor.returncode == 0, doctor.stderr
    assert re.search(rf"problems\s+{re.escape(message)}\n", doctor.stdout)
    assert json.loads(cli("doctor", "--json", env=env).stdout)["problems"] == [message]
    run = cli("run", "--range", "0:3", "operator:neg", "--backend", "thread", env=env)
    assert (run.returncode, run.stderr, run.stdout) == (2, f"conveyor: error: {message}\n", "")
    given = cli("run", "--range", "0:3", "operator:neg", "--backend", "thread", "--workers", "2", env=env)
    assert given.returncode == 0, given.stderr  # not used: not an error
    assert results(given) == [0, -1, -2]


def test_a_bad_backend_or_start_method_from_the_environment_is_named() -> None:
    env = {"CONVEYOR_BACKEND": "bogus", "CONVEYOR_START_METHOD": "nope"}
    run = cli("run", "--range", "0:3", "operator:neg", env=env)
    assert run.returncode == 2
    assert run.stderr.startswith("conveyor: error: unknown backend 'bogus'")
    assert run.stderr.endswith(" (from the environment variable CONVEYOR_BACKEND)\n")
    problems = json.loads(cli("doctor", "--json", env=env).stdout)["problems"]
    assert [problem.split(" names ")[0] for problem in problems] == [
        "environment variable CONVEYOR_BACKEND", "environment variable CONVEYOR_START_METHOD"]
    clean = cli("doctor", env={"CONVEYOR_BACKEND": "", "CONVEYOR_START_METHOD": "", "CONVEYOR_WORKERS": ""})
    assert re.search(r"\n  problems\s+none\n$", clean.stdout)


def test_version() -> None:
    proc = cli("--version")
    assert proc.returncode == 0
    assert proc.stdout.startswith(f"conveyor {conveyor.__version__} (Python ")


def test_help_lists_the_commands() -> None:
    proc = cli("--help")
    assert proc.returncode == 0
    assert "run" in proc.stdout and "doctor" in proc.stdout
