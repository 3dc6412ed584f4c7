"""One smoke test with the official TypeScript SDK (npm @anthropic-ai/sdk, pinned in tests/ts) doing a streamed request."""
import json
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # see the marker in pyproject.toml

TS = Path(__file__).resolve().parents[1] / "ts"


@pytest.fixture(scope="module")
def node_sdk():
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        pytest.fail("The TypeScript SDK test needs Node.js and npm (Debian: apt-get install nodejs npm).")
    if not (TS / "node_modules" / "@anthropic-ai" / "sdk").exists():
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=TS, check=True, capture_output=True, timeout=300)
    return node


def test_the_typescript_sdk_streams_a_reply(node_sdk, api_server):
    out = subprocess.run([node_sdk, "stream.mjs", api_server["url"], api_server["api_key"]], cwd=TS,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    final = result["final"]
    assert final["type"] == "message" and final["role"] == "assistant"
    assert result["text"] == final["content"][0]["text"]
    assert final["usage"]["output_tokens"] >= 1 and final["stop_reason"] in ("end_turn", "max_tokens")
