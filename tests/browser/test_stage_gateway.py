import re

import pytest

from explainer.lifecycle.engine import run_request
from explainer.lifecycle.scenario import Scenario
from explainer.stages.pages.gateway import SIM_LIMITS
from explainer.web.runner import get_engine

pytestmark = pytest.mark.browser

SCENARIO = Scenario(system="Be brief.", messages=[{"role": "user", "content": "Why do databases need indexes?"}],
                    max_tokens=16, seed=2)


def headers_of(text: str) -> dict:
    return dict(re.findall(r"^([a-z0-9-]+): (.*)$", text, re.M))


def test_a_burst_drains_the_requests_bucket_into_a_429(link, page, shoot, axe):
    page.goto(link("gateway", SCENARIO))
    run = run_request(get_engine(), SCENARIO.request_body(), seed=SCENARIO.seed)
    n_in, n_out = len(run.prompt_ids), run.done["usage"]["output_tokens"]
    assert page.locator('[data-gw="n-in"]').inner_text() == str(n_in)

    page.get_by_role("button", name="Fire 10").click()
    statuses = [int(s) for s in page.locator("#log li").evaluate_all("els => els.map(e => e.dataset.status)")][::-1]
    n = SIM_LIMITS.requests_per_minute
    assert statuses == [200] * n + [429] * (10 - n)

    last = page.locator("#last-http").inner_text()
    assert last.startswith("HTTP/2 429")
    h = headers_of(last)
    assert h["anthropic-ratelimit-requests-limit"] == str(n) and h["anthropic-ratelimit-requests-remaining"] == "0"
    assert 1 <= int(h["retry-after"]) <= 60 // n
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", h["anthropic-ratelimit-requests-reset"])
    # each request took its real prompt tokens; each reply gave back what max_tokens reserved but did not use
    used_in = SIM_LIMITS.input_tokens_per_minute - int(h["anthropic-ratelimit-input-tokens-remaining"])
    used_out = SIM_LIMITS.output_tokens_per_minute - int(h["anthropic-ratelimit-output-tokens-remaining"])
    assert n * n_in - 5 <= used_in <= n * n_in  # a little refills while the test runs
    assert n * n_out - 5 <= used_out <= n * n_out
    assert '"type": "rate_limit_error"' in last
    assert "fail" in page.locator('#checks li[data-check="rate"]').get_attribute("class")
    assert "0 of 5 left" in page.locator('.gw-bucket[data-dim="requests"]').inner_text()
    assert not page.js_errors
    page.locator("#log details").first.locator("summary").click()  # the headers of one logged request
    axe(page)
    shoot(page, "gateway-1280")


def test_the_cache_prefix_misses_then_hits_then_expires(link, page):
    page.goto(link("gateway", SCENARIO))
    fire = page.get_by_role("button", name="Fire request")
    fire.click()
    assert "cache miss" in page.locator("#log li").first.inner_text()
    fire.click()
    assert "cache hit" in page.locator("#log li").first.inner_text()
    assert "cached until" in page.locator("#cache-state").inner_text()
    page.get_by_role("button", name="Wait 5 min").click()
    assert "expired" in page.locator("#cache-state").inner_text()
    fire.click()
    assert "cache expired" in page.locator("#log li").first.inner_text()
    # five minutes refilled every bucket
    assert "5 of 5 left" not in page.locator('.gw-bucket[data-dim="requests"]').inner_text()  # one was just taken
    assert "4 of 5 left" in page.locator('.gw-bucket[data-dim="requests"]').inner_text()


def test_a_missing_key_is_a_401_that_takes_nothing(link, page, shoot):
    page.goto(link("gateway", SCENARIO, key="missing"))
    assert "fail" in page.locator('#checks li[data-check="key"]').get_attribute("class")
    assert page.locator('input[name="key"][value="missing"]').is_checked()
    page.get_by_role("button", name="Fire request").click()
    last = page.locator("#last-http").inner_text()
    assert last.startswith("HTTP/2 401") and "authentication_error" in last
    assert "anthropic-ratelimit" not in last
    assert "not reached" in page.locator('#checks li[data-check="validate"]').inner_text()
    assert "skipped" in page.locator('#checks li[data-check="rate"]').get_attribute("class")
    assert "5 of 5 left" in page.locator('.gw-bucket[data-dim="requests"]').inner_text()
    page.get_by_label("a valid key").check()
    assert "key=" not in page.url
    page.get_by_label("a revoked key").check()
    assert "key=wrong" in page.url
    page.get_by_role("button", name="Fire request").click()
    assert "invalid x-api-key" in page.locator("#last-http").inner_text()
    shoot(page, "gateway-401")


def test_busy_servers_answer_529(link, page):
    page.goto(link("gateway", SCENARIO))
    page.get_by_label("every model server busy").check()
    page.get_by_role("button", name="Fire request").click()
    assert page.locator("#last-http").inner_text().startswith("HTTP/2 529")
    assert "5 of 5 left" in page.locator('.gw-bucket[data-dim="requests"]').inner_text()


def test_the_error_gallery_has_every_status(link, page):
    page.goto(link("gateway", SCENARIO))
    codes = page.locator(".gw-error").evaluate_all("els => els.map(e => e.dataset.status)")
    assert codes == ["401", "429", "400", "413", "529"]


def test_it_works_on_a_phone(browser, link, shoot):
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    pg = context.new_page()
    pg.goto(link("gateway", SCENARIO))
    pg.get_by_role("button", name="Fire 10").tap()
    assert pg.evaluate("window.innerWidth") == 390
    assert pg.evaluate("document.documentElement.scrollWidth") <= 390
    shoot(pg, "gateway-phone")
    context.close()


def test_the_page_opens_on_the_checks_and_one_group_of_buckets(link, page):
    page.goto(link("gateway", SCENARIO))
    visual = page.locator("#main-visual")
    checks = visual.locator("#checks > li").evaluate_all("els => els.map(e => e.dataset.check)")
    assert checks == ["size", "key", "validate", "rate", "capacity", "cache"]
    assert visual.locator("#fire").count() == 1
    assert visual.locator("[data-chart-group] svg").count() == 3
    page.wait_for_selector("#main-visual .chart-dl")
    assert visual.locator(".chart-dl").count() == 1  # one download control for the three gauges
    page.get_by_role("button", name="Fire request").click()
    assert "200" in visual.locator("#outcome").inner_text() and "cache miss" in visual.locator("#outcome").inner_text()
    assert not page.js_errors


def test_a_request_that_can_never_pass_is_reported_to_the_tutorial(link, page):
    s = SCENARIO.replace(max_tokens=SIM_LIMITS.output_tokens_per_minute + 1)
    page.goto(link("gateway", s))
    page.evaluate("window.__seen = []; document.addEventListener('explainer:seen', (e) => window.__seen.push(e.detail))")
    page.get_by_role("button", name="Fire request").click()
    assert page.locator("#last-http").inner_text().startswith("HTTP/2 429")
    assert page.evaluate("window.__seen") == ["never-429"]
