"""Issue 3's promise: walk from the overview to the recap with the arrow keys, change the prompt and the
temperature on the way, paste the URL into another browser and see the same pages."""
import pytest

from explainer.stages.registry import built

pytestmark = pytest.mark.browser


def visible_text(pg) -> str:
    return pg.locator("main").inner_text()


def test_walk_the_stages_edit_on_the_way_and_share(server, browser, shoot):
    ctx = browser.new_context(viewport={"width": 1280, "height": 720})
    pg = ctx.new_page()
    pg.goto(server["url"] + "/learn/overview/")
    order = [s.slug for s in built()]
    visited = ["overview"]
    while "/learn/recap/" not in pg.url:
        pg.keyboard.press("ArrowRight")
        pg.wait_for_function("(prev) => location.pathname !== prev", arg=f"/learn/{visited[-1]}/")
        slug = pg.url.split("/learn/")[1].split("/")[0]
        visited.append(slug)
        if slug == "compose" and "s=" not in pg.url:
            pg.locator("textarea.turn-text").last.fill("How do Airflow pools limit concurrency?")
            pg.locator("#f-temperature").fill("0.3")
            pg.locator("#apply").click()
            pg.wait_for_url("**/learn/compose/?s=*")
            assert "0.3" in pg.locator(".scenario-bar").inner_text()
    assert visited == order[: order.index("recap") + 1] or visited[-1] == "recap"
    assert "s=" in pg.url  # the edited scenario travelled all the way
    recap_here = visible_text(pg)
    assert "How do Airflow pools limit concurrency?" in pg.content()
    # another browser (a fresh context: no storage, no history) opens the same link
    other = browser.new_context(viewport={"width": 1280, "height": 720}).new_page()
    other.goto(pg.url)
    assert visible_text(other).replace("Link copied.", "") == recap_here.replace("Link copied.", "")
    # and walks back with the left arrow to the same sampling page
    while "/learn/sampling/" not in pg.url:
        before = pg.url
        pg.keyboard.press("ArrowLeft")
        pg.wait_for_url(lambda u, before=before: u != before)  # the previous stage
        pg.wait_for_load_state()
    other.goto(pg.url)
    assert other.locator(".scenario-bar").inner_text() == pg.locator(".scenario-bar").inner_text()
    assert other.locator("main").inner_text() == pg.locator("main").inner_text()
    ctx.close()
    other.context.close()
