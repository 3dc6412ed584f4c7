"""The tokenize page in Chromium: token spans from the real tokenizer, the details panel, the
vocabulary slider, the merge stepper, the statistics and the image estimate."""
import re

import pytest

from explainer.lifecycle.scenario import Scenario
from explainer.llm.tokenizer import load_tokenizer
from explainer.stages.runs import run_of
from tests.test_stage_tokenize import SCENARIO  # the same fixed scenario as the view tests

pytestmark = pytest.mark.browser

tok = load_tokenizer()


def count_at(req, n: int) -> int:
    """Tokens of the chat template with the first n merges: specials + each turn's text."""
    return 1 + len(tok.encode(req.system, n)) + 1 + sum(2 + len(tok.encode(m.text, n)) for m in req.messages) + 1


def test_it_draws_the_models_tokens_and_shows_details(page, link, shoot, axe):
    run = run_of(SCENARIO)
    page.goto(link("tokenize", SCENARIO, token=3))
    spans = page.locator("#strip [role=option]")
    assert spans.count() == len(run.prompt_ids) == run.done["usage"]["input_tokens"]
    assert int(page.locator("[data-model-tokens]").inner_text()) == len(run.prompt_ids)
    # the selected token's details are the tokenizer's
    assert page.locator("#tok-3").get_attribute("aria-selected") == "true"
    assert int(page.locator("[data-detail-id]").inner_text()) == run.prompt_ids[3]
    # special tokens are drawn apart from text
    assert page.locator("#strip .tk.special").count() == sum(tok.is_special(t) for t in run.prompt_ids)
    # clicking another token shows its id, bytes and rank; the URL follows
    target = next(i for i, t in enumerate(run.prompt_ids) if tok.rank_of(t) is not None and i > 5)
    page.locator(f"#tok-{target}").click()
    tid = run.prompt_ids[target]
    assert int(page.locator("[data-detail-id]").inner_text()) == tid
    assert page.locator("#detail [data-rank]").get_attribute("data-rank") == str(tok.rank_of(tid))
    assert tok.token_bytes(tid).hex(" ").upper() in page.locator("#detail").inner_text()
    assert f"token={target}" in page.url
    # the keyboard moves the selection, without leaving the page
    page.keyboard.press("ArrowRight")
    assert f"token={target + 1}" in page.url and "/learn/tokenize/" in page.url
    assert int(page.locator("[data-detail-id]").inner_text()) == run.prompt_ids[target + 1]
    assert not page.js_errors
    axe(page)
    shoot(page, "tokenize-1280")


def test_the_slider_retokenises_exactly_like_the_tokenizer(page, link, shoot):
    run = run_of(SCENARIO)
    req = run.request
    page.goto(link("tokenize", SCENARIO))
    curve = page.locator("#curve circle.dot")
    assert curve.count() >= 12
    for i in range(curve.count()):
        n, count = int(curve.nth(i).get_attribute("data-n")), int(curve.nth(i).get_attribute("data-count"))
        assert count == count_at(req, n)
        if n == tok.model_merges:
            assert count == len(tok.encode_chat(req.system, [(m.role, m.text) for m in req.messages]))
    assert page.locator("#curve circle.dot.model").get_attribute("data-n") == str(tok.model_merges)
    for n in (0, 300, 20000):
        if n == 300:
            page.goto(link("tokenize", SCENARIO, merges=n))
        else:
            page.locator(f"[data-merges-set='{n}']").click()
        expected = count_at(req, n)
        assert page.locator("#strip [role=option]").count() == expected
        assert int(page.locator("[data-shown]").inner_text().replace(",", "")) == expected
        assert page.locator("#curve .marker").get_attribute("data-count") == str(expected)
    # the selection stays on the same place in the text when the vocabulary changes
    page.locator(f"[data-merges-set='{tok.model_merges}']").click()
    i = next(i for i, t in enumerate(run.prompt_ids) if tok.token_str(t) == " PostgreSQL")
    page.locator(f"#tok-{i}").click()
    page.locator("[data-merges-set='0']").click()
    assert page.locator("[aria-selected=true]").inner_text() == "·"
    assert page.locator("[data-detail-id]").inner_text() == "32"
    page.locator(f"[data-merges-set='{tok.model_merges}']").click()
    assert page.locator("[aria-selected=true]").inner_text() == "·PostgreSQL"
    assert f"token={i}" in page.url and "merges=" not in page.url
    # moving the slider itself changes the tokens and the permalink
    page.locator("#vocab-range").fill("500")
    page.wait_for_function("() => new URL(location.href).searchParams.has('merges')")
    n = int(re.search(r"merges=(\d+)", page.url).group(1))
    expected = count_at(req, n)
    page.wait_for_function(f"() => document.querySelectorAll('#strip [role=option]').length === {expected}")
    assert "The model itself uses" in page.locator("#vocab-banner").inner_text()
    shoot(page, "tokenize-vocab")
    assert not page.js_errors


def test_the_merge_stepper_replays_bpe(page, link, shoot):
    run = run_of(SCENARIO)
    page.goto(link("tokenize", SCENARIO))
    word = int(page.locator("#word-select").input_value())
    chunks = [c for m in ([run.request.system] + [m.text for m in run.request.messages]) for c in tok.chunks(m)]
    trace = tok.encode_with_trace(chunks[word], max_merges=len(tok.merges))[0]
    last = tok.chunks(run.request.messages[-1].text)
    assert chunks[word] in last and len(chunks[word].strip()) == max(len(c.strip()) for c in last)  # the longest word
    assert int(page.locator("#bpe-pieces").get_attribute("data-count")) == len(trace["bytes"])
    for step in trace["steps"]:
        page.get_by_role("button", name="Next →").click()
        assert int(page.locator("#bpe-pieces").get_attribute("data-count")) == len(step.pieces)
        assert f"rank {step.rank:,}" in page.locator("#bpe-what").inner_text()
    assert page.get_by_role("button", name="Next →").is_disabled()
    assert f"merge={len(trace['steps'])}" in page.url
    page.get_by_role("button", name="← Prev").click()
    assert int(page.locator("#bpe-pieces").get_attribute("data-count")) == len(trace["steps"][-2].pieces)
    shoot(page, "tokenize-stepper")


def test_stats_and_image_estimate(page, link):
    page.goto(link("tokenize", SCENARIO))
    prose = page.locator(".tk-stat[data-sample=prose]")
    code = page.locator(".tk-stat[data-sample=code]")
    from explainer.stages.pages.tokenize import CODE_SAMPLE, PROSE_SAMPLE
    assert int(prose.locator("[data-stat=tokens]").inner_text()) == len(tok.encode(PROSE_SAMPLE))
    assert int(code.locator("[data-stat=tokens]").inner_text()) == len(tok.encode(CODE_SAMPLE))
    # code is denser in tokens than prose
    assert float(code.locator("[data-stat=chars_per_token]").inner_text()) < float(prose.locator("[data-stat=chars_per_token]").inner_text())
    page.locator("#img-w").fill("1000")
    page.locator("#img-h").fill("1000")
    assert page.locator("[data-image-tokens]").get_attribute("data-image-tokens") == str(-(-1000 * 1000 // 750))
    page.locator("#img-w").fill("4000")
    page.locator("#img-h").fill("3000")
    est = int(page.locator("[data-image-tokens]").get_attribute("data-image-tokens"))
    assert 1500 <= est <= 1600  # scaled down first
    assert "img_w=4000" in page.url
    page.locator("#img-w").fill("9000")
    assert "8000" in page.locator("#img-result").inner_text()
    assert not page.js_errors


def test_hostile_text_is_shown_as_text(page, link, shoot):
    hostile = Scenario(system='</textarea><script>window.__pwned=1</script>',
                       messages=[{"role": "user", "content": '<img src=x onerror="window.__pwned=1">\u202eevil\u202c ' + "😀" * 3000}],
                       max_tokens=4)
    page.goto(link("tokenize", hostile))
    assert page.evaluate("window.__pwned") is None
    assert page.locator("#strip img").count() == 0
    assert "first 4,000 bytes" in page.locator(".tk-note").first.inner_text()
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280
    assert not page.js_errors
    shoot(page, "tokenize-hostile")


def test_it_works_on_a_phone(browser, link, shoot):
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    pg = context.new_page()
    pg.goto(link("tokenize", SCENARIO))
    pg.locator("#tok-4").tap()
    assert pg.locator("#tok-4").get_attribute("aria-selected") == "true"
    assert pg.evaluate("document.documentElement.scrollWidth") <= 390
    shoot(pg, "tokenize-phone")
    context.close()


def test_a_refused_request_still_shows_samples_and_images(page, link):
    s = Scenario(messages=[{"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "x"}}]}], max_tokens=2)
    page.goto(link("tokenize", s))
    assert "refused before it reached the tokenizer" in page.content()
    assert int(page.locator(".tk-stat[data-sample=prose] [data-stat=tokens]").inner_text()) > 0
    assert page.locator("[data-image-tokens]").count() == 1
    assert not page.js_errors


def test_the_chips_carry_their_ids_and_the_list_of_ids_follows_the_vocabulary(page, link):
    run = run_of(SCENARIO)
    req = run.request
    page.goto(link("tokenize", SCENARIO, token=3))
    ids = lambda: [int(x) for x in page.locator("#ids span").all_inner_texts()]  # noqa: E731
    assert ids() == run.prompt_ids
    after = page.locator("#tok-3").evaluate("t => getComputedStyle(t, '::after').content")
    assert after == f'"{run.prompt_ids[3]}"'  # the id is drawn under the token's text
    assert page.locator("#ids .sel").inner_text() == str(run.prompt_ids[3])
    page.locator("#tok-5").click()
    assert page.locator("#ids .sel").inner_text() == str(run.prompt_ids[5])
    page.locator("[data-merges-set='0']").click()
    expected = [256, *tok.encode(req.system, 0), 259]
    for m in req.messages:
        expected += [tok.special_id(f"<|{m.role}|>"), *tok.encode(m.text, 0), 259]
    expected.append(tok.special_id("<|assistant|>"))
    assert ids() == expected and len(expected) == count_at(req, 0)
    assert page.locator("[data-ids-count]").inner_text().replace(",", "") == str(len(expected))
    # with the whole merge list, the figures recomputed in the browser are the "all merges" ones the server gave
    page.locator(f"[data-merges-set='{len(tok.merges)}']").click()
    for name in ("prose", "code", "context"):
        box = page.locator(f".tk-stat[data-sample={name}]")
        assert box.locator("[data-stat=chars_per_token]").inner_text() == box.locator("[data-cpt-full]").inner_text()
    assert not page.js_errors


def test_on_a_phone_the_details_wait_for_a_tap(phone, link):
    phone.goto(link("tokenize", SCENARIO))
    assert not phone.locator("#detail").is_visible()
    assert phone.locator("#ids").is_visible()
    phone.locator("#tok-4").tap()
    assert phone.locator("#detail").is_visible()
    assert int(phone.locator("[data-detail-id]").inner_text()) == run_of(SCENARIO).prompt_ids[4]
    assert not phone.js_errors
