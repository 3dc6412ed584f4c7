"""Llama-family checkpoints in numpy: Llama, SmolLM2, TinyLlama, and Qwen2 (q/k/v biases).

Token embedding, ``n_layer`` pre-RMSNorm blocks (grouped-query attention with rotary positions,
then a SwiGLU MLP ``down(silu(gate(x)) * up(x))``), a final RMSNorm and a head, tied to the
embedding or not. Rotary positions follow transformers' ``LlamaRotaryEmbedding``: the
rotate-half convention, cos/sin of ``position * inv_freq`` in float32, tabulated once for the
whole window.

nn.Linear stores weights [out, in]; they are transposed once, at load, into [in, out] matrices
(:class:`~explainer.llm.layers.Dense`), and fused: q, k and v into one [d, (h + 2 kv) * hd] matrix,
gate and up into one [d, 2 f], so a block is four products. The head is a [d, V] Dense too; tied,
token embeddings are read from its columns, so the vocabulary matrix is kept once.

The trace names of ``explainer.llm.interface``, with
``block_{l}_attn_q_rotated`` / ``block_{l}_attn_k_rotated`` and without ``embedding_position``.

Example:
    >>> from pathlib import Path
    >>> from explainer.llm.hf.config import HFConfig
    >>> from explainer.llm.hf.weights import read_weights
    >>> folder = Path("tests/fixtures/models/tiny-llama")
    >>> config = HFConfig.from_file(folder / "config.json")
    >>> model = LlamaModel(config, read_weights(folder, config))
    >>> out = model.forward([5, 6, 7], want=("block_0_attn_*_rotated",))
    >>> out.logits.shape, out.trace["block_0_attn_q_rotated"].shape, out.trace["block_0_attn_k_rotated"].shape
    ((3, 1000), (3, 64), (3, 32))
"""
from __future__ import annotations

import math

import numpy as np

from explainer.llm import budget
from explainer.llm.hf.cache import KVCache
from explainer.llm.hf.config import HFConfig
from explainer.llm.hf.passes import ForwardResult, HFModel, recorder
from explainer.llm.layers import Dense, apply_rotary, attend, attend_one, merge_heads, per_row_for, rms_norm, silu


def _linear(weights: dict[str, np.ndarray], names: list[str], bias: bool, per_row: bool) -> Dense:
    """nn.Linear weights [out_i, in] fused along out and transposed once: [in, sum(out_i)], with the bias."""
    w = np.concatenate([weights.pop(f"{n}.weight") for n in names], axis=0).T
    b = np.concatenate([weights.pop(f"{n}.bias") for n in names]) if bias else None
    return Dense(w, b, per_row)


class LlamaModel(HFModel):
    """Forward pass of a Llama-family checkpoint (float32 in memory)."""

    def __init__(self, config: HFConfig, weights: dict[str, np.ndarray]):
        """Takes ``weights`` as ``read_weights`` returns them; the dict is emptied as its tensors are taken over."""
        c = self.config = config
        self.n_params = sum(v.size for v in weights.values())
        embed = weights.pop("embed_tokens.weight")
        per_row = per_row_for(self.n_params)
        self.lm_head = Dense(embed.T if c.tie_word_embeddings else weights.pop("lm_head.weight").T, None, per_row)  # [d, V]
        self.embed = None if c.tie_word_embeddings else embed
        del embed
        self.norm = weights.pop("norm.weight")
        self.blocks = []
        for l in range(c.n_layer):
            p = f"layers.{l}."
            qkv = _linear(weights, [p + "self_attn.q_proj", p + "self_attn.k_proj", p + "self_attn.v_proj"], c.attention_bias, per_row)
            o = _linear(weights, [p + "self_attn.o_proj"], c.o_bias, per_row)
            gate_up = _linear(weights, [p + "mlp.gate_proj", p + "mlp.up_proj"], c.mlp_bias, per_row)
            down = _linear(weights, [p + "mlp.down_proj"], c.mlp_bias, per_row)
            self.blocks.append((weights.pop(p + "input_layernorm.weight"), qkv, o,
                                weights.pop(p + "post_attention_layernorm.weight"), gate_up, down))
        # cos/sin of every position's angles, [n_ctx, hd] (the half-width table repeated twice, as transformers'
        # cat(freqs, freqs)); the angles are position * inv_freq in float32, as transformers computes them.
        angles = np.arange(c.n_ctx, dtype=np.float32)[:, None] * c.inv_freq()[None, :]
        angles = np.concatenate([angles, angles], axis=1)
        self.cos, self.sin = np.cos(angles), np.sin(angles)
        self.scale = 1.0 / math.sqrt(c.head_dim)

    def new_cache(self) -> KVCache:
        c = self.config
        return KVCache(c.n_layer, c.n_kv_head, c.head_dim, c.n_ctx)

    def _embed(self, ids: np.ndarray) -> np.ndarray:
        return self.embed[ids] if self.embed is not None else self.lm_head.columns(ids)

    def _forward(self, ids: np.ndarray, cache: KVCache, want: tuple[str, ...]) -> ForwardResult:
        c = self.config
        ids, start, end = self._begin(ids, cache)
        T = end - start
        trace, keep = recorder(want)

        h, kv, hd, f, eps = c.n_head, c.n_kv_head, c.head_dim, c.d_ff, c.norm_eps
        nq, nqk = h * hd, (h + kv) * hd
        cos, sin = self.cos[start:end, None, :], self.sin[start:end, None, :]  # [T, 1, hd]: broadcast over heads
        x = self._embed(ids)
        if keep:
            keep("embedding_token", x)
            keep("embedding", x)
        for l, (ln_1, w_qkv, w_o, ln_2, w_gu, w_down) in enumerate(self.blocks):
            budget.check()  # a cancelled or overdue run stops here, between layers
            a = rms_norm(x, ln_1, eps)
            qkv = w_qkv(a)  # [T, (h + 2kv) hd]
            # Rotary positions on the queries and keys together: [T, h + kv, hd], rotate-half convention.
            rot = apply_rotary(qkv[:, :nqk].reshape(T, h + kv, hd), cos, sin)
            q = rot[:, :h].transpose(1, 0, 2)  # [h, T, hd]
            cache.k[l][:, start:end] = rot[:, h:].transpose(1, 0, 2)
            cache.v[l][:, start:end] = qkv[:, nqk:].reshape(T, kv, hd).transpose(1, 0, 2)
            y, att = attend(q, cache.k[l][:, :end], cache.v[l][:, :end], start, self.scale)
            y = w_o(merge_heads(y))
            x_mid = x + y
            gu = w_gu(rms_norm(x_mid, ln_2, eps))  # [T, 2f]: gate, then up
            hidden = silu(gu[:, :f]) * gu[:, f:]
            m = w_down(hidden)
            x = x_mid + m
            if keep:  # decoding asks for nothing: not even the names are built
                keep(f"block_{l}_ln_1", a)
                keep(f"block_{l}_attn_q_rotated", rot[:, :h].reshape(T, nq))
                keep(f"block_{l}_attn_k_rotated", rot[:, h:].reshape(T, kv * hd))
                for hi in range(h):
                    keep(f"block_{l}_attn_head_{hi}_weights", att[hi])
                keep(f"block_{l}_attn_out", y)
                keep(f"block_{l}_resid_mid", x_mid)
                keep(f"block_{l}_mlp_hidden", hidden)
                keep(f"block_{l}_mlp_out", m)
                keep(f"block_{l}_resid_out", x)
        cache.length = end
        x = rms_norm(x, self.norm, eps)
        logits = self._head(x)  # [T, V]
        if keep:
            keep("final_ln", x)
            keep("logits", logits)
        return ForwardResult(logits, cache, trace)

    def logit_lens(self, resid: np.ndarray) -> np.ndarray:
        """Decode a residual-stream state [.., d] straight to vocabulary scores through the final RMSNorm."""
        return self.lm_head(rms_norm(resid, self.norm, self.config.norm_eps))

    def _decode(self, ids: np.ndarray, caches: list[KVCache], pos: np.ndarray) -> np.ndarray:
        """One decode step of a batch: ``ids[i]`` at position ``pos[i]`` of ``caches[i]``. Every weight product
        is ``Dense.rows`` (batch-invariant); attention runs row by row over each request's own cache."""
        c = self.config
        h, kv, hd, f, eps = c.n_head, c.n_kv_head, c.head_dim, c.d_ff, c.norm_eps
        nqk, B = (h + kv) * hd, len(ids)
        cos, sin = self.cos[pos, None, :], self.sin[pos, None, :]  # [B, 1, hd]
        x = self._embed(ids)
        for l, (ln_1, w_qkv, w_o, ln_2, w_gu, w_down) in enumerate(self.blocks):
            budget.check()
            qkv = w_qkv.rows(rms_norm(x, ln_1, eps))  # [B, (h + 2kv) hd]
            rot = apply_rotary(qkv[:, :nqk].reshape(B, h + kv, hd), cos, sin)
            y = np.empty((B, h * hd), np.float32)
            for i, (cache, p) in enumerate(zip(caches, pos.tolist())):
                cache.k[l][:, p] = rot[i, h:]
                cache.v[l][:, p] = qkv[i, nqk:].reshape(kv, hd)
                y[i] = attend_one(rot[i, :h], cache.k[l][:, :p + 1], cache.v[l][:, :p + 1], self.scale)
            x = x + w_o.rows(y)
            gu = w_gu.rows(rms_norm(x, ln_2, eps))
            x = x + w_down.rows(silu(gu[:, :f]) * gu[:, f:])
        for cache, p in zip(caches, pos.tolist()):
            cache.length = p + 1
        return self.lm_head.rows(rms_norm(x, self.norm, eps))
