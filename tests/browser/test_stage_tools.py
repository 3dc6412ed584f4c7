"""The tools stage in Chromium: the five-step loop filled from real runs, the mask panel, the
step and tool controls, accessibility, and a phone-sized viewport."""
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from explainer.lifecycle.engine import run_request
from explainer.lifecycle.scenario import Scenario
from explainer.stages.pages import tools
from explainer.stages.runs import engine
from tests.browser.conftest import assert_fits_phone

pytestmark = pytest.mark.browser
SHOTS = Path(__file__).resolve().parents[2] / "shots"  # close-ups beside the full-page shots (shoot() makes the folder)
SCENARIO = Scenario(messages=[{"role": "user", "content": "Is the comet export DAG healthy?"}], seed=4)


def ready(page):
    page.wait_for_selector("body[data-tools-ready]")
    assert not page.js_errors


def engine_steps(tool, choice):
    return run_request(engine(), tools.first_body(SCENARIO, tool, choice), seed=SCENARIO.seed).steps


def test_tool_choice_tool_fills_the_loop_and_the_mask(server, page, link, shoot, axe):
    page.goto(link("tools", SCENARIO, choice="tool", tool="get_dag_status"))
    ready(page)
    steps = page.locator("#sequence > li.tl-step")
    assert steps.count() == 5
    assert page.locator("#sequence > li[data-filled='true']").count() == 5
    assert page.locator("#n-filled").inner_text() == "5"
    real = engine_steps("get_dag_status", "tool")
    assert page.locator("#step-tokens button").count() == len(real)
    allowed = page.locator("#n-allowed")
    assert int(allowed.get_attribute("data-allowed")) == real[0]["n_allowed"]
    assert "of 4,096" in allowed.inner_text()
    assert page.locator("#mass-removed").count() == 1
    assert page.locator(".tl-cands").count() == 2
    # change the step: the panel follows the engine's numbers for that step, and the URL keeps it
    k = min(3, len(real) - 1)
    page.locator(f"#step-tokens button[data-step='{k}']").click()
    assert int(page.locator("#n-allowed").get_attribute("data-allowed")) == real[k]["n_allowed"]
    assert page.locator("#step-value").inner_text() == str(k)
    assert parse_qs(urlparse(page.url).query)["step"] == [str(k)]
    page.keyboard.press("Tab")
    axe(page)
    shoot(page, "tools-1280")
    page.locator(".tl-mask").screenshot(path=str(SHOTS / "tools-mask-1280.png"))
    # change the tool
    page.locator("a[data-tool='get_time']").click()
    ready(page)
    q = parse_qs(urlparse(page.url).query)
    assert q["tool"] == ["get_time"] and q["choice"] == ["tool"]
    assert "get_time" in page.locator("#tool-use").inner_text()
    assert page.locator("#step-tokens button").count() == len(engine_steps("get_time", "tool"))


def test_the_default_view_shows_the_loop_for_the_article_s_question(server, browser, link, shoot):
    """No options: the question names a DAG, the loop is whole in the first screen, one row per message."""
    for (w, h), name in (((1366, 768), "laptop"), ((390, 844), "phone")):
        ctx = browser.new_context(viewport={"width": w, "height": h}, is_mobile=w < 500, has_touch=w < 500)
        pg = ctx.new_page()
        pg.goto(link("tools", Scenario()))
        pg.wait_for_selector("body[data-tools-ready]")
        main = pg.locator("#main-visual")
        assert tools.DEMO_QUESTIONS["get_dag_status"] in main.locator(".tl-q").inner_text()
        rows = main.locator("#loop > li")
        assert rows.count() == 5 and main.locator("#loop > li[data-done='true']").count() == 5
        assert "stop_reason tool_use" in rows.nth(1).inner_text()
        assert "snail_mail_tracking" in rows.nth(1).inner_text()
        box = main.bounding_box()
        assert box["y"] + box["height"] <= h, (name, box)
        shoot(pg, f"tools-default-{name}")
        ctx.close()


def test_the_request_s_own_question_is_one_click_away(server, page, link):
    page.goto(link("tools", Scenario()))
    ready(page)
    page.locator("#main-visual a.tl-ask").click()
    ready(page)
    assert parse_qs(urlparse(page.url).query)["ask"] == ["request"]
    assert Scenario().messages[0]["content"] in page.locator("#main-visual .tl-q").inner_text()
    # the tool and tool_choice pills keep the choice of question
    assert "ask=request" in page.locator("a[data-tool='get_time']").get_attribute("href")


def test_auto_answers_in_text(server, page, link, shoot):
    page.goto(link("tools", SCENARIO, choice="auto", tool="calculator"))
    ready(page)
    assert page.locator("#sequence > li[data-filled='true']").count() == 2
    assert page.locator("#text-1").inner_text().strip() != ""
    assert "no mask" in page.locator("#mask-panel").inner_text()
    shoot(page, "tools-auto")


def test_it_fits_a_phone(server, phone, link, shoot, axe):
    pg = phone
    pg.goto(link("tools", SCENARIO, choice="any", tool="get_time"))
    pg.wait_for_selector("body[data-tools-ready]")
    shoot(pg, "tools-phone")
    pg.locator(".tl-mask").screenshot(path=str(SHOTS / "tools-mask-phone.png"))
    pg.locator(".tl-seq-card").screenshot(path=str(SHOTS / "tools-seq-phone.png"))
    assert_fits_phone(pg)
    axe(pg)
    assert not pg.js_errors



def test_hostile_text_stays_text(server, page, link):
    hostile = Scenario(system='<img src=x onerror="window.__pwned=1">',
                       messages=[{"role": "user", "content": "\u202eevil\u202c <b>x</b> " + "😀" * 40}], max_tokens=4)
    page.goto(link("tools", hostile, choice="tool", tool="get_time"))
    ready(page)
    assert page.evaluate("window.__pwned") is None
    assert page.locator(".visual img, .visual b").count() == 0
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280


def test_own_tool_form_runs_the_loop(server, page, link, shoot, axe):
    page.goto(link("tools", SCENARIO, choice="tool", tool="get_time"))
    ready(page)
    # a broken schema is caught in the browser before anything is sent
    page.fill("#own-name", "pick_colour")
    page.fill("#own-description", "Pick a colour <b>now</b>")
    page.fill("#own-schema", "{not json")
    page.click("#own-submit")
    assert "not valid JSON" in page.locator("#own-status").inner_text()
    assert "tool=own" not in page.url
    schema = '{"type": "object", "properties": {"colour": {"type": "string", "enum": ["red", "green"]}}, "required": ["colour"]}'
    page.fill("#own-schema", schema)
    with page.expect_navigation():
        page.click("#own-submit")
    ready(page)
    q = parse_qs(urlparse(page.url).query)
    assert q["tool"] == ["own"] and q["s"]
    assert page.locator("#sequence > li[data-filled='true']").count() == 5
    assert page.locator("#n-filled").inner_text() == "5"
    assert '"name": "pick_colour"' in page.locator("#tool-use").inner_text()
    assert "your code would run pick_colour here" in page.locator("#tool-output").inner_text()
    assert "Stand-in result" in page.locator(".tl-step.in-app").inner_text()
    assert page.locator(".tl-def b").count() == 0 and "<b>now</b>" in page.locator(".tl-def pre").inner_text()
    assert page.locator("a[data-tool='own'][aria-current='true']").count() == 1
    axe(page)
    shoot(page, "tools-own-1280")
    page.locator(".tl-own").screenshot(path=str(SHOTS / "tools-own-form-1280.png"))
