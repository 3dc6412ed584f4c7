"""The Serving stage in Chromium: the scheduler's timeline in the first screen at 1366x768 and 390x844 with nothing
scrolling sideways, the figures under it the data's own, the extra-requests control, light and dark schemes, and
the projector's type of at least 24 px."""
from __future__ import annotations

import json
from urllib.request import urlopen

import pytest

from tests.browser.conftest import SCREENS, assert_fits_phone
from tests.browser.settle import settled
from tests.browser.test_projector import SMALL_TEXT

pytestmark = pytest.mark.browser

BOX = """() => {
  const r = document.querySelector('#sv-timeline svg').getBoundingClientRect();
  const m = document.querySelector('[data-main-visual]').getBoundingClientRect();
  return {top: r.top + scrollY, bottom: r.bottom + scrollY, right: r.right, height: r.height,
          main_bottom: m.bottom + scrollY, sw: document.documentElement.scrollWidth};
}"""


def data_of(server, query: str = "") -> dict:
    with urlopen(f"{server['url']}/learn/serving/data{query}") as r:
        return json.load(r)["data"]["serving-data"]


def drawn(pg) -> None:
    pg.wait_for_selector("#sv-timeline svg g.tl-mine")
    settled(pg)


@pytest.mark.parametrize("screen", SCREENS)
def test_the_timeline_is_in_the_first_screen(screen_page, server, screen, shoot):
    w, h = SCREENS[screen]
    pg = screen_page(screen)
    pg.goto(f"{server['url']}/learn/serving/")
    drawn(pg)
    box = pg.evaluate(BOX)
    shoot(pg, f"serving-{screen}")
    assert box["height"] >= 120, box
    assert box["bottom"] <= h and box["main_bottom"] <= h, f"at {w}x{h} the timeline ends below the first screen: {box}"
    assert box["right"] <= w + 0.5 and box["sw"] <= w, box
    if screen == "phone":
        assert_fits_phone(pg)
    # the figures under the picture are the data's (the page and /data read one recorded case)
    d = data_of(server)
    assert pg.locator("#sv-you-tps").inner_text() == str(d["figures"]["you"]["tokens_per_s"])
    assert pg.locator("#sv-aggregate-tps").inner_text() == str(d["figures"]["aggregate_tokens_per_s"])
    # one row per request of the record, this one highlighted
    assert pg.locator("#sv-timeline g.tl-row").count() == len(d["timeline"]["requests"])
    assert pg.locator(f"#sv-timeline g.tl-mine[data-request='{d['timeline']['highlight']}']").count() == 1
    assert not pg.js_errors, pg.js_errors


def test_sixteen_extra_requests_fill_the_batch(screen_page, server, shoot):
    pg = screen_page("laptop")
    pg.goto(f"{server['url']}/learn/serving/")
    drawn(pg)
    pg.locator("a[data-extra='16']").click()
    pg.wait_for_url("**extra=16**")
    drawn(pg)
    d = data_of(server, "?extra=16")
    assert pg.locator("#sv-timeline g.tl-row").count() == len(d["timeline"]["requests"]) >= 17
    assert pg.locator("a[data-extra='16']").get_attribute("aria-current") == "true"
    assert pg.evaluate(BOX)["bottom"] <= SCREENS["laptop"][1]
    shoot(pg, "serving-16-laptop")
    assert not pg.js_errors, pg.js_errors


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_both_colour_schemes_draw_it(browser, server, scheme, shoot):
    ctx = browser.new_context(viewport={"width": 1366, "height": 768}, color_scheme=scheme)
    pg = ctx.new_page()
    try:
        pg.goto(f"{server['url']}/learn/serving/")
        drawn(pg)
        shoot(pg, f"serving-{scheme}")
        # this request's marks are drawn in the accent, not the page's background
        fill = pg.evaluate("() => getComputedStyle(document.querySelector('#sv-timeline g.tl-mine path.tl-steps')).fill")
        bg = pg.evaluate("() => getComputedStyle(document.body).backgroundColor")
        assert fill and fill != bg, (fill, bg)
    finally:
        ctx.close()


def test_projector_type_is_24px_or_more(browser, server, shoot):
    ctx = browser.new_context(viewport={"width": 1280, "height": 720})
    pg = ctx.new_page()
    try:
        pg.goto(f"{server['url']}/learn/serving/?extra=16")
        drawn(pg)
        # as a presenter's room does it (static/js/rooms/presenter.js): the class, then the projector's style sheet
        pg.evaluate("""() => { document.documentElement.classList.add('projector');
            const link = document.createElement('link'); link.id = 'projector-css'; link.rel = 'stylesheet';
            link.href = '/static/css/projector.css'; document.head.append(link); }""")
        pg.wait_for_function("() => document.querySelector('#sv-timeline svg').getAttribute('font-size') === '24'")
        settled(pg)
        shoot(pg, "serving-projector")
        text = pg.evaluate(SMALL_TEXT)
        assert text["seen"] > 0
        assert not text["n_small"], text["small"]
        box = pg.evaluate(BOX)
        assert box["main_bottom"] <= 720 and box["sw"] <= 1280, box
    finally:
        ctx.close()
