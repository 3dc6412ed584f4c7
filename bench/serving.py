"""Many requests at once: continuous batching's throughput, latency, interference and batch invariance.

    .venv/bin/python bench/serving.py                               # the bundled model
    .venv/bin/python bench/serving.py --model var/bench/smollm2-135m-random   # and a SmolLM2-135M-shaped one

``scripts/make_random_checkpoint.py`` makes the SmolLM2-135M-shaped folder (it needs the train extras).
Every figure is a ratio against a reference run in the same process, on the same machine, one after
the other (the machine is shared: read the ratios). For each model:

1. **Single stream against the code before batching** (``--against``, a git revision): the same request
   decoded alone by the engine with today's core and with that revision's forward pass, on the same
   weights, alternating, median of the repeats.
2. **Concurrency, through the engine**: for c in 1, 4, 16, 32, the same c requests (seeded, temperature
   0.7, varied prompts) one at a time, then all at once (a thread each, as the server's workers): the
   aggregate output tokens/s of each and their ratio; the median and p95 gap between two tokens of one
   stream; how many replies are identical to the one-at-a-time reply.
3. **Through the API**: 16 requests through the official SDK against a live Daphne, one at a time and
   all at once: aggregate tokens/s and its ratio, and identical replies (the API samples with seed 0).
4. **A long prompt arriving mid-stream**: while 8 streams decode, a prompt as long as the window allows
   (2,000 tokens, or the window's size less the reply) arrives; the longest gap between two tokens of
   the other streams while it prefills, against their median gap.
5. **64 concurrent clients** under a KV budget of a quarter of what they would need at once: the peak
   KV bytes against the budget, and every reply complete and identical to its one-at-a-time reply.
"""
from __future__ import annotations

import argparse
import importlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "explainer.settings")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as the app runs (explainer/__init__.py)

import numpy as np  # noqa: E402

from explainer.lifecycle import frames as fr  # noqa: E402
from explainer.lifecycle.engine import Engine  # noqa: E402
from explainer.lifecycle.payload import parse_request  # noqa: E402
from explainer.llm.batching import Scheduler  # noqa: E402

QUESTIONS = ["What is a Python list and how do I sort one?", "Explain decorators with an example.",
             "How do I read a CSV file with pandas and sum a column?", "What is recursion?",
             "How does HTTP caching work?", "What does git rebase do, and when should I avoid it?",
             "Why is my SQL query slow?", "What is a closure in JavaScript?", "How do I reverse a string in Go?",
             "Explain the difference between a process and a thread.", "What is a race condition?",
             "How do I write a unit test with pytest?", "What is an index in a database?",
             "How does TLS keep a connection private?", "What is a Docker image?", "Explain big-O notation."]


def body(i: int, max_tokens: int, model: str, words: int = 0) -> dict:
    text = QUESTIONS[i % len(QUESTIONS)] + (" Please be thorough." * (i // len(QUESTIONS)))
    if words:
        text = " ".join(["The planner reads the table statistics before it picks a scan."] * (words // 11))
    return {"model": model, "max_tokens": max_tokens, "temperature": 0.7,
            "messages": [{"role": "user", "content": text}]}


def run(engine: Engine, b: dict, seed: int, marks: list[float] | None = None) -> list[int]:
    """One request through the engine: its tokens (and, in ``marks``, when each arrived)."""
    out = []
    for e in engine.stream(parse_request(b), seed=seed):
        if e["type"] == fr.TOKEN:
            out.append(e["token"])
            if marks is not None:
                marks.append(time.perf_counter())
    return out


def gaps_ms(marks: list[list[float]]) -> list[float]:
    return [1000 * (b - a) for m in marks for a, b in zip(m, m[1:])]


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q)) if xs else float("nan")


def concurrency(engine: Engine, model: str, max_tokens: int, levels: list[int]) -> dict[int, list[int]]:
    print(f"\n2. concurrency through the engine ({max_tokens} tokens at most per reply, temperature 0.7, seeded)")
    print(f"{'streams':>8} {'alone tok/s':>12} {'together tok/s':>15} {'ratio':>7} {'gap ms median/p95 alone':>24} "
          f"{'together':>16} {'identical':>10}")
    alone: dict[int, list[int]] = {}
    for c in levels:
        ids = list(range(c))
        marks_a: list[list[float]] = []
        t = time.perf_counter()
        for i in ids:  # one at a time, timed at every level (the first run of each request is its reference)
            m: list[float] = []
            alone.setdefault(i, run(engine, body(i, max_tokens, model), i, m))
            marks_a.append(m)
        ta = time.perf_counter() - t
        marks_t: list[list[float]] = [[] for _ in ids]
        got: dict[int, list[int]] = {}
        barrier = threading.Barrier(c)

        def one(i: int, barrier: threading.Barrier = barrier, got: dict = got, marks: list = marks_t) -> None:
            barrier.wait()
            got[i] = run(engine, body(i, max_tokens, model), i, marks[i])
        t = time.perf_counter()
        with ThreadPoolExecutor(c) as pool:
            list(pool.map(one, ids))
        tt = time.perf_counter() - t
        n = sum(len(got[i]) for i in ids)
        same = sum(got[i] == alone[i] for i in ids)
        ga, gt = gaps_ms(marks_a), gaps_ms(marks_t)
        print(f"{c:8d} {n / ta:12.0f} {n / tt:15.0f} {ta / tt:6.2f}x {pct(ga, 50):11.2f} / {pct(ga, 95):6.2f}   "
              f"{pct(gt, 50):7.2f} / {pct(gt, 95):6.2f} {same:5d}/{c}")
    return alone


def single_stream(new: Engine, old: Engine | None, model: str, max_tokens: int, repeats: int) -> None:
    print(f"\n1. single stream, decode tokens/s (engine, {max_tokens} tokens, median of {repeats})")
    b = body(0, max_tokens, model)

    def rate(engine: Engine) -> float:
        done = [e for e in engine.stream(parse_request(b), seed=0) if e["type"] == fr.DONE][0]
        return done["usage"]["output_tokens"] / (done["timings"]["decode_ms"] / 1000)
    rate(new)
    if old is None:
        print(f"   now {statistics.median(rate(new) for _ in range(repeats)):.0f} (no --against revision)")
        return
    rate(old)
    a, b_ = [], []
    for _ in range(repeats):
        a.append(rate(new))
        b_.append(rate(old))
    print(f"   now {statistics.median(a):.0f}, before {statistics.median(b_):.0f}: {statistics.median(a) / statistics.median(b_):.2f}x "
          "(target: no more than 10% slower, >= 0.90x)")


def long_prompt(engine: Engine, model: str, words: int) -> None:
    print("\n4. a long prompt arriving while 8 streams decode")
    marks: list[list[float]] = [[] for _ in range(8)]
    arrived: dict[str, float] = {}
    started = threading.Barrier(9)

    def stream(i: int) -> None:
        started.wait()
        run(engine, body(i, 160, model), i, marks[i])

    def late() -> None:
        started.wait()
        while min(len(m) for m in marks) < 10:  # the others are decoding
            time.sleep(0.001)
        arrived["t0"] = time.perf_counter()
        b = body(0, 8, model, words=words)
        events = engine.stream(parse_request(b), seed=0)
        for e in events:
            if e["type"] == fr.PROMPT:
                arrived["tokens"] = e["input_tokens"]
            if e["type"] == fr.TOKEN:
                arrived["t1"] = time.perf_counter()
                break
        for _ in events:
            pass
    with ThreadPoolExecutor(9) as pool:
        list(pool.map(lambda f: f(), [lambda i=i: stream(i) for i in range(8)] + [late]))
    t0, t1 = arrived["t0"], arrived["t1"]
    during = [1000 * (b - a) for m in marks for a, b in zip(m, m[1:]) if b > t0 and a < t1]
    before = [1000 * (b - a) for m in marks for a, b in zip(m, m[1:]) if b <= t0]
    print(f"   prompt of {arrived['tokens']} tokens, prefilled in {1000 * (t1 - t0):.0f} ms; the other streams' gap between "
          f"tokens: median {pct(before, 50):.1f} ms before, longest {max(during, default=0):.1f} ms during "
          "(target: the delay under 150 ms)")


def many_clients(engine: Engine, model: str, max_tokens: int, alone: dict[int, list[int]]) -> None:
    print("\n5. 64 concurrent clients under a small KV budget")
    probe = engine.model.new_cache()
    need = 0
    for i in range(64):
        n = len(engine.prompt_ids(parse_request(body(i, max_tokens, model)))) + max_tokens + 16
        probe = engine.model.new_cache()
        probe.reserve(min(engine.context_window, n))
        need += probe.nbytes
    budget = need // 4
    sched = Scheduler(engine.model, kv_budget_bytes=budget)
    old, engine.scheduler = engine.scheduler, sched
    try:
        got: dict[int, list[int]] = {}
        with ThreadPoolExecutor(64) as pool:
            for i, toks in zip(range(64), pool.map(lambda i: run(engine, body(i, max_tokens, model), i), range(64))):
                got[i] = toks
    finally:
        engine.scheduler = old
    rec = sched.record()
    for i in range(64):
        if i not in alone:
            alone[i] = run(engine, body(i, max_tokens, model), i)
    same = sum(got[i] == alone[i] for i in range(64))
    widest = max(len(s["rows"]) for s in rec["steps"])
    print(f"   KV needed by all at once {need / 2**20:.1f} MB, budget {budget / 2**20:.1f} MB, peak {rec['kv_peak_bytes'] / 2**20:.1f} MB "
          f"({'within' if rec['kv_peak_bytes'] <= budget else 'OVER'}); widest step {widest} rows; "
          f"{len(got)}/64 replies, {same}/64 identical to one at a time; {sum(r['tokens'] for r in rec['requests'])} rows in "
          f"steps for {sum(len(t) for t in got.values())} tokens (each reply's first token comes from its prefill)")


def api(model_name: str, models_dir: Path | None, max_tokens: int, n: int = 16, clients: int = 0) -> None:
    import logging

    import anthropic
    import django

    django.setup()
    for name in ("httpx", "httpx2"):
        logging.getLogger(name).setLevel(logging.WARNING)
    from tests.live_server import daphne

    print(f"\n3. through the API: {n} requests through the official SDK, one at a time and all at once")
    env = {"EXPLAINER_MODELS_DIR": str(models_dir)} if models_dir else {}
    # the development key's rate limits are the public API's defaults: this bench sends more than they allow
    env |= {"EXPLAINER_RATE_REQUESTS_PER_MINUTE": "100000", "EXPLAINER_RATE_INPUT_TOKENS_PER_MINUTE": "100000000",
            "EXPLAINER_RATE_OUTPUT_TOKENS_PER_MINUTE": "100000000"}
    with tempfile.TemporaryDirectory() as tmp, daphne(Path(tmp), EXPLAINER_REQUEST_TIMEOUT_S="600", **env) as srv:
        client = anthropic.Anthropic(base_url=srv["url"], api_key=srv["api_key"], max_retries=0, timeout=600)

        def call(i: int) -> tuple[str, int]:
            b = body(i, max_tokens, model_name)
            # (this SDK release has no temperature argument; the API still reads the field)
            extra = {"temperature": b.pop("temperature")}
            r = client.messages.create(**b, extra_body=extra)
            return "".join(b.text for b in r.content if b.type == "text"), r.usage.output_tokens
        call(0)  # warm: the server opens the model
        t = time.perf_counter()
        seq = [call(i) for i in range(n)]
        ts = time.perf_counter() - t
        t = time.perf_counter()
        with ThreadPoolExecutor(n) as pool:
            conc = list(pool.map(call, range(n)))
        tc = time.perf_counter() - t
        if clients:  # as many clients at once as the lane admits (workers + queue): every one answered, exactly
            ref = [call(i) for i in range(clients)]
            with ThreadPoolExecutor(clients) as pool:
                many = list(pool.map(call, range(clients)))
    tokens = sum(k for _, k in seq)
    same = sum(a[0] == b[0] for a, b in zip(seq, conc))
    print(f"   one at a time {tokens / ts:.0f} tok/s, all at once {sum(k for _, k in conc) / tc:.0f} tok/s: "
          f"{ts / tc:.2f}x; {same}/{n} replies identical")
    if clients:
        print(f"   {clients} clients at once: {len(many)}/{clients} answered, "
              f"{sum(a == b for a, b in zip(ref, many))}/{clients} identical to one at a time")


def old_engine(rev: str, new: Engine, folder: Path | None) -> Engine | None:
    """An engine on ``rev``'s forward pass (from git), with the same weights and tokenizer as ``new``."""
    files = {"layers.py": "explainer/llm/layers.py", "cache.py": "explainer/llm/hf/cache.py",
             "passes.py": "explainer/llm/hf/passes.py", "gpt2.py": "explainer/llm/hf/gpt2.py", "llama.py": "explainer/llm/hf/llama.py"}
    pkg = Path(tempfile.mkdtemp()) / "oldcore"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for name, path in files.items():
        try:
            src = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=ROOT, check=True, capture_output=True, text=True).stdout
        except subprocess.CalledProcessError:
            print(f"(cannot read {path} at {rev}: no comparison with the code before batching)")
            return None
        for mod in ("layers", "hf.cache", "hf.passes", "hf.gpt2", "hf.llama"):
            src = src.replace(f"explainer.llm.{mod} ", f"oldcore.{mod.split('.')[-1]} ")
        (pkg / name).write_text(src)
    sys.path.insert(0, str(pkg.parent))
    from explainer.llm.interface import LoadedModel
    if folder is None:
        from explainer.llm.model import as_gpt2_weights, read_weights
        config, weights, _ = read_weights()
        model = importlib.import_module("oldcore.gpt2").GPT2Model(config.as_gpt2(), as_gpt2_weights(config, weights))
    else:
        from explainer.llm.hf.weights import read_weights as read_hf
        model = importlib.import_module("oldcore.llama").LlamaModel(new.model.config, read_hf(folder, new.model.config))
        model.threads = getattr(new.model, "threads", 1)
    model.n_params = new.model.n_params
    loaded = new.loaded
    return Engine(LoadedModel(loaded.name, model, loaded.tokenizer, loaded.fingerprint, bundled=loaded.bundled, card=loaded.card))


def bench(folder: Path | None, against: str, repeats: int, levels: list[int], with_api: bool, parts: set[int]) -> None:
    if folder is None:
        engine, name, max_tokens, words = Engine(), "claude-haiku-4-5", 64, 320
    else:
        from explainer.llm.hf.loader import load_folder
        loaded = load_folder(folder)
        engine, name, max_tokens, words = Engine(loaded), folder.name, 64, 1500
    m = engine.model
    print(f"\n=== {engine.name}: {m.n_params:,} parameters, window {engine.context_window}, "
          f"batches of at most {engine.scheduler.max_batch if engine.scheduler else 1} rows")
    if 1 in parts:
        single_stream(engine, old_engine(against, engine, folder) if against else None, name, max_tokens, repeats)
    alone = concurrency(engine, name, max_tokens, levels) if 2 in parts else {}
    if with_api and 3 in parts:
        models_dir = None
        if folder is not None:
            models_dir = Path(tempfile.mkdtemp())  # the folder as hard links (the server refuses a symlinked folder)
            shutil.copytree(folder.resolve(), models_dir / folder.name, copy_function=os.link)
        api(name, models_dir, max_tokens, clients=64 if folder is None else 0)
        if models_dir is not None:
            shutil.rmtree(models_dir)
    if 4 in parts:
        long_prompt(engine, name, words)
    if 5 in parts:
        many_clients(engine, name, max_tokens if folder is None else 8, alone)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, action="append", default=[], help="a Hugging Face-layout folder (repeatable)")
    ap.add_argument("--skip-bundled", action="store_true")
    ap.add_argument("--against", default="b4a4890", help="git revision of the code before batching ('' to skip)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--levels", default="1,4,16,32")
    ap.add_argument("--no-api", action="store_true")
    ap.add_argument("--parts", default="1,2,3,4,5", help="which of the figures above to measure")
    args = ap.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    parts = {int(x) for x in args.parts.split(",")}
    if not args.skip_bundled:
        bench(None, args.against, args.repeats, levels, not args.no_api, parts)
    for folder in args.model:
        bench(folder, args.against, max(2, args.repeats // 2), levels, not args.no_api, parts)


if __name__ == "__main__":
    main()
