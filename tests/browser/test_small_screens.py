"""Small screens: at 320 px (the narrowest phone still sold) no stage scrolls sideways, folds opened or not;
Tools' rows keep their titles whole; the overview's Stop button leaves the temperature slider a usable width;
Caching's badge never runs over the counts beside it. What is checked is what a person sees: boxes on the page."""
from __future__ import annotations

import pytest

from explainer.stages.registry import built
from tests.browser.settle import settled
from tests.browser.test_first_screen import main_visual_box

pytestmark = pytest.mark.browser

SLUGS = [s.slug for s in built()]
NARROW = (320, 640)

# Every element sticking out past the right edge, unless a box that scrolls or clips it holds it (the rail, a chip strip).
CULPRITS = """(w) => [...document.querySelectorAll('body *')].filter(e => {
    if (e.getBoundingClientRect().right <= w + 0.5) return false;
    for (let a = e.parentElement; a && a !== document.body; a = a.parentElement)
      if (getComputedStyle(a).overflowX !== 'visible') return false;
    return true;
  }).slice(0, 5).map(e => e.tagName + '.' + (e.className.baseVal ?? e.className) + ' ' + JSON.stringify((e.textContent || '').trim().slice(0, 40)))"""


@pytest.fixture
def sized(screen_page):
    """sized(w, h) -> a page at that size (a touch phone below 700 px), its page errors in ``.js_errors``."""
    return lambda w, h: screen_page((w, h))


def assert_no_sideways_scroll(pg, w: int, where: str) -> None:
    # A mobile viewport widens itself to fit what overflows: the layout viewport's width is checked too.
    assert pg.evaluate("innerWidth") == w, f"{where}: the page widened the viewport to {pg.evaluate('innerWidth')} px"
    width = pg.evaluate("document.documentElement.scrollWidth")
    assert width <= w, f"{where}: {width} px wide at {w} px; sticking out: {pg.evaluate(CULPRITS, w)}"


def boxes_overlap(a: dict, b: dict) -> bool:
    return a["x"] < b["x"] + b["width"] and b["x"] < a["x"] + a["width"] and a["y"] < b["y"] + b["height"] and b["y"] < a["y"] + a["height"]


@pytest.mark.parametrize("url", [f"/learn/{s}/" for s in SLUGS] + ["/learn/caching/?system=own"])
def test_nothing_scrolls_sideways_at_320(sized, server, url):
    w, h = NARROW
    pg = sized(w, h)
    pg.goto(server["url"] + url)
    main_visual_box(pg)  # the page's scripts have drawn its charts
    assert_no_sideways_scroll(pg, w, url)
    # and with every fold (and every download menu) open: what a learner reads next fits too
    pg.evaluate("document.querySelectorAll('details').forEach(d => { d.open = true; })")
    settled(pg)  # a fold's charts draw when it opens
    assert_no_sideways_scroll(pg, w, url + " with its folds open")
    assert not pg.js_errors, pg.js_errors


@pytest.mark.parametrize("size", [NARROW, (390, 844)])
def test_tools_rows_keep_their_titles_whole(sized, server, size):
    """The loop's rows once cut "Response 1" to "Re…" at 320 px, for the stop_reason beside it."""
    pg = sized(*size)
    pg.goto(f"{server['url']}/learn/tools/")
    main_visual_box(pg)
    titles = pg.locator(".tl-loop .tl-title").evaluate_all(
        "els => els.map(e => ({text: e.textContent.trim(), cut: e.scrollWidth > e.clientWidth, w: e.clientWidth}))")
    assert len(titles) == 5 and {t["text"] for t in titles} >= {"Request 1", "Response 1", "Request 2", "Response 2"}
    assert not [t for t in titles if t["cut"]], f"at {size[0]} px, titles cut with an ellipsis: {titles}"
    # the stop_reason is still shown, whole, on its row
    stops = pg.locator(".tl-loop .tl-stop").evaluate_all("els => els.map(e => [e.textContent.trim(), e.scrollWidth <= e.clientWidth + 1, e.getBoundingClientRect().right])")
    assert stops and all(whole and right <= size[0] for _, whole, right in stops), stops
    assert not pg.js_errors, pg.js_errors


@pytest.mark.parametrize("size", [(390, 844), NARROW])
def test_overview_stop_button_leaves_the_slider_usable(sized, server, size):
    pg = sized(*size)
    pg.goto(f"{server['url']}/learn/overview/")
    main_visual_box(pg)
    slider = pg.locator("#temperature")
    assert slider.bounding_box()["width"] >= 120, slider.bounding_box()
    pg.locator("#send").click()
    pg.locator("#cancel").wait_for(state="visible", timeout=10_000)  # Stop shows while the request runs
    boxes = {name: pg.locator(sel).bounding_box() for name, sel in
             (("slider", "#temperature"), ("send", "#send"), ("stop", "#cancel"), ("label", ".ask-temp"))}
    assert boxes["slider"]["width"] >= 120, f"at {size[0]} px the slider is squeezed to {boxes['slider']['width']:.0f} px: {boxes}"
    for button in ("send", "stop"):
        for other in ("slider", "label"):
            assert not boxes_overlap(boxes[button], boxes[other]), f"{button} overlaps the {other}: {boxes}"
    assert not boxes_overlap(boxes["send"], boxes["stop"]), boxes
    for name, b in boxes.items():
        assert b["x"] >= 0 and b["x"] + b["width"] <= size[0] + 0.5, f"{name} is off the screen: {b}"
    assert_no_sideways_scroll(pg, size[0], "overview while running")
    assert not pg.js_errors, pg.js_errors


# Each request's badge against what sits beside it in its row: the bars and their counts ("26 computed", the time).
BADGE_HITS = """() => [...document.querySelectorAll('.ca-urows .ca-u')].map(row => {
    const badge = row.querySelector('.ca-badge'), b = badge.getBoundingClientRect();
    const hits = [...row.querySelectorAll('.ca-u-num, .ca-u-num strong, .ca-ubar, .ca-tbar, .ca-u-axis')].filter(e => {
      const r = e.getBoundingClientRect();
      return r.width > 0 && b.left < r.right && r.left < b.right && b.top < r.bottom && r.top < b.bottom;
    }).map(e => e.textContent.trim() || e.className);
    return {badge: badge.textContent.trim(), hits, right: b.right};
  })"""


@pytest.mark.parametrize("size", [NARROW, (390, 844), (1024, 768), (1366, 768)])
@pytest.mark.parametrize("query", ["", "?system=own"])
def test_caching_badge_does_not_cover_the_counts(sized, server, size, query):
    """``system=own`` keeps the default request's short prompt, so both requests get the longest badge:
    "not cached: shorter than the minimum"; the default scenario shows a write and a hit."""
    pg = sized(*size)
    pg.goto(f"{server['url']}/learn/caching/{query}")
    main_visual_box(pg)
    rows = pg.evaluate(BADGE_HITS)
    assert len(rows) == 2, rows
    if query:
        assert all("shorter than the minimum" in r["badge"] for r in rows), rows
    for r in rows:
        assert not r["hits"], f"at {size[0]} px the badge “{r['badge']}” covers {r['hits']}"
        assert r["right"] <= size[0], r
    computed = pg.locator(".ca-urows .ca-u-num strong").first
    assert "computed" in computed.inner_text() and computed.is_visible()
    assert not pg.js_errors, pg.js_errors
