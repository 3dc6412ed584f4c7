"""A local model through the official SDK: named in ``model`` it answers; Claude names stay with the bundled model."""
import pytest

from tests.conftest import LOCAL_MODEL

pytestmark = pytest.mark.slow  # see the marker in pyproject.toml

HI = [{"role": "user", "content": "What is a primary key?"}]


def test_the_sdk_talks_to_a_local_model(client):
    msg = client.messages.create(model=LOCAL_MODEL, max_tokens=12, messages=HI)
    assert msg.model == LOCAL_MODEL and msg.content[0].type == "text"
    assert msg.stop_reason in ("end_turn", "max_tokens") and 1 <= msg.usage.output_tokens <= 12
    with client.messages.stream(model=LOCAL_MODEL, max_tokens=12, messages=HI, extra_body={"temperature": 0}) as stream:
        text = "".join(stream.text_stream)
    again = client.messages.create(model=LOCAL_MODEL, max_tokens=12, messages=HI, extra_body={"temperature": 0})
    assert again.content[0].text == text


def test_token_counts_use_the_local_models_tokenizer(client):
    local = client.messages.count_tokens(model=LOCAL_MODEL, messages=HI).input_tokens
    bundled = client.messages.count_tokens(model="claude-sonnet-4-6", messages=HI).input_tokens
    assert local != bundled and local > 10  # ChatML with SmolLM's default system prompt is longer


def test_models_lists_it_and_its_detail(client):
    ids = [m.id for m in client.models.list()]
    assert ids[:2] == ["tiny-explainer-4l", LOCAL_MODEL] and "claude-sonnet-4-6" in ids
    assert "local model" in client.models.retrieve(LOCAL_MODEL).display_name


def test_a_tool_call_is_decoded_under_its_schema(client):
    tool = {"name": "get_weather", "description": "Weather for a city",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12}}, "required": ["city"]}}
    msg = client.messages.create(model=LOCAL_MODEL, max_tokens=40, messages=[{"role": "user", "content": "Weather in Paris?"}],
                                 tools=[tool], tool_choice={"type": "tool", "name": "get_weather"})
    block = msg.content[0]
    assert block.type == "tool_use" and block.name == "get_weather"
    if msg.stop_reason == "tool_use":
        assert isinstance(block.input["city"], str) and len(block.input["city"]) <= 12
