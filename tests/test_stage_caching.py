"""The caching stage through Django's test client: the page's numbers are the engine's own for the
same body, run twice through a cache with a simulated clock; bad options are 400 pages; the API's
own 400 for breakpoints it refuses."""
import html as htmllib
import json
import re
from urllib.parse import urlencode

import pytest

from explainer.lifecycle.engine import Engine
from explainer.lifecycle.errors import APIError
from explainer.lifecycle.payload import parse_request
from explainer.lifecycle.pricing import cost
from explainer.lifecycle.prompt_cache import PromptCache
from explainer.lifecycle.scenario import Scenario
from explainer.stages.pages import caching, caching_pair
from explainer.stages.pages.caching import LONG_SYSTEM, usd
from explainer.stages.pages.caching_pair import break_even
from explainer.stages.runs import codec, engine
from tests.urls import data_of, stage_data
from tests.work import count_forward_passes

QUESTION = "How do I retry a failed task?"
SCENARIO = Scenario(system=LONG_SYSTEM, messages=[{"role": "user", "content": QUESTION}], max_tokens=10, seed=5)
CHAT = SCENARIO.replace(messages=[{"role": "user", "content": QUESTION},
                                  {"role": "assistant", "content": "Set retries on the task, or in default_args."},
                                  {"role": "user", "content": "And how long does Airflow wait between two tries?"}])


def get(client, scenario=None, **opts):
    q = {"s": codec().encode(scenario)} if scenario is not None else {}
    q.update(opts)
    return client.get("/learn/caching/" + ("?" + urlencode(q) if q else ""))


def page_usages(html: str) -> list[dict]:
    """The usage blocks the page prints, parsed back from its text."""
    blocks = re.findall(r'<pre class="json ca-usage"[^>]*>"usage": (.*?)</pre>', html, re.S)
    return [json.loads(htmllib.unescape(b)) for b in blocks]


def attrs(html: str, i: int) -> dict:
    tag = re.search(rf'<article class="ca-req[^"]*" id="request-{i}"([^>]*)>', html).group(1)
    return {k: int(v) for k, v in re.findall(r'data-([a-z-]+)="(\d+)"', tag)}


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def engine_pair(body: dict, seed: int, minutes: float) -> tuple[list[dict], list[dict]]:
    """The reference: the same body through a fresh engine and cache, request 2 ``minutes`` later."""
    clock = Clock()
    cache = PromptCache(clock=clock)
    eng = Engine()
    req = parse_request(body)
    first = list(eng.stream(req, seed=seed, prompt_cache=cache))
    clock.t = minutes * 60
    second = list(eng.stream(req, seed=seed, prompt_cache=cache))
    return first, second


def body_with(scenario: Scenario, system_ttl=None, message_ttls=()) -> dict:
    """Hand-built cache_control markers, independent of the page's own builder."""
    body = scenario.request_body()
    if system_ttl:
        body["system"] = [{"type": "text", "text": scenario.system, "cache_control": {"type": "ephemeral", "ttl": system_ttl}}]
    for i, ttl in message_ttls:
        text = body["messages"][i]["content"]
        body["messages"][i]["content"] = [{"type": "text", "text": text, "cache_control": {"type": "ephemeral", "ttl": ttl}}]
    return body


def main_rows(html: str) -> list[dict]:
    """The main visual's rows (the two requests' usage), parsed back from their attributes."""
    tags = re.findall(r'<li class="ca-u kind-[a-z]+" data-request="(\d)"([^>]*)>', html)
    return [{"request": int(i), **{k: int(v) for k, v in re.findall(r'data-([a-z-]+)="(\d+)"', rest)}} for i, rest in tags]


def test_the_default_view_opens_on_a_cache_hit_with_a_long_system_prompt(client):
    """No options, no scenario: the request has no system prompt, so the page puts the long one in its place."""
    r = get(client)
    assert r.status_code == 200
    html = r.content.decode()
    assert r.context["swapped"] and r.context["system_mode"] == "long"
    long = Scenario(system=LONG_SYSTEM)
    first, second = engine_pair(body_with(long, "5m"), long.seed, 1)
    u1, u2 = first[-1]["usage"], second[-1]["usage"]
    assert page_usages(html) == [u1, u2]
    assert u2["cache_read_input_tokens"] == u1["cache_creation_input_tokens"] > 0
    assert 'value="system" data-bp checked' in html
    assert re.search(r'<section class="card ca-notice"[^>]* hidden>', html)  # "Not cached: shorter than the minimum" is not shown
    # the main visual: both requests' usage, the engine's numbers, and a caption computed from them
    rows = main_rows(html)
    assert [x["request"] for x in rows] == [1, 2]
    for row, i in zip(rows, (1, 2)):
        assert {k: row[k] for k in ("read", "written", "input", "prefill-tokens")} == attrs(html, i)
    t1, t2 = rows[0]["prefill-tokens"], rows[1]["prefill-tokens"]
    assert t2 < t1 / 5  # most of request 2's input is read, not computed
    headline = r.context["headline"]
    assert headline.startswith(f"Request 2 read {u2['cache_read_input_tokens']} of its {t1} prompt tokens from the cache "
                               f"and computed only {t2}: {t1 / t2:.1f}× fewer than request 1.")
    assert htmllib.escape(headline) in html or headline in html
    # the weak case is one option away, and no file of the repository is cited
    assert re.search(r'<a href="[^"]*system=own[^"]*" class="ca-pill"', html)
    assert "bench/" not in html and "shared/" not in html and ".md" not in html
    assert len(r.content) < 120_000


def test_the_request_s_own_short_prompt_shows_the_minimum_rule(client):
    """system=own: the request exactly as it is; the default scenario's prefix is too short to cache."""
    r = get(client, system="own")
    assert r.status_code == 200
    html = r.content.decode()
    assert not r.context["swapped"]
    assert "Not cached: shorter than the minimum" in html
    assert "not cached: shorter than the minimum of 64 tokens" in html  # the engine's own outcome
    assert "about 1,024 tokens" in html and "It varies by model" in html
    assert "Use a long system prompt" in html
    assert "Tool definitions would come first" in html
    assert all(row["read"] == 0 and row["written"] == 0 for row in main_rows(html))
    assert r.context["headline"].startswith("The longest marked prefix is 21 tokens, under the 64-token minimum, so nothing was cached")
    assert len(r.content) < 120_000


def test_a_system_prompt_long_enough_is_kept_as_it_is(client):
    r = get(client, SCENARIO)
    assert not r.context["swapped"] and not r.context["can_swap"]
    assert 'data-system="own"' not in r.content.decode()  # nothing to switch
    assert page_usages(r.content.decode()) == page_usages(get(client, SCENARIO, system="own").content.decode())


@pytest.mark.parametrize("opts, start", [
    ({"clock": "7"}, "Request 1 wrote 197 tokens to the cache, but they expired before request 2"),
    ({"bp": "none"}, "No block carries a breakpoint, so nothing is cached: both requests computed all 219 prompt tokens"),
    ({"bp": "m0"}, "Request 2 read 218 of its 219 prompt tokens from the cache and computed only 1: 219.0× fewer"),
])
@pytest.mark.slow
def test_the_caption_says_what_the_numbers_say(client, opts, start):
    r = get(client, **opts)
    assert r.context["first"]["total"] == 219 and r.context["headline"].startswith(start)


@pytest.mark.parametrize("minutes", [0, 1, 4])
@pytest.mark.slow
def test_the_numbers_on_the_page_are_the_engine_s(client, minutes):
    html = get(client, SCENARIO, bp="system", clock=str(minutes)).content.decode()
    first, second = engine_pair(body_with(SCENARIO, "5m"), SCENARIO.seed, minutes)
    u1, u2 = first[-1]["usage"], second[-1]["usage"]
    assert page_usages(html) == [u1, u2]
    ids, ends = engine().prompt_segments(parse_request(SCENARIO.request_body()))
    assert u1["cache_creation_input_tokens"] == ends["system"] == u2["cache_read_input_tokens"]
    for i, (events, u) in enumerate([(first, u1), (second, u2)], start=1):
        a = attrs(html, i)
        assert a["read"] == u["cache_read_input_tokens"] and a["written"] == u["cache_creation_input_tokens"]
        assert a["input"] == u["input_tokens"] and a["prefill-tokens"] == events[-1]["timings"]["prefill_tokens"]
    assert attrs(html, 2)["prefill-tokens"] == len(ids) - ends["system"]
    # the engine's breakpoint outcomes, and the costs at the model's list price
    assert "miss: written after this request" in html and "hit: read from the cache" in html
    assert usd(cost(SCENARIO.model, u1)["total"]) in html and usd(cost(SCENARIO.model, u2)["total"]) in html
    assert "Both replies are identical" in html


@pytest.mark.slow
def test_past_the_ttl_request_2_misses_and_writes_again(client):
    r = get(client, SCENARIO, bp="system", clock="5")
    html = r.content.decode()
    _, second = engine_pair(body_with(SCENARIO, "5m"), SCENARIO.seed, 5)
    u2 = second[-1]["usage"]
    assert u2["cache_read_input_tokens"] == 0 and u2["cache_creation_input_tokens"] > 0
    assert page_usages(html)[1] == u2
    data = data_of(r)["caching-data"]
    assert [{k: e[k] for k in ("length", "ttl", "ttl_min", "fate")} for e in data["entries"]] == [
        {"length": u2["cache_creation_input_tokens"], "ttl": "5m", "ttl_min": 5, "fate": "expired"}]
    assert "after the cache expired" in data["caption"]


@pytest.mark.slow
def test_a_one_hour_ttl_outlives_the_five_minute_one(client):
    hit = get(client, SCENARIO, bp="system", ttl="1h", clock="59").content.decode()
    miss = get(client, SCENARIO, bp="system", ttl="1h", clock="60").content.decode()
    assert attrs(hit, 2)["read"] > 0 and attrs(miss, 2)["read"] == 0
    u1 = page_usages(hit)[0]
    assert u1["cache_creation"] == {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": u1["cache_creation_input_tokens"]}
    assert '"ttl": "1h"' in htmllib.unescape(hit)


@pytest.mark.slow
def test_mixed_ttls_keep_the_longer_lived_prefix(client):
    """system for an hour, the first message for 5 minutes: after 10 minutes only the system prefix is read."""
    r = get(client, CHAT, bp="system:1h,m0:5m", clock="10")
    html = r.content.decode()
    body = body_with(CHAT, "1h", [(0, "5m")])
    first, second = engine_pair(body, CHAT.seed, 10)
    assert page_usages(html) == [first[-1]["usage"], second[-1]["usage"]]
    u2 = second[-1]["usage"]
    assert u2["cache_read_input_tokens"] > 0 and u2["cache_creation_input_tokens"] > 0  # read the system, wrote the turn again
    fates = {e["ttl"]: e["fate"] for e in data_of(r)["caching-data"]["entries"]}
    assert fates == {"1h": "refreshed", "5m": "expired"}


@pytest.mark.slow
def test_the_clock_reuses_request_1_exactly():
    """Request 2 on the page's rebuilt cache equals request 2 on the cache request 1 really used."""
    eng = engine()
    body = body_with(CHAT, "1h", [(0, "5m"), (2, "5m")])
    req = parse_request(body)
    for minutes in (0, 3, 5, 30, 61):
        clock = Clock()
        real = PromptCache(model_id=caching_pair.CACHE_ID, clock=clock)
        list(eng.stream(req, seed=1, prompt_cache=real))
        clock.t = minutes * 60
        expected = caching_pair.summarise(list(eng.stream(req, seed=1, prompt_cache=real)))
        first = caching_pair.run_first(eng, req, seed=1)
        fake = caching_pair.FakeClock()
        rebuilt = caching_pair.cache_after_first(eng, first, fake)
        fake.t = minutes * 60
        got = caching_pair.summarise(list(eng.stream(req, seed=1, prompt_cache=rebuilt)))
        assert got["usage"] == expected["usage"] and got["cache"] == expected["cache"] and got["text"] == expected["text"]


@pytest.mark.parametrize("opts", [
    {"bp": "foo"}, {"bp": "m"}, {"bp": "m01"}, {"bp": "m0:2h"}, {"bp": "system,system"}, {"bp": "m0,"},
    {"bp": "m9"}, {"bp": ",".join(f"m{i}" for i in range(13))}, {"bp": "x" * 200},
    {"ttl": "2h"}, {"clock": "121"}, {"clock": "-1"}, {"clock": "soon"}, {"system": "short"},
])
def test_bad_view_options_are_a_400_page(client, opts):
    r = get(client, CHAT, **opts)
    assert r.status_code == 400
    html = r.content.decode()
    assert "This link cannot be shown" in html and "Traceback" not in html


def test_a_system_breakpoint_without_a_system_prompt_is_a_400(client):
    r = get(client, Scenario(), bp="system", system="own")
    assert r.status_code == 400 and "no system prompt" in r.content.decode()
    assert get(client, Scenario(), bp="system").status_code == 200  # the long system prompt is there by default


@pytest.mark.parametrize("bp, words", [
    ("system,m0,m1,m2,m3", "A maximum of 4 blocks with cache_control may be provided. Found 5."),
    ("system,m0:1h", "a cache_control with ttl &#x27;1h&#x27; must not come after one with ttl &#x27;5m&#x27;"),
])
def test_breakpoints_the_api_refuses_show_its_400_body(client, bp, words):
    s = CHAT.replace(messages=CHAT.messages + [{"role": "assistant", "content": "About five minutes by default."}])
    r = get(client, s, bp=bp)
    assert r.status_code == 200  # the page works; the API's answer to this request is a 400
    html = r.content.decode()
    assert "The API answers 400" in html and "invalid_request_error" in html and words in html
    data = data_of(r)["caching-data"]  # the page's script binds the refusal from /data too (no HTML is fetched)
    assert 'id="request-1"' not in html and {k: v for k, v in data.items() if k != "view"} == {"ok": False, "clock": 1, "defaults": caching.DEFAULTS}
    assert data["view"]["api_status"] == 400 and words in htmllib.escape(data["view"]["api_error"]) and data["view"]["requests"] == []
    # the same message as /v1/messages gives for the same body
    with pytest.raises(APIError) as exc:
        marks = [(t.partition(":")[0], t.partition(":")[2] or "5m") for t in bp.split(",")]
        parse_request(caching.cached_body(s, marks))
    assert htmllib.escape(exc.value.message) in html


@pytest.mark.slow
def test_the_default_breakpoint_is_the_system_prompt_else_the_last_message(client):
    assert 'value="system" data-bp checked' in get(client, SCENARIO).content.decode()
    no_system = CHAT.replace(system="")
    html = get(client, no_system, system="own").content.decode()
    assert 'value="m2" data-bp checked' in html and 'value="m0" data-bp>' in html
    html = get(client, no_system).content.decode()  # by default, a long system prompt in its place, marked
    assert 'value="system" data-bp checked' in html and 'value="m2" data-bp>' in html
    html = get(client, SCENARIO, bp="none").content.decode()
    assert "No breakpoints" in html and "data-bp checked" not in html
    assert page_usages(html)[1]["input_tokens"] == attrs(html, 2)["prefill-tokens"]


def test_the_break_even_arithmetic():
    be = break_even(plain=1.0, first=1.1, hit=0.3)
    assert be["cheaper_from"] == 2 and be["crossing"] == pytest.approx(0.8 / 0.7, abs=1e-3)
    assert be["plain_total"] == 50 and be["cached_total"] == pytest.approx(1.1 + 49 * 0.3)
    assert break_even(1.0, 1.0, 1.0)["cheaper_from"] is None  # nothing cached: the lines are one


def test_the_chart_uses_the_model_s_prices(client):
    five = stage_data(client, "caching", SCENARIO, bp="system")["caching-data"]
    hour = stage_data(client, "caching", SCENARIO, bp="system", ttl="1h")["caching-data"]
    assert five["unit"] == "usd" and five["break_even"]["cheaper_from"] == 2
    assert hour["break_even"]["cheaper_from"] == 3  # a 2× write takes one request longer to pay back
    c = five["costs"]
    u1 = page_usages(get(client, SCENARIO, bp="system").content.decode())[0]
    assert c["first"] == pytest.approx(cost(SCENARIO.model, u1)["total"], rel=1e-5)
    assert c["hit"] < c["plain"] < c["first"]


@pytest.mark.slow
def test_an_unknown_price_is_said_not_guessed(client):
    r = get(client, SCENARIO.replace(model="claude-opus-5-5"), bp="system")
    html, data = r.content.decode(), data_of(r)["caching-data"]
    assert "Price unknown" in html and data["unit"] == "tokens"
    assert "$" not in data["caption"]


def test_prices_show_their_source_and_date(client):
    html = get(client, SCENARIO, bp="system").content.decode()
    assert "Source: Anthropic list prices" in html and "checked 2026-11-24" in html
    assert "cache write $3.75 (5 min) or $6.00 (1 hour); cache read $0.30" in html


def test_the_long_system_prompt_link_is_a_permalink_that_caches(client):
    html = get(client, system="own").content.decode()
    link = htmllib.unescape(re.search(r'<a class="button primary small" href="([^"]+)"[^>]*>Use a long system prompt', html).group(1))
    r = client.get(link)
    assert r.status_code == 200
    assert attrs(r.content.decode(), 2)["read"] > 0


@pytest.mark.slow
def test_a_request_with_tools_explains_where_they_sit_in_the_prefix(client):
    r = get(client, SCENARIO.replace(tools=[{"name": "get_weather", "input_schema": {"type": "object"}}]))
    assert r.status_code == 200
    html = r.content.decode()
    assert "Tools are part of the prefix" in html and "Nothing to cache yet" not in html


@pytest.mark.slow
def test_hostile_text_is_escaped(client):
    hostile = Scenario(system='</script><script>alert("sys")</script>' + " filler" * 70,
                       messages=[{"role": "user", "content": '<img src=x onerror=alert(1)>\u202eevil\u202c' + "😀" * 30}], max_tokens=4)
    r = get(client, hostile, bp="system,m0")
    assert r.status_code == 200
    html = r.content.decode()
    assert "<script>alert" not in html and "<img src=x" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html


def test_a_repeat_visit_is_served_from_the_cache(client, monkeypatch):
    get(client, SCENARIO, bp="system", clock="2")
    passes = count_forward_passes(monkeypatch, engine().model)
    assert get(client, SCENARIO, bp="system", clock="2").status_code == 200
    assert passes == []  # neither the two requests nor the measured speed-up are computed again
