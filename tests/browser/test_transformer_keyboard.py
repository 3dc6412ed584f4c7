"""The transformer's head pickers with the keyboard alone (issue 21, item 9): each picker is one Tab stop,
the chosen head's; the arrow keys move the focus between heads and layers as the buttons are laid out,
Home and End along the row, Enter or Space shows the head (the map, the title and the URL follow), and an
arrow key inside a picker, or inside any other widget of a stage page, never changes the stage. Outside a
widget, → still goes to the next stage."""
from __future__ import annotations

from urllib.parse import parse_qs, urlparse

import pytest

from explainer.llm.model import load_model
from tests.browser.test_stage_transformer import SCENARIO
from tests.browser.test_transformer_scale import wide  # noqa: F401  (the many-heads model, a fixture)

pytestmark = pytest.mark.browser

# The focused element, as [layer, head] of its head, and whether it shows that it has the focus.
FOCUSED = """() => {
  const a = document.activeElement;
  const cs = getComputedStyle(a);
  return {layer: a.dataset.layer ?? a.dataset.pickLayer ?? null, head: a.dataset.head ?? a.dataset.pickHead ?? null,
          visible: a.matches(':focus-visible') && cs.outlineStyle !== 'none' && parseFloat(cs.outlineWidth) >= 2};
}"""

# The pager's links made to change only the address's fragment: a stage change the script makes then shows,
# at once and for certain, in location.hash (a real one would take the page away some time later).
TRAP_PAGER = """() => {
  for (const a of document.querySelectorAll('a[data-nav]')) a.href = location.pathname + location.search + '#went-' + a.dataset.nav;
}"""


def query(pg) -> dict:
    return {k: v[0] for k, v in parse_qs(urlparse(pg.url).query).items()}


def focused(pg) -> tuple[str | None, str | None]:
    f = pg.evaluate(FOCUSED)
    assert f["visible"], "the focused button shows no focus outline"
    return f["layer"], f["head"]


def stops(pg, box: str) -> list[tuple[str, str]]:
    """The buttons of a picker that Tab can reach."""
    return [tuple(s) for s in pg.evaluate("""(box) => [...document.querySelectorAll(box + ' button')].filter(b => b.tabIndex === 0)
        .map(b => [b.dataset.layer ?? b.dataset.pickLayer ?? '', b.dataset.head ?? b.dataset.pickHead ?? ''])""", box)]


def stayed(pg) -> None:
    assert pg.evaluate("location.hash") == "", "an arrow key inside a widget changed the stage"


def shows(pg, layer: int, head: int) -> None:
    """The page shows layer · head as the chosen one: its title, its map's name, the pressed buttons and the URL."""
    pg.wait_for_function(f"() => document.getElementById('attn-name').textContent === 'block_{layer}_attn_head_{head}_weights'")
    assert pg.locator("#attn-title").inner_text() == f"layer {layer} · head {head}"
    pressed = pg.locator(".attn-cell[aria-pressed=true], .head-cell[aria-pressed=true]")
    for i in range(pressed.count()):
        assert (pressed.nth(i).get_attribute("data-layer"), pressed.nth(i).get_attribute("data-head")) == (str(layer), str(head))
    q = query(pg)
    assert (q.get("layer", "0"), q.get("head", "0")) == (str(layer), str(head))


def test_the_grid_of_every_head_moves_by_arrow_keys_and_chooses_with_enter(page, link, axe, shoot):
    cfg = load_model().config
    L, H = cfg.n_layer, cfg.n_head
    page.goto(link("transformer", SCENARIO, layer=1, head=2))
    page.evaluate(TRAP_PAGER)
    grid = page.locator("#attn-grid")
    assert grid.get_attribute("role") == "grid"
    assert page.locator("#attn-grid [role=row]").count() == L + 1  # the heads' labels, then one row per layer
    assert stops(page, "#attn-grid") == [("1", "2")]  # one Tab stop: the chosen head

    page.locator('#attn-grid button[tabindex="0"]').focus()
    page.keyboard.press("ArrowRight")
    assert focused(page) == ("1", "3")  # → the next head of the layer
    page.keyboard.press("ArrowRight")
    assert focused(page) == ("1", str(H - 1)) and H == 4  # the last head: the focus stays, the stage too
    stayed(page)
    page.keyboard.press("ArrowDown")
    assert focused(page) == ("2", "3")  # ↓ the next layer
    page.keyboard.press("Home")
    assert focused(page) == ("2", "0")
    page.keyboard.press("ArrowLeft")  # the first head: the focus stays, the stage too
    assert focused(page) == ("2", "0")
    stayed(page)
    page.keyboard.press("End")
    assert focused(page) == ("2", str(H - 1))
    page.keyboard.press("Control+Home")
    assert focused(page) == ("0", "0")
    page.keyboard.press("ArrowUp")
    assert focused(page) == ("0", "0")
    page.keyboard.press("Control+End")
    assert focused(page) == (str(L - 1), str(H - 1))
    stayed(page)
    # moving the focus chooses nothing; the moved focus is the one Tab stop
    shows(page, 1, 2)
    assert stops(page, "#attn-grid") == [(str(L - 1), str(H - 1))]

    page.keyboard.press("Enter")
    shows(page, L - 1, H - 1)
    assert focused(page) == (str(L - 1), str(H - 1)) and stops(page, "#attn-grid") == [(str(L - 1), str(H - 1))]
    page.keyboard.press("ArrowUp")
    page.keyboard.press("ArrowLeft")
    page.keyboard.press(" ")
    shows(page, L - 2, H - 2)
    # the main visual's picker follows
    assert page.locator("[data-pick-layer][aria-pressed=true]").inner_text() == str(L - 2)
    assert page.locator("[data-pick-head][aria-pressed=true]").inner_text() == str(H - 2)

    # Leaving the grid without choosing: Tab comes back to the chosen head, not to the last one focused.
    page.keyboard.press("ArrowDown")
    assert focused(page) == (str(L - 1), str(H - 2))
    page.keyboard.press("Tab")
    assert page.evaluate("document.getElementById('attn-grid').contains(document.activeElement)") is False
    page.keyboard.press("Shift+Tab")
    assert focused(page) == (str(L - 2), str(H - 2))
    stayed(page)
    assert not page.js_errors, page.js_errors
    axe(page)
    shoot(page, "transformer-keyboard")


def test_the_main_visuals_layer_and_head_buttons_move_by_arrow_keys(page, link):
    cfg = load_model().config
    page.goto(link("transformer", SCENARIO, head=1))
    page.evaluate(TRAP_PAGER)
    assert page.locator(".tf-seg[role=toolbar]").count() == 2
    assert stops(page, ".tf-seg[aria-labelledby=pick-layer-l]") == [("0", "")]
    assert stops(page, ".tf-seg[aria-labelledby=pick-head-l]") == [("", "1")]

    page.locator('[data-pick-layer][tabindex="0"]').focus()
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    assert focused(page)[0] == "2"
    page.keyboard.press("Enter")
    shows(page, 2, 1)
    page.keyboard.press("End")
    assert focused(page)[0] == str(cfg.n_layer - 1)
    page.keyboard.press("ArrowRight")  # the last layer: the stage stays
    assert focused(page)[0] == str(cfg.n_layer - 1)
    stayed(page)
    page.keyboard.press("Home")
    assert focused(page)[0] == "0"
    page.keyboard.press("ArrowLeft")
    stayed(page)

    page.keyboard.press("Tab")  # the layer buttons are one Tab stop: the next is the head buttons' chosen one
    assert focused(page) == (None, "1")
    page.keyboard.press("ArrowLeft")
    page.keyboard.press(" ")
    shows(page, 2, 0)
    assert not page.js_errors, page.js_errors


def test_only_outside_a_widget_do_arrow_keys_change_the_stage(page, link):
    page.goto(link("transformer", SCENARIO))
    page.evaluate(TRAP_PAGER)
    # the colour scale's radio buttons: the arrows choose the scale
    page.locator('input[name="attn-scale"][value="linear"]').focus()
    page.keyboard.press("ArrowRight")
    assert page.locator('input[name="attn-scale"]:checked').get_attribute("value") == "log"
    assert query(page)["scale"] == "log"
    stayed(page)

    # the same page, untouched: → on the page itself goes to the next stage, ← to the one before
    page.goto(link("transformer", SCENARIO))
    page.locator('#attn-grid button[tabindex="0"]').focus()
    page.keyboard.press("ArrowRight")
    page.evaluate("document.activeElement.blur()")
    assert page.evaluate("document.activeElement === document.body")
    nxt = page.locator("a[data-nav=next]").get_attribute("href")
    page.keyboard.press("ArrowRight")
    page.wait_for_url(lambda u: urlparse(u).path == urlparse(nxt).path)
    page.wait_for_load_state("load")
    page.keyboard.press("ArrowLeft")
    page.wait_for_url(lambda u: "/learn/transformer/" in u)
    assert not page.js_errors, page.js_errors


def test_other_stages_widgets_keep_their_arrow_keys(page, link):
    # tokenize's listbox of tokens
    page.goto(link("tokenize", SCENARIO, token=3))
    page.evaluate(TRAP_PAGER)
    page.locator('#strip [role=option][tabindex="0"]').focus()
    page.keyboard.press("ArrowRight")
    page.wait_for_function("() => new URLSearchParams(location.search).get('token') === '4'")
    stayed(page)
    # its vocabulary slider
    slider = page.locator("#vocab-range")
    slider.focus()
    before = slider.input_value()
    page.keyboard.press("ArrowRight")
    assert slider.input_value() != before
    stayed(page)
    # Compose's tabs of code
    page.goto(link("compose", SCENARIO))
    page.evaluate(TRAP_PAGER)
    tab = page.locator('.cp-tabs [role=tab][aria-selected="true"]')
    first = tab.get_attribute("data-snippet")
    tab.focus()
    page.keyboard.press("ArrowRight")
    assert page.locator('.cp-tabs [role=tab][aria-selected="true"]').get_attribute("data-snippet") != first
    stayed(page)
    assert not page.js_errors, page.js_errors


def test_a_box_that_scrolls_sideways_keeps_its_arrow_keys(phone, link):
    # on a phone the logit lens's table is wider than its box: the arrows scroll it
    phone.goto(link("transformer", SCENARIO))
    phone.evaluate(TRAP_PAGER)
    lens = phone.locator(".tf-lens-wrap")
    lens.scroll_into_view_if_needed()
    assert lens.evaluate("e => e.scrollWidth > e.clientWidth + 1 && e.scrollLeft === 0")
    lens.focus()
    phone.keyboard.press("ArrowRight")
    phone.wait_for_function("() => document.querySelector('.tf-lens-wrap').scrollLeft > 0")
    stayed(phone)
    assert not phone.js_errors, phone.js_errors


def test_the_grid_of_many_heads_keeps_its_keys(page, link, wide, axe):  # noqa: F811
    page.goto(link("transformer", wide, layer=11, head=7))
    page.evaluate(TRAP_PAGER)
    hg = page.locator("#head-grid")
    assert hg.get_attribute("role") == "grid" and page.locator("#head-grid [role=row]").count() == 9  # layers, then 8 heads
    assert stops(page, "#head-grid") == [("11", "7")]
    page.locator('#head-grid button[tabindex="0"]').focus()
    page.keyboard.press("ArrowRight")  # the last layer, the last head: nothing moves, the stage stays
    page.keyboard.press("ArrowDown")
    assert focused(page) == ("11", "7")
    stayed(page)
    page.keyboard.press("Home")  # layers across: Home is the first layer of this head's row
    assert focused(page) == ("0", "7")
    page.keyboard.press("ArrowUp")
    assert focused(page) == ("0", "6")
    page.keyboard.press("Enter")
    shows(page, 0, 6)
    assert stops(page, "#head-grid") == [("0", "6")]

    # the chosen layer's thumbnails: rows of heads (8 heads: rows of 3), the same keys
    assert page.locator("#attn-grid").get_attribute("role") == "grid"
    assert stops(page, "#attn-grid") == [("0", "6")]
    page.locator('#attn-grid button[tabindex="0"]').focus()
    page.keyboard.press("ArrowRight")
    assert focused(page) == ("0", "7")
    page.keyboard.press("ArrowRight")  # the last head, a short last row: the focus stays
    assert focused(page) == ("0", "7")
    page.keyboard.press("ArrowUp")
    assert focused(page) == ("0", "4")
    page.keyboard.press("End")
    assert focused(page) == ("0", "5")
    page.keyboard.press("Enter")
    shows(page, 0, 5)
    stayed(page)
    assert not page.js_errors, page.js_errors
    axe(page)


def test_in_a_room_the_stages_grid_keeps_its_arrows_and_the_room_keeps_its_stage(page, server):
    """The presenter's page listens for its shortcuts on the stage frame too: an arrow pressed in the grid of
    heads moves there, and the room stays on the transformer stage."""
    from playwright.sync_api import expect

    from tests.browser.test_rooms import frame_at, start_room

    start_room(page, server)
    page.locator("#stage-select").select_option("transformer")
    frame_at(page, "/learn/transformer/")
    stage = page.frame_locator("#stage-frame")
    stage.locator('#attn-grid button[tabindex="0"]').focus()
    before = stage.locator("#attn-grid button:focus").get_attribute("data-head")
    src = page.evaluate("document.getElementById('stage-frame').src")  # the room moving its stage sets it at once
    page.keyboard.press("ArrowRight")
    assert page.evaluate("document.getElementById('stage-frame').src") == src
    expect(stage.locator("#attn-grid button:focus")).not_to_have_attribute("data-head", before)
    page.keyboard.press("ArrowLeft")
    assert page.evaluate("document.getElementById('stage-frame').src") == src
    expect(stage.locator("#attn-grid button:focus")).to_have_attribute("data-head", before)
    expect(page.locator("#stage-select")).to_have_value("transformer")
