"""A scripted session through the inspector, as an app with the SDK would make it, read back from /data.

Eleven calls: a conversation whose input grows, a system prompt whose timestamp changes between calls 3
and 4, a history the client trims, an agent asking for the same tool with the same input four times,
and a tool call cut by max_tokens. The stand-in upstream (tests/inspect/upstream.py) caches as the API
does, so the cache outcomes below come from the upstream's own usage, not from the test.
"""
from __future__ import annotations

import json
import os

import anthropic
import httpx2
import pytest

pytestmark = pytest.mark.slow  # see the marker in pyproject.toml

MODEL = "claude-sonnet-4-6"
RULES = "Answer billing questions from the account's records; cite the invoice number; never guess amounts. " * 60
ASK = '[[tool get_weather {"city": "Paris"}]]'
WEATHER = {"name": "get_weather", "description": "Weather for a city.",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


def system(stamp: str) -> list[dict]:
    return [{"type": "text", "text": f"Current time: 2026-12-07 {stamp}. " + RULES, "cache_control": {"type": "ephemeral"}}]


def test_a_scripted_session_is_explained_call_by_call(base_url):
    sdk = anthropic.Anthropic(api_key="sk-ant-scripted-session-key", base_url=base_url, max_retries=0, timeout=30)
    history: list[dict] = []

    def turn(text: str, stamp: str, stream: bool = False, **extra) -> anthropic.types.Message:
        history.append({"role": "user", "content": text})
        kw = {"model": MODEL, "max_tokens": 300, "system": system(stamp), "messages": history, **extra}
        if stream:
            with sdk.messages.stream(**kw) as s:
                msg = s.get_final_message()
        else:
            msg = sdk.messages.create(**kw)
        history.append({"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in msg.content]})
        return msg

    for n, stamp in enumerate(["10:00", "10:00", "10:00", "10:05", "10:05"], 1):  # calls 1-5
        turn(f"Question {n}: what is on invoice {1000 + n}?", stamp, stream=n % 2 == 0)
    del history[:2]  # call 6: the client trims the oldest exchange
    turn("Question 6: and the next one?", "10:05")
    tool_turn = {"role": "user", "content": f"Check the weather first. {ASK}"}
    history.append(tool_turn)
    for _ in range(4):  # calls 7-10: the agent asks for the same tool with the same input, four times
        msg = sdk.messages.create(model=MODEL, max_tokens=300, system=system("10:05"), tools=[WEATHER], messages=history)
        assert msg.stop_reason == "tool_use"
        use = msg.content[0]
        history.append({"role": "assistant", "content": [use.model_dump(exclude_none=True)]})
        history.append({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": use.id, "content": "Service unavailable", "is_error": True},
            {"type": "text", "text": f"Try again. {ASK}"}]})
    cut = sdk.messages.create(model=MODEL, max_tokens=5, system=system("10:05"), tools=[WEATHER], messages=history)  # call 11
    assert cut.stop_reason == "max_tokens"

    data = httpx2.get(base_url + "/data").json()
    calls = data["calls"]
    assert [c["index"] for c in calls] == list(range(1, 12))
    assert all(c["status"] == 200 and c["path"] == "/v1/messages" and c["model"] == MODEL for c in calls)
    assert [c["stream"] for c in calls[:5]] == [False, True, False, True, False]

    inputs = [c["context"]["input_tokens"] for c in calls]
    assert inputs[:5] == sorted(inputs[:5]) and len(set(inputs[:5])) == 5  # every turn resends everything before it
    assert all(c["usage"]["input_tokens"] + c["usage"]["cache_read_input_tokens"] + c["usage"]["cache_creation_input_tokens"]
               == c["context"]["input_tokens"] for c in calls)
    for c in calls:
        parts = c["context"]
        assert parts["estimate"] is True and parts["tools"] + parts["system"] + parts["history"] + parts["new_turn"] == parts["input_tokens"]

    outcomes = [c["cache"]["outcome"] for c in calls]
    assert outcomes[:5] == ["miss", "hit", "hit", "miss", "hit"]
    assert calls[0]["cache"]["reason"] == "first_write"
    miss = calls[3]["cache"]
    a, b = system("10:00")[0]["text"], system("10:05")[0]["text"]
    assert miss["reason"] == "prefix_changed"
    assert miss["first_difference"] == {"call": 3, "path": "system[0].text", "offset": len(os.path.commonprefix([a, b]))}
    sentence = next(f["text"] for f in calls[3]["findings"] if f["kind"] == "cache")
    assert "`10:00.` became `10:05.`" in sentence and "system[0].text" in sentence

    dropped = [f["text"] for f in calls[5]["findings"] if f["kind"] == "context"]
    assert dropped and "2 message(s)" in dropped[0] and "Question 1" in dropped[0]
    assert not any(f["kind"] == "context" for c in calls[:5] for f in c["findings"])

    loops = [[f["text"] for f in c["findings"] if f["kind"] == "loop" and "get_weather" in f["text"]] for c in calls]
    assert loops[6] == [] and loops[7] == []
    assert "3rd time" in loops[8][0] and "4th time" in loops[9][0]
    assert any("is_error" in f["text"] for f in calls[7]["findings"])
    assert any("cut by max_tokens (5)" in f["text"] for f in calls[10]["findings"])
    assert any("never reached end_turn" in f["text"] for f in calls[10]["findings"])

    costs = [c["cost_usd"] for c in calls]
    assert all(x and x > 0 for x in costs)
    assert abs(calls[-1]["cumulative_usd"] - sum(costs)) < 1e-9 and abs(data["total_usd"] - sum(costs)) < 1e-9
    assert sum(c["most_expensive"] for c in calls) == 1
    for c in calls:
        t = c["timings_ms"]
        assert t["total"] >= (t["first_byte"] or 0) > 0 and c["request_id"].startswith("req_standin_")
        assert (t["first_token"] is not None) == c["stream"]

    page = httpx2.get(base_url + "/").text
    assert "system[0].text" in page and "4th time" in page and json.dumps(data["total_usd"])  # the page shows the findings

    # Each call opens stage by stage on its real payload, with the session's figures (tests/inspect/test_call_page.py
    # checks the page's words; here, the SDK's own calls through the stand-in).
    for n in (4, 6, 10):
        one = httpx2.get(f"{base_url}/call/{n}/data").json()
        row = calls[n - 1]
        assert {k: one["call"][k] for k in ("usage", "cost_usd", "cache", "findings", "request_id", "ratelimit")} == \
               {k: row[k] for k in ("usage", "cost_usd", "cache", "findings", "request_id", "ratelimit")}
        assert [r["kind"] for r in one["gateway"]["rate_limits"]] == ["requests"] and one["gateway"]["request_id"] == row["request_id"]
        heads = dict(one["compose"]["headers"][1:])
        assert heads.get("x-api-key", heads.get("authorization")) == "••••••••" and "anthropic-version" in heads
        tokens = {r["part"]: r for r in one["tokens"]}
        assert tokens["input, in all"]["claude"] == row["context"]["input_tokens"] and tokens["input, in all"]["bundled"] > 0
    assert len(httpx2.get(f"{base_url}/call/6/data").json()["conversation"]["dropped"]) == 2
    loop = httpx2.get(f"{base_url}/call/10/data").json()["tools"]["loop"]
    assert [s["type"] for s in loop] == ["tool_use", "tool_result"] * 3 + ["tool_use"]
    assert all(s["name"] == "get_weather" for s in loop) and all(s["is_error"] for s in loop if s["type"] == "tool_result")
    assert "sk-ant-scripted-session-key" not in httpx2.get(f"{base_url}/call/10/").text
