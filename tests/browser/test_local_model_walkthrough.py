"""Issue 15 in the browser: the walk-through, a classroom room and a tutorial lesson on a local model, the tiny
random Llama-family checkpoint the suite installs (tests/conftest.py). A person picks it from a model menu; from
then on every page, the room's run and the lesson's check say and use that model, not the bundled one."""
from __future__ import annotations

import json

import pytest
from playwright.sync_api import expect

from explainer.lifecycle.scenario import Scenario
from explainer.llm.catalog import BUNDLED_NAME, bundled
from explainer.stages.registry import built
from explainer.stages.runs import codec, run_of, stamp
from explainer.tutorial.lessons import by_id
from tests.browser.conftest import assert_fits_phone
from tests.browser.test_first_screen import main_visual_box
from tests.browser.test_rooms import frame_at, start_room
from tests.conftest import LOCAL_MODEL

pytestmark = pytest.mark.browser

SLUGS = [s.slug for s in built()]
FOOTER = f"the local model ({LOCAL_MODEL})"


def local_link(server, slug: str, **changes) -> str:
    """A stage on the local model, as Compose's Apply makes the link (stamped with the weights' fingerprint)."""
    blob = codec().encode(stamp(Scenario(model=LOCAL_MODEL, **changes)))
    return f"{server['url']}/learn/{slug}/?s={blob}"


def watched(pg):
    """Console errors as well as uncaught exceptions, in ``pg.js_errors``."""
    pg.on("console", lambda m: pg.js_errors.append(f"console: {m.text}") if m.type == "error" else None)
    return pg


def shows_the_local_model(pg, slug: str) -> None:
    """The stage page of ``slug`` is up, says which model computed it, draws its main visual, and fits its width."""
    assert pg.evaluate("document.body.dataset.stage") == slug, pg.locator("main").inner_text()[:300]
    assert FOOTER in pg.locator("footer.site").inner_text()
    # the overview's raw event log is left out: its socket's hello names the default model before any request
    main = pg.evaluate("""() => { const m = document.querySelector('main').innerText, log = document.getElementById('events');
        return log ? m.replace(log.innerText, '') : m; }""")
    assert LOCAL_MODEL in main, f"{slug}: the page never names {LOCAL_MODEL}"
    for fact in (BUNDLED_NAME, f"{bundled().model.n_params:,}"):  # its name, and its parameter count
        assert fact not in main, f"{slug}: the page gives the bundled model ({fact}) as the one that ran"
    box = main_visual_box(pg)
    assert box["drawn"] > 0 and box["height"] > 0, f"{slug}: the main visual draws nothing"
    width = pg.evaluate("innerWidth")
    wide = pg.evaluate("""w => [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > w + 1)
        .slice(0, 5).map(e => e.tagName + '.' + e.className + '#' + e.id)""", width)
    assert pg.evaluate("document.documentElement.scrollWidth") <= width, f"{slug}: wider than the window: {wide}"
    assert not pg.js_errors, f"{slug}: {pg.js_errors}"


def test_the_whole_walk_through_on_the_local_model(server, page, shoot):
    """A person picks the local model on Compose, sends the request on the overview, then walks with Next to the
    recap: the scenario (and so the model) travels in every link, and every stage shows that model's run."""
    watched(page)
    page.goto(server["url"] + "/learn/overview/")
    page.locator("a[data-nav=next]").click()
    page.wait_for_url("**/learn/compose/")
    page.locator("#f-model").select_option(LOCAL_MODEL)
    page.locator("#apply").click()
    page.wait_for_url("**/learn/compose/?s=*")
    shows_the_local_model(page, "compose")
    scenario = codec().decode(page.url.split("?s=")[1].split("&")[0])
    assert scenario == stamp(Scenario(model=LOCAL_MODEL))  # what local_link() builds for the tests below

    frames: list[dict] = []  # what the overview's socket (opened as the page loads) receives
    page.on("websocket", lambda ws: ws.on("framereceived", lambda f: frames.append(json.loads(f)) if isinstance(f, str) else None))
    page.locator("a[data-nav=prev]").click()
    page.wait_for_url("**/learn/overview/?s=*")
    shows_the_local_model(page, "overview")
    assert page.locator("#model").input_value() == LOCAL_MODEL
    page.get_by_role("button", name="Send").click()
    page.wait_for_selector("#usage dd[data-field=output_tokens]", timeout=30_000)
    prompt = next(f for f in frames if f["type"] == "explainer.prompt")
    assert prompt["model"] == {**prompt["model"], "requested": LOCAL_MODEL, "served_by": LOCAL_MODEL}
    assert next(f for f in frames if f["type"] == "message_start")["message"]["model"] == LOCAL_MODEL
    streamed = "".join(f["delta"]["text"] for f in frames if f["type"] == "content_block_delta" and f["delta"]["type"] == "text_delta")
    assert streamed == run_of(scenario).text  # the local model's own reply, token for token
    assert " ".join(page.locator("#output").inner_text().split()) == " ".join(streamed.split())
    assert not page.js_errors, page.js_errors
    shoot(page, "local-model-overview-sent")

    for slug in SLUGS[1:]:
        page.locator("a[data-nav=next]").click()
        page.wait_for_url(f"**/learn/{slug}/?s=*")
        shows_the_local_model(page, slug)
        assert codec().decode(page.url.split("?s=")[1].split("&")[0]) == scenario
    assert page.locator("a[data-nav=next]").count() == 0


@pytest.mark.parametrize("slug", SLUGS)
def test_each_stage_on_the_local_model(server, page, slug):
    """Each stage opened from a link on its own (a failing stage is named here, whatever the stages before it do)."""
    watched(page)
    page.goto(local_link(server, slug))
    shows_the_local_model(page, slug)


# ---- a classroom room on the local model ---------------------------------------------------------------

def frame_url(pg) -> str:
    return pg.evaluate("() => { try { return document.getElementById('stage-frame').contentWindow.location.href; } catch (e) { return ''; } }")


def test_a_room_runs_the_local_model_for_a_phone(server, page, phone, shoot):
    """The presenter picks the model in the stage frame's Compose; a student on a phone follows, watches the tokens
    arrive and guesses one; every token is the local model's own draw."""
    watched(page)
    watched(phone)
    code, _ = start_room(page, server)
    phone.goto(f"{server['url']}/r/{code}/")  # the class arrives while the room shows the bundled model's overview
    expect(phone.locator("#conn")).to_have_text("connected")
    expect(page.locator("#student-count")).to_have_text("1")

    page.locator("#stage-select").select_option("compose")
    frame_at(page, "/learn/compose/")
    stage = page.frame_locator("#stage-frame")
    stage.locator("#f-model").select_option(LOCAL_MODEL)  # the presenter's own action, in the page the class sees
    stage.locator("#apply").click()
    page.wait_for_function("() => { try { return new URL(document.getElementById('stage-frame').contentWindow.location.href)"
                           ".searchParams.has('s'); } catch (e) { return false; } }")
    scenario = codec().decode(frame_url(page).split("s=")[1].split("&")[0])
    assert scenario == stamp(Scenario(model=LOCAL_MODEL))
    page.locator("#stage-select").select_option("sampling")
    expect(phone.locator("#stage-title")).to_have_text("5. Sampling")
    frame_at(phone, "/learn/sampling/")
    expect(phone.frame_locator("#stage-frame").locator(".embed-note")).to_contain_text(f"Computed by {FOOTER}")
    expect(phone.locator("footer.site")).to_contain_text("the bundled model")  # as the room was when the page loaded

    run = run_of(scenario)
    page.locator("body").click(position={"x": 5, "y": 5})
    page.keyboard.press(" ")  # the run starts paused
    expect(phone.locator("#live-status")).to_have_text("paused by the presenter")
    expect(phone.locator("#live-model")).to_have_text(f"on {LOCAL_MODEL}")
    for pg in (page, phone):  # the run renames the model that computes what is on screen
        expect(pg.locator("footer.site")).to_contain_text(FOOTER)
    page.keyboard.press(" ")  # one token
    expect(phone.locator("#live-text .live-tok")).to_have_count(1)
    page.keyboard.press("g")
    expect(phone.locator("#guess")).to_be_visible()
    phone.locator("#guess-choices button").first.tap()
    expect(page.locator("#reveal-title")).to_have_text("Guesses so far: 1")
    assert_fits_phone(phone)
    shoot(phone, "local-model-room-guess-phone")
    page.keyboard.press("r")
    expect(phone.locator("#reveal-drawn")).to_contain_text("The model drew")
    expect(phone.locator("#live-text .live-tok")).to_have_count(2)
    page.keyboard.press("p")  # play the rest
    expect(phone.locator("#live-status")).to_contain_text("finished", timeout=30_000)
    streamed = phone.locator("#live-text .live-tok").evaluate_all("spans => spans.map(s => Number(s.title.split(' ')[1]))")
    assert streamed == [st["token"] for st in run.steps]  # the tokens of the local model's run, not the bundled model's
    assert not page.js_errors and not phone.js_errors, page.js_errors + phone.js_errors

    phone.reload()  # a student who comes back: the page names the room's model from the start, and catches up
    expect(phone.locator("footer.site")).to_contain_text(FOOTER)
    expect(phone.locator("#live-model")).to_have_text(f"on {LOCAL_MODEL}")
    expect(phone.locator("#live-text .live-tok")).to_have_count(len(run.steps))


# ---- the tutorial on the local model ----------------------------------------------------------------------

def verdict(pg, words: str) -> str:
    pg.wait_for_function("w => (document.getElementById('tut-verdict') || {}).textContent?.includes(w)", arg=words, timeout=30_000)
    return pg.locator("#tut-verdict").inner_text()


def slide(pg, selector: str, value: str) -> None:
    """Move a range input as a person drags and lets go of it: its value, its input event, then its change event."""
    pg.locator(selector).evaluate("""(el, v) => { el.value = v; el.dispatchEvent(new Event('input', {bubbles: true}));
        el.dispatchEvent(new Event('change', {bubbles: true})); }""", value)


def test_a_sampling_lesson_done_on_the_local_model(server, page, shoot, axe):
    """The learner picks the local model on the lesson path, starts the sampling lesson on it and does its task
    with the page's own slider; the next lesson's link keeps the model."""
    watched(page)
    page.goto(server["url"] + "/tutorial/")
    page.get_by_label("Model", exact=True).select_option(LOCAL_MODEL)
    page.get_by_role("button", name="Use this model").click()
    page.wait_for_url(f"**/tutorial/?model={LOCAL_MODEL}")
    # the one lesson whose task is the bundled model's own words says so, and starts on the bundled model
    first = page.locator("li[data-lesson='temperature']")
    expect(first.locator(".tut-bundled-only")).to_contain_text("On the bundled model only")
    assert "model=" not in first.locator("[data-start]").get_attribute("href")
    axe(page)

    page.get_by_role("link", name="Start lesson 6: Same random number, another token").click()
    page.wait_for_url("**/learn/sampling/?s=*")
    assert FOOTER in page.locator("footer.site").inner_text()
    verdict(page, "Not yet")
    # top_k 1 keeps only the most likely token; the engine's draw at step 2 was another one (a random model's spread)
    step = run_of(by_id()["same-dice"].start_scenario(LOCAL_MODEL)).steps[1]
    assert step["token"] != int(step["logits"].argmax())
    slide(page, "#knob-k", "1")
    text = verdict(page, "✓ Done")
    assert "instead of" in text
    assert page.locator("#tut-next").get_attribute("href") == f"/tutorial/start/stop-sequence?model={LOCAL_MODEL}"
    assert page.evaluate("JSON.parse(localStorage.getItem('explainer.tutorial')).done") == {"same-dice": True}
    assert not page.js_errors, page.js_errors
    shoot(page, "local-model-tutorial-done")


def test_a_lesson_that_needs_the_bundled_model_says_so_on_the_local_model(server, page):
    """The temperature lesson's word is the bundled model's own: after switching the overview to the local model
    and sending, the check says why it cannot pass there, instead of "try another temperature" forever."""
    watched(page)
    page.goto(server["url"] + "/tutorial/start/temperature")
    verdict(page, "lesson's request at temperature 0.8")
    page.locator("#model").select_option(LOCAL_MODEL)
    page.get_by_role("button", name="Send").click()
    page.wait_for_selector("#usage dd[data-field=output_tokens]", timeout=30_000)
    text = verdict(page, "needs the bundled model")
    assert f"runs the local model {LOCAL_MODEL}" in text and "start the lesson from the lesson path" in text
    assert not page.js_errors, page.js_errors
