import re

import pytest

pytestmark = pytest.mark.browser


def test_it_streams_a_reply_with_usage_after_send(server, page, shoot, axe):
    page.goto(server["url"] + "/")
    page.get_by_label("Message").fill("What is a PostgreSQL index?")
    page.locator("#max_tokens").fill("24")
    page.get_by_role("button", name="Send").click()
    page.wait_for_selector("#usage dd[data-field=output_tokens]", timeout=30_000)
    text = page.locator("#output").inner_text()
    out_tokens = int(page.locator("#usage dd[data-field=output_tokens]").inner_text())
    assert 1 <= out_tokens <= 24
    assert text.strip() or page.locator("#usage dd[data-field=stop_reason]").inner_text() == "end_turn"
    names = page.locator("#events .ev-name").all_inner_texts()
    api = [n for n in names if not n.startswith("explainer.")]
    assert api[:3] == ["message_start", "content_block_start", "ping"]
    assert api[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert int(page.locator("#usage dd[data-field=input_tokens]").inner_text()) > 5
    assert page.locator("#prompt-tokens .tok").count() > 5
    assert page.locator("#pipeline li.active").count() == 1
    assert not page.js_errors
    axe(page)
    shoot(page, "overview-1280")


def test_the_same_seed_gives_the_same_text(server, page):
    page.goto(server["url"] + "/")
    texts = []
    for _ in range(2):
        page.locator("#max_tokens").fill("12")
        page.locator("#seed").fill("42")
        page.get_by_role("button", name="Send").click()
        page.wait_for_selector("#usage dd[data-field=output_tokens]", timeout=30_000)
        texts.append(page.locator("#output").inner_text())
    assert texts[0] == texts[1]


def test_hostile_prompt_text_is_shown_as_text(server, page, shoot):
    page.goto(server["url"] + "/")
    hostile = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=1</script>\u202e' + "😀" * 300
    page.get_by_label("Message").fill(hostile)
    page.locator("#max_tokens").fill("4")
    page.get_by_role("button", name="Send").click()
    page.wait_for_selector("#usage dd[data-field=output_tokens], #events li.error", timeout=30_000)
    assert page.evaluate("window.__pwned") is None
    assert page.locator("#output img").count() == 0
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 1280
    shoot(page, "overview-hostile")


def test_it_works_on_a_phone(server, browser, shoot):
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    pg = context.new_page()
    pg.goto(server["url"] + "/")
    pg.locator("#max_tokens").fill("8")
    pg.get_by_role("button", name="Send").tap()
    pg.wait_for_selector("#usage dd[data-field=output_tokens]", timeout=30_000)
    assert pg.evaluate("window.innerWidth") == 390  # a mobile viewport widens itself to fit overflowing content
    assert pg.evaluate("document.documentElement.scrollWidth") <= 390
    shoot(pg, "overview-phone")
    context.close()


def test_an_unknown_page_is_a_friendly_404(server, page):
    resp = page.goto(server["url"] + "/no/such/page/")
    assert resp.status == 404
    assert page.get_by_role("link", name=re.compile("overview", re.I)).count() >= 1
    assert "Traceback" not in page.content()


def test_sending_makes_the_request_the_page_s_permalink(server, page, browser):
    page.goto(server["url"] + "/learn/overview/")
    page.get_by_label("Message").fill("Why do B-tree indexes speed up lookups?")
    page.locator("#max_tokens").fill("10")
    page.locator("#seed").fill("5")
    page.get_by_role("button", name="Send").click()
    page.wait_for_selector("#usage dd[data-field=output_tokens]", timeout=30_000)
    page.wait_for_function("() => new URL(location.href).searchParams.has('s')")
    text = page.locator("#output").inner_text()
    assert "s=" in page.locator("a[rel=next]").get_attribute("href") if page.locator("a[rel=next]").count() else True
    other = browser.new_context().new_page()
    other.goto(page.url)
    assert other.get_by_label("Message").input_value() == "Why do B-tree indexes speed up lookups?"
    other.get_by_role("button", name="Send").click()
    other.wait_for_selector("#usage dd[data-field=output_tokens]", timeout=30_000)
    assert other.locator("#output").inner_text() == text
    other.context.close()


def test_an_example_prompt_gets_a_reply_that_ends(server, page, shoot):
    """The examples are chosen by measurement: at their settings the model stops by itself (end_turn)."""
    from explainer.stages.examples import examples

    assert examples(), "explainer/llm/evaluation/examples.json lists no examples"
    page.goto(server["url"] + "/")
    chips = page.locator(".examples a.example")
    assert chips.count() == len(examples())
    first = examples()[0]["prompt"]
    chips.first.click()
    page.wait_for_load_state()
    assert page.get_by_label("Message").input_value() == first
    assert int(page.locator("#max_tokens").input_value()) >= 160
    page.get_by_role("button", name="Send").click()
    page.wait_for_selector("#usage dd[data-field=stop_reason]", timeout=60_000)
    assert page.locator("#usage dd[data-field=stop_reason]").inner_text() == "end_turn"
    reply = page.locator("#output").inner_text().strip()
    assert len(reply) > 20 and reply[-1] in ".!?)`\"'"
    assert not page.js_errors
    shoot(page, "overview-example-end-turn")


def test_the_journey_is_watched_stage_by_stage_then_skipped(server, browser, shoot):
    """The real run takes a fraction of a second; the page replays it so each stage is seen lit in turn,
    the reply streams after, "Skip to the end" finishes at once, and on a phone the reply is in view."""
    ctx = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    pg = ctx.new_page()
    pg.goto(server["url"] + "/")
    pg.locator("#prompt").fill("What is a PostgreSQL index?")
    pg.locator("#max_tokens").fill("40")
    # every step that lights up, in order, with the reply's text at that moment (recorded in the page)
    pg.evaluate("""() => {
        window.__lit = [];
        new MutationObserver(() => {
            const li = document.querySelector('#pipeline li.active');
            const step = li ? li.dataset.step : null;
            const last = window.__lit[window.__lit.length - 1];
            if (step && (!last || last[0] !== step)) window.__lit.push([step, document.querySelector('#output').innerText]);
        }).observe(document.getElementById('pipeline'), {subtree: true, attributes: true, attributeFilter: ['class']});
    }""")
    pg.locator("#send").click()
    pg.wait_for_function("() => window.__lit.some(([step]) => step === 'sampling')")
    journal = pg.evaluate("() => window.__lit")
    lit, text_when = [step for step, _ in journal], {}
    for step, text in journal:
        text_when.setdefault(step, text)
    assert lit[:5] == ["compose", "gateway", "tokenize", "transformer", "sampling"], lit
    assert text_when["transformer"] == "", "the reply arrived before the request reached the model"
    notes = pg.locator("[data-note=tokenize]").inner_text()
    assert re.fullmatch(r"\d+ tokens", notes), notes
    shoot(pg, "overview-journey-phone")
    pg.locator("#skip").click()
    pg.wait_for_selector("#usage dd[data-field=output_tokens]", timeout=5_000)
    assert pg.locator("#skip").is_hidden()
    assert pg.locator("#status").inner_text().startswith("Done: stopped because")
    box = pg.locator("#output").bounding_box()
    assert box["y"] >= 0 and box["y"] < 844, box  # the reply is on the screen
    ctx.close()
