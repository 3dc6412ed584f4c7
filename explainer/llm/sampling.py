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

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import NamedTuple, TypedDict

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
    return round(x, digits) if math.isfinite(x) else None


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
# is worked out only where a step needs it. Its tokens are put in BINS bins by logit (bin 0 the highest; a bin
# never holds a larger logit than an earlier one), so the mass of every bin is one pass (``np.bincount``), and
# only the tokens of the bin where a running sum crosses its target, or where the first n tokens end, are sorted.
FULL_SORT_MAX = 1024
BINS = 1024


def logit_bins(values: np.ndarray) -> np.ndarray:
    """Each token's bin along the order of ``values`` (descending): -inf (a banned token) in the last, ``BINS``."""
    finite = np.isfinite(values)
    bins = np.full(values.size, BINS, np.int64)
    if finite.any():
        hi, lo = values[finite].max(), values[finite].min()
        scale = (BINS - 1) / (hi - lo) if hi > lo else 0.0
        bins[finite] = np.minimum((hi - values[finite]) * scale, BINS - 1).astype(np.int64)
    return bins


def _sorted(values: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """``ids`` (ascending) in the order: descending value, ties by ascending id."""
    return ids[np.argsort(-values[ids], kind="stable")]


def head_order(values: np.ndarray, n: int, bins: np.ndarray | None = None) -> np.ndarray:
    """The first ``n`` ids of ``values``' order: descending value, ties by ascending id (a stable sort's order)."""
    V = values.size
    if n >= V or V <= FULL_SORT_MAX or n > V // 8:
        return np.argsort(-values, kind="stable")[:n]
    bins = logit_bins(values) if bins is None else bins
    last = int(np.searchsorted(np.cumsum(np.bincount(bins, minlength=BINS + 1)), n))  # the bin holding the n-th
    return _sorted(values, np.flatnonzero(bins <= last))[:n]


def crossing(values: np.ndarray, weights: np.ndarray, target: float, bins: np.ndarray, side: str = "right"
             ) -> tuple[np.ndarray, int]:
    """Walking the order of ``values``, where the running sum of ``weights`` first passes ``target`` (with
    ``side="left"``: first reaches it): (a mask of the tokens up to it, that token). Bins above it are summed
    whole; only the tokens of its bin are sorted. A target past the total (rounding) lands on the last token
    with weight."""
    cum = np.cumsum(np.bincount(bins, weights=weights, minlength=BINS + 1))
    k = min(int(np.searchsorted(cum, target, side=side)), BINS)  # type: ignore[call-overload]
    return _cross_in_bin(values, weights, target, bins, cum, k, side)


def _cross_in_bin(values: np.ndarray, weights: np.ndarray, target: float, bins: np.ndarray, cum: np.ndarray, k: int,
                  side: str) -> tuple[np.ndarray, int]:
    """``crossing`` once the bin ``k`` where the running sum passes ``target`` is known (``cum``: the bins' running sums)."""
    ids = _sorted(values, np.flatnonzero(bins == k))
    run = (cum[k - 1] if k else 0.0) + np.cumsum(weights[ids])
    j = int(np.searchsorted(run, target, side=side)) if len(ids) else 0  # type: ignore[call-overload]
    if j >= len(ids) or weights[ids[j]] <= 0:  # past the total, or on a token without weight
        pos = np.flatnonzero(weights > 0)
        low = values[pos].min()
        last = int(pos[values[pos] == low].max())
        return (weights > 0) | (bins < k), last
    mask = bins < k
    mask[ids[:j + 1]] = True
    return mask, int(ids[j])


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

    @cached_property
    def bins(self) -> np.ndarray:
        """Each token's bin by logit (a large vocabulary's; see ``FULL_SORT_MAX``)."""
        return logit_bins(self.logits)

    def head(self, n: int) -> np.ndarray:
        """The order's first ``n`` ids (sorted only as far as needed; see ``FULL_SORT_MAX``)."""
        if "order" in self.__dict__:
            return self.__dict__["order"][:n]  # type: ignore[no-any-return]
        if len(self.top) >= n:
            return self.top[:n]
        V = self.logits.size
        top = head_order(self.logits, min(V, max(n, 16)), self.bins if V > FULL_SORT_MAX else None)
        object.__setattr__(self, "top", top)
        return top[:n]

    def rows(self, n: int = 10) -> list[Candidate]:
        out, cum = [], 0.0
        for t in self.head(n):
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
            n_keep = int(np.searchsorted(cum, params.top_p - 1e-12)) + 1  # smallest prefix reaching p
            top_p_keep = np.zeros(V, dtype=bool)
            top_p_keep[ids[:n_keep]] = True
        else:
            kept = np.where(keep, probs, 0.0)
            top_p_keep, _ = crossing(logits, kept / kept.sum(), params.top_p - 1e-12, dist.bins, side="left")
        keep &= top_p_keep
    final = np.where(keep, probs, 0.0)
    final = final / final.sum()
    out = Distribution(logits, scaled, probs, final, dist.top if "order" not in dist.__dict__ else dist.order)
    if "bins" in dist.__dict__:
        out.__dict__["bins"] = dist.bins
    return out


def draw(dist: Distribution, rng: np.random.Generator) -> int:
    """Inverse-CDF draw over the tokens in the distribution's order: one uniform number per step, so seeds repeat
    exactly. (A large vocabulary's order is worked out only where the draw lands; see ``FULL_SORT_MAX``.)"""
    u = rng.random()
    if dist.final.size <= FULL_SORT_MAX:
        p = dist.final[dist.order]
        cum = np.cumsum(p)
        i = int(np.searchsorted(cum, u * cum[-1], side="right"))
        i = min(i, int(np.count_nonzero(p)) - 1)
        return int(dist.order[i])
    return crossing(dist.logits, dist.final, u * float(dist.final.sum()), dist.bins)[1]


# ---- many rows at once: the draws of a batched decode step ----------------------------------------------------


# Up to this vocabulary a batch's draws are made together (``draw_rows``). A larger one's rows are drawn by their
# own requests, in parallel: a 49k-token row is a few hundred microseconds of arithmetic that numpy runs without the
# interpreter lock, and sixteen such rows at once are arrays of several megabytes, slower to allocate and walk
# through (measured: 16 rows of 49,152 scores took 6x longer together than one at a time).
DRAW_ROWS_MAX_VOCAB = 8192


@dataclass(frozen=True)
class Draw:
    """A draw to make as soon as a row's logits exist: what ``distribution`` and ``draw`` would be given, and how
    many candidate rows to work out with it. A batched step (``explainer.llm.batching``) makes the draws of all its
    rows together, while their requests wait, instead of each request making its own under the interpreter lock."""

    params: SamplingParams
    banned: tuple[int, ...]
    rng: np.random.Generator
    n_candidates: int = 0


class Drawn(NamedTuple):
    """A row's draw: the distribution it was made from, the token, and its first candidate rows."""

    dist: Distribution
    token: int
    candidates: list[Candidate]


def _plain(params: SamplingParams) -> bool:
    """Temperature only: the case ``draw_rows`` works out for every row at once (top-k, top-p and greedy go row by row)."""
    return params.temperature > 0 and not params.top_k and (params.top_p is None or params.top_p >= 1.0)


def _bins_rows(values: np.ndarray) -> np.ndarray:
    """``logit_bins`` of every row of ``values`` [B, V], the same numbers as row by row."""
    finite = np.isfinite(values)
    hi = np.where(finite, values, -np.inf).max(axis=1)
    lo = np.where(finite, values, np.inf).min(axis=1)
    spread = hi - lo
    scale = np.divide(BINS - 1, spread, out=np.zeros_like(spread), where=spread > 0)
    scaled = np.minimum((hi[:, None] - np.where(finite, values, hi[:, None])) * scale[:, None], BINS - 1)
    return np.where(finite, scaled.astype(np.int64), BINS)


def draw_rows(logits: np.ndarray, draws: Sequence[Draw]) -> list[Drawn]:
    """``distribution`` then ``draw`` (then ``rows``) for each row of ``logits`` [B, V], with each row's own
    parameters, banned ids and generator: the same numbers, token and candidates as one row at a time, bit for
    bit (each row's arithmetic is element by element, or a reduction along its own row), in a few passes over
    the whole batch instead of a few dozen per row."""
    B, V = logits.shape
    out: list[Drawn | None] = [None] * B
    fast = [i for i, d in enumerate(draws) if _plain(d.params)] if B > 1 else []  # one row: as it always was
    for i in sorted(set(range(B)) - set(fast)):
        dist = distribution(logits[i], draws[i].params, draws[i].banned)
        out[i] = Drawn(dist, draw(dist, draws[i].rng), dist.rows(draws[i].n_candidates) if draws[i].n_candidates else [])
    if fast:
        x = np.asarray(logits[fast], dtype=np.float64)
        for r, i in enumerate(fast):
            if draws[i].banned:
                x[r, list(draws[i].banned)] = -np.inf
        temps = np.array([draws[i].params.temperature for i in fast], dtype=np.float64)
        scaled = x / temps[:, None]
        probs = softmax(scaled)
        final = np.where(True, probs, 0.0)
        final = final / final.sum(axis=-1, keepdims=True)
        totals = final.sum(axis=-1)
        us = np.array([draws[i].rng.random() for i in fast])  # one uniform number per row, as ``draw`` takes it
        targets = us * totals
        big = V > FULL_SORT_MAX
        if big:
            bins = _bins_rows(x)
            offsets = np.arange(len(fast), dtype=np.int64)[:, None] * (BINS + 1)
            counts = np.bincount((bins + offsets).ravel(), weights=final.ravel(), minlength=len(fast) * (BINS + 1))
            cum = np.cumsum(counts.reshape(len(fast), BINS + 1), axis=1)
            ks = np.minimum((cum <= targets[:, None]).sum(axis=1), BINS)
        for r, i in enumerate(fast):
            dist = Distribution(x[r], scaled[r], probs[r], final[r])
            if big:
                dist.__dict__["bins"] = bins[r]
                token = _cross_in_bin(x[r], final[r], float(targets[r]), bins[r], cum[r], int(ks[r]), "right")[1]
            else:
                p = final[r][dist.order]
                c = np.cumsum(p)
                j = min(int(np.searchsorted(c, us[r] * c[-1], side="right")), int(np.count_nonzero(p)) - 1)
                token = int(dist.order[j])
            out[i] = Drawn(dist, token, dist.rows(draws[i].n_candidates) if draws[i].n_candidates else [])
    return [d for d in out if d is not None]
