"""The tools stage in Chromium: the five-step loop filled from real runs, the mask panel, the
step and tool controls, accessibility, and a phone-sized viewport."""
import json
from pathlib import Path
from urllib.parse import parse_qs, urlparse
from urllib.request import urlopen

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


INSIDE = """(sel) => { const r = document.querySelector(sel).getBoundingClientRect();
    return {top: r.top + scrollY, bottom: r.bottom + scrollY, left: r.left, right: r.right, h: r.height,
            sw: document.documentElement.scrollWidth}; }"""


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_default_view_is_the_article_s_example_with_its_attention_in_the_first_screen(server, browser, link, axe, scheme):
    """No options: the article's question, the loop whole, and beside the call the attention picture, all inside
    the first screen on a laptop and a phone, in both colour schemes, with nothing scrolled sideways; the picture
    shows the numbers /data has."""
    data = data_of_url(server, "/learn/tools/data")["tools-attention"]
    for (w, h), name in (((1366, 768), "laptop"), ((390, 844), "phone")):
        ctx = browser.new_context(viewport={"width": w, "height": h}, is_mobile=w < 500, has_touch=w < 500, color_scheme=scheme)
        pg = ctx.new_page()
        errors: list[str] = []
        pg.on("pageerror", lambda e, errors=errors: errors.append(str(e)))
        pg.goto(link("tools", Scenario()))
        pg.wait_for_selector("body[data-tools-ready]")
        main = pg.locator("#main-visual")
        assert tools.DEMO_QUESTIONS["article"] in main.locator(".tl-q").inner_text()
        rows = main.locator("#loop > li")
        assert rows.count() == 5 and main.locator("#loop > li[data-done='true']").count() == 5
        assert "stop_reason tool_use" in rows.nth(1).inner_text() and "get_dag_status" in rows.nth(1).inner_text()
        fig = main.locator("#attention")
        assert fig.is_visible()
        assert main.locator("#attn-share").inner_text() == f"{data['share_pct']}%"
        assert main.locator("#attn-map tbody tr").count() == len(data["rows"])
        assert main.locator("#attn-map thead th.id").count() == data["n_ident"]
        assert "etl_pipeline" in main.locator("#attn-cap").inner_text()
        for sel in ("#main-visual", "#attention", "#attn-map"):
            box = pg.evaluate(INSIDE, sel)
            assert box["h"] > 0 and box["top"] >= 0 and box["bottom"] <= h, (name, sel, box)
            assert box["left"] >= 0 and box["right"] <= w + 0.5, (name, sel, box)
        if name == "phone":
            assert_fits_phone(pg)
        else:
            assert pg.evaluate("document.documentElement.scrollWidth") <= w
        # the identifier's columns are drawn marked, the cells' blue follows their weights
        cells = pg.evaluate("""() => [...document.querySelectorAll('#attn-map tbody tr:first-child td:not(.tl-else)')]
            .map(td => [td.classList.contains('id'), getComputedStyle(td).backgroundColor])""")
        assert [c[0] for c in cells] == [c["ident"] for c in data["rows"][0]["cells"]]
        shades = pg.evaluate("() => new Set([...document.querySelectorAll('#attn-map td[style]')].map(td => getComputedStyle(td).backgroundColor)).size")
        assert shades > 3  # drawn by weight, not one flat colour
        axe(pg)  # the picture is a table with its headers, readable without the colours
        SHOTS.mkdir(exist_ok=True)
        pg.screenshot(path=str(SHOTS / f"tools-article-{name}-{scheme}.png"))
        assert not errors, errors
        ctx.close()


def data_of_url(server, path: str) -> dict:
    with urlopen(server["url"] + path) as r:
        return json.loads(r.read())["data"]


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
    assert page.locator("#attention #attn-share").is_visible()  # beside the learner's call too
    assert page.locator(".tl-def b").count() == 0 and "<b>now</b>" in page.locator(".tl-def pre").inner_text()
    assert page.locator("a[data-tool='own'][aria-current='true']").count() == 1
    axe(page)
    shoot(page, "tools-own-1280")
    page.locator(".tl-own").screenshot(path=str(SHOTS / "tools-own-form-1280.png"))
