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
