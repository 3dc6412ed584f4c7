"""Projector mode, as the back row sees it: a slim bar, the controls behind keys, and each stage's main
visual filling the projected screen at 1280x720 with no text under 24 px and nothing scrolled sideways."""
from __future__ import annotations

import pytest
from playwright.sync_api import expect

from explainer.stages.registry import built
from tests.browser.settle import settled
from tests.browser.test_rooms import frame_at, start_room

pytestmark = pytest.mark.browser
SLUGS = [s.slug for s in built()]

# Every visible piece of text inside the main visual (or the elements ``root`` selects), at the size it is drawn on the screen: the
# computed font size times the element's CSS zoom, or times the SVG's scale for text in a chart.
SMALL_TEXT = """(root) => {
  const small = [];
  let seen = 0;
  for (const box of document.querySelectorAll(root || '[data-main-visual]')) {
    const walker = document.createTreeWalker(box, NodeFilter.SHOW_TEXT);
    while (walker.nextNode()) {
      const t = walker.currentNode;
      if (!t.textContent.trim()) continue;
      const el = t.parentElement;
      const r = el.getBoundingClientRect();
      if (r.width <= 1 || r.height <= 1) continue;  // hidden, or visually-hidden text for screen readers
      const cs = getComputedStyle(el);
      if (cs.visibility === 'hidden' || parseFloat(cs.opacity) === 0) continue;
      let size = parseFloat(cs.fontSize) * (el.currentCSSZoom || 1);
      if (el instanceof SVGElement && el.getScreenCTM()) {
        const m = el.getScreenCTM();
        size = parseFloat(cs.fontSize) * Math.hypot(m.a, m.b);
      }
      seen++;
      if (size < 23.5) small.push(`${el.tagName.toLowerCase()}.${el.getAttribute('class') || ''} "${t.textContent.trim().slice(0, 24)}" ${size.toFixed(1)}px`);
    }
  }
  return {seen, small: small.slice(0, 12), n_small: small.length};
}"""

BOX = """() => {
  const r = document.querySelector('[data-main-visual]').getBoundingClientRect();
  return {top: r.top + scrollY, bottom: r.bottom + scrollY, left: r.left, right: r.right, w: r.width, h: r.height,
          vw: innerWidth, vh: innerHeight, sw: document.documentElement.scrollWidth,
          wide: [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > innerWidth + 1)
                  .slice(0, 4).map(e => e.tagName + '.' + (e.getAttribute('class') || '') + '#' + e.id)};
}"""


@pytest.fixture(scope="module")
def projector(browser, server):
    """One presenter in projector mode at 1280x720, shared by the stage checks below."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 720})
    pg = ctx.new_page()
    start_room(pg, server)
    pg.keyboard.press("f")
    expect(pg.locator("body.projector")).to_have_count(1)
    yield pg
    ctx.close()


def test_projector_mode_is_a_slim_bar_and_the_stage(projector):
    pg = projector
    bar = pg.locator("#proj-bar").bounding_box()
    assert bar and bar["height"] <= 64, bar
    assert not pg.locator(".controls").is_visible() and not pg.locator(".room-bar").is_visible()
    pg.keyboard.press("c")
    assert pg.locator(".controls").is_visible()
    pg.keyboard.press("c")
    assert not pg.locator(".controls").is_visible()
    frame = pg.locator("#stage-frame").bounding_box()
    assert frame["width"] >= 0.6 * 1280 and frame["y"] + frame["height"] <= 720 + 1, frame
    assert pg.evaluate("document.documentElement.scrollWidth") <= 1280


@pytest.mark.parametrize("slug", SLUGS)
def test_every_stage_fills_the_projector_with_its_main_visual(projector, slug, shoot):
    pg = projector
    pg.locator("#stage-select").select_option(slug, force=True)
    frame_at(pg, f"/learn/{slug}/")
    fr = pg.frame_locator("#stage-frame")
    expect(fr.locator("html.projector")).to_have_count(1)
    inner = next(f for f in pg.frames if f.url and f"/learn/{slug}/" in f.url)
    settled(inner)  # charts draw after their data loads
    box = inner.evaluate(BOX)
    shoot(pg, f"projector-{slug}-1280x720")
    assert box["sw"] <= box["vw"], f"{slug}: the projected stage scrolls sideways ({box['sw']} > {box['vw']}): {box['wide']}"
    assert box["top"] >= 0 and box["left"] >= 0 and box["right"] <= box["vw"] + 0.5, box
    assert box["bottom"] <= box["vh"], f"{slug}: the main visual ends at {box['bottom']:.0f}, below the frame's {box['vh']} px"
    assert box["w"] >= 0.8 * box["vw"] or box["h"] >= 0.6 * box["vh"], f"{slug}: the main visual does not fill the screen: {box}"
    text = inner.evaluate(SMALL_TEXT)
    assert text["seen"] > 0
    assert not text["n_small"], f"{slug}: {text['n_small']} pieces of text under 24 px: {text['small']}"
