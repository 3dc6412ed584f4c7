"""The recording proxy under a real Daphne, with the official SDK pointed at a session and a stand-in upstream."""
from __future__ import annotations

import json
from pathlib import Path

import anthropic
import httpx2
import pytest

pytestmark = pytest.mark.slow  # see the marker in pyproject.toml

KEY = "sk-ant-api03-inspector-secret-key-0123456789abcdefXYZ"
MODEL = "claude-sonnet-4-6"
WEATHER = {"name": "get_weather", "description": "Weather for a city.",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


@pytest.fixture
def sdk(base_url):
    return anthropic.Anthropic(api_key=KEY, base_url=base_url, max_retries=0, timeout=30)


def _last_sent(upstream):
    return upstream.sent[-1]


def test_create_returns_exactly_what_the_upstream_sent(sdk, upstream):
    raw = sdk.messages.with_raw_response.create(model=MODEL, max_tokens=100, messages=[{"role": "user", "content": "Hello"}])
    sent = _last_sent(upstream)
    assert raw.http_response.content == sent["body"]
    assert raw.http_response.status_code == 200
    for h in ("request-id", "anthropic-ratelimit-requests-limit", "anthropic-ratelimit-requests-remaining", "content-type"):
        assert raw.http_response.headers[h] == sent["headers"][h]
    message = raw.parse()
    assert message.model_dump(mode="json", exclude_none=True)["content"] == json.loads(sent["body"])["content"]
    assert message.usage.cache_creation_input_tokens == 0


def test_a_stream_is_relayed_event_by_event_unchanged(sdk, upstream, base_url):
    with sdk.messages.stream(model=MODEL, max_tokens=100, messages=[{"role": "user", "content": "Stream this please"}]) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    sent = _last_sent(upstream)
    assert text == sent["message"]["content"][0]["text"]
    assert final.model_dump(mode="json", exclude_none=True)["usage"] == sent["message"]["usage"]
    assert final.stop_reason == sent["message"]["stop_reason"]
    # byte for byte, as a plain HTTP client reads it
    with httpx2.stream("POST", base_url + "/v1/messages", headers={"x-api-key": KEY, "anthropic-version": "2023-06-01"},
                       json={"model": MODEL, "max_tokens": 50, "stream": True, "messages": [{"role": "user", "content": "bytes"}]}) as r:
        got = b"".join(r.iter_raw())
        assert r.headers["content-type"].startswith("text/event-stream")
    assert got == _last_sent(upstream)["body"]


def test_tools_and_count_tokens_with_its_query_string(sdk, upstream):
    msg = sdk.messages.create(model=MODEL, max_tokens=200, tools=[WEATHER],
                              messages=[{"role": "user", "content": 'Weather? [[tool get_weather {"city": "Paris"}]]'}])
    assert msg.stop_reason == "tool_use" and msg.content[0].name == "get_weather" and msg.content[0].input == {"city": "Paris"}
    n = sdk.messages.count_tokens(model=MODEL, messages=[{"role": "user", "content": "count me"}], extra_query={"beta": "true"})
    assert n.input_tokens == json.loads(_last_sent(upstream)["body"])["input_tokens"]
    assert upstream.received[-1]["path"] == "/v1/messages/count_tokens?beta=true"
    models = sdk.models.list()
    assert [m.id for m in models] == ["claude-sonnet-4-5"]
    assert sdk.models.retrieve("claude-sonnet-4-5").id == "claude-sonnet-4-5"
    assert upstream.received[-1]["path"] == "/v1/models/claude-sonnet-4-5"
    before = len(upstream.received)
    climbing = httpx2.get(sdk.base_url.join("v1/models/..%2F..%2Fadmin"), headers={"x-api-key": KEY})
    assert climbing.status_code == 404 and climbing.json()["type"] == "error" and len(upstream.received) == before


def test_the_upstream_gets_the_key_and_nothing_else_of_the_callers(base_url, upstream):
    r = httpx2.post(base_url + "/v1/messages", json={"model": MODEL, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]},
                    headers={"x-api-key": KEY, "anthropic-version": "2023-06-01", "anthropic-beta": "prompt-caching-2024-07-31",
                             "cookie": "sessionid=abc; csrftoken=def", "user-agent": "my-app/1.0", "x-forwarded-for": "10.1.2.3",
                             "x-custom": "private"})
    assert r.status_code == 200
    got = upstream.received[-1]["headers"]
    assert got["x-api-key"] == KEY and got["anthropic-version"] == "2023-06-01" and got["anthropic-beta"] == "prompt-caching-2024-07-31"
    assert "cookie" not in got and "x-forwarded-for" not in got and "x-custom" not in got
    assert got["user-agent"] != "my-app/1.0"
    assert got["host"] == upstream.url.removeprefix("http://")
    bearer = httpx2.post(base_url + "/v1/messages/count_tokens", json={"model": MODEL, "messages": [{"role": "user", "content": "x"}]},
                         headers={"authorization": f"Bearer {KEY}", "anthropic-version": "2023-06-01"})
    assert bearer.status_code == 200 and upstream.received[-1]["headers"]["authorization"] == f"Bearer {KEY}"


def test_no_request_can_change_where_calls_go(base_url, upstream):
    before = len(upstream.received)
    body = {"model": MODEL, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}], "base_url": "http://127.0.0.2:9/"}
    attempts = [
        ("/v1/messages?upstream=http://127.0.0.2:9/&url=http://127.0.0.2:9", {"x-forwarded-host": "127.0.0.2:9"}),
        ("/v1/messages", {"forwarded": "host=127.0.0.2:9", "x-upstream-url": "http://127.0.0.2:9", "x-original-url": "http://127.0.0.2:9/"}),
        ("/v1/messages?@127.0.0.2:9", {"x-explainer-upstream-url": "http://127.0.0.2:9"}),
    ]
    for path, headers in attempts:
        r = httpx2.post(base_url + path, json=body, headers={"x-api-key": KEY, **headers})
        assert r.status_code == 200, r.text
    assert len(upstream.received) == before + len(attempts)  # every one of them reached the configured upstream
    assert [r["path"].split("?")[0] for r in upstream.received[before:]] == ["/v1/messages"] * len(attempts)
    r = httpx2.post(base_url + "/v1/messages", json=body, headers={"x-api-key": KEY, "host": "127.0.0.2:9"})
    assert r.status_code == 400 and r.json()["type"] == "error"  # a host this server does not serve (ALLOWED_HOSTS)
    assert len(upstream.received) == before + len(attempts)


def test_rate_limits_and_overload_come_back_as_the_upstream_sent_them(sdk, upstream):
    with pytest.raises(anthropic.RateLimitError) as e:
        sdk.messages.create(model="standin-429", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    sent = _last_sent(upstream)
    assert e.value.response.headers["retry-after"] == "7"
    assert e.value.response.headers["request-id"] == sent["headers"]["request-id"]
    assert e.value.response.content == sent["body"]
    with pytest.raises(anthropic.APIStatusError) as e:
        sdk.messages.create(model="standin-529", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert e.value.status_code == 529 and e.value.body["error"]["type"] == "overloaded_error"


def test_a_dropped_connection_is_an_envelope_naming_the_upstream(base_url, upstream):
    headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
    r = httpx2.post(base_url + "/v1/messages", headers=headers,
                    json={"model": "standin-drop", "max_tokens": 50, "messages": [{"role": "user", "content": "drop"}]})
    assert r.status_code == 502
    assert r.json()["type"] == "error" and upstream.url in r.json()["error"]["message"]
    with httpx2.stream("POST", base_url + "/v1/messages", headers=headers,
                       json={"model": "standin-drop", "max_tokens": 50, "stream": True, "messages": [{"role": "user", "content": "drop"}]}) as r:
        text = b"".join(r.iter_raw()).decode()
    assert text.startswith(_last_sent(upstream)["body"].decode())  # what arrived was relayed before the cut
    last = text.strip().split("\n\n")[-1]
    assert last.startswith("event: error\ndata: ")
    err = json.loads(last.split("data: ", 1)[1])
    assert err["type"] == "error" and err["error"]["type"] == "api_error" and upstream.url in err["error"]["message"]


def test_an_upstream_that_hangs_is_a_clear_504(base_url, upstream):
    r = httpx2.post(base_url + "/v1/messages", headers={"x-api-key": KEY}, timeout=60,
                    json={"model": "standin-hang", "max_tokens": 10, "messages": [{"role": "user", "content": "wait"}]})
    assert r.status_code == 504
    body = r.json()
    assert body["error"]["type"] == "timeout_error" and upstream.url in body["error"]["message"] and "Traceback" not in r.text
    assert r.headers["request-id"] == body["request_id"]


def test_oversize_bodies_unknown_sessions_and_wrong_methods_get_the_envelope(base_url, inspector, upstream):
    before = len(upstream.received)
    big = {"model": MODEL, "max_tokens": 10, "messages": [{"role": "user", "content": "x" * (1024 * 1024 + 10)}]}
    r = httpx2.post(base_url + "/v1/messages", json=big, headers={"x-api-key": KEY})
    assert r.status_code == 413 and r.json()["error"]["type"] == "request_too_large"
    gone = inspector["url"] + "/inspect/AAAAAAAAAAAAAAAAAAAAAA"
    r = httpx2.post(gone + "/v1/messages", json={"model": MODEL}, headers={"x-api-key": KEY})
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
    r = httpx2.get(base_url + "/v1/messages", headers={"x-api-key": KEY})
    assert r.status_code == 405 and r.json()["type"] == "error"
    r = httpx2.get(base_url + "/v1/files", headers={"x-api-key": KEY})
    assert r.status_code == 404 and r.json()["type"] == "error"
    assert len(upstream.received) == before  # none of them was relayed
    page = httpx2.get(gone + "/")
    assert page.status_code == 404 and "No such inspector session" in page.text


def test_the_key_is_nowhere_after_all_those_calls(inspector, base_url, sdk):
    sdk.messages.create(model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "one more"}])
    session = base_url.rsplit("/", 1)[1]
    pages = [httpx2.get(base_url + "/").text, httpx2.get(base_url + "/data").text, httpx2.get(inspector["url"] + "/inspect/").text]
    data = json.loads(pages[1])
    assert data["session"] == session and data["calls"]
    for n in range(1, len(data["calls"]) + 1):  # every call's own page and data, headers shown masked
        pages += [httpx2.get(f"{base_url}/call/{n}/").text, httpx2.get(f"{base_url}/call/{n}/data").text]
    assert "••••••••" in pages[-2]
    assert all(KEY not in p and KEY[:20] not in p for p in pages)
    assert KEY[:20] not in json.dumps(data)
    data_dir = Path(inspector["env"]["EXPLAINER_DATA_DIR"])
    stored = [p for p in data_dir.iterdir() if p.name.startswith("db.sqlite3")]
    assert stored
    for p in [*stored, Path(inspector["log"])]:
        assert KEY.encode() not in p.read_bytes(), p


def test_a_caller_that_leaves_mid_stream_closes_the_upstream_stream(base_url, upstream):
    from tests.waiting import wait_until

    before = len(upstream.sent)
    with httpx2.stream("POST", base_url + "/v1/messages", headers={"x-api-key": KEY}, timeout=30,
                       json={"model": "standin-slow", "max_tokens": 500, "stream": True, "messages": [{"role": "user", "content": "go"}]}) as r:
        first = next(r.iter_raw())
        assert first.startswith(b"event: message_start")
    # the relay notices, stops reading the upstream, and the upstream's next write finds the connection closed
    sent = wait_until(lambda: len(upstream.sent) > before and upstream.sent[-1], timeout=30, message="the upstream never finished")
    assert sent.get("closed_after") is not None and sent["closed_after"] < 50
    call = wait_until(lambda: [c for c in httpx2.get(base_url + "/data").json()["calls"] if c["model"] == "standin-slow"], timeout=30)[0]
    assert any("caller went away" in n for n in call["notes"])
