"""The Caching stage's experiment: one request sent twice through a private prompt cache whose clock the page
moves, and what caching then costs over many requests (break-even).

The first request does not depend on the clock, so its result and the keys and values it stored are kept per
(scenario, breakpoints); moving the clock runs only the second request, on a fresh cache that holds exactly
what the first request left in it. The two prefills are timed the same way (:func:`measure_prefills`).
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

from explainer.lifecycle import frames as fr
from explainer.lifecycle import lru
from explainer.lifecycle.engine import BUNDLED_MODEL_NAME
from explainer.lifecycle.prompt_cache import PromptCache
from explainer.llm.budget import check as check_budget
from explainer.llm.interface import Cache

N_MAX = 50  # requests on the break-even chart
PREFILL_RUNS = 5  # timed runs of each request's prefill, after a warm-up run of each: the page shows their median
CACHE_ID = f"{BUNDLED_MODEL_NAME}:caching-page"  # salts the keys of the page's private caches (one model's each)


# ---- two runs through a private cache ------------------------------------------------------------

class FakeClock:
    """The page's simulated time, in seconds: the cache reads it, the page moves it."""

    def __init__(self, t: float = 0.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def summarise(events: list[dict]) -> dict:
    """What the page shows of one request: usage as the API reports it, the cache report, timings."""
    prompt, done = events[0], events[-1]
    start = next(e for e in events if e["type"] == fr.MESSAGE_START)["message"]["usage"]
    return {
        "start_usage": start,  # as message_start carries it (output_tokens 0)
        "usage": done["usage"],  # with the final output_tokens, as a non-streamed response has it
        "cache": prompt["cache"],
        "prompt_tokens": prompt["input_tokens"],
        "timings": done["timings"],
        "text": "".join(e["delta"]["text"] for e in events if e["type"] == fr.CONTENT_BLOCK_DELTA),
        "stop_reason": done["stop_reason"],
    }


@dataclass
class First:
    result: dict
    ids: list[int]
    marks: list[tuple[int, str]]  # (prefix length, ttl) as the engine plans them
    kv: Cache | None  # the longest stored prefix's keys and values, as request 1's cache kept them


# Bounded by bytes under the shared budget: a first request keeps up to ~4 MB of keys and values.
_FIRSTS = lru.LRU("caching page: first requests")
_PAIRS = lru.LRU("caching page: request pairs")
_TIMINGS = lru.LRU("caching page: prefill timings")  # per request 1 and the tokens each request computes (any clock)


def run_first(engine, req, seed: int) -> First:
    """Request 1 at t = 0 on an empty cache; keeps the keys and values it stored (trimmed to their length)."""
    clock = FakeClock(0.0)
    cache = PromptCache(model_id=CACHE_ID, clock=clock)
    events = list(engine.stream(req, seed=seed, prompt_cache=cache))
    ids, ends = engine.prompt_segments(req)
    marks = [(ends[bp.segment], bp.ttl) for bp in req.breakpoints if bp.segment in ends]
    # the longest prefix it wrote (looked up at t = 0: nothing changes); the private cache goes, its entry stays
    kv = cache.plan(ids, marks).hit.kv if len(cache) else None
    return First(summarise(events), ids, marks, kv)


def cache_after_first(engine, first: First, clock: FakeClock) -> PromptCache:
    """A fresh cache holding exactly what request 1 left in its own: the same entries, stored at t = 0."""
    cache = PromptCache(model_id=CACHE_ID, clock=clock)
    if first.kv is not None:  # store() copies it: request 1's entry stays as it was for the next clock
        cache.store(cache.plan(first.ids, first.marks, now=0.0), first.kv, now=0.0)
    return cache


def measure_prefills(engine, ids: list[int], kv: Cache | None, computed: list[int], runs: int = PREFILL_RUNS) -> list[float]:
    """Each request's prefill timed the same way, in milliseconds: the model reads the last ``computed[i]``
    tokens of ``ids`` after a copy of the cached keys and values for the rest (none when it computes them all).
    Each is run once to warm up, then ``runs`` times, the requests taking turns so that both meet the same load
    on a shared server; the median of each is kept. The copies are made before the clock starts."""
    model = engine.model

    def once(n: int) -> float:
        start = len(ids) - n
        cache = kv.copy(length=start) if start and kv is not None else model.new_cache()
        t0 = time.perf_counter()
        model.forward(ids[cache.length:], cache=cache)
        return (time.perf_counter() - t0) * 1000

    for n in computed:
        once(n)
    times: list[list[float]] = [[] for _ in computed]
    for _ in range(runs):
        check_budget()  # long work on a request: stop here if the page's time is up
        for i, n in enumerate(computed):
            times[i].append(once(n))
    return [round(statistics.median(t), 2) for t in times]


def run_twice(engine, scenario, body: dict, req, marks_key: str, clock_minutes: int) -> dict:
    """Request 1 at t = 0 and request 2 at t = ``clock_minutes``, through one simulated cache."""
    key = (scenario.key(), engine.loaded.fingerprint, marks_key)
    first = _FIRSTS.get_or_compute(key, lambda: run_first(engine, req, scenario.seed))
    pair_key = (*key, clock_minutes)
    pair = _PAIRS.get(pair_key)
    if pair is None:
        clock = FakeClock(0.0)
        cache = cache_after_first(engine, first, clock)
        clock.t = clock_minutes * 60.0
        second = summarise(list(engine.stream(req, seed=scenario.seed, prompt_cache=cache)))
        computed = (first.result["timings"]["prefill_tokens"], second["timings"]["prefill_tokens"])
        ms = _TIMINGS.get_or_compute((*key, computed), lambda: measure_prefills(engine, first.ids, first.kv, list(computed)))
        pair = {"first": first.result, "second": second, "prefill_ms": ms}
        _PAIRS.put(pair_key, pair)
    return pair


# ---- money ---------------------------------------------------------------------------------------



def _r(x: float | None) -> float | None:
    return None if x is None else float(f"{x:.6g}")


def break_even(plain: float, first: float, hit: float, n_max: int = N_MAX) -> dict:
    """Cumulative cost of N requests without caching (N × plain) and with it (first + (N − 1) × hit)."""
    cheaper_from = next((n for n in range(1, n_max + 1) if first + (n - 1) * hit < plain * n - 1e-15), None)
    # where the two lines meet, counting requests as a continuous x (the cached line starts higher and falls behind)
    crossing = max(1.0, (first - hit) / (plain - hit)) if plain - hit > 1e-15 else None
    return {
        "cheaper_from": cheaper_from,
        "crossing": None if crossing is None else round(crossing, 3),
        "plain_total": plain * n_max, "cached_total": first + (n_max - 1) * hit, "miss_total": first * n_max,
    }
