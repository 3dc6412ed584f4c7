"""Importing calls recorded elsewhere (JSON Lines, claude-trace logs, HAR 1.2): all of a file or nothing, never a key."""
from __future__ import annotations

import base64
import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from explainer.inspect.importing import ImportRefused, parse
from explainer.inspect.models import Call, Session

pytestmark = pytest.mark.django_db
KEY = "sk-ant-api03-imported-file-key-should-vanish"
SYSTEM = "Today is 2026-12-07 {}. " + "Be precise about invoices. " * 200


def body(stamp: str, text: str, stream: bool = False) -> dict:
    return {"model": "claude-sonnet-4-6", "max_tokens": 100, "stream": stream,
            "system": [{"type": "text", "text": SYSTEM.format(stamp), "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": text}]}


def message(usage: dict, text: str = "ok") -> dict:
    return {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-6",
            "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": 20, "output_tokens": 3, **usage}}


def sse(msg: dict) -> str:
    start = {**msg, "content": [], "stop_reason": None}
    events = [{"type": "message_start", "message": start},
              {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
              {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": msg["content"][0]["text"]}},
              {"type": "content_block_stop", "index": 0},
              {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None}, "usage": {"output_tokens": 3}},
              {"type": "message_stop"}]
    return "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events)


def jsonl() -> str:
    plain = {"request": body("10:00", "first"), "response": message({"cache_creation_input_tokens": 1400})}
    trace = {"request": {"timestamp": 1765100000.0, "method": "POST", "url": "https://api.anthropic.com/v1/messages",
                         "headers": {"x-api-key": KEY, "anthropic-version": "2023-06-01"}, "body": body("10:05", "second", True)},
             "response": {"timestamp": 1765100001.5, "status_code": 200, "headers": {"request-id": "req_abc", "Retry-After": "3",
                                                                                      "anthropic-ratelimit-tokens-remaining": "9000"},
                          "body_raw": sse(message({"cache_creation_input_tokens": 1400}, "streamed"))},
             "logged_at": "2025-12-07T10:00:01Z"}
    other = {"request": {"timestamp": 1765100002.0, "method": "GET", "url": "https://api.anthropic.com/v1/models", "headers": {}},
             "response": {"timestamp": 1765100002.1, "status_code": 200, "body": {"data": []}}}
    return "\n".join(json.dumps(x) for x in (plain, trace, other)) + "\n"


def har() -> str:
    def entry(url: str, req: dict | None, resp_text: str, mime: str, encoded: bool = False) -> dict:
        content = {"mimeType": mime, "text": base64.b64encode(resp_text.encode()).decode() if encoded else resp_text}
        if encoded:
            content["encoding"] = "base64"
        return {"startedDateTime": "2026-12-07T10:00:00.000Z", "time": 812.5, "timings": {"wait": 640.0},
                "request": {"method": "POST", "url": url, "headers": [{"name": "x-api-key", "value": KEY},
                                                                      {"name": "anthropic-version", "value": "2023-06-01"}],
                            "postData": {"mimeType": "application/json", "text": json.dumps(req)} if req else None},
                "response": {"status": 200, "headers": [{"name": "request-id", "value": "req_har"}, {"name": 5, "value": 6},
                                                        {"name": "anthropic-ratelimit-requests-remaining", "value": "41"}],
                             "content": content}}
    return json.dumps({"log": {"version": "1.2", "entries": [
        entry("https://api.anthropic.com/v1/messages", body("10:00", "a"), json.dumps(message({"cache_creation_input_tokens": 1400})), "application/json"),
        entry("https://example.com/static/app.js", None, "console.log(1)", "text/javascript"),
        entry("https://api.anthropic.com/v1/messages", body("10:00", "b", True), sse(message({"cache_read_input_tokens": 1400}, "hit")),
              "text/event-stream", encoded=True),
    ]}})


def test_json_lines_plain_and_claude_trace_are_read():
    calls = parse(jsonl())
    assert [c["path"] for c in calls] == ["/v1/messages", "/v1/messages"]  # /v1/models is not a call to explain
    assert calls[1]["response"]["content"] == [{"type": "text", "text": "streamed"}] and calls[1]["stream"]
    assert calls[1]["timings"]["total"] == 1500.0 and calls[1]["request_id"] == "req_abc"
    assert calls[1]["headers"] == {"anthropic-version": "2023-06-01", "x-api-key": "(not recorded)"}  # which header, never the key
    assert calls[1]["ratelimit"] == {"retry-after": "3", "anthropic-ratelimit-tokens-remaining": "9000"} and calls[0]["ratelimit"] == {}


def test_a_har_keeps_its_messages_entries():
    calls = parse(har())
    assert len(calls) == 2 and calls[1]["response"]["content"][0]["text"] == "hit"
    assert calls[0]["timings"] == {"first_byte": 640.0, "total": 812.5} and calls[0]["request_id"] == "req_har"
    assert calls[0]["ratelimit"] == {"anthropic-ratelimit-requests-remaining": "41"}  # the Gateway stage of its call page shows it


@pytest.mark.parametrize("text, words", [
    ('{"request": {"model": "m"}, "response": {"type": "message"}}\n{not json}\n', "Line 2 is not JSON"),
    ('{"request": {"model": "m"}, "response": {"type": "message"}}\n\n["a list"]\n', "Line 3 is not a request/response pair"),
    ('{"request": {"url": "https://x/v1/messages", "body": "{oops"}, "response": {"status_code": 200}}', "Line 1: the request's body is not JSON"),
    ('{"log": {"entries": [{"request": {"url": 5}}]}}', "Entry 1 of the HAR file has no request URL"),
    ('{"log": {"entries": [{"request": {"url": "https://a/v1/messages", "postData": {"text": "{x"}}}]}}', "Entry 1 of the HAR file (/v1/messages): its request body is not JSON"),
    ('{"log": {"entries": []}}', "no call to /v1/messages"),
    ('{"request": {"model": "m"}, "response": {"type": "message"}}\n{"n": ' + "9" * 5000 + "}\n", "Line 2 is not JSON that can be read here"),
    ("", "empty"),
])
def test_a_bad_file_is_refused_with_one_sentence_naming_where(text, words):
    with pytest.raises(ImportRefused) as e:
        parse(text)
    assert words in str(e.value)


def test_importing_through_the_page_and_as_a_body_then_analysed():
    session = Session.objects.create()
    client = Client()
    upload = SimpleUploadedFile("calls.jsonl", jsonl().encode(), content_type="application/x-ndjson")
    r = client.post(f"/inspect/{session.id}/import", {"file": upload})
    assert r.status_code == 302 and r["Location"].startswith(f"/inspect/{session.id}/")
    r = client.post(f"/inspect/{session.id}/import", har(), content_type="application/json")
    assert r.status_code == 200 and r.json() == {"imported": 2}
    data = client.get(f"/inspect/{session.id}/data").json()
    assert len(data["calls"]) == 4
    by_text = {c["index"]: c for c in data["calls"]}
    changed = [c for c in by_text.values() if c["cache"]["reason"] == "prefix_changed"]
    assert changed and changed[0]["cache"]["first_difference"]["path"] == "system[0].text"
    stored = json.dumps(list(Call.objects.values()), default=str)
    assert KEY not in stored and KEY not in client.get(f"/inspect/{session.id}/").content.decode()
    call = client.get(f"/inspect/{session.id}/call/3/")  # an imported call opens stage by stage, its file's headers and all
    assert call.status_code == 200 and KEY not in call.content.decode() and "41 of –" in call.content.decode()


def test_nothing_half_imports():
    session = Session.objects.create()
    good = jsonl().splitlines()[0]
    r = Client().post(f"/inspect/{session.id}/import", good + "\n" + good + "\n{broken\n", content_type="application/x-ndjson")
    assert r.status_code == 400 and "Line 3" in r.json()["error"]["message"]
    assert not Call.objects.filter(session=session).exists()
    page = Client().post(f"/inspect/{session.id}/import", {"file": SimpleUploadedFile("x.jsonl", b"{broken")})
    assert page.status_code == 400 and "Line 1 is not JSON" in page.content.decode() and "Nothing of it was imported" in page.content.decode()
    gone = Client().post("/inspect/AAAAAAAAAAAAAAAAAAAAAA/import", good, content_type="application/x-ndjson")
    assert gone.status_code == 404 and gone.json()["error"]["type"] == "not_found_error"
