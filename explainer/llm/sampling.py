"""From logits to the next token: temperature, top-k, top-p, and a seeded draw.

Order of operations (the same as most inference stacks):

1. scale: ``logits / temperature`` (temperature 0 means greedy: the arg-max is certain);
2. softmax over the whole vocabulary;
3. top-k: keep the k most likely tokens (ties broken by lower token id);
4. top-p: keep the smallest set of the most likely tokens whose probabilities sum to at least p;
5. renormalise what is kept, and draw with a seeded generator.

Every step reports candidate rows (token, logit, scaled logit, probability before and after
filtering, cumulative probability) so the sampling page can show the whole table.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict

import numpy as np

from explainer.llm.layers import softmax


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0
    top_k: int | None = None  # None or 0: no top-k filter
    top_p: float | None = None  # None or 1.0: no top-p filter

    def __post_init__(self) -> None:
        if not (0.0 <= self.temperature):
            raise ValueError("temperature must be >= 0")
        if self.top_k is not None and self.top_k < 0:
            raise ValueError("top_k must be >= 0")
        if self.top_p is not None and not (0.0 < self.top_p <= 1.0):
            raise ValueError("top_p must be in (0, 1]")


def _finite(x: float, digits: int) -> float | None:
    return round(x, digits) if np.isfinite(x) else None


class CandidateDict(TypedDict):
    """A :class:`Candidate` as JSON (its fields, scores rounded, -inf as None)."""

    token: int
    logit: float | None
    scaled_logit: float | None
    probability: float
    kept: bool
    final_probability: float
    cumulative: float


@dataclass(frozen=True)
class Candidate:
    token: int
    logit: float
    scaled_logit: float
    probability: float  # softmax of the scaled logits, before top-k/top-p
    kept: bool  # survives top-k and top-p
    final_probability: float  # after filtering and renormalising (what the draw uses)
    cumulative: float  # running sum of final_probability in this (descending) order

    def to_dict(self) -> CandidateDict:
        """JSON-ready: a masked token's -inf score becomes null (JSON has no infinities)."""
        return {
            "token": self.token, "logit": _finite(self.logit, 4), "scaled_logit": _finite(self.scaled_logit, 4),
            "probability": round(self.probability, 6), "kept": self.kept,
            "final_probability": round(self.final_probability, 6), "cumulative": round(self.cumulative, 6),
        }


@dataclass(frozen=True)
class Distribution:
    """The distribution the draw uses, over the whole vocabulary, plus what each filter did."""

    logits: np.ndarray  # [V]
    scaled: np.ndarray  # [V]
    probs: np.ndarray  # [V] softmax(scaled)
    final: np.ndarray  # [V] after top-k / top-p, renormalised
    order: np.ndarray  # token ids, most likely first (ties: lower id first)

    def rows(self, n: int = 10) -> list[Candidate]:
        out, cum = [], 0.0
        for t in self.order[:n]:
            cum += float(self.final[t])
            out.append(Candidate(int(t), float(self.logits[t]), float(self.scaled[t]), float(self.probs[t]),
                                 bool(self.final[t] > 0), float(self.final[t]), min(cum, 1.0)))
        return out


def distribution(logits: np.ndarray, params: SamplingParams, banned: tuple[int, ...] = ()) -> Distribution:
    """Apply temperature, top-k and top-p to one row of logits [V]."""
    logits = np.asarray(logits, dtype=np.float64)
    if banned:
        logits = logits.copy()
        logits[list(banned)] = -np.inf
    order = np.argsort(-logits, kind="stable")  # descending logit, then ascending id (a stable sort keeps id order)
    if params.temperature == 0:
        scaled = logits.copy()
        probs = np.zeros_like(logits)
        probs[order[0]] = 1.0
        return Distribution(logits, scaled, probs, probs.copy(), order)
    scaled = logits / params.temperature
    probs = softmax(scaled)
    keep = np.ones(logits.size, dtype=bool)
    if params.top_k:
        keep[:] = False
        keep[order[: params.top_k]] = True
    if params.top_p is not None and params.top_p < 1.0:
        sorted_p = np.where(keep[order], probs[order], 0.0)
        sorted_p = sorted_p / sorted_p.sum()
        cum = np.cumsum(sorted_p)
        n_keep = int(np.searchsorted(cum, params.top_p - 1e-12)) + 1  # smallest prefix reaching p
        top_p_keep = np.zeros(logits.size, dtype=bool)
        top_p_keep[order[:n_keep]] = True
        keep &= top_p_keep
    final = np.where(keep, probs, 0.0)
    final = final / final.sum()
    return Distribution(logits, scaled, probs, final, order)


def draw(dist: Distribution, rng: np.random.Generator) -> int:
    """Inverse-CDF draw over the tokens in ``dist.order``: one uniform number per step, so seeds repeat exactly."""
    u = rng.random()
    p = dist.final[dist.order]
    cum = np.cumsum(p)
    i = int(np.searchsorted(cum, u * cum[-1], side="right"))
    i = min(i, int(np.count_nonzero(p)) - 1)
    return int(dist.order[i])
