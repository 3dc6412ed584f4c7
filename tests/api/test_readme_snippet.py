"""The README's SDK snippet works as written (only the key and port are the test server's)."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.api import raw

pytestmark = pytest.mark.slow  # see the marker in pyproject.toml

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_snippet_runs_and_its_trace_opens(api_server):
    text = README.read_text()
    section = text[text.index("## Point the official SDK at it"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len([l for l in code.splitlines() if l.strip()]) == 5
    port = api_server["url"].rsplit(":", 1)[1]
    code = code.replace("http://127.0.0.1:8000", f"http://127.0.0.1:{port}").replace('"sk-exp-…"', repr(api_server["api_key"]))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    trace_url = out.stdout.strip().splitlines()[-1].split("trace: ")[1]
    page = raw.request("GET", trace_url)
    assert page.status_code == 200 and "/learn/recap/?s=" in page.text
