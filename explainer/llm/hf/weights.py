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

A header is untrusted input too, and is read here before safetensors sees it: its 8-byte length
first (at most MAX_HEADER_BYTES), then its JSON (at most MAX_TENSORS tensors, counted while it is
parsed), then every tensor's dtype, shape and byte range, which must tile the file's data region
exactly. The layers the tensors hold are counted before anything is sized by the config's claim,
so a config claiming ten million layers over three layers of weights is one sentence, not an
allocation per claimed layer. Files are opened through :class:`~explainer.llm.hf.folder.ModelFolder`:
never through a link, never outside the folder.

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
import math
import os
import re
import struct
from pathlib import Path
from typing import Any

# Imported for its side effect: it registers bfloat16 with numpy, which safetensors' numpy reader
# needs (without it, get_tensor raises "data type 'bfloat16' not understood"); astype(float32) is
# then exact. Most Llama-family checkpoints on the Hub are stored in bfloat16.
import ml_dtypes  # noqa: F401
import numpy as np
from safetensors import SafetensorError, safe_open

from explainer.llm.hf.config import HFConfig
from explainer.llm.hf.folder import ModelFolder, fd_path, opened
from explainer.llm.interface import ModelLoadError

SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"
PREFIXES = ("model.", "transformer.")
FLOAT_DTYPES = {"F32", "F16", "BF16", "F64"}
# Bytes per element of every dtype the safetensors format defines.
DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
               "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
# Limits on what a weights header or index may claim, checked before it is parsed or handed on. Real headers
# are small (a 30-layer model's is about 30 KB, a 405B model's about 100 KB with 1,300 tensors; mixtures of
# experts reach tens of thousands of tensors); a header of a million tiny tensors cost 8 s and 1 GB to parse.
MAX_HEADER_BYTES = 16 << 20
MAX_TENSORS = 100_000
MAX_INDEX_BYTES = 16 << 20
MAX_SHARDS = 1_000
MAX_DIMS = 8
# Buffers some checkpoints carry that are not parameters: RoPE's inverse frequencies (recomputed
# from the config) and GPT-2's causal-mask buffers.
HARMLESS = re.compile(r"(?:.*\.)?(?:rotary_emb\.inv_freq|attn\.bias|attn\.masked_bias)")
LAYER = re.compile(r"(?:layers|h)\.(\d{1,9})\.")  # a block's tensors, by canonical name


def weight_files(folder: Path | ModelFolder) -> list[Path]:
    """The safetensors files holding the weights: ``model.safetensors``, else every shard the index names."""
    with opened(folder) as f:
        return [f.path / name for name in _weight_names(f)]


def _weight_names(f: ModelFolder) -> list[str]:
    if f.is_file(SINGLE):
        return [SINGLE]
    if not f.is_file(INDEX):
        raise ModelLoadError(f"{SINGLE} is missing (and there is no {INDEX}): the weights must be in safetensors format.")
    shards = sorted(set(_weight_map(f).values()))
    for shard in shards:
        if not f.is_file(shard):
            raise ModelLoadError(f"{INDEX} names the shard {shard}, which is missing.")
    return shards


def _weight_map(f: ModelFolder) -> dict[str, str]:
    try:
        data = json.loads(f.read_bytes(INDEX, MAX_INDEX_BYTES))
    except ModelLoadError:
        raise
    except (ValueError, RecursionError) as e:
        raise ModelLoadError(f"{INDEX} is not valid JSON ({e}).") from None
    mapping = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(mapping, dict) or not mapping:
        raise ModelLoadError(f"{INDEX} has no weight_map naming the shard of each tensor.")
    if len(mapping) > MAX_TENSORS:
        raise ModelLoadError(f"{INDEX} places {len(mapping):,} tensors; more than {MAX_TENSORS:,} are refused.")
    for name, shard in mapping.items():
        # A plain file name in the folder: an index must not point anywhere else on the disk.
        if not isinstance(shard, str) or Path(shard).name != shard or not shard.endswith(".safetensors"):
            raise ModelLoadError(f"{INDEX} places tensor {name} in {shard!r}, which is not a .safetensors file name.")
    if len(set(mapping.values())) > MAX_SHARDS:
        raise ModelLoadError(f"{INDEX} names {len(set(mapping.values())):,} shards; more than {MAX_SHARDS:,} are refused.")
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


def read_weights(folder: Path | ModelFolder, config: HFConfig) -> dict[str, np.ndarray]:
    """Every tensor the config implies, checked first, then read as contiguous float32 (names without prefix)."""
    with opened(folder) as f:
        return _read_weights(f, config)


def _read_weights(f: ModelFolder, config: HFConfig) -> dict[str, np.ndarray]:
    files = _weight_names(f)
    sharded = files[0] != SINGLE
    lack = f"the shards of {INDEX} lack" if sharded else f"{SINGLE} lacks"
    found: dict[str, tuple[str, str, tuple[int, ...], str]] = {}  # canonical name -> (file, stored name, shape, dtype)
    total = 0
    for file in files:
        header = _headers(f, file)
        total += len(header)
        if total > MAX_TENSORS:
            raise ModelLoadError(f"{file}: the weight files hold more than {MAX_TENSORS:,} tensors; more are refused.")
        for raw, (shape, dtype) in header.items():
            name = _canonical(raw)
            if name in found:
                raise ModelLoadError(f"{file} holds tensor {raw}, which {found[name][0]} holds already.")
            found[name] = (file, raw, shape, dtype)
    if sharded:
        stored = {raw: p for p, raw, _, _ in found.values()}
        for raw, shard in _weight_map(f).items():
            if stored.get(raw) != shard:
                raise ModelLoadError(f"{shard} lacks tensor {raw}, which {INDEX} places there.")

    # The config's claims against what the tensors hold, before anything is sized by a claim: a config that
    # claims more layers than the weights hold would otherwise build a table of every claimed layer's tensors.
    where = f"the shards of {INDEX} hold" if sharded else f"{SINGLE} holds"
    held = 1 + max((int(m.group(1)) for n in found if (m := LAYER.match(n))), default=-1)
    if config.n_layer > held:
        key = "n_layer" if config.architecture == "gpt2" else "num_hidden_layers"
        raise ModelLoadError(f"config.json's {key} is {config.n_layer:,}, but {where} tensors for {held:,} layers.")

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
            raise ModelLoadError(f"{path}: tensor {raw} has shape {list(stored_shape)}, but config.json implies {list(shape)}.")
        if dtype not in FLOAT_DTYPES:
            raise ModelLoadError(f"{path}: tensor {raw} is stored as {dtype}; only float32, float16 and bfloat16 are supported.")
    for name, (path, raw, _, _) in found.items():
        if name not in expected and not HARMLESS.fullmatch(name):
            raise ModelLoadError(f"{path} holds tensor {raw}, which config.json's {config.n_layer}-layer "
                                 f"{config.architecture} model does not have (do the config and the weights match?).")

    wanted = {n for n in expected if n in found and not (n == "lm_head.weight" and config.tie_word_embeddings)}
    out: dict[str, np.ndarray] = {}
    for file in files:
        names = [n for n in wanted if found[n][0] == file]
        if not names:
            continue
        try:
            with f.open(file) as fh, safe_open(fd_path(fh, f.path / file), framework="numpy") as st:
                for n in names:
                    out[n] = np.ascontiguousarray(st.get_tensor(found[n][1]), dtype=np.float32)
        except (SafetensorError, OSError) as e:
            raise ModelLoadError(f"{file} cannot be read ({e}).") from None
    return out


class _TooMany(Exception):
    pass


def _headers(f: ModelFolder, file: str) -> dict[str, tuple[tuple[int, ...], str]]:
    """Each tensor's shape and dtype, from the file's header, checked here before safetensors reads it: the
    header's length and tensor count against the limits, each tensor's byte range against its dtype and shape,
    and the ranges against the file (they tile its data region exactly). A truncated or foreign file fails here."""
    incomplete = f"{file} is not a complete safetensors file"
    with f.open(file) as fh:
        size = os.fstat(fh.fileno()).st_size
        prefix = fh.read(8)
        if len(prefix) < 8:
            raise ModelLoadError(f"{incomplete} ({size} bytes, shorter than the 8-byte length of its header).")
        n = struct.unpack("<Q", prefix)[0]
        if n > MAX_HEADER_BYTES:
            raise ModelLoadError(f"{file} has a header of {n:,} bytes; more than {MAX_HEADER_BYTES:,} are refused "
                                 "(a real one is well under a megabyte).")
        if 8 + n > size:
            raise ModelLoadError(f"{incomplete} (its header of {n:,} bytes runs past the end of the file's {size:,}).")
        raw = fh.read(n)
    # Every tensor's entry names its data_offsets: counting the key is a quick upper bound taken before the JSON
    # is parsed (parsing 100,000 entries takes a second on a slow machine); the exact count is kept below.
    if raw.count(b'"data_offsets"') > MAX_TENSORS:
        raise ModelLoadError(f"{file} holds more than {MAX_TENSORS:,} tensors; more are refused "
                             "(a real checkpoint holds a few thousand at most).")
    count = 0

    def counted(pairs: list[tuple[str, Any]]) -> dict[str, Any]:  # called once per JSON object, as it is parsed: a tensor's entry is one
        nonlocal count
        count += 1
        if count > MAX_TENSORS + 2:  # the tensors, the metadata and the header itself
            raise _TooMany
        return dict(pairs)

    try:
        header = json.loads(raw, object_pairs_hook=counted)
    except _TooMany:
        raise ModelLoadError(f"{file} holds more than {MAX_TENSORS:,} tensors; more are refused "
                             "(a real checkpoint holds a few thousand at most).") from None
    except (ValueError, RecursionError) as e:
        raise ModelLoadError(f"{incomplete} (its header is not valid JSON: {str(e)[:100]}).") from None
    if not isinstance(header, dict):
        raise ModelLoadError(f"{incomplete} (its header is not a JSON object).")
    header.pop("__metadata__", None)
    data_size = size - 8 - n
    spans, out = [], {}
    for name, entry in header.items():
        dtype = entry.get("dtype") if isinstance(entry, dict) else None
        shape = entry.get("shape") if isinstance(entry, dict) else None
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if (dtype not in DTYPE_BYTES or not isinstance(shape, list) or len(shape) > MAX_DIMS
                or not all(type(d) is int and d >= 0 for d in shape)
                or not isinstance(offsets, list) or len(offsets) != 2 or not all(type(o) is int for o in offsets)
                or not 0 <= offsets[0] <= offsets[1]):
            raise ModelLoadError(f"{incomplete} (the header's entry for tensor {name[:100]} is not a dtype, a shape "
                                 "and two data offsets).")
        if offsets[1] - offsets[0] != math.prod(shape) * DTYPE_BYTES[dtype]:
            raise ModelLoadError(f"{file}: tensor {name[:100]}'s data offsets span {offsets[1] - offsets[0]:,} bytes, "
                                 f"but a {dtype} tensor of shape {shape} takes {math.prod(shape) * DTYPE_BYTES[dtype]:,}.")
        spans.append((offsets[0], offsets[1], name))
        out[name] = (tuple(shape), dtype)
    end = 0
    for start, stop, name in sorted(spans):
        if start != end:
            raise ModelLoadError(f"{file}: tensor {name[:100]}'s data starts at byte {start:,} of the data, where the "
                                 f"tensor before it ends at {end:,} (the tensors must tile the data without gaps or overlaps).")
        end = stop
    if end != data_size:
        raise ModelLoadError(f"{incomplete} (its tensors need {end:,} bytes of data, and it holds {data_size:,}).")
    return out


def fingerprint(folder: Path | ModelFolder) -> str:
    """12 hex digits of a SHA-256 over the weight files' bytes, in name order (streamed, never all in memory)."""
    h = hashlib.sha256()
    with opened(folder) as f:
        for file in _weight_names(f):
            with f.open(file) as fh:
                while chunk := fh.read(1 << 20):
                    h.update(chunk)
    return h.hexdigest()[:12]
