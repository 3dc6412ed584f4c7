"""Issue 11 in the browser: the presenter's full-screen lobby on a projector (1280x720, 1920x1080) with a QR
code a phone can scan, students who arrive with or without a nickname, and the answer count during a guess."""
import asyncio
import json
import re
import threading

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import ROOT, assert_fits_phone
from tests.browser.test_rooms import _decode_qr, start_room

pytestmark = pytest.mark.browser


def screen(pg, name: str) -> None:
    """What the projector shows: the viewport only (a full-page shot would stretch the page behind the lobby)."""
    out = ROOT / "shots"
    out.mkdir(exist_ok=True)
    pg.screenshot(path=str(out / f"{name}.png"))


def no_sideways_scroll(pg, width: int) -> None:
    wide = pg.evaluate("""w => [...document.querySelectorAll('#lobby *')].filter(e => e.getBoundingClientRect().right > w + 1)
        .slice(0, 5).map(e => e.tagName + '.' + e.className)""", width)
    assert not wide, wide
    assert pg.evaluate("document.documentElement.scrollWidth") <= width
    assert pg.evaluate("document.getElementById('lobby').scrollWidth <= document.getElementById('lobby').clientWidth")


@pytest.mark.parametrize("size", [(1280, 720), (1920, 1080)])
def test_the_lobby_fills_the_projector_and_its_qr_code_scans(browser, class_server, axe, size):
    w, h = size
    pg = browser.new_context(viewport={"width": w, "height": h}).new_page()
    errors = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    code, _ = start_room(pg, class_server, close_lobby=False)
    lobby = pg.locator("#lobby")
    expect(lobby).to_be_visible()
    expect(pg.get_by_role("dialog", name="Join the class")).to_be_visible()
    box = lobby.bounding_box()
    assert box["x"] <= 0 and box["y"] <= 0 and box["width"] >= w - 1 and box["height"] >= h - 1  # the whole screen
    expect(pg.locator("#lobby-code")).to_have_text(code)
    expect(pg.locator(".lobby-url")).to_contain_text("/join")
    expect(pg.locator("#lobby-count")).to_have_text("0")

    # the code in very large type, all of it on screen
    size_px = pg.evaluate("parseFloat(getComputedStyle(document.getElementById('lobby-code')).fontSize)")
    assert size_px >= 96 and (w < 1920 or size_px >= 150), size_px
    cb = pg.locator("#lobby-code").bounding_box()
    assert cb["x"] >= 0 and cb["x"] + cb["width"] <= w and cb["y"] >= 0 and cb["y"] + cb["height"] <= h

    # the QR code: scaled with the screen, never clipped, and it decodes to the join link
    join_url = pg.locator(".lobby-qr figcaption a").get_attribute("href")
    assert join_url.startswith(f"http://classroom.test:8000/r/{code}/")
    qr = pg.locator(".lobby-qr svg")
    qb = qr.bounding_box()
    assert qb["width"] >= 0.45 * h and abs(qb["width"] - qb["height"]) < 1, qb
    assert qb["x"] >= 0 and qb["y"] >= 0 and qb["x"] + qb["width"] <= w and qb["y"] + qb["height"] <= h, qb
    assert _decode_qr(qr.screenshot()) == [join_url]
    # nothing of the lobby overlaps: the code and the QR code sit side by side
    assert cb["x"] + cb["width"] <= qb["x"], (cb, qb)

    no_sideways_scroll(pg, w)
    axe(pg)
    screen(pg, f"room-lobby-{w}x{h}")
    assert not errors
    pg.context.close()


def test_students_arrive_in_the_lobby_then_answer(page, browser, server, shoot, axe):
    code, _ = start_room(page, server, close_lobby=False)
    expect(page.locator("#lobby")).to_be_visible()

    # a phone joins by code with a nickname that looks like HTML; another opens the link and skips the nickname
    ana = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True).new_page()
    ana.goto(server["url"] + "/join")
    ana.get_by_label("Room code").fill(code)
    ana.get_by_label("Nickname (optional)").fill("  <b>x</b>  ")
    assert_fits_phone(ana)
    axe(ana)
    shoot(ana, "room-join-nickname-phone")
    ana.get_by_role("button", name="Join").click()
    ana.wait_for_url(f"**/r/{code}/")
    expect(ana.locator("#nick-msg")).to_have_text("The presenter's screen shows you as “<b>x</b>”.")
    assert "#" not in ana.url  # the nickname left the address bar
    expect(ana.locator("#nick-input")).to_have_value("<b>x</b>")
    bob = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True).new_page()
    bob.goto(f"{server['url']}/r/{code}/")
    expect(bob.locator("#conn")).to_have_text("connected")

    expect(page.locator("#lobby-count")).to_have_text("2")
    expect(page.locator("#lobby-word")).to_have_text("students")
    names = page.locator("#lobby-names li")
    expect(names).to_have_count(1)
    expect(names.first).to_have_text("<b>x</b>")  # shown as text...
    assert page.locator("#lobby-names b").count() == 0  # ...never as markup
    expect(page.locator("#student-count")).to_have_text("2")

    # a blocked nickname is refused with a message, on the student page and on the join page
    bob.locator("#nick > summary").click()  # the nickname form is folded on the room's page
    bob.get_by_label("Nickname (optional)").fill("Shit")
    bob.get_by_role("button", name="Save").click()
    expect(bob.locator("#nick-msg")).to_contain_text("not allowed in a classroom")
    expect(bob.locator("#nick-input")).to_have_attribute("aria-invalid", "true")
    assert_fits_phone(bob)
    axe(bob)
    shoot(bob, "room-student-nickname-refused-phone")
    carl = browser.new_context(viewport={"width": 390, "height": 844}).new_page()
    carl.goto(f"{server['url']}/join?code={code}&nickname=shit")
    expect(carl.locator("#join-error")).to_contain_text("not allowed in a classroom")
    expect(carl.get_by_label("Nickname (optional)")).to_have_attribute("aria-invalid", "true")
    carl.context.close()
    # a refused name never reaches the presenter: a student who joins after the refusals is counted
    # there (the server's frames to the presenter arrive in order), and the names are still the one
    dave = browser.new_context(viewport={"width": 390, "height": 844}).new_page()
    dave.goto(f"{server['url']}/r/{code}/")
    expect(page.locator("#lobby-count")).to_have_text("3")
    expect(names).to_have_count(1)
    dave.context.close()
    expect(page.locator("#lobby-count")).to_have_text("2")
    screen(page, "room-lobby-students-1280x720")
    axe(page)

    # Enter closes the lobby, L (or its button) brings it back, and the first run closes it too
    page.keyboard.press("Enter")
    expect(page.locator("#lobby")).to_be_hidden()
    page.locator("body").click(position={"x": 5, "y": 5})
    page.keyboard.press("l")
    expect(page.locator("#lobby")).to_be_visible()
    expect(page.locator("#lobby-names li")).to_have_text(["<b>x</b>"])
    page.keyboard.press("l")
    expect(page.locator("#lobby")).to_be_hidden()
    page.get_by_role("button", name="Lobby").click()
    expect(page.locator("#lobby")).to_be_visible()
    page.keyboard.press(" ")  # Space: start the run, paused
    expect(page.locator("#lobby")).to_be_hidden()
    expect(page.locator("#step")).to_be_enabled()
    page.locator("body").click(position={"x": 5, "y": 5})
    page.keyboard.press(" ")  # one token
    expect(ana.locator("#live-text .live-tok")).to_have_count(1)

    # a guess: the presenter sees how many of the connected students have answered
    page.keyboard.press("g")
    expect(page.locator("#answer-count")).to_have_text("0 of 2 answered")
    expect(ana.locator("#guess-choices button").first).to_be_visible()
    ana.locator("#guess-choices button").first.tap()
    expect(page.locator("#answer-count")).to_have_text("1 of 2 answered")
    expect(ana.locator("#answer-count")).to_be_hidden()  # the count is the presenter's
    page.keyboard.press("f")  # projector mode, as in a classroom
    screen(page, "room-answer-count-projector-1280x720")
    axe(page)

    # the reveal: the model's draw is marked, and how many guessed it
    page.keyboard.press("r")
    expect(page.locator("#reveal.full")).to_be_visible()
    expect(page.locator("#reveal-score")).to_have_text(re.compile(r"^[01] of 1 guessed it$"))
    hit = page.locator("#reveal-model li.hit")
    expect(hit).to_have_count(1)
    drawn = page.locator("#reveal-drawn").inner_text()
    assert drawn.startswith("The model drew ")
    marker = page.evaluate("getComputedStyle(document.querySelector('#reveal-model li.hit .bar-label'), '::before').content")
    assert "✓" in marker
    screen(page, "room-reveal-score-projector-1280x720")
    assert not page.js_errors
    ana.context.close()
    bob.context.close()


class Crowd:
    """Students on plain WebSockets (a browser each would be too heavy), in a thread with its own event loop:
    Playwright's sync API keeps a loop running in this one."""

    def __init__(self, base_url: str, code: str, names: list[str | None]):
        self.base_url, self.code, self.names = base_url, code, names
        self.ready, self.done = threading.Event(), None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, daemon=True)

    def __enter__(self):
        self.thread.start()
        assert self.ready.wait(60) and self.error is None, self.error
        return self

    def __exit__(self, *exc):
        self.loop.call_soon_threadsafe(self.done.set)
        self.thread.join(30)

    def _main(self):
        asyncio.run(self._run())

    async def _run(self):
        from tests.room_client import connect_student

        self.loop, self.done = asyncio.get_running_loop(), asyncio.Event()
        socks = []
        try:
            for name in self.names:
                s = await connect_student(self.base_url, self.code)
                socks.append(s)
                if name is not None:
                    await s.ws.send(json.dumps({"type": "nickname", "name": name}))
                    reply = await s.read_until(lambda f: f["type"] in ("room.nickname", "error"))
                    assert reply["type"] == "room.nickname", reply
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            self.error = exc
        self.ready.set()
        await self.done.wait()
        for s in socks:
            await s.ws.close()


def test_a_full_class_in_the_lobby(browser, class_server, axe):
    """65 students with 20-character nicknames and 5 without: the first 60 names, "and 5 more, and 5 without a
    nickname", the Start button still on screen at 1280x720, nothing wider than the screen, and the names scroll
    within their box."""
    pg = browser.new_context(viewport={"width": 1280, "height": 720}).new_page()
    code, _ = start_room(pg, class_server, close_lobby=False)
    names = [f"Student number {i:02d}…"[:20] for i in range(65)] + [None] * 5
    with Crowd(class_server["url"], code, names):
        expect(pg.locator("#lobby-count")).to_have_text("70", timeout=30_000)
        expect(pg.locator("#lobby-names li")).to_have_count(60)
        expect(pg.locator("#lobby-more")).to_have_text("and 5 more, and 5 without a nickname")
        start = pg.locator("#lobby-start").bounding_box()
        assert start["y"] + start["height"] <= 720, start
        no_sideways_scroll(pg, 1280)
        qr = pg.locator(".lobby-qr svg")
        assert _decode_qr(qr.screenshot()) == [pg.locator(".lobby-qr figcaption a").get_attribute("href")]
        axe(pg)
        screen(pg, "room-lobby-full-class-1280x720")
    pg.context.close()


def test_a_students_phone_is_one_page_that_scrolls(page, browser, server, shoot):
    """In a room a phone gets a slim header, the live run first, then the stage's main visual at the phone's
    width, and no scroll area inside the page: the stage frame is as tall as the stage."""
    code, _ = start_room(page, server)
    page.locator("#stage-select").select_option("tokenize", force=True)
    ph = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True).new_page()
    ph.goto(f"{server['url']}/r/{code}/")
    expect(ph.locator("#conn")).to_have_text("connected")
    expect(ph.locator("#stage-title")).to_have_text("3. Tokenize")
    # the frame has loaded the stage and taken its height (student.js sets it from the page inside)
    ph.wait_for_function("""() => { const f = document.getElementById('stage-frame'); const d = f.contentDocument;
        return d && d.readyState === 'complete' && d.querySelector('[data-main-visual]') && f.style.height
            && Math.abs(parseFloat(f.style.height) - d.documentElement.scrollHeight) < 2; }""")
    header = ph.locator("header.site").bounding_box()
    assert header["height"] <= 44, header
    live, frame = ph.locator("#live-title").bounding_box(), ph.locator("#stage-frame").bounding_box()
    assert live["y"] < frame["y"] and live["y"] < 844 / 2  # the live run first, near the top
    inner = ph.evaluate("""() => { const d = document.getElementById('stage-frame').contentDocument;
        const mv = d.querySelector('[data-main-visual]').getBoundingClientRect();
        return {content: d.documentElement.scrollHeight, view: d.documentElement.clientHeight,
                sw: d.documentElement.scrollWidth, vw: d.documentElement.clientWidth, mvw: mv.width, mvtop: mv.top,
                lead: getComputedStyle(d.querySelector('.stage-head .lead')).display}; }""")
    assert inner["content"] <= inner["view"] + 2, inner  # nothing left to scroll inside the frame
    assert inner["sw"] <= inner["vw"] and inner["mvw"] <= 390, inner
    assert inner["lead"] == "none" and inner["mvtop"] < 200, inner  # the stage opens on its main visual
    scrollers = ph.evaluate("""() => [...document.querySelectorAll('body *')].filter(e => {
        const s = getComputedStyle(e); return /(auto|scroll)/.test(s.overflowY) && e.scrollHeight > e.clientHeight + 2; })
        .map(e => e.tagName + '#' + e.id + '.' + e.className)""")
    assert not scrollers, scrollers
    assert ph.evaluate("document.documentElement.scrollWidth") <= 390
    shoot(ph, "room-student-phone-tokenize")


def test_the_lobby_says_that_phones_cannot_join_a_server_on_127_0_0_1(browser, server, axe):
    """Issue 21, item 11. The suite's server listens on 127.0.0.1 only (as ``daphne -b 127.0.0.1`` or
    EXPLAINER_LOCAL_ONLY): no phone can reach it, whatever this computer's network address. The projected lobby
    says so and how to fix it, in type the back row reads, with no QR code and no address of the network; and
    "3 students joined" with 2 names says that one joined without a nickname."""
    from explainer.network import lan_address

    pg = browser.new_context(viewport={"width": 1280, "height": 720}).new_page()
    errors = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    code, _ = start_room(pg, server, close_lobby=False)
    expect(pg.get_by_role("dialog", name="Phones cannot join yet")).to_be_visible()
    why, fix = pg.locator("#lobby-why"), pg.locator("#lobby-fix li")
    expect(why).to_contain_text("phones cannot reach it")
    expect(fix.first).to_contain_text("start it again")
    expect(fix.last).to_have_text("Reload this page: the address and the QR code to join appear here.")
    lobby_text = pg.locator("#lobby").inner_text()
    lan = lan_address()
    assert "/r/" not in lobby_text and (not lan or f"{lan}:" not in lobby_text)  # no address a phone would try
    assert pg.locator("#lobby svg, #qr-toggle, #qr-big").count() == 0
    for el in (why, fix.first, fix.last):
        size = el.evaluate("e => parseFloat(getComputedStyle(e).fontSize)")
        assert size >= 24, size
        b = el.bounding_box()
        assert b["x"] >= 0 and b["x"] + b["width"] <= 1280 and b["y"] >= 0 and b["y"] + b["height"] <= 720, b
    assert "Phones cannot join." in pg.locator(".join-warning").inner_text()  # the room bar says it too
    no_sideways_scroll(pg, 1280)

    with Crowd(server["url"], code, ["Ana", None, "Bo"]):
        expect(pg.locator("#lobby-count")).to_have_text("3")
        expect(pg.locator("#lobby-names li")).to_have_text(["Ana", "Bo"])
        expect(pg.locator("#lobby-more")).to_have_text("and 1 without a nickname")
        axe(pg)
        screen(pg, "room-lobby-local-only-1280x720")
    with Crowd(server["url"], code, [None, None]):  # nobody named
        expect(pg.locator("#lobby-count")).to_have_text("2")
        expect(pg.locator("#lobby-names li")).to_have_count(0)
        expect(pg.locator("#lobby-more")).to_have_text("2 without a nickname")
    assert not errors
    pg.context.close()
