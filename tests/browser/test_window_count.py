"""The window before Send (issue 21, item 5): the overview and Compose count the prompt against the model's window as
a person types, with the tokenizer that will run it; over the window the overview's Send is disabled with a sentence;
a refused request's error card is one line that leaves the stage's picture in the first screen."""
from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import expect

from explainer.lifecycle.payload import parse_request
from explainer.stages.runs import engine

pytestmark = pytest.mark.browser

LONG = "How does the scheduler pick the next task to run? " * 60  # about 700 tokens: more than the window


def _count_of(text: str) -> int:
    """What the server's engine counts for this one-message prompt (the page must agree)."""
    req = parse_request({"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": text}]}, counting=True)
    return len(engine().prompt_ids(req))


def test_the_overview_counts_as_you_type_and_will_not_send_past_the_window(page, server, shoot):
    page.goto(server["url"] + "/")
    count = page.locator("#window-count")
    expect(count).to_contain_text("tokens the window leaves for a prompt")
    prompt = page.locator("#prompt")
    prompt.fill("Hello there")
    n = _count_of("Hello there")
    expect(count).to_have_text(re.compile(rf"^{n} of \d+ tokens"))
    expect(page.locator("#send")).to_be_enabled()

    prompt.fill(LONG)
    expect(count).to_contain_text("more than the")
    expect(count).to_have_class(re.compile(r"\bover\b"))
    expect(page.locator("#send")).to_be_disabled()
    expect(page.locator("#send-anyway")).to_be_visible()  # sending it on purpose shows the gateway's 400
    expect(page.locator("#status")).to_contain_text("Too long for the window")  # the status line agrees
    assert f"{_count_of(LONG):,} tokens" in count.inner_text()
    shoot(page, "overview-over-the-window")

    prompt.fill("Short again.")
    expect(page.locator("#send")).to_be_enabled()
    expect(page.locator("#send-anyway")).to_be_hidden()
    expect(page.locator("#status")).to_have_text("Ready: press Send.")
    expect(count).not_to_have_class(re.compile(r"\bover\b"))


def test_compose_counts_the_whole_request(page, server):
    page.goto(server["url"] + "/learn/compose/")
    count = page.locator("#window-count")
    expect(count).to_contain_text("tokens the window leaves")
    page.locator(".turn-text").last.fill(LONG)
    expect(count).to_contain_text("more than the")


def test_a_refused_request_s_card_is_one_line_above_the_picture(page, server):
    r = page.request.post(server["url"] + "/scenario/encode", data=json.dumps({"messages": [{"role": "user", "content": LONG}]}),
                          headers={"content-type": "application/json"})
    blob = r.json()["s"]
    for slug in ("tokenize", "sampling", "overview"):
        page.set_viewport_size({"width": 1366, "height": 768})
        page.goto(f"{server['url']}/learn/{slug}/?s={blob}")
        card = page.locator(".api-error")
        expect(card).to_be_visible()
        line = page.locator(".api-error-line > p").bounding_box()
        box = card.bounding_box()
        assert box["height"] <= 64, (slug, box)  # one line (two at most on this width), the JSON folded
        assert line["height"] <= 2 * 26, (slug, line)
        mv = page.locator("[data-main-visual]").bounding_box()
        assert mv["y"] < 768 * 0.6, (slug, mv)  # the picture still starts in the first screen
        expect(card).to_contain_text("prompt is too long")
