"""The transformer page: every number it sends is the bundled model's own, for the scenario's prompt."""
import re
from urllib.parse import urlencode

import numpy as np
import pytest

from explainer.lifecycle.scenario import Scenario
from explainer.llm.layers import softmax
from explainer.llm.model import load_model
from explainer.stages.pages import transformer
from explainer.stages.runs import codec, engine, run_of
from tests.urls import data_of, stage_data
from tests.work import count_forward_passes

SHORT = Scenario(messages=[{"role": "user", "content": "How do I create an index in PostgreSQL?"}], seed=4, max_tokens=6)
LONG = Scenario(messages=[{"role": "user", "content": "A B-tree index keeps keys sorted so lookups are fast. " * 25}], max_tokens=4)
TOO_LONG = Scenario(messages=[{"role": "user", "content": "index " * 700}], max_tokens=4)
HOSTILE = Scenario(system='</script><script>alert("sys")</script>',
                   messages=[{"role": "user", "content": '<img src=x onerror=alert(1)>\u202eevil\u202c & "quotes" ' + "😀" * 20}],
                   max_tokens=4)
NAMES = ("embedding", "block_*_attn_head_*_weights", "block_*_mlp_hidden", "block_*_resid_out")
Q16 = 0.5 / 65535  # worst-case error of the uint16 quantisation, per unit of range


def url(scenario=None, **opts):
    q = {}
    if scenario is not None:
        q["s"] = codec().encode(scenario)
    q.update(opts)
    return "/learn/transformer/" + ("?" + urlencode(q) if q else "")


def get(client, scenario=None, **opts):
    r = client.get(url(scenario, **opts))
    assert r.status_code == 200, r.content[:500]
    data = data_of(r)
    return r.content.decode(), data["tf-data"], data["tf-view"]


def attention(data) -> np.ndarray:
    """The packed lower triangles back as [L*H, W, W] (upper triangle 0)."""
    a = data["attention"]
    w = a["size"]
    flat = transformer.unpack(a).reshape(len(a["names"]), -1)
    out = np.zeros((len(a["names"]), w, w))
    rows, cols = np.tril_indices(w)
    out[:, rows, cols] = flat
    return out


@pytest.fixture(scope="module")
def short_trace():
    ids = run_of(SHORT).prompt_ids
    return ids, load_model().forward(ids, want=NAMES).trace


def test_it_renders_the_default_scenario(client):
    html, data, view = get(client)
    cfg = load_model().config
    assert len(data["attention"]["names"]) == cfg.n_layer * cfg.n_head
    assert data["attention"]["names"][0] == "block_0_attn_head_0_weights"
    assert data["attention"]["names"][-1] == f"block_{cfg.n_layer - 1}_attn_head_{cfg.n_head - 1}_weights"
    assert view["token"] == len(run_of(Scenario()).prompt_ids) - 1
    assert "causal mask" in html and "logit lens" in html
    assert "js/stages/transformer.js" in html


def test_attention_values_are_the_models_weights(client, short_trace):
    ids, trace = short_trace
    _, data, _ = get(client, SHORT)
    assert (data["start"], data["end"], data["n_tokens"]) == (0, len(ids), len(ids))
    maps = attention(data)
    cfg = load_model().config
    for l, h, i, j in [(0, 0, 0, 0), (1, 2, 5, 3), (3, 3, len(ids) - 1, 1), (2, 1, 7, 7)]:
        want = trace[f"block_{l}_attn_head_{h}_weights"][i, j]
        assert maps[l * cfg.n_head + h, i, j] == pytest.approx(want, abs=Q16 + 1e-7)
    for m, name in enumerate(data["attention"]["names"]):
        np.testing.assert_allclose(maps[m], np.tril(trace[name]), atol=Q16 + 1e-7)


def test_attention_rows_sum_to_one_and_hide_the_future(client, short_trace):
    ids, trace = short_trace
    maps = attention(get(client, SHORT)[1])
    np.testing.assert_allclose(maps.sum(axis=-1), 1.0, atol=len(ids) * Q16 + 1e-6)
    for name in trace:
        if name.endswith("_weights"):
            assert np.all(np.triu(trace[name], k=1) == 0)  # what the page leaves out is exactly 0


def test_embedding_mlp_and_residual_numbers_match_the_forward_pass(client, short_trace):
    ids, trace = short_trace
    _, data, _ = get(client, SHORT)
    cfg = load_model().config
    emb = transformer.unpack(data["embedding"]).reshape(data["embedding"]["rows"], data["embedding"]["cols"])
    assert emb.shape == (len(ids), cfg.d_model)
    np.testing.assert_allclose(emb, trace["embedding"], atol=2 * data["embedding"]["hi"] * Q16 + 1e-7)
    for l in range(cfg.n_layer):
        np.testing.assert_allclose(data["mlp"]["mean_abs"][l], np.abs(trace[f"block_{l}_mlp_hidden"]).mean(-1), atol=6e-5)
    assert data["resid"]["names"] == ["embedding"] + [f"block_{l}_resid_out" for l in range(cfg.n_layer)]
    for d, name in enumerate(data["resid"]["names"]):
        np.testing.assert_allclose(data["resid"]["norm"][d], np.linalg.norm(trace[name], axis=-1), atol=6e-4)


def test_logit_lens_reads_each_layer_and_ends_with_the_real_prediction(client, short_trace):
    ids, trace = short_trace
    model = load_model()
    html, data, _ = get(client, SHORT, token=4)
    rows = data["lens"]["rows"]
    for pos in (4, len(ids) - 1):
        for d, name in enumerate(data["lens"]["depth_names"]):
            p = softmax(model.logit_lens(trace[name][pos]).astype(np.float64))
            top = np.argsort(-p)[:5]
            got = rows[pos]["depths"][d]["top"]
            assert [t for t, _ in got] == top.tolist()
            np.testing.assert_allclose([q for _, q in got], p[top], atol=6e-5)
        assert rows[pos]["next"] == (ids[pos + 1] if pos + 1 < len(ids) else run_of(SHORT).steps[0]["token"])
    # The last row at the last position is the distribution the reply's first token was drawn from.
    real = softmax(run_of(SHORT).steps[0]["logits"].astype(np.float64))
    final = rows[-1]["depths"][-1]["top"]
    assert final[0][0] == int(real.argmax()) and final[0][1] == pytest.approx(real.max(), abs=6e-5)
    # The server-rendered table shows the selected token's (position 4) final-row numbers.
    top1 = rows[4]["depths"][-1]["top"][0]
    assert f'data-id="{top1[0]}" data-p="{top1[1]}"' in html
    assert "= real output" in html and "block_3_resid_out" in html


def test_view_options_are_kept_for_the_permalink(client):
    html, _, view = get(client, SHORT, layer=2, head=3, token=1, scale="log")
    assert (view["layer"], view["head"], view["token"], view["scale"]) == (2, 3, 1, "log")
    assert "block_2_attn_head_3_weights" in html and "layer 2 · head 3" in html
    assert "layer=2" in html and "head=3" in html and "token=1" in html  # the Copy-link permalink


@pytest.mark.parametrize("opts", [
    {"head": 4}, {"layer": 4}, {"layer": -1}, {"head": "two"}, {"token": 10_000}, {"token": -2},
    {"token": "1.5"}, {"scale": "cubic"}, {"layer": "9" * 20},
])
def test_bad_view_options_are_a_400(client, opts):
    r = client.get(url(SHORT, **opts))
    assert r.status_code == 400
    html = r.content.decode()
    assert "This link cannot be shown" in html and "Traceback" not in html


def test_a_token_past_the_prompt_is_a_400_naming_the_length(client):
    n = len(run_of(SHORT).prompt_ids)
    assert client.get(url(SHORT, token=n - 1)).status_code == 200
    r = client.get(url(SHORT, token=n))
    assert r.status_code == 400 and f"from 0 to {n - 1}" in r.content.decode()


@pytest.mark.slow
def test_hostile_text_is_escaped(client):
    html, _, _ = get(client, HOSTILE)
    assert "<img src=x" not in html and '<script>alert("sys")' not in html
    tokens = stage_data(client, "transformer", HOSTILE)["tf-tokens"]
    assert "".join(t for _, t in tokens).startswith("<|system|></script><script>")  # kept as data, shown as text


@pytest.mark.slow
def test_a_long_prompt_is_shown_through_a_window_that_follows_the_token(client):
    ids = run_of(LONG).prompt_ids
    n = len(ids)
    assert transformer.WINDOW < n <= load_model().config.n_ctx - 1
    html, data, view = get(client, LONG)
    assert (data["start"], data["end"]) == (n - transformer.WINDOW, n) and view["token"] == n - 1
    assert "window of 64 tokens" in html
    _, data, view = get(client, LONG, token=20)
    assert data["start"] <= 20 < data["end"] and data["end"] - data["start"] == transformer.WINDOW
    # Rows inside a window need not sum to 1: the rest went to tokens before it.
    trace = load_model().forward(ids, want=("block_1_attn_head_2_weights",)).trace["block_1_attn_head_2_weights"]
    maps = attention(data)
    s = data["start"]
    np.testing.assert_allclose(maps[1 * 4 + 2], np.tril(trace[s:s + 64, s:s + 64]), atol=Q16 + 1e-7)


def test_the_payload_stays_small_for_the_longest_prompts(client):
    r = client.get(url(LONG))
    assert len(r.content) < 300_000


def test_a_prompt_too_long_for_the_window_gets_a_message(client):
    r = client.get(url(TOO_LONG))
    assert r.status_code == 200
    html = r.content.decode()
    assert "No forward pass to show" in html and "context window holds 512" in html
    assert 'id="tf-data"' not in html and "tf-data" not in data_of(r)


def test_a_request_refused_before_tokenizing_gets_a_message(client):
    empty = Scenario(messages=[])
    r = client.get(url(empty))
    assert r.status_code == 200 and "no token ids" in r.content.decode()
    assert client.get(url(empty, token=0)).status_code == 400
    assert client.get(url(empty, head=9)).status_code == 400


@pytest.mark.slow
def test_repeat_visits_are_served_from_the_cache(client, monkeypatch):
    get(client, LONG, token=30)
    passes = count_forward_passes(monkeypatch, engine().model)
    assert client.get(url(LONG, token=31)).status_code == 200  # the page alone: its data is fetched apart
    assert passes == []  # the run is cached: another token's view runs no forward pass
    ids = run_of(LONG).prompt_ids
    a = transformer.cached_compute(LONG.key(), engine().model, engine().token_label, ids, 0, None)
    assert transformer.cached_compute(LONG.key(), engine().model, engine().token_label, ids, 0, None) is a


def test_window_start():
    assert transformer.window_start(10, 9) == 0
    assert transformer.window_start(500, 499) == 436
    assert transformer.window_start(500, 440) == 436
    assert transformer.window_start(500, 10) == 0
    assert transformer.window_start(500, 200) == 168


def test_pack_round_trips_within_quantisation():
    x = np.random.default_rng(0).uniform(-0.3, 0.3, size=500)
    np.testing.assert_allclose(transformer.unpack(transformer.pack(x, -0.3, 0.3)), x, atol=0.6 * Q16 + 1e-12)


def test_the_main_visual_is_the_chosen_head_with_its_picker(client):
    html, _, view = get(client, SHORT, layer=2, head=1)
    mv = html[html.index('id="main-visual"'):html.index('class="scenario-bar"')]
    assert 'id="attn-big"' in mv and 'id="token-strip"' in mv and 'name="attn-scale"' in mv
    assert re.search(r'data-pick-layer="2"[^>]*aria-pressed="true"', mv) and re.search(r'data-pick-head="1"[^>]*aria-pressed="true"', mv)
    assert 'id="attn-grid"' not in mv  # every head's map is a secondary view, below
    cfg = load_model().config
    assert mv.count("data-pick-layer=") == cfg.n_layer and mv.count("data-pick-head=") == cfg.n_head


def test_try_this_points_at_heads_measured_on_this_prompt(client, short_trace):
    ids, trace = short_trace
    html, data, _ = get(client, SHORT)
    cfg = load_model().config
    names = [f"block_{l}_attn_head_{h}_weights" for l in range(cfg.n_layer) for h in range(cfg.n_head)]
    prev = [np.mean([trace[n][i, i - 1] for i in range(1, len(ids))]) for n in names]
    first = [np.mean(trace[n][1:, 0]) for n in names]
    np.testing.assert_allclose(data["habits"]["prev"], prev, atol=6e-5)
    np.testing.assert_allclose(data["habits"]["first"], first, atol=6e-5)
    fold = html[html.index('id="try-this"'):]
    l, h = divmod(int(np.argmax(first)), cfg.n_head)
    assert re.search(rf"layer {l} · head {h}</a>: over this prompt, a token gives on average\s+{max(first):.2f} of its attention to "
                     "the prompt&#x27;s first token", fold)
    # the previous-token head is the tutorial's puzzle: its share is given, not which head it is
    assert re.search(rf"a token gives on average {max(prev):.2f} of its attention to the token right before it", fold)
    l, h = divmod(int(np.argmax(prev)), cfg.n_head)
    assert f"layer {l} · head {h}" not in fold or int(np.argmax(prev)) == int(np.argmax(first))
