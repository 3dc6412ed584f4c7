"""The caching stage in Chromium: request 2 reads what request 1 wrote, the clock expires it,
the breakpoints are controls, and the page fits a projector and a phone."""
import re
from urllib.parse import parse_qs, urlparse

import pytest

from explainer.lifecycle.payload import parse_request
from explainer.lifecycle.scenario import Scenario
from explainer.stages.pages.caching import LONG_SYSTEM
from explainer.stages.runs import engine
from tests.browser.conftest import assert_fits_phone

pytestmark = pytest.mark.browser
SCENARIO = Scenario(system=LONG_SYSTEM, messages=[{"role": "user", "content": "How do I retry a failed task?"}],
                    max_tokens=12, seed=3)


def ready(page):
    page.wait_for_selector("body[data-caching-ready]")
    assert not page.js_errors


def loaded(page, n):
    page.wait_for_selector(f"body[data-caching-loads='{n}']")
    assert not page.js_errors


def numbers(page, i):
    a = page.locator(f"#request-{i}")
    return {k: int(a.get_attribute(f"data-{k}")) for k in ("read", "written", "input", "prefill-tokens")}


def system_tokens():
    ids, ends = engine().prompt_segments(parse_request(SCENARIO.request_body()))
    return ends["system"], len(ids)


def test_request_2_reads_what_request_1_wrote(server, page, link, shoot, axe):
    n_sys, total = system_tokens()
    page.goto(link("caching", SCENARIO, bp="system"))
    ready(page)
    one, two = numbers(page, 1), numbers(page, 2)
    assert one["written"] == n_sys and one["read"] == 0 and one["prefill-tokens"] == total
    assert two["read"] == one["written"] and two["written"] == 0
    assert two["prefill-tokens"] == total - n_sys < one["prefill-tokens"]
    assert "cache hit" in page.locator("#request-2 .ca-badge").inner_text()
    # the timeline shows the entry, the break-even charts their three lines and the crossing
    assert page.locator("#timeline svg rect.life").count() == 2  # kept since request 1, then refreshed
    assert page.locator("#break-even svg polyline").count() == 6
    assert page.locator("#break-even svg circle.crossing").count() == 2
    assert "cheaper from request 2" in page.locator("#even-text").inner_text()
    axe(page)
    shoot(page, "caching-1280")


def test_moving_the_clock_past_the_ttl_makes_request_2_miss(server, page, link, shoot):
    n_sys, _ = system_tokens()
    page.goto(link("caching", SCENARIO, bp="system"))
    ready(page)
    page.locator("#clock").fill("7")
    loaded(page, 1)
    two = numbers(page, 2)
    assert two["read"] == 0 and two["written"] == n_sys
    assert "miss" in page.locator("#request-2 .ca-badge").inner_text()
    assert "t = 7 min" in page.locator("#request-2").inner_text()
    assert "after the cache expired" in page.locator("#expiry-caption").inner_text()
    assert page.locator("#timeline svg line.expiry").count() == 1
    assert parse_qs(urlparse(page.url).query)["clock"] == ["7"]
    shoot(page, "caching-expired")
    # a one-hour TTL survives the same wait
    page.locator("select[data-ttl-for='system']").select_option("1h")
    loaded(page, 2)
    assert numbers(page, 2)["read"] == n_sys
    q = parse_qs(urlparse(page.url).query)
    assert q["ttl"] == ["1h"] and q["bp"] == ["system"] and q["clock"] == ["7"]
    page.reload()
    ready(page)
    assert numbers(page, 2)["read"] == n_sys  # the permalink keeps the options


def test_breaking_a_rule_shows_the_api_s_400(server, page, link, shoot):
    scenario = SCENARIO.replace(messages=[{"role": "user", "content": "How do I retry a failed task?"},
                                          {"role": "assistant", "content": "Set retries on the task."},
                                          {"role": "user", "content": "And how long does it wait between tries?"}])
    page.goto(link("caching", scenario, bp="system"))
    ready(page)
    page.locator("input[data-bp][value='m1']").check()
    page.locator("select[data-ttl-for='m1']").select_option("1h")
    page.wait_for_function("() => document.querySelector('.ca-refused:not([hidden])') !== null")  # bound from /data
    page.wait_for_selector("body:not(.ca-loading)")
    refused = page.locator(".ca-refused").inner_text()
    assert "The API answers 400" in refused and "must not come after" in refused and "invalid_request_error" in refused
    assert page.locator("#wait").is_hidden()
    # unticking the 5-minute one makes the request valid again
    page.locator("input[data-bp][value='system']").uncheck()
    page.wait_for_function("() => document.querySelector('#request-2') !== null")
    assert numbers(page, 2)["read"] > 0
    assert parse_qs(urlparse(page.url).query)["bp"] == ["m1"]
    assert not page.js_errors


def test_a_short_prompt_offers_a_long_system_prompt(server, page, link):
    """The weak case, through its option: the request's own prompt is too short, one click makes it a hit."""
    page.goto(link("caching", Scenario(), system="own"))
    ready(page)
    assert "Not cached: shorter than the minimum" in page.locator(".ca-notice").inner_text()
    assert "not cached: shorter than the minimum of 64 tokens" in page.locator("#request-1 .ca-bps").inner_text()
    assert "nothing was cached" in page.locator("#headline").inner_text()
    page.locator(".ca-notice a.button").click()
    ready(page)
    two = numbers(page, 2)
    assert two["read"] > 0 and two["read"] == numbers(page, 1)["written"]
    assert page.locator("input[data-bp][value='system']").is_checked()
    assert "system" not in parse_qs(urlparse(page.url).query)


def test_the_default_view_is_a_hit_and_its_main_visual_follows_the_clock(server, page, link, shoot):
    """No options: a long system prompt, request 2 reads it; moving the clock redraws the main visual too."""
    page.goto(link("caching", Scenario()))
    ready(page)
    main = page.locator("#main-visual")
    rows = main.locator("li.ca-u")
    assert rows.count() == 2
    read2 = int(rows.nth(1).get_attribute("data-read"))
    assert read2 > 0 and read2 == numbers(page, 2)["read"] == numbers(page, 1)["written"]
    assert "cache hit" in rows.nth(1).locator(".ca-badge").inner_text()
    assert "fewer than request 1" in main.locator("#headline").inner_text()
    box = main.bounding_box()
    assert box["y"] + box["height"] <= 720
    page.locator("#clock").fill("7")
    loaded(page, 1)
    rows = page.locator("#main-visual li.ca-u")
    assert int(rows.nth(1).get_attribute("data-read")) == 0 and int(rows.nth(1).get_attribute("data-written")) == read2
    assert "expired before request 2" in page.locator("#headline").inner_text()
    assert "t = 7 min" in rows.nth(1).inner_text()
    # the system-prompt switch keeps the clock
    own = page.locator("#main-visual a[data-system='own']")
    q = parse_qs(urlparse(own.get_attribute("href")).query)
    assert q["system"] == ["own"] and q["clock"] == ["7"]
    shoot(page, "caching-default-expired")


def test_it_fits_a_phone(server, phone, link, shoot, axe):
    pg = phone
    pg.goto(link("caching", SCENARIO, bp="system", clock="3"))
    pg.wait_for_selector("body[data-caching-ready]")
    shoot(pg, "caching-phone")
    assert_fits_phone(pg)
    axe(pg)
    assert not pg.js_errors



def test_hostile_text_stays_text(server, page, link):
    hostile = Scenario(system='<img src=x onerror="window.__pwned=1">' + " word" * 80,
                       messages=[{"role": "user", "content": "\u202eevil\u202c " + "😀" * 40}], max_tokens=4)
    page.goto(link("caching", hostile, bp="system"))
    ready(page)
    assert page.evaluate("window.__pwned") is None
    assert page.locator(".visual img").count() == 0
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280


def shown_text(page) -> str:
    """What the results say on screen, the measured milliseconds (and their ratio) aside: they vary between runs."""
    text = "\n".join(page.locator(f"#{i}").inner_text() for i in ("ca-main", "timing-note", "cache-results"))
    return re.sub(r"\d+(\.\d+)?( ms|×)", "N", text)


def test_the_script_binds_data_into_the_page_as_the_server_renders_it(server, page, link):
    """A change of options fetches /learn/caching/data, never a page, and binds its view into the page's own markup:
    the page then reads as the server renders the same options (and a refusal, and back)."""
    page.goto(link("caching", CHAT_FOR_BINDING, bp="system"))
    ready(page)
    fetched = []
    page.on("request", lambda r: fetched.append(r) if r.resource_type in ("fetch", "xhr", "document") else None)
    for n, change in enumerate(CHANGES, start=1):
        change(page)
        loaded(page, n)
        bound = shown_text(page)
        url = page.url
        fresh = page.context.new_page()
        fresh.goto(url)
        fresh.wait_for_selector("body[data-caching-ready]")
        assert shown_text(fresh) == bound, url
        fresh.close()
    assert fetched and all(urlparse(r.url).path == "/learn/caching/data" for r in fetched), [r.url for r in fetched]


CHAT_FOR_BINDING = SCENARIO.replace(messages=[{"role": "user", "content": "How do I retry a failed task?"},
                                              {"role": "assistant", "content": "Set retries on the task."},
                                              {"role": "user", "content": "And how long does it wait between tries?"}])
CHANGES = (
    lambda page: page.locator("#clock").fill("7"),  # past the TTL: a miss
    lambda page: page.locator("input[data-bp][value='m1']").check(),  # two breakpoints, one expired
    lambda page: page.locator("select[data-ttl-for='m1']").select_option("1h"),  # a 1-hour after a 5-minute one: the API's 400
    lambda page: page.locator("input[data-bp][value='system']").uncheck(),  # valid again
    lambda page: page.locator("input[data-bp][value='m1']").uncheck(),  # no breakpoints
)
