"""Every stage opens on its point: the main visual is whole inside the first screen, on a laptop
and on a phone, and the longer explanation waits in folds a learner opens by click or keyboard."""
from __future__ import annotations

import pytest

from explainer.stages.registry import built
from tests.browser.conftest import SCREENS, assert_fits_phone
from tests.browser.settle import settled

pytestmark = pytest.mark.browser

SLUGS = [s.slug for s in built()]


def main_visual_box(pg) -> dict:
    pg.wait_for_load_state("load")
    # a function, not an expression: an expression would need eval, which the pages' CSP refuses
    pg.wait_for_function("() => { const el = document.querySelector('[data-main-visual]'); return !!el && el.getBoundingClientRect().height > 0; }")
    settled(pg)  # charts draw after their data loads
    return pg.evaluate("""() => {
        const el = document.querySelector('[data-main-visual]');
        const r = el.getBoundingClientRect();
        // what is drawn inside it: charts are svg/canvas/table/chips, not only a heading
        const drawn = el.querySelectorAll('svg, canvas, table, .tok, .chip, pre, [role=img], .bar, li').length;
        return {top: r.top + scrollY, bottom: r.bottom + scrollY, left: r.left, right: r.right,
                height: r.height, width: r.width, vw: innerWidth, vh: innerHeight, drawn,
                text: el.innerText.length};
    }""")


@pytest.mark.parametrize("screen", SCREENS)
@pytest.mark.parametrize("slug", SLUGS)
def test_main_visual_is_inside_the_first_screen(screen_page, server, slug, screen, shoot):
    w, h = SCREENS[screen]
    pg = screen_page(screen)
    pg.goto(f"{server['url']}/learn/{slug}/")
    box = main_visual_box(pg)
    shoot(pg, f"first-screen-{slug}-{screen}")
    assert box["drawn"] > 0, f"{slug}: the main visual draws nothing"
    assert box["height"] >= 120, f"{slug}: the main visual is only {box['height']:.0f} px tall"
    assert box["top"] >= 0 and box["left"] >= 0 and box["right"] <= w + 0.5, box
    assert box["bottom"] <= h, f"{slug} at {w}x{h}: the main visual ends at {box['bottom']:.0f} px, below the first screen ({h} px)"
    if screen == "phone":
        assert_fits_phone(pg)
    else:
        assert pg.evaluate("document.documentElement.scrollWidth") <= w
    assert not pg.js_errors, pg.js_errors


@pytest.mark.parametrize("slug", SLUGS)
def test_folds_open_by_click_and_by_keyboard(page, server, slug):
    page.goto(f"{server['url']}/learn/{slug}/")
    folds = page.locator("details.fold")
    n = folds.count()
    assert n >= 1
    for i in range(n):
        fold = folds.nth(i)
        body = fold.locator(":scope > .fold-body")
        assert not fold.evaluate("d => d.open") and not body.is_visible(), f"{slug}: fold {i} starts open"
        fold.locator(":scope > summary").click()
        assert fold.evaluate("d => d.open") and body.is_visible() and body.inner_text().strip()
        fold.locator(":scope > summary").click()
        assert not body.is_visible()
        fold.locator(":scope > summary").focus()
        page.keyboard.press("Enter")
        assert body.is_visible(), f"{slug}: Enter does not open fold {i}"
        page.keyboard.press("Space")
        assert not body.is_visible(), f"{slug}: Space does not close fold {i}"
    assert not page.js_errors, page.js_errors


def test_a_link_into_a_fold_opens_it(page, server):
    page.goto(f"{server['url']}/learn/transformer/#how-it-works")
    assert page.locator("#how-it-works").evaluate("d => d.open")
    assert page.locator("#how-it-works > .fold-body").is_visible()
    top = page.locator("#how-it-works").evaluate("d => d.getBoundingClientRect().top")
    assert -1 < top < 200, top  # scrolled to it (to within a fraction of a pixel), not left below the fold


def test_rail_pager_and_kicker_tell_one_story(page, server):
    """One ordered list: the rail starts at Overview, the pager follows it, Recap is last, and the kicker's
    numbering is the rail's."""
    from explainer.stages.registry import STAGES

    page.goto(f"{server['url']}/learn/overview/")
    rail = page.locator(".rail li").evaluate_all("lis => lis.map(li => li.dataset.slug)")
    assert rail == [s.slug for s in STAGES if s.built] and rail[0] == "overview" and rail[-1] == "recap"
    seen = ["overview"]
    for _ in range(len(rail) - 1):
        page.locator("a[data-nav=next]").click()
        page.wait_for_load_state("load")
        slug = page.evaluate("document.body.dataset.stage")
        seen.append(slug)
        number = page.locator(".rail li.current .num").inner_text()
        assert page.locator(".stage-head .kicker").inner_text().upper().startswith(f"STEP {number} OF {len(rail) - 1}")
    assert seen == rail
    assert page.locator("a[data-nav=next]").count() == 0


def test_phone_pages_offer_buttons_not_key_hints(phone, server):
    phone.goto(f"{server['url']}/learn/tokenize/")
    assert not phone.locator(".pager .keys-hint").is_visible()
    for nav in ("prev", "next"):
        box = phone.locator(f"a[data-nav={nav}]").bounding_box()
        assert box["height"] >= 44
    assert phone.locator(".rail li.current").evaluate(
        "li => { const r = li.getBoundingClientRect(); return r.left >= 0 && r.right <= innerWidth; }")


REPLAY = "call=AbCdEfGhIjKlMnOpQrStUv%2F3"  # a replay of an inspector call: the stage links back to the call


@pytest.mark.parametrize("screen, slug", [("phone", s) for s in SLUGS] + [("laptop", "tokenize"), ("laptop", "serving")])
def test_a_replayed_stage_links_back_and_still_opens_on_its_picture(screen_page, server, slug, screen):
    """The back link a replay adds to the kicker's line is whole, readable and on screen, and does not push the
    main visual out of the first screen (on its own line above the heading it did, by up to 33 px on a phone)."""
    w, h = SCREENS[screen]
    pg = screen_page(screen)
    pg.goto(f"{server['url']}/learn/{slug}/?{REPLAY}")
    box = main_visual_box(pg)
    back = pg.locator("[data-replay-back]")
    assert back.is_visible() and back.get_attribute("href") == "/inspect/AbCdEfGhIjKlMnOpQrStUv/call/3/"
    link = back.bounding_box()
    assert link["x"] >= 0 and link["x"] + link["width"] <= w + 0.5 and 0 <= link["y"] and link["y"] + link["height"] <= h, link
    assert link["width"] >= 80 and float(pg.evaluate("getComputedStyle(document.querySelector('[data-replay-back]')).fontSize")[:-2]) >= 12
    assert box["bottom"] <= h, f"{slug} at {w}x{h}: with the back link the main visual ends at {box['bottom']:.0f} px"
    assert pg.evaluate("document.documentElement.scrollWidth") <= w
    assert not pg.js_errors, pg.js_errors
