"""What every model's forward pass (the bundled one's included) does around its own layers: the BLAS threads for the
pass, the checks on the new ids against the window and the vocabulary, the named-intermediate
recorder (``want`` glob patterns, compiled once; nothing is built when a decode step asks for none),
and the run's budget (``explainer.llm.budget``).

A pass checks its budget before every layer, and a long prompt that asks for no intermediates is
run in chunks of positions, each a pass of its own over the cache: one layer of a 2,000-token prompt
on a 135M model is about a second of numpy that nothing could interrupt, one layer of a chunk is a few
tens of milliseconds. So a cancelled or overdue run stops within a step, whatever the prompt's length."""
from __future__ import annotations

import fnmatch
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from explainer.llm import budget
from explainer.llm.hf.cache import KVCache
from explainer.llm.hf.config import HFConfig
from explainer.llm.interface import Cache, ContextWindowExceeded
from explainer.llm.layers import Dense
from explainer.llm.threads import blas_threads

# Floating-point operations one uninterrupted step of a pass may take (a layer over a chunk of
# positions, a block of rows of the head): about 10-25 ms of one core's float32 products.
STEP_FLOPS = 5e8
MIN_CHUNK, MAX_CHUNK = 16, 1024  # positions per chunk of a long prefill, whatever the model's size
HEAD_ROWS = 32  # rows of the head's product at least, per block (about 25 ms for a 49k-token vocabulary)


@dataclass
class ForwardResult:
    logits: np.ndarray  # [T, V]
    cache: KVCache
    trace: dict[str, np.ndarray]  # the named intermediates ``want`` asked for


@lru_cache(maxsize=1)
def _spare_cores() -> int:
    """BLAS threads a Hugging Face model's pass may take: every core but one. The BLAS thread count is the
    process's, and while it is raised the bundled model's small products wait behind the large ones (with two
    threads on two cores, an 8-token bundled reply went from 50 ms to 600 ms during a local prefill): one core
    is left for the bundled model, the pages and the event loop."""
    return max(1, (os.cpu_count() or 1) - 1)


class HFModel(ABC):
    """The shared half of GPT2Model (the bundled model is one) and LlamaModel: ``forward`` runs the subclass's ``_forward`` on the
    model's BLAS threads (the loader gives a large model every core, of which it gets all but one), a long
    prefill in chunks."""

    threads = 1
    # Set by each architecture's __init__.
    config: HFConfig
    n_params: int
    lm_head: Dense  # [d, V]

    @abstractmethod
    def new_cache(self) -> KVCache:
        """An empty KV cache shaped for this model."""

    @abstractmethod
    def _forward(self, ids: np.ndarray, cache: KVCache, want: tuple[str, ...]) -> ForwardResult:
        """The architecture's own pass over the new ``ids`` [T] (int64); it takes its positions from ``_begin``."""

    @abstractmethod
    def _decode(self, ids: np.ndarray, caches: list[KVCache], pos: np.ndarray) -> np.ndarray:
        """The architecture's decode step for a batch: ``ids[i]`` at position ``pos[i]`` of ``caches[i]`` (room
        reserved); returns logits [B, V], each row as it would be alone (``Dense.rows``)."""

    def forward(self, ids: Iterable[int] | np.ndarray, cache: Cache | None = None, want: tuple[str, ...] = ()) -> ForwardResult:
        """Run ``ids`` (the new tokens) after whatever ``cache`` holds; returns logits for every new token."""
        if cache is None:
            cache = self.new_cache()
        elif not isinstance(cache, KVCache):  # the interface's Cache: only this model's own kind will do
            raise TypeError(f"a {type(cache).__name__} is not a KV cache of this model")
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if len(ids) == 1 and not want:  # a decode step: alone, or in a batch with other requests' steps
            stepper = getattr(cache, "batch", None)
            token = int(ids[0])
            logits = stepper.step(token) if stepper is not None else self.decode([token], [cache])[0]
            return ForwardResult(logits[None], cache, {})
        with blas_threads(min(self.threads, _spare_cores())):
            step = self.prefill_chunk
            if want or len(ids) <= step:  # intermediates are [T, S] for the whole pass: asked for, it is one pass
                return self._forward(ids, cache, want)
            # Checked once here for the whole prompt, so a prompt that cannot fit changes nothing in the cache.
            self._begin(ids, cache)
            parts = [self._forward(ids[i:i + step], cache, ()).logits for i in range(0, len(ids), step)]
            return ForwardResult(np.concatenate(parts), cache, {})

    def decode(self, ids: Sequence[int], caches: Sequence[KVCache]) -> np.ndarray:
        """One decode step for several requests at once: token ``ids[i]`` goes after what ``caches[i]`` holds.
        Returns logits [B, V]; row i is bit for bit what ``decode([ids[i]], [caches[i]])`` gives alone
        (see ``explainer.llm.layers.Dense.rows``), so a request's reply does not depend on who else is served."""
        if len(ids) != len(caches) or not ids:
            raise ValueError("decode needs one cache per token, and at least one token")
        for t, cache in zip(ids, caches):
            self.check_step(t, cache)
        pos = np.array([c.length for c in caches], dtype=np.int64)
        for cache, p in zip(caches, pos.tolist()):
            cache.reserve(p + 1)
        with blas_threads(min(self.threads, _spare_cores())):
            return self._decode(np.asarray(ids, dtype=np.int64), list(caches), pos)

    def check_step(self, token: int, cache: Cache) -> None:
        """Raise if ``token`` cannot be decoded after ``cache`` (its kind, the window, the vocabulary)."""
        if not isinstance(cache, KVCache) or cache.n_layer != self.config.n_layer:
            raise TypeError(f"a {type(cache).__name__} is not a KV cache of this model")
        if cache.length + 1 > self.config.n_ctx:
            raise ContextWindowExceeded(f"{cache.length + 1} tokens do not fit the context window of {self.config.n_ctx}")
        if not 0 <= token < self.config.vocab_size:
            raise ValueError(f"token ids must be in 0..{self.config.vocab_size - 1}")

    @property
    def prefill_chunk(self) -> int:
        """Positions per chunk of a long prefill: what one layer does in about ``STEP_FLOPS``. A model whose
        whole window takes no more than that per layer (the bundled model: 512 positions of a 0.8M-parameter
        layer) runs a prompt in one pass."""
        per_layer = max(1, (self.n_params - self.lm_head.size) // max(1, self.config.n_layer))
        if 2 * per_layer * self.config.n_ctx <= 2 * STEP_FLOPS:
            return self.config.n_ctx
        return int(min(MAX_CHUNK, max(MIN_CHUNK, STEP_FLOPS // (2 * per_layer))))

    def _head(self, x: np.ndarray) -> np.ndarray:
        """The logits of the rows of ``x`` [T, d] -> [T, V], in blocks of rows for a large vocabulary (a 49k-token
        head over 100 positions is 6 GFLOP), with the budget checked between blocks. A block is at least
        HEAD_ROWS rows: each reads the whole head matrix (113 MB for SmolLM2's), and fewer rows would spend
        the time reading it again rather than computing."""
        d, V = self.lm_head.shape
        rows = max(HEAD_ROWS, int(STEP_FLOPS // (2 * d * V)))
        if len(x) <= rows:
            return self.lm_head(x)
        out = np.empty((len(x), V), np.float32)
        for i in range(0, len(x), rows):
            budget.check()
            out[i:i + rows] = self.lm_head(x[i:i + rows])
        return out

    def _begin(self, ids: Iterable[int] | np.ndarray, cache: KVCache) -> tuple[np.ndarray, int, int]:
        """The new ids as an array, and the positions [start, end) they take in ``cache`` (room reserved)."""
        c = self.config
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        start, T = cache.length, len(ids)
        if T == 0:
            raise ValueError("forward needs at least one token")
        if start + T > c.n_ctx:
            raise ContextWindowExceeded(f"{start + T} tokens do not fit the context window of {c.n_ctx}")
        if ids.min() < 0 or ids.max() >= c.vocab_size:
            raise ValueError(f"token ids must be in 0..{c.vocab_size - 1}")
        cache.reserve(start + T)
        return ids, start, start + T


def recorder(want: tuple[str, ...]) -> tuple[dict[str, np.ndarray], Callable[[str, np.ndarray], None] | None]:
    """(trace, keep): ``keep(name, value)`` stores what a pattern of ``want`` names; None when ``want`` is empty."""
    trace: dict[str, np.ndarray] = {}
    if not want:
        return trace, None
    wanted = re.compile("|".join(fnmatch.translate(p) for p in want)).match

    def keep(name: str, value: np.ndarray) -> None:
        if wanted(name):
            trace[name] = value
    return trace, keep
