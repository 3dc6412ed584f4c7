"""The tutorial's task panel is docked: a column beside the page on a laptop, a bar along the bottom of a
phone, and it never covers the part of the page its task needs (the lesson's ``target``)."""
from __future__ import annotations

import pytest

from explainer.tutorial.lessons import lessons
from tests.browser.conftest import SCREENS
from tests.browser.settle import settled

pytestmark = pytest.mark.browser

IDS = [x.id for x in lessons()]

BOXES = """sel => {
  const box = e => { const r = e.getBoundingClientRect(); return {left: r.left, top: r.top, right: r.right, bottom: r.bottom, w: r.width, h: r.height}; };
  return {panel: box(document.getElementById('tut-panel')), target: box(document.querySelector(sel)),
          vw: innerWidth, vh: innerHeight, sw: document.documentElement.scrollWidth};
}"""


def overlap(a: dict, b: dict) -> bool:
    return a["left"] < b["right"] - 0.5 and b["left"] < a["right"] - 0.5 and a["top"] < b["bottom"] - 0.5 and b["top"] < a["bottom"] - 0.5


@pytest.mark.parametrize("screen", SCREENS)
@pytest.mark.parametrize("lesson_id", IDS)
def test_the_panel_never_covers_what_the_task_needs(screen_page, server, lesson_id, screen, shoot):
    w, h = SCREENS[screen]
    phone = screen == "phone"
    lesson = next(x for x in lessons() if x.id == lesson_id)
    pg = screen_page(screen)
    pg.goto(f"{server['url']}/tutorial/start/{lesson_id}")
    pg.wait_for_selector("#tut-panel")
    settled(pg)  # the stage drew its charts, the panel docked
    assert pg.locator(lesson.target).count() == 1, f"{lesson_id}: no {lesson.target} on the {lesson.stage_slug} page"
    b = pg.evaluate(BOXES, lesson.target)
    assert not overlap(b["panel"], b["target"]), f"{lesson_id} at {w}x{h}: the panel covers {lesson.target} on arrival: {b}"
    if phone:
        assert b["panel"]["bottom"] >= h - 1 and b["panel"]["h"] <= 64, b["panel"]  # one line along the bottom
        pg.get_by_role("button", name="Show the tutorial task").click()  # the task opens over the bottom of the page
        b = pg.evaluate(BOXES, lesson.target)
        assert b["panel"]["h"] <= 0.5 * h, b["panel"]
    else:
        assert b["panel"]["right"] >= w - 1 and b["panel"]["w"] <= 360, b["panel"]  # a column along the right
    assert b["sw"] <= w, f"the docked panel makes the page scroll sideways: {b['sw']}"
    pg.locator("#tut-show").click()
    settled(pg)  # scrolled to the target
    b = pg.evaluate(BOXES, lesson.target)
    shoot(pg, f"tutorial-dock-{lesson_id}-{screen}")
    t = b["target"]
    assert not overlap(b["panel"], t), f"{lesson_id} at {w}x{h}: after 'Show me where' the panel covers {lesson.target}: {b}"
    assert t["top"] >= 0 and t["left"] >= 0 and t["right"] <= w + 0.5, t
    if t["h"] < h / 2:  # a small control is wholly in view; a tall one at least starts in view
        assert t["bottom"] <= h, t
    else:
        assert t["top"] < h * 0.6
    assert not pg.js_errors, pg.js_errors


def test_collapsing_the_panel_gives_the_page_back(browser, server):
    ctx = browser.new_context(viewport={"width": 1366, "height": 768})
    pg = ctx.new_page()
    pg.goto(f"{server['url']}/tutorial/start/temperature")
    pg.wait_for_selector("#tut-panel")
    settled(pg)
    open_width = pg.evaluate("document.querySelector('main').getBoundingClientRect().width")
    pg.locator(".tut-toggle").click()
    pg.wait_for_selector("#tut-panel-body", state="hidden")
    settled(pg)  # the page took the panel's column back
    closed_width = pg.evaluate("document.querySelector('main').getBoundingClientRect().width")
    assert closed_width > open_width + 80
    assert not pg.locator("#tut-panel-body").is_visible()
    ctx.close()


ATTENTION_LABELS = """() => {
  const sizes = [];
  for (const t of document.querySelectorAll('[data-main-visual] svg.heat text')) {
    const m = t.getScreenCTM();
    if (!m || t.getBoundingClientRect().width < 1) continue;
    sizes.push(parseFloat(getComputedStyle(t).fontSize) * Math.hypot(m.a, m.b));
  }
  return {n: sizes.length, min: Math.min(...sizes)};
}"""


@pytest.mark.parametrize("size", [(1366, 768), (1280, 720)])
def test_the_attention_map_keeps_readable_labels_beside_the_panel(browser, server, size):
    """The panel docks beside the page after the map is drawn: the map is drawn again at its new width, its
    axis labels 12 px on screen (they were scaled down to 7-8 px)."""
    ctx = browser.new_context(viewport={"width": size[0], "height": size[1]})
    pg = ctx.new_page()
    pg.goto(f"{server['url']}/tutorial/start/previous-token-head")
    pg.wait_for_selector("#tut-panel")
    settled(pg)
    labels = pg.evaluate(ATTENTION_LABELS)
    assert labels["n"] >= 8 and labels["min"] >= 11.9, labels
    pg.locator(".tut-toggle").click()  # folded: the page widens, and the map is drawn again as large as it fits
    settled(pg)
    labels = pg.evaluate(ATTENTION_LABELS)
    assert labels["n"] >= 8 and labels["min"] >= 11.9, labels
    ctx.close()
