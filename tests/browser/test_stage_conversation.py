"""The conversation stage in Chromium: the requests drawn to scale from the engine's counts, the
charts, Send growing the conversation by one real turn, fast-forward to the real 400, the
strategies, and the page on a phone."""
from urllib.parse import parse_qs, urlparse

import pytest

from explainer.lifecycle.payload import parse_request
from explainer.lifecycle.scenario import Scenario
from explainer.stages.pages.conversation import CANNED_TURNS, DEMO_REQUESTS
from explainer.stages.runs import engine, run_of
from tests.api.raw import request
from tests.test_stage_conversation import grow  # what pressing Send builds

pytestmark = pytest.mark.browser
SYSTEM = "You are a helpful assistant for software engineers."
START = Scenario(system=SYSTEM, messages=[{"role": "user", "content": "What is a primary key?"}], max_tokens=32, seed=5)


def count(scenario: Scenario, n_messages: int) -> int:
    body = {"model": scenario.model, "system": scenario.system, "messages": scenario.messages[:n_messages]}
    return len(engine().prompt_ids(parse_request(body, counting=True)))


def count_tokens_http(server, scenario: Scenario, n_messages: int) -> int:
    """POST /v1/messages/count_tokens on the running server, as an SDK would."""
    body = {"model": scenario.model, "system": scenario.system, "messages": scenario.messages[:n_messages]}
    r = request("POST", server["url"] + "/v1/messages/count_tokens", json_body=body,
                headers={"x-api-key": server["api_key"], "anthropic-version": "2023-06-01"})
    assert r.status_code == 200, r.text
    return r.json()["input_tokens"]


def test_each_request_is_drawn_from_the_engine_s_counts(server, page, link, shoot, axe):
    sc = grow(START, CANNED_TURNS[:2])
    page.goto(link("conversation", sc))
    page.wait_for_selector("body[data-conversation-ready]")
    rows = page.locator(".cv-row")
    assert rows.count() == 3
    for k, n in enumerate((1, 3, 5)):
        shown = page.locator(f"#turn-table tr[data-turn='{k + 1}'] [data-col=input]").inner_text()
        assert shown == str(count(sc, n)) == str(count_tokens_http(server, sc, n))
        assert rows.nth(k).locator(".cv-row-num strong").inner_text() == shown
    # the bars: one per request in the chart, and the last one carries every message
    assert page.locator("#chart-per-turn svg .bar").count() == 3
    assert page.locator(".cv-row").nth(2).locator(".seg").count() == 1 + 5 + 1  # system, 5 messages, reply marker
    # choosing a request shows its body: request 1 carries only the first message
    rows.nth(0).click()
    body = page.locator("#request-json").inner_text()
    assert '"What is a primary key?"' in body and CANNED_TURNS[0][:20] not in body
    assert parse_qs(urlparse(page.url).query)["turn"] == ["1"]
    assert page.locator("#request-json .new").count() == 1
    rows.nth(2).click()
    assert page.locator("#request-json .resent").count() == 3 and page.locator("#request-json .new").count() == 2
    assert "turn" not in parse_qs(urlparse(page.url).query)
    assert not page.js_errors
    axe(page)
    shoot(page, "conversation-1280")


def test_the_default_view_opens_on_several_requests(server, page, link, shoot):
    """No options: the main visual shows the requests of a fast-forwarded conversation, growing; one link
    starts from the question alone."""
    page.goto(link("conversation", Scenario()))
    page.wait_for_selector("body[data-conversation-ready]")
    main = page.locator("#main-visual")
    bars = main.locator("#chart-per-turn svg .bar")
    assert bars.count() == DEMO_REQUESTS == page.locator(".cv-row").count()
    values = [int(v.replace(",", "")) for v in main.locator("#chart-per-turn svg .bar .val").all_text_contents()]
    assert values == sorted(values) and values[0] < values[-1]
    assert values == [int(x) for x in page.locator("#turn-table [data-col=input]").all_inner_texts()]
    assert f"in request {DEMO_REQUESTS}" in main.locator("#headline").inner_text()
    box = main.bounding_box()
    assert box["y"] + box["height"] <= 720
    shoot(page, "conversation-default")
    main.get_by_role("link", name="start from the question alone").click()
    page.wait_for_selector("body[data-conversation-ready]")
    assert page.locator("#chart-per-turn svg .bar").count() == 1
    assert parse_qs(urlparse(page.url).query)["ff"] == ["1"]
    assert not page.js_errors


def test_send_adds_the_reply_and_the_new_turn(server, page, link):
    run = run_of(START)
    page.goto(link("conversation", START, ff="1"))
    page.wait_for_selector("body[data-conversation-ready]")
    page.get_by_label("Your next message").fill("And what is a foreign key?")
    page.get_by_role("button", name="Send", exact=True).click()
    page.wait_for_url(lambda u: "s=" in u and u != link("conversation", START, ff="1"))
    page.wait_for_selector("body[data-conversation-ready]")
    assert page.locator(".cv-exchange").count() == 2
    history = page.evaluate("JSON.parse(document.getElementById('conversation-data').textContent).history")
    assert history[1] == {"role": "assistant", "content": run.text}  # the model's reply, resent as it was
    assert page.locator(".cv-exchange").nth(1).locator(".cv-msg.user .cv-text").text_content() == "And what is a foreign key?"
    after = START.replace(messages=[*START.messages, {"role": "assistant", "content": run.text},
                                    {"role": "user", "content": "And what is a foreign key?"}])
    assert page.locator("#turn-table tr[data-turn='2'] [data-col=input]").inner_text() == str(count(after, 3))
    assert not page.js_errors


def test_fast_forward_reaches_the_real_400_and_the_strategies(server, page, link, shoot, axe):
    page.goto(link("conversation", START, ff="1"))
    page.wait_for_selector("body[data-conversation-ready]")
    page.get_by_role("button", name="Fast-forward to the limit").click()
    page.wait_for_selector(".cv-limit.at-limit", timeout=120_000)
    page.wait_for_selector("body[data-conversation-ready]")
    err = page.locator("#limit-error").inner_text()
    assert '"type": "invalid_request_error"' in err and "prompt is too long" in err
    n = page.locator(".cv-row").count()
    last = page.locator(f"#turn-table tr[data-turn='{n}'] [data-col=input]").inner_text()
    assert f"prompt is too long: {last} tokens > {engine().max_prompt_tokens} maximum" in err
    assert page.get_by_role("button", name="Send", exact=True).is_disabled()
    page.wait_for_function("() => document.getElementById('send-status').textContent.includes('reached the limit')")
    # every strategy fits, keeps the system prompt and shows what it sends
    for card in page.locator(".cv-strategy").all():
        assert card.locator(".cv-ok").count() == 1
        assert card.locator(".cv-kept li.system").count() == 1
    page.locator("[data-show=summarise]").click()
    assert page.locator("#payload-summarise").is_visible() and not page.locator("#payload-drop_oldest").is_visible()
    assert "Summary of earlier conversation: " in page.locator("#payload-summarise pre").inner_text()
    assert parse_qs(urlparse(page.url).query)["strategy"] == ["summarise"]
    assert not page.js_errors
    axe(page)
    shoot(page, "conversation-limit")
    # continuing with a strategy's history gets a real reply again
    page.locator(".cv-strategy[data-strategy=drop_oldest] a", has_text="Continue with this history").click()
    page.wait_for_selector("body[data-conversation-ready]")
    assert page.locator(".cv-limit.at-limit").count() == 0
    assert page.locator(".cv-exchange").last.locator(".cv-msg.assistant").count() == 1


def test_keep_last_n_follows_its_control(server, page, link):
    sc = grow(START, CANNED_TURNS[:3])
    page.goto(link("conversation", sc))
    page.locator("#n-select").select_option("1")
    page.wait_for_url(lambda u: "n=1" in u)
    card = page.locator(".cv-strategy[data-strategy=keep_last_n]")
    assert card.locator(".cv-kept li.user").count() == 1 and card.locator(".cv-kept li.assistant").count() == 0


def test_the_projection_switches_scale(server, page, link):
    sc = grow(START, CANNED_TURNS[:1])
    page.goto(link("conversation", sc))
    page.wait_for_selector("#chart-projection svg")
    label = page.locator("#chart-projection svg title").text_content()
    page.get_by_role("button", name="1,000,000 tokens").click()
    assert page.locator("#chart-projection svg title").text_content() != label
    assert "1,000,000-token window" in page.locator("#chart-projection svg title").text_content()
    assert parse_qs(urlparse(page.url).query)["scale"] == ["1m"]


def test_it_fits_a_phone(server, browser, link, shoot):
    sc = grow(START, CANNED_TURNS[:2])
    ctx = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    pg = ctx.new_page()
    pg.goto(link("conversation", sc))
    pg.wait_for_selector("body[data-conversation-ready]")
    shoot(pg, "conversation-phone")
    assert pg.evaluate("document.documentElement.scrollWidth") <= 390
    ctx.close()


def test_hostile_text_stays_text(server, page, link):
    hostile = Scenario(system="</script><script>window.__pwned=1</script>", max_tokens=8,
                       messages=[{"role": "user", "content": '<img src=x onerror="window.__pwned=1">\u202e' + "😀" * 400},
                                 {"role": "assistant", "content": "<b>bold</b>"},
                                 {"role": "user", "content": "x" * 3000}])
    page.goto(link("conversation", hostile))
    page.wait_for_selector("body[data-conversation-ready]")
    assert page.evaluate("window.__pwned") is None
    assert page.locator(".visual img").count() == 0 and page.locator(".visual b").count() == 0
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280
    assert not page.js_errors
