"""The gateway's building blocks: token buckets, the three rate limits, headers, key check, prefix hashes."""
import math
import random

import pytest

from explainer.lifecycle.errors import APIError
from explainer.lifecycle.gateway import (
    Limits,
    PrefixCache,
    RateLimiter,
    TokenBucket,
    check_body_size,
    check_key,
    key_from_headers,
    overloaded,
    prefix_chain,
    prefix_key,
    rate_limit_error,
    ratelimit_headers,
    rfc3339,
)

T0 = 1_767_268_800.0  # 2026-01-01T12:00:00Z


def test_it_starts_full_and_gives_exact_remaining():
    b = TokenBucket.per_minute(100, now=T0)
    assert b.take(30, T0).remaining == 70
    assert b.take(70, T0).remaining == 0
    t = b.take(1, T0)
    assert not t.allowed and t.remaining == 0


def test_it_refills_continuously_up_to_capacity():
    b = TokenBucket.per_minute(60, now=T0)  # one token a second
    b.take(60, T0)
    assert b.level(T0 + 10) == pytest.approx(10)
    assert b.level(T0 + 30.5) == pytest.approx(30.5)
    assert b.level(T0 + 600) == 60  # never above capacity
    assert b.take(10, T0 + 10).allowed and b.take(1, T0 + 10).allowed is False


def test_retry_after_is_the_time_until_enough_tokens():
    b = TokenBucket.per_minute(5, now=T0)  # one request every 12 s
    for _ in range(5):
        assert b.take(1, T0).allowed
    t = b.take(1, T0 + 3)
    assert not t.allowed and t.retry_after == pytest.approx(9)
    assert not b.take(1, T0 + 11.9).allowed
    assert b.take(1, T0 + 12).allowed  # exactly when retry-after said

    tokens = TokenBucket.per_minute(600, now=T0)  # 10 a second
    tokens.take(550, T0)
    t = tokens.take(200, T0)
    assert not t.allowed and t.retry_after == pytest.approx((200 - 50) / 10)
    assert tokens.take(200, T0 + 15).allowed


def test_a_refused_take_takes_nothing():
    b = TokenBucket.per_minute(10, now=T0)
    b.take(8, T0)
    assert not b.take(5, T0).allowed
    assert b.take(2, T0).remaining == 0


def test_more_than_capacity_can_never_pass():
    t = TokenBucket.per_minute(10, now=T0).take(11, T0)
    assert not t.allowed and t.retry_after is None


def test_reset_is_the_time_until_full():
    b = TokenBucket.per_minute(60, now=T0)
    t = b.take(15, T0)
    assert t.reset == pytest.approx(15)
    assert b.check(0, T0 + 5).reset == pytest.approx(10)


def test_give_back_never_overfills():
    b = TokenBucket.per_minute(100, now=T0)
    b.take(40, T0)
    b.give_back(30, T0)
    assert b.level(T0) == pytest.approx(90)
    b.give_back(500, T0)
    assert b.level(T0) == 100


def test_it_agrees_with_a_step_by_step_simulation():
    """Against a reference: tick a second at a time, adding rate tokens per tick."""
    rng = random.Random(7)
    b = TokenBucket(50, 2.0, now=0.0)
    level = 50.0
    for t in range(1, 400):
        level = min(50.0, level + 2.0)
        n = rng.randint(0, 12)
        out = b.take(n, float(t))
        assert out.allowed == (n <= level)
        if out.allowed:
            level -= n
        assert out.remaining == math.floor(level)


def test_the_limiter_admits_all_or_nothing_and_settles_output():
    lim = RateLimiter(Limits(5, 1000, 300), now=T0)
    d = lim.admit(400, 100, T0)
    assert d.allowed and d.needs == {"requests": 1, "input_tokens": 400, "output_tokens": 100}
    lim.settle(100, 40, T0)  # the reply used 40 of the 100 reserved
    snap = lim.snapshot(T0)
    assert snap["requests"][0] == 4 and snap["input_tokens"][0] == 600 and snap["output_tokens"][0] == 260
    lim.admit(400, 100, T0)
    d = lim.admit(400, 100, T0)  # input tokens run out first (200 left < 400)
    assert not d.allowed and d.limited_by == "input_tokens"
    assert d.retry_after == pytest.approx(200 / (1000 / 60))
    assert lim.snapshot(T0)["requests"][0] == 3  # nothing was taken by the refusal


def test_the_requests_limit_gives_a_429_after_n_plus_one():
    lim = RateLimiter(Limits(5, 10_000, 10_000), now=T0)
    results = [lim.admit(30, 20, T0 + i * 0.1) for i in range(6)]
    assert [r.allowed for r in results] == [True] * 5 + [False]
    assert results[-1].limited_by == "requests"
    assert results[-1].retry_after == pytest.approx(12 - 0.5)


def test_a_request_larger_than_a_limit_is_never_admitted():
    lim = RateLimiter(Limits(5, 1000, 300), now=T0)
    d = lim.admit(10, 301, T0)
    assert not d.allowed and d.limited_by == "output_tokens" and d.retry_after is None
    assert "can never pass" in rate_limit_error("output_tokens", lim.limits, need=301).message


def test_headers_name_every_limit_with_rfc3339_resets():
    limits = Limits(5, 1000, 300)
    lim = RateLimiter(limits, now=T0)
    lim.admit(250, 300, T0)
    h = ratelimit_headers(limits, lim.snapshot(T0), T0)
    assert h["anthropic-ratelimit-requests-limit"] == "5"
    assert h["anthropic-ratelimit-requests-remaining"] == "4"
    assert h["anthropic-ratelimit-requests-reset"] == "2026-01-01T12:00:12Z"
    assert h["anthropic-ratelimit-input-tokens-remaining"] == "750"
    assert h["anthropic-ratelimit-input-tokens-reset"] == "2026-01-01T12:00:15Z"
    assert h["anthropic-ratelimit-output-tokens-remaining"] == "0"
    assert h["anthropic-ratelimit-output-tokens-reset"] == "2026-01-01T12:01:00Z"
    assert h["anthropic-ratelimit-tokens-remaining"] == "0"  # output is the tighter one
    assert "retry-after" not in h
    h = ratelimit_headers(limits, lim.snapshot(T0), T0, retry_after=11.2)
    assert h["retry-after"] == "12"
    assert ratelimit_headers(Limits(5, 40_000, 8_000), {"requests": (5, 0), "input_tokens": (38_700, 2), "output_tokens": (8000, 0)},
                             T0, round_tokens=True)["anthropic-ratelimit-input-tokens-remaining"] == "39000"


def test_rfc3339_rounds_up():
    assert rfc3339(T0) == "2026-01-01T12:00:00Z"
    assert rfc3339(T0 + 0.2) == "2026-01-01T12:00:01Z"


def test_the_429_is_a_rate_limit_error_with_retry_after():
    e = rate_limit_error("requests", Limits(5, 1, 1), headers={"retry-after": "12"})
    assert e.status == 429 and e.body()["error"]["type"] == "rate_limit_error"
    assert "5 requests per minute" in e.message and e.headers["retry-after"] == "12"


@pytest.mark.parametrize("headers, key", [
    ({"x-api-key": "sk-1"}, "sk-1"),
    ({"X-Api-Key": " sk-1 "}, "sk-1"),
    ({"Authorization": "Bearer sk-2"}, "sk-2"),
    ({"authorization": "bearer sk-2"}, "sk-2"),
    ({"Authorization": "Basic abc"}, None),
    ({"Authorization": "Bearer "}, None),
    ({}, None),
])
def test_it_reads_the_key_from_either_header(headers, key):
    assert key_from_headers(headers) == key


def test_the_key_check_answers_401s():
    valid = {"sk-good"}.__contains__
    assert check_key({"x-api-key": "sk-good"}, valid) == "sk-good"
    with pytest.raises(APIError) as missing:
        check_key({}, valid)
    with pytest.raises(APIError) as wrong:
        check_key({"authorization": "Bearer sk-bad"}, valid)
    for e in (missing.value, wrong.value):
        assert e.status == 401 and e.body()["error"]["type"] == "authentication_error"
    assert "required" in missing.value.message and "invalid" in wrong.value.message


def test_size_and_overload_errors():
    check_body_size(1000, 1000)
    with pytest.raises(APIError) as big:
        check_body_size(1001, 1000)
    assert big.value.status == 413 and big.value.type == "request_too_large"
    assert overloaded().status == 529 and overloaded().body() == {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}


def test_prefix_hashes_are_the_prompt_cache_s_keys_and_change_from_the_edited_turn_on():
    from explainer.lifecycle.engine import Engine
    from explainer.lifecycle.payload import parse_request
    from explainer.lifecycle.prompt_cache import prefix_key as cache_key

    eng = Engine()
    a = {"model": "claude-haiku-4-5", "max_tokens": 4, "system": "Be brief.",
         "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Go"}]}
    b = {**a, "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hey"}, {"role": "user", "content": "Go"}]}
    (ia, ea), (ib, eb) = eng.prompt_segments(parse_request(a)), eng.prompt_segments(parse_request(b))
    ca, cb = prefix_chain(ia, ea, "m"), prefix_chain(ib, eb, "m")
    assert [p["label"] for p in ca] == ["system", "messages[0]", "messages[1]", "messages[2]"]
    assert [p["hash"] for p in ca[:2]] == [p["hash"] for p in cb[:2]] and ca[2]["hash"] != cb[2]["hash"]
    # exactly the key the engine's prompt cache stores a prefix under
    assert all(p["hash"] == cache_key(ia[:p["tokens"]], "m") for p in ca)
    assert prefix_key(ia, "m") == cache_key(ia, "m") != prefix_key(ib, "m")
    # parameters are not part of the prefix
    assert eng.prompt_segments(parse_request({**a, "temperature": 0.1}))[0] == ia


def test_the_prefix_cache_hits_within_the_ttl_and_refreshes_it():
    c = PrefixCache(ttl=300)
    assert c.lookup("k", T0) is False
    assert c.lookup("k", T0 + 299) is True
    assert c.lookup("k", T0 + 299 + 299) is True  # the hit refreshed the TTL
    assert c.lookup("k", T0 + 299 + 299 + 301) is False
    assert c.lookup("other", T0) is False
