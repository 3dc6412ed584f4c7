"""Speed of a model: numpy (what the app runs) against PyTorch on the same weights.

    .venv/bin/pip install -e ".[train]"     # PyTorch and transformers, for the reference only
    .venv/bin/python bench/model.py                    # the bundled model
    .venv/bin/python bench/model.py --model PATH       # a Hugging Face folder, against transformers

For the bundled model: single-stream decode speed with a KV cache at 128 and 448 tokens of
context and the prefill time of 512 tokens. For ``--model``: decode speed at 128 tokens of
context and the prefill time of 256 tokens, against transformers on the same checkpoint
(float32, every core), with the targets of issue 15 (decode >= 25 tokens/s, prefill < 1.5 s).
``scripts/make_random_checkpoint.py`` makes a folder with SmolLM2-135M's exact shapes.
Each figure is the median of several repeats; the machine is shared, so read the ratios.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as the app runs (explainer/__init__.py); before numpy loads
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from explainer.llm.model import load_model  # noqa: E402


def numpy_decode(model, ctx: int, steps: int) -> float:
    rng = np.random.default_rng(0)
    prompt = rng.integers(300, model.config.vocab_size, size=ctx).tolist()
    cache = model.new_cache()
    logits = model.forward(prompt, cache=cache).logits[-1]
    t = time.perf_counter()
    for _ in range(steps):
        token = int(np.argmax(logits))
        logits = model.forward([token], cache=cache).logits[-1]
    return steps / (time.perf_counter() - t)


def numpy_prefill(model, n: int) -> float:
    ids = np.random.default_rng(1).integers(300, model.config.vocab_size, size=n).tolist()
    t = time.perf_counter()
    model.forward(ids)
    return time.perf_counter() - t


def torch_decode(ref, torch, vocab: int, ctx: int, steps: int) -> float:
    prompt = torch.from_numpy(np.random.default_rng(0).integers(300, vocab, size=(1, ctx)))
    with torch.no_grad():
        logits, past = ref.forward_cached(prompt)
        t = time.perf_counter()
        for _ in range(steps):
            token = logits[0, -1].argmax().view(1, 1)
            logits, past = ref.forward_cached(token, past)
        return steps / (time.perf_counter() - t)


def torch_prefill(ref, torch, vocab: int, n: int) -> float:
    ids = torch.from_numpy(np.random.default_rng(1).integers(300, vocab, size=(1, n)))
    with torch.no_grad():
        t = time.perf_counter()
        ref.forward_cached(ids)
        return time.perf_counter() - t


def median(fn, repeats: int) -> float:
    fn()  # warm-up
    return statistics.median(fn() for _ in range(repeats))


def hf_torch_decode(ref, torch, vocab: int, ctx: int, steps: int) -> float:
    prompt = torch.from_numpy(np.random.default_rng(0).integers(300, vocab, size=(1, ctx)))
    with torch.no_grad():
        out = ref(prompt, use_cache=True)
        past, logits = out.cache, out.logits
        t = time.perf_counter()
        for _ in range(steps):
            token = logits[0, -1].argmax().view(1, 1)
            out = ref(token, cache=past, use_cache=True)
            past, logits = out.cache, out.logits
        return steps / (time.perf_counter() - t)


def hf_torch_prefill(ref, torch, vocab: int, n: int) -> float:
    ids = torch.from_numpy(np.random.default_rng(1).integers(300, vocab, size=(1, n)))
    with torch.no_grad():
        t = time.perf_counter()
        ref(ids, use_cache=True)
        return time.perf_counter() - t


def bench_folder(path: Path, steps: int, repeats: int) -> None:
    from explainer.llm.hf.loader import load_folder

    t = time.perf_counter()
    loaded = load_folder(path)
    load_s = time.perf_counter() - t
    model, c = loaded.model, loaded.model.config
    print(f"model: {path.name}: {model.n_params:,} parameters, {c.n_layer} layers × {c.n_head} heads, d_model {c.d_model}, "
          f"vocabulary {c.vocab_size:,}; opened in {load_s:.1f} s; numpy on {loaded.threads} BLAS thread(s)")
    rows = [("decode tokens/s at 128 tokens of context", median(lambda: numpy_decode(model, 128, steps), repeats), "higher", 25.0),
            ("prefill of 256 tokens (s)", median(lambda: numpy_prefill(model, 256), repeats), "lower", 1.5)]
    try:
        import torch
        from transformers import AutoModelForCausalLM
    except ImportError:
        torch = None
        print("(PyTorch/transformers are not installed: pip install -e '.[train]' for the reference column)")
    refs = []
    if torch is not None:
        torch.set_num_threads(os.cpu_count() or 1)
        ref = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        print(f"reference: transformers + PyTorch {torch.__version__}, {torch.get_num_threads()} threads, float32, same checkpoint")
        refs = [median(lambda: hf_torch_decode(ref, torch, c.vocab_size, 128, steps), repeats),
                median(lambda: hf_torch_prefill(ref, torch, c.vocab_size, 256), repeats)]
    print(f"{'figure':44} {'numpy':>9} {'pytorch':>9} {'numpy/pytorch':>14} {'target':>10}")
    for i, (name, value, better, target) in enumerate(rows):
        met = value >= target if better == "higher" else value < target
        goal = f"{'>=' if better == 'higher' else '<'} {target:g} {'met' if met else 'MISSED'}"
        if not refs:
            print(f"{name:44} {value:9.2f} {'':9} {'':14} {goal:>10}")
            continue
        ratio = value / refs[i] if better == "higher" else refs[i] / value
        print(f"{name:44} {value:9.2f} {refs[i]:9.2f} {ratio:13.2f}x  {goal}")
    print("ratio > 1 means numpy is faster (for prefill: PyTorch time / numpy time)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=48, help="decode steps per measurement")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--model", type=Path, help="a Hugging Face-layout folder (default: the bundled model)")
    args = ap.parse_args()
    if args.model:
        bench_folder(args.model, min(args.steps, 32), args.repeats)
        return
    model = load_model()
    c = model.config
    rows = []
    for ctx in (128, 448):
        rows.append((f"decode tokens/s at {ctx} tokens of context", median(lambda ctx=ctx: numpy_decode(model, ctx, args.steps), args.repeats), "higher"))
    rows.append(("prefill of 512 tokens (ms)", 1000 * median(lambda: numpy_prefill(model, c.n_ctx), args.repeats), "lower"))

    try:
        import torch

        from explainer.llm.training.export import torch_from_npz
    except ImportError:
        torch = None
    print(f"model: {model.n_params:,} parameters, {c.n_layer} layers, d_model {c.d_model}, context {c.n_ctx}")
    if torch is None:
        print("(PyTorch is not installed: pip install -e '.[train]' for the reference column)")
    else:
        print(f"reference: PyTorch {torch.__version__}, {torch.get_num_threads()} threads, same float16-rounded weights")
        ref = torch_from_npz()
        refs = [
            median(lambda: torch_decode(ref, torch, c.vocab_size, 128, args.steps), args.repeats),
            median(lambda: torch_decode(ref, torch, c.vocab_size, 448, args.steps), args.repeats),
            1000 * median(lambda: torch_prefill(ref, torch, c.vocab_size, c.n_ctx), args.repeats),
        ]
    print(f"{'figure':44} {'numpy':>10} {'pytorch':>10} {'numpy/pytorch':>14}")
    for i, (name, value, better) in enumerate(rows):
        if torch is None:
            print(f"{name:44} {value:10.1f}")
            continue
        ratio = value / refs[i] if better == "higher" else refs[i] / value
        print(f"{name:44} {value:10.1f} {refs[i]:10.1f} {ratio:13.2f}x")
    print("ratio > 1 means numpy is faster (for prefill: PyTorch time / numpy time)")


if __name__ == "__main__":
    main()
