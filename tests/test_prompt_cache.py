"""Prompt caching in the engine: real KV reuse, usage as the API reports it, TTLs."""
import numpy as np
import pytest

from explainer.lifecycle.engine import Engine
from explainer.lifecycle.errors import APIError
from explainer.lifecycle.payload import parse_request
from explainer.lifecycle.prompt_cache import MIN_CACHEABLE_TOKENS, PromptCache

SYSTEM = ("You are a careful assistant for data engineers. You answer questions about Apache Airflow, "
          "PostgreSQL and Python with short, concrete explanations, and you say when you are unsure. ") * 2


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


@pytest.fixture
def setup():
    clock = Clock()
    engine = Engine()
    cache = PromptCache(model_id="test", clock=clock)
    return engine, cache, clock


def body(question="What is a DAG?", ttl=None, system=SYSTEM, **kw):
    cc = {"type": "ephemeral", **({"ttl": ttl} if ttl else {})}
    return {"model": "claude-sonnet-4-6", "max_tokens": 8, "temperature": 0,
            "system": [{"type": "text", "text": system, "cache_control": cc}],
            "messages": [{"role": "user", "content": question}], **kw}


def run(engine, cache, b):
    events = list(engine.stream(parse_request(b), prompt_cache=cache))
    start = next(e for e in events if e["type"] == "message_start")["message"]["usage"]
    done = events[-1]
    text = "".join(e["delta"]["text"] for e in events if e["type"] == "content_block_delta")
    return start, done, text


def system_len(engine, b):
    ids, ends = engine.prompt_segments(parse_request(b))
    return ends["system"], len(ids)


def test_the_second_request_reads_the_prefix_and_computes_only_the_rest(setup):
    engine, cache, _ = setup
    n_sys, total = system_len(engine, body())
    assert n_sys >= MIN_CACHEABLE_TOKENS
    u1, d1, t1 = run(engine, cache, body())
    assert u1["cache_creation_input_tokens"] == n_sys and u1["cache_read_input_tokens"] == 0
    assert u1["input_tokens"] == total - n_sys
    assert u1["cache_creation"]["ephemeral_5m_input_tokens"] == n_sys
    u2, d2, t2 = run(engine, cache, body())
    assert u2["cache_read_input_tokens"] == n_sys and u2["cache_creation_input_tokens"] == 0
    assert u2["input_tokens"] == total - n_sys
    assert d2["timings"]["prefill_tokens"] == total - n_sys and d1["timings"]["prefill_tokens"] == total
    assert t1 == t2  # reusing the KV cache changes nothing about the output


def test_a_different_question_after_the_same_prefix_still_hits(setup):
    engine, cache, _ = setup
    run(engine, cache, body("What is a DAG?"))
    u, _, _ = run(engine, cache, body("How do retries work?"))
    assert u["cache_read_input_tokens"] == system_len(engine, body())[0]


def test_cached_logits_equal_a_fresh_prefill(setup):
    engine, cache, _ = setup
    run(engine, cache, body())
    req = parse_request(body("Explain XCom."))
    ids, ends = engine.prompt_segments(req)
    plan = cache.plan(ids, [(ends["system"], "5m")])
    kv = plan.hit.kv.copy()
    warm = engine.model.forward(ids[plan.read:], cache=kv).logits[-1]
    cold = engine.model.forward(ids).logits[-1]
    np.testing.assert_allclose(warm, cold, atol=1e-4)


def test_expiry_and_refresh(setup):
    engine, cache, clock = setup
    run(engine, cache, body())
    clock.t += 299
    assert run(engine, cache, body())[0]["cache_read_input_tokens"] > 0  # hit refreshes the 5 minutes
    clock.t += 299
    assert run(engine, cache, body())[0]["cache_read_input_tokens"] > 0
    clock.t += 301
    u, _, _ = run(engine, cache, body())
    assert u["cache_read_input_tokens"] == 0 and u["cache_creation_input_tokens"] > 0


def test_one_hour_ttl(setup):
    engine, cache, clock = setup
    u, _, _ = run(engine, cache, body(ttl="1h"))
    assert u["cache_creation"]["ephemeral_1h_input_tokens"] == u["cache_creation_input_tokens"] > 0
    clock.t += 3000
    assert run(engine, cache, body(ttl="1h"))[0]["cache_read_input_tokens"] > 0


def test_a_changed_prefix_misses(setup):
    engine, cache, _ = setup
    run(engine, cache, body())
    u, _, _ = run(engine, cache, body(system=SYSTEM.replace("careful", "careless")))
    assert u["cache_read_input_tokens"] == 0


def test_a_short_prefix_is_not_cached(setup):
    engine, cache, _ = setup
    u, _, _ = run(engine, cache, body(system="Be brief."))
    assert u["cache_creation_input_tokens"] == 0 and len(cache) == 0


def test_more_than_four_breakpoints_is_a_400():
    cc = {"type": "ephemeral"}
    msgs = []
    for i in range(5):
        msgs += [{"role": "user", "content": [{"type": "text", "text": f"q{i}", "cache_control": cc}]},
                 {"role": "assistant", "content": "a"}]
    with pytest.raises(APIError, match="maximum of 4 blocks with cache_control"):
        parse_request({"model": "m", "max_tokens": 1, "messages": msgs[:-1]})


def test_one_hour_after_five_minutes_is_a_400():
    b = body(ttl="5m")
    b["messages"] = [{"role": "user", "content": [{"type": "text", "text": "x", "cache_control": {"type": "ephemeral", "ttl": "1h"}}]}]
    with pytest.raises(APIError, match="must not come after"):
        parse_request(b)


def test_top_level_cache_control_marks_the_last_turn(setup):
    engine, cache, _ = setup
    b = {"model": "m", "max_tokens": 4, "temperature": 0, "cache_control": {"type": "ephemeral"}, "system": SYSTEM,
         "messages": [{"role": "user", "content": "What is a sensor in Airflow?"}]}
    u, _, _ = run(engine, cache, b)
    total = len(engine.prompt_ids(parse_request(b)))
    assert u["cache_creation_input_tokens"] == total - 1  # everything but the generation prompt <|assistant|>


def test_a_breakpoint_on_a_tool_definition_caches_through_the_system_turn(setup):
    from explainer.lifecycle.demo_tools import DEMO_TOOLS

    engine, cache, _ = setup
    tool = {**DEMO_TOOLS["calculator"].definition(), "cache_control": {"type": "ephemeral"}}
    b = {"model": "m", "max_tokens": 4, "temperature": 0, "tools": [tool], "messages": [{"role": "user", "content": "2+2?"}]}
    n_sys = engine.prompt_segments(parse_request(b))[1]["system"]
    u1, _, _ = run(engine, cache, b)
    assert u1["cache_creation_input_tokens"] == n_sys
    u2, _, _ = run(engine, cache, b)
    assert u2["cache_read_input_tokens"] == n_sys


def test_an_undecodable_tool_schema_is_a_clear_400():
    engine = Engine()
    b = {"model": "m", "max_tokens": 4, "tool_choice": {"type": "any"},
         "tools": [{"name": "t", "input_schema": {"type": "object", "properties": {"n": {"type": "integer", "minimum": 3}}}}],
         "messages": [{"role": "user", "content": "x"}]}
    with pytest.raises(APIError, match="cannot decode this schema"):
        list(engine.stream(parse_request(b)))


def test_the_cache_is_bounded_in_bytes_and_keeps_the_most_recent():
    import numpy as np

    class KV:  # a model's cache holding ``length`` positions of 1 KB each
        def __init__(self, length):
            self.length, self.data = length, np.zeros((length, 256), dtype=np.float32)

        def copy(self, length=None):
            return KV(self.length if length is None else length)

    pc = PromptCache(clock=lambda: 0.0, max_bytes=300 * 1024)
    for i in range(10):  # ten prompts of 100 positions (100 KB of keys and values each, plus a little): two fit
        ids = [i] * 100
        pc.store(pc.plan(ids, [(100, "5m")]), KV(100))
    assert len(pc) == 2 and 200 * 1024 <= pc.nbytes <= 300 * 1024
    assert pc.plan([9] * 100, [(100, "5m")]).read == 100 and pc.plan([0] * 100, [(100, "5m")]).read == 0
    pc.store(pc.plan([42] * 400, [(400, "5m")]), KV(400))  # larger than the whole budget: not kept
    assert pc.plan([42] * 400, [(400, "5m")]).read == 0 and pc.nbytes <= 300 * 1024
