"""The gateway stage through Django's test client: the simulation's inputs, the checks, the error bodies."""
import html
import json
import re

import pytest

from explainer.lifecycle.engine import run_request
from explainer.lifecycle.gateway import Limits, RateLimiter, prefix_chain
from explainer.lifecycle.scenario import Scenario
from explainer.stages.pages.gateway import EXAMPLE_TIME, SIM_LIMITS
from explainer.web.runner import get_engine
from tests.urls import data_of, stage_data, stage_url

HOSTILE = Scenario(
    system='</pre><script>alert("sys")</script>',
    messages=[{"role": "user", "content": '<img src=x onerror=alert(1)>\u202eevil\u202c' + "😀" * 2000}],
    max_tokens=8,
)


def url(scenario=None, **opts):
    return stage_url("gateway", scenario, **opts)


def gallery(page: str) -> dict:
    items = re.findall(r'<li class="gw-error" data-status="(\d+)">.*?<pre[^>]*>(.*?)</pre>', page, re.S)
    out = {}
    for code, text in items:
        head, _, body = html.unescape(text).partition("\n\n")
        out[int(code)] = {"status_line": head.splitlines()[0], "headers": dict(line.split(": ", 1) for line in head.splitlines()[1:]),
                          "body": json.loads(body)}
    return out


def test_it_renders_and_says_it_is_simulated(client):
    r = client.get(url())
    assert r.status_code == 200
    page = r.content.decode()
    assert "Simulated in this version" in page


def test_the_simulation_uses_the_engine_s_real_counts(client):
    s = Scenario(messages=[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."},
                           {"role": "user", "content": "What is MVCC?"}], max_tokens=20, seed=5)
    sim = stage_data(client, "gateway", s)["gateway-sim"]
    run = run_request(get_engine(), s.request_body(), seed=s.seed)
    assert sim["needs"] == {"requests": 1, "input_tokens": len(run.prompt_ids), "output_tokens": 20}
    assert sim["output_tokens"] == run.done["usage"]["output_tokens"]
    assert sim["limits"] == SIM_LIMITS.to_dict()
    ids, ends = get_engine().prompt_segments(run.request)
    assert sim["prefix"] == prefix_chain(ids, ends, get_engine().prompt_cache.model_id)[-1]["hash"]
    assert sim["validation_error"] is None and sim["key_errors"]["valid"] is None


@pytest.mark.slow
def test_the_prefix_chain_is_shown_turn_by_turn_with_the_live_cache(client):
    s = Scenario(system="Be brief and exact. " * 30, messages=[{"role": "user", "content": "Hi"},
                                                               {"role": "assistant", "content": "Yo"},
                                                               {"role": "user", "content": "And?"}])
    eng = get_engine()
    eng.prompt_cache.clear()
    req = run_request(eng, s.request_body(), seed=s.seed).request
    ids, ends = eng.prompt_segments(req)
    chain = prefix_chain(ids, ends, eng.prompt_cache.model_id)
    page = client.get(url(s)).content.decode()
    for block in chain:
        assert f"<td>{html.escape(block['label'])}</td><td class=\"num\">{block['tokens']}</td><td><code>{block['hash'][:16]}</code></td>" in page
    assert "cached, " not in page
    # the API caches the system turn (a real plan and a real KV cache): the page reads that shared cache
    n = ends["system"]
    plan = eng.prompt_cache.plan(ids, [(n, "5m")])
    assert plan.writes, "the system prompt should be long enough to cache"
    eng.prompt_cache.store(plan, eng.model.forward(ids[:n]).cache)
    try:
        page = client.get(url(s)).content.decode()
        assert page.count("cached, ") == 1 and " s left" in page
    finally:
        eng.prompt_cache.clear()


def test_the_error_gallery_has_the_api_s_envelopes(client):
    errors = gallery(client.get(url()).content.decode())
    assert sorted(errors) == [400, 401, 413, 429, 529]
    types = {code: e["body"]["error"]["type"] for code, e in errors.items()}
    assert types == {400: "invalid_request_error", 401: "authentication_error", 413: "request_too_large",
                     429: "rate_limit_error", 529: "overloaded_error"}
    for code, e in errors.items():
        assert e["status_line"] == f"HTTP/2 {code}" and e["body"]["type"] == "error"
        assert e["headers"]["request-id"] and e["headers"]["content-type"] == "application/json"
    assert errors[529]["body"]["error"]["message"] == "Overloaded"
    assert "1,048,576" in errors[413]["body"]["error"]["message"]


def test_the_worked_429_is_what_the_python_limiter_answers(client):
    s = Scenario(max_tokens=16)
    page = client.get(url(s)).content.decode()
    e = gallery(page)[429]
    n_in = len(run_request(get_engine(), s.request_body(), seed=s.seed).prompt_ids)
    lim = RateLimiter(SIM_LIMITS, now=EXAMPLE_TIME)
    for _ in range(SIM_LIMITS.requests_per_minute):
        assert lim.admit(n_in, 16, EXAMPLE_TIME).allowed
    d = lim.admit(n_in, 16, EXAMPLE_TIME)
    assert not d.allowed and d.limited_by == "requests"
    assert e["headers"]["retry-after"] == "12"  # one request comes back every 60 / 5 seconds
    assert e["headers"]["anthropic-ratelimit-requests-remaining"] == "0"
    assert e["headers"]["anthropic-ratelimit-requests-reset"] == "2026-01-01T12:01:00Z"
    assert "5 requests per minute" in e["body"]["error"]["message"]




def test_a_max_tokens_above_the_output_limit_can_never_pass(client):
    s = Scenario(max_tokens=SIM_LIMITS.output_tokens_per_minute + 1)
    r = client.get(url(s))
    page = r.content.decode()
    e = gallery(page)[429]
    assert "can never pass" in e["body"]["error"]["message"] and "retry-after" not in e["headers"]
    assert "can never pass" in data_of(r)["gateway-sim"]["rate_errors"]["output_tokens"]["error"]["message"]


@pytest.mark.parametrize("key, status", [("valid", None), ("missing", 401), ("wrong", 401)])
def test_the_key_option_picks_the_key_check(client, key, status):
    r = client.get(url(key=key))
    page, sim = r.content.decode(), data_of(r)["gateway-sim"]
    assert sim["key"] == key
    li = re.search(r'<li data-check="key" class="(\w+)">', page).group(1)
    assert li == ("pass" if status is None else "fail")
    err = sim["key_errors"][key]
    assert (err is None) == (status is None)
    if err:
        assert err["error"]["type"] == "authentication_error"


def test_bad_options_are_400(client):
    assert client.get(url(key="stolen")).status_code == 400


def test_an_invalid_request_fails_the_format_check(client):
    s = Scenario(messages=[{"role": "assistant", "content": "Hi"}])
    r = client.get(url(s))
    page, sim = r.content.decode(), data_of(r)["gateway-sim"]
    assert sim["validation_error"]["error"]["message"] == "messages.0.role: the first message must use the 'user' role"
    assert re.search(r'<li data-check="validate" class="fail">', page)
    assert gallery(page)[400]["body"] == sim["validation_error"]
    assert 429 not in gallery(page)  # a refused request never reaches the rate limits


def test_hostile_text_is_escaped(client):
    r = client.get(url(HOSTILE))
    assert r.status_code == 200
    page = r.content.decode()
    assert "<script>alert" not in page and "<img src=x" not in page


def test_the_page_is_small(client):
    # speed is bench/pages.py's business (timed tests fail on a busy machine)
    r = client.get(url(Scenario(seed=123)))
    assert len(r.content) < 100_000


def test_the_limits_are_small_enough_to_hit():
    assert SIM_LIMITS == Limits(5, 4_000, 2_000)


def test_the_page_opens_on_the_checks_and_its_folds_say_what_this_request_gets(client):
    page = client.get(url(Scenario(max_tokens=16))).content.decode()
    visual = page.split('id="main-visual"', 1)[1].split("</section>", 1)[0]
    assert re.findall(r'<li data-check="(\w+)"', visual) == ["size", "key", "validate", "rate", "capacity", "cache"]
    assert 'id="fire"' in visual and 'data-chart-group=' in visual and visual.count('class="gw-bucket"') == 3
    try_this = page.split('id="try-this"', 1)[1].split("</details>", 1)[0]
    assert f"the first {SIM_LIMITS.requests_per_minute} pass, then the requests bucket is short" in try_this
    never = client.get(url(Scenario(max_tokens=SIM_LIMITS.output_tokens_per_minute + 1))).content.decode()
    try_this = never.split('id="try-this"', 1)[1].split("</details>", 1)[0]
    assert "needs more output tokens than the whole bucket holds" in try_this
    invalid = client.get(url(Scenario(messages=[{"role": "assistant", "content": "Hi"}]))).content.decode()
    assert "stops at the format check with a 400" in invalid.split('id="try-this"', 1)[1].split("</details>", 1)[0]
