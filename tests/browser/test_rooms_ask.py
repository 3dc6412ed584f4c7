""""Everyone asks" as a class does it (issue 23, item 4): the presenter presses A, two phones type a question and
send it, the presenter sends them all at once, each phone streams its own reply, and the projector shows the
questions and the Serving timeline of the class's requests. Phones at 390x844, the projector at 1280x720 and
1366x768."""
from __future__ import annotations

import pytest
from playwright.sync_api import expect

from explainer.lifecycle import frames as fr
from explainer.lifecycle.engine import Engine
from explainer.lifecycle.payload import parse_request
from explainer.lifecycle.scenario import Scenario
from explainer.rooms import asking
from tests.browser.conftest import assert_fits_phone, check_sockets, watch_sockets
from tests.browser.test_rooms import start_room

pytestmark = pytest.mark.browser

ANA = "What does a tokenizer do?"
HOSTILE = "<b>Why</b> is the sky <script>alert(1)</script> blue?"


def _phone(browser, server, code: str, nick: str):
    ctx = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    pg = ctx.new_page()
    pg.js_errors = []
    pg.on("pageerror", lambda e: pg.js_errors.append(str(e)))
    pg.socket_frames = watch_sockets(pg)
    pg.goto(f"{server['url']}/r/{code}/#nick={nick}")
    expect(pg.locator("#conn")).to_have_text("connected")
    return pg


def _alone(text: str) -> str:
    """The reply the question gets when it runs by itself, as the room runs it (same weights, same seed)."""
    sc = Scenario(messages=[{"role": "user", "content": text}], max_tokens=asking.ASK_MAX_TOKENS)
    return "".join(e["piece"] for e in Engine().stream(parse_request(sc.request_body()), seed=sc.seed) if e["type"] == fr.TOKEN)


def _px(pg, selector: str) -> float:
    return pg.evaluate("s => Math.min(...[...document.querySelectorAll(s)].map(e => parseFloat(getComputedStyle(e).fontSize)))", selector)


def test_everyone_asks_from_the_key_to_the_timeline(page, browser, server, shoot, axe):
    code, _ = start_room(page, server)
    ana, bo = _phone(browser, server, code, "Ana"), _phone(browser, server, code, "Bo")
    expect(page.locator("#student-count")).to_have_text("2")
    page.keyboard.press("f")  # projector mode: what the class sees
    page.locator("body").click(position={"x": 5, "y": 5})

    # A opens the round: the projector says what happens, every phone gets a question box
    page.keyboard.press("a")
    expect(page.locator("#ask-panel")).to_be_visible()
    expect(page.locator("#ask-how")).to_contain_text("Send all")
    for pg in (ana, bo):
        expect(pg.locator("#ask-input")).to_be_visible()
        assert pg.locator("#ask-input").get_attribute("maxlength") == "160"
    assert_fits_phone(ana)
    shoot(ana, "room-ask-phone-box")
    ana.get_by_label("Your question for the model").fill(ANA)
    ana.get_by_role("button", name="Send my question").click()
    expect(ana.locator("#ask-text")).to_have_text(ANA)
    expect(ana.locator("#ask-msg")).to_contain_text("Your question is in")
    bo.get_by_label("Your question for the model").fill("why is this shit so slow?")
    bo.get_by_role("button", name="Send my question").click()
    expect(bo.locator("#ask-msg")).to_have_text("That question is not allowed in a classroom. Please choose another one.")
    bo.get_by_label("Your question for the model").fill(HOSTILE)
    bo.get_by_role("button", name="Send my question").click()
    expect(bo.locator("#ask-text")).to_have_text(HOSTILE)  # shown as the text it is, never as markup
    assert_fits_phone(bo)
    shoot(bo, "room-ask-phone-asked")
    axe(bo)

    expect(page.locator("#ask-count")).to_have_text("2 of 2 students asked")
    texts = page.locator(".ask-q-text")
    expect(texts).to_have_count(2)
    assert sorted(texts.all_inner_texts()) == sorted([ANA, HOSTILE])
    assert page.locator("#ask-list b, #ask-list script").count() == 0
    assert _px(page, "#ask-panel .ask-q-text, #ask-panel .ask-who, #ask-count, #ask-how, #ask-panel .button") >= 24
    shoot(page, "room-ask-projector-questions-1280")

    # A again sends them all at once; each phone streams its own reply, the projector draws the timeline
    page.keyboard.press("a")
    for pg, q in ((ana, ANA), (bo, HOSTILE)):
        expect(pg.locator("#ask-reply-status")).to_contain_text("done:", timeout=60_000)
        assert pg.locator("#ask-reply").inner_text() == _alone(q)
    assert ana.locator("#ask-reply").inner_text() != bo.locator("#ask-reply").inner_text()
    expect(page.locator("#ask-timeline-sum")).to_contain_text("2 requests in", timeout=30_000)
    expect(page.locator("#ask-timeline-sum")).not_to_contain_text("so far", timeout=30_000)  # the record after both ended
    expect(page.locator("#ask-timeline svg .tl-mine")).to_have_count(2)
    for status in page.locator(".ask-q .ask-status").all_inner_texts():
        assert status.startswith("answered · ")
    names = page.locator("#ask-timeline svg .tl-mine text").all_text_contents()
    assert sorted(names) == ["Q1 · Ana", "Q2 · Bo"]  # rows are named by number and nickname, never by the question
    assert _px(page, "#ask-timeline-sum, .ask-timeline-how, #ask-timeline-box figcaption") >= 24
    expect(page.locator(".ask-timeline-how")).to_be_in_viewport()
    assert page.evaluate("Math.min(...[...document.querySelectorAll('#ask-timeline svg text')].map(t => t.getBoundingClientRect().height))") >= 20
    shoot(page, "room-ask-projector-timeline-1280")
    for pg in (ana, bo):
        assert_fits_phone(pg)
    shoot(ana, "room-ask-phone-reply")
    axe(ana)

    # the presenter hides a question: it leaves the projector, and no later frame brings it back
    bo_row = page.locator(".ask-q", has_text="sky")
    bo_row.get_by_role("button", name="Hide").click()
    expect(page.locator(".ask-q-text")).to_have_count(1)
    expect(page.locator("#ask-hidden")).to_have_text("1 question hidden from this screen")
    assert "sky" not in page.locator("#ask-panel").inner_text()
    page.set_viewport_size({"width": 1366, "height": 768})
    expect(page.locator("#ask-timeline svg .tl-mine")).to_have_count(2)
    assert _px(page, "#ask-panel .ask-q-text, #ask-timeline-sum") >= 24
    shoot(page, "room-ask-projector-timeline-1366")
    axe(page)

    # Esc goes back to the stage; the run and the guess keys are as before
    page.keyboard.press("Escape")
    expect(page.locator("#ask-panel")).to_be_hidden()
    assert not page.js_errors and not ana.js_errors and not bo.js_errors
    check_sockets(ana.socket_frames + bo.socket_frames)
    for pg in (ana, bo):
        pg.context.close()
