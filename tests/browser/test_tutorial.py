"""The tutorial in Chromium: start a lesson from the path, do its task with the page's own controls,
see it marked done by the server's check, keep the progress over a reload, reset it; the panel on a
phone, on another stage, after leaving, and never when no lesson is on or the page is embedded."""
from urllib.parse import urlparse

import numpy as np
import pytest

from explainer.stages.runs import engine, run_of
from explainer.tutorial.checks import previous_token_attention
from explainer.tutorial.lessons import by_id, lessons
from tests.browser.conftest import assert_fits_phone

pytestmark = pytest.mark.browser
KEY = "explainer.tutorial"


def stored(pg):
    return pg.evaluate(f"JSON.parse(localStorage.getItem('{KEY}'))")


def panel_ready(pg):
    pg.wait_for_selector("#tut-panel")
    assert not pg.js_errors


def verdict(pg, words: str):
    pg.wait_for_function("w => (document.getElementById('tut-verdict') || {}).textContent?.includes(w)", arg=words, timeout=30_000)
    return pg.locator("#tut-verdict").inner_text()


def test_a_lesson_from_start_to_done_and_reset(server, page, shoot, axe):
    url = server["url"]
    page.goto(url + "/tutorial/")
    assert page.locator("#tut-progress-text").inner_text() == f"0 of {len(lessons())} lessons done."
    assert page.locator("#tutorial-path > li").count() == len(lessons())
    assert page.locator("#tut-reset").is_hidden()
    axe(page)
    shoot(page, "tutorial-path")

    page.get_by_role("link", name="Start lesson 5: The head that looks one token back").click()
    page.wait_for_url("**/learn/transformer/**")
    panel_ready(page)
    assert "#" not in page.url  # the lesson's fragment is read and dropped
    assert stored(page)["active"] == "previous-token-head"
    assert page.locator("#tut-panel h2").inner_text() == "The head that looks one token back"
    first = verdict(page, "Not yet")
    assert "Layer 0, head 0" in first

    # the answer, from the model's own trace
    ids = run_of(by_id()["previous-token-head"].start_scenario()).prompt_ids
    scores = previous_token_attention(engine().model, ids)
    layer, head = np.unravel_index(int(np.argmax(scores)), scores.shape)
    wrong = (layer + 1) % scores.shape[0], head
    page.locator(f".attn-cell[data-layer='{wrong[0]}'][data-head='{wrong[1]}']").click()
    verdict(page, f"Layer {wrong[0]}, head {wrong[1]}")
    assert page.locator("#tut-next").is_hidden()
    page.locator(f".attn-cell[data-layer='{layer}'][data-head='{head}']").click()  # the page's own control
    text = verdict(page, "✓ Done")
    assert f"Layer {layer}, head {head}" in text
    assert page.locator("#tut-panel.is-done .tut-badge").is_visible()
    assert page.locator("#tut-next").get_attribute("href") == "/tutorial/start/same-dice"
    assert stored(page)["done"] == {"previous-token-head": True}
    assert not page.js_errors
    axe(page)
    shoot(page, "tutorial-panel-done")

    page.reload()  # progress survives: the panel says done before anything is checked again
    panel_ready(page)
    assert page.locator("#tut-panel.is-done").count() == 1
    verdict(page, "✓ Done")

    page.goto(url + "/tutorial/")
    assert page.locator("#tut-progress-text").inner_text() == f"1 of {len(lessons())} lessons done."
    assert "is-done" in page.locator("li[data-lesson='previous-token-head']").get_attribute("class")
    assert page.locator("#tut-continue").inner_text() == "Continue with lesson 1: Turn the temperature down"
    page.once("dialog", lambda d: d.dismiss())  # "Cancel" keeps everything
    page.locator("#tut-reset").click()
    assert stored(page)["done"] == {"previous-token-head": True}
    page.once("dialog", lambda d: d.accept())
    page.locator("#tut-reset").click()
    assert stored(page) is None
    assert f"0 of {len(lessons())}" in page.locator("#tut-progress-text").inner_text()
    assert page.locator("#tutorial-path li.is-done").count() == 0
    page.goto(url + "/learn/transformer/")
    page.wait_for_load_state("networkidle")
    assert page.locator("#tut-panel").count() == 0


def test_send_on_the_overview_is_checked_without_pressing_check(server, page, shoot):
    page.goto(server["url"] + "/tutorial/start/temperature")
    panel_ready(page)
    verdict(page, "lesson's request at temperature 0.8")
    page.get_by_role("button", name="Check").click()
    verdict(page, "Not yet")
    page.locator("#temperature").evaluate("(el) => { el.value = '0.3'; el.dispatchEvent(new Event('input', {bubbles: true})); }")
    page.get_by_role("button", name="Send").click()
    page.wait_for_selector("#usage dd[data-field=output_tokens]", timeout=30_000)
    from explainer.tutorial.lessons import by_id

    assert by_id()["temperature"].params["word"] in page.locator("#output").inner_text().lower()
    verdict(page, "✓ Done")
    assert stored(page)["done"] == {"temperature": True}
    shoot(page, "tutorial-overview-done")
    here = urlparse(page.url)._replace(scheme="", netloc="").geturl()

    # the path continues the lesson where the learner left it, or starts it over
    page.goto(server["url"] + "/tutorial/")
    go = page.locator("li[data-lesson='temperature'] [data-start]")
    assert go.inner_text() == "Continue" and go.get_attribute("href") == here + "#tutorial=temperature"
    go.click()
    page.wait_for_url("**/learn/overview/?s=*")
    panel_ready(page)
    assert page.locator("#temperature").input_value() == "0.3"
    verdict(page, "✓ Done")
    page.goto(server["url"] + "/tutorial/")
    page.locator("li[data-lesson='temperature'] [data-restart]").click()
    panel_ready(page)
    assert page.locator("#temperature").input_value() == "0.8"


def test_on_another_stage_the_panel_leads_back_and_leaving_hides_it(server, page, link):
    page.goto(server["url"] + "/tutorial/start/never-admitted")
    panel_ready(page)
    page.locator(".scenario-bar a.edit").click()  # "edit the request": Compose, the same request
    page.wait_for_url("**/learn/compose/**")
    panel_ready(page)
    assert page.locator("#tut-check").count() == 0
    page.locator("#f-max_tokens").fill("2500")
    page.get_by_role("button", name="Apply").click()
    page.wait_for_function("() => new URL(location.href).searchParams.has('s')")
    panel_ready(page)
    back = page.get_by_role("link", name="Back to Gateway")
    assert page.url.split("?s=")[1].split("&")[0] in back.get_attribute("href")
    back.click()
    page.wait_for_url("**/learn/gateway/**")
    # the request is right, but the lesson is about what the gateway answers: not done before it is seen
    verdict(page, "press Fire request")
    page.locator("#fire").click()
    verdict(page, "✓ Done")

    page.get_by_role("button", name="Leave the tutorial").click()
    assert page.locator("#tut-panel").count() == 0
    kept = stored(page)
    assert kept["active"] is None and kept["done"] == {"never-admitted": True}
    page.reload()
    page.wait_for_load_state("networkidle")
    assert page.locator("#tut-panel").count() == 0 and not page.js_errors


def test_no_panel_without_a_lesson_or_when_embedded(server, page):
    page.goto(server["url"] + "/learn/sampling/")
    page.wait_for_load_state("networkidle")
    assert page.locator("#tut-panel").count() == 0
    page.evaluate(f"localStorage.setItem('{KEY}', JSON.stringify({{active: 'same-dice', done: {{}}}}))")
    page.goto(server["url"] + "/learn/sampling/?embed=1")
    page.wait_for_load_state("networkidle")
    assert page.locator("#tut-panel").count() == 0
    page.goto(server["url"] + "/learn/sampling/")
    panel_ready(page)
    page.evaluate(f"localStorage.setItem('{KEY}', '{{not json')")  # a value this version cannot read: ignored
    page.reload()
    page.wait_for_load_state("networkidle")
    assert page.locator("#tut-panel").count() == 0 and not page.js_errors


def test_the_tutorial_on_a_phone(server, phone, shoot, axe):
    phone.goto(server["url"] + "/tutorial/")
    assert_fits_phone(phone)
    axe(phone)
    shoot(phone, "tutorial-path-phone")
    phone.goto(server["url"] + "/tutorial/start/cache-hit")
    panel_ready(phone)
    # on a phone the panel arrives as one line along the bottom: the lesson's title and a button to open the task
    bar = phone.locator("#tut-panel").bounding_box()
    assert bar["height"] <= 64 and bar["y"] + bar["height"] >= 844 - 1, bar
    assert phone.locator("#tut-panel-body").is_hidden() and phone.locator("#tut-panel-title").is_visible()
    phone.get_by_role("button", name="Show the tutorial task").tap()
    verdict(phone, "Not yet")
    assert_fits_phone(phone)
    axe(phone)
    shoot(phone, "tutorial-panel-phone")
    box = phone.locator("#tut-panel").bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 390 and box["height"] <= 844 * 0.5
    assert stored(phone)["phoneOpen"] is True
    phone.get_by_role("button", name="Hide the tutorial task").tap()
    assert phone.locator("#tut-panel-body").is_hidden()
    assert stored(phone)["phoneOpen"] is False
    phone.reload()
    panel_ready(phone)
    assert phone.locator("#tut-panel-body").is_hidden()  # stays folded away
    assert_fits_phone(phone)
    shoot(phone, "tutorial-panel-phone-folded")
