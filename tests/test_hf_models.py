"""The numpy forward passes of Hugging Face checkpoints against transformers' own outputs.

tests/fixtures/models/ holds three tiny random checkpoints (GPT-2, SmolLM2-like Llama, Qwen2 with
q/k/v biases, an untied head, llama3 RoPE scaling and sharded weights) and, in golden.npz, what
transformers 5 computes on them in float32 (scripts/make_tiny_checkpoints.py). No torch here.

Tolerance: atol 2e-4 plus rtol 1e-3, float32 against float32 with a different summation order.
The worst differences seen are about 1e-4 on residual streams of magnitude 30 (relative 3e-6),
and 3e-5 on logits and 4e-6 on attention probabilities.
"""
from __future__ import annotations

import json
import re
import shutil
from functools import cache
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from explainer.llm.hf.cache import INITIAL_CAPACITY
from explainer.llm.hf.config import HFConfig
from explainer.llm.hf.gpt2 import GPT2Model
from explainer.llm.hf.llama import LlamaModel
from explainer.llm.hf.weights import fingerprint, read_weights
from explainer.llm.interface import Cache, Config, ContextWindowExceeded, LanguageModel, ModelLoadError

FIXTURES = Path(__file__).parent / "fixtures" / "models"
NAMES = ("tiny-gpt2", "tiny-llama", "tiny-qwen2")
ATOL, RTOL = 2e-4, 1e-3


def build(folder: Path, max_context: int = 2048) -> GPT2Model | LlamaModel:
    config = HFConfig.from_file(folder / "config.json", max_context=max_context)
    return (GPT2Model if config.architecture == "gpt2" else LlamaModel)(config, read_weights(folder, config))


@cache
def model(name: str) -> GPT2Model | LlamaModel:
    return build(FIXTURES / name)


@cache
def golden(name: str) -> dict[str, np.ndarray]:
    with np.load(FIXTURES / name / "golden.npz") as g:
        return {k: g[k] for k in g.files}


def close(what: str, ours: np.ndarray, theirs: np.ndarray) -> None:
    assert ours.shape == theirs.shape, f"{what}: shape {ours.shape} != {theirs.shape}"
    assert ours.dtype == np.float32, f"{what}: {ours.dtype}"
    np.testing.assert_allclose(ours, theirs, atol=ATOL, rtol=RTOL, err_msg=what)


def check_against_golden(name: str, logits: np.ndarray, trace: dict[str, np.ndarray]) -> None:
    """Every intermediate transformers exposes: hidden_states, each block's output, attentions, logits."""
    m, g = model(name), golden(name)
    L, rows = m.config.n_layer, g["rows"]
    close("hidden_states[0] / embedding", trace["embedding"], g["hidden_0"])
    for l in range(L - 1):
        close(f"hidden_states[{l + 1}] / block_{l}_resid_out", trace[f"block_{l}_resid_out"], g[f"hidden_{l + 1}"])
    # transformers returns the last hidden state after the final norm; the block's own output came from a hook.
    close(f"block_{L - 1}_resid_out", trace[f"block_{L - 1}_resid_out"], g["resid_out_last"])
    close(f"hidden_states[{L}] / final_ln", trace["final_ln"], g[f"hidden_{L}"])
    for l in range(L):
        ours = np.stack([trace[f"block_{l}_attn_head_{h}_weights"] for h in range(m.config.n_head)])
        close(f"attentions[{l}]", ours[:, rows], g[f"attn_{l}"])
    close("logits", logits[rows], g["logits"])


WANT = ("embedding", "block_*_resid_out", "block_*_attn_head_*_weights", "final_ln")


@pytest.mark.parametrize("name", NAMES)
def test_one_pass_matches_transformers(name):
    ids = golden(name)["ids"]
    assert len(ids) >= 200
    out = model(name).forward(ids, want=WANT)
    check_against_golden(name, out.logits, out.trace)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.slow
def test_prefill_then_one_token_at_a_time_matches_transformers(name):
    m, ids = model(name), golden(name)["ids"]
    T, n = len(ids), 40
    cache = m.new_cache()
    steps = [m.forward(ids[:n], cache=cache, want=WANT)]
    steps += [m.forward([t], cache=cache, want=WANT) for t in ids[n:]]
    assert cache.length == T and cache.capacity >= T > INITIAL_CAPACITY  # it grew past its first allocation
    trace = {k: np.concatenate([s.trace[k] for s in steps]) for k in steps[0].trace if "attn_head" not in k}
    for k in steps[0].trace:
        if "attn_head" in k:  # each step's row covers the keys so far: pad to the full prompt's width
            trace[k] = np.concatenate([np.pad(s.trace[k], ((0, 0), (0, T - s.trace[k].shape[1]))) for s in steps])
    check_against_golden(name, np.concatenate([s.logits for s in steps]), trace)


@pytest.mark.parametrize("name", NAMES)
def test_a_copied_cache_continues_like_the_original(name):
    m, ids = model(name), golden(name)["ids"]
    full = m.forward(ids).logits
    cache = m.new_cache()
    m.forward(ids[:150], cache=cache)
    short = cache.copy(100)
    assert (short.length, cache.length) == (100, 150)
    rest = m.forward(ids[100:], cache=short).logits  # several tokens after a prefix: the mask's offset
    np.testing.assert_allclose(rest, full[100:], atol=ATOL, rtol=RTOL)
    # Continuing the copy left the original alone.
    np.testing.assert_allclose(m.forward(ids[150:], cache=cache).logits, full[150:], atol=ATOL, rtol=RTOL)
    assert short.copy().length == len(ids) and short.copy(10_000).length == len(ids)


@pytest.mark.parametrize("name", NAMES)
def test_the_protocols_and_the_trace_names(name):
    m = model(name)
    assert isinstance(m, LanguageModel) and isinstance(m.config, Config) and isinstance(m.new_cache(), Cache)
    out = m.forward([3, 4, 5, 6])
    assert out.trace == {} and out.logits.dtype == np.float32 and out.logits.shape == (4, m.config.vocab_size)
    full = m.forward([3, 4, 5, 6], want=("*",)).trace
    assert all(v.dtype == np.float32 for v in full.values())  # nothing promoted to float64 on the way
    L, h = m.config.n_layer, m.config.n_head
    rope = m.config.architecture != "gpt2"
    per_block = {"ln_1", "attn_out", "resid_mid", "mlp_hidden", "mlp_out", "resid_out"} | {f"attn_head_{i}_weights" for i in range(h)}
    per_block |= {"attn_q_rotated", "attn_k_rotated"} if rope else set()
    expected = {"embedding_token", "embedding", "final_ln", "logits"} | ({"embedding_position"} if not rope else set())
    expected |= {f"block_{l}_{k}" for l in range(L) for k in per_block}
    assert set(full) == expected
    assert full["block_1_mlp_hidden"].shape == (4, m.config.d_ff) and full["block_0_attn_head_0_weights"].shape == (4, 4)
    if rope:
        hd = m.config.head_dim
        assert full["block_0_attn_q_rotated"].shape == (4, h * hd)
        assert full["block_0_attn_k_rotated"].shape == (4, m.config.n_kv_head * hd)
    np.testing.assert_allclose(m.logit_lens(full[f"block_{L - 1}_resid_out"]), full["logits"], atol=1e-5)
    assert set(m.forward([3, 4], want=("block_1_attn_head_*_weights", "logits")).trace) == {
        "logits", *(f"block_1_attn_head_{i}_weights" for i in range(h))}


@pytest.mark.parametrize("name", NAMES)
def test_building_takes_the_weights_over(name):
    """The model pops each tensor as it fuses or transposes it, so loading never holds two copies of the weights."""
    config = HFConfig.from_file(FIXTURES / name / "config.json")
    weights = read_weights(FIXTURES / name, config)
    n = sum(v.size for v in weights.values())
    m = (GPT2Model if config.architecture == "gpt2" else LlamaModel)(config, weights)
    assert weights == {} and m.n_params == n


def test_the_rope_inverse_frequencies_are_transformers(tmp_path):
    for name in ("tiny-llama", "tiny-qwen2"):  # plain, and llama3-scaled (all three of its wavelength bands)
        np.testing.assert_allclose(model(name).config.inv_freq(), golden(name)["inv_freq"], rtol=3e-7)
    data = json.loads((FIXTURES / "tiny-llama" / "config.json").read_text())
    data["rope_scaling"] = {"type": "linear", "factor": 2.0}
    (tmp_path / "config.json").write_text(json.dumps(data))
    np.testing.assert_allclose(HFConfig.from_file(tmp_path / "config.json").inv_freq(), golden("tiny-llama")["inv_freq_linear_2"], rtol=3e-7)


def test_the_config_fields():
    llama, qwen, gpt2 = (model(n).config for n in ("tiny-llama", "tiny-qwen2", "tiny-gpt2"))
    assert (llama.architecture, llama.n_kv_head, llama.tie_word_embeddings, llama.rope_theta, llama.rope_scaling) == ("llama", 2, True, 10000.0, None)
    assert (qwen.attention_bias, qwen.o_bias, qwen.tie_word_embeddings, qwen.rope_theta, qwen.rope_scaling.kind) == (True, False, False, 1e6, "llama3")
    assert (gpt2.n_kv_head, gpt2.d_ff, gpt2.head_dim, gpt2.max_position_embeddings, gpt2.rope_theta) == (4, 128, 16, 512, None)
    assert HFConfig.from_file(FIXTURES / "tiny-qwen2" / "config.json", max_context=100).n_ctx == 100
    assert qwen.vocab_size == 1024 > len(json.loads((FIXTURES / "tiny-qwen2" / "tokenizer.json").read_text())["model"]["vocab"]) + 3


def test_the_cache_grows_by_doubling_and_the_window_is_enforced():
    m = build(FIXTURES / "tiny-llama", max_context=200)
    ids = golden("tiny-llama")["ids"]
    cache = m.new_cache()
    assert cache.capacity == INITIAL_CAPACITY
    m.forward(ids[:INITIAL_CAPACITY], cache=cache)
    assert cache.capacity == INITIAL_CAPACITY
    m.forward(ids[INITIAL_CAPACITY:INITIAL_CAPACITY + 1], cache=cache)
    assert cache.capacity == 200  # doubling would pass the window: capped at n_ctx
    np.testing.assert_allclose(m.forward(ids[INITIAL_CAPACITY + 1:200], cache=cache).logits,
                               model("tiny-llama").forward(ids[:200]).logits[INITIAL_CAPACITY + 1:], atol=ATOL, rtol=RTOL)
    with pytest.raises(ContextWindowExceeded):
        m.forward([5], cache=cache)
    with pytest.raises(ContextWindowExceeded):
        m.forward(ids[:201])
    assert cache.copy(50).capacity == 50 and m.forward(ids[50:60], cache=cache.copy(50)).logits.shape == (10, 1000)
    with pytest.raises(ValueError, match="token ids"):
        m.forward([1000])


# ---- loader errors, each on a copy --------------------------------------------------------------------

def copy_of(name: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(FIXTURES / name, tmp_path / name))


def edit_config(folder: Path, change) -> None:
    data = json.loads((folder / "config.json").read_text())
    change(data)
    (folder / "config.json").write_text(json.dumps(data))


def open_folder(folder: Path):
    config = HFConfig.from_file(folder / "config.json")
    return read_weights(folder, config)


def test_an_unknown_model_type_is_refused(tmp_path):
    folder = copy_of("tiny-llama", tmp_path)
    edit_config(folder, lambda d: d.update(model_type="bert"))
    with pytest.raises(ModelLoadError, match=re.escape("config.json: model_type 'bert' is not supported (supported: gpt2, llama, qwen2)")):
        open_folder(folder)


@pytest.mark.parametrize("name,key", [("tiny-llama", "hidden_size"), ("tiny-gpt2", "n_embd"), ("tiny-qwen2", "model_type")])
def test_a_missing_config_key_is_named(tmp_path, name, key):
    folder = copy_of(name, tmp_path)
    edit_config(folder, lambda d: d.pop(key))
    with pytest.raises(ModelLoadError, match=f"config.json: the key '{key}' is missing"):
        open_folder(folder)


@pytest.mark.parametrize("change,message", [
    (lambda d: d.update(num_attention_heads="four"), "'num_attention_heads' must be a positive integer"),
    (lambda d: d.update(num_key_value_heads=3), "4 attention heads cannot share 3 key/value heads"),
    (lambda d: d.update(rope_scaling={"rope_type": "yarn", "factor": 4.0}), "rope_scaling type 'yarn' is not supported"),
    (lambda d: d.update(rope_scaling={"rope_type": "llama3", "factor": 4.0}), "the key 'rope_scaling.low_freq_factor' is missing"),
    (lambda d: d.update(hidden_act="gelu"), "hidden_act 'gelu' is not supported"),
])
def test_unsupported_or_inconsistent_configs_are_refused(tmp_path, change, message):
    folder = copy_of("tiny-llama", tmp_path)
    edit_config(folder, change)
    with pytest.raises(ModelLoadError, match=re.escape(message)):
        open_folder(folder)


def test_qwen2_sliding_window_is_refused(tmp_path):
    folder = copy_of("tiny-qwen2", tmp_path)
    edit_config(folder, lambda d: d.update(use_sliding_window=True, sliding_window=64))
    with pytest.raises(ModelLoadError, match="use_sliding_window is true"):
        open_folder(folder)


def test_a_truncated_weight_file_is_named(tmp_path):
    folder = copy_of("tiny-llama", tmp_path)
    path = folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(ModelLoadError, match=r"^model\.safetensors is not a complete safetensors file"):
        open_folder(folder)


def test_a_truncated_shard_is_named(tmp_path):
    folder = copy_of("tiny-qwen2", tmp_path)
    path = folder / "model-00002-of-00003.safetensors"
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(ModelLoadError, match=r"^model-00002-of-00003\.safetensors is not a complete safetensors file"):
        open_folder(folder)


def rewrite(folder: Path, change) -> None:
    path = folder / "model.safetensors"
    tensors = load_file(path)
    change(tensors)
    save_file(tensors, path, metadata={"format": "pt"})


def test_a_tensor_of_the_wrong_shape_is_named(tmp_path):
    folder = copy_of("tiny-llama", tmp_path)
    rewrite(folder, lambda t: t.update({"model.layers.1.self_attn.k_proj.weight": np.zeros((64, 64), np.float32)}))
    with pytest.raises(ModelLoadError, match=re.escape(
            "model.safetensors: tensor model.layers.1.self_attn.k_proj.weight has shape [64, 64], but config.json implies [32, 64].")):
        open_folder(folder)


def test_a_missing_tensor_is_named(tmp_path):
    folder = copy_of("tiny-llama", tmp_path)
    rewrite(folder, lambda t: t.pop("model.layers.2.mlp.up_proj.weight"))
    with pytest.raises(ModelLoadError, match=re.escape("model.safetensors lacks tensor model.layers.2.mlp.up_proj.weight")):
        open_folder(folder)


def test_an_unexpected_tensor_is_named_but_harmless_buffers_pass(tmp_path):
    folder = copy_of("tiny-llama", tmp_path)
    rewrite(folder, lambda t: t.update({"model.layers.0.self_attn.rotary_emb.inv_freq": np.ones(8, np.float32),
                                        "lm_head.weight": t["model.embed_tokens.weight"]}))  # tied, yet stored
    assert "lm_head.weight" not in open_folder(folder)
    rewrite(folder, lambda t: t.update({"model.layers.3.mlp.up_proj.weight": np.zeros((128, 64), np.float32)}))
    with pytest.raises(ModelLoadError, match=re.escape("model.safetensors holds tensor model.layers.3.mlp.up_proj.weight, "
                                                       "which config.json's 3-layer llama model does not have")):
        open_folder(folder)


def test_a_missing_shard_is_named(tmp_path):
    folder = copy_of("tiny-qwen2", tmp_path)
    (folder / "model-00003-of-00003.safetensors").unlink()
    with pytest.raises(ModelLoadError, match=re.escape("model.safetensors.index.json names the shard model-00003-of-00003.safetensors, which is missing.")):
        open_folder(folder)


def test_an_index_that_misplaces_a_tensor_or_leaves_the_folder_is_refused(tmp_path):
    folder = copy_of("tiny-qwen2", tmp_path)
    index = folder / "model.safetensors.index.json"
    data = json.loads(index.read_text())
    elsewhere = next(s for s in sorted(set(data["weight_map"].values())) if s != data["weight_map"]["model.norm.weight"])
    data["weight_map"]["model.norm.weight"] = elsewhere
    index.write_text(json.dumps(data))
    with pytest.raises(ModelLoadError, match="lacks tensor model.norm.weight, which model.safetensors.index.json places there"):
        open_folder(folder)
    data["weight_map"]["model.norm.weight"] = "../../elsewhere.safetensors"
    index.write_text(json.dumps(data))
    with pytest.raises(ModelLoadError, match="not a .safetensors file name"):
        open_folder(folder)


def test_a_weight_file_missing_altogether_is_named(tmp_path):
    folder = copy_of("tiny-llama", tmp_path)
    (folder / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="model.safetensors is missing"):
        open_folder(folder)


def test_integer_weights_are_refused(tmp_path):
    folder = copy_of("tiny-gpt2", tmp_path)
    rewrite(folder, lambda t: t.update({"transformer.ln_f.bias": np.zeros(64, np.int8)}))
    with pytest.raises(ModelLoadError, match="tensor transformer.ln_f.bias is stored as I8"):
        open_folder(folder)


@pytest.mark.parametrize("dtype", [ml_dtypes.bfloat16, np.float16])
def test_half_precision_weights_are_read_as_float32(tmp_path, dtype):
    folder = copy_of("tiny-llama", tmp_path)
    rewrite(folder, lambda t: t.update({k: v.astype(dtype) for k, v in t.items()}))
    ours = open_folder(folder)
    ref = open_folder(FIXTURES / "tiny-llama")
    for k, v in ours.items():
        assert v.dtype == np.float32 and v.flags.c_contiguous
        np.testing.assert_array_equal(v, ref[k].astype(dtype).astype(np.float32))
    rounded = LlamaModel(HFConfig.from_file(folder / "config.json"), ours).forward(golden("tiny-llama")["ids"][:50]).logits
    assert np.abs(rounded - model("tiny-llama").forward(golden("tiny-llama")["ids"][:50]).logits).max() < 0.5


def test_llama_attention_and_mlp_biases_are_read(tmp_path):
    folder = copy_of("tiny-llama", tmp_path)
    edit_config(folder, lambda d: d.update(attention_bias=True, mlp_bias=True))
    sizes = {"self_attn.q_proj": 64, "self_attn.k_proj": 32, "self_attn.v_proj": 32, "self_attn.o_proj": 64,
             "mlp.gate_proj": 128, "mlp.up_proj": 128, "mlp.down_proj": 64}
    rewrite(folder, lambda t: t.update({f"model.layers.{l}.{k}.bias": np.zeros(n, np.float32) for l in range(3) for k, n in sizes.items()}))
    m = build(folder)
    assert (m.config.attention_bias, m.config.o_bias, m.config.mlp_bias) == (True, True, True)
    ids = golden("tiny-llama")["ids"][:20]
    np.testing.assert_array_equal(m.forward(ids).logits, model("tiny-llama").forward(ids).logits)


def test_the_errors_are_value_errors_and_one_sentence(tmp_path):
    folder = copy_of("tiny-qwen2", tmp_path)
    (folder / "model-00001-of-00003.safetensors").unlink()
    with pytest.raises(ValueError) as e:
        open_folder(folder)
    assert isinstance(e.value, ModelLoadError) and str(e.value).count(". ") == 0 and str(e.value).endswith(".")


def test_the_fingerprint_is_over_the_weight_bytes(tmp_path):
    fp = fingerprint(FIXTURES / "tiny-qwen2")
    assert re.fullmatch(r"[0-9a-f]{12}", fp) and fp == fingerprint(FIXTURES / "tiny-qwen2")
    assert len({fp, fingerprint(FIXTURES / "tiny-llama"), fingerprint(FIXTURES / "tiny-gpt2")}) == 3
    folder = copy_of("tiny-qwen2", tmp_path)
    edit_config(folder, lambda d: d.update(rms_norm_eps=1e-5))
    assert fingerprint(folder) == fp  # only the weights count
    shard = folder / "model-00003-of-00003.safetensors"
    data = bytearray(shard.read_bytes())
    data[-1] ^= 1
    shard.write_bytes(bytes(data))
    assert fingerprint(folder) != fp
