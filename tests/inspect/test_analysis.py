"""The inspector's analysis (explainer/inspect/analysis.py) on hand-made sessions: no server, no database."""
from __future__ import annotations

import os

import pytest

from explainer.inspect.analysis import analyse, context_split, history_changes, outcome
from explainer.inspect.prefix import around_at, breakpoints, first_difference, leaves
from explainer.inspect.sse import StreamRecord
from explainer.lifecycle.pricing import cost

LONG = "You are a careful assistant for the billing team. " * 120  # about 6,000 characters: over any cache minimum
MODEL = "claude-sonnet-4-5"


def system(stamp: str = "10:00") -> list[dict]:
    return [{"type": "text", "text": f"Now: 2026-12-07 {stamp}. " + LONG, "cache_control": {"type": "ephemeral"}}]


def call(index: int, body: dict, usage: dict | None = None, *, started: float = 0.0, content=None, stop="end_turn",
         status: int = 200, path: str = "/v1/messages") -> dict:
    usage = {"input_tokens": 10, "output_tokens": 5, **(usage or {})}
    response = {"type": "message", "role": "assistant", "model": MODEL, "content": content or [{"type": "text", "text": "ok"}],
                "stop_reason": stop, "usage": usage}
    return {"index": index, "path": path, "status": status, "started_at": started, "request": {"model": MODEL, **body},
            "response": response, "timings_ms": {"first_token": 100.0, "total": 200.0}}


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def test_the_first_difference_is_the_field_and_character_that_changed():
    a, b = system("10:00"), system("10:05")
    d = first_difference(leaves({"system": a}), leaves({"system": b}))
    assert d is not None and d["path"] == "system[0].text"
    assert d["offset"] == len(os.path.commonprefix([a[0]["text"], b[0]["text"]]))
    assert (d["was"], d["now"]) == ("10:00.", "10:05.")
    at = around_at(d["before"], d["offset"])
    assert d["before"][:at] == d["after"][:at] and d["before"][at] == "0" and d["after"][at] == "5"
    far = first_difference([("system", "x" * 100 + "a")], [("system", "x" * 100 + "b")])
    assert far["before"][around_at(far["before"], far["offset"])] == "a" and far["before"].startswith("…")
    tools = [{"name": "a", "description": "first"}, {"name": "b", "description": "second"}]
    changed = [tools[0], {"name": "b", "description": "second, now longer"}]
    d = first_difference(leaves({"tools": tools}), leaves({"tools": changed}))
    assert (d["path"], d["offset"]) == ("tools[1].description", len("second"))
    msgs = [user("hi"), {"role": "assistant", "content": "yo"}, user("q"), {"role": "user", "content": [{"type": "text", "text": "abc"}]}]
    later = msgs[:3] + [{"role": "user", "content": [{"type": "text", "text": "abd"}]}]
    assert first_difference(leaves({"messages": msgs}), leaves({"messages": later}))["path"] == "messages[3].content[0].text"
    assert first_difference(leaves({"messages": msgs}), leaves({"messages": msgs + [user("more")]})) is None


def test_breakpoints_are_found_in_prefix_order_with_their_ttl():
    body = {"tools": [{"name": "t", "cache_control": {"type": "ephemeral", "ttl": "1h"}}], "system": system(),
            "messages": [{"role": "user", "content": [{"type": "text", "text": "x", "cache_control": {"type": "ephemeral"}}]}]}
    marks = breakpoints(body)
    assert [(m["path"], m["ttl"]) for m in marks] == [("tools[0]", "1h"), ("system[0]", "5m"), ("messages[0].content[0]", "5m")]
    assert [m["leaves"] for m in marks] == sorted(m["leaves"] for m in marks)
    assert marks[-1]["leaves"] == len(leaves(body))


def test_the_outcome_is_read_from_usage():
    assert outcome({"cache_read_input_tokens": 5}, []) == "hit"
    assert outcome({"cache_read_input_tokens": 5, "cache_creation_input_tokens": 3}, []) == "partial"
    assert outcome({"cache_creation_input_tokens": 3}, []) == "miss"
    assert outcome({}, [{"path": "system[0]", "ttl": "5m", "leaves": 2}]) == "miss"
    assert outcome({"input_tokens": 9}, []) == "none"


def test_a_changed_timestamp_is_diagnosed_at_its_path_and_offset():
    calls = [call(1, {"system": system("10:00"), "messages": [user("a")]}, {"cache_creation_input_tokens": 1500}),
             call(2, {"system": system("10:00"), "messages": [user("b")]}, {"cache_read_input_tokens": 1500}, started=30),
             call(3, {"system": system("10:05"), "messages": [user("c")]}, {"cache_creation_input_tokens": 1500}, started=60)]
    rows = analyse(calls)["calls"]
    assert [r["cache"]["outcome"] for r in rows] == ["miss", "hit", "miss"]
    assert rows[0]["cache"]["reason"] == "first_write"
    fd = rows[2]["cache"]["first_difference"]
    assert rows[2]["cache"]["reason"] == "prefix_changed"
    assert fd == {"call": 2, "path": "system[0].text", "offset": len("Now: 2026-12-07 10:0")}  # the latest of the equals
    text = next(f["text"] for f in rows[2]["findings"] if f["kind"] == "cache")
    assert "system[0].text" in text and "10:00" in text and "10:05" in text


def test_ttl_expiry_minimum_breakpoints_and_reordered_tools_are_told_apart():
    body = {"system": system(), "messages": [user("a")]}
    expired = analyse([call(1, body, {"cache_creation_input_tokens": 1500}),
                       call(2, body, {"cache_creation_input_tokens": 1500}, started=400)])["calls"]
    assert expired[1]["cache"]["reason"] == "ttl_expired"
    short = {"system": [{"type": "text", "text": "short", "cache_control": {"type": "ephemeral"}}], "messages": [user("a")]}
    assert analyse([call(1, short, {"input_tokens": 20})])["calls"][0]["cache"]["reason"] == "under_minimum"
    many = {"system": [{"type": "text", "text": LONG, "cache_control": {"type": "ephemeral"}}] * 5, "messages": [user("a")]}
    assert analyse([call(1, many)])["calls"][0]["cache"]["reason"] == "too_many_breakpoints"
    tools = [{"name": n, "description": LONG, "input_schema": {"type": "object"}} for n in ("search", "fetch")]
    marked = lambda ts: [*ts[:-1], {**ts[-1], "cache_control": {"type": "ephemeral"}}]  # noqa: E731
    rows = analyse([call(1, {"tools": marked(tools), "messages": [user("a")]}, {"cache_creation_input_tokens": 3000}),
                    call(2, {"tools": marked(tools[::-1]), "messages": [user("a")]}, {"cache_creation_input_tokens": 3000}, started=5)])["calls"]
    assert rows[1]["cache"]["reason"] == "tools_reordered"
    assert "fetch, search" in rows[1]["findings"][0]["text"]


def test_a_long_unmarked_prefix_resent_is_worth_a_breakpoint():
    body = {"system": LONG, "messages": [user("a")]}
    rows = analyse([call(1, body, {"input_tokens": 1600}), call(2, {**body, "messages": [user("b")]}, {"input_tokens": 1600})])["calls"]
    assert rows[1]["cache"] == {"outcome": "none", "reason": "no_breakpoint", "first_difference": None, "around": None}
    assert any("no cache_control" in f["text"] for f in rows[1]["findings"])


def test_cost_is_the_price_table_applied_to_the_real_usage_and_adds_up():
    usages = [{"input_tokens": 100, "output_tokens": 50, "cache_creation_input_tokens": 2000,
               "cache_creation": {"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 1000}},
              {"input_tokens": 120, "output_tokens": 70, "cache_read_input_tokens": 2000}]
    rows = analyse([call(1, {"messages": [user("a")]}, usages[0]), call(2, {"messages": [user("b")]}, usages[1])])["calls"]
    expected = [cost(MODEL, {"input_tokens": 10, "output_tokens": 5, **u})["total"] for u in usages]
    assert [r["cost_usd"] for r in rows] == pytest.approx(expected)
    assert rows[1]["cumulative_usd"] == pytest.approx(sum(expected))
    unknown = call(1, {"messages": [user("a")]})
    unknown["request"]["model"] = "claude-opus-5-5"  # price not known here: no number made up
    assert analyse([unknown])["calls"][0]["cost_usd"] is None


def test_the_context_split_adds_up_to_the_input_and_names_the_new_turn():
    body = {"tools": [{"name": "t", "description": "d" * 100}], "system": "s" * 200,
            "messages": [user("h" * 300), {"role": "assistant", "content": "a" * 100}, user("n" * 50)]}
    split = context_split(body, 1000)
    assert sum(split.values()) == 1000
    assert split["history"] > split["system"] > split["new_turn"] > 0 and split["tools"] > 0


def test_dropped_and_summarised_messages_are_found_between_consecutive_calls():
    turns = [user("one"), {"role": "assistant", "content": "two"}, user("three"), {"role": "assistant", "content": "four"}, user("five")]
    assert history_changes(turns, turns + [{"role": "assistant", "content": "six"}, user("seven")]) == ([], [])
    assert history_changes(turns, [user("another conversation")]) == ([], [])
    assert history_changes(turns, turns[2:] + [user("x")]) == ([0, 1], [])
    summary = user("Summary of earlier conversation: one, two")
    assert history_changes(turns, [summary, *turns[2:]]) == ([0, 1], [0])
    rows = analyse([call(1, {"messages": turns}), call(2, {"messages": turns[2:] + [{"role": "assistant", "content": "six"}, user("7")]})])["calls"]
    assert any(f["kind"] == "context" and "messages[0]" in f["text"] for f in rows[1]["findings"])


def test_tool_loops_errors_cuts_and_no_end_turn_are_flagged():
    use = [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]
    calls = [call(n, {"messages": [user(f"turn {n}")]}, content=use, stop="tool_use") for n in range(1, 5)]
    failed = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "boom", "is_error": True}]}
    calls[3]["request"]["messages"] = [user("go"), {"role": "assistant", "content": use}, failed]
    rows = analyse(calls)["calls"]
    loops = [[f["text"] for f in r["findings"] if f["kind"] == "loop"] for r in rows]
    assert not loops[0] and not loops[1]
    assert "3rd time" in loops[2][0] and "4th time" in loops[3][0]
    assert any("never reached end_turn" in t for t in loops[3])
    assert any(f["kind"] == "tools" and "is_error" in f["text"] and "get_weather" in f["text"] for f in rows[3]["findings"])
    cut = analyse([call(1, {"max_tokens": 5, "messages": [user("x")]}, content=use, stop="max_tokens")])["calls"][0]
    assert any("cut by max_tokens (5)" in f["text"] for f in cut["findings"])


def test_errors_become_findings_without_cost():
    bad = call(1, {"messages": [user("x")]}, status=429)
    bad["response"] = {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}
    row = analyse([bad])["calls"][0]
    assert row["cost_usd"] is None and row["findings"][0]["kind"] == "error" and "retry-after" in row["findings"][0]["text"]


def test_a_stream_split_anywhere_reassembles_to_the_same_message():
    events = [
        {"type": "message_start", "message": {"id": "m", "type": "message", "role": "assistant", "content": [], "model": MODEL,
                                               "stop_reason": None, "usage": {"input_tokens": 3, "output_tokens": 1}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Héllo"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "t", "name": "f", "input": {}}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": '{"a": '}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "[1, 2]}"}},
        {"type": "content_block_stop", "index": 1},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None}, "usage": {"output_tokens": 9}},
        {"type": "message_stop"},
    ]
    import json

    wire = "".join(f"event: {e['type']}\ndata: {json.dumps(e, ensure_ascii=False)}\n\n" for e in events).encode()
    for step in (1, 7, 64, len(wire)):
        s = StreamRecord()
        for n in range(0, len(wire), step):
            s.feed(wire[n:n + step], float(n))
        m = s.message()
        assert m["content"] == [{"type": "text", "text": "Héllo"}, {"type": "tool_use", "id": "t", "name": "f", "input": {"a": [1, 2]}}]
        assert m["stop_reason"] == "tool_use" and m["usage"] == {"input_tokens": 3, "output_tokens": 9}
        assert [e["type"] for e in s.events] == [e["type"] for e in events]
