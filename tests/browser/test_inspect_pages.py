"""The inspector's pages in Chromium: a session of real SDK calls (to the stand-in upstream) shown at a phone's and
a laptop's size, readable without sideways scrolling, accessible (axe), and noticing a call made while it is open."""
from __future__ import annotations

import anthropic
import pytest

from tests.browser.conftest import assert_fits_phone
from tests.inspect.conftest import new_session
from tests.inspect.upstream import StandIn
from tests.live_server import daphne

pytestmark = pytest.mark.browser
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


def test_a_new_call_is_noticed_while_the_page_is_open(page, session):
    page.goto(session["base"] + "/")
    session["sdk"].messages.create(model=MODEL, max_tokens=50, messages=[{"role": "user", "content": "one more"}])
    page.wait_for_selector("#live-note a", timeout=20_000)
    assert "1 new call" in page.inner_text("#live-note")
    page.click("#live-note a")
    page.wait_for_selector("#call-5")
    assert not page.js_errors


def test_the_index_starts_a_session(page, session, axe, shoot):
    page.goto(session["server"]["url"] + "/inspect/")
    axe(page)
    shoot(page, "inspect-index")
    page.click("text=New session")
    page.wait_for_selector("#base-url")
    assert "/inspect/" in page.url and page.input_value("#base-url").endswith(page.url.rstrip("/").rsplit("/", 1)[1])
