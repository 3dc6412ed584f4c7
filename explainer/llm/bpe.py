"""Byte-pair encoding's merge step, shared by the bundled tokenizer and every ``tokenizer.json``.

A chunk of text (one piece of the pre-tokenizer's split) starts as one token per byte; merges
are then applied in order of rank. This is the rule of the ``tokenizers`` library: one occurrence
at a time, the lowest-ranked pair first, then the leftmost. The candidate pairs wait in a heap
ordered by (rank, position), and a merge only looks at its two new neighbours, so a chunk of n
bytes takes O(n log n) (rescanning the whole chunk after every merge is quadratic: a 1 MB word
took minutes).

For a merge list where every merge comes after the merges that make its parts (the bundled
tokenizer's, learned by ``training/train_tokenizer.py``) this equals the textbook loop "merge every
occurrence of the lowest-ranked pair, then look again": a merge of rank r can only form pairs of
rank above r. ``tokenizer.json`` files may break that order; the heap's rule is then the one the
checkpoint was trained with.

Example (two merges: (1, 2) -> 10, then (10, 3) -> 11):
    >>> merge([1, 2, 3, 1, 2], {(1, 2): 0, (10, 3): 1}, [10, 11])
    (11, 10)
    >>> steps = []
    >>> merge([1, 2, 1, 2], {(1, 2): 0}, [10], trace=steps)
    (10, 10)
    >>> [(s.rank, s.token, s.pieces) for s in steps]  # both occurrences of one rank make one step
    [(0, 10, (10, 10))]
"""
from __future__ import annotations

import heapq
import sys
from collections.abc import Callable, Sequence

from explainer.llm import budget
from explainer.llm.interface import MergeStep, TokenizerError

CACHE_MAX_CHUNK = 64  # characters: longer chunks are encoded every time, never cached
CACHE_MAX_BYTES = 4 * 1024 * 1024  # the chunk cache of one tokenizer, approximately


def utf8(text: str) -> bytes:
    """The text's UTF-8 bytes; a lone surrogate (not valid Unicode) is a :class:`TokenizerError` saying where."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise TokenizerError(
            f"text contains a lone surrogate (U+{ord(text[exc.start]):04X} at index {exc.start}); "
            "it is not valid Unicode and cannot be encoded as UTF-8"
        ) from None


def merge_limit(max_merges: int | None, default: int, available: int) -> int:
    """How many merges an encoding uses: ``default`` (the model's) unless asked, never more than there are."""
    if max_merges is None:
        return default
    return max(0, min(int(max_merges), available))


def merge(ids: list[int], ranks: dict[tuple[int, int], int], merge_ids: Sequence[int], limit: int | None = None,
          trace: list[MergeStep] | None = None) -> tuple[int, ...]:
    """Apply the merges of rank below ``limit`` (all by default) to a chunk's byte tokens ``ids``.

    ``ranks`` maps a pair of ids to its merge's rank; ``merge_ids[r]`` is the id merge r makes.
    ``trace`` gets one step per rank: the merges of one rank that follow each other (every occurrence
    of one pair) make one step, as in the textbook loop.
    """
    limit = len(merge_ids) if limit is None else limit
    ids = list(ids)
    n = len(ids)
    nxt = list(range(1, n + 1))  # n means "no next"
    prv = list(range(-1, n - 1))
    alive = [True] * n

    def queue(heap: list[tuple[int, int, int, int]], i: int, j: int) -> None:
        r = ranks.get((ids[i], ids[j]))
        if r is not None and r < limit:
            heapq.heappush(heap, (r, i, ids[i], ids[j]))

    heap: list[tuple[int, int, int, int]] = []
    for i in range(n - 1):
        queue(heap, i, i + 1)
    pops = 0
    while heap:
        pops += 1
        if not pops & 1023:  # a long chunk (a run of one letter) takes a while: stop when the request does
            budget.check()
        r, i, a, b = heapq.heappop(heap)
        j = nxt[i] if alive[i] else n
        if j >= n or ids[i] != a or ids[j] != b:
            continue  # stale: one side was merged since this pair was queued
        ids[i] = merge_ids[r]
        alive[j] = False
        k = nxt[j]
        nxt[i] = k
        if k < n:
            prv[k] = i
        if prv[i] >= 0:
            queue(heap, prv[i], i)
        if k < n:
            queue(heap, i, k)
        if trace is not None:
            step = MergeStep(r, a, b, ids[i], _alive(ids, nxt))
            if trace and trace[-1].rank == r:
                trace[-1] = step
            else:
                trace.append(step)
    return _alive(ids, nxt)


def _alive(ids: list[int], nxt: list[int]) -> tuple[int, ...]:
    out, i = [], 0
    while i < len(ids):
        out.append(ids[i])
        i = nxt[i]
    return tuple(out)


def _entry_bytes(chunk: str, ids: tuple[int, ...]) -> int:
    """About what one cache entry costs: the key tuple, its string, the ids tuple and its ints
    (a merged id is a new int object), the dict slot."""
    return 64 + sys.getsizeof(chunk) + 40 + 36 * len(ids) + 100


class ChunkCache:
    """A tokenizer's memory of chunks it has merged: (chunk, merge limit) -> ids.

    Text repeats its words, so most chunks are looked up rather than merged again. Only chunks
    shorter than ``CACHE_MAX_CHUNK`` characters are kept (long ones are rare repeats, not worth
    their bytes), and when the entries' estimated size reaches ``CACHE_MAX_BYTES`` the cache starts
    over, rather than track recency on the hot path.
    """

    def __init__(self) -> None:
        self.entries: dict[tuple[str, int], tuple[int, ...]] = {}
        self.nbytes = 0

    def ids(self, chunk: str, limit: int, compute: Callable[[bytes, int], tuple[int, ...]]) -> tuple[int, ...]:
        """The cached ids of ``chunk`` at ``limit``, or ``compute(its UTF-8 bytes, limit)``'s (kept if the chunk is short)."""
        key = (chunk, limit)
        ids = self.entries.get(key)
        if ids is None:
            ids = compute(chunk.encode("utf-8"), limit)
            if len(chunk) < CACHE_MAX_CHUNK:
                if self.nbytes >= CACHE_MAX_BYTES:
                    self.entries.clear()
                    self.nbytes = 0
                self.entries[key] = ids
                self.nbytes += _entry_bytes(chunk, ids)
        return ids
