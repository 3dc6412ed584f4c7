"""A class in the browser: the presenter starts a room on a laptop, students join on phones,
follow the presenter's stage, watch a run and guess the next token."""
import json
import re

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import assert_fits_phone, check_sockets

pytestmark = pytest.mark.browser


def frame_at(pg, path: str) -> None:
    pg.wait_for_function("p => { const f = document.getElementById('stage-frame'); try { return f.contentWindow.location.pathname === p "
                         "&& f.contentDocument.readyState === 'complete'; } catch (e) { return false; } }", arg=path)


def start_room(page, server, close_lobby: bool = True) -> tuple[str, str]:
    """Start a room as a presenter; the page opens on the full-screen lobby, closed here with its Start button
    unless ``close_lobby`` is false (tests/browser/test_rooms_lobby.py looks at the lobby itself)."""
    page.goto(server["url"] + "/rooms/")
    page.get_by_role("button", name="Start a room").click()
    page.wait_for_url(re.compile(r"/rooms/\w{6}/present#k="))
    code = page.locator(".join-code").inner_text().strip()
    expect(page.locator("#conn")).to_have_text("connected")
    if close_lobby:
        page.get_by_role("button", name="Start (Enter)").click()
        expect(page.locator("#lobby")).to_be_hidden()
    return code, page.url


def test_a_lesson_with_a_presenter_and_two_students(page, phone, browser, server, shoot, axe):
    code, presenter_url = start_room(page, server)
    axe(page)

    # one student types the code, one opens the link
    phone.goto(server["url"] + "/join")
    phone.get_by_label("Room code").fill(code.lower())
    phone.get_by_role("button", name="Join").click()
    phone.wait_for_url(f"**/r/{code}/")
    expect(phone.locator("#conn")).to_have_text("connected")
    laptop = browser.new_context(viewport={"width": 1280, "height": 720}).new_page()
    laptop.goto(f"{server['url']}/r/{code}/")
    expect(page.locator("#student-count")).to_have_text("2")

    # the presenter moves to the sampling stage; both students follow
    page.locator("#stage-select").select_option("sampling")
    for pg in (phone, laptop):
        expect(pg.locator("#stage-title")).to_have_text("5. Sampling")  # numbered as the pages number it
        frame_at(pg, "/learn/sampling/")
    assert "embed=1" in phone.locator("#stage-frame").get_attribute("src")

    # the presenter starts a run paused (Space), steps once, then opens a guess (G)
    page.locator("body").click(position={"x": 5, "y": 5})
    page.keyboard.press(" ")
    expect(phone.locator("#live-status")).to_have_text("paused by the presenter")
    expect(page.locator("#live-status")).to_have_text("paused: Space releases one token")
    page.keyboard.press(" ")
    expect(phone.locator("#live-text .live-tok")).to_have_count(1)
    page.keyboard.press("g")
    expect(phone.locator("#guess")).to_be_visible()
    choices = phone.locator("#guess-choices button")
    assert choices.count() >= 1
    choices.first.click()
    expect(phone.locator("#guess-mine")).to_contain_text("Your guess")
    laptop.get_by_label("or type your own").fill("the")
    laptop.get_by_role("button", name="Guess", exact=True).click()
    expect(page.locator("#reveal-title")).to_have_text("Guesses so far: 2")
    assert_fits_phone(phone)
    shoot(phone, "room-student-guess-phone")
    axe(phone)

    page.keyboard.press("r")
    expect(phone.locator("#reveal-drawn")).to_contain_text("The model drew")
    expect(phone.locator("#live-text .live-tok")).to_have_count(2)
    assert phone.locator("#reveal-model li").count() >= 1
    assert phone.locator("#reveal-class li").count() >= 1
    shoot(phone, "room-student-reveal-phone")

    # a student who arrives now catches up with the run so far
    late = browser.new_context(viewport={"width": 1280, "height": 720}).new_page()
    late.goto(f"{server['url']}/r/{code}/")
    expect(late.locator("#live-text .live-tok")).to_have_count(2)
    expect(late.locator("#reveal-drawn")).to_contain_text("The model drew")
    assert late.locator("#live-text").inner_text() == phone.locator("#live-text").inner_text()
    late.context.close()

    # projector mode: large type at 1280x720, then play the rest of the run
    page.keyboard.press("f")
    expect(page.locator("body")).to_have_class(re.compile("projector"))
    page.keyboard.press("p")
    expect(page.locator("#live-status")).to_contain_text("finished", timeout=30_000)
    assert page.evaluate("parseFloat(getComputedStyle(document.querySelector('.join-code')).fontSize)") >= 48
    assert page.evaluate("parseFloat(getComputedStyle(document.querySelector('.live-text')).fontSize)") >= 28
    shoot(page, "room-presenter-projector")
    axe(page)
    assert laptop.locator("#live-text").inner_text() == page.locator("#live-text").inner_text()
    assert not page.js_errors and not phone.js_errors
    # the presenter's commands and the student's guess, and every frame back, fit the frames' schema
    sent = {json.loads(t)["type"] for root, t in page.socket_frames + phone.socket_frames if root == "RoomCommand"}
    assert {"auth", "run", "step", "guess", "reveal", "play"} <= sent
    check_sockets(page.socket_frames + phone.socket_frames)

    # a student who explores on their own can rejoin the presenter
    laptop.frame_locator("#stage-frame").locator("a", has_text="edit the request").first.click()
    expect(laptop.locator("#follow")).to_be_visible()
    laptop.locator("#follow").click()
    frame_at(laptop, "/learn/sampling/")
    expect(laptop.locator("#follow")).to_be_hidden()
    laptop.context.close()


def test_without_the_secret_a_presenter_link_cannot_drive(page, server):
    code, url = start_room(page, server)
    page.goto(url.split("#")[0])  # the link without its #k= secret
    page.evaluate("sessionStorage.clear()")
    page.reload()
    expect(page.locator("#room-error")).to_contain_text("does not hold the presenter's secret")
    expect(page.locator("#run")).to_be_disabled()


def test_joining_with_a_wrong_code(phone, server, axe):
    phone.goto(server["url"] + "/join")
    phone.get_by_label("Room code").fill("ZZZZZZ")
    phone.get_by_role("button", name="Join").click()
    expect(phone.locator("#join-error")).to_contain_text("no live room")
    assert_fits_phone(phone)
    axe(phone)


def _decode_qr(png: bytes) -> list[str]:
    import io

    import zxingcpp
    from PIL import Image

    return [b.text for b in zxingcpp.read_barcodes(Image.open(io.BytesIO(png)).convert("L"))]


@pytest.mark.parametrize("size", [(1280, 720), (1920, 1080)])
def test_the_qr_code_scans_to_the_join_link(browser, class_server, shoot, size):
    """Decoded from a screenshot with a real QR decoder, as a phone's camera would: the code in the room's
    header and the large one both give the join link, and neither is clipped by its box."""
    pg = browser.new_context(viewport={"width": size[0], "height": size[1]}).new_page()
    code, _ = start_room(pg, class_server)
    join_url = pg.locator(".join-direct a").get_attribute("href")
    assert join_url.startswith(f"http://classroom.test:8000/r/{code}/?j=")  # signed: a phone scanning it is never limited
    small = pg.locator("#qr-toggle svg")
    box, svg_box = pg.locator("#qr-toggle").bounding_box(), small.bounding_box()
    assert svg_box["width"] >= 100 and svg_box["x"] >= box["x"] and svg_box["x"] + svg_box["width"] <= box["x"] + box["width"] + 0.5
    assert _decode_qr(small.screenshot()) == [join_url]
    pg.locator("#qr-toggle").click()
    big = pg.locator("#qr-big svg")
    expect(big).to_be_visible()
    big_box = big.bounding_box()
    assert big_box["width"] >= 0.5 * min(size) and big_box["y"] + big_box["height"] <= size[1]
    assert _decode_qr(big.screenshot()) == [join_url]
    shoot(pg, f"room-qr-big-{size[0]}")


def _bar_rows(pg, list_id: str) -> list[dict]:
    return pg.evaluate("""id => [...document.querySelectorAll('#' + id + ' li')].map(li => {
        const t = li.querySelector('.bar-track').getBoundingClientRect(), f = li.querySelector('.bar-fill').getBoundingClientRect();
        return {label: li.querySelector('.bar-label').textContent, value: li.querySelector('.bar-value').textContent,
                track: t.width, fill: f.width, top: t.top, bottom: t.bottom};
    })""", list_id)


def test_a_reveal_fills_the_projector_with_bars_the_back_row_can_read(page, browser, server, shoot):
    """After three distinct guesses, R shows both histograms full screen at 1280x720; each bar's visible
    width is its share of the largest, within a few pixels."""
    code, _ = start_room(page, server)
    students = [browser.new_context(viewport={"width": 390, "height": 844}).new_page() for _ in range(3)]
    for st in students:
        st.goto(f"{server['url']}/r/{code}/")
    expect(page.locator("#student-count")).to_have_text("3")
    page.locator("body").click(position={"x": 5, "y": 5})
    page.keyboard.press(" ")  # start paused
    expect(page.locator("#step")).to_be_enabled()
    page.keyboard.press(" ")  # one token
    expect(students[0].locator("#live-text .live-tok")).to_have_count(1)
    page.keyboard.press("g")
    for st in students:
        expect(st.locator("#guess")).to_be_visible()
    students[0].locator("#guess-choices button").nth(0).click()
    students[1].locator("#guess-choices button").nth(1).click()
    students[2].get_by_label("or type your own").fill("zebra")
    students[2].get_by_role("button", name="Guess", exact=True).click()
    expect(page.locator("#reveal-title")).to_have_text("Guesses so far: 3")
    page.keyboard.press("r")
    expect(page.locator("#reveal.full")).to_be_visible()
    box = page.locator("#reveal").bounding_box()
    assert box["x"] <= 0 and box["y"] <= 0 and box["width"] >= 1280 - 1 and box["height"] >= 720 - 1
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280

    cls, model = _bar_rows(page, "reveal-class"), _bar_rows(page, "reveal-model")
    assert len(cls) >= 3 and len(model) >= 3
    counts = [int(r["value"]) for r in cls]
    probs = [float(r["value"].rstrip("%")) for r in model]
    for rows, values in ((cls, counts), (model, probs)):
        top = max(values)
        for r, v in zip(rows, values):
            assert r["track"] >= 120, r  # the bars never collapse
            assert abs(r["fill"] - r["track"] * max(v / top, 0.01)) <= 3, (r, v, top)
            assert r["bottom"] <= 720, r  # inside the first screen
    assert int(page.evaluate("parseFloat(getComputedStyle(document.querySelector('#reveal .bar-label')).fontSize)")) >= 24
    shoot(page, "room-reveal-projector-1280")

    page.keyboard.press("Escape")
    expect(page.locator("#reveal.full")).to_have_count(0)
    for st in students:
        st.context.close()


def test_a_phone_sees_the_guess_buttons_first_and_nothing_that_gives_the_answer_away(page, browser, server, shoot):
    code, _ = start_room(page, server)
    phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True).new_page()
    phone.goto(f"{server['url']}/r/{code}/")
    expect(page.locator("#student-count")).to_have_text("1")
    page.locator("body").click(position={"x": 5, "y": 5})
    page.keyboard.press(" ")
    expect(page.locator("#step")).to_be_enabled()
    page.keyboard.press(" ")
    expect(phone.locator("#live-text .live-tok")).to_have_count(1)
    expect(phone.locator("#live-candidates")).to_be_visible()
    page.keyboard.press("g")
    buttons = phone.locator("#guess-choices button")
    expect(buttons.first).to_be_visible()
    for i in range(buttons.count()):
        b = buttons.nth(i).bounding_box()
        assert b["y"] >= 0 and b["y"] + b["height"] <= 844 and b["height"] >= 44, (i, b)
    # the recorded run in the stage page and the last token's probabilities stay out of sight until the reveal
    expect(phone.locator("#stage-frame")).to_be_hidden()
    expect(phone.locator("#live-candidates")).to_be_hidden()
    assert "%" not in phone.locator("main").inner_text()
    shoot(phone, "room-student-guess-first-phone")
    buttons.first.tap()
    page.keyboard.press("r")
    expect(phone.locator("#reveal-drawn")).to_contain_text("The model drew")
    expect(phone.locator("#stage-frame")).to_be_visible()
    phone.context.close()
