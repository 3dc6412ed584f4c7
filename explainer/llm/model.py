"""The bundled decoder-only transformer: a forward pass in numpy with a KV cache.

Architecture (GPT-2 style): token + learned position embeddings, ``n_layer`` pre-LayerNorm
blocks (causal multi-head self-attention, then a tanh-GELU MLP, each added to the
residual stream), a final LayerNorm, and the token embedding reused as the output layer.

Intermediates are returned by name when asked for, never captured by side effect.
The naming scheme (shapes for T new tokens, S = cached + new keys, d = d_model):

    embedding_token                    [T, d]   rows of the token embedding matrix
    embedding_position                 [T, d]   rows of the position embedding matrix
    embedding                          [T, d]   their sum: the residual stream entering block 0
    block_{l}_ln_1                     [T, d]   LayerNorm before attention
    block_{l}_attn_head_{h}_weights    [T, S]   attention probabilities (rows sum to 1)
    block_{l}_attn_out                 [T, d]   attention output after the projection
    block_{l}_resid_mid                [T, d]   residual stream after attention
    block_{l}_mlp_hidden               [T, d_ff] MLP activations after GELU
    block_{l}_mlp_out                  [T, d]   MLP output
    block_{l}_resid_out                [T, d]   residual stream leaving the block
    final_ln                           [T, d]   after the final LayerNorm
    logits                             [T, V]   next-token scores

Ask with glob patterns: ``model.forward(ids, want=("block_*_attn_head_*_weights",))``.

Example:
    >>> model = load_model()
    >>> out = model.forward([257, 72, 105], want=("embedding",))
    >>> out.logits.shape, out.trace["embedding"].shape
    ((3, 4096), (3, 256))
"""
from __future__ import annotations

import fnmatch
import json
import math
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from explainer.llm import budget
from explainer.llm.interface import ContextWindowExceeded

WEIGHTS_PATH = Path(__file__).resolve().parent / "weights" / "model.npz"


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = 4096
    n_ctx: int = 512
    n_layer: int = 4
    n_head: int = 4
    d_model: int = 256
    d_ff: int = 1024
    ln_eps: float = 1e-5

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head


@dataclass
class KVCache:
    """Keys and values of every layer for the tokens seen so far: ``k[l]`` is [n_head, n_ctx, head_dim]."""

    config: ModelConfig
    k: list[np.ndarray] = field(default_factory=list)
    v: list[np.ndarray] = field(default_factory=list)
    length: int = 0

    def __post_init__(self) -> None:
        c = self.config
        if not self.k:
            shape = (c.n_head, c.n_ctx, c.head_dim)
            self.k = [np.zeros(shape, np.float32) for _ in range(c.n_layer)]
            self.v = [np.zeros(shape, np.float32) for _ in range(c.n_layer)]

    def copy(self, length: int | None = None) -> "KVCache":
        """An independent cache holding the first ``length`` positions (all by default)."""
        n = self.length if length is None else min(length, self.length)
        new = KVCache(self.config)
        for l in range(self.config.n_layer):
            new.k[l][:, :n] = self.k[l][:, :n]
            new.v[l][:, :n] = self.v[l][:, :n]
        new.length = n
        return new


@dataclass
class ForwardResult:
    logits: np.ndarray  # [T, V]
    cache: KVCache
    trace: dict[str, np.ndarray]


def layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    d = x - x.mean(axis=-1, keepdims=True)
    var = (d * d).mean(axis=-1, keepdims=True)  # the same as x.var(), without centring twice
    return d / np.sqrt(var + eps) * w + b


def gelu(x: np.ndarray) -> np.ndarray:
    """tanh approximation, as ``torch.nn.functional.gelu(approximate="tanh")``."""
    return 0.5 * x * (1.0 + np.tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)))


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))  # subtract the max for stability
    return e / e.sum(axis=axis, keepdims=True)


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, start: int) -> tuple[np.ndarray, np.ndarray]:
    """Causal attention of T new queries over S keys, all heads at once.

    q: [h, T, hd], k and v: [h, S, hd]; query i sits at position ``start + i`` and sees keys 0..start+i.
    Returns (output [h, T, hd], weights [h, T, S]).
    """
    T, S = q.shape[1], k.shape[1]
    # A Python float, not np.sqrt(...): a float64 numpy scalar would promote the whole pass to float64
    # (NumPy 2 promotion rules), and every later product would convert its weights on the fly.
    scores = q @ k.transpose(0, 2, 1) * (1.0 / math.sqrt(q.shape[-1]))  # [h, T, S]
    if T > 1:
        future = np.arange(S)[None, :] > (start + np.arange(T))[:, None]  # [T, S]
        scores = np.where(future, -np.inf, scores)
    w = softmax(scores)
    return w @ v, w


class TinyTransformer:
    """Forward pass of the bundled model over numpy weights (float32 in memory)."""

    def __init__(self, config: ModelConfig, weights: dict[str, np.ndarray]):
        self.config = config
        self.w = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in weights.items()}
        self.lm_head = np.ascontiguousarray(self.w["wte.weight"].T)  # [d, V], tied to the input embedding
        # Per-layer weights looked up once, not by building names on every token.
        self.blocks = [{k.split(".", 2)[2]: v for k, v in self.w.items() if k.startswith(f"blocks.{l}.")} for l in range(config.n_layer)]
        self.n_params = sum(v.size for v in weights.values())

    def new_cache(self) -> KVCache:
        return KVCache(self.config)

    def forward(self, ids, cache: KVCache | None = None, want: tuple[str, ...] = ()) -> ForwardResult:
        """Run ``ids`` (the new tokens) after whatever ``cache`` holds; returns logits for every new token."""
        c, w = self.config, self.w
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        cache = cache if cache is not None else self.new_cache()
        start, T = cache.length, len(ids)
        if T == 0:
            raise ValueError("forward needs at least one token")
        if start + T > c.n_ctx:
            raise ContextWindowExceeded(f"{start + T} tokens do not fit the context window of {c.n_ctx}")
        if ids.min() < 0 or ids.max() >= c.vocab_size:
            raise ValueError(f"token ids must be in 0..{c.vocab_size - 1}")

        trace: dict[str, np.ndarray] = {}
        collect = bool(want)  # decoding asks for nothing: skip even building the names

        def keep(name: str, value) -> None:
            if any(fnmatch.fnmatchcase(name, p) for p in want):
                trace[name] = value

        h, hd, d, end = c.n_head, c.head_dim, c.d_model, start + T
        tok, pos = w["wte.weight"][ids], w["wpe.weight"][start:end]  # [T, d] each
        x = tok + pos
        if collect:
            keep("embedding_token", tok)
            keep("embedding_position", pos)
            keep("embedding", x)
        for l, b in enumerate(self.blocks):
            budget.check()  # a cancelled or overdue run stops here, between layers
            a = layer_norm(x, b["ln_1.weight"], b["ln_1.bias"], c.ln_eps)
            qkv = a @ b["attn.qkv.weight"]  # [T, d] -> [T, 3d]
            q, k, v = (qkv[:, i * d:(i + 1) * d].reshape(T, h, hd).transpose(1, 0, 2) for i in range(3))  # [h, T, hd]
            cache.k[l][:, start:end] = k
            cache.v[l][:, start:end] = v
            y, att = attention(q, cache.k[l][:, :end], cache.v[l][:, :end], start)  # [h, T, hd], [h, T, S]
            y = y.transpose(1, 0, 2).reshape(T, d) @ b["attn.proj.weight"]  # [T, d]
            x_mid = x + y
            hidden = gelu(layer_norm(x_mid, b["ln_2.weight"], b["ln_2.bias"], c.ln_eps) @ b["mlp.fc.weight"])  # [T, d_ff]
            m = hidden @ b["mlp.proj.weight"]  # [T, d]
            if collect:
                keep(f"block_{l}_ln_1", a)
                for hi in range(h):
                    keep(f"block_{l}_attn_head_{hi}_weights", att[hi])
                keep(f"block_{l}_attn_out", y)
                keep(f"block_{l}_resid_mid", x_mid)
                keep(f"block_{l}_mlp_hidden", hidden)
                keep(f"block_{l}_mlp_out", m)
            x = x_mid + m
            if collect:
                keep(f"block_{l}_resid_out", x)
        cache.length = end
        x = layer_norm(x, w["ln_f.weight"], w["ln_f.bias"], c.ln_eps)
        logits = x @ self.lm_head  # [T, V]
        if collect:
            keep("final_ln", x)
            keep("logits", logits)
        return ForwardResult(logits, cache, trace)

    def logit_lens(self, resid: np.ndarray) -> np.ndarray:
        """Decode a residual-stream state [.., d] straight to vocabulary scores through the final LayerNorm."""
        c, w = self.config, self.w
        return layer_norm(resid, w["ln_f.weight"], w["ln_f.bias"], c.ln_eps) @ self.lm_head

    # ---- persistence ---------------------------------------------------------------
    def save(self, path: Path = WEIGHTS_PATH, meta: dict | None = None) -> None:
        arrays = {k: v.astype(np.float16) for k, v in self.w.items()}
        arrays["__config__"] = np.frombuffer(json.dumps(asdict(self.config)).encode(), dtype=np.uint8)
        arrays["__meta__"] = np.frombuffer(json.dumps(meta or {}).encode(), dtype=np.uint8)
        np.savez_compressed(path, **arrays)


def read_weights(path: Path = WEIGHTS_PATH) -> tuple[ModelConfig, dict[str, np.ndarray], dict]:
    with np.load(path) as data:
        config = ModelConfig(**json.loads(bytes(data["__config__"]).decode()))
        meta = json.loads(bytes(data["__meta__"]).decode()) if "__meta__" in data else {}
        weights = {k: data[k] for k in data.files if not k.startswith("__")}
    return config, weights, meta


@lru_cache(maxsize=2)
def load_model(path: Path = WEIGHTS_PATH) -> TinyTransformer:
    config, weights, _ = read_weights(path)
    return TinyTransformer(config, weights)
