"""The sampling stage in Chromium: the browser's sampler (static/js/lib/sampling.js) against the
engine's (explainer/llm/sampling.py) on real logits, the sliders, the step-through, the draw."""
import re
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest

from explainer.lifecycle.scenario import Scenario
from explainer.llm.sampling import SamplingParams, distribution
from explainer.stages.runs import engine, run_of
from tests.browser.conftest import assert_fits_phone

pytestmark = pytest.mark.browser
SCENARIO = Scenario(messages=[{"role": "user", "content": "What is a PostgreSQL index?"}], max_tokens=12, seed=7, temperature=0.8)
SETTINGS = [  # (temperature, top_k, top_p)
    (1.0, None, None), (0.7, None, None), (0.8, 40, None), (0.8, None, 0.9), (1.3, 20, 0.5),
    (0.25, 3, None), (1.0, 0, 0.05), (0.0, None, None), (2.0, None, 0.95), (0.5, 1, 1.0),
]

JS_DIST = """async ([logits, banned, params]) => {
  const lib = await import("/static/js/lib/sampling.js");
  const d = lib.distribution(logits, params, banned);
  return {final: Array.from(d.final), probs: Array.from(d.probs), order: d.order.slice(0, 300), kept: d.kept};
}"""

JS_DRAW = """async ([logits, banned, params, u]) => {
  const lib = await import("/static/js/lib/sampling.js");
  return lib.draw(lib.distribution(logits, params, banned), u);
}"""


def ready(page):
    page.wait_for_selector("body[data-sampling-ready]")
    assert not page.js_errors


def test_the_browser_sampler_agrees_with_the_engine(server, page, link):
    """Same logits, same knobs: the same kept set and the same probabilities, to 1e-6."""
    run = run_of(SCENARIO)
    banned = list(engine().tokenizer.banned_ids)
    page.goto(link("sampling", SCENARIO))
    ready(page)
    rows = [np.asarray(s["logits"], dtype=np.float64) for s in run.steps[:3]]
    # also the rounded logits the page itself sends (what the sliders really compute from)
    rows.append(np.asarray(page.evaluate("JSON.parse(document.getElementById('sampling-step').textContent).logits")))
    for logits in rows:
        for t, k, p in SETTINGS:
            py = distribution(logits, SamplingParams(t, k, p), banned=tuple(banned))
            js = page.evaluate(JS_DIST, [logits.tolist(), banned, {"temperature": t, "top_k": k, "top_p": p}])
            final = np.asarray(js["final"])
            assert set(np.flatnonzero(final > 0)) == set(np.flatnonzero(py.final > 0)), (t, k, p)
            assert js["kept"] == int(np.count_nonzero(py.final))
            assert np.max(np.abs(final - py.final)) < 1e-6, (t, k, p)
            assert np.max(np.abs(np.asarray(js["probs"]) - py.probs)) < 1e-6, (t, k, p)
            assert js["order"] == py.order[:300].tolist()
            assert abs(final.sum() - 1) < 1e-9


def test_the_engine_s_own_u_replays_every_draw_of_the_run(server, page, link):
    """At the request's settings, the browser's inverse-CDF draw with the engine's u picks the engine's token."""
    from explainer.stages.pages.sampling import engine_uniform

    run = run_of(SCENARIO)
    banned = list(engine().tokenizer.banned_ids)
    req = {"temperature": SCENARIO.temperature, "top_k": SCENARIO.top_k, "top_p": SCENARIO.top_p}
    page.goto(link("sampling", SCENARIO))
    ready(page)
    for i, st in enumerate(run.steps):
        u = engine_uniform(SCENARIO.seed, i)
        assert page.evaluate(JS_DRAW, [np.asarray(st["logits"]).tolist(), banned, req, u]) == st["token"]


def test_it_charts_the_real_distribution(server, page, link, shoot, axe):
    run = run_of(SCENARIO)
    step = 2
    st = run.steps[step]
    py = distribution(st["logits"], SamplingParams(SCENARIO.temperature), banned=engine().tokenizer.banned_ids)
    page.goto(link("sampling", SCENARIO, step=step))
    ready(page)
    assert page.locator("#step-label").inner_text() == f"step {step + 1} of {len(run.steps)}"
    # The knobs, the bars and the strip make the main visual, whole in the first screen (1280x720):
    # the table shows as many of the most likely tokens as fit.
    mv = page.locator("#main-visual")
    for sel in ("#knob-t", "#knob-k", "#knob-p", "#dist-rows", "#strip .seg", "#step-next"):
        assert mv.locator(sel).count() > 0, sel
    assert mv.evaluate("el => el.getBoundingClientRect().bottom + scrollY") <= 720
    rows = page.locator("#dist-rows tr[data-token]")
    n = rows.count()
    assert n >= 6
    assert [int(x) for x in rows.evaluate_all("rs => rs.map(r => r.dataset.token)")] == py.order[:n].tolist()
    # the strip marks where the engine's u lands: the engine's own token, at the request's settings
    assert page.locator("#strip .seg.lands").count() == 1
    assert "→" in page.locator("#strip-marks .sm-u.engine").inner_text()
    first = rows.first.locator(".val").inner_text()
    # the page gets the logits rounded to 4 decimals: its percentage may differ in the last digit
    assert abs(float(first.split("%")[0]) - py.final[py.order[0]] * 100) <= 0.011, first
    kept = int(np.count_nonzero(py.final))
    drawable = py.final.size - len(engine().tokenizer.banned_ids)
    assert page.locator("[data-stat=kept]").inner_text() == f"{kept:,} of {drawable:,}"
    rank = int(np.flatnonzero(py.order == st["token"])[0])
    if rank < n:
        assert page.locator("#dist-rows tr.engine").get_attribute("data-token") == str(st["token"])
    assert f"id {st['token']}" in page.locator("#engine-drew").inner_text()
    assert "the token the engine drew" in page.locator("#replay").inner_text()
    assert page.locator("#knobs").get_attribute("data-state") == "request"
    # the text so far: the generated tokens up to this step, the current one highlighted
    assert page.locator("#so-far a.tok.gen").count() == step + 1
    assert page.locator("#so-far a.tok.current").get_attribute("data-step") == str(step)
    axe(page)
    shoot(page, "sampling-1280")
    # 50 rows on demand, still the model's order
    page.get_by_role("button", name="Show 50 rows").click()
    assert [int(x) for x in rows.evaluate_all("rs => rs.map(r => r.dataset.token)")] == py.order[:50].tolist()
    assert page.evaluate("document.activeElement.id") == "more-rows" and page.locator("#more-rows").inner_text() == f"Show {n} rows"


def test_sliders_explore_without_changing_the_request(server, page, link, shoot):
    run = run_of(SCENARIO)
    logits = run.steps[0]["logits"]
    page.goto(link("sampling", SCENARIO))
    ready(page)
    page.locator("#knob-k").fill("3")
    assert page.locator("[data-stat=kept]").inner_text().startswith("3 of")
    assert page.locator("#dist-rows tr[data-token]:not(.cut)").count() == 3
    assert "top_k 3" in page.locator("#dist-rows tr.cut-line").inner_text()
    assert page.locator("#knobs").get_attribute("data-state") == "explore"
    assert "temperature 0.8" in page.locator(".scenario-bar").inner_text()  # the request is untouched
    page.locator("#knob-t").fill("1.5")
    assert page.locator("#t-warning").is_visible()
    page.locator("#knob-p").fill("0.5")
    q = parse_qs(urlparse(page.url).query)
    assert q["k"] == ["3"] and q["t"] == ["1.5"] and q["p"] == ["0.5"]
    py = distribution(logits, SamplingParams(1.5, 3, 0.5), banned=engine().tokenizer.banned_ids)
    assert page.locator("[data-stat=kept]").inner_text().startswith(f"{np.count_nonzero(py.final)} of")
    shoot(page, "sampling-explore")
    # the permalink restores the explored knobs
    page.reload()
    ready(page)
    assert page.locator("#out-k").inner_text() == "3" and page.locator("#out-t").inner_text() == "1.5"
    assert page.locator("#knobs").get_attribute("data-state") == "explore"
    page.get_by_role("button", name="Back to the request's settings").click()
    assert page.locator("#knobs").get_attribute("data-state") == "request"
    assert "k=" not in page.url and "t=" not in page.url


def test_greedy_keeps_one_token(server, page, link):
    page.goto(link("sampling", SCENARIO, t="0"))
    ready(page)
    assert page.locator("[data-stat=kept]").inner_text().startswith("1 of")
    assert page.locator("[data-stat=entropy]").inner_text() == "0.00 bits"


def test_steps_walk_the_autoregressive_loop(server, page, link):
    run = run_of(SCENARIO)
    page.goto(link("sampling", SCENARIO, k="5"))
    ready(page)
    page.evaluate("window.__samePage = true")  # the steps load as JSON from /learn/sampling/data: no reload
    for i in (1, 2):
        page.locator("#step-next").click()
        page.wait_for_function(f"() => document.getElementById('step-label').textContent.startsWith('step {i + 1} ')")
        assert f"id {run.steps[i]['token']}" in page.locator("#engine-drew").inner_text()
        q = parse_qs(urlparse(page.url).query)
        assert q["step"] == [str(i)] and q["k"] == ["5"]  # the explored knobs stay
    page.locator("#so-far a[data-step='0']").click()
    page.wait_for_function("() => document.getElementById('step-label').textContent.startsWith('step 1 ')")
    assert "step=" not in page.url
    assert page.locator("#step-prev").get_attribute("aria-disabled") == "true"
    assert page.evaluate("window.__samePage === true")
    assert not page.js_errors


def test_the_seeded_draw_repeats_for_the_same_link(server, page, link, shoot):
    results = []
    for _ in range(2):
        page.goto(link("sampling", SCENARIO, step=1))
        ready(page)
        page.get_by_role("button", name="Draw 100").click()
        page.get_by_role("button", name="Draw", exact=True).click()
        results.append((page.locator("#draw-status").inner_text(), page.locator("#draw-log").inner_text()))
    assert results[0] == results[1]
    shoot(page, "sampling-draws")
    m = re.match(r"101 draws\.", results[0][0])
    assert m
    counts = page.locator("#dist-rows tr[data-token] td:last-child").all_inner_texts()
    assert sum(int(c) for c in counts if c) <= 101


def test_it_fits_a_phone(server, phone, link, shoot):
    pg = phone
    pg.goto(link("sampling", SCENARIO, step=1))
    pg.wait_for_selector("body[data-sampling-ready]")
    shoot(pg, "sampling-phone")
    assert_fits_phone(pg)
    # knobs, bars and strip together in the first screen: the table keeps fewer rows on a phone
    assert pg.locator("#main-visual").evaluate("el => el.getBoundingClientRect().bottom + scrollY") <= 844
    assert 4 <= pg.locator("#dist-rows tr[data-token]").count() < 12
    for sel in ("#knob-t", "#knob-k", "#knob-p", "#strip .seg.lands"):
        assert pg.locator(sel).is_visible(), sel



def test_hostile_text_stays_text(server, page, link, shoot):
    hostile = Scenario(messages=[{"role": "user", "content": '<img src=x onerror="window.__pwned=1">\u202eevil\u202c ' + "😀" * 40}], max_tokens=6)
    page.goto(link("sampling", hostile))
    ready(page)
    assert page.evaluate("window.__pwned") is None
    assert page.locator(".visual img").count() == 0
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280
