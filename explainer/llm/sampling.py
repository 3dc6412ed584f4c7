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

from dataclasses import dataclass, field
from functools import cached_property
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


# Past this many tokens, sorting the whole vocabulary at every step is the largest cost of a step (49k tokens:
# several milliseconds, paid per request even when many share the model's step). A larger vocabulary's order
# is found only as far as a step needs it: the few most likely tokens, sorted, then more if the draw or top-p
# reaches past them (a flat distribution may need the whole order, which is then sorted).
FULL_SORT_MAX = 8192


def head_order(values: np.ndarray, n: int) -> np.ndarray:
    """The first ``n`` ids of ``values``' order: descending value, ties by ascending id (a stable sort's order)."""
    V = values.size
    if n >= V or V <= FULL_SORT_MAX or n > V // 8:
        return np.argsort(-values, kind="stable")[:n]
    part = np.argpartition(-values, n - 1)[:n]  # the n largest, any order, any of the ties at the edge
    edge = values[part].min()
    tied_in = np.flatnonzero(values >= edge)  # ascending ids, every token tied at the edge included
    return tied_in[np.argsort(-values[tied_in], kind="stable")][:n]


@dataclass(frozen=True)
class Distribution:
    """The distribution the draw uses, over the whole vocabulary, plus what each filter did."""

    logits: np.ndarray  # [V]
    scaled: np.ndarray  # [V]
    probs: np.ndarray  # [V] softmax(scaled)
    final: np.ndarray  # [V] after top-k / top-p, renormalised
    top: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # the order's head, as far as known

    @cached_property
    def order(self) -> np.ndarray:
        """Token ids, most likely first (ties: lower id first), the whole vocabulary."""
        return self.head(self.logits.size)

    def head(self, n: int) -> np.ndarray:
        """The order's first ``n`` ids (sorted only as far as needed; see ``FULL_SORT_MAX``)."""
        if "order" in self.__dict__:
            return self.__dict__["order"][:n]  # type: ignore[no-any-return]
        if len(self.top) >= n:
            return self.top[:n]
        top = head_order(self.logits, min(self.logits.size, max(n, 64)))
        object.__setattr__(self, "top", top)
        return top[:n]

    def rows(self, n: int = 10) -> list[Candidate]:
        out, cum = [], 0.0
        for t in self.head(n):
            cum += float(self.final[t])
            out.append(Candidate(int(t), float(self.logits[t]), float(self.scaled[t]), float(self.probs[t]),
                                 bool(self.final[t] > 0), float(self.final[t]), min(cum, 1.0)))
        return out


def _prefix_reaching(dist: Distribution, weights: np.ndarray, target: float) -> tuple[np.ndarray, np.ndarray]:
    """(ids, cumulative sums of ``weights`` over them) for the shortest head of the order whose sum passes
    ``target`` (the whole order if none does)."""
    V, n = weights.size, 64
    while True:
        ids = dist.head(min(n, V))
        cum = np.cumsum(weights[ids])
        if cum[-1] > target or len(ids) == V:
            return ids, cum
        n *= 4


def distribution(logits: np.ndarray, params: SamplingParams, banned: tuple[int, ...] = ()) -> Distribution:
    """Apply temperature, top-k and top-p to one row of logits [V]."""
    logits = np.asarray(logits, dtype=np.float64)
    if banned:
        logits = logits.copy()
        logits[list(banned)] = -np.inf
    V = logits.size
    if params.temperature == 0:
        probs = np.zeros_like(logits)
        dist = Distribution(logits, logits.copy(), probs, probs)
        probs[dist.head(1)[0]] = 1.0
        return Distribution(logits, logits.copy(), probs, probs.copy(), dist.top)
    scaled = logits / params.temperature
    probs = softmax(scaled)
    dist = Distribution(logits, scaled, probs, probs)  # for the order only
    keep = np.ones(V, dtype=bool)
    if params.top_k:
        keep[:] = False
        keep[dist.head(params.top_k)] = True
    if params.top_p is not None and params.top_p < 1.0:
        if V <= FULL_SORT_MAX:  # the whole order, summed in that order (what a small vocabulary always did)
            order = dist.order
            sorted_p = np.where(keep[order], probs[order], 0.0)
            cum = np.cumsum(sorted_p / sorted_p.sum())
            ids = order
        else:
            kept = np.where(keep, probs, 0.0)
            ids, cum = _prefix_reaching(dist, kept / kept.sum(), params.top_p - 1e-12)
        n_keep = int(np.searchsorted(cum, params.top_p - 1e-12)) + 1  # smallest prefix reaching p
        top_p_keep = np.zeros(V, dtype=bool)
        top_p_keep[ids[:n_keep]] = True
        keep &= top_p_keep
    final = np.where(keep, probs, 0.0)
    final = final / final.sum()
    return Distribution(logits, scaled, probs, final, dist.top if "order" not in dist.__dict__ else dist.order)


def draw(dist: Distribution, rng: np.random.Generator) -> int:
    """Inverse-CDF draw over the tokens in the distribution's order: one uniform number per step, so seeds repeat
    exactly. (A large vocabulary's order is followed only until the draw lands; its total is the plain sum.)"""
    u = rng.random()
    if dist.final.size <= FULL_SORT_MAX:
        p = dist.final[dist.order]
        cum = np.cumsum(p)
        i = int(np.searchsorted(cum, u * cum[-1], side="right"))
        i = min(i, int(np.count_nonzero(p)) - 1)
        return int(dist.order[i])
    ids, cum = _prefix_reaching(dist, dist.final, u * float(dist.final.sum()))
    i = int(np.searchsorted(cum, u * float(dist.final.sum()), side="right"))
    i = min(i, len(ids) - 1, int(np.count_nonzero(dist.final[ids])) - 1)
    return int(ids[i])
