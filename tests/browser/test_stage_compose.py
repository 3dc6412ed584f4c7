import json
import random
import re
import string

import pytest

from explainer.lifecycle.engine import run_request
from explainer.lifecycle.figures import body_figures
from explainer.lifecycle.scenario import Scenario
from explainer.lifecycle.snippets import python_sdk
from explainer.web.runner import get_engine

pytestmark = pytest.mark.browser

SCENARIO = Scenario(system="Answer in one sentence.", messages=[{"role": "user", "content": "What is a database index?"}],
                    max_tokens=12, seed=3)


def test_it_shows_the_request_and_applies_an_edit(link, page, shoot, axe):
    page.goto(link("compose", SCENARIO))
    assert json.loads(page.locator("#body-json").inner_text()) == SCENARIO.request_body()
    run = run_request(get_engine(), SCENARIO.request_body(), seed=SCENARIO.seed)
    assert int(page.locator('[data-field="input_tokens"]').inner_text()) == len(run.prompt_ids)
    assert int(page.locator('[data-field="output_tokens"]').inner_text()) == run.done["usage"]["output_tokens"]
    axe(page)
    shoot(page, "compose-1280")

    # edit: the preview follows at once, the verdict only after Apply
    page.locator("#f-system").fill("Be terse.")
    page.get_by_role("button", name="+ Add a turn").click()
    assert page.locator(".turn").count() == 2
    assert page.locator(".turn").nth(1).locator(".turn-role").input_value() == "assistant"
    page.locator(".turn").nth(1).locator(".turn-text").fill("An index is")
    preview = json.loads(page.locator("#body-json").inner_text())
    assert preview["system"] == "Be terse." and preview["messages"][1] == {"role": "assistant", "content": "An index is"}
    assert "edited" in page.locator("#body-state").inner_text()
    with page.expect_navigation():
        page.get_by_role("button", name="Apply").click()
    assert "s=" in page.url
    body = json.loads(page.locator("#body-json").inner_text())
    assert body["system"] == "Be terse." and body["messages"][-1]["content"] == "An index is"
    verdict = page.locator("#verdict").inner_text()
    assert "would accept" in verdict and "prefill" in verdict
    assert page.locator("#f-system").input_value() == "Be terse."
    assert not page.js_errors


def test_the_body_s_size_follows_the_form_and_the_form_sits_beside_it(browser, link):
    """Characters and bytes of the compact JSON, recounted as the form changes; on a laptop the form is
    beside the body, both in the first screen; on a phone the body comes first and the form after."""
    ctx = browser.new_context(viewport={"width": 1366, "height": 768})
    pg = ctx.new_page()
    pg.goto(link("compose", SCENARIO))
    size = lambda: (int(pg.locator("#body-chars").inner_text().replace(",", "")),  # noqa: E731
                    int(pg.locator("#body-bytes").inner_text().replace(",", "")))
    chars, n_bytes = size()
    assert (chars, n_bytes) == (body_figures(SCENARIO.request_body())["characters"], body_figures(SCENARIO.request_body())["bytes"])
    turn = pg.locator(".turn-text").first
    turn.fill(turn.input_value() + "\U0001F600")
    assert size() == (chars + 1, n_bytes + 4)  # one character, four bytes of UTF-8
    assert json.loads(pg.locator("#body-json").inner_text())["messages"][0]["content"].endswith("\U0001F600")
    form, body = pg.locator("#compose-form").bounding_box(), pg.locator("#main-visual").bounding_box()
    assert form["x"] + form["width"] <= body["x"] and form["y"] < 768 and body["y"] + body["height"] <= 768
    ctx.close()

    ctx = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    pg = ctx.new_page()
    pg.goto(link("compose", SCENARIO))
    form, body = pg.locator("#compose-form").bounding_box(), pg.locator("#main-visual").bounding_box()
    assert body["y"] + body["height"] <= 844 and form["y"] > body["y"] + body["height"]
    ctx.close()


def test_a_first_assistant_turn_gets_the_api_s_400(link, page):
    page.goto(link("compose", SCENARIO))
    page.locator(".turn-role").first.select_option("assistant")
    with page.expect_navigation():
        page.get_by_role("button", name="Apply").click()
    err = json.loads(page.locator("#verdict-error").inner_text())
    assert err == {"type": "error", "error": {"type": "invalid_request_error",
                                              "message": "messages.0.role: the first message must use the 'user' role"}}
    assert "400" in page.locator("#verdict h2").inner_text()


def test_an_out_of_range_value_shows_the_api_error_without_leaving(link, page):
    url = link("compose", SCENARIO)
    page.goto(url)
    page.locator("#f-temperature").fill("1.5")
    page.get_by_role("button", name="Apply").click()
    box = page.locator("#f-temperature-error")
    box.wait_for(state="visible")
    body = json.loads(box.locator("pre").inner_text())
    assert body["error"]["type"] == "invalid_request_error" and body["error"]["message"].startswith("temperature:")
    assert page.url == url
    assert page.locator("#f-temperature").get_attribute("aria-invalid") == "true"
    assert page.evaluate("document.activeElement.id") == "f-temperature"
    page.locator("#f-temperature").fill("0.5")
    page.locator("#f-max_tokens").fill("0")
    page.get_by_role("button", name="Apply").click()
    assert page.locator(".cp-field-error").count() == 1
    assert "max_tokens" in page.locator("#f-max_tokens-error pre").inner_text()


def test_a_request_too_large_for_a_link_says_so(link, page):
    url = link("compose", SCENARIO)
    page.goto(url)
    rng = random.Random(2)
    noise = "".join(rng.choice(string.ascii_letters + " ") for _ in range(20_000))  # does not compress
    page.locator(".turn-text").first.fill(noise)
    page.get_by_role("button", name="Apply").click()
    box = page.locator("#client-error")
    box.wait_for(state="visible")
    assert "too large for a link" in box.inner_text()
    assert page.url == url and page.get_by_role("button", name="Apply").is_enabled()


def test_the_code_tabs_follow_the_url(link, page):
    page.goto(link("compose", Scenario(top_k=4)))
    page.get_by_role("tab", name="Python SDK").click()
    assert "snippet=python" in page.url
    code = page.locator("#code-python").inner_text()
    assert "extra_body=" in code and '"top_k": 4' in code
    assert page.locator("#panel-curl").is_hidden()
    # the code names the server the page came from
    assert page.url.split("/learn")[0] in code
    page.keyboard.press("ArrowRight")
    assert page.get_by_role("tab", name="TypeScript SDK").get_attribute("aria-selected") == "true"
    assert "snippet=typescript" in page.url and "/learn/compose/" in page.url


def test_the_python_snippet_gets_the_same_reply_from_this_server(server, monkeypatch):
    """The generated code, run as it is against the live server, answers with the text the page shows."""
    s = Scenario(messages=[{"role": "user", "content": "What is a foreign key?"}], max_tokens=10, temperature=0.3, top_k=20)
    run = run_request(get_engine(), s.request_body(), seed=0)  # /v1/messages draws with seed 0
    monkeypatch.setenv("ANTHROPIC_API_KEY", server["api_key"])
    for stream in (False, True):
        ns: dict = {}
        exec(compile(python_sdk(s.replace(stream=stream).request_body(), server["url"]), "snippet.py", "exec"), ns)
        assert ns["message"].content[0].text == run.text
        assert ns["message"].usage.input_tokens == len(run.prompt_ids)


def test_it_works_on_a_phone(browser, link, shoot):
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    pg = context.new_page()
    pg.goto(link("compose", SCENARIO))
    assert pg.evaluate("window.innerWidth") == 390
    assert pg.evaluate("document.documentElement.scrollWidth") <= 390
    shoot(pg, "compose-phone")
    context.close()


def test_hostile_text_stays_text(link, page):
    s = Scenario(system='</textarea><script>window.__pwned=1</script>',
                 messages=[{"role": "user", "content": '<img src=x onerror="window.__pwned=1">\u202e' + "😀" * 500}], max_tokens=4)
    page.goto(link("compose", s))
    assert page.evaluate("window.__pwned") is None
    assert page.locator("#f-system").input_value() == s.system
    assert page.locator(".turn-text").first.input_value() == s.messages[0]["content"]
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280
    assert re.search(r"\\u202e", page.locator("#code-curl").inner_text())
