"""The official anthropic SDK against a live Daphne: it must work unchanged."""
import anthropic
import pytest

from tests.api import raw
from tests.waiting import wait_until

pytestmark = pytest.mark.slow  # see the marker in pyproject.toml

MODEL = "claude-sonnet-4-6"
HI = [{"role": "user", "content": "What is a primary key?"}]


def test_it_creates_a_message(client):
    msg = client.messages.create(model=MODEL, max_tokens=16, messages=HI)
    assert msg.id.startswith("msg_") and msg.role == "assistant" and msg.model == MODEL
    assert msg.type == "message" and msg.content[0].type == "text"
    assert msg.stop_reason in ("end_turn", "max_tokens")
    assert 1 <= msg.usage.output_tokens <= 16 and msg.usage.input_tokens > 5
    assert msg.usage.cache_read_input_tokens == 0 and msg.usage.cache_creation_input_tokens == 0


def test_it_streams_with_the_sdk_helpers(client):
    with client.messages.stream(model=MODEL, max_tokens=20, messages=HI, extra_body={"temperature": 0}) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(pieces) == final.content[0].text
    assert final.usage.output_tokens >= 1
    plain = client.messages.create(model=MODEL, max_tokens=20, messages=HI, extra_body={"temperature": 0})
    assert plain.content[0].text == final.content[0].text


def test_stream_events_come_in_the_api_order(client, api_server):
    events = [e.type for e in client.messages.create(model=MODEL, max_tokens=8, messages=HI, stream=True)]
    assert events[:2] == ["message_start", "content_block_start"]  # the SDK drops ping events
    assert events[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    r = raw.request("POST", api_server["url"] + "/v1/messages", json_body={"model": MODEL, "max_tokens": 8, "messages": HI, "stream": True},
                    headers={"x-api-key": api_server["api_key"]})
    assert r.headers["content-type"].startswith("text/event-stream")
    names = [line[7:] for line in r.text.splitlines() if line.startswith("event: ")]
    assert names[:3] == ["message_start", "content_block_start", "ping"] and names[-1] == "message_stop"


def test_temperature_zero_repeats(client):
    a = client.messages.create(model=MODEL, max_tokens=24, messages=HI, extra_body={"temperature": 0})
    b = client.messages.create(model=MODEL, max_tokens=24, messages=HI, extra_body={"temperature": 0, "top_k": 5})
    assert a.content[0].text == b.content[0].text


def test_max_tokens_and_stop_sequences(client):
    msg = client.messages.create(model=MODEL, max_tokens=3, messages=HI, extra_body={"temperature": 0})
    assert msg.usage.output_tokens <= 3
    long = client.messages.create(model=MODEL, max_tokens=40, messages=HI, extra_body={"temperature": 0}).content[0].text
    words = long.split()
    if len(words) >= 3:
        stop = " " + words[2]
        cut = client.messages.create(model=MODEL, max_tokens=40, messages=HI, stop_sequences=[stop], extra_body={"temperature": 0})
        assert cut.stop_reason == "stop_sequence" and cut.stop_sequence == stop
        assert cut.content[0].text == long[: long.index(stop)]


def test_count_tokens_matches_usage(client):
    conv = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "What is a view?"}]
    n = client.messages.count_tokens(model=MODEL, messages=conv, system="Be brief.").input_tokens
    msg = client.messages.create(model=MODEL, max_tokens=2, messages=conv, system="Be brief.")
    assert msg.usage.input_tokens == n


def test_models_list(client):
    ids = [m.id for m in client.models.list()]
    assert "tiny-explainer-4l" in ids and MODEL in ids
    assert client.models.retrieve(MODEL).id == MODEL


def test_both_key_headers_work(api_server):
    body = {"model": MODEL, "max_tokens": 2, "messages": HI}
    for headers in ({"x-api-key": api_server["api_key"]}, {"authorization": f"Bearer {api_server['api_key']}"}):
        r = raw.request("POST", api_server["url"] + "/v1/messages", json_body=body, headers={"anthropic-version": "2023-06-01", **headers})
        assert r.status_code == 200 and r.headers["request-id"].startswith("req_")


@pytest.mark.parametrize("call, exc", [
    (lambda c: c.messages.create(model=MODEL, max_tokens=0, messages=HI), anthropic.BadRequestError),
    (lambda c: c.messages.create(model=MODEL, max_tokens=5, messages=[]), anthropic.BadRequestError),
    (lambda c: c.messages.create(model="gpt-4o", max_tokens=5, messages=HI), anthropic.NotFoundError),
    (lambda c: c.messages.create(model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "word " * 3000}]), anthropic.BadRequestError),
])
def test_errors_map_to_the_sdk_s_exceptions(client, call, exc):
    with pytest.raises(exc) as e:
        call(client)
    assert e.value.response.headers["request-id"].startswith("req_")
    assert e.value.body["type"] == "error"


def test_a_wrong_or_missing_key_is_an_authentication_error(api_server):
    bad = anthropic.Anthropic(api_key="sk-exp-wrong", base_url=api_server["url"], max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        bad.messages.create(model=MODEL, max_tokens=2, messages=HI)
    r = raw.request("POST", api_server["url"] + "/v1/messages", json_body={"model": MODEL, "max_tokens": 2, "messages": HI})
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"


def test_prompt_too_long_names_both_numbers(client):
    with pytest.raises(anthropic.BadRequestError) as e:
        client.messages.create(model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "word " * 3000}])
    msg = e.value.body["error"]["message"]
    assert msg.startswith("prompt is too long:") and "511 maximum" in msg


def test_the_stream_carries_every_engine_event_in_order_and_the_trace_records_them(api_server):
    """Events travel in batches (explainer.web.runner): none may be lost, repeated or reordered, here or in the trace."""
    import json
    import sqlite3
    from pathlib import Path

    from explainer.lifecycle.payload import parse_request
    from explainer.web.runner import get_engine

    body = {"model": MODEL, "max_tokens": 48, "messages": HI, "temperature": 0}
    r = raw.request("POST", api_server["url"] + "/v1/messages", json_body={**body, "stream": True}, headers={"x-api-key": api_server["api_key"]})
    assert r.status_code == 200
    got = []
    for block in r.text.split("\n\n")[:-1]:
        name, data = block.split("\n")
        assert name.startswith("event: ") and data.startswith("data: ")
        got.append(json.loads(data[6:]))
        assert got[-1]["type"] == name[7:]
    want = [e for e in get_engine().stream(parse_request(body), seed=0) if not e["type"].startswith("explainer.")]
    for e in (got[0], want[0]):
        e["message"]["id"] = "msg_"
    assert got == want
    trace_id = r.headers["x-explainer-trace"].rstrip("/").rsplit("/", 1)[1]
    db = sqlite3.connect(Path(api_server["log"]).parent / "db.sqlite3")
    row = wait_until(lambda: db.execute("select events, steps, usage from shares_trace where id = ?", (trace_id,)).fetchone(),
                     message="the trace was not written after the answer")
    events, steps, usage = (json.loads(x) for x in row)
    events[0]["message"]["id"] = "msg_"
    assert events == got
    assert len(steps) == usage["output_tokens"] == got[-2]["usage"]["output_tokens"]
