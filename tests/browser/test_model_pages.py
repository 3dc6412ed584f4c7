"""The models' pages as a person sees them: the list and a card, on a laptop and a phone."""
import pytest

from tests.conftest import LOCAL_MODEL

pytestmark = pytest.mark.browser


@pytest.mark.parametrize("width, height", [(1366, 768), (390, 844)])
def test_a_model_card_reads_on_every_screen(browser, server, axe, shoot, width, height):
    ctx = browser.new_context(viewport={"width": width, "height": height})
    pg = ctx.new_page()
    errors = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(server["url"] + "/")
    pg.get_by_role("link", name="The models on this server").click()
    pg.get_by_role("link", name=LOCAL_MODEL).click()
    pg.wait_for_url(f"**/models/{LOCAL_MODEL}/")
    facts = dict(zip(pg.locator(".card-facts dt").all_inner_texts(), pg.locator(".card-facts dd").all_inner_texts()))
    assert facts["Layers"] == "3" and facts["Licence"] == "apache-2.0"
    assert "tokens/s" in facts["Speed here"] and "MB of float32 weights" in facts["Memory"]
    assert pg.evaluate("document.documentElement.scrollWidth") <= width  # nothing sideways, the code sample included
    footer = pg.locator("footer.site").inner_text()
    assert f"the local model ({LOCAL_MODEL})" in footer and "The models on this server" in footer
    axe(pg)
    shoot(pg, f"model-card-{width}")
    pg.get_by_role("link", name="Walk a request through it").click()
    pg.wait_for_url("**/learn/overview/**")
    assert pg.locator("#model").input_value() == LOCAL_MODEL  # the walk-through starts on this model
    assert not errors
    ctx.close()
