"""The projector's side panel and its keys, as the back row and the presenter meet them: every projected piece of
text at least 24 px at 1280x720, nothing cut off, the reveal gone when the class moves on, and a key that cannot
act says why instead of doing nothing."""
from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.browser.test_projector import SMALL_TEXT
from tests.browser.test_rooms import start_room

pytestmark = pytest.mark.browser

CUT_OFF = """() => {
  const live = document.querySelector('.live');
  const r = live.getBoundingClientRect();
  return {scroll: live.scrollHeight, client: live.clientHeight, bottom: r.bottom, vh: innerHeight};
}"""


def test_the_projected_panel_reads_from_the_back_row_and_a_reveal_goes_with_its_stage(browser, server, shoot):
    ctx = browser.new_context(viewport={"width": 1280, "height": 720})
    page = ctx.new_page()
    code, _ = start_room(page, server)
    page.keyboard.press("f")
    expect(page.locator("body.projector")).to_have_count(1)

    # G with no run going: the presenter is told why nothing happened, in view on the projector
    page.locator("body").click(position={"x": 5, "y": 5})
    page.keyboard.press("g")
    expect(page.locator("#room-error")).to_be_visible()
    expect(page.locator("#room-error")).to_contain_text("no run is going")
    page.keyboard.press("r")
    expect(page.locator("#room-error")).to_contain_text("none is open")

    student = browser.new_context(viewport={"width": 390, "height": 844}).new_page()
    student.goto(f"{server['url']}/r/{code}/")
    expect(page.locator("#proj-count")).to_have_text("1")
    page.keyboard.press(" ")  # a run, paused
    expect(page.locator("#live-status")).not_to_have_text("waiting for the presenter")
    page.keyboard.press(" ")  # one token
    expect(student.locator("#live-text .live-tok")).to_have_count(1)
    page.keyboard.press("g")
    expect(page.locator("#room-error")).to_be_hidden()  # the guess opened: the note is gone
    student.locator("#guess-choices button").first.click()
    expect(page.locator("#reveal-title")).to_have_text("Guesses so far: 1")
    page.keyboard.press("r")
    expect(page.locator("#reveal.full")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.locator("#reveal.full")).to_have_count(0)
    expect(page.locator("#reveal-drawn")).to_contain_text("The model drew")  # the reveal's line stays in the panel

    text = page.evaluate(SMALL_TEXT, ".proj-bar, .live, #room-error")
    assert text["seen"] >= 5 and not text["n_small"], text
    box = page.evaluate(CUT_OFF)
    assert box["scroll"] <= box["client"] + 1 and box["bottom"] <= box["vh"] + 1, box  # nothing cut off
    shoot(page, "room-projector-panel-after-reveal-1280")

    # the class moves on: the last stage's reveal is not left on the next one
    page.keyboard.press("ArrowRight")
    expect(page.locator("#reveal")).to_be_hidden()
    expect(student.locator("#reveal")).to_be_hidden()
    ctx.close()
    student.context.close()
