"""The Content-Security-Policy in Chromium: every page, its WebSocket runs and its chart downloads
work under it without one violation; and user text with bidi or control characters is shown with
visible markers, in the order it was typed."""
from __future__ import annotations

import pytest

from explainer.lifecycle.scenario import Scenario
from explainer.stages.registry import built

pytestmark = pytest.mark.browser

# Collected in every frame before any of the page's own code runs (an init script is not subject to the CSP).
WATCH = """document.addEventListener('securitypolicyviolation', (e) => {
  (window.top.__csp = window.top.__csp || []).push(`${e.violatedDirective} blocked ${e.blockedURI} at ${e.sourceFile}:${e.lineNumber}`);
});"""
BIDI = Scenario(system="Be \u2067brief\u2069.", messages=[{"role": "user", "content": "Pay \u202e1000"}], max_tokens=8, seed=2)


@pytest.fixture
def csp_page(browser):
    ctx = browser.new_context(viewport={"width": 1280, "height": 800}, accept_downloads=True)
    ctx.add_init_script(WATCH)
    pg = ctx.new_page()
    pg.console_csp = []
    pg.js_errors = []
    pg.on("console", lambda m: pg.console_csp.append(m.text) if "Content Security Policy" in m.text else None)
    pg.on("pageerror", lambda e: pg.js_errors.append(str(e)))
    yield pg
    ctx.close()


def violations(pg) -> list[str]:
    return (pg.evaluate("window.__csp || []") or []) + pg.console_csp


def assert_policy(response) -> None:
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'self'" in csp and "unsafe-inline" not in csp.split("style-src-attr")[0]


def test_send_streams_a_reply_under_the_policy(server, csp_page):
    pg = csp_page
    assert_policy(pg.goto(server["url"] + "/"))
    pg.get_by_label("Message").fill("What is a database index?")
    pg.locator("#max_tokens").fill("12")
    pg.get_by_role("button", name="Send").click()
    pg.wait_for_selector("#usage dd[data-field=output_tokens]", timeout=30_000)
    assert int(pg.locator("#usage dd[data-field=output_tokens]").inner_text()) >= 1
    names = [n for n in pg.locator("#events .ev-name").all_inner_texts() if not n.startswith("explainer.")]
    assert names[0] == "message_start" and names[-1] == "message_stop" and "content_block_delta" in names
    assert not violations(pg) and not pg.js_errors


def test_a_live_stream_plays_under_the_policy(server, csp_page, link):
    pg = csp_page
    assert_policy(pg.goto(link("streaming", Scenario(max_tokens=10, seed=4), pace="0")))
    pg.wait_for_selector("body[data-streaming-ready]")
    pg.get_by_role("button", name="▶ Play live").click()
    pg.wait_for_selector("#same:not(:empty)", timeout=30_000)
    assert "same text as the recorded run" in pg.locator("#same").inner_text()
    assert not violations(pg) and not pg.js_errors


def test_the_policy_blocks_what_it_should(server, csp_page):
    """The listener works: an inline script and another site's image are refused and reported."""
    pg = csp_page
    pg.goto(server["url"] + "/tutorial/")
    pg.evaluate("""() => { const s = document.createElement('script'); s.textContent = 'window.__ran = 1';
                          document.body.append(s); const i = new Image(); i.src = 'http://example.invalid/x.png'; }""")
    pg.wait_for_function("() => (window.__csp || []).length >= 2")  # a function: an expression would need eval, which the CSP refuses
    assert pg.evaluate("window.__ran") is None
    found = " ".join(violations(pg))
    assert "script-src" in found and "img-src" in found


@pytest.mark.parametrize("path", ["/", "/rooms/", "/tutorial/", "/join", "/traces/",
                                  *[f"/learn/{s.slug}/" for s in built()], *[f"/learn/{s.slug}/?embed=1" for s in built()]])
def test_every_page_loads_without_a_violation(server, csp_page, path):
    pg = csp_page
    assert_policy(pg.goto(server["url"] + path))
    pg.wait_for_load_state("networkidle")
    assert not violations(pg), violations(pg)
    assert not pg.js_errors


def test_a_room_with_its_framed_stage_and_qr_code(server, csp_page):
    pg = csp_page
    pg.goto(server["url"] + "/rooms/")
    with pg.expect_navigation():
        pg.get_by_role("button", name="Start a room").click()
    frame = pg.frame_locator("#stage-frame")
    frame.locator("main").wait_for()
    pg.wait_for_load_state("networkidle")
    assert not violations(pg), violations(pg)


def test_a_chart_downloads_as_png_under_the_policy(server, csp_page, link, tmp_path):
    pg = csp_page
    pg.goto(link("tokenize", BIDI))
    control = pg.locator("main .chart-dl").first
    control.locator("summary").click()
    with pg.expect_download() as d:
        control.locator("button[data-format='png']").click()
    path = tmp_path / "chart.png"
    d.value.save_as(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not violations(pg), violations(pg)


# ---- bidi and control characters ----------------------------------------------------------------

def x_of(pg, selector: str, text: str, index: int) -> float:
    """Left edge on screen of the character at ``index`` of the text node ``text`` inside ``selector``."""
    return pg.evaluate("""([sel, text, i]) => {
      const w = document.createTreeWalker(document.querySelector(sel), NodeFilter.SHOW_TEXT);
      let n; while ((n = w.nextNode()) && n.data !== text);
      const r = document.createRange(); r.setStart(n, i); r.setEnd(n, i + 1);
      return r.getBoundingClientRect().left; }""", [selector, text, index])


def test_compose_shows_a_right_to_left_override_as_a_marker(link, csp_page):
    pg = csp_page
    pg.goto(link("compose", BIDI))
    field = pg.locator(".turn-text").first
    assert field.input_value() == "Pay \u202e1000"  # the field keeps the real text
    note = pg.locator(".turn .ctl-note").first
    assert note.text_content().endswith("Pay ⟨U+202E⟩1000")
    marker = note.locator(".ctl")
    assert marker.text_content() == "⟨U+202E⟩" and "right-to-left override" in marker.get_attribute("title")
    assert "\u202e" not in note.text_content()
    # shown in the order typed: "1000" left to right, after "Pay" and the marker
    assert x_of(pg, ".turn .ctl-note", "1000", 0) < x_of(pg, ".turn .ctl-note", "1000", 3)
    assert marker.bounding_box()["x"] < x_of(pg, ".turn .ctl-note", "1000", 0)
    assert pg.locator("#f-system + .ctl-note .ctl").all_text_contents() == ["⟨U+2067⟩", "⟨U+2069⟩"]

    # the note follows edits, in a new turn too, and goes when the characters go
    field.fill("Pay 1000")
    assert pg.locator(".turn .ctl-note").count() == 0
    pg.get_by_role("button", name="+ Add a turn").click()
    pg.locator(".turn-text").nth(1).fill("a\u202db\x07c")
    assert pg.locator(".turn").nth(1).locator(".ctl").all_text_contents() == ["⟨U+202D⟩", "⟨U+0007⟩"]
    assert not violations(pg) and not pg.js_errors


def test_the_conversation_page_shows_markers_server_and_client_side(link, csp_page):
    pg = csp_page
    pg.goto(link("conversation", BIDI))
    pg.wait_for_selector("body[data-conversation-ready]")
    user = pg.locator(".cv-msg .cv-text", has_text="Pay").first
    assert user.text_content() == "Pay ⟨U+202E⟩1000"  # rendered by the template filter
    assert "Pay ⟨U+202E⟩1000" in pg.locator("#request-json").text_content()  # rendered by conversation.js
    assert pg.locator("#request-json .ctl").count() >= 1
    assert "\u202e" not in pg.locator("main").text_content()
    pg.locator("#next-message").fill("Refund \u202e0001")
    assert pg.locator("#next-message + .ctl-note").text_content().endswith("Refund ⟨U+202E⟩0001")
    assert not violations(pg) and not pg.js_errors


def test_the_overview_fields_get_the_note_too(server, csp_page):
    pg = csp_page
    pg.goto(server["url"] + "/")
    assert pg.locator(".ctl-note").count() == 0
    pg.get_by_label("Message").fill("Pay \u202e1000\x1b[2J")
    assert pg.locator("#prompt + .ctl-note .ctl").all_text_contents() == ["⟨U+202E⟩", "⟨U+001B⟩"]
    pg.get_by_label("Message").fill("Pay 1000")
    assert pg.locator(".ctl-note").count() == 0


def test_hostile_markup_beside_a_control_character_stays_text(link, csp_page):
    pg = csp_page
    hostile = Scenario(messages=[{"role": "user", "content": '\u202e<img src=x onerror="window.__pwned=1"><b>bold</b>'}], max_tokens=4)
    for slug in ("conversation", "recap", "caching", "compose"):
        pg.goto(link(slug, hostile))
        pg.wait_for_load_state("networkidle")
        assert pg.evaluate("window.__pwned") is None
        assert pg.locator("main img[src=x], main b:text('bold')").count() == 0, slug
    assert not pg.js_errors
