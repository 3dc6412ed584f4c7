"""Per-key token buckets: headers on every response, 429 with retry-after, and the SDK's retries."""
import threading

import anthropic
import pytest

from tests.api import raw
from tests.live_server import daphne

pytestmark = pytest.mark.slow  # see the marker in pyproject.toml

HI = [{"role": "user", "content": "Hi"}]


@pytest.fixture(scope="module", params=["memory", "redis"])
def tight_server(request, tmp_path_factory):
    env = {"EXPLAINER_RATE_REQUESTS_PER_MINUTE": "6"}  # one request back every 10 s
    if request.param == "redis":
        redis = pytest.importorskip("redis")
        try:
            redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=1).ping()
        except Exception:
            pytest.fail("The Redis variant of the rate-limit tests needs Redis on 127.0.0.1:6379 (Debian: redis-server).")
        db = 9
        redis.Redis(host="127.0.0.1", port=6379, db=db).flushdb()
        env["REDIS_URL"] = f"redis://127.0.0.1:6379/{db}"
    with daphne(tmp_path_factory.mktemp(f"rl-{request.param}"), **env) as srv:
        yield srv


def test_headers_then_429_with_retry_after(tight_server):
    srv = tight_server
    key = srv["api_key"]
    seen = []
    for _ in range(7):
        r = raw.request("POST", srv["url"] + "/v1/messages", json_body={"model": "claude-haiku-4-5", "max_tokens": 2, "messages": HI},
                        headers={"x-api-key": key})
        seen.append(r)
        if r.status_code == 429:
            break
    ok = [r for r in seen if r.status_code == 200]
    assert len(ok) >= 5
    first = ok[0].headers
    assert first["anthropic-ratelimit-requests-limit"] == "6"
    remaining = [int(r.headers["anthropic-ratelimit-requests-remaining"]) for r in ok]
    assert remaining == sorted(remaining, reverse=True)
    for name in ("input-tokens", "output-tokens", "tokens"):
        assert first[f"anthropic-ratelimit-{name}-limit"] and first[f"anthropic-ratelimit-{name}-reset"].endswith("Z")
    limited = seen[-1]
    assert limited.status_code == 429
    assert limited.json()["error"]["type"] == "rate_limit_error"
    assert 1 <= int(limited.headers["retry-after"]) <= 10


def test_the_sdk_raises_then_retries_after_the_wait(tight_server):
    srv = tight_server
    fast = anthropic.Anthropic(api_key=srv["api_key"], base_url=srv["url"], max_retries=0)
    for _ in range(8):
        try:
            fast.messages.create(model="claude-haiku-4-5", max_tokens=2, messages=HI)
        except anthropic.RateLimitError as e:
            assert int(e.response.headers["retry-after"]) >= 1
            break
    else:
        pytest.fail("no 429 after 8 requests at 6 per minute")
    patient = anthropic.Anthropic(api_key=srv["api_key"], base_url=srv["url"], max_retries=2)
    msg = patient.messages.create(model="claude-haiku-4-5", max_tokens=2, messages=HI)  # waits retry-after, then passes
    assert msg.type == "message"


def test_an_overloaded_engine_answers_529_and_the_sdk_retries(tmp_path_factory):
    with daphne(tmp_path_factory.mktemp("busy"), EXPLAINER_ENGINE_WORKERS="1", EXPLAINER_ENGINE_QUEUE="0") as srv:
        results, errors = [], []

        def call(retries):
            c = anthropic.Anthropic(api_key=srv["api_key"], base_url=srv["url"], max_retries=retries)
            try:
                results.append(c.messages.create(model="claude-haiku-4-5", max_tokens=60, messages=HI, extra_body={"temperature": 1}))
            except anthropic.APIStatusError as e:
                errors.append(e)

        threads = [threading.Thread(target=call, args=(0,)) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert any(e.status_code == 529 and isinstance(e, anthropic.InternalServerError) for e in errors) or len(results) == 4
        threads = [threading.Thread(target=call, args=(6,)) for _ in range(3)]
        results.clear()
        errors.clear()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(results) == 3 and not errors
