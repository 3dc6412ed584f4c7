"""The guess game as a class plays it (issue 21, item 8): after a reveal each phone shows its own guess and whether
it was right, above the fold; a phone that reloads mid-round keeps its answer; a countdown reveals by itself; the
class score counts accuracy and shows nicknames on the presenter's screen only when asked."""
from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.browser.test_rooms import start_room

pytestmark = pytest.mark.browser


def _join(browser, server, code: str, nick: str | None = None):
    pg = browser.new_context(viewport={"width": 390, "height": 844}).new_page()
    pg.goto(f"{server['url']}/r/{code}/" + (f"#nick={nick}" if nick else ""))
    expect(pg.locator("#conn")).to_have_text("connected")
    return pg


def _one_token(page, first: bool = True) -> None:
    """Space starts a paused run (the first time) and Space releases one token."""
    page.locator("body").click(position={"x": 5, "y": 5})
    if first:
        page.keyboard.press(" ")
        expect(page.locator("#step")).to_be_enabled()
    page.keyboard.press(" ")


def test_each_phone_sees_its_own_result_and_a_reload_keeps_the_answer(page, browser, server, shoot):
    code, _ = start_room(page, server)
    ana, bo = _join(browser, server, code, "Ana"), _join(browser, server, code, "Bo")
    expect(page.locator("#student-count")).to_have_text("2")
    page.locator("#score-on").check()
    page.locator("#score-names").check()
    _one_token(page)
    expect(ana.locator("#live-text .live-tok")).to_have_count(1)
    page.keyboard.press("g")
    expect(ana.locator("#guess")).to_be_visible()
    choices = ana.locator("#guess-choices button")
    first = choices.nth(0).get_attribute("data-text")
    choices.nth(0).click()
    expect(ana.locator("#guess-mine")).to_contain_text("Your guess")

    # Ana's phone reloads in the middle of the round: the same round, with her answer
    ana.reload()
    expect(ana.locator("#conn")).to_have_text("connected")
    expect(ana.locator("#guess")).to_be_visible()
    expect(ana.locator("#guess-mine")).to_contain_text("Your guess")
    expect(ana.locator("#guess-choices button.mine")).to_have_attribute("data-text", first)
    expect(page.locator("#answer-count")).to_have_text("1 of 2 answered")  # counted once, after the reload too

    page.keyboard.press("r")
    expect(page.locator("#reveal.full")).to_be_visible()
    drawn = page.locator("#reveal-drawn").inner_text()
    for phone, guessed in ((ana, True), (bo, False)):
        mine = phone.locator("#reveal-mine")
        expect(mine).to_be_visible()
        text = mine.inner_text()
        if guessed:
            assert ("✓ Right" in text) or ("✗ Not this time" in text), text
            assert "You: " in text and "of 1 answered" in text
        else:
            assert text.startswith("You did not guess this round."), text
        box = mine.bounding_box()
        assert box and 0 <= box["y"] and box["y"] + box["height"] <= 844, box  # above the fold of the phone
    # Ana's result agrees with the projected count (she was the only one to guess)
    right = "✓ Right" in ana.locator("#reveal-mine").inner_text()
    assert page.locator("#reveal-score").inner_text() == ("1 of 1 guessed it" if right else "0 of 1 guessed it"), drawn
    page.keyboard.press("Escape")
    # the class score, on this screen only, with the nicknames asked for
    expect(page.locator("#score-line")).to_contain_text("right of 1 guesses over 1 round")
    expect(page.locator("#score-board li")).to_have_count(2)
    expect(ana.locator("#score")).to_be_hidden()
    shoot(ana, "room-phone-own-result-390")
    for pg in (ana, bo):
        pg.context.close()


def test_a_countdown_reveals_by_itself(page, browser, server):
    code, _ = start_room(page, server)
    student = _join(browser, server, code)
    page.locator("#countdown").select_option("10")
    _one_token(page)
    expect(student.locator("#live-text .live-tok")).to_have_count(1)
    page.keyboard.press("g")
    expect(student.locator("#guess-timer")).to_contain_text("s left")
    student.locator("#guess-choices button").first.click()
    # nobody presses R: the reveal comes when the time is up
    expect(student.locator("#reveal-mine")).to_be_visible(timeout=30_000)
    expect(page.locator("#reveal-score")).to_be_visible()
    student.context.close()
