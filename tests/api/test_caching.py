"""Prompt caching through the official SDK: the usage fields as the API reports them."""
import anthropic
import pytest

pytestmark = pytest.mark.slow  # see the marker in pyproject.toml

SYSTEM = "You are an assistant for platform engineers who run Airflow on Kubernetes with a PostgreSQL metadata database. " * 4


def test_the_second_request_reads_what_the_first_wrote(client):
    system = [{"type": "text", "text": SYSTEM + "(sdk caching test)", "cache_control": {"type": "ephemeral"}}]
    kw = dict(model="claude-sonnet-4-6", max_tokens=4, system=system, messages=[{"role": "user", "content": "Why do tasks queue?"}])
    first = client.messages.create(**kw)
    assert first.usage.cache_creation_input_tokens > 60 and first.usage.cache_read_input_tokens == 0
    assert first.usage.cache_creation.ephemeral_5m_input_tokens == first.usage.cache_creation_input_tokens
    second = client.messages.create(**kw)
    assert second.usage.cache_read_input_tokens == first.usage.cache_creation_input_tokens
    assert second.usage.cache_creation_input_tokens == 0
    assert second.usage.input_tokens == first.usage.input_tokens
    n = client.messages.count_tokens(model=kw["model"], system=system, messages=kw["messages"]).input_tokens
    assert n == second.usage.input_tokens + second.usage.cache_read_input_tokens


def test_streaming_reports_cache_usage_in_message_start(client):
    system = [{"type": "text", "text": SYSTEM + "(stream caching test)", "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
    kw = dict(model="claude-sonnet-4-6", max_tokens=4, system=system, messages=[{"role": "user", "content": "Hi"}])
    client.messages.create(**kw)
    with client.messages.stream(**kw) as s:
        final = s.get_final_message()
    assert final.usage.cache_read_input_tokens > 60


def test_five_breakpoints_is_a_bad_request(client):
    cc = {"type": "ephemeral"}
    content = [{"type": "text", "text": f"part {i}. ", "cache_control": cc} for i in range(5)]
    with pytest.raises(anthropic.BadRequestError, match="maximum of 4"):
        client.messages.create(model="claude-sonnet-4-6", max_tokens=2, messages=[{"role": "user", "content": content}])
