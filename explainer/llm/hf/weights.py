"""A checkpoint's safetensors weights: found, checked against the config, then read as float32.

``read_weights(folder, config)`` accepts a single ``model.safetensors`` or a sharded
``model.safetensors.index.json`` with its shards, and checks everything before it reads a
single tensor: every shard the index names exists and opens (a truncated file fails here),
each tensor sits in the shard the index says, every tensor the config implies is present with
the shape it implies, and nothing else is there but harmless buffers. Each problem is one
sentence naming the file. Names are accepted with or without the ``model.`` / ``transformer.``
prefix and returned without it (``layers.0.self_attn.q_proj.weight``, ``h.0.attn.c_attn.weight``);
``lm_head.weight`` is returned only when the head is not tied to the embedding.

Tensors stored as float16 or bfloat16 are converted to float32 (the forward passes compute in
float32 only).

Example:
    >>> from pathlib import Path
    >>> from explainer.llm.hf.config import HFConfig
    >>> folder = Path("tests/fixtures/models/tiny-qwen2")
    >>> w = read_weights(folder, HFConfig.from_file(folder / "config.json"))
    >>> w["layers.0.self_attn.k_proj.weight"].shape, w["lm_head.weight"].dtype
    ((32, 64), dtype('float32'))
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

# Imported for its side effect: it registers bfloat16 with numpy, which safetensors' numpy reader
# needs (without it, get_tensor raises "data type 'bfloat16' not understood"); astype(float32) is
# then exact. Most Llama-family checkpoints on the Hub are stored in bfloat16.
import ml_dtypes  # noqa: F401
import numpy as np
from safetensors import SafetensorError, safe_open

from explainer.llm.hf.config import HFConfig
from explainer.llm.hf.errors import ModelLoadError

SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"
PREFIXES = ("model.", "transformer.")
FLOAT_DTYPES = {"F32", "F16", "BF16", "F64"}
# Buffers some checkpoints carry that are not parameters: RoPE's inverse frequencies (recomputed
# from the config) and GPT-2's causal-mask buffers.
HARMLESS = re.compile(r"(?:.*\.)?(?:rotary_emb\.inv_freq|attn\.bias|attn\.masked_bias)")


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files holding the weights: ``model.safetensors``, else every shard the index names."""
    folder = Path(folder)
    if (folder / SINGLE).is_file():
        return [folder / SINGLE]
    index = folder / INDEX
    if not index.is_file():
        raise ModelLoadError(f"{SINGLE} is missing (and there is no {INDEX}): the weights must be in safetensors format.")
    shards = sorted(set(_weight_map(index).values()))
    for shard in shards:
        if not (folder / shard).is_file():
            raise ModelLoadError(f"{INDEX} names the shard {shard}, which is missing.")
    return [folder / s for s in shards]


def _weight_map(index: Path) -> dict[str, str]:
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
    except OSError as e:
        raise ModelLoadError(f"{INDEX} cannot be read ({e.strerror or e}).") from None
    except ValueError as e:
        raise ModelLoadError(f"{INDEX} is not valid JSON ({e}).") from None
    mapping = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(mapping, dict) or not mapping:
        raise ModelLoadError(f"{INDEX} has no weight_map naming the shard of each tensor.")
    for name, shard in mapping.items():
        # A plain file name in the folder: an index must not point anywhere else on the disk.
        if not isinstance(shard, str) or Path(shard).name != shard or not shard.endswith(".safetensors"):
            raise ModelLoadError(f"{INDEX} places tensor {name} in {shard!r}, which is not a .safetensors file name.")
    return mapping


def expected_shapes(c: HFConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor the config implies, by name without prefix, with its shape as stored."""
    d, f, V = c.d_model, c.d_ff, c.vocab_size
    shapes: dict[str, tuple[int, ...]] = {}
    if c.architecture == "gpt2":
        shapes |= {"wte.weight": (V, d), "wpe.weight": (c.max_position_embeddings, d), "ln_f.weight": (d,), "ln_f.bias": (d,)}
        for l in range(c.n_layer):
            p = f"h.{l}."
            # Conv1D stores its weight [in, out], the transpose of nn.Linear's.
            shapes |= {p + "ln_1.weight": (d,), p + "ln_1.bias": (d,), p + "ln_2.weight": (d,), p + "ln_2.bias": (d,),
                       p + "attn.c_attn.weight": (d, 3 * d), p + "attn.c_attn.bias": (3 * d,),
                       p + "attn.c_proj.weight": (d, d), p + "attn.c_proj.bias": (d,),
                       p + "mlp.c_fc.weight": (d, f), p + "mlp.c_fc.bias": (f,),
                       p + "mlp.c_proj.weight": (f, d), p + "mlp.c_proj.bias": (d,)}
    else:
        q, kv = c.n_head * c.head_dim, c.n_kv_head * c.head_dim
        shapes |= {"embed_tokens.weight": (V, d), "norm.weight": (d,)}
        for l in range(c.n_layer):
            p = f"layers.{l}."
            # nn.Linear stores its weight [out, in].
            shapes |= {p + "input_layernorm.weight": (d,), p + "post_attention_layernorm.weight": (d,),
                       p + "self_attn.q_proj.weight": (q, d), p + "self_attn.k_proj.weight": (kv, d),
                       p + "self_attn.v_proj.weight": (kv, d), p + "self_attn.o_proj.weight": (d, q),
                       p + "mlp.gate_proj.weight": (f, d), p + "mlp.up_proj.weight": (f, d), p + "mlp.down_proj.weight": (d, f)}
            if c.attention_bias:
                shapes |= {p + "self_attn.q_proj.bias": (q,), p + "self_attn.k_proj.bias": (kv,), p + "self_attn.v_proj.bias": (kv,)}
            if c.o_bias:
                shapes[p + "self_attn.o_proj.bias"] = (d,)
            if c.mlp_bias:
                shapes |= {p + "mlp.gate_proj.bias": (f,), p + "mlp.up_proj.bias": (f,), p + "mlp.down_proj.bias": (d,)}
    shapes["lm_head.weight"] = (V, d)
    return shapes


def _canonical(name: str) -> str:
    for prefix in PREFIXES:
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def read_weights(folder: Path, config: HFConfig) -> dict[str, np.ndarray]:
    """Every tensor the config implies, checked first, then read as contiguous float32 (names without prefix)."""
    folder = Path(folder)
    files = weight_files(folder)
    sharded = files[0].name != SINGLE
    lack = f"the shards of {INDEX} lack" if sharded else f"{SINGLE} lacks"
    found: dict[str, tuple[Path, str, tuple[int, ...], str]] = {}  # canonical name -> (file, stored name, shape, dtype)
    for path in files:
        for raw, (shape, dtype) in _headers(path).items():
            name = _canonical(raw)
            if name in found:
                raise ModelLoadError(f"{path.name} holds tensor {raw}, which {found[name][0].name} holds already.")
            found[name] = (path, raw, shape, dtype)
    if sharded:
        stored = {raw: p.name for p, raw, _, _ in found.values()}
        for raw, shard in _weight_map(folder / INDEX).items():
            if stored.get(raw) != shard:
                raise ModelLoadError(f"{shard} lacks tensor {raw}, which {INDEX} places there.")

    expected = expected_shapes(config)
    prefix = next((p for p in PREFIXES if any(raw.startswith(p) for _, raw, _, _ in found.values())), "")
    for name, shape in expected.items():
        if name not in found:
            if name == "lm_head.weight" and config.tie_word_embeddings:
                continue
            raise ModelLoadError(f"{lack} tensor {'' if name == 'lm_head.weight' else prefix}{name}, "
                                 f"which config.json's {config.n_layer}-layer {config.architecture} model needs.")
        path, raw, stored_shape, dtype = found[name]
        if stored_shape != shape:
            raise ModelLoadError(f"{path.name}: tensor {raw} has shape {list(stored_shape)}, but config.json implies {list(shape)}.")
        if dtype not in FLOAT_DTYPES:
            raise ModelLoadError(f"{path.name}: tensor {raw} is stored as {dtype}; only float32, float16 and bfloat16 are supported.")
    for name, (path, raw, _, _) in found.items():
        if name not in expected and not HARMLESS.fullmatch(name):
            raise ModelLoadError(f"{path.name} holds tensor {raw}, which config.json's {config.n_layer}-layer "
                                 f"{config.architecture} model does not have (do the config and the weights match?).")

    wanted = {n for n in expected if n in found and not (n == "lm_head.weight" and config.tie_word_embeddings)}
    out: dict[str, np.ndarray] = {}
    for path in files:
        names = [n for n in wanted if found[n][0] == path]
        if not names:
            continue
        try:
            with safe_open(str(path), framework="numpy") as fh:
                for n in names:
                    out[n] = np.ascontiguousarray(fh.get_tensor(found[n][1]), dtype=np.float32)
        except (SafetensorError, OSError) as e:
            raise ModelLoadError(f"{path.name} cannot be read ({e}).") from None
    return out


def _headers(path: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """Each tensor's shape and dtype, from the file's header; a truncated or foreign file fails here."""
    try:
        with safe_open(str(path), framework="numpy") as fh:
            return {k: (tuple(fh.get_slice(k).get_shape()), fh.get_slice(k).get_dtype()) for k in fh.keys()}
    except (SafetensorError, OSError) as e:
        raise ModelLoadError(f"{path.name} is not a complete safetensors file ({e}).") from None


def fingerprint(folder: Path) -> str:
    """12 hex digits of a SHA-256 over the weight files' bytes, in name order (streamed, never all in memory)."""
    h = hashlib.sha256()
    for path in weight_files(folder):
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()[:12]
