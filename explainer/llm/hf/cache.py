"""The key/value cache of the Hugging Face models, and causal attention over it.

Unlike the bundled model's cache (allocated for the whole window at once), this one grows:
a real model's window of 2,048 positions times 30 layers would hold tens of megabytes for
every cached prompt, most of it empty. It starts small and doubles (up to ``n_ctx``) when a
pass needs more room, so the prompt cache stores what was computed, not what might be.

Example:
    >>> c = KVCache(n_layer=2, n_kv_head=2, head_dim=4, n_ctx=1000)
    >>> c.reserve(300); c.capacity, c.k[0].shape
    (300, (2, 300, 4))
    >>> c.length = 300; c.reserve(301); c.capacity
    600
"""
from __future__ import annotations

import numpy as np

INITIAL_CAPACITY = 128


class KVCache:
    """Keys and values of every layer for the positions seen so far: ``k[l]`` is [n_kv_head, capacity, head_dim]."""

    def __init__(self, n_layer: int, n_kv_head: int, head_dim: int, n_ctx: int, capacity: int = INITIAL_CAPACITY):
        self.n_layer, self.n_kv_head, self.head_dim, self.n_ctx = n_layer, n_kv_head, head_dim, n_ctx
        self.capacity = min(capacity, n_ctx)
        shape = (n_kv_head, self.capacity, head_dim)
        self.k = [np.zeros(shape, np.float32) for _ in range(n_layer)]
        self.v = [np.zeros(shape, np.float32) for _ in range(n_layer)]
        self.length = 0

    def reserve(self, end: int) -> None:
        """Room for positions up to ``end``: grows to at least double the capacity (never past ``n_ctx``)."""
        if end <= self.capacity:
            return
        if end > self.n_ctx:
            raise ValueError(f"{end} positions do not fit a cache of at most {self.n_ctx}")
        cap = min(self.n_ctx, max(end, 2 * self.capacity))
        n = self.length
        for store in (self.k, self.v):
            for l, old in enumerate(store):
                new = np.zeros((self.n_kv_head, cap, self.head_dim), np.float32)
                new[:, :n] = old[:, :n]
                store[l] = new
        self.capacity = cap

    def copy(self, length: int | None = None) -> "KVCache":
        """An independent cache holding the first ``length`` positions (all by default), with room for just them."""
        n = self.length if length is None else max(0, min(length, self.length))
        new = KVCache(self.n_layer, self.n_kv_head, self.head_dim, self.n_ctx, capacity=max(n, 1))
        for l in range(self.n_layer):
            new.k[l][:, :n] = self.k[l][:, :n]
            new.v[l][:, :n] = self.v[l][:, :n]
        new.length = n
        return new

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.k) + sum(a.nbytes for a in self.v)


def attend(q: np.ndarray, k: np.ndarray, v: np.ndarray, start: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Causal attention of T new queries over S cached keys, grouped-query style.

    q: [h, T, hd]; k and v: [kv, S, hd] with h a multiple of kv (query head i reads key/value head
    i // (h // kv), as transformers' ``repeat_kv``); query t sits at position ``start + t``.
    Returns (output [h, T, hd], weights [h, T, S]). ``scale`` must be a Python float: a float64
    numpy scalar would promote the pass to float64 (NumPy 2 rules).
    """
    h, T, hd = q.shape
    kv, S = k.shape[0], k.shape[1]
    g = h // kv
    # The g query heads sharing a key head become g*T rows of one product: no copy of the keys per head.
    qg = q.reshape(kv, g * T, hd)
    if T <= 8:  # decoding: OpenBLAS computes k @ q^T about twice as fast as q @ k^T for so few rows
        scores = (k @ qg.transpose(0, 2, 1)).transpose(0, 2, 1).reshape(h, T, S)  # a (small) C-order copy
    else:  # a prompt: here the transposed copy of [h, T, S] would cost more than it saves
        scores = (qg @ k.transpose(0, 2, 1)).reshape(h, T, S)
    scores *= scale
    if T > 1:
        scores[:, np.arange(S)[None, :] > (start + np.arange(T))[:, None]] = -np.inf
    scores -= scores.max(axis=-1, keepdims=True)
    np.exp(scores, out=scores)
    scores /= scores.sum(axis=-1, keepdims=True)
    out = (scores.reshape(kv, g * T, S) @ v).reshape(h, T, hd)
    return out, scores
