"""The overview's journey in the browser (issue 21, items 3 and 4): its notes are the stages' own figures for the
same request, counted by lib/figures.js, and a refused request is refused on the gateway's card, with every later
stage saying it was not reached, never "accepted" just before the error."""
import re

import pytest
from playwright.sync_api import expect

from explainer.lifecycle.scenario import Scenario
from tests.urls import data_url

pytestmark = pytest.mark.browser

MIXED = Scenario(system="Réponds brièvement.", top_k=40, seed=3, max_tokens=20,
                 messages=[{"role": "user", "content": "What is “naïve” Bayes? 中文 🙂"}])
OVER = Scenario(messages=[{"role": "user", "content": "index " * 900}])
STEPS = ["compose", "gateway", "tokenize", "transformer", "sampling", "streaming"]


def data(pg, server, slug, scenario) -> dict:
    r = pg.request.get(server["url"] + data_url(slug, scenario))
    assert r.ok, r.status
    return r.json()["data"]


def notes(pg) -> dict:
    return {s: pg.locator(f"[data-note={s}]").inner_text().strip() for s in STEPS}


def send(pg, link, scenario, wait: str) -> None:
    pg.goto(link("overview", scenario))
    if pg.locator("#watch").is_checked():
        pg.locator("#watch").uncheck()  # the whole run at once: the notes are read at the end
    over = scenario is OVER
    if over:  # over the window Send is disabled; the request can still be sent on purpose, to see the 400
        expect(pg.locator("#send")).to_be_disabled()
        pg.locator("#send-anyway").click()
    else:
        pg.locator("#send").click()
    pg.wait_for_selector(wait, timeout=30_000)
    if not over:
        pg.wait_for_function("!document.querySelector('#send').disabled", timeout=10_000)
    pg.wait_for_function("document.getElementById('cancel').hidden", timeout=10_000)  # the run is over


@pytest.mark.parametrize("screen", ["laptop", "phone"])
def test_the_journey_s_figures_are_the_stages(server, screen_page, link, shoot, screen):
    pg = screen_page(screen)
    send(pg, link, MIXED, "#usage dd[data-field=output_tokens]")
    got = notes(pg)
    journey = data(pg, server, "overview", MIXED)["journey-figures"]
    compose = data(pg, server, "compose", MIXED)["compose-data"]["figures"]
    streaming = data(pg, server, "streaming", MIXED)["stream-config"]
    assert journey["body_bytes"] == compose["body_bytes"]
    assert got["compose"] == f"{compose['body_bytes']:,} bytes of JSON"
    assert got["gateway"] == "passed"
    assert got["tokenize"] == f"{journey['input_tokens']} tokens"
    assert got["streaming"] == f"{streaming['figures']['events']} events, {streaming['figures']['deltas']} deltas"
    assert pg.locator("#output").inner_text() == streaming["recorded_text"]  # the same run the stages show
    assert not pg.js_errors
    shoot(pg, f"overview-figures-{screen}")


@pytest.mark.parametrize("screen", ["laptop", "phone"])
def test_a_refused_request_is_refused_on_the_gateway_s_card(server, screen_page, link, shoot, screen):
    pg = screen_page(screen)
    send(pg, link, OVER, "#output.has-error")
    got = notes(pg)
    assert got["compose"] == f"{data(pg, server, 'compose', OVER)['compose-data']['figures']['body_bytes']:,} bytes of JSON"
    assert got["gateway"] == "refused: 400 invalid_request_error"
    assert all(got[s] == "not reached" for s in STEPS[2:]), got
    assert "accepted" not in pg.locator("#pipeline").inner_text()
    assert "no model ran" in pg.locator("#status").inner_text()
    assert re.search(r"prompt is too long: \d+ tokens > \d+ maximum", pg.locator("#output").inner_text())
    assert pg.locator("#prompt-tokens .tok").count() == 0 and pg.locator("#usage dd").count() == 0
    assert not pg.js_errors
    shoot(pg, f"overview-refused-{screen}")
