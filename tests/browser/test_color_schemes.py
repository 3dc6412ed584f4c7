"""A system set to dark gets a dark palette whose text and charts keep their contrast, the light scheme is
unchanged, projector mode stays light, and a reader who asks for less motion gets no smooth scrolling and
no running transition or animation (issue 21, item 10)."""
from __future__ import annotations

import pytest

from explainer.stages.registry import built
from tests.browser.conftest import SCREENS
from tests.browser.settle import settled

PAGES = ["/", *[f"/learn/{s.slug}/" for s in built()], "/tutorial/", "/rooms/"]

# WCAG relative luminance and contrast, in the page (colours as the browser computed them)
CONTRAST_JS = """
const rgbOf = (c) => { const m = (c || '').match(/[\\d.]+/g); return m ? m.slice(0, 4).map(Number) : null; };
const lum = ([r, g, b]) => { const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
                             return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b); };
const contrast = (a, b) => { const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p); return (x + 0.05) / (y + 0.05); };
const opaque = (c) => c && (c.length < 4 || c[3] === 1);
// the first opaque background at or above an element (the card a chart is drawn on)
const groundOf = (el) => { for (let n = el; n && n.nodeType === 1; n = n.parentElement) {
    if (n.localName !== 'svg' && n.closest('svg')) continue;
    const bg = rgbOf(getComputedStyle(n).backgroundColor); if (bg && opaque(bg)) return bg; }
  return [255, 255, 255]; };
"""

# Every visible label of a chart (SVG <text>) against what it is drawn on: the card under the chart, or its own
# halo (a stroke painted under the fill). axe-core reads HTML text only, so this covers the charts' own text.
SVG_LABELS = CONTRAST_JS + """
return [...document.querySelectorAll('main svg text')].filter((t) => {
    const r = t.getBoundingClientRect(); const s = getComputedStyle(t);
    return r.width > 0 && r.height > 0 && s.visibility !== 'hidden' && t.textContent.trim() && Number(s.opacity) > 0.5;
  }).map((t) => {
    const s = getComputedStyle(t);
    const fill = rgbOf(s.fill), stroke = rgbOf(s.stroke);
    const halo = s.paintOrder.startsWith('stroke') && stroke && parseFloat(s.strokeWidth) >= 2;
    return {text: t.textContent.trim().slice(0, 30), cls: t.getAttribute('class') || '',
            ratio: fill ? contrast(fill, halo ? stroke : groundOf(t)) : 0};
  });
"""


def open_page(browser, screen: str, scheme: str, reduced: bool = False):
    w, h = SCREENS[screen]
    ctx = browser.new_context(viewport={"width": w, "height": h}, is_mobile=w < 700, has_touch=w < 700,
                              color_scheme=scheme, reduced_motion="reduce" if reduced else "no-preference")
    pg = ctx.new_page()
    pg.js_errors = []
    pg.on("pageerror", lambda e: pg.js_errors.append(str(e)))
    return ctx, pg


def ground_luminance(pg) -> float:
    return pg.evaluate("() => { " + CONTRAST_JS + " return lum(groundOf(document.querySelector('main'))); }")


def low_contrast_labels(pg) -> list[dict]:
    # A chart label is small text: 4.5:1, like the text around it. Text drawn over a chart's own marks (a value
    # inside a bar) sits on the mark, not the card: those carry a halo or are checked by their own stage's test.
    labels = pg.evaluate("() => { " + SVG_LABELS + " }")
    return [x for x in labels if x["ratio"] < 4.5]


@pytest.mark.parametrize("scheme", ["dark", "light"])
@pytest.mark.parametrize("screen", ["laptop", "phone"])
@pytest.mark.parametrize("path", PAGES)
def test_every_page_keeps_its_contrast_in_both_schemes(browser, server, axe, path, screen, scheme):
    ctx, pg = open_page(browser, screen, scheme)
    try:
        pg.goto(server["url"] + path)
        settled(pg)
        ground = ground_luminance(pg)
        assert (ground < 0.05) if scheme == "dark" else (ground > 0.8), f"{path}: the {scheme} scheme's ground has luminance {ground:.2f}"
        pg.evaluate("() => document.querySelectorAll('details.fold').forEach((d) => { d.open = true; })")  # their charts too
        settled(pg)
        axe(pg)  # every serious violation, color-contrast among them, over the whole page
        main = pg.locator("[data-main-visual]")
        if main.count():  # the main visual's own text was checked, not skipped as out of reach
            pg.evaluate("""async () => { const r = await axe.run('[data-main-visual]', {runOnly: ['color-contrast']});
                                        window.__mainContrast = [r.passes.length ? r.passes[0].nodes.length : 0, r.violations.length]; }""")
            checked, failed = pg.evaluate("window.__mainContrast")
            assert checked > 0 and failed == 0, (checked, failed)
        low = low_contrast_labels(pg)
        assert not low, f"{path} ({scheme}, {screen}): chart labels below 4.5:1: {low[:6]}"
        assert not pg.js_errors, pg.js_errors
    finally:
        ctx.close()


def test_projector_mode_stays_light_under_a_dark_system(browser, server, axe):
    ctx, pg = open_page(browser, "laptop", "dark")
    try:
        pg.goto(server["url"] + "/learn/transformer/")
        settled(pg)
        assert ground_luminance(pg) < 0.05
        pg.evaluate("() => document.documentElement.classList.add('projector')")  # what presenter.js does to the stage frame
        assert ground_luminance(pg) > 0.8  # the light scheme's ground (projector.css, loaded into a room's frame, whitens it)
        assert pg.evaluate("() => getComputedStyle(document.documentElement).colorScheme") == "light"
        assert pg.evaluate("() => getComputedStyle(document.querySelector('.card')).backgroundColor") == "rgb(255, 255, 255)"
        axe(pg)
        assert not low_contrast_labels(pg)
    finally:
        ctx.close()


def test_a_room_in_projector_mode_stays_light_under_a_dark_system(browser, server):
    ctx, pg = open_page(browser, "laptop", "dark")
    try:
        pg.goto(server["url"] + "/rooms/")
        settled(pg)
        pg.evaluate("() => { document.body.classList.add('projector'); document.documentElement.classList.add('projector'); }")
        assert pg.evaluate("() => getComputedStyle(document.body).backgroundColor") == "rgb(255, 255, 255)"
        assert pg.evaluate("() => getComputedStyle(document.body).color") == "rgb(0, 0, 0)"
    finally:
        ctx.close()


RUNNING = """() => document.getAnimations().filter((a) => a.playState === 'running').map((a) => {
    const t = a.effect.getComputedTiming();
    return {name: a.animationName || a.transitionProperty || a.constructor.name, ms: t.activeDuration,
            target: a.effect.target ? a.effect.target.localName + '.' + a.effect.target.className : ''};
  }).filter((a) => !(a.ms <= 10))"""


@pytest.mark.parametrize("path", PAGES)
def test_reduced_motion_scrolls_at_once_and_runs_no_animation(browser, server, path):
    ctx, pg = open_page(browser, "laptop", "light", reduced=True)
    try:
        pg.goto(server["url"] + path)
        settled(pg)
        assert pg.evaluate("() => getComputedStyle(document.documentElement).scrollBehavior") == "auto"
        assert pg.evaluate(RUNNING) == []
        # a hover or focus starts no transition longer than 0.01 s either (the pipeline's steps, a fold's arrow)
        for sel in ("details.fold > summary", ".pipeline li", ".button"):
            if pg.locator(sel).count() and pg.locator(sel).first.is_visible():
                pg.locator(sel).first.hover(force=True)
                assert pg.evaluate(RUNNING) == [], sel
        # the page's own scrolls (lib/motion.js) jump instead of gliding
        assert pg.evaluate("async () => (await import('/static/js/lib/motion.js')).scrollBehavior()") == "auto"
        assert not pg.js_errors, pg.js_errors
    finally:
        ctx.close()


def test_without_the_preference_scrolls_still_glide(browser, server):
    ctx, pg = open_page(browser, "laptop", "light")
    try:
        pg.goto(server["url"] + "/learn/tokenize/")
        assert pg.evaluate("async () => (await import('/static/js/lib/motion.js')).scrollBehavior()") == "smooth"
        assert pg.evaluate("async () => (await import('/static/js/lib/motion.js')).scrollBehavior(false)") == "auto"
    finally:
        ctx.close()


def test_the_streaming_cursor_blinks_only_without_the_preference(browser, server):
    """The one endless animation (the reply's blinking cursor while it streams) is a sure case: it runs for a
    reader without the preference and is gone, not just slowed, for one with it."""
    durations = {}
    for reduced in (False, True):
        ctx, pg = open_page(browser, "laptop", "light", reduced=reduced)
        try:
            pg.goto(server["url"] + "/learn/streaming/")
            settled(pg)
            pg.evaluate("() => document.querySelector('.st-text').classList.add('streaming')")
            durations[reduced] = pg.evaluate("""() => document.getAnimations().filter((a) => a.animationName === 'st-blink')
                .map((a) => a.playState === 'running' ? a.effect.getComputedTiming().activeDuration : 0)""")
        finally:
            ctx.close()
    assert durations[False] == [float("inf")], durations
    assert durations[True] == [] or all(d <= 10 for d in durations[True]), durations


def test_the_overview_journey_is_not_paced_for_a_reader_who_asked_for_less_motion(browser, server):
    """The journey's pacing moves a highlight from step to step: off by default with the preference (the box
    says so, and ticking it brings the pacing back), on by default without it."""
    for reduced in (True, False):
        ctx, pg = open_page(browser, "laptop", "light", reduced=reduced)
        try:
            pg.goto(server["url"] + "/")
            settled(pg)
            assert pg.locator("#watch").is_checked() is (not reduced)
            if reduced:
                pg.locator("#watch").check()
                pg.reload()
                settled(pg)
                assert pg.locator("#watch").is_checked()  # the reader's own choice is kept
        finally:
            ctx.close()


MASKED_PIXEL = """async () => {
  const img = document.querySelector('[data-main-visual] svg image.pix');
  const el = new Image(); el.src = img.getAttribute('href'); await el.decode();
  const c = document.createElement('canvas'); c.width = el.width; c.height = el.height;
  const ctx = c.getContext('2d'); ctx.drawImage(el, 0, 0);
  return [...ctx.getImageData(el.width - 1, 0, 1, 1).data.slice(0, 3)];  // row 0, last column: masked (it comes later)
}"""


def test_the_attention_maps_masked_cells_follow_the_scheme(browser, server):
    """The heatmap is pixels, not CSS: its masked cells take the scheme's --masked, also when the system turns dark
    while the page is open."""
    ctx, pg = open_page(browser, "laptop", "light")
    try:
        pg.goto(server["url"] + "/learn/transformer/")
        settled(pg)
        assert pg.evaluate(MASKED_PIXEL) == [232, 231, 224]
        before = pg.evaluate("() => document.querySelector('[data-main-visual] svg image.pix').getAttribute('href')")
        pg.emulate_media(color_scheme="dark")
        pg.wait_for_function("(before) => document.querySelector('[data-main-visual] svg image.pix').getAttribute('href') !== before",
                             arg=before)
        dark = pg.evaluate(MASKED_PIXEL)
        assert max(dark) < 128 and max(dark) - min(dark) < 16, dark  # a dark grey: not a weight's colour, not the light grey
    finally:
        ctx.close()
