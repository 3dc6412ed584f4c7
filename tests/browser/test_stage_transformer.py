"""The transformer page in a real browser: the maps are drawn from the model's own numbers."""
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest

from explainer.lifecycle.scenario import Scenario
from explainer.llm.model import load_model
from explainer.stages.runs import run_of

pytestmark = pytest.mark.browser

SCENARIO = Scenario(messages=[{"role": "user", "content": "What does a PostgreSQL index do?"}], seed=3, max_tokens=8)
HOSTILE = Scenario(messages=[{"role": "user", "content": '<img src=x onerror="window.__pwned=1">\u202eevil\u202c\n\tok ' + "😀" * 40}],
                   max_tokens=4)
LONG = Scenario(messages=[{"role": "user", "content": "Explain how a database index speeds up a query. " * 30}], max_tokens=4)


def query(page) -> dict:
    return {k: v[0] for k, v in parse_qs(urlparse(page.url).query).items()}


LABEL_PX = """() => {
  const s = document.querySelector('#attn-big svg');
  const scale = s.getBoundingClientRect().width / s.viewBox.baseVal.width;
  return Math.min(...[...s.querySelectorAll('text.lbl')].map(t => parseFloat(t.getAttribute('font-size')) * scale));
}"""


def assert_main_visual_holds_the_map(pg) -> None:
    """The chosen head's map, its picker and the token strip are the main visual; its labels are not shrunk."""
    mv = pg.locator("#main-visual")
    assert mv.locator("#attn-big svg").count() == 1 and mv.locator("#token-strip button.tok").count() > 0
    assert mv.locator("[data-pick-layer]").count() == load_model().config.n_layer
    assert mv.locator("[data-pick-head]").count() == load_model().config.n_head
    assert pg.evaluate(LABEL_PX) >= 11.9


def test_it_draws_every_head_from_the_models_weights(page, link, shoot, axe):
    ids = run_of(SCENARIO).prompt_ids
    page.goto(link("transformer", SCENARIO, token=5))
    assert_main_visual_holds_the_map(page)
    cfg = load_model().config
    cells = page.locator("#attn-grid button.attn-cell")
    assert cells.count() == cfg.n_layer * cfg.n_head
    assert page.locator("#token-strip button.tok").count() == len(ids)
    assert page.locator("#token-strip button[aria-pressed=true]").get_attribute("data-pos") == "5"

    # The bars for token 5 show the model's weights of layer 0, head 0, strongest first.
    w = load_model().forward(ids, want=("block_0_attn_head_0_weights",)).trace["block_0_attn_head_0_weights"][5]
    shown = [float(x) for x in page.locator("#attends-list .w").all_inner_texts()]
    assert shown == pytest.approx(sorted(np.round(w[:6], 3), reverse=True), abs=1.5e-3)

    # Choosing a head enlarges it and puts it in the URL.
    page.locator('#attn-grid button[data-layer="2"][data-head="3"]').click()
    assert page.locator("#attn-grid button[aria-pressed=true]").get_attribute("aria-label").endswith("(block_2_attn_head_3_weights)")
    assert page.locator("#attn-name").inner_text() == "block_2_attn_head_3_weights"
    assert page.locator("#attn-title").inner_text() == "layer 2 · head 3"
    q = query(page)
    assert (q["layer"], q["head"], q["token"]) == ("2", "3", "5")
    assert "layer=2" in page.locator("[data-copy-link]").get_attribute("data-copy-link")

    # The big map's own picker (the main visual) shows the same head, and moves it too.
    assert page.locator("[data-pick-layer][aria-pressed=true]").inner_text() == "2"
    assert page.locator("[data-pick-head][aria-pressed=true]").inner_text() == "3"
    page.locator('[data-pick-layer="1"]').click()
    assert (query(page)["layer"], query(page)["head"]) == ("1", "3")
    assert page.locator("#attn-grid button[aria-pressed=true]").get_attribute("aria-label").endswith("(block_1_attn_head_3_weights)")
    assert page.locator("#attn-title").inner_text() == "layer 1 · head 3"
    page.locator('[data-pick-layer="2"]').click()
    assert page.locator("#attn-name").inner_text() == "block_2_attn_head_3_weights"

    # Hovering a cell of the enlarged map reads out the model's weight for that pair of tokens.
    w23 = load_model().forward(ids, want=("block_2_attn_head_3_weights",)).trace["block_2_attn_head_3_weights"]
    page.locator("#attn-big").scroll_into_view_if_needed()
    box = page.locator("#attn-big image").bounding_box()
    cell = box["width"] / len(ids)
    page.mouse.move(box["x"] + 2.5 * cell, box["y"] + 6.5 * cell)
    assert page.locator("#attn-readout").inner_text().endswith(f"weight {w23[6, 2]:.3f}")
    page.mouse.move(box["x"] + 6.5 * cell, box["y"] + 2.5 * cell)
    assert "masked" in page.locator("#attn-readout").inner_text()

    # The keyboard works too: a focused map is chosen with Enter.
    page.locator('#attn-grid button[data-layer="0"][data-head="1"]').focus()
    page.keyboard.press("Enter")
    assert query(page)["head"] == "1" and "layer" not in query(page)

    # Clicking a token moves every view to it.
    page.locator('#token-strip button[data-pos="8"]').click()
    assert query(page)["token"] == "8"
    assert page.locator("#attends-list li").count() == min(8, 9)
    lens_first = page.locator("#lens-table tbody tr").first.locator("td").first.get_attribute("data-id")
    assert lens_first is not None
    assert page.locator(".tf-selected .sel-pos").inner_text() == "8"
    assert not page.js_errors
    axe(page)
    shoot(page, "transformer-1280")


def test_a_permalink_opens_the_same_map_and_token(page, link):
    page.goto(link("transformer", SCENARIO, layer=1, head=2, token=3))
    assert page.locator("#attn-grid button[aria-pressed=true]").get_attribute("data-layer") == "1"
    assert page.locator("#attn-grid button[aria-pressed=true]").get_attribute("data-head") == "2"
    assert page.locator("#attn-title").inner_text() == "layer 1 · head 2"
    assert page.locator(".tf-selected .sel-pos").inner_text() == "3"
    assert not page.js_errors


def test_a_long_prompt_shows_a_window_and_can_move_it(page, link, shoot, axe):
    run = run_of(LONG)
    n = len(run.prompt_ids)
    assert n > 64 and not run.error
    page.goto(link("transformer", LONG))
    assert page.locator("#token-strip button.tok").count() == n
    assert page.locator("#token-strip button.tok.outside").count() == n - 64
    assert f"The {n - 64} tokens before the window" in page.locator("#attends-outside").inner_text()
    axe(page)
    page.get_by_label("logarithmic").check()
    assert query(page)["scale"] == "log"
    assert "log scale" in page.locator("#attn-legend").inner_text()
    page.locator('#token-strip button[data-pos="10"]').click()
    page.wait_for_url("**token=10**")
    assert page.get_by_label("logarithmic").is_checked()  # the reload kept the colour scale
    assert page.locator("#token-strip button.tok.outside").count() == n - 64
    assert page.locator('#token-strip button[data-pos="10"]').get_attribute("aria-pressed") == "true"
    assert not page.js_errors
    shoot(page, "transformer-long")


def test_hostile_text_stays_text(page, link, shoot, axe):
    page.goto(link("transformer", HOSTILE))
    assert page.evaluate("window.__pwned") is None
    assert page.locator("main img[src=x]").count() == 0
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280
    assert not page.js_errors
    axe(page)
    shoot(page, "transformer-hostile")


def test_it_works_on_a_phone(browser, link, shoot):
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    pg = context.new_page()
    pg.goto(link("transformer", SCENARIO))
    assert_main_visual_holds_the_map(pg)
    assert pg.locator("#attn-grid button.attn-cell").count() == 16
    pg.locator('#attn-grid button[data-layer="3"][data-head="1"]').tap()
    assert "layer=3" in pg.url
    # A mobile browser widens the layout viewport when content overflows, so check both.
    assert pg.evaluate("[document.documentElement.scrollWidth, window.innerWidth]") == [390, 390]
    shoot(pg, "transformer-phone")
    context.close()
