"""The key/value cache every model's forward pass writes into (attention over it is ``explainer.llm.layers.attend``).

It grows: a real model's window of 2,048 positions times 30 layers would hold tens of megabytes for
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

from typing import Protocol

import numpy as np

INITIAL_CAPACITY = 128


class Stepper(Protocol):
    """What runs a cache's decode steps when its request shares them with others (``explainer.llm.batching``)."""

    def step(self, token: int) -> np.ndarray:
        """The logits [V] after ``token``, decoded in the next batched step."""


class KVCache:
    """Keys and values of every layer for the positions seen so far: ``k[l]`` is [n_kv_head, capacity, head_dim]."""

    def __init__(self, n_layer: int, n_kv_head: int, head_dim: int, n_ctx: int, capacity: int = INITIAL_CAPACITY):
        self.n_layer, self.n_kv_head, self.head_dim, self.n_ctx = n_layer, n_kv_head, head_dim, n_ctx
        self.capacity = min(capacity, n_ctx)
        shape = (n_kv_head, self.capacity, head_dim)
        self.k = [np.zeros(shape, np.float32) for _ in range(n_layer)]
        self.v = [np.zeros(shape, np.float32) for _ in range(n_layer)]
        self.length = 0
        self.batch: Stepper | None = None  # set while the request decodes in a shared batch; copies do not inherit it

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

    def copy(self, length: int | None = None) -> KVCache:
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

