"""Speed of the shipped model: numpy (what the app runs) against PyTorch on the same weights.

    .venv/bin/pip install -e ".[train]"     # PyTorch, for the reference only
    .venv/bin/python bench/model.py

Prints single-stream decode speed with a KV cache at 128 and 448 tokens of context and
the prefill time of 512 tokens, for both, in one process, and the ratio numpy / PyTorch.
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=48, help="decode steps per measurement")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    model = load_model()
    c = model.config
    rows = []
    for ctx in (128, 448):
        rows.append((f"decode tokens/s at {ctx} tokens of context", median(lambda: numpy_decode(model, ctx, args.steps), args.repeats), "higher"))
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
