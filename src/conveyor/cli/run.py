"""``conveyor run``: apply a function to many inputs in parallel, results in input order as JSON lines.

Inputs are read lazily (a line, a JSON value or an integer of ``--range`` at a time), so the run holds
O(workers x chunk) items however long the input is; see the package docstring for examples.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.machinery
import importlib.metadata
import importlib.util
import json
import math
import os
import re
import sys
import threading
import time
from collections import deque
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import ModuleType
from typing import IO, Any, Callable, Iterable, Iterator

import conveyor
from conveyor._core.errors import ShutDown
from conveyor._core.stream import Feed
from conveyor.cli.common import EXIT_FAILED, EXIT_OK, OutputError, UsageError, error


class InputError(Exception):
    """An input could not be read (for example a line that is not JSON): exit code 1."""


class ItemFailed(Exception):
    """The first failing item when ``--keep-going`` is off: stops the run, exit code 1."""

    def __init__(self, index: int, item: Any, error: BaseException) -> None:
        super().__init__(f"item #{index} (input {_short(repr(item))}) failed: {_describe(error)}. "
                         "Use --keep-going to record failures and continue")


# -- the target function ---------------------------------------------------------------------------
def load_function(spec: str) -> Callable[..., Any]:
    """Resolve ``MODULE:FUNCTION`` or ``FILE.py:FUNCTION`` to a callable that workers can run.

    Args:
        spec: an importable module (``json:dumps``, ``pkg.mod:Class.method``) or a path to a Python
            file (``examples/job.py:work``), a colon, then an attribute path.

    Raises:
        UsageError: the spec is malformed, the module or file cannot be loaded, the attribute is
            missing or not callable.
    """
    target, colon, attribute = spec.rpartition(":")
    if not colon or not target or not attribute:
        raise UsageError(f"bad target {spec!r}: expected MODULE:FUNCTION or FILE.py:FUNCTION "
                         "(for example json:dumps or examples/word_lengths.py:count_words)")
    module = _load_file(target) if _looks_like_path(target) else _import_module(target)
    function = _attribute(module, target, attribute)
    if not callable(function):
        raise UsageError(f"{spec}: {attribute!r} is not callable (it is a {type(function).__name__})")
    return function


def _looks_like_path(target: str) -> bool:
    return target.endswith(".py") or "/" in target or os.sep in target


def _import_module(name: str) -> ModuleType:
    """Import a module; the current directory is searched first, as ``python -m`` does."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(name)
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - any failure of the user's import is reported
        raise UsageError(f"cannot import module {name!r}: {_describe(exc)}") from exc


def _load_file(target: str) -> ModuleType:
    """Load a Python file as a module whose functions travel to workers by value.

    The module gets a private name (so a ``json.py`` cannot shadow the real ``json``), which worker
    processes cannot import; cloudpickle is told to send its functions by value instead. The file's
    directory goes first on ``sys.path``, as with ``python FILE``, so sibling imports work here and in
    workers started later (spawn and forkserver copy ``sys.path``).
    """
    path = Path(target).expanduser().resolve()
    if not path.is_file():
        raise UsageError(f"file not found: {target}")
    name = "_conveyor_run_" + re.sub(r"\W", "_", path.stem)
    loader = importlib.machinery.SourceFileLoader(name, str(path))
    spec = importlib.util.spec_from_loader(name, loader)
    if spec is None:  # not for a source file's loader; said plainly should that ever change
        raise UsageError(f"cannot load {target} as a module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    try:
        loader.exec_module(module)
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - any failure of the user's file is reported
        del sys.modules[name]
        raise UsageError(f"cannot load {target}: {_describe(exc)}") from exc
    import cloudpickle

    cloudpickle.register_pickle_by_value(module)
    return module


def _attribute(module: ModuleType, target: str, attribute: str) -> Any:
    value: Any = module
    for part in attribute.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise UsageError(f"{target!r} has no attribute {attribute!r}") from None
    return value


# -- inputs ----------------------------------------------------------------------------------------
def parse_range(text: str) -> range:
    """``A:B`` or ``A:B:STEP`` (integers, as for ``range``) to a range; for argparse."""
    parts = text.split(":")
    try:
        if len(parts) not in (2, 3):
            raise ValueError
        bounds = range(*(int(part) for part in parts))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected A:B or A:B:STEP with integers and STEP not 0, got {text!r} (use 0:N for 0..N-1)"
        ) from None
    return bounds


def _lines(stream: IO[str]) -> Iterator[str]:
    """Lines without their end, a newline or (Windows) a carriage return and a newline, whether they
    come from a file or from stdin."""
    for line in stream:
        if line.endswith("\n"):
            line = line[:-2] if line.endswith("\r\n") else line[:-1]
        yield line


def _json_values(lines: Iterable[str]) -> Iterator[Any]:
    for number, line in enumerate(lines, 1):
        try:
            yield json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"input line {number} is not valid JSON: {exc}") from None


def _open_inputs(args: argparse.Namespace, files: ExitStack) -> Iterable[Any]:
    """The inputs, lazily: a range, or the lines (as str or parsed JSON) of a file or stdin."""
    if args.range is not None:
        if args.input is not None:
            raise UsageError("give either INPUT or --range, not both")
        return args.range
    if args.input in (None, "-"):
        stream: IO[str] = sys.stdin
    else:
        try:
            # newline="\n", as sys.stdin has: lines end at a newline only, untranslated (see _lines)
            stream = files.enter_context(open(args.input, encoding="utf-8", newline="\n"))
        except OSError as exc:
            raise UsageError(f"cannot read {args.input}: {exc.strerror or exc}") from exc
    lines = _lines(stream)
    return _json_values(lines) if args.json else lines


class _Remembering:
    """Passes inputs on while keeping those not yet answered, so a failure can name its input.

    The pool pulls at most O(workers x chunk) inputs ahead of the results, so this stays small.
    """

    def __init__(self, items: Iterable[Any]) -> None:
        self._items = items
        self.pending: deque[Any] = deque()

    def __len__(self) -> int:
        try:
            return len(self._items)  # type: ignore[arg-type] # TypeError (no length) is what Pool expects
        except OverflowError:  # range(10**20) iterates fine but is too long for len(): length unknown
            raise TypeError("too many inputs for len()") from None

    def __iter__(self) -> Iterator[Any]:
        iterator = iter(self._items)
        while True:
            try:
                item = next(iterator)
            except StopIteration:
                return
            except InputError:
                raise
            except Exception as exc:  # noqa: BLE001 - a read error is not the failure of a task
                raise InputError(f"cannot read input: {_describe(exc)}") from exc
            self.pending.append(item)
            yield item


STDIN_READ_AHEAD = 16384
"""Inputs read from stdin ahead of the workers: enough for full batches of tiny tasks, and a bound on
memory when stdin is faster than the work."""


class _StdinReader:
    """Reads stdin's inputs in a thread of its own into a :class:`Feed` that the pool's stream polls.

    Given a plain iterator, the stream would block in ``next()`` on a live stdin (``tail -f log |
    conveyor run ...``) while finished results wait, so each result would come out only when the next
    line arrives. The thread is a daemon: a stdin that never closes must not keep the command alive
    once it is done; ``stop()`` makes it end at its next input (or at once, if blocked on a full feed).
    """

    def __init__(self, inputs: Iterable[Any], read_ahead: int) -> None:
        self.feed = Feed(read_ahead)
        self.error: BaseException | None = None
        self._inputs = inputs
        self._thread = threading.Thread(target=self._read, name="conveyor-stdin", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.feed.close()

    def _read(self) -> None:
        try:
            for item in self._inputs:
                self.feed.put(item)
        except ShutDown:
            pass  # stopped: nobody takes more inputs
        except BaseException as exc:  # noqa: BLE001 - raised by the consumer after the inputs before it
            self.error = exc
        finally:
            self.feed.end()


# -- output ----------------------------------------------------------------------------------------
def _to_json(value: Any) -> str:
    """One JSON line; values JSON cannot hold become their ``str`` (or ``repr`` as a last resort).

    NaN and infinities become the strings ``"nan"``, ``"inf"`` and ``"-inf"``: Python would write bare
    ``NaN``, which is not JSON, and the next program in the pipe (``jq``, a strict parser) would fail.
    """
    try:
        return json.dumps(value, default=str, allow_nan=False)
    except (TypeError, ValueError):  # non-finite floats, non-string dict keys, circular references
        pass
    try:
        return json.dumps(_finite(value), default=str, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        return json.dumps(repr(value))


def _finite(value: Any) -> Any:
    """``value`` with its non-finite floats, also inside lists, tuples and dict values, as strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_finite(element) for element in value]
    if isinstance(value, dict):
        return {key: _finite(element) for key, element in value.items()}
    return value


def _error_record(item: Any, error: BaseException) -> dict[str, Any]:
    return {"error": str(error), "type": type(error).__name__, "input": item}


def _describe(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    return " ".join(text.split())  # one line, whatever the message


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Output:
    """Where the results go: stdout, or a file opened only when the work starts.

    Opening a file with "w" empties it, so a mistake on the command line found after the opening would
    wipe the results of an earlier run. A failed write (a full disk) becomes an :class:`OutputError`
    with one clear line; a closed pipe on stdout (``| head``) stays a BrokenPipeError, which ends the
    command quietly.
    """

    def __init__(self, path: str | None) -> None:
        self._path = None if path in (None, "-") else path
        self._file: IO[str] | None = None

    def open(self) -> None:
        if self._path is None:
            self._file = sys.stdout
            return
        try:
            self._file = open(self._path, "w", encoding="utf-8")  # noqa: SIM115 - closed by close()
        except OSError as exc:
            raise UsageError(f"cannot write {self._path}: {exc.strerror or exc}") from exc

    def write(self, line: str, flush: bool) -> None:
        assert self._file is not None
        with self._errors():
            self._file.write(line)
            if flush:
                self._file.flush()

    def close(self) -> None:
        """Flush (stdout) or close (a file); safe to call again, and before ``open``."""
        file, self._file = self._file, None
        if file is not None:
            with self._errors():
                if file is sys.stdout:
                    file.flush()
                else:
                    file.close()

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise OutputError(f"cannot write {self._path or 'stdout'}: {exc.strerror or exc}") from exc


# -- conveyor run ----------------------------------------------------------------------------------
ENVIRONMENT_OPTIONS = (("backend", "CONVEYOR_BACKEND"), ("start_method", "CONVEYOR_START_METHOD"))


def _make_pool(args: argparse.Namespace) -> conveyor.Pool:
    try:
        from conveyor._core.config import one_shot_backend

        return conveyor.Pool(args.workers, backend=args.backend or one_shot_backend(),
                             task_timeout=args.task_timeout, retries=args.retries, start_method=args.start_method)
    except (ValueError, TypeError, conveyor.BackendUnavailableError) as exc:
        raise UsageError(str(exc) + _from_environment(args, str(exc))) from exc


def _from_environment(args: argparse.Namespace, message: str) -> str:
    """Where a bad value named in ``message`` came from, when no option gave it: its variable."""
    for option, variable in ENVIRONMENT_OPTIONS:
        value = os.environ.get(variable)
        if getattr(args, option) is None and value and repr(value) in message:
            return f" (from the environment variable {variable})"
    return ""


def _stdin_reader(inputs: _Remembering, args: argparse.Namespace) -> _StdinReader | None:
    """A reader thread when the inputs come from stdin, which may be a live stream; else None."""
    if args.range is not None or args.input not in (None, "-"):
        return None
    return _StdinReader(inputs, max(STDIN_READ_AHEAD, 2 * (args.chunksize or 0)))


def _write_results(pool: conveyor.Pool, fn: Callable[..., Any], items: Iterable[Any],
                   args: argparse.Namespace, out: _Output) -> tuple[int, int]:
    """Write one JSON line per input, in input order; returns (items, failed items).

    The results (and their progress bar) are closed before this returns or raises, so an error
    message is printed on a line of its own, after a finished bar that is not redrawn.
    """
    inputs = _Remembering(items)
    reader = _stdin_reader(inputs, args)
    source = inputs if reader is None else reader.feed
    results = pool.imap(fn, source, chunksize=args.chunksize, progress=args.progress)
    try:
        if reader is not None:
            reader.start()
        return _write_lines(results, inputs, reader, args, out, flush=reader is not None)  # live: no buffer
    finally:
        results.close()
        if reader is not None:
            reader.stop()


def _write_lines(results: Iterator[Any], inputs: _Remembering, reader: _StdinReader | None,
                 args: argparse.Namespace, out: _Output, flush: bool) -> tuple[int, int]:
    done = failed = 0
    while True:
        try:
            line = _to_json(next(results))
        except StopIteration:
            if reader is not None and reader.error is not None:
                raise reader.error from None  # after the results of the inputs before it
            return done, failed
        except (InputError, conveyor.BrokenPoolError):
            raise
        except Exception as exc:  # noqa: BLE001 - the failure of one task, raised at its position
            item = inputs.pending.popleft()
            if not args.keep_going:
                raise ItemFailed(done, item, exc) from exc
            failed += 1
            line = _to_json(_error_record(item, exc))
        else:
            inputs.pending.popleft()
        out.write(line + "\n", flush)
        done += 1


def _summary(done: int, failed: int, seconds: float, pool: conveyor.Pool) -> str:
    count = f"{done} items" + (f" ({failed} failed)" if failed else "")
    rate = done / seconds if seconds > 0 else float("inf")
    where = f"{pool.backend_name} x{pool.workers}"
    decisions = getattr(pool.statistics().backend_statistics, "decisions", ())
    if decisions:  # backend="auto": what it chose, and why
        _, chosen, reason = decisions[-1]
        where = f"auto: {chosen} ({reason})"
    return f"conveyor: {count} in {seconds:.2f} s ({rate:.0f} items/s) on {where}"


def command_run(args: argparse.Namespace) -> int:
    """``conveyor run``: apply the target to every input, in parallel, results in input order."""
    fn = load_function(args.target)
    with ExitStack() as files:
        items = _open_inputs(args, files)
        started = time.perf_counter()
        pool = _make_pool(args)  # every mistake on the command line is found before the output opens
        out = _Output(args.output)
        files.callback(out.close)  # on an unexpected error or Ctrl-C: what was written is kept
        try:
            with pool:  # a failure leaves this block by an exception, which kills the running work
                out.open()
                done, failed = _write_results(pool, fn, items, args, out)
        except (ItemFailed, InputError, conveyor.BrokenPoolError) as exc:
            out.close()
            error(str(exc) if not isinstance(exc, conveyor.BrokenPoolError) else _describe(exc))
            return EXIT_FAILED
        out.close()
        if not args.quiet:
            print(_summary(done, failed, time.perf_counter() - started, pool), file=sys.stderr)
    return EXIT_FAILED if failed else EXIT_OK


def _positive_int(text: str) -> int:
    if text.strip().isdigit() and int(text) > 0:
        return int(text)
    raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")


def _non_negative_int(text: str) -> int:
    if text.strip().isdigit():
        return int(text)
    raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")


def _positive_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if seconds > 0 and seconds != float("inf"):
        return seconds
    raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")


RUN_EPILOG = """\
inputs: the lines of INPUT (or stdin) as strings, parsed as JSON with --json, or the integers of --range.
        A line ends at a newline; a carriage return before it (Windows line ends) is dropped too.
output: one JSON line per input, in input order (values JSON cannot hold are written as strings,
        NaN and infinities as "nan", "inf" and "-inf").
exit: 0 ok, 1 a task or input failed (with --keep-going: 1 if any item failed), 2 bad command line.

examples:
  conveyor run --range 0:1000 math:sqrt
  conveyor run examples/word_lengths.py:count_words book.txt -o counts.jsonl
  cat records.jsonl | conveyor run --json mypkg.jobs:score --backend thread --progress
"""


def add_parser(commands: Any) -> None:
    run = commands.add_parser(
        "run", help="apply a function to many inputs in parallel",
        description="Apply MODULE:FUNCTION or FILE.py:FUNCTION to every input, in parallel, and write "
                    "the results in input order as JSON lines.",
        epilog=RUN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("target", metavar="MODULE_OR_FILE:FUNCTION",
                     help="e.g. json:dumps, pkg.mod:fn, job.py:work")
    run.add_argument("input", metavar="INPUT", nargs="?",
                     help="file of inputs, one per line (default, or -: stdin)")
    source = run.add_mutually_exclusive_group()
    source.add_argument("--json", action="store_true", help="parse each input line as JSON")
    source.add_argument("--range", type=parse_range, metavar="A:B[:STEP]",
                        help="the integers range(A, B, STEP); write --range=-5:5 for a negative A")
    run.add_argument("--backend", metavar="NAME",
                     help="auto, serial, thread, process, dask or ray (default: $CONVEYOR_BACKEND, else "
                          "auto: chosen by measuring the first calls)")
    run.add_argument("--workers", type=_positive_int, metavar="N",
                     help="number of workers (default: usable cores)")
    run.add_argument("--chunksize", type=_positive_int, metavar="N",
                     help="inputs per batch (default: automatic)")
    run.add_argument("--task-timeout", type=_positive_seconds, metavar="S", help="seconds one task may run")
    run.add_argument("--retries", type=_non_negative_int, metavar="N",
                     help="extra attempts for a failing task")
    run.add_argument("--start-method", metavar="METHOD", help="fork, forkserver or spawn (process backend)")
    run.add_argument("--progress", action="store_true", help="show a progress bar on stderr")
    run.add_argument("-o", "--output", metavar="FILE", help="write results to FILE (default: stdout)")
    run.add_argument("--keep-going", action="store_true",
                     help='write {"error", "type", "input"} for a failing item and continue')
    run.add_argument("-q", "--quiet", action="store_true", help="no summary line on stderr")
    run.set_defaults(handler=command_run)


