"""Prefill time of a request whose prefix is read from the prompt cache, against the same request uncached.

    .venv/bin/python bench/caching.py [--repeats 21] [--total 500]

The prompt is about 500 tokens: a system prompt of exactly 256, 384 or 448 tokens (the cached
prefix, which must end at a turn boundary) and a user question that fills the rest. Each request
goes through the engine (``Engine.stream`` with ``max_tokens=1``) as the API and the pages run it:
once uncached, once with the system prompt's keys and values read from a ``PromptCache`` written
by an earlier identical request. Both are timed in the same process, interleaved, and the median
of the repeats is reported; the machine may be shared, so read the ratios (uncached / cached).
The speed-up columns are all uncached / cached: "speed-up" of the median prefill times (the
target), "best-run" of the fastest runs, "TTFT" of the median times to first token (which also
count looking up and copying the cached keys and values), "CPU time" of the median CPU time of the
whole request in this thread (unaffected by other processes taking turns on the cores, so the
steadiest figure on a busy machine), and "ideal" is prompt tokens / tokens computed, the saving if
prefill time were proportional to the tokens computed.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import explainer.llm  # noqa: E402,F401  first: it asks for one BLAS thread, which only counts before numpy loads
from explainer.lifecycle.engine import Engine  # noqa: E402
from explainer.lifecycle.payload import parse_request  # noqa: E402
from explainer.lifecycle.prompt_cache import PromptCache  # noqa: E402

PREFIXES = (256, 384, 448)
TARGET = (448, 5.0)  # a 448-token cached prefix should cut prefill at least 5×
TEXT = (
    "The scheduler reads every DAG file, works out which runs are due, and queues their tasks. "
    "A task that fails is retried after its retry delay, up to the number of retries it allows. "
    "PostgreSQL keeps the state of every task instance, so a restarted scheduler picks up where it stopped. "
    "Pools limit how many tasks of one kind run at once, and priority weights decide which queued task goes first. "
    "Sensors wait for something outside the DAG: a file, a partition, or another DAG's task. "
)
QUESTION = "Given all of that, why would a run that was due at midnight still be queued at two in the morning, and what should I check first? "


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def body(system: str, question: str) -> dict:
    return {"model": "claude-sonnet-4-6", "max_tokens": 1, "temperature": 0,
            "system": [{"type": "text", "text": system, "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
            "messages": [{"role": "user", "content": question}]}


def exact_text(count, want: int, source: str) -> str:
    """A prefix of (repeated) ``source`` whose token count is exactly ``want``, found by trimming characters."""
    text = source
    while count(text) < want:
        text += source
    lo, hi = 0, len(text)  # the shortest prefix with at least ``want`` tokens
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if count(text[:mid]) < want else (lo, mid)
    for end in range(lo, min(len(text), lo + 40)):  # BPE can skip a count: look a little further
        if count(text[:end]) == want:
            return text[:end]
    raise ValueError(f"no prefix of the text has exactly {want} tokens")


def build(engine: Engine, prefix: int, total: int) -> dict:
    """A body whose system turn ends at token ``prefix`` and whose prompt has ``total`` tokens."""
    def segments(system, question):
        return engine.prompt_segments(parse_request(body(system, question)))

    system = exact_text(lambda t: segments(t or ".", "?")[1]["system"], prefix, TEXT)
    question = exact_text(lambda q: len(segments(system, q or "?")[0]), total, QUESTION)
    ids, ends = segments(system, question)
    assert ends["system"] == prefix and len(ids) == total, (ends, len(ids))
    return body(system, question)


def measure(engine: Engine, b: dict, repeats: int) -> dict:
    req = parse_request(b)
    cache = PromptCache(clock=Clock())
    list(engine.stream(req, prompt_cache=cache))  # request 1 writes the prefix
    list(engine.stream(req))  # warm-up of the uncached path
    runs: dict[str, list[dict]] = {"uncached": [], "cached": []}
    for i in range(repeats):
        order = ("uncached", "cached") if i % 2 == 0 else ("cached", "uncached")
        for kind in order:
            cpu = time.thread_time()
            events = list(engine.stream(req, prompt_cache=cache if kind == "cached" else None))
            cpu = time.thread_time() - cpu
            usage = next(e for e in events if e["type"] == "message_start")["message"]["usage"]
            if kind == "cached":
                assert usage["cache_read_input_tokens"] > 0, usage
            runs[kind].append(events[-1]["timings"] | {"cpu_ms": cpu * 1000})
    med = {kind: {k: statistics.median(t[k] for t in ts) for k in ("prefill_ms", "time_to_first_token_ms", "cpu_ms")}
           for kind, ts in runs.items()}
    best = {kind: min(t["prefill_ms"] for t in ts) for kind, ts in runs.items()}
    return {"computed": runs["cached"][0]["prefill_tokens"], "total": runs["uncached"][0]["prefill_tokens"], "best": best, **med}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=21)
    ap.add_argument("--total", type=int, default=500)
    args = ap.parse_args()
    engine = Engine()
    print(f"Prompt of {args.total} tokens on {engine.model.n_params:,}-parameter bundled model; "
          f"median of {args.repeats} interleaved repeats, max_tokens=1.\n")
    head = (f"{'cached prefix':>13}  {'computed':>8}  {'uncached ms':>11}  {'cached ms':>9}  {'speed-up':>8}  "
            f"{'best-run':>8}  {'TTFT':>6}  {'CPU time':>8}  {'ideal':>6}")
    print(head)
    print("-" * len(head))
    results = {}
    for prefix in PREFIXES:
        r = measure(engine, build(engine, prefix, args.total), args.repeats)
        u, c = r["uncached"], r["cached"]
        ratio = u["prefill_ms"] / c["prefill_ms"]
        results[prefix] = ratio
        print(f"{prefix:>13}  {r['computed']:>8}  {u['prefill_ms']:>11.2f}  {c['prefill_ms']:>9.2f}  {ratio:>7.1f}×  "
              f"{r['best']['uncached'] / r['best']['cached']:>7.1f}×  "
              f"{u['time_to_first_token_ms'] / c['time_to_first_token_ms']:>5.1f}×  {u['cpu_ms'] / c['cpu_ms']:>7.1f}×  "
              f"{r['total'] / r['computed']:>5.1f}×")
    n, want = TARGET
    print(f"\nTarget: a {n}-token cached prefix cuts prefill by at least {want:g}×: "
          f"measured {results[n]:.1f}× ({'met' if results[n] >= want else 'not met'} on this run).")


if __name__ == "__main__":
    main()
