"""The event protocol's declarations (explainer/lifecycle/frames.py) and their JSON Schema (static/schema/frames.json):
the committed schema is the generated one, every tag is a named constant, and what the engine and a room's rules
really emit fits them. Sockets' frames are checked too, in every socket test (tests/conftest.py), and the browser's
in the browser tests (tests/browser/conftest.py)."""
import json

import pytest

from explainer.lifecycle import frame_schema as fs
from explainer.lifecycle import frames as fr
from explainer.lifecycle import room_frames as rf
from explainer.lifecycle.engine import Engine
from explainer.lifecycle.errors import APIError
from explainer.lifecycle.payload import parse_request
from explainer.lifecycle.prompt_cache import PromptCache
from explainer.rooms.session import ME, RoomSession
from tests.frame_schema import assert_frames, validator

WEATHER = {"name": "get_weather", "description": "The weather in a city.",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
ASK = [{"role": "user", "content": "What is the weather in Paris today?"}]
BODIES = {
    "text": {"model": "claude-haiku-4-5", "max_tokens": 10, "temperature": 0.9, "messages": ASK},
    "stop sequence": {"model": "claude-haiku-4-5", "max_tokens": 10, "messages": ASK, "stop_sequences": ["e"]},
    "tool, any": {"model": "claude-haiku-4-5", "max_tokens": 24, "messages": ASK, "tools": [WEATHER], "tool_choice": {"type": "any"}},
    "tool, named": {"model": "claude-haiku-4-5", "max_tokens": 24, "messages": ASK, "tools": [WEATHER],
                    "tool_choice": {"type": "tool", "name": "get_weather"}},
    "cached": {"model": "claude-haiku-4-5", "max_tokens": 4, "messages": ASK,
               "system": [{"type": "text", "text": "You answer questions about the weather. " * 40, "cache_control": {"type": "ephemeral"}}]},
}


def test_the_committed_schema_is_the_generated_one():
    assert fs.SCHEMA_PATH.read_text(encoding="utf-8") == fs.schema_text(), "run: python -m explainer.lifecycle.frame_schema"
    assert fs.main(["--check"]) == 0


def test_the_command_writes_the_schema_and_check_notices_a_stale_one(tmp_path):
    path = tmp_path / "frames.json"
    path.write_text("{}")
    assert fs.main(["--check", "--path", str(path)]) == 1
    assert fs.main(["--path", str(path)]) == 0 and fs.main(["--check", "--path", str(path)]) == 0
    assert json.loads(path.read_text())["$defs"]["Token"]["properties"]["type"]["const"] == fr.TOKEN


def _tags(node) -> set[str]:
    """Every value a ``type`` property may take, anywhere in the schema."""
    found = set()
    if isinstance(node, dict):
        t = (node.get("properties") or {}).get("type")
        if isinstance(t, dict):
            found |= {t["const"]} if "const" in t else set(t.get("enum", ()))
        for v in node.values():
            found |= _tags(v)
    elif isinstance(node, list):
        for v in node:
            found |= _tags(v)
    return found


def test_every_tag_is_a_named_constant():
    names = {v for k, v in vars(fr).items() if k.isupper() and not k.startswith("_") and isinstance(v, str)}
    tags = _tags(fs.json_schema())
    assert tags <= names
    # a prefix, and the channel layer's messages between a room's sockets (never sent to a browser)
    assert names - tags == {fr.EXPLAINER_PREFIX, fr.ROOM_FRAME, fr.PRESENCE, fr.PRESENCE_QUERY, fr.GUESS_IN,
                            fr.ASK_IN, fr.ASK_TAKEN, fr.ASK_REFUSED, fr.ASK_DONE}


def test_the_schema_refuses_what_the_declarations_do_not_say():
    ok = fr.ContentBlockDelta(type=fr.CONTENT_BLOCK_DELTA, index=0, delta=fr.TextDelta(type=fr.TEXT_DELTA, text="Hi"))
    assert_frames([ok], "EngineEvent")
    for bad in ({**ok, "extra": 1}, {**ok, "delta": {"type": fr.TEXT_DELTA, "text": 3}}, {"type": "message_begin"},
                {k: v for k, v in ok.items() if k != "index"}, rf.RoomEnded(type=fr.ROOM_ENDED)):
        assert next(validator("EngineEvent").iter_errors(bad), None) is not None, bad
    assert next(validator("StreamCommand").iter_errors({"type": fr.CANCEL}), None) is None
    assert next(validator("RoomCommand").iter_errors({"type": "run", "pace_ms": "fast"}), None) is not None


@pytest.mark.parametrize("name", BODIES)
@pytest.mark.slow
def test_the_engine_emits_declared_events_in_the_api_order(name):
    cache = PromptCache(min_tokens=16)
    for _ in range(2 if name == "cached" else 1):  # a write, then a read
        events = list(Engine().stream(parse_request(BODIES[name]), seed=3, prompt_cache=cache))
        assert_frames(events, "EngineEvent")
        api = [e["type"] for e in events if not fr.is_explainer(e)]
        assert api[:3] == [fr.MESSAGE_START, fr.CONTENT_BLOCK_START, fr.PING]
        assert api[-3:] == [fr.CONTENT_BLOCK_STOP, fr.MESSAGE_DELTA, fr.MESSAGE_STOP]
        assert events[0]["type"] == fr.PROMPT and events[-1]["type"] == fr.DONE
    if name == "cached":
        assert events[0]["cache"]["read"] > 0
    if name.startswith("tool"):
        assert any(e.get("constrained") for e in events if e["type"] == fr.TOKEN)


def test_a_rooms_rules_emit_declared_frames():
    """A whole run through RoomSession with real engine events: every frame for a client is a RoomFrame."""
    def clean(raw):
        if raw == "bad":
            raise ValueError("not in a classroom")
        return raw or None

    sent = []

    def keep(outs):
        sent.extend(o.frame for o in outs if o.to == ME or o.kind is not None)  # not the channel layer's own messages
        return outs

    req = parse_request(BODIES["text"])
    events = list(Engine().stream(req, seed=5))
    p = RoomSession("p1", "srcP", clean_nickname=clean)
    keep(p.become_presenter())
    keep(p.presence("join", "s1", "Ada"))
    keep(p.take_roster())
    p.start_run(req, p.run_pace({"pace_ms": 0}), "pause", "run1")
    tokens = [e for e in events if e["type"] == fr.TOKEN]
    for ev in events:
        if ev["type"] == fr.TOKEN and ev is tokens[1]:
            keep(p.hold(ev, 0.0))
            keep(p.control(fr.GUESS, {}))
            s = RoomSession("s1", "srcS", clean_nickname=clean)
            s.heard("guess", ev["index"])
            keep(s.send_guess(ev["text"]))
            keep(s.set_nickname("bad", 0.0))  # refused: the error envelope names the frame
            keep(s.set_nickname("Ada L.", 1.0))
            p.guess_in(ev["index"], "s1", ev["text"])
            keep(p.take_tally())
            keep(p.presence("join", "s2"))  # joins mid-run: catches up
            keep(p.reveal())
        keep(p.run_event(ev, 1.0))
    keep(p.show_state({"slug": "sampling", "href": "/learn/sampling/", "title": "Sampling", "number": 4}))
    keep(p.run_stopped())
    keep(p.run_failed())
    keep(p.end_room())
    kinds = {f["type"] for f in sent}
    assert {fr.ROOM_RUN, fr.ROOM_TOKEN, fr.ROOM_READY, fr.ROOM_GUESS, fr.ROOM_GUESSED, fr.ROOM_TALLY, fr.ROOM_ANSWERS,
            fr.ROOM_CATCHUP, fr.ROOM_REVEAL, fr.ROOM_NICKNAME, fr.ROOM_MODE, fr.ROOM_STUDENTS, fr.ROOM_STATE, fr.ROOM_ENDED,
            fr.ERROR} <= kinds
    assert_frames(sent, "RoomFrame")
    broadcast = [f for f in sent if "seq" in f]
    assert [f["seq"] for f in broadcast] == list(range(1, len(broadcast) + 1))


def test_an_error_is_the_declared_envelope():
    body = APIError("rate_limit_error", "Slow down.").body("req_123")
    assert body == {"type": fr.ERROR, "error": {"type": "rate_limit_error", "message": "Slow down."}, "request_id": "req_123"}
    assert_frames([body], "StreamFrame")
    assert_frames([body], "RoomFrame")
