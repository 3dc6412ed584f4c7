"""The inspector's pages in Chromium: a session of real SDK calls (to the stand-in upstream) shown at a phone's and
a laptop's size, readable without sideways scrolling, accessible (axe), and noticing a call made while it is open."""
from __future__ import annotations

import re

import anthropic
import pytest

from tests.browser.conftest import assert_fits_phone
from tests.inspect.conftest import new_session
from tests.inspect.upstream import StandIn
from tests.live_server import ROOT, daphne

pytestmark = pytest.mark.browser


def shots_dir():
    out = ROOT / "shots"
    out.mkdir(exist_ok=True)
    return out
MODEL = "claude-sonnet-4-6"
SYSTEM = "Current time: {}. " + "Answer from the billing records; cite the invoice number. " * 90


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    """A session with four calls: a cache write, a hit, a miss after the system prompt's timestamp changed, a stream."""
    with StandIn() as up, daphne(tmp_path_factory.mktemp("inspectpages"), EXPLAINER_UPSTREAM_URL=up.url) as srv:
        base = new_session(srv)
        sdk = anthropic.Anthropic(api_key="sk-ant-browser-key", base_url=base, max_retries=0, timeout=30)
        history: list[dict] = []
        for n, stamp in enumerate(["10:00", "10:00", "10:05", "10:05"], 1):
            history.append({"role": "user", "content": f"What is on invoice {n}?"})
            kw = {"model": MODEL, "max_tokens": 200, "messages": history,
                  "system": [{"type": "text", "text": SYSTEM.format(stamp), "cache_control": {"type": "ephemeral"}}]}
            if n == 4:
                with sdk.messages.stream(**kw) as s:
                    msg = s.get_final_message()
            else:
                msg = sdk.messages.create(**kw)
            history.append({"role": "assistant", "content": msg.content[0].text})
        yield {"base": base, "sdk": sdk, "server": srv}


@pytest.mark.parametrize("screen", ["phone", "laptop", (1280, 720)])
def test_the_session_page_reads_at_both_sizes(screen_page, session, axe, shoot, screen):
    pg = screen_page(screen)
    resp = pg.goto(session["base"] + "/")
    assert resp.status == 200
    assert pg.input_value("#base-url") == session["base"]
    assert pg.locator(".call").count() == 4
    miss = pg.locator("#call-3")
    assert "system[0].text" in miss.inner_text() and "10:00" in miss.inner_text() and "10:05" in miss.inner_text()
    assert pg.locator("script:not([src])").count() == 0  # the CSP allows none; data and scripts travel apart
    assert pg.locator("#call-2 .cache-hit").count() == 1
    if screen == "phone":
        assert_fits_phone(pg)
    else:
        assert pg.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    pg.click("[data-copy=base-url]")
    pg.wait_for_function("document.querySelector('.copy-status').textContent.length > 0")
    axe(pg)
    shoot(pg, f"inspect-session-{screen if isinstance(screen, str) else 'x'.join(map(str, screen))}")
    assert not pg.js_errors


@pytest.mark.parametrize("screen", ["phone", "laptop"])
def test_a_call_opens_stage_by_stage_in_the_first_screen(screen_page, session, axe, shoot, screen):
    pg = screen_page(screen)
    pg.goto(session["base"] + "/")
    pg.click("#call-3 .call-open a")
    pg.wait_for_url("**/call/3/")
    box = pg.evaluate("""() => { const r = document.getElementById('call-summary').getBoundingClientRect();
        return {top: r.top + scrollY, bottom: r.bottom + scrollY, vh: innerHeight}; }""")
    pg.screenshot(path=str(shots_dir() / f"inspect-call-{screen}-first-screen.png"))
    assert box["top"] >= 0 and box["bottom"] <= box["vh"], f"the call's figures end at {box['bottom']:.0f} px, below {box['vh']} px"
    if screen == "phone":
        assert_fits_phone(pg)
    else:
        assert pg.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    text = pg.inner_text("main")
    for real in ("anthropic-ratelimit", "requests", "49 of 50", "req_standin_", "cache_creation_input_tokens",
                 "What is on invoice 3?", "What is on invoice 1?", "Claude's tokenizer is not public", "system[0].text"):
        assert real in text, real
    assert re.search(r"^(x-api-key|authorization): ••••••••$", text, re.M)  # the SDK's key header, masked
    assert "sk-ant-browser-key" not in pg.content()
    pg.click(".call-stages a[href='#caching']")
    pg.wait_for_function("() => location.hash === '#caching'")
    axe(pg)
    shoot(pg, f"inspect-call-{screen}")
    assert not pg.js_errors


@pytest.mark.parametrize("path", ["/", "/call/3/"])
def test_the_inspectors_pages_keep_their_contrast_in_the_dark_scheme(browser, session, axe, shoot, path):
    ctx = browser.new_context(viewport={"width": 1366, "height": 768}, color_scheme="dark")
    pg = ctx.new_page()
    try:
        pg.goto(session["base"] + path)
        pg.evaluate("() => document.querySelectorAll('details').forEach((d) => { d.open = true; })")
        axe(pg)  # color-contrast among every serious violation
        shoot(pg, f"inspect-dark-{'call' if 'call' in path else 'session'}")
    finally:
        ctx.close()


def test_a_new_call_arrives_live_over_the_socket(page, session):
    frames: list[str] = []
    page.on("websocket", lambda ws: ws.on("framereceived", lambda payload: frames.append(payload)) if "/ws/inspect/" in ws.url else None)
    page.goto(session["base"] + "/")
    page.wait_for_function("() => document.getElementById('calls').dataset.live === 'socket'")
    page.evaluate("() => { window.sameDocument = true; }")  # gone if the page reloads
    before = page.locator(".call").count()
    session["sdk"].messages.create(model=MODEL, max_tokens=50, messages=[{"role": "user", "content": "one more"}])
    page.wait_for_selector(f"#call-{before + 1}", timeout=20_000)
    assert page.evaluate("() => window.sameDocument === true") and page.locator(".call").count() == before + 1
    assert any('"inspect.recorded"' in f for f in frames), frames
    assert "1 new call added" in page.inner_text("#live-note")
    assert f"{before + 1} calls" in page.inner_text("#calls-h")
    page.click(f"#call-{before + 1} .call-open a")  # the new call opens like the others
    page.wait_for_selector("#call-summary")
    assert not page.js_errors


def test_the_first_call_of_an_empty_session_arrives_live(page, session):
    base = new_session(session["server"])
    page.goto(base + "/")
    page.wait_for_function("() => document.getElementById('calls').dataset.live === 'socket'")
    assert "appears here as soon as it is recorded" in page.inner_text("#live-note")
    sdk = anthropic.Anthropic(api_key="sk-ant-browser-key", base_url=base, max_retries=0, timeout=30)
    sdk.messages.create(model=MODEL, max_tokens=50, messages=[{"role": "user", "content": "first"}])
    page.wait_for_selector("#call-1 .call-open a", timeout=20_000)
    assert "1 call" in page.inner_text("#calls-h") and page.locator(".inspect-legend").count() == 1
    assert not page.js_errors


def test_without_a_socket_the_page_polls(page, session):
    page.add_init_script("window.WebSocket = undefined;")  # a proxy that refuses the upgrade, as far as the page can tell
    page.goto(session["base"] + "/")
    page.wait_for_function("() => document.getElementById('calls').dataset.live === 'poll'")
    before = page.locator(".call").count()
    session["sdk"].messages.create(model=MODEL, max_tokens=50, messages=[{"role": "user", "content": "and another"}])
    page.wait_for_selector(f"#call-{before + 1}", timeout=20_000)
    assert not page.js_errors


def test_the_index_starts_a_session(page, session, axe, shoot):
    page.goto(session["server"]["url"] + "/inspect/")
    axe(page)
    shoot(page, "inspect-index")
    page.click("text=New session")
    page.wait_for_selector("#base-url")
    assert "/inspect/" in page.url and page.input_value("#base-url").endswith(page.url.rstrip("/").rsplit("/", 1)[1])
