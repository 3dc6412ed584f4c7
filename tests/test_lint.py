"""ruff, configured in pyproject.toml ([tool.ruff]), finds nothing in the tree: the README's test command lints too.

Fix what it lists with ``.venv/bin/ruff check --fix`` (safe fixes) and by hand for the rest."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def ruff() -> str:
    beside = Path(sys.executable).with_name("ruff")  # the venv's, pinned in the test extra
    found = str(beside) if beside.exists() else shutil.which("ruff")
    assert found, "ruff is not installed: pip install -e '.[test]'"
    return found


def findings(*args: str, stdin: str | None = None) -> list[dict]:
    out = subprocess.run([ruff(), "check", "--output-format", "json", "--no-cache", *args], cwd=ROOT,
                         input=stdin, capture_output=True, text=True, timeout=300)
    assert out.returncode in (0, 1), out.stderr  # 2: ruff itself failed (a bad configuration, say)
    return json.loads(out.stdout or "[]")


def test_ruff_finds_nothing_in_the_tree():
    found = findings(".")
    listed = "\n".join(f"{Path(f['filename']).relative_to(ROOT)}:{f['location']['row']}:{f['location']['column']}: "
                       f"{f['code']} {f['message']}" for f in found)
    assert not found, f"ruff found {len(found)} problem(s) (.venv/bin/ruff check --fix fixes the safe ones):\n{listed}"


def test_ruff_reads_this_project_s_configuration():
    """The check above can fail: the same configuration flags an unused import and unsorted imports in a
    file of the tree (given on stdin, so no file is written where another run could see it)."""
    codes = {f["code"] for f in findings("--stdin-filename", "tests/_lint_probe.py", "-",
                                          stdin="import sys\nimport os\n\nprint(os.sep)\n")}
    assert {"F401", "I001"} <= codes, codes
