"""The official TypeScript SDK (npm @anthropic-ai/sdk, pinned in tests/ts) streaming through an inspector session."""
from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import TS_SDK

pytestmark = pytest.mark.slow  # see the marker in pyproject.toml

def test_the_typescript_sdk_gets_what_the_upstream_sent(node_sdk, base_url, upstream):
    out = subprocess.run([node_sdk, "stream.mjs", base_url, "sk-ant-typescript-key"], cwd=TS_SDK, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    sent = upstream.sent[-1]["message"]
    assert result["text"] == sent["content"][0]["text"]
    final = result["final"]
    assert final["content"] == sent["content"] and final["stop_reason"] == sent["stop_reason"]
    assert {k: final["usage"][k] for k in sent["usage"]} == sent["usage"]
    got = upstream.received[-1]["headers"]
    assert "sk-ant-typescript-key" in (got.get("x-api-key"), got.get("authorization", "").removeprefix("Bearer "))  # whichever it sent
