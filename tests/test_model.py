from pathlib import Path

import numpy as np
import pytest

from explainer.llm.interface import ContextWindowExceeded
from explainer.llm.layers import attend, softmax
from explainer.llm.model import load_model
from explainer.llm.tokenizer import load_tokenizer

GOLDEN = Path(__file__).parent / "golden" / "forward_logits.npz"
model = load_model()
tok = load_tokenizer()
IDS = tok.encode_chat("You are concise.", [("user", "What does the PostgreSQL planner do with an index?")])


def test_it_matches_logits_recorded_from_pytorch():
    """Golden file written by training/export.py from the shipped float16 weights run in PyTorch."""
    golden = np.load(GOLDEN)
    n = len([k for k in golden.files if k.startswith("ids_")])
    assert n >= 3
    worst = 0.0
    for i in range(n):
        ours = model.forward(golden[f"ids_{i}"]).logits
        worst = max(worst, float(np.abs(ours - golden[f"logits_{i}"]).max()))
    assert worst < 2e-3, f"max abs difference {worst}"


def test_kv_cache_decoding_equals_a_full_forward_pass():
    full = model.forward(IDS).logits
    cache = model.new_cache()
    first = model.forward(IDS[:5], cache=cache).logits
    rows = [first]
    for t in IDS[5:]:
        rows.append(model.forward([t], cache=cache).logits)
    np.testing.assert_allclose(np.concatenate(rows), full, atol=1e-4)
    assert cache.length == len(IDS)


def test_a_copied_cache_continues_like_the_original():
    cache = model.new_cache()
    model.forward(IDS[:-3], cache=cache)
    again = model.forward(IDS[-3:], cache=cache.copy()).logits
    np.testing.assert_allclose(again, model.forward(IDS).logits[-3:], atol=1e-4)


def test_vectorised_attention_equals_a_per_head_loop():
    rng = np.random.default_rng(0)
    h, T, S, hd = 4, 5, 9, 16
    q, k, v = rng.normal(size=(h, T, hd)), rng.normal(size=(h, S, hd)), rng.normal(size=(h, S, hd))
    start = S - T
    out, w = attend(q, k, v, start, 1.0 / np.sqrt(hd))
    for head in range(h):
        for i in range(T):
            visible = start + i + 1
            scores = k[head, :visible] @ q[head, i] / np.sqrt(hd)
            p = np.exp(scores - scores.max())
            p /= p.sum()
            np.testing.assert_allclose(w[head, i, :visible], p, atol=1e-12)
            assert np.all(w[head, i, visible:] == 0)
            np.testing.assert_allclose(out[head, i], p @ v[head, :visible], atol=1e-12)


def test_attention_rows_sum_to_one_and_the_mask_hides_the_future():
    trace = model.forward(IDS, want=("block_*_attn_head_*_weights",)).trace
    assert len(trace) == model.config.n_layer * model.config.n_head
    for w in trace.values():
        np.testing.assert_allclose(w.sum(axis=-1), 1.0, atol=1e-5)
        assert np.all(np.triu(w, k=1) == 0)
    # changing a later token never changes an earlier position's output
    changed = list(IDS)
    changed[-1] = (changed[-1] + 1) % model.config.vocab_size
    np.testing.assert_allclose(model.forward(changed).logits[:-1], model.forward(IDS).logits[:-1], atol=1e-5)


def test_it_returns_every_named_intermediate_on_request():
    c = model.config
    trace = model.forward(IDS, want=("*",)).trace
    T = len(IDS)
    assert trace["embedding"].shape == (T, c.d_model)
    np.testing.assert_allclose(trace["embedding"], trace["embedding_token"] + trace["embedding_position"])
    for l in range(c.n_layer):
        assert trace[f"block_{l}_mlp_hidden"].shape == (T, c.d_ff)
        np.testing.assert_allclose(trace[f"block_{l}_resid_mid"] + trace[f"block_{l}_mlp_out"], trace[f"block_{l}_resid_out"], atol=1e-4)
        assert trace[f"block_{l}_attn_head_0_weights"].shape == (T, T)
    np.testing.assert_allclose(trace["logits"], model.forward(IDS).logits)
    np.testing.assert_allclose(model.logit_lens(trace[f"block_{c.n_layer - 1}_resid_out"]), trace["logits"], atol=1e-3)
    assert model.forward(IDS).trace == {}  # nothing is collected unless asked for


def test_it_refuses_more_tokens_than_the_context_window():
    with pytest.raises(ContextWindowExceeded):
        model.forward([1] * (model.config.n_ctx + 1))


def test_softmax_is_stable_for_large_scores():
    p = softmax(np.array([1000.0, 1000.0, -1000.0]))
    np.testing.assert_allclose(p, [0.5, 0.5, 0.0])


def test_the_shipped_weights_are_small_enough_to_commit():
    from explainer.llm.model import WEIGHTS_PATH

    assert WEIGHTS_PATH.stat().st_size <= 20 * 1024 * 1024
    assert 1_000_000 <= model.n_params <= 20_000_000
