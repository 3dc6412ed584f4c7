"""A checkpoint's config.json, read into the few numbers the numpy forward passes need.

Two families are supported, with every option that changes their arithmetic either honoured
or refused (never silently ignored):

    gpt2    learned positions, LayerNorm, tanh-GELU, fused QKV; ``n_inner``, ``scale_attn_weights``
            and ``scale_attn_by_inverse_layer_idx`` honoured; cross-attention refused
    llama   RoPE, RMSNorm, SwiGLU, grouped-query attention (Llama, SmolLM2, TinyLlama); ``head_dim``,
            ``attention_bias`` (q/k/v/o biases) and ``mlp_bias`` honoured
    qwen2   the same with q/k/v biases; sliding-window attention refused

RoPE scaling: none, ``linear`` and ``llama3``, with the inverse frequencies computed as
transformers computes them (in float32). Both config formats are read: the classic one
(``rope_theta`` + ``rope_scaling``) and transformers 5's ``rope_parameters``.

Example:
    >>> from pathlib import Path
    >>> c = HFConfig.from_file(Path("tests/fixtures/models/tiny-llama/config.json"))
    >>> c.architecture, c.n_layer, c.n_head, c.n_kv_head, c.head_dim, c.tie_word_embeddings
    ('llama', 3, 4, 2, 16, True)
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from explainer.llm.hf.folder import ModelFolder, opened
from explainer.llm.interface import ModelLoadError

SUPPORTED = ("gpt2", "llama", "qwen2")
GELU_TANH = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")  # three names for 0.5x(1 + tanh(sqrt(2/pi)(x + 0.044715x^3)))
SILU = ("silu", "swish")
_MISSING = object()
# Ceilings on what a config may claim, checked before anything is sized by it: generous for real checkpoints
# (Llama 3.1 405B has 126 layers, hidden size 16,384, intermediate size 53,248 and 128 heads; Gemma's vocabulary
# is 256k; a few models read a million positions), and far below a claim that could make the loader allocate
# per claimed layer or row before the weights are compared (num_hidden_layers 10,000,000 with 3 layers of weights).
MAX_CONFIG_BYTES = 1 << 20  # real ones are 1 to 5 KB
MAX_LAYERS = 512
MAX_WIDTH = 65_536  # hidden_size / n_embd
MAX_FF = 262_144  # intermediate_size / n_inner
MAX_HEADS = 1_024  # attention heads and key/value heads
MAX_HEAD_DIM = 1_024
MAX_VOCAB = 1 << 22  # the tokenizer's own ceiling on token ids
MAX_POSITIONS = 1 << 24


@dataclass(frozen=True)
class RopeScaling:
    """How a checkpoint stretches RoPE's frequencies (``kind`` is "linear" or "llama3")."""

    kind: str
    factor: float
    low_freq_factor: float = 1.0  # llama3 only, as are the two below
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 0


@dataclass(frozen=True)
class HFConfig:
    """What the forward pass needs of config.json; satisfies ``explainer.llm.interface.Config``."""

    architecture: str  # "gpt2" | "llama" | "qwen2"
    vocab_size: int  # rows of the embedding (Qwen pads it above the tokenizer's size)
    max_position_embeddings: int  # the model's own context window
    n_ctx: int  # the window this app runs: min(max_position_embeddings, max_context)
    n_layer: int
    n_head: int
    n_kv_head: int  # key/value heads (grouped-query attention when below n_head)
    d_model: int
    d_ff: int
    head_dim: int
    norm_eps: float
    tie_word_embeddings: bool
    activation: str  # "gelu_new" (tanh GELU) or "silu"
    rope_theta: float | None = None  # RoPE models only
    rope_scaling: RopeScaling | None = None
    attention_bias: bool = False  # biases on q, k and v (Qwen2; Llama's attention_bias)
    o_bias: bool = False  # a bias on the attention output projection (Llama's attention_bias)
    mlp_bias: bool = False  # biases on gate/up/down (Llama's mlp_bias)
    attn_scale_by_layer: bool = False  # GPT-2's scale_attn_by_inverse_layer_idx
    attn_scale_weights: bool = True  # GPT-2's scale_attn_weights (False: no 1/sqrt(head_dim))

    @classmethod
    def from_file(cls, path: Path, max_context: int = 2048) -> HFConfig:
        """Read and check ``path`` (a config.json); raises ModelLoadError naming the key that is wrong."""
        path = Path(path)
        with opened(path.parent) as folder:
            return cls.from_folder(folder, max_context, path.name)

    @classmethod
    def from_folder(cls, folder: ModelFolder, max_context: int = 2048, name: str = "config.json") -> HFConfig:
        """Read and check the folder's config.json (never through a link, at most MAX_CONFIG_BYTES)."""
        text = folder.read_text(name, MAX_CONFIG_BYTES)
        try:
            data = json.loads(text)
        except ValueError as e:
            raise ModelLoadError(f"{name} is not valid JSON ({e}).") from None
        return cls.from_dict(data, max_context, name)

    @classmethod
    def from_dict(cls, data: Any, max_context: int = 2048, name: str = "config.json") -> HFConfig:
        """Check a config already read (``name`` is the file every error names)."""
        if not isinstance(data, dict):
            raise ModelLoadError(f"{name} must hold a JSON object, not {type(data).__name__}.")
        r = _Reader(name, data)
        model_type = r.get("model_type", str)
        if model_type not in SUPPORTED:
            raise ModelLoadError(f"{name}: model_type '{model_type}' is not supported (supported: {', '.join(SUPPORTED)}).")
        c = _gpt2(r) if model_type == "gpt2" else _llama(r, model_type)
        config = cls(n_ctx=min(c["max_position_embeddings"], max_context), **c)
        config._check(name)
        return config

    def _check(self, name: str) -> None:
        if self.head_dim < 1:
            raise ModelLoadError(f"{name}: hidden size {self.d_model} is smaller than its {self.n_head} attention heads.")
        if self.n_head % self.n_kv_head:
            raise ModelLoadError(f"{name}: {self.n_head} attention heads cannot share {self.n_kv_head} key/value heads evenly.")
        if self.architecture == "gpt2" and self.d_model % self.n_head:
            raise ModelLoadError(f"{name}: n_embd {self.d_model} is not a multiple of n_head {self.n_head}.")
        if self.rope_theta is not None and self.head_dim % 2:
            raise ModelLoadError(f"{name}: head_dim {self.head_dim} is odd, and rotary positions need an even one.")

    def inv_freq(self) -> np.ndarray:
        """RoPE's inverse frequencies [head_dim / 2], float32, as transformers computes them (with scaling)."""
        dim = self.head_dim
        inv = (1.0 / (np.float32(self.rope_theta) ** (np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim)))).astype(np.float32)
        s = self.rope_scaling
        if s is None:
            return inv
        if s.kind == "linear":
            return (inv / np.float32(s.factor)).astype(np.float32)
        # llama3: long wavelengths divided by the factor, short ones kept, the band between interpolated.
        old = s.original_max_position_embeddings
        low_wavelen, high_wavelen = old / s.low_freq_factor, old / s.high_freq_factor
        wavelen = np.float32(2 * math.pi) / inv
        scaled = np.where(wavelen > low_wavelen, inv / np.float32(s.factor), inv).astype(np.float32)
        smooth = ((np.float32(old) / wavelen - np.float32(s.low_freq_factor))
                  / np.float32(s.high_freq_factor - s.low_freq_factor)).astype(np.float32)
        smoothed = (1 - smooth) * scaled / np.float32(s.factor) + smooth * scaled
        medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
        return np.where(medium, smoothed, scaled).astype(np.float32)


class _Reader:
    """Typed access to config.json's keys, each failure one sentence naming the key."""

    def __init__(self, name: str, data: dict[str, Any]):
        self.name, self.data = name, data

    def get(self, key: str, kind: type, default: Any = _MISSING, section: dict[str, Any] | None = None, where: str = "",
            ceiling: int | None = None) -> Any:
        data = self.data if section is None else section
        label = f"{where}.{key}" if where else key
        if key not in data or data[key] is None:
            if default is _MISSING:
                raise ModelLoadError(f"{self.name}: the key '{label}' is missing.")
            return default
        value = data[key]
        if kind is int:
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ModelLoadError(f"{self.name}: '{label}' must be a positive integer, not {value!r}.")
            if ceiling is not None and value > ceiling:
                raise ModelLoadError(f"{self.name}: '{label}' is {value:,}, above the {ceiling:,} this app accepts "
                                     "(no real checkpoint it can run is that large).")
        elif kind is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ModelLoadError(f"{self.name}: '{label}' must be a positive number, not {value!r}.")
            value = float(value)
        elif not isinstance(value, kind):
            raise ModelLoadError(f"{self.name}: '{label}' must be a {kind.__name__}, not {value!r}.")
        return value


def _gpt2(r: _Reader) -> dict[str, Any]:
    if r.get("add_cross_attention", bool, False):
        raise ModelLoadError(f"{r.name}: add_cross_attention is true, and only decoder-only GPT-2 models are supported.")
    activation = r.get("activation_function", str, "gelu_new")
    if activation not in GELU_TANH:
        raise ModelLoadError(f"{r.name}: activation_function '{activation}' is not supported (supported: {', '.join(GELU_TANH)}).")
    d, h = r.get("n_embd", int, ceiling=MAX_WIDTH), r.get("n_head", int, ceiling=MAX_HEADS)
    return dict(
        architecture="gpt2", vocab_size=r.get("vocab_size", int, ceiling=MAX_VOCAB),
        max_position_embeddings=r.get("n_positions", int, ceiling=MAX_POSITIONS),
        n_layer=r.get("n_layer", int, ceiling=MAX_LAYERS), n_head=h, n_kv_head=h, d_model=d,
        d_ff=r.get("n_inner", int, 4 * d, ceiling=MAX_FF),
        head_dim=d // h, norm_eps=r.get("layer_norm_epsilon", float, 1e-5),
        tie_word_embeddings=r.get("tie_word_embeddings", bool, True), activation="gelu_new",
        attn_scale_by_layer=r.get("scale_attn_by_inverse_layer_idx", bool, False),
        attn_scale_weights=r.get("scale_attn_weights", bool, True),
    )


def _llama(r: _Reader, model_type: str) -> dict[str, Any]:
    activation = r.get("hidden_act", str, "silu")
    if activation not in SILU:
        raise ModelLoadError(f"{r.name}: hidden_act '{activation}' is not supported (supported: silu).")
    if model_type == "qwen2" and r.get("use_sliding_window", bool, False):
        raise ModelLoadError(f"{r.name}: use_sliding_window is true, and sliding-window attention is not supported.")
    if r.get("partial_rotary_factor", float, 1.0) != 1.0:
        raise ModelLoadError(f"{r.name}: partial_rotary_factor is not 1, and only full rotary heads are supported.")
    d, h = r.get("hidden_size", int, ceiling=MAX_WIDTH), r.get("num_attention_heads", int, ceiling=MAX_HEADS)
    max_pos = r.get("max_position_embeddings", int, ceiling=MAX_POSITIONS)
    theta, scaling = _rope(r, max_pos)
    qwen = model_type == "qwen2"
    bias = r.get("attention_bias", bool, False)
    return dict(
        architecture=model_type, vocab_size=r.get("vocab_size", int, ceiling=MAX_VOCAB), max_position_embeddings=max_pos,
        n_layer=r.get("num_hidden_layers", int, ceiling=MAX_LAYERS), n_head=h,
        n_kv_head=r.get("num_key_value_heads", int, h, ceiling=MAX_HEADS), d_model=d,
        d_ff=r.get("intermediate_size", int, ceiling=MAX_FF), head_dim=r.get("head_dim", int, d // h, ceiling=MAX_HEAD_DIM),
        norm_eps=r.get("rms_norm_eps", float, 1e-6), tie_word_embeddings=r.get("tie_word_embeddings", bool, False),
        activation="silu", rope_theta=theta, rope_scaling=scaling,
        attention_bias=qwen or bias, o_bias=bias and not qwen, mlp_bias=not qwen and r.get("mlp_bias", bool, False),
    )


def _rope(r: _Reader, max_pos: int) -> tuple[float, RopeScaling | None]:
    """RoPE's base and scaling, from ``rope_parameters`` (transformers 5) or ``rope_theta`` + ``rope_scaling``."""
    where = "rope_parameters" if r.data.get("rope_parameters") is not None else "rope_scaling"
    params = r.get(where, dict, {})
    theta = r.get("rope_theta", float, r.get("rope_theta", float, 10000.0), section=params, where=where)
    kind = params.get("rope_type", params.get("type", "default"))
    if kind == "default":
        return theta, None
    if kind not in ("linear", "llama3"):
        raise ModelLoadError(f"{r.name}: {where} type {kind!r} is not supported (supported: none, linear, llama3).")
    factor = r.get("factor", float, section=params, where=where)
    if kind == "linear":
        return theta, RopeScaling("linear", factor)
    low, high = (r.get(k, float, section=params, where=where) for k in ("low_freq_factor", "high_freq_factor"))
    if high <= low:
        raise ModelLoadError(f"{r.name}: {where}.high_freq_factor must exceed low_freq_factor.")
    old = r.get("original_max_position_embeddings", int, max_pos, section=params, where=where)
    return theta, RopeScaling("llama3", factor, low, high, old)
