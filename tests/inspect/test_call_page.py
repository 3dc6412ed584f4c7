"""A recorded call opened stage by stage (``/inspect/<id>/call/<n>/``), in process: the real headers, rate limits,
usage, history and tool loop are on its page and in its data, the same figures as the session's, and the key nowhere."""
from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from explainer.inspect.models import Call, Session

pytestmark = pytest.mark.django_db(transaction=True)
HOSTILE = '<script>alert("x")</script>'
WEATHER = {"name": "get_weather", "description": "Weather for a city.", "input_schema": {"type": "object"}}


def _call(session, n, request, response, **kw):
    defaults = {"method": "POST", "path": "/v1/messages", "status": 200, "model": request.get("model", ""),
                "request_headers": {"anthropic-version": "2023-06-01", "x-api-key": "(not recorded)"},
                "ratelimit": {"anthropic-ratelimit-requests-limit": "50", "anthropic-ratelimit-requests-remaining": str(50 - n),
                              "anthropic-ratelimit-requests-reset": "2026-12-07T10:00:00Z"},
                "request_id": f"req_{n:04d}", "timings": {"first_byte": 12.0, "first_token": None, "total": 40.0}}
    return Call.objects.create(session=session, started_at=timezone.now() + timedelta(seconds=n), request=request, response=response,
                               **{**defaults, **kw})


def _message(content, usage, stop="end_turn"):
    return {"type": "message", "role": "assistant", "model": "claude-sonnet-4-6", "content": content, "stop_reason": stop, "usage": usage}


@pytest.fixture
def session():
    s = Session.objects.create()
    first = [{"role": "user", "content": "What is on invoice 1001?"}]
    _call(s, 1, {"model": "claude-sonnet-4-6", "max_tokens": 300, "messages": first},
          _message([{"type": "text", "text": "A desk lamp."}], {"input_tokens": 12, "output_tokens": 4}))
    tool_use = {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}
    second = [*first, {"role": "assistant", "content": "A desk lamp."},
              {"role": "user", "content": "And the weather? " + HOSTILE},
              {"role": "assistant", "content": [tool_use]},
              {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "Service down", "is_error": True}]}]
    _call(s, 2, {"model": "claude-sonnet-4-6", "max_tokens": 300, "tools": [WEATHER],
                 "system": [{"type": "text", "text": "Be brief. " * 30, "cache_control": {"type": "ephemeral"}}], "messages": second},
          _message([{**tool_use, "id": "toolu_2"}], {"input_tokens": 40, "output_tokens": 9, "cache_creation_input_tokens": 1200,
                                                      "cache_read_input_tokens": 300,
                                                      "cache_creation": {"ephemeral_5m_input_tokens": 1200, "ephemeral_1h_input_tokens": 0}},
                   "tool_use"),
          ratelimit={"anthropic-ratelimit-tokens-limit": "80000", "anthropic-ratelimit-tokens-remaining": "78500",
                     "anthropic-ratelimit-tokens-reset": "2026-12-07T10:00:05Z", "retry-after": "7"})
    return s


def test_a_call_opens_with_its_real_headers_usage_history_and_tool_loop(session):
    client = Client()
    page = client.get(f"/inspect/{session.id}/call/2/")
    assert page.status_code == 200 and page["Cache-Control"] == "no-store"
    html = page.content.decode()
    for text in ("anthropic-version: 2023-06-01", "x-api-key: ••••••••", "anthropic-ratelimit", "78500 of 80000", "retry-after",
                 "req_0002", "cache_creation_input_tokens", "1200", "cache_read_input_tokens", "get_weather", "is_error",
                 "Service down", "What is on invoice 1001?", "Claude's tokenizer is not public", "Replay on the bundled model"):
        assert text in html, text
    assert "<script>alert" not in html and "&lt;script&gt;alert" in html
    data = client.get(f"/inspect/{session.id}/call/2/data").json()
    assert data["call"]["usage"]["cache_read_input_tokens"] == 300
    assert [r["kind"] for r in data["gateway"]["rate_limits"]] == ["tokens"]
    assert [m["state"] for m in data["conversation"]["messages"]] == ["resent", "new", "new", "new", "new"]
    assert [(s["type"], s["name"]) for s in data["tools"]["loop"]] == [("tool_use", "get_weather"), ("tool_result", "get_weather"),
                                                                      ("tool_use", "get_weather")]
    tokens = {r["part"]: r for r in data["tokens"]}
    assert tokens["input, in all"]["claude"] == 40 + 1200 + 300 and tokens["input, in all"]["bundled"] > 0
    assert tokens["reply (output)"]["claude"] == 9


def test_the_call_page_and_the_session_page_show_the_same_figures(session):
    client = Client()
    session_html = client.get(f"/inspect/{session.id}/").content.decode()
    rows = client.get(f"/inspect/{session.id}/data").json()["calls"]
    for row in rows:
        n = row["index"]
        assert f'href="/inspect/{session.id}/call/{n}/"' in session_html
        data = client.get(f"/inspect/{session.id}/call/{n}/data").json()["call"]
        for key in ("usage", "cost_usd", "cumulative_usd", "cache", "context", "findings", "request_id", "ratelimit", "timings_ms"):
            assert data[key] == row[key], key
        html = client.get(f"/inspect/{session.id}/call/{n}/").content.decode()
        cost = re.search(r'data-figure="cost">([^<]+)<', html).group(1)
        assert cost in session_html  # the same text for the same number


def test_no_key_and_no_such_call(session):
    client = Client()
    assert client.get(f"/inspect/{session.id}/call/3/").status_code == 404
    assert client.get(f"/inspect/{session.id}/call/0/").status_code == 404
    assert client.get(f"/inspect/{session.id}/call/x/data").status_code == 404
    assert client.get("/inspect/nope/call/1/").status_code == 404


def test_a_long_call_replays_cut_to_the_bundled_models_window_and_says_so():
    session = Session.objects.create()
    history = []
    for n in range(40):
        history += [{"role": "user", "content": f"Question {n}: what is on invoice {1000 + n}, and when was it paid?"},
                    {"role": "assistant", "content": f"Invoice {1000 + n} is for a desk lamp; it was paid on day {n}."}]
    history.append({"role": "user", "content": "And the last one?"})
    body = {"model": "claude-sonnet-4-6", "max_tokens": 100, "system": "You answer from the billing records. " * 200, "messages": history}
    _call(session, 1, body, _message([{"type": "text", "text": "Paid."}], {"input_tokens": 4000, "output_tokens": 2}))
    client = Client()
    data = client.get(f"/inspect/{session.id}/call/1/data").json()
    notes = " ".join(data["replay"]["notes"])
    assert "cut to the window" in notes and "leaves out the first" in notes and "The system prompt is cut" in notes, notes
    links = {link["slug"]: link["url"] for link in data["replay"]["links"]}
    assert {"compose", "tokenize", "conversation", "caching", "tools"} <= set(links)
    page = client.get(links["compose"]).content.decode()
    assert "And the last one?" in page and "Question 39" not in page
    tokenize = client.get(links["tokenize"]).content.decode()
    assert "would refuse this request" not in tokenize and "of its 512-token window" in tokenize


@pytest.mark.parametrize("request_body, response, extra", [
    (None, None, {"status": 502}),
    ({"truncated_json": '{"model": "claude-sonnet-4-6", "messages": [' + HOSTILE}, {"type": "error", "error": {"type": "x", "message": HOSTILE}},
     {"status": 429, "ratelimit": {"retry-after": "7", "anthropic-ratelimit-weird": HOSTILE}}),
    ({"not_json": HOSTILE}, {"not_json": "<html>"}, {"status": 500}),
    ({"model": 5, "system": [1, {"type": "text"}, None], "tools": "no", "messages": [7, {"role": None, "content": 3},
      {"role": "user", "content": [1, {"type": "tool_result", "content": [{"type": "text", "text": HOSTILE}, 2]},
                                   {"type": "image", "source": {"type": "base64", "bytes": "x"}}]}]},
     {"type": "message", "content": "oops", "usage": {"input_tokens": "many", "output_tokens": None}}, {"events": [1, {"type": HOSTILE}]}),
    ({"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "hi"}]}, {"input_tokens": 3},
     {"path": "/v1/messages/count_tokens"}),
])
def test_odd_and_hostile_records_still_open(request_body, response, extra):
    session = Session.objects.create()
    _call(session, 1, request_body if request_body is not None else {}, response, **extra)
    Call.objects.filter(session=session).update(request=request_body)
    client = Client()
    page = client.get(f"/inspect/{session.id}/call/1/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "<script>alert" not in html
    assert client.get(f"/inspect/{session.id}/call/1/data").status_code == 200
    assert client.get(f"/inspect/{session.id}/").status_code == 200 and client.get(f"/inspect/{session.id}/data").status_code == 200


@pytest.mark.slow  # runs the bundled model once per stage
def test_every_replay_link_opens(session):
    client = Client()
    links = client.get(f"/inspect/{session.id}/call/2/data").json()["replay"]["links"]
    assert [link["slug"] for link in links][:3] == ["overview", "compose", "gateway"]
    for link in links:
        page = client.get(link["url"])
        assert page.status_code == 200, (link["slug"], page.content[:500])
        html = page.content.decode()
        assert "The API would refuse this request" not in html, link["slug"]  # the replay is a request that runs
        # ... and each of its stages leads back to the call it replays, keeps that in its links to the other
        # stages, and never in the link it offers to share (the session's id is what opens the session)
        assert f'href="/inspect/{session.id}/call/2/" data-replay-back' in html, link["slug"]
        nxt = re.search(r'<a rel="next" class="button" href="([^"]+)"', html)
        if nxt:
            assert f"call={session.id}%2F2" in nxt.group(1).replace("&amp;", "&"), link["slug"]
        assert session.id not in re.search(r'<link rel="canonical" href="[^"]*">', html).group(0), link["slug"]
        assert session.id not in re.search(r'data-copy-link="[^"]*"', html).group(0), link["slug"]


@pytest.mark.parametrize("raw", ["x", "abc/0", "abc/", "/3", "a b/3", "abc/3/4", "<script>/1", "a" * 40 + "/1"])
def test_a_tampered_back_link_to_a_call_is_a_clear_400(raw):
    page = Client().get("/learn/tokenize/", {"call": raw})
    assert page.status_code == 400 and "inspector session" in page.content.decode() and "<script>/" not in page.content.decode()
