import pytest

from explainer.lifecycle.engine import run_request
from explainer.lifecycle.scenario import Scenario
from explainer.web.runner import get_engine

pytestmark = pytest.mark.browser
SCENARIO = Scenario(system="You are concise.", messages=[{"role": "user", "content": "What is a foreign key?"}], max_tokens=20, seed=4)


def test_recap_shows_the_engine_s_numbers_and_links_every_stage(server, page, link, shoot, axe):
    run = run_request(get_engine(), SCENARIO.request_body(), seed=SCENARIO.seed)
    page.goto(link("recap", SCENARIO))
    assert int(page.locator("[data-recap=input-tokens]").inner_text()) == len(run.prompt_ids)
    assert int(page.locator("[data-recap=output-tokens]").inner_text()) == run.done["usage"]["output_tokens"]
    assert page.locator("[data-recap=stop-reason]").inner_text() == run.done["stop_reason"]
    assert page.locator("section.result .output").inner_text().strip() == run.text.strip()
    axe(page)
    shoot(page, "recap-1280")
    # every section links to its stage with the scenario
    page.get_by_role("link", name="Tokenize").first.click()
    page.wait_for_url("**/learn/tokenize/**")
    assert "s=" in page.url
    page.go_back()
    prev = page.locator("a[rel=prev]").get_attribute("href")
    page.keyboard.press("ArrowLeft")
    page.wait_for_url("**" + prev)
