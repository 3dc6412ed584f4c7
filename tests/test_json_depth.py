"""One depth limit for every JSON the app accepts (explainer/llm/jsonlimits.py): too deep a
document is refused with a clear 400 or error frame before anything recurses over it, and
RecursionError never escapes (no 500 page, no WebSocket closed with 1011)."""
import json
import sys

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from explainer.asgi import application
from explainer.lifecycle.demo_tools import validate_input
from explainer.lifecycle.scenario import Scenario, ScenarioError
from explainer.llm import jsonlimits
from explainer.llm.constrained import JsonConstraint, UnsupportedSchema
from explainer.llm.jsonlimits import MAX_JSON_DEPTH, TooDeep
from explainer.stages.registry import built
from explainer.stages.runs import codec, engine

ORIGIN = [(b"origin", b"http://127.0.0.1:8000")]
STREAM_BODY = {"model": "claude-haiku-4-5", "max_tokens": 4, "messages": [{"role": "user", "content": "What is a DAG?"}],
               "explainer": {"seed": 3}}


def nested_list(depth: int):
    """[[[...]]] with ``depth`` lists, built without recursion."""
    v: list = []
    for _ in range(depth - 1):
        v = [v]
    return v


def nested_schema(levels: int) -> dict:
    """An object schema with ``levels`` objects inside the outer one (JSON depth 2 * levels + 2)."""
    inner: dict = {"type": "object", "properties": {}}
    for _ in range(levels):
        inner = {"type": "object", "properties": {"a": inner}}
    return inner


# ---- the helper -----------------------------------------------------------------------------------

def test_loads_accepts_up_to_the_limit_and_refuses_past_it():
    assert jsonlimits.loads("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH) == nested_list(MAX_JSON_DEPTH)
    assert jsonlimits.loads(b'{"a": [1, {"b": null}]}') == {"a": [1, {"b": None}]}
    for n in (MAX_JSON_DEPTH + 1, 600, 30_000, 1_000_000):
        with pytest.raises(TooDeep):
            jsonlimits.loads("[" * n + "]" * n)
    with pytest.raises(TooDeep):  # mixed objects and arrays, unclosed
        jsonlimits.loads('{"a": [' * 40)
    assert isinstance(TooDeep(), ValueError)  # callers that catch ValueError for bad JSON still answer 400


def test_brackets_inside_strings_do_not_count():
    deep_text = "[" * 1000 + "{" * 1000
    assert jsonlimits.loads(json.dumps({"text": deep_text})) == {"text": deep_text}
    tricky = json.dumps(['say \\"[[[[', '\\', '"' + "[" * 50, "\u2603" + "{" * 40])
    assert jsonlimits.loads(tricky) == json.loads(tricky)
    with pytest.raises(TooDeep):  # an escaped quote does not end the string; the brackets after the real end count
        jsonlimits.loads('["\\"' + '"' + ", " + "[" * 40 + "]" * 40 + "]")
    with pytest.raises(ValueError):  # invalid JSON is still invalid JSON
        jsonlimits.loads('["unterminated')


def test_check_depth_is_iterative():
    assert jsonlimits.check_depth(nested_list(MAX_JSON_DEPTH)) is not None
    deep = nested_list(sys.getrecursionlimit() * 5)  # json.dumps or any recursive walk would fail on this
    with pytest.raises(TooDeep):
        jsonlimits.check_depth(deep)
    assert jsonlimits.depth_of({"a": [{"b": []}], "c": 1}) == 4 and jsonlimits.depth_of("x") == 0
    loop: list = []
    loop.append(loop)
    with pytest.raises(TooDeep):  # a value that contains itself stops at the limit
        jsonlimits.check_depth(loop)


@pytest.mark.slow
def test_the_scan_reads_a_megabyte_without_recursing():
    """How long the scan takes (linear, about 10 ms per MB) is bench/abuse.py --only json's to say."""
    big = json.dumps([["ab", {"x": 1}] for _ in range(60_000)])  # ~1 MB, 180,000 brackets
    jsonlimits.check_text(big)
    with pytest.raises(TooDeep):
        jsonlimits.check_text('"\\\\", ' * 100_000 + "[" * 1_000_000)  # many strings, then a megabyte of brackets
    jsonlimits.check_text('"\\"[", ' * 100_000 + "[" * 32 + "]" * 32)  # an escaped quote ends no string: its [ is text
    with pytest.raises(TooDeep):  # brackets inside an unterminated string are text, those before it count
        jsonlimits.check_text("[" * 33 + '"' + "[" * 1_000_000)


# ---- scenarios and the stage pages ----------------------------------------------------------------

def test_encode_refuses_a_600_deep_tools_value(client):
    body = '{"tools": [' + "[" * 600 + "]" * 600 + "]}"
    r = client.post("/scenario/encode", data=body, content_type="application/json")
    assert r.status_code == 400 and "nested too deeply" in r.json()["error"]
    # deep but under json's own recursion limit: refused by the scenario's check, also a 400
    fields = {"tools": [{"name": "t", "input_schema": nested_schema(20)}]}
    r = client.post("/scenario/encode", data=json.dumps(fields), content_type="application/json")
    assert r.status_code == 400 and "nest deeper" in r.json()["error"]


@pytest.mark.parametrize("depth", [40, 600])
def test_a_deep_link_signed_before_the_limit_is_a_400_on_every_stage(client, depth):
    # A link made by an older version (encode does not check): properly signed, far too deep.
    blob = codec().encode(Scenario(tools=[nested_list(depth)]))
    assert blob
    for st in built():
        r = client.get(f"/learn/{st.slug}/?s={blob}")
        assert r.status_code == 400, (st.slug, r.status_code)
        assert "levels" in r.content.decode()
    from explainer.tutorial.lessons import by_id
    lesson = next(iter(by_id()))
    r = client.get(f"/tutorial/check/{lesson}?s={blob}")
    assert r.status_code == 400 and "levels" in r.json()["error"]


@pytest.mark.slow
def test_the_deepest_accepted_scenario_renders_every_stage(client):
    """At exactly the limit, nothing downstream (payload validator, jsonschema, the pages) recurses too far."""
    levels = (MAX_JSON_DEPTH - 5) // 2  # {tools: [ {input_schema: <schema>} ]}
    tools = [{"name": "deep", "description": "d", "input_schema": nested_schema(levels)}]
    assert MAX_JSON_DEPTH - 1 <= jsonlimits.depth_of({"tools": tools}) <= MAX_JSON_DEPTH
    s = Scenario(tools=tools, max_tokens=4)
    r = client.post("/scenario/encode", data=json.dumps(s.changes()), content_type="application/json")
    assert r.status_code == 200
    blob = r.json()["s"]
    for st in built():
        r = client.get(f"/learn/{st.slug}/?s={blob}")
        assert r.status_code == 200, (st.slug, r.status_code)


def test_scenario_checks_depth_without_recursion():
    with pytest.raises(ScenarioError, match="nest deeper"):
        Scenario.from_changes({"messages": [{"role": "user", "content": "hi", "x": nested_list(5000)}]})
    built_in_code = Scenario(tools=[nested_list(5000)])  # never validated: key() still answers cleanly
    with pytest.raises(ScenarioError):
        built_in_code.key()
    assert Scenario().key() == Scenario().key()


# ---- tool schemas -----------------------------------------------------------------------------------

def test_a_deep_schema_is_unsupported_not_a_recursion_error():
    tok = engine().tokenizer
    for levels in (20, 200, 400):
        with pytest.raises(UnsupportedSchema, match="nests too deeply"):
            JsonConstraint(nested_schema(levels), tok)
    deep = nested_schema(400)
    assert "nest deeper" in validate_input(deep, {})
    assert "nest deeper" in validate_input({"type": "object"}, {"a": nested_list(3000)})


def test_the_engine_refuses_a_deep_schema_with_a_400():
    from explainer.lifecycle.engine import run_request

    body = {"model": "claude-sonnet-4-6", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"name": "t", "description": "d", "input_schema": nested_schema(20)}],
            "tool_choice": {"type": "any"}}
    run = run_request(engine(), body)
    assert run.error is not None and run.error["error"]["type"] == "invalid_request_error"
    assert "nests too deeply" in run.error["error"]["message"]


def test_an_api_body_through_the_helper():
    """What api/views.py's _json_body gets from jsonlimits.loads: a ValueError (a 400), never RecursionError."""
    body = {"model": "claude-sonnet-4-6", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"name": "t", "input_schema": {"x": 1}}]}
    text = json.dumps(body).replace('{"x": 1}', '{"a": ' * 400 + "1" + "}" * 400)
    with pytest.raises(ValueError, match="deeper than"):
        jsonlimits.loads(text)


# ---- the sockets --------------------------------------------------------------------------------------

DEEP_FRAMES = ["[" * 30_000, "[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1),
               json.dumps({**STREAM_BODY, "metadata": nested_list(200)})]


async def test_the_stream_socket_answers_deep_frames_and_stays_open():
    comm = WebsocketCommunicator(application, "/ws/stream/", headers=ORIGIN)
    connected, _ = await comm.connect()
    assert connected
    assert (await comm.receive_json_from())["type"] == "explainer.hello"
    for frame in DEEP_FRAMES:
        await comm.send_to(text_data=frame)
        err = await comm.receive_json_from(timeout=30)
        assert err["type"] == "error" and err["error"]["type"] == "invalid_request_error", err
        assert "nested too deeply" in err["error"]["message"]
    # still open and usable
    await comm.send_json_to(STREAM_BODY)
    while True:
        f = await comm.receive_json_from(timeout=60)
        if f["type"] in ("explainer.done", "error"):
            break
    assert f["type"] == "explainer.done"
    await comm.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_the_room_socket_answers_deep_frames_and_stays_open(settings):
    from explainer.rooms import rooms

    settings.EXPLAINER_ROOM_MAX_FRAME_BYTES = 64 * 1024  # let 30,000 brackets through to the parser
    room, _ = await database_sync_to_async(rooms.create_room)()
    comm = WebsocketCommunicator(application, f"/ws/rooms/{room.code}/", headers=ORIGIN)
    connected, _ = await comm.connect()
    assert connected
    assert (await comm.receive_json_from())["type"] == "room.hello"
    for frame in [*DEEP_FRAMES, json.dumps({"type": "guess", "text": nested_list(100)})]:
        await comm.send_to(text_data=frame)
        err = await comm.receive_json_from(timeout=30)
        assert err["type"] == "error" and err["error"]["type"] == "invalid_request_error", err
        assert "nested too deeply" in err["error"]["message"]
    # still open: the next frame gets its ordinary answer
    await comm.send_json_to({"type": "nope"})
    err = await comm.receive_json_from(timeout=30)
    assert err["type"] == "error" and "unknown frame type" in err["error"]["message"]
    await comm.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_the_room_socket_with_its_default_frame_limit():
    from explainer.rooms import rooms

    room, _ = await database_sync_to_async(rooms.create_room)()
    comm = WebsocketCommunicator(application, f"/ws/rooms/{room.code}/", headers=ORIGIN)
    connected, _ = await comm.connect()
    assert connected
    await comm.receive_json_from()
    for frame in ("[" * 30_000, "[" * 16_000):
        await comm.send_to(text_data=frame)
        err = await comm.receive_json_from(timeout=30)
        assert err["type"] == "error" and err["error"]["type"] in ("request_too_large", "invalid_request_error"), err
    await comm.send_json_to({"type": "nope"})
    assert "unknown frame type" in (await comm.receive_json_from(timeout=30))["error"]["message"]
    await comm.disconnect()
