"""ws/stream/ at the protocol level, through the real ASGI application."""
import json
import logging

import pytest
from channels.testing import WebsocketCommunicator

from explainer.asgi import application

ORIGIN = [(b"origin", b"http://127.0.0.1:8000")]
BODY = {"model": "claude-haiku-4-5", "max_tokens": 12, "temperature": 0.8,
        "messages": [{"role": "user", "content": "What is a DAG?"}], "explainer": {"seed": 3}}
API_TYPES = {"message_start", "content_block_start", "ping", "content_block_delta", "content_block_stop", "message_delta", "message_stop"}


async def connect():
    comm = WebsocketCommunicator(application, "/ws/stream/", headers=ORIGIN)
    connected, _ = await comm.connect()
    assert connected
    hello = await comm.receive_json_from()
    assert hello["type"] == "explainer.hello"
    return comm


async def run(comm, body) -> list[dict]:
    await comm.send_json_to(body)
    frames = []
    while True:
        frame = await comm.receive_json_from(timeout=30)
        frames.append(frame)
        if frame["type"] in ("explainer.done", "error"):
            return frames


async def test_it_streams_api_events_in_the_api_order():
    comm = await connect()
    frames = await run(comm, BODY)
    api = [f["type"] for f in frames if f["type"] in API_TYPES]
    assert api[:3] == ["message_start", "content_block_start", "ping"]
    assert api[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(api[3:-3]) <= {"content_block_delta"}
    start = next(f for f in frames if f["type"] == "message_start")["message"]
    assert start["model"] == "claude-haiku-4-5" and start["id"].startswith("msg_") and start["content"] == []
    assert start["usage"]["input_tokens"] == frames[0]["input_tokens"]
    delta = next(f for f in frames if f["type"] == "message_delta")
    tokens = [f for f in frames if f["type"] == "explainer.token"]
    assert delta["usage"]["output_tokens"] == len(tokens) <= 12
    assert delta["delta"]["stop_reason"] in ("end_turn", "max_tokens")
    # every token frame comes before the text it produced, with candidates whose probabilities are ordered
    for t in tokens:
        probs = [c["probability"] for c in t["candidates"]]
        assert probs == sorted(probs, reverse=True)
    await comm.disconnect()


async def test_the_same_seed_repeats_the_same_text():
    comm = await connect()
    texts = []
    for _ in range(2):
        frames = await run(comm, dict(BODY))
        texts.append("".join(f["delta"]["text"] for f in frames if f["type"] == "content_block_delta"))
    assert texts[0] == texts[1]
    await comm.disconnect()


@pytest.mark.parametrize("frame, kind", [
    ("{not json", "invalid_request_error"),
    ("[1, 2, 3]", "invalid_request_error"),
    (json.dumps({**BODY, "max_tokens": -1}), "invalid_request_error"),
    (json.dumps({**BODY, "explainer": {"seed": "x"}}), "invalid_request_error"),
    (json.dumps({**BODY, "messages": [{"role": "user", "content": "\ud800"}]}), "invalid_request_error"),
    (json.dumps({**BODY, "messages": [{"role": "user", "content": "x" * 70_000}]}), "request_too_large"),
    (json.dumps({**BODY, "messages": [{"role": "user", "content": "word " * 3000}]}), "invalid_request_error"),
])
@pytest.mark.slow
async def test_bad_input_gets_an_error_frame_and_the_socket_stays_usable(frame, kind, caplog):
    comm = await connect()
    with caplog.at_level(logging.WARNING):
        await comm.send_to(text_data=frame)
        err = await comm.receive_json_from(timeout=30)
    assert err["type"] == "error" and err["error"]["type"] == kind, err
    assert err["error"]["message"]
    assert "Traceback" not in caplog.text
    frames = await run(comm, BODY)
    assert frames[-1]["type"] == "explainer.done"
    await comm.disconnect()


async def test_a_too_long_prompt_names_both_numbers():
    comm = await connect()
    await comm.send_json_to({**BODY, "messages": [{"role": "user", "content": "word " * 3000}]})
    err = await comm.receive_json_from(timeout=30)
    assert err["error"]["message"].startswith("prompt is too long: ")
    assert "511 maximum" in err["error"]["message"]
    await comm.disconnect()


async def test_a_flood_of_frames_is_refused_without_closing_the_socket(settings):
    settings.EXPLAINER_WS_FRAMES_PER_10S = 5
    comm = await connect()
    kinds = []
    for _ in range(8):
        await comm.send_to(text_data="{}")
        kinds.append((await comm.receive_json_from())["error"]["type"])
    assert kinds[:5] == ["invalid_request_error"] * 5
    assert kinds[5:] == ["rate_limit_error"] * 3
    await comm.disconnect()


async def test_a_second_request_while_one_runs_is_refused_and_cancel_stops_it():
    comm = await connect()
    await comm.send_json_to({**BODY, "max_tokens": 200, "explainer": {"seed": 1, "pace_ms": 50}})
    await comm.send_json_to(BODY)
    seen_error = None
    while seen_error is None:
        f = await comm.receive_json_from(timeout=30)
        if f["type"] == "error":
            seen_error = f
    assert "already running" in seen_error["error"]["message"]
    await comm.send_json_to({"type": "cancel"})
    await comm.disconnect()


async def test_a_foreign_origin_is_rejected():
    comm = WebsocketCommunicator(application, "/ws/stream/", headers=[(b"origin", b"http://evil.example")])
    connected, _ = await comm.connect()
    assert not connected


async def test_the_greeting_names_the_default_and_the_local_models():
    from tests.conftest import LOCAL_MODEL

    comm = WebsocketCommunicator(application, "/ws/stream/", headers=ORIGIN)
    await comm.connect()
    hello = await comm.receive_json_from()
    assert hello["default_model"] == "tiny-explainer-4l" and hello["local_models"] == [LOCAL_MODEL]
    frames = await run(comm, {"model": LOCAL_MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}]})
    prompt = next(f for f in frames if f["type"] == "explainer.prompt")
    assert prompt["model"]["served_by"] == LOCAL_MODEL
    await comm.disconnect()
