"""The transformer page for a model with many heads, in a real browser: a compact layer x head grid picks
the head (by click or arrow keys), another layer's maps are fetched in place, and the deep model's charts
stay inside the screen on a laptop and on a phone."""
from __future__ import annotations

import shutil
from urllib.parse import parse_qs, urlparse

import pytest

from explainer.stages.runs import stamp
from tests.browser.conftest import SCREENS, assert_fits_phone
from tests.test_stage_transformer_scale import LONG, WIDE, make_wide

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def wide(models_dir):
    """``wide-llama`` (12 layers x 8 heads) in the suite's models directory, which the test server reads too."""
    from explainer.web.services import Services, current, installed

    folder = make_wide(models_dir / WIDE)
    services = installed(Services.from_settings(engine=current().engine))  # a catalog that sees the new folder
    services.__enter__()
    yield stamp(LONG.replace(model=WIDE))
    services.__exit__(None, None, None)
    shutil.rmtree(folder)


def query(pg) -> dict:
    return {k: v[0] for k, v in parse_qs(urlparse(pg.url).query).items()}


def pressed(pg) -> tuple[str, str]:
    b = pg.locator(".head-cell[aria-pressed=true]")
    return b.get_attribute("data-layer"), b.get_attribute("data-head")


def test_the_head_grid_picks_any_head_and_fetches_its_layer(page, link, wide, axe, shoot):
    page.goto(link("transformer", wide, layer=3, head=5))
    cells = page.locator("#head-grid .head-cell")
    assert cells.count() == 96 and page.locator("[data-pick-layer]").count() == 0
    assert pressed(page) == ("3", "5") and page.locator('#head-grid .head-cell[tabindex="0"]').count() == 1
    assert page.locator("#attn-grid .attn-cell").count() == 8  # the selected layer's heads, as thumbnails
    assert page.locator("#attn-grid-title").inner_text() == "The 8 heads of layer 3"
    assert "layer 3 · head 5" in cells.nth(5 * 12 + 3).get_attribute("aria-label")  # rows: heads; columns: layers

    # a head of another layer: its maps come from /data, in place
    with page.expect_response(lambda r: "/learn/transformer/data" in r.url and "layer=10" in r.url) as resp:
        page.locator('.head-cell[data-layer="10"][data-head="1"]').click()
    assert resp.value.ok
    page.wait_for_function("() => document.getElementById('attn-name').textContent === 'block_10_attn_head_1_weights'")
    assert (query(page)["layer"], query(page)["head"]) == ("10", "1") and pressed(page) == ("10", "1")
    assert page.locator("#attn-grid-title").inner_text() == "The 8 heads of layer 10"
    assert page.locator("#attn-grid .attn-cell").first.get_attribute("data-layer") == "10"
    assert page.locator("#attends-all-title").inner_text() == "… in every head of layer 10"

    # the keyboard: arrows move the focus (layers across, heads down), Enter chooses
    page.locator('.head-cell[data-layer="10"][data-head="1"]').focus()
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowDown")
    assert page.evaluate("[document.activeElement.dataset.layer, document.activeElement.dataset.head]") == ["11", "2"]
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.getElementById('attn-name').textContent === 'block_11_attn_head_2_weights'")
    assert pressed(page) == ("11", "2") and page.locator('#head-grid .head-cell[tabindex="0"]').count() == 1

    # a layer already fetched comes back without asking again
    fetched = []
    page.on("request", lambda r: fetched.append(r.url) if "/data" in r.url else None)
    page.locator('.head-cell[data-layer="10"][data-head="4"]').click()
    assert page.locator("#attn-name").inner_text() == "block_10_attn_head_4_weights" and not fetched

    # the logit lens of 13 depths scrolls in its own box, the real output's row in view
    wrap = page.locator(".tf-lens-wrap.tall")
    wrap.scroll_into_view_if_needed()
    box, final = wrap.bounding_box(), page.locator(".tf-lens tr.final th").bounding_box()  # sticky: its cells, not the row, move
    assert box["height"] < page.locator(".tf-lens").bounding_box()["height"] and final["y"] + final["height"] <= box["y"] + box["height"] + 1
    assert not page.js_errors, page.js_errors
    axe(page)
    shoot(page, "transformer-many-heads")


@pytest.mark.parametrize("screen", SCREENS)
def test_a_deep_model_fits_the_screen(screen_page, link, wide, screen, shoot):
    pg = screen_page(screen)
    pg.goto(link("transformer", wide))
    pg.wait_for_load_state("load")
    assert pg.locator("#attn-big svg").count() == 1 and pg.locator("#head-grid .head-cell").count() == 96
    if screen == "phone":
        assert_fits_phone(pg)
        pg.locator('.head-cell[data-layer="7"][data-head="0"]').tap()
        pg.wait_for_function("() => document.getElementById('attn-name').textContent === 'block_7_attn_head_0_weights'")
    else:
        assert pg.evaluate("document.documentElement.scrollWidth") <= SCREENS[screen][0]
        bottom = pg.evaluate("document.querySelector('[data-main-visual]').getBoundingClientRect().bottom + scrollY")
        assert bottom <= SCREENS[screen][1], bottom
    for chart in ("#mlp svg", "#resid svg", "#embedding svg"):
        r = pg.locator(chart).bounding_box()
        assert r["x"] >= 0 and r["x"] + r["width"] <= SCREENS[screen][0], chart
    assert not pg.js_errors, pg.js_errors
    shoot(pg, f"transformer-many-heads-{screen}")
