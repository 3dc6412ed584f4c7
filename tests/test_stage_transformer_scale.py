"""The transformer page for a local model, and for one with many heads: its numbers are the model's own,
no pass holds every head's full map or every depth's scores at once, a model with too many maps to send
ships one layer's and serves another's from /data?layer=N, and the tutorial's and the traces' head
summaries read the weights in chunks of rows."""
from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlencode

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from explainer.lifecycle.scenario import Scenario
from explainer.llm.layers import softmax
from explainer.shares.traces import attention_summary
from explainer.stages.pages import transformer
from explainer.stages.runs import codec, engine, run_of, stamp
from explainer.tutorial.checks import previous_token_attention
from tests.conftest import FIXTURE_MODELS, LOCAL_MODEL
from tests.urls import data_of

Q16 = 0.5 / 65535  # worst-case error of the uint16 quantisation, per unit of range
WIDE = "wide-llama"  # 12 layers x 8 heads: 96 maps of 64 tokens are more than a page sends at once
SENTENCE = "A B-tree index keeps keys sorted so lookups are fast. "
LONG = Scenario(model=LOCAL_MODEL, messages=[{"role": "user", "content": SENTENCE * 3}], max_tokens=3, seed=2)  # 122 tokens
SHORT = Scenario(model=LOCAL_MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=3, seed=2)


def make_wide(folder: Path, n_layer: int = 12, n_head: int = 8, n_kv_head: int = 2) -> Path:
    """A random Llama-family checkpoint with tiny-llama's tokenizer and width but more layers and heads."""
    src = FIXTURE_MODELS / LOCAL_MODEL
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        shutil.copy(src / name, folder / name)
    cfg = json.loads((src / "config.json").read_text())
    d, head_dim = cfg["hidden_size"], cfg["hidden_size"] // n_head
    cfg.update(num_hidden_layers=n_layer, num_attention_heads=n_head, num_key_value_heads=n_kv_head, head_dim=head_dim)
    (folder / "config.json").write_text(json.dumps(cfg, indent=2))
    rng = np.random.default_rng(15)
    base = load_file(str(src / "model.safetensors"))
    weights = {"model.embed_tokens.weight": base["model.embed_tokens.weight"], "model.norm.weight": base["model.norm.weight"]}
    shapes = {"self_attn.q_proj.weight": (n_head * head_dim, d), "self_attn.k_proj.weight": (n_kv_head * head_dim, d),
              "self_attn.v_proj.weight": (n_kv_head * head_dim, d), "self_attn.o_proj.weight": (d, n_head * head_dim),
              "mlp.gate_proj.weight": (cfg["intermediate_size"], d), "mlp.up_proj.weight": (cfg["intermediate_size"], d),
              "mlp.down_proj.weight": (d, cfg["intermediate_size"])}
    for l in range(n_layer):
        weights[f"model.layers.{l}.input_layernorm.weight"] = np.ones(d, np.float32)
        weights[f"model.layers.{l}.post_attention_layernorm.weight"] = np.ones(d, np.float32)
        for name, shape in shapes.items():
            weights[f"model.layers.{l}.{name}"] = (rng.standard_normal(shape) * 0.3).astype(np.float32)
    save_file(weights, str(folder / "model.safetensors"))
    return folder


@pytest.fixture(scope="module")
def wide_model(models_dir):
    """``wide-llama`` installed in the suite's models directory for this module's tests, then removed again."""
    from explainer.web.services import Services, current, installed

    folder = make_wide(models_dir / WIDE)
    services = installed(Services.from_settings(engine=current().engine))  # a catalog that sees the new folder
    services.__enter__()
    yield WIDE
    services.__exit__(None, None, None)
    shutil.rmtree(folder)


def page_url(scenario: Scenario, **opts) -> str:
    return "/learn/transformer/?" + urlencode({"s": codec().encode(stamp(scenario)), **opts})


def get(client, scenario: Scenario, **opts) -> tuple[str, dict, dict]:
    r = client.get(page_url(scenario, **opts))
    assert r.status_code == 200, r.content[:500]
    data = data_of(r)
    return r.content.decode(), data["tf-data"], data["tf-view"]


def maps_of(att: dict) -> dict[str, np.ndarray]:
    """The packed lower triangles back as {name: [W, W]} (upper triangle 0)."""
    w = att["size"]
    flat = transformer.unpack(att).reshape(len(att["names"]), -1)
    rows, cols = np.tril_indices(w)
    out = {}
    for name, tri in zip(att["names"], flat):
        m = np.zeros((w, w))
        m[rows, cols] = tri
        out[name] = m
    return out


class Spy:
    """A model that records what each pass was asked for and what it kept, and the rows of every logit-lens call."""

    def __init__(self, model):
        self.model, self.config, self.n_params = model, model.config, model.n_params
        self.passes: list[tuple[int, tuple, dict]] = []
        self.lens_rows: list[int] = []

    def new_cache(self):
        return self.model.new_cache()

    def forward(self, ids, cache=None, want=()):
        out = self.model.forward(ids, cache, want)
        self.passes.append((len(ids), want, {n: v.shape for n, v in out.trace.items() if n.endswith("_weights")}))
        return out

    def logit_lens(self, resid):
        self.lens_rows.append(resid.reshape(-1, resid.shape[-1]).shape[0])
        return self.model.logit_lens(resid)


# ---- a local model's numbers ------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_local_models_window_is_its_own_forward_pass(client):
    ids = run_of(stamp(LONG)).prompt_ids
    model = engine(LONG).model
    c = model.config
    html, data, view = get(client, LONG, token=40)
    s, e = data["start"], data["end"]
    assert s <= 40 < e and e - s == transformer.WINDOW and s > 0 and view["grid"] == "thumbs"
    trace = model.forward(ids, want=transformer.NAMES).trace  # the whole prompt in one pass: the reference
    maps = maps_of(data["attention"])
    assert list(maps) == transformer.head_names(c.n_layer, c.n_head) and data["attention"]["layers"] == [0, 1, 2]
    for name, m in maps.items():
        np.testing.assert_allclose(m, np.tril(trace[name][s:e, s:e]), atol=Q16 + 2e-6)
    q = np.arange(s, e)
    prev = [trace[n][q, q - 1].mean() for n in maps]
    np.testing.assert_allclose(data["habits"]["prev"], prev, atol=1e-4)
    np.testing.assert_allclose(data["mlp"]["mean_abs"][1], np.abs(trace["block_1_mlp_hidden"][s:e]).mean(-1), atol=1e-4)
    np.testing.assert_allclose(data["resid"]["norm"][3], np.linalg.norm(trace["block_2_resid_out"][s:e], axis=-1), atol=1e-3)
    for pos in (40, e - 1):
        row = data["lens"]["rows"][pos - s]
        assert row["next"] == ids[pos + 1]
        for d, name in enumerate(data["lens"]["depth_names"]):
            p = softmax(model.logit_lens(trace[name][pos]).astype(np.float64))
            got = row["depths"][d]
            assert [t for t, _ in got["top"]] == np.argsort(-p)[:transformer.TOP].tolist()
            np.testing.assert_allclose([x for _, x in got["top"]], np.sort(p)[::-1][:transformer.TOP], atol=1e-4)
            assert got["next"] == pytest.approx(p[ids[pos + 1]], abs=1e-4)
            assert got["next_rank"] == int((p > p[ids[pos + 1]]).sum()) + 1
    # the page speaks of this model, its parts and its own special tokens
    assert f"<strong>{LOCAL_MODEL}</strong>" in html and "rotary position" in html and "SwiGLU" in html
    assert "RMSNorm" in html and "&lt;|im_start|&gt;" in html and "&lt;|user|&gt;" not in html
    assert "grouped-query attention" in html  # 4 query heads share 2 sets of keys and values


def test_the_window_pass_never_holds_the_whole_prompts_maps(monkeypatch):
    ids = run_of(stamp(LONG)).prompt_ids * 2  # 244 tokens
    spy = Spy(engine(LONG).model)
    V = spy.config.vocab_size
    W = transformer.WINDOW
    monkeypatch.setattr(transformer, "LENS_BYTES", 2 * W * V * 4)  # two depths' scores (or 128 tokens' logits) at a time
    start = transformer.window_start(len(ids), 200)
    data = transformer.compute(spy, str, ids, start)
    end = data["end"]
    assert (start, end) == (180, 244)
    prefill, window = spy.passes[:-1], spy.passes[-1]
    assert prefill == [(128, (), {}), (start - 128, (), {})]  # the keys before the window: no intermediates asked for
    assert window[:2] == (W, transformer.NAMES)
    assert set(window[2].values()) == {(W, end)}  # the window's rows only, never [T, T]
    depths = spy.config.n_layer + 1
    assert spy.lens_rows == [2 * W] * (depths // 2) + [W] * (depths % 2)  # never [depths, W, V] at once
    # and what it computed is what one whole pass gives
    trace = spy.model.forward(ids[:end], want=("block_2_attn_head_1_weights", "block_2_resid_out")).trace
    np.testing.assert_allclose(maps_of(transformer.attention_payload(data, [2]))["block_2_attn_head_1_weights"],
                               np.tril(trace["block_2_attn_head_1_weights"][start:, start:]), atol=Q16 + 2e-6)
    np.testing.assert_allclose(data["resid"]["norm"][3], np.linalg.norm(trace["block_2_resid_out"][start:], axis=-1), atol=1e-3)


@pytest.mark.parametrize("V", [7, 1000, 4096, 50_257])
def test_top_k_is_argsorts_first_k(V):
    x = np.random.default_rng(V).standard_normal((40, V)).astype(np.float32)
    assert (transformer.top_k(x) == np.argsort(-x, axis=-1, kind="stable")[:, :5]).all()


def test_cache_entries_name_the_models_weights(client):
    get(client, LONG)
    e = engine(LONG)
    ids = run_of(stamp(LONG)).prompt_ids
    start = transformer.window_start(len(ids), len(ids) - 1)
    assert (f"{e.loaded.fingerprint}:{stamp(LONG).key()}", start, transformer.WINDOW) in transformer._CACHE


def test_a_costly_logit_lens_shrinks_the_window_and_the_page_says_so(client, monkeypatch):
    c = engine(LONG).model.config
    per_token = 2 * (c.n_layer + 1) * c.d_model * c.vocab_size
    monkeypatch.setattr(transformer, "LENS_FLOPS", 20 * per_token)  # room for 20 tokens: a window of 16
    html, data, _ = get(client, LONG)
    assert data["end"] - data["start"] == 16 == data["attention"]["size"]
    assert f"{LOCAL_MODEL} is shown 16 tokens at a time" in html and "window of 16 tokens" in html


def test_window_sizes_and_shipped_layers_for_real_model_shapes():
    smollm2 = SimpleNamespace(n_layer=30, n_head=9, d_model=576, vocab_size=49_152)
    qwen_05b = SimpleNamespace(n_layer=24, n_head=14, d_model=896, vocab_size=151_936)
    assert transformer.window_size(smollm2) == 64 and transformer.window_size(qwen_05b) == 32
    assert transformer.choose_layers(30, 9, 64, 7) == [7]  # 270 maps would be ~1.5 MB
    assert transformer.choose_layers(4, 4, 64, 2) == [0, 1, 2, 3]  # the bundled model's 16 fit
    assert transformer.choose_layers(30, 9, 8, 7) == list(range(30))  # a short prompt's small maps all fit
    # one layer of the 30 x 9 model is what the page sends: well inside the budget
    fake = {"maps": {"n_layer": 30, "n_head": 9, "size": 64, "q": np.zeros((30, 9, 64 * 65 // 2), "<u2")}}
    one = transformer.attention_payload(fake, [7])
    assert len(one["b64"]) < transformer.ATTN_BYTES / 7 and len(base64.b64decode(one["b64"])) == 9 * 64 * 65
    assert one["names"][0] == "block_7_attn_head_0_weights" and len(one["names"]) == 9


# ---- a model with many heads --------------------------------------------------------------------------------

@pytest.mark.slow
def test_many_heads_ship_one_layer_and_data_serves_another(client, wide_model):
    scenario = LONG.replace(model=wide_model)
    ids = run_of(stamp(scenario)).prompt_ids
    model = engine(scenario).model
    c = model.config
    assert (c.n_layer, c.n_head) == (12, 8)
    html, data, view = get(client, scenario, layer=3, head=5)
    assert view["grid"] == "compact" and (view["layer"], view["head"]) == (3, 5)
    assert data["attention"]["layers"] == [3] and data["attention"]["names"] == transformer.head_names(12, 8, [3])
    assert len(data["habits"]["prev"]) == len(data["habits"]["first"]) == 96  # the grid's colours: every head
    assert 'id="head-grid"' in html and "data-pick-layer" not in html
    assert "The 8 heads of layer 3" in html and "96 heads, too many maps to send at once" in html
    assert "brings one layer's maps at a time" in html
    # another layer's maps, as the page fetches them
    r = client.get(page_url(scenario, layer=10, head=1).replace("/learn/transformer/", "/learn/transformer/data"))
    other = r.json()["data"]["tf-data"]
    assert other["attention"]["layers"] == [10] and (other["start"], other["end"]) == (data["start"], data["end"])
    trace = model.forward(ids, want=("block_10_attn_head_*_weights",)).trace
    s, e = data["start"], data["end"]
    for name, m in maps_of(other["attention"]).items():  # float32 rounding of a pass in two parts, 10 random layers deep
        np.testing.assert_allclose(m, np.tril(trace[name][s:e, s:e]), atol=Q16 + 1e-4)
    assert len(r.content) < len(client.get(page_url(scenario)).content)


def test_many_heads_on_a_short_prompt_send_every_layer(client, wide_model):
    html, data, view = get(client, SHORT.replace(model=wide_model))
    assert data["end"] - data["start"] < 55 and data["attention"]["layers"] == list(range(12))
    assert view["grid"] == "compact"  # 12 layers: still the compact grid, but nothing to fetch


# ---- the tutorial and the traces read the weights in chunks -------------------------------------------------

def reference_scores(model, ids) -> tuple[np.ndarray, dict]:
    c = model.config
    trace = model.forward(ids, want=transformer.HEADS).trace
    T = len(ids)
    prev = np.array([[trace[f"block_{l}_attn_head_{h}_weights"][np.arange(1, T), np.arange(T - 1)].mean()
                      for h in range(c.n_head)] for l in range(c.n_layer)])
    return prev, trace


def test_attention_rows_come_in_chunks_that_add_up_to_the_whole(wide_model):
    scenario = LONG.replace(model=wide_model)
    ids = run_of(stamp(scenario)).prompt_ids
    model = engine(scenario).model
    c = model.config
    row_bytes = c.n_layer * c.n_head * len(ids) * 4
    chunks = list(transformer.attention_rows(model, ids, budget=10 * row_bytes))
    assert [q0 for q0, _ in chunks] == list(range(0, len(ids), 10))
    assert all(w.shape[0] <= 10 for _, tr in chunks for w in tr.values())
    _, trace = reference_scores(model, ids)
    for name in ("block_0_attn_head_0_weights", "block_11_attn_head_7_weights"):
        for q0, tr in chunks:  # rows q0.. see keys 0 .. their own position
            w = tr[name]
            np.testing.assert_allclose(w, trace[name][q0:q0 + len(w), :w.shape[1]], atol=1e-4)


def test_previous_token_scores_and_trace_summaries_match_one_pass(wide_model, monkeypatch):
    scenario = LONG.replace(model=wide_model)
    ids = run_of(stamp(scenario)).prompt_ids
    model = engine(scenario).model
    c = model.config
    monkeypatch.setattr(transformer, "ROWS_BYTES", 7 * c.n_layer * c.n_head * len(ids) * 4)  # 7 rows a chunk
    prev, trace = reference_scores(model, ids)
    np.testing.assert_allclose(previous_token_attention(model, ids), prev, atol=1e-6)
    summary = attention_summary(ids, model)
    assert len(summary) == 96
    for name in ("block_2_attn_head_3_weights", "block_9_attn_head_0_weights"):
        w = trace[name]
        ent = np.mean(-(w * np.log(w + 1e-12)).sum(axis=1))
        assert summary[name] == pytest.approx({"previous_token": round(float(np.mean(w[np.arange(1, len(ids)), np.arange(len(ids) - 1)])), 4),
                                               "first_token": round(float(w[:, 0].mean()), 4), "entropy": round(float(ent), 4)}, abs=2e-4)


def test_the_tutorial_finds_a_local_models_previous_token_head(client, wide_model):
    scenario = LONG.replace(model=wide_model)
    model = engine(scenario).model
    prev, _ = reference_scores(model, run_of(stamp(scenario)).prompt_ids)
    best = np.unravel_index(int(np.argmax(prev)), prev.shape)
    worst = np.unravel_index(int(np.argmin(prev)), prev.shape)
    blob = codec().encode(stamp(scenario))
    for (layer, head), done in ((best, True), (worst, False)):
        r = client.get("/tutorial/check/previous-token-head?" + urlencode({"s": blob, "layer": layer, "head": head}))
        assert r.status_code == 200 and r.json()["done"] is done, r.json()
