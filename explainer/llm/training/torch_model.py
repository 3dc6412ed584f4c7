"""The bundled model in PyTorch, for training and as the reference the numpy forward pass is checked against.

Same architecture as the numpy forward pass (``explainer/llm/hf/gpt2.py``, loaded by ``explainer/llm/model.py``): GPT-2 style pre-LayerNorm decoder,
learned positions, tanh-GELU MLP, tied input/output embeddings, no biases in linears.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from explainer.llm.model import ModelConfig


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)  # 3 x [B, T, C]
        h = self.cfg.n_head
        q, k, v = (t.view(B, T, h, C // h).transpose(1, 2) for t in (q, k, v))  # [B, h, T, hd]
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))

    def forward_cached(self, x, past: tuple | None):
        """Attention for new positions x [1, T, C] after cached keys/values ([1, h, S, hd] each)."""
        B, T, C = x.shape
        h = self.cfg.n_head
        q, k, v = (t.view(B, T, h, C // h).transpose(1, 2) for t in self.qkv(x).split(C, dim=2))
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=past is None and T > 1)
        return self.proj(y.transpose(1, 2).reshape(B, T, C)), (k, v)


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.proj = nn.Linear(cfg.d_ff, cfg.d_model, bias=False)

    def forward(self, x):
        return self.proj(F.gelu(self.fc(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.d_model, eps=cfg.ln_eps)
        self.attn = Attention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.d_model, eps=cfg.ln_eps)
        self.mlp = MLP(cfg)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class TinyGPT(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.wpe = nn.Embedding(cfg.n_ctx, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model, eps=cfg.ln_eps)
        self.apply(self._init)
        for name, p in self.named_parameters():
            if name.endswith("proj.weight"):  # GPT-2's scaled init of residual projections
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)

    def forward(self, idx):
        B, T = idx.shape
        x = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x) @ self.wte.weight.T  # [B, T, vocab]

    @torch.no_grad()
    def forward_cached(self, idx, past: list | None = None):
        """Logits for new tokens ``idx`` [1, T] given the per-layer KV cache ``past``; returns (logits, cache).

        A decode step (T = 1) with a cache; a prefill (T > 1) without one.
        """
        start = past[0][0].shape[2] if past else 0
        x = self.wte(idx) + self.wpe(torch.arange(start, start + idx.shape[1]))
        new = []
        for i, block in enumerate(self.blocks):
            a, kv = block.attn.forward_cached(block.ln_1(x), past[i] if past else None)
            x = x + a
            x = x + block.mlp(block.ln_2(x))
            new.append(kv)
        return self.ln_f(x) @ self.wte.weight.T, new

    # ---- conversion to and from the numpy weight names -------------------------------
    def numpy_weights(self) -> dict[str, np.ndarray]:
        """Weights under the names ``explainer.llm.model`` reads (Linear weights transposed to [in, out])."""
        out = {}
        for name, p in self.state_dict().items():
            a = p.detach().cpu().float().numpy()
            if a.ndim == 2 and not name.startswith(("wte", "wpe")):
                a = a.T
            out[name] = a
        return out

    def load_numpy_weights(self, weights: dict[str, np.ndarray]) -> None:
        state = {}
        for name in self.state_dict():
            a = np.asarray(weights[name], dtype=np.float32)
            if a.ndim == 2 and not name.startswith(("wte", "wpe")):
                a = a.T
            state[name] = torch.from_numpy(np.ascontiguousarray(a))
        self.load_state_dict(state)
