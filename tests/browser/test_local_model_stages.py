"""Tokenize and sampling in Chromium for a local model (the tiny Llama-family fixture): what a person sees."""
import numpy as np
import pytest

from explainer.lifecycle.scenario import Scenario
from explainer.llm.sampling import SamplingParams, distribution
from explainer.stages.pages import sampling as sampling_page
from explainer.stages.pages.tokenize import build_context
from explainer.stages.runs import engine, run_of
from tests.conftest import LOCAL_MODEL

pytestmark = pytest.mark.browser
SCENARIO = Scenario(model=LOCAL_MODEL, messages=[{"role": "user", "content": "How does PostgreSQL choose an index?"}],
                    max_tokens=6, temperature=0.9)

JS_COMPACT = """async ([compact, params]) => {
  const lib = await import("/static/js/lib/sampling.js");
  const c = lib.expandCompact(compact);
  const order = Array.from({ length: c.logits.length }, (_, i) => i);
  const d = lib.distribution(c.logits, params, [], order);
  return { n: c.logits.length, engine: c.engine, id: c.ids[c.engine], kept: d.kept, top: Array.from(d.final.slice(0, 20)) };
}"""


def test_tokenize_shows_and_replays_the_local_tokenizer(page, link):
    run, tok = run_of(SCENARIO), engine(SCENARIO).tokenizer
    page.goto(link("tokenize", SCENARIO))
    strip = page.locator("#strip .tk")
    strip.first.wait_for()
    assert strip.count() == len(run.prompt_ids)
    assert [int(x) for x in page.locator("#ids").inner_text().strip("[]").split(", ")] == run.prompt_ids
    assert page.locator("#strip .tk.special").count() == sum(tok.is_special(t) for t in run.prompt_ids)
    assert page.locator("#strip .tk.template").count() > 0  # "system", "user", line breaks: the template's own text
    # the merge stepper ends on the tokens BPE gives the chunk
    chunk = page.locator("#word-select option:checked").inner_text().rsplit(" (", 1)[0].replace("·", " ")
    while page.locator("#merge-next").is_enabled():
        page.locator("#merge-next").click()
    assert page.locator("#bpe-pieces").get_attribute("data-count") == str(len(tok.encode(chunk)))
    # bytes only: every byte a token
    page.locator("[data-merges-set='0']").click()
    ctx = build_context(tok, None, [("user", SCENARIO.messages[0]["content"])])
    assert strip.count() == len(ctx.tokens_at(0)) > len(run.prompt_ids)
    assert not page.js_errors


def test_sampling_draws_the_local_model_s_distribution(page, link, monkeypatch):
    run, eng = run_of(SCENARIO), engine(SCENARIO)
    page.goto(link("sampling", SCENARIO))
    page.wait_for_selector("body[data-sampling-ready]")
    bars = page.locator("#dist-rows tr[data-token] .bar")
    assert bars.count() >= 4 and float(bars.first.evaluate("b => b.getBoundingClientRect().width")) > 10
    st = run.steps[0]
    assert f"(id {st['token']}," in page.locator("#engine-drew").inner_text()
    # a large vocabulary's compact step, laid out and sampled in the browser: the engine's order and probabilities
    monkeypatch.setattr(sampling_page, "TOP_EXACT", 64)
    banned = eng.tokenizer.banned_ids + tuple(st.get("word_ban", ()))
    c = sampling_page.compact_step(np.asarray(st["logits"]), banned, st["token"], SCENARIO.temperature, eng.token_label)
    js = page.evaluate(JS_COMPACT, [c, {"temperature": SCENARIO.temperature, "top_k": 40}])
    py = distribution(st["logits"], SamplingParams(SCENARIO.temperature, 40), banned=banned)
    assert js["n"] == eng.model.config.vocab_size - len(set(banned)) and js["id"] == st["token"] and js["kept"] == 40
    assert np.allclose(js["top"], py.final[py.order[:20]], atol=1e-4)
    assert not page.js_errors
