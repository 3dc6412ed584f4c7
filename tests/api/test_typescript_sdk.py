"""One smoke test with the official TypeScript SDK (npm @anthropic-ai/sdk, pinned in tests/ts) doing a streamed request."""
import json
import subprocess

import pytest

from tests.conftest import TS_SDK

pytestmark = pytest.mark.slow  # see the marker in pyproject.toml

def test_the_typescript_sdk_streams_a_reply(node_sdk, api_server):
    out = subprocess.run([node_sdk, "stream.mjs", api_server["url"], api_server["api_key"]], cwd=TS_SDK,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    final = result["final"]
    assert final["type"] == "message" and final["role"] == "assistant"
    assert result["text"] == final["content"][0]["text"]
    assert final["usage"]["output_tokens"] >= 1 and final["stop_reason"] in ("end_turn", "max_tokens")
