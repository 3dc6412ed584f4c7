"""The GPT-2 family in numpy: GPT-2 checkpoints, and the bundled model (a GPT-2-style checkpoint without biases).

Token + learned position embeddings, ``n_layer`` pre-LayerNorm blocks (causal multi-head
attention through a fused QKV projection, then a tanh-GELU MLP), a final LayerNorm and a head
(tied to the token embedding unless the config unties it). Conv1D weights are stored [in, out]
already, so the hot path is ``x @ W + b`` with the file's own matrices.

The bundled model is loaded into this class too (``explainer.llm.model`` turns its file into GPT-2's
tensor names, with zero biases where it has none), so there is one forward pass for the family.
The weight matrices are :class:`~explainer.llm.layers.Dense` (a zero bias is dropped, so the bundled
model pays no additions for biases it does not have). The trace names are those of
``explainer.llm.interface``.

Example:
    >>> from pathlib import Path
    >>> from explainer.llm.hf.config import HFConfig
    >>> from explainer.llm.hf.weights import read_weights
    >>> folder = Path("tests/fixtures/models/tiny-gpt2")
    >>> config = HFConfig.from_file(folder / "config.json")
    >>> model = GPT2Model(config, read_weights(folder, config))
    >>> out = model.forward([5, 6, 7], want=("embedding_position", "block_0_attn_head_*_weights"))
    >>> out.logits.shape, out.trace["embedding_position"].shape, len(out.trace)
    ((3, 1001), (3, 64), 5)
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from explainer.llm import budget
from explainer.llm.hf.cache import KVCache
from explainer.llm.hf.config import HFConfig
from explainer.llm.hf.passes import ForwardResult, HFModel, recorder
from explainer.llm.layers import Dense, attend, attend_one, gelu, layer_norm, merge_heads, per_row_for, split_heads


@dataclass
class Block:
    """One block's tensors: two LayerNorms (gain, bias) and four linears."""

    ln_1: tuple[np.ndarray, np.ndarray]
    c_attn: Dense  # the fused q, k, v projection [d, 3d]
    c_proj: Dense  # attention's output projection [d, d]
    ln_2: tuple[np.ndarray, np.ndarray]
    c_fc: Dense  # [d, d_ff]
    mlp_proj: Dense  # [d_ff, d]

    @classmethod
    def take(cls, weights: dict[str, np.ndarray], l: int, per_row: bool) -> Block:
        """Block ``l`` out of ``weights`` (its tensors are removed from the dict)."""
        def t(name: str) -> np.ndarray:
            return weights.pop(f"h.{l}.{name}")

        def dense(name: str) -> Dense:
            return Dense(t(name + ".weight"), t(name + ".bias"), per_row)
        return cls((t("ln_1.weight"), t("ln_1.bias")), dense("attn.c_attn"), dense("attn.c_proj"),
                   (t("ln_2.weight"), t("ln_2.bias")), dense("mlp.c_fc"), dense("mlp.c_proj"))


class GPT2Model(HFModel):
    """Forward pass of a GPT-2-family checkpoint (float32 in memory)."""

    def __init__(self, config: HFConfig, weights: dict[str, np.ndarray]):
        """Takes ``weights`` as ``read_weights`` returns them; the dict is emptied as its tensors are taken over."""
        c = self.config = config
        self.n_params = sum(v.size for v in weights.values())
        take = weights.pop
        wte = take("wte.weight")
        # The head [d, V]. Tied, it is also where token embeddings are read from (column gathers), so the
        # matrix is kept once.
        per_row = per_row_for(self.n_params)
        self.lm_head = Dense(wte.T if c.tie_word_embeddings else take("lm_head.weight").T, None, per_row)
        self.wte = None if c.tie_word_embeddings else wte
        del wte
        self.wpe = np.ascontiguousarray(take("wpe.weight")[:c.n_ctx])
        self.ln_f = (take("ln_f.weight"), take("ln_f.bias"))
        self.blocks = [Block.take(weights, l, per_row) for l in range(c.n_layer)]
        base = 1.0 / math.sqrt(c.head_dim) if c.attn_scale_weights else 1.0
        self.scales = [base / (l + 1) if c.attn_scale_by_layer else base for l in range(c.n_layer)]

    def new_cache(self) -> KVCache:
        c = self.config
        return KVCache(c.n_layer, c.n_head, c.head_dim, c.n_ctx)

    def _embed(self, ids: np.ndarray) -> np.ndarray:
        return self.wte[ids] if self.wte is not None else self.lm_head.columns(ids)

    def _attention(self, l: int, a: np.ndarray, cache: KVCache, start: int, end: int) -> tuple[np.ndarray, np.ndarray]:
        """Block ``l``'s attention over the normed stream ``a`` [T, d]: the new keys and values go into the
        cache, the queries attend over everything cached. Returns (output [T, d], weights [h, T, S])."""
        b, d, h = self.blocks[l], self.config.d_model, self.config.n_head
        qkv = b.c_attn(a)  # [T, 3d]
        q, k, v = (split_heads(qkv[:, i * d:(i + 1) * d], h) for i in range(3))  # [h, T, hd] each
        cache.k[l][:, start:end] = k
        cache.v[l][:, start:end] = v
        y, att = attend(q, cache.k[l][:, :end], cache.v[l][:, :end], start, self.scales[l])
        return b.c_proj(merge_heads(y)), att

    def _mlp(self, l: int, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Block ``l``'s MLP over the normed stream: (hidden activations [T, d_ff], output [T, d])."""
        b = self.blocks[l]
        hidden = gelu(b.c_fc(x))
        return hidden, b.mlp_proj(hidden)

    def _forward(self, ids: np.ndarray, cache: KVCache, want: tuple[str, ...]) -> ForwardResult:
        c = self.config
        ids, start, end = self._begin(ids, cache)
        trace, keep = recorder(want)
        eps = c.norm_eps

        tok, pos = self._embed(ids), self.wpe[start:end]
        x = tok + pos
        if keep:
            keep("embedding_token", tok)
            keep("embedding_position", pos)
            keep("embedding", x)
        for l, b in enumerate(self.blocks):
            budget.check()  # a cancelled or overdue run stops here, between layers
            a = layer_norm(x, *b.ln_1, eps)
            y, att = self._attention(l, a, cache, start, end)
            x_mid = x + y
            hidden, m = self._mlp(l, layer_norm(x_mid, *b.ln_2, eps))
            x = x_mid + m
            if keep:  # decoding asks for nothing: not even the names are built
                keep(f"block_{l}_ln_1", a)
                for hi in range(c.n_head):
                    keep(f"block_{l}_attn_head_{hi}_weights", att[hi])
                keep(f"block_{l}_attn_out", y)
                keep(f"block_{l}_resid_mid", x_mid)
                keep(f"block_{l}_mlp_hidden", hidden)
                keep(f"block_{l}_mlp_out", m)
                keep(f"block_{l}_resid_out", x)
        cache.length = end
        x = layer_norm(x, *self.ln_f, eps)
        logits = self._head(x)  # [T, V]
        if keep:
            keep("final_ln", x)
            keep("logits", logits)
        return ForwardResult(logits, cache, trace)

    def _decode(self, ids: np.ndarray, caches: list[KVCache], pos: np.ndarray) -> np.ndarray:
        """One decode step of a batch: ``ids[i]`` at position ``pos[i]`` of ``caches[i]``. Every weight product
        is ``Dense.rows`` (batch-invariant); attention runs row by row over each request's own cache."""
        c = self.config
        eps, h, d = c.norm_eps, c.n_head, c.d_model
        x = self._embed(ids) + self.wpe[pos]
        for l, b in enumerate(self.blocks):
            budget.check()
            qkv = b.c_attn.rows(layer_norm(x, *b.ln_1, eps))  # [B, 3d]
            y = np.empty((len(ids), d), np.float32)
            heads = qkv.reshape(len(ids), 3, h, d // h)  # [B, q/k/v, h, hd]
            for i, (cache, p) in enumerate(zip(caches, pos.tolist())):
                cache.k[l][:, p] = heads[i, 1]
                cache.v[l][:, p] = heads[i, 2]
                y[i] = attend_one(heads[i, 0], cache.k[l][:, :p + 1], cache.v[l][:, :p + 1], self.scales[l])
            x = x + b.c_proj.rows(y)
            x = x + b.mlp_proj.rows(gelu(b.c_fc.rows(layer_norm(x, *b.ln_2, eps))))
        for cache, p in zip(caches, pos.tolist()):
            cache.length = p + 1
        return self.lm_head.rows(layer_norm(x, *self.ln_f, eps))

    def logit_lens(self, resid: np.ndarray) -> np.ndarray:
        """Decode a residual-stream state [.., d] straight to vocabulary scores through the final LayerNorm."""
        return self.lm_head(layer_norm(resid, *self.ln_f, self.config.norm_eps))
