"""A call relayed by the proxy under Daphne reaches a socket open on its session's page (ws/inspect/<id>/), as the
page's own socket would hear it: the frame is awaited, never slept for."""
from __future__ import annotations

import json

import anthropic
import pytest
from websockets.sync.client import connect

pytestmark = pytest.mark.slow  # a Daphne and the stand-in upstream (tests/inspect/conftest.py)


def test_a_relayed_call_is_announced_on_the_sessions_socket(inspector, base_url):
    ws_url = base_url.replace("http://", "ws://", 1).replace("/inspect/", "/ws/inspect/", 1) + "/"
    with connect(ws_url, origin=inspector["url"], open_timeout=10) as ws:
        assert json.loads(ws.recv(timeout=10)) == {"type": "inspect.hello", "calls": 0}
        sdk = anthropic.Anthropic(api_key="sk-ant-live-socket-key", base_url=base_url, max_retries=0, timeout=30)
        with sdk.messages.stream(model="claude-sonnet-4-6", max_tokens=50, messages=[{"role": "user", "content": "hi"}]) as s:
            s.get_final_message()
        sdk.messages.count_tokens(model="claude-sonnet-4-6", messages=[{"role": "user", "content": "hi"}])
        seen = 0
        while seen < 2:  # the two calls: one frame, or two when the second came after the first's frame
            frame = json.loads(ws.recv(timeout=10))
            assert frame["type"] == "inspect.recorded"
            seen += frame["calls"]
        assert seen == 2
