"""The sampling stage through Django's test client: the step's real logits and the engine's draw."""
import re
from urllib.parse import urlencode

import numpy as np
import pytest
from django.template.defaultfilters import floatformat

from explainer.lifecycle.scenario import Scenario
from explainer.llm.sampling import SamplingParams, distribution, draw
from explainer.stages.pages.sampling import engine_uniform
from explainer.stages.runs import codec, engine, run_of
from explainer.stages.words import visible_token
from tests.urls import data_of
from tests.work import count_forward_passes

SCENARIO = Scenario(messages=[{"role": "user", "content": "What does VACUUM do?"}], max_tokens=10, seed=3, temperature=0.9, top_k=50)


def get(client, scenario=None, **opts):
    q = {"s": codec().encode(scenario)} if scenario is not None else {}
    q.update(opts)
    return client.get("/learn/sampling/" + ("?" + urlencode(q) if q else ""))


def test_it_renders_the_default_scenario(client):
    r = get(client)
    assert r.status_code == 200
    html = r.content.decode()
    assert "The next-token distribution" in html and "extra_body" in html
    assert len(r.content) < 150_000  # the full logits row is ~30 KB


def test_the_page_sends_the_step_s_real_logits_and_the_engine_s_draw(client):
    run = run_of(SCENARIO)
    step = 4
    r = get(client, SCENARIO, step=step)
    html, page = r.content.decode(), data_of(r)
    data = page["sampling-step"]
    st = run.steps[step]
    assert len(data["logits"]) == engine().model.config.vocab_size
    assert np.allclose(data["logits"], st["logits"], atol=5e-5)
    assert data["banned"] == list(engine().tokenizer.banned_ids)
    e = data["engine"]
    assert e["token"] == st["token"] and e["label"] == engine().token_label(st["token"])
    # the engine's u reproduces its draw
    dist = distribution(st["logits"], SamplingParams(0.9, 50, None), banned=engine().tokenizer.banned_ids)
    class Fixed:
        def random(self):
            return e["u"]
    assert draw(dist, Fixed()) == st["token"]
    assert abs(e["final_probability"] - dist.final[st["token"]]) < 1e-12
    assert e["kept"] == 50
    # every token's text, once per page
    labels = page["sampling-config"]["labels"]
    assert len(labels) == engine().model.config.vocab_size and labels[st["token"]] == e["label"]
    # the server-rendered fallback shows the engine's own candidate rows
    assert f"(id {st['token']}, rank {e['rank'] + 1})" in html
    assert f"<strong>{floatformat(dist.final[st['token']], 4)}</strong>" in html


def test_every_step_s_u_is_the_engine_s_random_stream(client):
    run = run_of(SCENARIO)
    rng = np.random.default_rng(SCENARIO.seed)
    us = [rng.random() for _ in run.steps]
    assert [engine_uniform(SCENARIO.seed, i) for i in range(len(run.steps))] == us


def test_the_config_marks_the_request_s_settings_and_the_explored_ones(client):
    r = get(client, SCENARIO, t="1.4", k="0", p="0.5")
    html, cfg = r.content.decode(), data_of(r)["sampling-config"]
    assert cfg["request"] == {"temperature": 0.9, "top_k": 50, "top_p": None}
    assert cfg["explore"] == {"temperature": 1.4, "top_k": 0, "top_p": 0.5}
    assert cfg["n_steps"] == len(run_of(SCENARIO).steps)
    assert "temperature 0.9 · top_k 50 · top_p off, as sent." in html
    # the step links keep the explored knobs
    assert re.search(r'id="step-next"[^>]*href="[^"]*t=1.4[^"]*"', html.replace("&amp;", "&"))


@pytest.mark.parametrize("opts", [
    {"step": "-1"}, {"step": "x"}, {"step": "999"}, {"t": "abc"}, {"t": "2.5"}, {"t": "nan"}, {"t": "1e3"},
    {"k": "-3"}, {"k": "99999"}, {"p": "0"}, {"p": "1.5"}, {"p": "0.1.2"},
])
def test_bad_view_options_are_a_400(client, opts):
    r = get(client, SCENARIO, **opts)
    assert r.status_code == 400
    assert "Traceback" not in r.content.decode()


def test_a_refused_request_has_no_steps_but_a_page(client):
    long = Scenario(messages=[{"role": "user", "content": "word " * 2000}])
    r = get(client, long)
    assert r.status_code == 200
    html = r.content.decode()
    assert "No tokens to sample" in html and "sampling-step" not in html and "sampling-step" not in data_of(r)
    assert get(client, long, step=1).status_code == 400


def test_hostile_text_is_escaped(client):
    hostile = Scenario(system="</script><script>alert(1)</script>",
                       messages=[{"role": "user", "content": "😀" * 50 + '\u202e<img src=x onerror=alert(1)>'}], max_tokens=4)
    html = get(client, hostile).content.decode()
    assert "<img src=x" not in html and "<script>alert" not in html
    assert "<span class=\"tok prompt\">&lt;</span>" in html  # the prompt's tail is shown, as text


def test_another_step_and_temperature_reuse_the_cached_run(client, monkeypatch):
    get(client, SCENARIO)
    passes = count_forward_passes(monkeypatch, engine().model)
    assert get(client, SCENARIO, step=5, t="0.3").status_code == 200
    assert passes == []  # re-sampled from the run's stored logits, with no forward pass


def test_the_page_says_when_the_word_ban_removed_a_candidate(client, monkeypatch):
    """A model that wants to write a blocked word: the step where the ban removes it is explained, and the
    page's own redraw (logits minus every banned id) still gives the engine's token."""
    from tests.test_blocklist import _Eager

    eng = engine()
    tok = eng.tokenizer
    eager = _Eager(eng.model, tok.encode("Oh damn"))  # O, h, " d", am, n
    monkeypatch.setattr(eng, "model", eager)
    s = Scenario(messages=[{"role": "user", "content": "Say something rude, word-ban test."}], max_tokens=6, seed=424242)
    run = run_of(s)
    step = next(i for i, st in enumerate(run.steps) if st.get("banned_words"))
    assert "damn" not in run.text.lower()
    r = get(client, s, step=step)
    html = r.content.decode()
    note = re.search(r'<p id="word-ban"[^>]*>(.*?)</p>', html, re.S)
    assert note and "hidden" not in note.group(0).split(">")[0]
    assert html.index('id="main-visual"') < note.start() < html.index('class="scenario-bar"')  # beside the bars it changed
    assert "d**n" in note.group(1) and "damn" not in note.group(1)
    data = data_of(r)["sampling-step"]
    assert set(run.steps[step]["word_ban"]) <= set(data["banned"])
    assert data["engine"]["token"] == run.steps[step]["token"] and data["engine"]["token"] not in data["banned"]
    other = get(client, s, step=0).content.decode()  # a step without a ban keeps the note hidden
    assert re.search(r'<p id="word-ban"[^>]*hidden', other)


def test_the_main_visual_is_the_distribution_with_its_knobs_and_strip(client):
    html = get(client, SCENARIO, step=2).content.decode()
    mv = html[html.index('id="main-visual"'):html.index('class="scenario-bar"')]
    for id_ in ("knob-t", "knob-k", "knob-p", "dist-table", "strip", "step-label", "step-next"):
        assert f'id="{id_}"' in mv, id_
    assert 'id="so-far"' not in mv and 'id="draw-log"' not in mv  # the loop and your own draws come after


def test_try_this_figures_come_from_the_step_s_logits(client):
    run = run_of(SCENARIO)
    step = 2
    st = run.steps[step]
    banned = tuple(engine().tokenizer.banned_ids) + tuple(st.get("word_ban", ()))
    html = get(client, SCENARIO, step=step).content.decode()
    fold = html[html.index('id="try-this"'):]
    now = distribution(st["logits"], SamplingParams(0.9, 50, None), banned=banned)
    hot = distribution(st["logits"], SamplingParams(1.5, 50, None), banned=banned)
    half = distribution(st["logits"], SamplingParams(0.9, 50, 0.5), banned=banned)
    top = int(now.order[0])
    label = visible_token(engine().token_label(top))
    assert f"greedy: only “{label}” is left" in fold
    assert f"falls from {now.final[top]:.1%} to {hot.final[top]:.1%}, and {np.count_nonzero(hot.final):,} tokens can be drawn" in fold
    assert f"stay: {np.count_nonzero(half.final):,} of the 50 the request&#x27;s settings keep" in fold
    assert "step=2" in fold and "t=1.5" in fold and "p=0.5" in fold


def test_the_stop_reason_is_said_in_words(client):
    run = run_of(SCENARIO)
    html = get(client, SCENARIO).content.decode()
    words = {"max_tokens": "reached max_tokens, the limit you set", "end_turn": "the model chose to stop (end_turn)"}
    assert f"stopped: {words[run.done['stop_reason']]}" in html
