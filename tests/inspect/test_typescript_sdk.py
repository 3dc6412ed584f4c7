"""The official TypeScript SDK (npm @anthropic-ai/sdk, pinned in tests/ts) streaming through an inspector session."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # see the marker in pyproject.toml

TS = Path(__file__).resolve().parents[1] / "ts"


@pytest.fixture(scope="module")
def node():
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        pytest.fail("The TypeScript SDK test needs Node.js and npm (Debian: apt-get install nodejs npm).")
    if not (TS / "node_modules" / "@anthropic-ai" / "sdk").exists():
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=TS, check=True, capture_output=True, timeout=300)
    return node


def test_the_typescript_sdk_gets_what_the_upstream_sent(node, base_url, upstream):
    out = subprocess.run([node, "stream.mjs", base_url, "sk-ant-typescript-key"], cwd=TS, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    sent = upstream.sent[-1]["message"]
    assert result["text"] == sent["content"][0]["text"]
    final = result["final"]
    assert final["content"] == sent["content"] and final["stop_reason"] == sent["stop_reason"]
    assert {k: final["usage"][k] for k in sent["usage"]} == sent["usage"]
    got = upstream.received[-1]["headers"]
    assert "sk-ant-typescript-key" in (got.get("x-api-key"), got.get("authorization", "").removeprefix("Bearer "))  # whichever it sent
