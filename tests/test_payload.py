import pytest

from explainer.lifecycle.errors import APIError
from explainer.lifecycle.payload import parse_request


def body(**over):
    b = {"model": "claude-sonnet-4-5", "max_tokens": 16, "messages": [{"role": "user", "content": "Hello"}]}
    b.update(over)
    return {k: v for k, v in b.items() if v is not ...}


def error_of(b) -> str:
    with pytest.raises(APIError) as e:
        parse_request(b)
    assert e.value.status == 400 and e.value.type == "invalid_request_error"
    return e.value.message


def test_it_accepts_a_minimal_request():
    req = parse_request(body())
    assert req.model == "claude-sonnet-4-5" and req.max_tokens == 16 and req.messages[0].text == "Hello"
    assert req.temperature == 1.0 and req.top_k is None and req.stream is False


@pytest.mark.parametrize("b, field", [
    ([], "body"),
    (body(model=...), "model"),
    (body(max_tokens=...), "max_tokens"),
    (body(messages=...), "messages"),
    (body(max_tokens=0), "max_tokens"),
    (body(max_tokens=True), "max_tokens"),
    (body(max_tokens="10"), "max_tokens"),
    (body(messages=[]), "messages"),
    (body(messages="hi"), "messages"),
    (body(messages=[{"role": "system", "content": "x"}]), "messages.0.role"),
    (body(messages=[{"role": "assistant", "content": "x"}]), "messages.0.role"),
    (body(messages=[{"role": "user"}]), "messages.0.content"),
    (body(messages=[{"role": "user", "content": 5}]), "messages.0.content"),
    (body(messages=[{"role": "user", "content": [{"type": "text"}]}]), "messages.0.content.0.text"),
    (body(messages=[{"role": "user", "content": [{"type": "image", "source": {}}]}]), "messages.0.content.0"),
    (body(temperature=1.5), "temperature"),
    (body(temperature=-0.1), "temperature"),
    (body(temperature="hot"), "temperature"),
    (body(top_p=0), "top_p"),
    (body(top_k=-1), "top_k"),
    (body(top_k=2.5), "top_k"),
    (body(stop_sequences="END"), "stop_sequences"),
    (body(stream="yes"), "stream"),
    (body(system=7), "system"),
    (body(metadata={"user_id": 3}), "metadata.user_id"),
    (body(thinking={"type": "enabled", "budget_tokens": 1024}), "thinking"),
    (body(surprise=1), "surprise"),
])
def test_each_rule_names_its_field(b, field):
    assert error_of(b).startswith("The request body" if field == "body" else field)


def test_consecutive_turns_of_one_role_are_merged_and_a_final_assistant_turn_is_a_prefill():
    req = parse_request(body(messages=[
        {"role": "user", "content": "One"}, {"role": "user", "content": [{"type": "text", "text": "Two"}]},
        {"role": "assistant", "content": "Sure,"},
    ]))
    assert [m.role for m in req.messages] == ["user", "assistant"]
    assert req.messages[0].text == "One\n\nTwo" and req.prefill == "Sure,"


def test_system_as_text_blocks():
    req = parse_request(body(system=[{"type": "text", "text": "Be "}, {"type": "text", "text": "brief."}]))
    assert req.system == "Be brief."


# The SDK's ToolParam fields (anthropic/types/tool_param.py): accepted, type-checked, ignored where they change nothing.

TOOL = {"name": "calc", "description": "Evaluate", "input_schema": {"type": "object", "properties": {"expr": {"type": "string"}},
                                                                    "required": ["expr"]}}


@pytest.mark.parametrize("extra", [
    {"strict": True}, {"strict": False},
    {"eager_input_streaming": True}, {"eager_input_streaming": None},
    {"input_examples": [{"expr": "1+1"}, {"expr": "2*3"}]}, {"input_examples": []},
    {"defer_loading": False},
    {"allowed_callers": ["direct"]}, {"allowed_callers": ["direct", "code_execution_20250825"]},
    {"cache_control": {"type": "ephemeral"}},
    {"strict": True, "eager_input_streaming": False, "input_examples": [{"expr": "x"}], "defer_loading": False,
     "allowed_callers": ["direct"], "cache_control": {"type": "ephemeral", "ttl": "1h"}, "type": "custom"},
])
def test_documented_tool_fields_are_accepted(extra):
    req = parse_request(body(tools=[{**TOOL, **extra}], tool_choice={"type": "tool", "name": "calc"}))
    assert req.tools == [{"name": "calc", "description": "Evaluate", "input_schema": TOOL["input_schema"]}]


@pytest.mark.parametrize("extra, field", [
    ({"strict": "yes"}, "tools.0.strict"),
    ({"strict": None}, "tools.0.strict"),
    ({"strict": 1}, "tools.0.strict"),
    ({"eager_input_streaming": "true"}, "tools.0.eager_input_streaming"),
    ({"defer_loading": 0}, "tools.0.defer_loading"),
    ({"input_examples": {"expr": "1"}}, "tools.0.input_examples"),
    ({"input_examples": ["1+1"]}, "tools.0.input_examples.0"),
    ({"input_examples": [{"expr": "1"}, {"expr": 2}]}, "tools.0.input_examples.1"),
    ({"input_examples": [{}]}, "tools.0.input_examples.0"),
    ({"allowed_callers": "direct"}, "tools.0.allowed_callers"),
    ({"allowed_callers": ["direct", "someone"]}, "tools.0.allowed_callers.1"),
    ({"allowed_callers": [1]}, "tools.0.allowed_callers.0"),
    ({"allowed_callers": ["code_execution_20250825"]}, "tools.0.allowed_callers"),
    ({"allowed_callers": []}, "tools.0.allowed_callers"),
    ({"cache_control": {"type": "persistent"}}, "tools.0.cache_control"),
    ({"unknown_option": True}, "tools.0.unknown_option"),
])
def test_a_wrong_type_for_a_tool_field_is_a_400_naming_it(extra, field):
    assert error_of(body(tools=[{**TOOL, **extra}])).startswith(field + ":")


def test_a_deferred_tool_is_left_out_of_the_prompt_and_cannot_be_called():
    other = {**TOOL, "name": "clock"}
    req = parse_request(body(tools=[{**TOOL, "defer_loading": True}, other]))
    assert [t["name"] for t in req.tools] == ["clock"]  # only a tool search tool could load it, and there is none here
    assert "defer_loading" in error_of(body(tools=[{**TOOL, "defer_loading": True}, other], tool_choice={"type": "tool", "name": "calc"}))
    assert "defer_loading" in error_of(body(tools=[{**TOOL, "defer_loading": True}], tool_choice={"type": "any"}))
    assert parse_request(body(tools=[{**TOOL, "defer_loading": True}], tool_choice={"type": "auto"})).tools == []


def test_strict_changes_nothing_because_decoding_is_always_constrained():
    a = parse_request(body(tools=[{**TOOL, "strict": True}], tool_choice={"type": "any"}))
    b = parse_request(body(tools=[TOOL], tool_choice={"type": "any"}))
    assert a == b
