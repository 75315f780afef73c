"""Every Python example in the README and docs/ runs, as a user would paste it into a file."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import bounded

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
EXAMPLES = [(doc, i, code) for doc in DOCS
            for i, code in enumerate(re.findall(r"```python\n(.*?)```", doc.read_text(), re.S))]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("doc,index,code", EXAMPLES, ids=[f"{doc.name}-{i}" for doc, i, _ in EXAMPLES])
def test_example_runs(tmp_path, doc, index, code):
    script = tmp_path / "example.py"
    script.write_text(code)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path,
                          timeout=bounded(100))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "leaked" not in done.stderr, done.stderr[-3000:]
