"""What every Hugging Face model's forward pass does before its own layers: the BLAS threads for the
pass, the checks on the new ids against the window and the vocabulary, and the named-intermediate
recorder (``want`` glob patterns, compiled once; nothing is built when a decode step asks for none)."""
from __future__ import annotations

import fnmatch
import re
from typing import Callable

import numpy as np

from explainer.llm.hf.cache import KVCache
from explainer.llm.interface import ContextWindowExceeded
from explainer.llm.model import ForwardResult
from explainer.llm.threads import blas_threads


class HFModel:
    """The shared half of GPT2Model and LlamaModel: ``forward`` runs the subclass's ``_forward`` on the
    model's BLAS threads (the loader gives a large model every core)."""

    threads = 1

    def forward(self, ids, cache: KVCache | None = None, want: tuple[str, ...] = ()) -> ForwardResult:
        """Run ``ids`` (the new tokens) after whatever ``cache`` holds; returns logits for every new token."""
        with blas_threads(self.threads):
            return self._forward(ids, cache if cache is not None else self.new_cache(), want)

    def _begin(self, ids, cache: KVCache) -> tuple[np.ndarray, int, int]:
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
