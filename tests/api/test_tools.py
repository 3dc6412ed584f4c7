"""Tool use through the official SDK: the five-step loop with demo tools that really run."""
import anthropic
import pytest
from jsonschema import validate

from explainer.lifecycle.demo_tools import DEMO_TOOLS, run_tool

pytestmark = pytest.mark.slow  # see the marker in pyproject.toml

MODEL = "claude-sonnet-4-6"


@pytest.mark.parametrize("name, question", [
    ("get_dag_status", "Is the nightly warehouse DAG healthy?"),
    ("calculator", "What is 12 * 7?"),
    ("get_time", "What time is it in Tokyo?"),
])
def test_the_loop_with_each_demo_tool(client, name, question):
    tool = DEMO_TOOLS[name].definition()
    msgs = [{"role": "user", "content": question}]
    first = client.messages.create(model=MODEL, max_tokens=80, tools=[tool], tool_choice={"type": "tool", "name": name}, messages=msgs)
    assert first.stop_reason == "tool_use"
    call = first.content[-1]
    assert call.type == "tool_use" and call.name == name and call.id.startswith("toolu_")
    validate(call.input, tool["input_schema"])  # schema-constrained decoding: always valid
    content, is_error = run_tool(name, call.input)
    msgs += [{"role": "assistant", "content": [c.model_dump(exclude_none=True) for c in first.content]},
             {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": content, "is_error": is_error}]}]
    # The result goes back in the next user turn. The definitions are left out of the second request:
    # a tool definition costs 190-375 tokens of a 512-token window, and the history already says what was called.
    second = client.messages.create(model=MODEL, max_tokens=12, messages=msgs)
    assert second.content[0].type == "text" and second.stop_reason in ("end_turn", "max_tokens")
    assert second.usage.input_tokens == client.messages.count_tokens(model=MODEL, messages=msgs).input_tokens


def test_any_lets_the_model_pick_the_tool_and_streams_input_json(client):
    tools = [DEMO_TOOLS["calculator"].definition(), DEMO_TOOLS["get_time"].definition()]
    with client.messages.stream(model=MODEL, max_tokens=60, tools=tools, tool_choice={"type": "any"},
                                messages=[{"role": "user", "content": "What is 2 to the 10th?"}]) as s:
        kinds = [e.type for e in s]
        final = s.get_final_message()
    call = final.content[-1]
    assert call.type == "tool_use" and call.name in ("calculator", "get_time")
    validate(call.input, DEMO_TOOLS[call.name].definition()["input_schema"])
    assert final.stop_reason == "tool_use" and "input_json" in kinds


def test_tool_result_rules(client):
    tool = DEMO_TOOLS["calculator"].definition()
    orphan = [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_nope", "content": "1"}]}]
    with pytest.raises(anthropic.BadRequestError, match="unexpected tool_use_id"):
        client.messages.create(model=MODEL, max_tokens=5, tools=[tool], messages=orphan)
    unanswered = [{"role": "user", "content": "2+2?"},
                  {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "calculator", "input": {"expression": "2+2"}}]},
                  {"role": "user", "content": "never mind"}]
    with pytest.raises(anthropic.BadRequestError, match="without tool_result"):
        client.messages.create(model=MODEL, max_tokens=5, tools=[tool], messages=unanswered)
    with pytest.raises(anthropic.BadRequestError, match="tool_choice"):
        client.messages.create(model=MODEL, max_tokens=5, tool_choice={"type": "any"}, messages=[{"role": "user", "content": "x"}])
    bad_schema = {"name": "t", "input_schema": {"type": "object", "properties": {"a": {"type": "nonsense"}}}}
    with pytest.raises(anthropic.BadRequestError, match="input_schema"):
        client.messages.create(model=MODEL, max_tokens=5, tools=[bad_schema], messages=[{"role": "user", "content": "x"}])


def test_an_error_result_goes_back_to_the_model(client):
    tool = DEMO_TOOLS["calculator"].definition()
    content, is_error = run_tool("calculator", {"expression": "1/0"})
    assert is_error
    msgs = [{"role": "user", "content": "1/0?"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_9", "name": "calculator", "input": {"expression": "1/0"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_9", "content": content, "is_error": True}]}]
    n = client.messages.count_tokens(model=MODEL, tools=[tool], messages=msgs).input_tokens
    reply = client.messages.create(model=MODEL, max_tokens=8, tools=[tool], messages=msgs)
    assert reply.usage.input_tokens == n and reply.content[0].type == "text"


@pytest.mark.parametrize("name", sorted(DEMO_TOOLS))
def test_each_demo_tool_streams_its_input_as_json_deltas(client, name):
    tool = DEMO_TOOLS[name].definition()
    with client.messages.stream(model=MODEL, max_tokens=80, tools=[tool], tool_choice={"type": "tool", "name": name},
                                messages=[{"role": "user", "content": "Use the tool."}]) as s:
        deltas = [e.partial_json for e in s if e.type == "input_json"]
        final = s.get_final_message()
    call = final.content[-1]
    assert call.type == "tool_use" and final.stop_reason == "tool_use"
    import json
    assert json.loads("".join(deltas)) == call.input  # the SDK assembled exactly what was streamed
    validate(call.input, tool["input_schema"])


def test_a_tool_call_s_trace_opens(client):
    from tests.api import raw

    tool = DEMO_TOOLS["calculator"].definition()
    resp = client.messages.with_raw_response.create(model=MODEL, max_tokens=60, tools=[tool], tool_choice={"type": "any"},
                                                   messages=[{"role": "user", "content": "3*3?"}])
    page = raw.request("GET", resp.headers["x-explainer-trace"])
    assert page.status_code == 200 and "tool_use" in page.text and "input_json_delta" in page.text
