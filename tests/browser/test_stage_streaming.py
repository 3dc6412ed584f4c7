"""The streaming stage in Chromium: the recorded transcript without JS, a live run over ws/stream/
that gives the same text, usage arriving last, the pace and the frames toggle."""
import json
from urllib.parse import parse_qs, urlparse

import pytest

from explainer.lifecycle.scenario import Scenario
from explainer.stages.runs import run_of
from tests.browser.conftest import check_sockets

pytestmark = pytest.mark.browser
SCENARIO = Scenario(messages=[{"role": "user", "content": "How do I create a table in SQL?"}], max_tokens=16, seed=21, temperature=0.9)
API_ORDER_HEAD = ["message_start", "content_block_start", "ping"]
API_ORDER_TAIL = ["content_block_stop", "message_delta", "message_stop"]


def play(page, timeout=30_000):
    page.get_by_role("button", name="▶ Play live").click()
    page.wait_for_selector("#same:not(:empty), #wire li.error", timeout=timeout)


def test_the_recorded_run_is_on_the_page_before_play(server, page, link, shoot):
    run = run_of(SCENARIO)
    page.goto(link("streaming", SCENARIO))
    names = page.locator("#wire li:not(.explainer) .ev-name").all_inner_texts()
    assert names == [e["type"] for e in run.events]
    assert page.locator("#wire li.explainer").count() == len(run.steps) + 1  # every token frame, and explainer.done
    first = page.locator("#wire li").first.inner_text()
    assert first.startswith("event: message_start\ndata: {")
    data = json.loads(page.locator("#wire li").nth(0).locator(".data").inner_text())
    assert data["message"]["usage"]["input_tokens"] == len(run.prompt_ids)
    assert page.locator("#text").text_content() == run.text
    assert page.locator("[data-metric=output_tokens] dd").inner_text() == str(run.done["usage"]["output_tokens"])
    # on a laptop the events sit beside the text, and both fit the first screen (the list scrolls)
    text, wire = page.locator("#text").bounding_box(), page.locator("#wire").bounding_box()
    assert wire["x"] >= text["x"] + text["width"]
    assert page.locator("#main-visual").evaluate("el => el.getBoundingClientRect().bottom + scrollY") <= 720
    assert page.locator("#wire").evaluate("el => el.scrollHeight > el.clientHeight")
    shoot(page, "streaming-recorded")


def test_it_streams_live_with_the_same_text(server, page, link, shoot, axe):
    run = run_of(SCENARIO)
    page.goto(link("streaming", SCENARIO, pace="0"))
    page.wait_for_selector("body[data-streaming-ready]")
    play(page)
    assert not page.js_errors
    assert page.locator("#text").text_content() == run.text  # same seed, same text
    assert "same text as the recorded run" in page.locator("#same").inner_text()
    api = [n for n in page.locator("#wire li:not(.explainer) .ev-name").all_inner_texts()]
    assert api[:3] == API_ORDER_HEAD and api[-3:] == API_ORDER_TAIL
    assert set(api[3:-3]) == {"content_block_delta"}
    explainer = page.locator("#wire li.explainer .ev-name").all_inner_texts()
    assert explainer.count("explainer.token") == run.done["usage"]["output_tokens"]
    # usage: input tokens in message_start (first), output tokens in message_delta (last)
    assert page.locator("#wire li.ev-message_start .note").inner_text().startswith(f"input_tokens: {len(run.prompt_ids)}")
    assert page.locator("#wire li.ev-message_delta .note").inner_text().startswith(f"output_tokens: {run.done['usage']['output_tokens']}")
    assert page.locator("[data-metric=output_tokens] dd").inner_text() == str(run.done["usage"]["output_tokens"])
    # the stop reason in words, under the text and in the usage card, as the live message_delta said it
    words = {"max_tokens": "reached max_tokens, the limit you set", "end_turn": "the model chose to stop (end_turn)"}[run.done["stop_reason"]]
    assert page.locator("#stop-words").inner_text() == f"stopped: {words}"
    assert page.locator("[data-metric=stop_reason] dd").inner_text() == words
    assert page.locator("[data-metric=ttft-engine]").inner_text().endswith("ms")
    assert page.locator("[data-metric=ttft-browser]").inner_text().endswith("ms")
    assert float(page.locator("[data-metric=tps-browser]").inner_text()) > 0
    assert page.locator("#timeline svg line").count() >= run.done["usage"]["output_tokens"]
    # what the socket carried both ways was recorded (the page fixture checks it against the frames' schema)
    received = [json.loads(t) for root, t in page.socket_frames if root == "StreamFrame"]
    assert [f["type"] for f in received].count("explainer.token") == run.done["usage"]["output_tokens"]
    assert [root for root, _ in page.socket_frames].count("StreamCommand") == 1
    check_sockets(page.socket_frames)
    axe(page)
    shoot(page, "streaming-1280")


def test_the_pace_slows_the_socket_not_the_engine(server, page, link):
    page.goto(link("streaming", SCENARIO))
    page.locator("#pace").fill("100")
    assert parse_qs(urlparse(page.url).query)["pace"] == ["100"]
    play(page)
    tps_browser = float(page.locator("[data-metric=tps-browser]").inner_text())
    tps_engine = float(page.locator("[data-metric=tps-engine]").inner_text())
    assert tps_browser < 12  # at most ~10 tokens a second with 100 ms pauses
    assert tps_engine > tps_browser


def test_the_explainer_frames_can_be_hidden(server, page, link):
    page.goto(link("streaming", SCENARIO, pace="0"))
    play(page)
    frame = page.locator("#wire li.explainer").first
    assert frame.is_visible()
    page.get_by_label("show the explainer's frames").uncheck()
    assert not frame.is_visible()
    assert parse_qs(urlparse(page.url).query)["frames"] == ["api"]
    page.goto(link("streaming", SCENARIO, frames="api"))
    assert not page.get_by_label("show the explainer's frames").is_checked()


def test_a_refused_request_shows_the_error_frame(server, page, link):
    page.goto(link("streaming", Scenario(messages=[{"role": "user", "content": "word " * 2000}])))
    assert page.locator("#wire li").count() == 0
    play(page)
    assert page.locator("#wire li.error .ev-name").inner_text() == "error"
    assert "invalid_request_error" in page.locator("#text").inner_text()
    assert not page.js_errors


def test_it_fits_a_phone(server, browser, link, shoot):
    ctx = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    pg = ctx.new_page()
    pg.goto(link("streaming", SCENARIO, pace="0"))
    pg.get_by_role("button", name="▶ Play live").tap()
    pg.wait_for_selector("#same:not(:empty)", timeout=30_000)
    shoot(pg, "streaming-phone")
    assert pg.evaluate("document.documentElement.scrollWidth") <= 390
    # on a phone the events come under the text, not beside it
    text, wire = pg.locator("#text").bounding_box(), pg.locator("#wire").bounding_box()
    assert wire["y"] >= text["y"] + text["height"]
    ctx.close()


def test_hostile_text_stays_text(server, page, link):
    hostile = Scenario(messages=[{"role": "user", "content": '<img src=x onerror="window.__pwned=1">\u202e' + "😀" * 30}], max_tokens=6)
    page.goto(link("streaming", hostile, pace="0"))
    play(page)
    assert page.evaluate("window.__pwned") is None
    assert page.locator(".visual img").count() == 0
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280


def test_stop_ends_the_run_and_play_starts_again(server, page, link):
    run = run_of(SCENARIO)
    page.goto(link("streaming", SCENARIO, pace="300"))
    page.get_by_role("button", name="▶ Play live").click()
    page.wait_for_selector("#wire li.ev-content_block_delta", timeout=30_000)
    page.get_by_role("button", name="■ Stop").click()
    assert page.locator("#status").inner_text().startswith("Stopped")
    assert page.get_by_role("button", name="▶ Play live").is_enabled()
    page.locator("#pace").fill("0")
    play(page)
    assert page.locator("#text").text_content() == run.text
    assert not page.js_errors
