"""Issue 21, item 1, in the browser: a room runs what the presenter sees. The presenter types a new question into
the stage shown in the room and presses Run (or the stage's own Send): every phone gets a run of the typed prompt,
and the room's stage follows the edit."""
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import expect

from explainer.lifecycle.scenario import Scenario
from tests.browser.test_rooms import frame_at, start_room
from tests.urls import stage_url

pytestmark = pytest.mark.browser


def frame_search(pg) -> dict:
    """The stage frame's query, as the page in it sees its own address."""
    return parse_qs(urlsplit(pg.evaluate("document.getElementById('stage-frame').contentWindow.location.href")).query)


def finished(*pages) -> None:
    for pg in pages:
        expect(pg.locator("#live-status")).to_contain_text("finished", timeout=60_000)


def test_the_class_runs_the_request_typed_on_the_stage(page, phone, server, shoot):
    code, _ = start_room(page, server)
    phone.goto(f"{server['url']}/r/{code}/")
    expect(phone.locator("#conn")).to_have_text("connected")
    expect(page.locator("#student-count")).to_have_text("1")
    frame_at(page, "/learn/overview/")
    page.locator("#pace").fill("0")  # no need to watch each token here
    stage = page.frame_locator("#stage-frame")

    # typed into the overview's prompt box, never sent there: the room's Run runs it
    typed = "Why do cats purr when they sleep?"
    stage.locator("#prompt").fill(typed)
    page.locator("#run").click()
    for pg in (phone, page):
        expect(pg.locator("#live-prompt")).to_contain_text(typed)
    finished(phone, page)
    assert phone.locator("#live-text .live-tok").count() > 0
    # the room's stage followed the edit: the presenter's stage holds it as its scenario, the phone's stage shows it
    s = frame_search(page)["s"][0]
    frame_at(phone, "/learn/overview/")
    phone.wait_for_function("s => new URL(document.getElementById('stage-frame').contentWindow.location.href)"
                            ".searchParams.get('s') === s", arg=s)
    expect(phone.frame_locator("#stage-frame").locator("#prompt")).to_have_value(typed)
    expect(page.locator("#room-error")).to_be_hidden()
    shoot(page, "room-runs-edit-presenter")
    shoot(phone, "room-runs-edit-phone")

    # the stage's own Send hands its request to the room: the phones get it, nothing runs on the presenter's stage alone
    second = "What does a compiler do?"
    stage.locator("#prompt").fill(second)
    stage.get_by_role("button", name="Send").click()
    expect(stage.locator("#status")).to_contain_text("Sent to the room")
    for pg in (phone, page):
        expect(pg.locator("#live-prompt")).to_contain_text(second)
    finished(phone, page)
    expect(stage.locator("#output")).to_be_empty()
    expect(phone.frame_locator("#stage-frame").locator("#prompt")).to_have_value(second)
    shoot(phone, "room-runs-send-phone")

    # a Compose form edited and not applied: Run applies it (the stage opens its page) and the class runs it
    page.locator("#stage-select").select_option("compose")
    frame_at(page, "/learn/compose/")
    third = "Name three sorting algorithms."
    stage.locator(".turn-text").last.fill(third)
    page.locator("#run").click()
    for pg in (phone, page):
        expect(pg.locator("#live-prompt")).to_contain_text(third)
    finished(phone, page)
    frame_at(page, "/learn/compose/")
    expect(stage.locator(".turn-text").last).to_have_value(third)  # the applied page, from the server
    frame_at(phone, "/learn/compose/")
    expect(phone.frame_locator("#stage-frame").locator(".turn-text").last).to_have_value(third)
    assert not page.js_errors and not phone.js_errors


def test_conversation_s_send_runs_the_next_turn_for_the_class(page, phone, server):
    code, _ = start_room(page, server)
    phone.goto(f"{server['url']}/r/{code}/")
    expect(page.locator("#student-count")).to_have_text("1")
    page.locator("#pace").fill("0")
    # a one-question conversation, as a link to it opens in the frame (the default one opens nearly full)
    start = Scenario(messages=[{"role": "user", "content": "What is a primary key?"}], max_tokens=24, seed=5)
    page.evaluate("u => { document.getElementById('stage-frame').src = u; }", stage_url("conversation", start, ff=1, embed=1))
    frame_at(page, "/learn/conversation/")
    expect(phone.locator("#stage-title")).to_contain_text("Conversation")
    stage = page.frame_locator("#stage-frame")
    follow_up = "And how would I test that?"
    stage.locator("#next-message").fill(follow_up)
    stage.get_by_role("button", name="Send", exact=True).click()
    for pg in (phone, page):
        expect(pg.locator("#live-prompt")).to_contain_text(follow_up)
    finished(phone, page)
    # the next request is the room's stage: its last turn is the one typed, on both screens
    for pg in (page, phone):
        pg.wait_for_function("t => { try { const d = document.getElementById('stage-frame').contentDocument;"
                             " return d.readyState === 'complete' && d.body.innerText.includes(t); } catch (e) { return false; } }",
                             arg=follow_up)
    assert frame_search(page)["s"] == frame_search(phone)["s"]
    assert not page.js_errors and not phone.js_errors


def test_an_edit_that_cannot_become_a_request_says_why_and_runs_nothing(page, phone, server):
    code, _ = start_room(page, server)
    phone.goto(f"{server['url']}/r/{code}/")
    expect(page.locator("#student-count")).to_have_text("1")
    page.locator("#stage-select").select_option("compose")
    frame_at(page, "/learn/compose/")
    stage = page.frame_locator("#stage-frame")
    stage.locator("#f-temperature").fill("7")  # the API's range is 0 to 1
    page.locator("#run").click()
    expect(page.locator("#room-error")).to_contain_text("The request on the stage cannot run: ")
    expect(page.locator("#room-error")).to_contain_text("temperature")
    expect(stage.locator(".cp-field-error")).to_be_visible()  # and the stage says it beside the field, as Apply does
    # the page refused it before sending anything: the phones still wait
    expect(phone.locator("#live-status")).to_have_text("waiting for the presenter")
