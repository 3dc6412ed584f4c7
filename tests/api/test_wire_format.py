"""Wire format as the public Messages API has it now: cumulative usage in message_delta, the SDK's
tool fields, and the top-level request_id of every error body."""
import json

import anthropic
import pytest

from tests.api import raw
from tests.live_server import daphne

pytestmark = pytest.mark.slow  # see the marker in pyproject.toml

MODEL = "claude-sonnet-4-6"
HI = [{"role": "user", "content": "What is a primary key?"}]
INPUT_KEYS = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")


def sse_events(text: str) -> list[dict]:
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]


# 1. message_delta.usage is cumulative: input and cache counts as well as output_tokens.

def test_the_sdk_stream_sees_cumulative_input_tokens_in_message_delta(client):
    n = client.messages.count_tokens(model=MODEL, messages=HI).input_tokens
    with client.messages.stream(model=MODEL, max_tokens=8, messages=HI) as stream:
        deltas = [e for e in stream if e.type == "message_delta"]
        final = stream.get_final_message()
    assert len(deltas) == 1
    usage = deltas[0].usage
    assert usage.input_tokens == n and usage.cache_creation_input_tokens == 0 and usage.cache_read_input_tokens == 0
    assert 1 <= usage.output_tokens <= 8
    assert final.usage.input_tokens == n and final.usage.output_tokens == usage.output_tokens


def test_the_raw_message_delta_repeats_message_start_s_input_usage(api_server):
    system = [{"type": "text", "text": "You answer questions about databases in one short sentence.",
               "cache_control": {"type": "ephemeral"}}]
    body = {"model": MODEL, "max_tokens": 6, "messages": HI, "system": system, "stream": True}
    for _ in range(2):  # a cache write, then a read: the cache counts travel too
        r = raw.request("POST", api_server["url"] + "/v1/messages", json_body=body, headers={"x-api-key": api_server["api_key"]})
        assert r.status_code == 200
        events = sse_events(r.text)
        start = next(e for e in events if e["type"] == "message_start")["message"]["usage"]
        delta = next(e for e in events if e["type"] == "message_delta")
        assert list(delta["usage"]) == [*INPUT_KEYS, "output_tokens"]
        assert {k: delta["usage"][k] for k in INPUT_KEYS} == {k: start[k] for k in INPUT_KEYS}
        assert 1 <= delta["usage"]["output_tokens"] <= 6


def test_a_plain_reply_has_the_same_usage_as_the_stream(client):
    plain = client.messages.create(model=MODEL, max_tokens=12, messages=HI, extra_body={"temperature": 0})
    with client.messages.stream(model=MODEL, max_tokens=12, messages=HI, extra_body={"temperature": 0}) as stream:
        streamed = stream.get_final_message()
    assert plain.usage.model_dump() == streamed.usage.model_dump()
    assert plain.usage.input_tokens == client.messages.count_tokens(model=MODEL, messages=HI).input_tokens
    assert plain.usage.output_tokens >= 1


# 2. The SDK's ToolParam fields are accepted, type-checked, and (here) change nothing.

CALC = {"name": "calc", "description": "Evaluate an arithmetic expression.",
        "input_schema": {"type": "object", "properties": {"expr": {"type": "string", "maxLength": 12}}, "required": ["expr"]}}
ASK = [{"role": "user", "content": "What is 6 times 7?"}]


@pytest.mark.parametrize("extra", [
    {"eager_input_streaming": True},
    {"strict": True},
    {"input_examples": [{"expr": "6*7"}]},
    {"defer_loading": False},
    {"allowed_callers": ["direct"]},
    {"eager_input_streaming": False, "strict": True, "input_examples": [{"expr": "1+1"}], "defer_loading": False,
     "allowed_callers": ["direct"], "cache_control": {"type": "ephemeral"}},
], ids=lambda e: "+".join(e))
def test_each_documented_tool_field_is_accepted(client, extra):
    msg = client.messages.create(model=MODEL, max_tokens=24, tools=[{**CALC, **extra}], tool_choice={"type": "tool", "name": "calc"},
                                 messages=ASK)
    call = msg.content[-1]
    assert call.type == "tool_use" and call.name == "calc" and msg.stop_reason in ("tool_use", "max_tokens")
    if msg.stop_reason == "tool_use":  # strict: the input always matches the schema (decoding is constrained to it)
        assert isinstance(call.input["expr"], str) and len(call.input["expr"]) <= 12


def test_a_deferred_tool_is_accepted_but_never_called(client):
    clock = {"name": "clock", "description": "The time now.", "input_schema": {"type": "object", "properties": {}}}
    msg = client.messages.create(model=MODEL, max_tokens=24, tools=[{**CALC, "defer_loading": True}, clock],
                                 tool_choice={"type": "any"}, messages=ASK)
    assert msg.content[-1].type == "tool_use" and msg.content[-1].name == "clock"
    with pytest.raises(anthropic.BadRequestError) as e:
        client.messages.create(model=MODEL, max_tokens=8, tools=[{**CALC, "defer_loading": True}],
                               tool_choice={"type": "tool", "name": "calc"}, messages=ASK)
    assert "defer_loading" in e.value.body["error"]["message"]


@pytest.mark.parametrize("extra, field", [
    ({"eager_input_streaming": "yes"}, "tools.0.eager_input_streaming"),
    ({"strict": "true"}, "tools.0.strict"),
    ({"input_examples": {"expr": "1"}}, "tools.0.input_examples"),
    ({"input_examples": [{"expr": 7}]}, "tools.0.input_examples.0"),
    ({"defer_loading": "no"}, "tools.0.defer_loading"),
    ({"allowed_callers": "direct"}, "tools.0.allowed_callers"),
    ({"allowed_callers": ["direct", "somebody"]}, "tools.0.allowed_callers.1"),
])
def test_a_wrong_type_for_a_tool_field_is_a_400_naming_it(client, extra, field):
    with pytest.raises(anthropic.BadRequestError) as e:
        client.messages.create(model=MODEL, max_tokens=8, tools=[{**CALC, **extra}], messages=ASK)
    assert e.value.body["error"]["message"].startswith(field + ":")
    assert e.value.body["request_id"] == e.value.request_id


def test_count_tokens_accepts_the_tool_fields_too(client):
    tool = {**CALC, "strict": True, "eager_input_streaming": None, "input_examples": [], "allowed_callers": ["direct"]}
    assert client.messages.count_tokens(model=MODEL, tools=[tool], messages=ASK).input_tokens == \
        client.messages.count_tokens(model=MODEL, tools=[CALC], messages=ASK).input_tokens


# 3. Every error body carries request_id, equal to the request-id header.

def check_envelope(r: raw.Response, status: int, kind: str) -> dict:
    assert r.status_code == status, r.text[:300]
    body = r.json()
    assert list(body) == ["type", "error", "request_id"]
    assert body["type"] == "error" and body["error"]["type"] == kind and body["error"]["message"]
    assert body["request_id"] == r.headers["request-id"] and body["request_id"].startswith("req_")
    return body


def test_request_id_in_the_body_of_every_kind_of_error(api_server):
    url, key = api_server["url"], api_server["api_key"]
    good = {"model": MODEL, "max_tokens": 4, "messages": HI}
    post = lambda path, content, headers: raw.request("POST", url + path, content=content,  # noqa: E731
                                                      headers={"content-type": "application/json", **headers})
    check_envelope(post("/v1/messages", b"{nope", {"x-api-key": key}), 400, "invalid_request_error")
    check_envelope(post("/v1/messages/count_tokens", json.dumps({"model": MODEL}).encode(), {"x-api-key": key}), 400, "invalid_request_error")
    check_envelope(post("/v1/messages", json.dumps(good).encode(), {}), 401, "authentication_error")
    check_envelope(post("/v1/messages", json.dumps(good).encode(), {"x-api-key": "sk-exp-wrong"}), 401, "authentication_error")
    check_envelope(raw.request("GET", url + "/v1/models", headers={"x-api-key": "sk-exp-wrong"}), 401, "authentication_error")
    check_envelope(raw.request("GET", url + "/v1/nothing-here", headers={"x-api-key": key}), 404, "not_found_error")
    check_envelope(raw.request("GET", url + "/v1/models/gpt-4", headers={"x-api-key": key}), 404, "not_found_error")
    check_envelope(post("/v1/messages", json.dumps({**good, "model": "gpt-4"}).encode(), {"x-api-key": key}), 404, "not_found_error")
    check_envelope(raw.request("GET", url + "/v1/messages", headers={"x-api-key": key}), 405, "invalid_request_error")
    check_envelope(post("/v1/messages", b"x" * (2 * 1024 * 1024), {"x-api-key": key}), 413, "request_too_large")


def test_the_sdk_sees_the_same_request_id_in_header_and_body(client):
    with pytest.raises(anthropic.NotFoundError) as e:
        client.models.retrieve("gpt-4")
    assert e.value.request_id and e.value.body["request_id"] == e.value.request_id


@pytest.fixture(scope="module")
def full_server(tmp_path_factory):
    """No engine slot at all (every run is a 529) and one request a minute (the second is a 429)."""
    with daphne(tmp_path_factory.mktemp("full"), EXPLAINER_ENGINE_WORKERS="0", EXPLAINER_ENGINE_QUEUE="0",
                EXPLAINER_RATE_REQUESTS_PER_MINUTE="1") as srv:
        yield srv


def test_529_and_429_carry_request_id(full_server):
    body = {"model": MODEL, "max_tokens": 4, "messages": HI}
    first = raw.request("POST", full_server["url"] + "/v1/messages", json_body=body, headers={"x-api-key": full_server["api_key"]})
    check_envelope(first, 529, "overloaded_error")
    second = raw.request("POST", full_server["url"] + "/v1/messages", json_body=body, headers={"x-api-key": full_server["api_key"]})
    check_envelope(second, 429, "rate_limit_error")
    assert second.headers["retry-after"]


# In this process, with the engine replaced, for the errors a live server does not make on demand.

async def _in_process_call(monkeypatch, body: dict, fake_batches=None, broken_body=False):
    from asgiref.sync import sync_to_async
    from django.test import AsyncClient

    from explainer.api import keys, views
    from explainer.shares import traces

    _, key = await sync_to_async(keys.create)("wire-format test")
    if fake_batches is not None:
        async def run_batches(req, seed=0, cancel=None, observe=None, keep=None, finished=None, hold=0.0, budget=None, n_candidates=10):
            if finished is not None:
                finished()
            for batch in fake_batches:
                yield [dict(e) for e in batch]
        monkeypatch.setattr(views, "run_batches", run_batches)
    if broken_body:
        def boom(request):
            raise RuntimeError("a bug")
        monkeypatch.setattr(views, "_json_body", boom)
    resp = await AsyncClient().post("/v1/messages", data=json.dumps(body), content_type="application/json", headers={"x-api-key": key})
    content = b"".join([c async for c in resp.streaming_content]) if resp.streaming else resp.content
    resp.close()
    await sync_to_async(traces.wait_for_writes)(10)
    return resp, content


START = {"type": "message_start", "message": {
    "id": "msg_x", "type": "message", "role": "assistant", "content": [], "model": MODEL, "stop_reason": None, "stop_sequence": None,
    "usage": {"input_tokens": 5, "output_tokens": 0, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}}
FAILED = {"type": "error", "error": {"type": "api_error", "message": "Internal error while generating."}}


@pytest.mark.django_db(transaction=True)
async def test_an_error_event_mid_stream_carries_request_id(monkeypatch):
    resp, content = await _in_process_call(monkeypatch, {"model": MODEL, "max_tokens": 4, "messages": HI, "stream": True},
                                           fake_batches=[[START], [FAILED]])
    assert resp.status_code == 200
    text = content.decode()
    assert "event: error\n" in text
    error = next(e for e in sse_events(text) if e["type"] == "error")
    assert error == {**FAILED, "request_id": resp["request-id"]}


@pytest.mark.django_db(transaction=True)
async def test_an_error_after_the_start_of_a_plain_reply_carries_request_id(monkeypatch):
    resp, content = await _in_process_call(monkeypatch, {"model": MODEL, "max_tokens": 4, "messages": HI},
                                           fake_batches=[[START], [FAILED]])
    assert resp.status_code == 500
    assert json.loads(content) == {**FAILED, "request_id": resp["request-id"]}


@pytest.mark.django_db(transaction=True)
async def test_a_500_carries_request_id(monkeypatch):
    resp, content = await _in_process_call(monkeypatch, {"model": MODEL, "max_tokens": 4, "messages": HI}, broken_body=True)
    assert resp.status_code == 500
    assert json.loads(content) == {"type": "error", "error": {"type": "api_error", "message": "Internal server error."},
                                   "request_id": resp["request-id"]}
