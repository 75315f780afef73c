"""Functions defined in ``__main__`` (a script, or code with no file like a notebook cell) run on the
process backend under every start method: cloudpickle sends them by value.

(Code piped on stdin, ``python - < job.py``, works under fork only: under spawn and forkserver the
stdlib tries to re-import a main module from the file ``<stdin>``. Notebooks have no such file.)
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from conftest import START_METHODS, bounded

pytestmark = pytest.mark.timeout(120)

SCRIPT = textwrap.dedent("""
    import sys
    import conveyor

    OFFSET = 100

    class Point:
        def __init__(self, x):
            self.x = x

    def shift(x):
        return Point(x + OFFSET)

    if __name__ == "__main__":
        with conveyor.Pool(2, backend="process", start_method=sys.argv[1]) as pool:
            points = pool.map(shift, range(5))
            print([p.x for p in points], pool.submit(lambda: OFFSET * 2).result())
""")


@pytest.mark.parametrize("method", START_METHODS)
@pytest.mark.parametrize("source", ["file", "command"])
def test_functions_and_classes_from_main_run_in_workers(tmp_path, method, source):
    if source == "file":
        path = tmp_path / "job.py"
        path.write_text(SCRIPT)
        command, stdin = [sys.executable, str(path), method], None
    else:
        command, stdin = [sys.executable, "-c", SCRIPT, method], None
    done = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=bounded(60))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[100, 101, 102, 103, 104] 200"
