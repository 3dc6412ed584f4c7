"""Prompt caching: keep the KV cache of a marked prefix for a while, and reuse it.

A request marks up to four breakpoints with ``cache_control``. Each breakpoint names a
prefix of the prompt (everything before it, in the order tools → system → messages); the
prefix's token ids are hashed, and after the request runs, the keys and values the model
computed for those positions are stored under that hash with the breakpoint's time-to-live
(5 minutes or 1 hour). A later request whose prompt starts with the same ids finds the
longest stored prefix, copies its KV cache, and computes only the rest: that is the real
saving, measured in prefill time.

Usage is reported as the Messages API reports it:
    cache_read_input_tokens      the prefix read from the cache
    cache_creation_input_tokens  tokens written to the cache by this request (beyond what was read)
    input_tokens                 the rest: neither read nor written
and ``cache_creation`` splits the written tokens by TTL.

The cache works at turn boundaries: a breakpoint on any block of a turn covers the prefix
through the end of that turn, as the tokenizer's ``encode_chat_segments`` places it (the
template's closing of a turn is encoded apart from what follows, so such a prefix is the same
whatever comes after it). Prefixes shorter than
``MIN_CACHEABLE_TOKENS`` are not cached, as with the real minimums (1,024+ tokens on Claude).

Example:
    >>> pc = PromptCache(clock=lambda: 0.0)
    >>> plan = pc.plan(list(range(100)), [(80, "5m")])
    >>> plan.read, plan.write
    (0, 80)
"""
from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypedDict

import numpy as np

from explainer.lifecycle.lru import sizeof
from explainer.llm.interface import Cache

if TYPE_CHECKING:  # (the frames' module brings pydantic; the cache needs only their shapes)
    from explainer.lifecycle.frames import CacheBreakpoint, CacheCreation

MIN_CACHEABLE_TOKENS = 64
# Keys and values are large for a real model (2,000 tokens of a 135M Llama: about 92 MB), so the cache is
# bounded in bytes as well as in entries: the least recently used entries go first.
DEFAULT_MAX_BYTES = 256 * 2**20
TTL_SECONDS = {"5m": 300.0, "1h": 3600.0}


class CacheUsage(TypedDict):
    """The usage block's cache fields for a planned request (the engine adds ``output_tokens``)."""

    input_tokens: int
    cache_creation_input_tokens: int
    cache_read_input_tokens: int
    cache_creation: CacheCreation


class Peeked(TypedDict):
    """One breakpoint as :meth:`PromptCache.peek` finds it."""

    length: int
    ttl: str
    key: str
    cached: bool
    expires_in: float | None  # seconds left, when cached


@dataclass
class Entry:
    kv: Cache  # holding exactly ``length`` positions
    length: int
    ttl: str
    expires_at: float
    nbytes: int = 0  # what it keeps alive (lifecycle.lru.sizeof)


@dataclass
class Plan:
    """What a request will do with the cache, decided before it runs."""

    total: int  # prompt tokens
    read: int  # tokens read from the cache (0 on a miss)
    hit: Entry | None
    hit_key: str | None
    writes: list[tuple[int, str, str]] = field(default_factory=list)  # (prefix length, ttl, key) to store after the run
    breakpoints: list[CacheBreakpoint] = field(default_factory=list)  # per breakpoint: length, ttl, outcome (for pages and traces)

    @property
    def write(self) -> int:
        return max((n for n, _, _ in self.writes), default=self.read) - self.read if self.writes else 0

    def usage(self) -> CacheUsage:
        by_ttl = {"5m": 0, "1h": 0}
        start = self.read
        for n, ttl, _ in sorted(self.writes):
            by_ttl[ttl] += max(0, n - start)
            start = max(start, n)
        return {
            "input_tokens": self.total - self.read - self.write,
            "cache_creation_input_tokens": self.write,
            "cache_read_input_tokens": self.read,
            "cache_creation": {"ephemeral_5m_input_tokens": by_ttl["5m"], "ephemeral_1h_input_tokens": by_ttl["1h"]},
        }


def prefix_key(ids: list[int], model_id: str = "") -> str:
    return hashlib.sha256(model_id.encode() + np.asarray(ids, dtype=np.int32).tobytes()).hexdigest()


class PromptCache:
    """Prefix hash -> KV cache, with TTLs refreshed on every hit. Thread-safe; bounded in entries and in
    bytes (the least recently used goes; an entry larger than the whole budget is not kept)."""

    def __init__(self, model_id: str = "", max_entries: int = 32, min_tokens: int = MIN_CACHEABLE_TOKENS,
                 clock: Callable[[], float] = time.time, max_bytes: int = DEFAULT_MAX_BYTES):
        self.model_id, self.max_entries, self.min_tokens, self.clock = model_id, max_entries, min_tokens, clock
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def plan(self, ids: list[int], breakpoints: list[tuple[int, str]], now: float | None = None) -> Plan:
        """Look up every breakpoint's prefix (longest first); refresh the TTL of the one that hits."""
        now = self.clock() if now is None else now
        marks = sorted({(min(n, len(ids)), ttl) for n, ttl in breakpoints})
        keyed = [(n, ttl, prefix_key(ids[:n], self.model_id)) for n, ttl in marks]
        hit, hit_key, read = None, None, 0
        report: list[CacheBreakpoint] = []
        with self._lock:
            for n, _ttl, key in sorted(keyed, reverse=True):
                e = self._entries.get(key)
                if e is not None and e.expires_at <= now:
                    del self._entries[key]
                    self._bytes -= e.nbytes
                    e = None
                if e is not None and hit is None:
                    hit, hit_key, read = e, key, n
                    e.expires_at = now + TTL_SECONDS[e.ttl]  # a hit refreshes the TTL
                    self._entries.move_to_end(key)
        writes = []
        for n, ttl, key in keyed:
            if n < self.min_tokens:
                outcome = f"not cached: shorter than the minimum of {self.min_tokens} tokens"
            elif n < read:
                outcome = "inside the prefix that was read"
            elif n == read:
                outcome = "hit: read from the cache"
            else:
                outcome = "miss: written after this request"
                writes.append((n, ttl, key))
            report.append({"length": n, "ttl": ttl, "outcome": outcome})
        return Plan(total=len(ids), read=read, hit=hit, hit_key=hit_key, writes=writes, breakpoints=report)

    def peek(self, ids: list[int], breakpoints: list[tuple[int, str]], now: float | None = None) -> list[Peeked]:
        """What a lookup would find for each breakpoint now, without touching the cache (no TTL refresh).

        For pages that show the live cache: per breakpoint, its length, the key and whether an
        unexpired entry holds it (and for how many more seconds)."""
        now = self.clock() if now is None else now
        out: list[Peeked] = []
        with self._lock:
            for n, ttl in sorted({(min(n, len(ids)), ttl) for n, ttl in breakpoints}):
                key = prefix_key(ids[:n], self.model_id)
                e = self._entries.get(key)
                left = e.expires_at - now if e is not None else None
                out.append({"length": n, "ttl": ttl, "key": key, "cached": left is not None and left > 0,
                            "expires_in": round(left, 1) if left is not None and left > 0 else None})
        return out

    def store(self, plan: Plan, kv: Cache, now: float | None = None) -> None:
        """After a run: keep the first n positions of ``kv`` for every prefix the plan writes."""
        now = self.clock() if now is None else now
        copies = []
        for n, ttl, key in plan.writes:  # copied and weighed outside the lock: megabytes for a real model
            copy = kv.copy(length=n)
            copies.append((key, Entry(copy, n, ttl, now + TTL_SECONDS[ttl], sizeof(copy))))
        with self._lock:
            for key, entry in copies:
                if entry.nbytes > self.max_bytes:
                    continue
                old = self._entries.pop(key, None)
                self._bytes -= old.nbytes if old is not None else 0
                self._entries[key] = entry
                self._bytes += entry.nbytes
            while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
                self._bytes -= self._entries.popitem(last=False)[1].nbytes

    @property
    def nbytes(self) -> int:
        """Bytes the stored keys and values keep alive."""
        return self._bytes

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0
