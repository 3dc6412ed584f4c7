"""Train the bundled model; checkpoints often and resumes where it stopped.

Usage (runs in the background; rerun the same command to resume)::

    python -m explainer.llm.training.train --out data/train --max-steps 2600
    python -m explainer.llm.training.export --ckpt data/train/best.pt

``--init-npz explainer/llm/weights/model.npz`` starts from shipped weights instead of a
random initialisation (a fine-tune on a new corpus). ``best.pt`` is the checkpoint with
the lowest validation loss seen so far: on a small corpus that is run for several
epochs, the last step is not always the best one.

The corpus is tokenised once with the project's tokenizer in its chat template
(``<|system|>…<|end|><|user|>…<|end|><|assistant|>…<|end|>``), conversations are
concatenated into one stream, and training samples random windows of ``n_ctx`` tokens.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from explainer.llm.model import ModelConfig
from explainer.llm.tokenizer import load_tokenizer
from explainer.llm.training.tool_corpus import encode_conversation
from explainer.llm.training.torch_model import TinyGPT


def tokenize_corpus(corpus: Path, out: Path) -> dict[str, np.ndarray]:
    tok = load_tokenizer()
    streams = {}
    for split in ("train", "val"):
        path = out / f"tokens_{split}.npy"
        if path.exists():
            streams[split] = np.load(path)
            continue
        ids: list[int] = []
        with (corpus / f"{split}.jsonl").open(encoding="utf-8") as f:
            for line in f:
                # The chat template leaves a final assistant turn open (a prefill the reply continues).
                # Here it is a whole answer: it is closed, or the model never learns to end a reply.
                # A tool call is cut into tokens the way the engine writes it (tool_corpus).
                ids += encode_conversation(tok, json.loads(line))
        arr = np.asarray(ids, dtype=np.uint16)
        np.save(path, arr)
        streams[split] = arr
    return streams


def batch(stream: np.ndarray, batch_size: int, n_ctx: int, rng: np.random.Generator):
    starts = rng.integers(0, len(stream) - n_ctx - 1, size=batch_size)
    x = np.stack([stream[s : s + n_ctx] for s in starts]).astype(np.int64)
    y = np.stack([stream[s + 1 : s + n_ctx + 1] for s in starts]).astype(np.int64)
    return torch.from_numpy(x), torch.from_numpy(y)


@torch.no_grad()
def evaluate(model: TinyGPT, stream: np.ndarray, n_ctx: int, max_windows: int = 48) -> float:
    """Mean loss over fixed, non-overlapping windows of the validation stream."""
    model.eval()
    losses = []
    n = min(max_windows, (len(stream) - 1) // n_ctx)
    for i in range(0, n, 8):
        idx = range(i, min(i + 8, n))
        x = torch.from_numpy(np.stack([stream[j * n_ctx : (j + 1) * n_ctx] for j in idx]).astype(np.int64))
        y = torch.from_numpy(np.stack([stream[j * n_ctx + 1 : (j + 1) * n_ctx + 1] for j in idx]).astype(np.int64))
        losses.append(F.cross_entropy(model(x).flatten(0, 1), y.flatten()).item() * len(idx))
    model.train()
    return sum(losses) / n


def lr_at(step: int, max_steps: int, peak: float, warmup: int = 100) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, max_steps - warmup))
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=Path("data/corpus"))
    ap.add_argument("--out", type=Path, default=Path("data/train"))
    ap.add_argument("--max-steps", type=int, default=2600)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1.5e-3)
    ap.add_argument("--eval-every", type=int, default=200)
    ap.add_argument("--ckpt-minutes", type=float, default=4.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--init-npz", type=Path, default=None, help="start from these weights (ignored when resuming)")
    ap.add_argument("--warmup", type=int, default=100)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    tok = load_tokenizer()
    cfg = ModelConfig(vocab_size=tok.vocab_size)
    streams = tokenize_corpus(args.corpus, args.out)
    print(f"train tokens {len(streams['train'])}, val tokens {len(streams['val'])}", flush=True)

    torch.manual_seed(args.seed)
    model = TinyGPT(cfg)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.95))
    ckpt_path, log_path = args.out / "ckpt.pt", args.out / "log.jsonl"
    step, tokens_seen, train_seconds = 0, 0, 0.0
    best_val = math.inf
    rng = np.random.default_rng(args.seed)
    if args.init_npz and not ckpt_path.exists():
        from explainer.llm.model import read_weights
        _, weights, _ = read_weights(args.init_npz)
        model.load_numpy_weights(weights)
        model.float()
        print(f"initialised from {args.init_npz}; val loss {evaluate(model, streams['val'], cfg.n_ctx):.4f}", flush=True)
    if ckpt_path.exists():
        ck = torch.load(ckpt_path, weights_only=False)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        step, tokens_seen, train_seconds = ck["step"], ck["tokens_seen"], ck["train_seconds"]
        best_val = ck.get("best_val", math.inf)
        rng.bit_generator.state = ck["rng"]
        print(f"resumed at step {step}", flush=True)
    print(f"parameters: {sum(p.numel() for p in model.parameters()):,}", flush=True)

    def save(path=ckpt_path):
        tmp = path.with_suffix(".tmp")
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "tokens_seen": tokens_seen,
                    "train_seconds": train_seconds, "rng": rng.bit_generator.state, "config": cfg.__dict__,
                    "best_val": best_val, "val_loss": row.get("val_loss")}, tmp)
        tmp.replace(path)

    last_ckpt = time.time()
    log = log_path.open("a")
    while step < args.max_steps:
        t0 = time.time()
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.max_steps, args.lr, args.warmup)
        x, y = batch(streams["train"], args.batch_size, cfg.n_ctx, rng)
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        tokens_seen += x.numel()
        train_seconds += time.time() - t0
        row = {"step": step, "train_loss": round(loss.item(), 4), "tokens": tokens_seen, "seconds": round(train_seconds, 1)}
        if step % args.eval_every == 0 or step == args.max_steps:
            row["val_loss"] = round(evaluate(model, streams["val"], cfg.n_ctx), 4)
            if row["val_loss"] < best_val:
                best_val = row["val_loss"]
                save(args.out / "best.pt")
        if step % 10 == 0 or "val_loss" in row:
            log.write(json.dumps(row) + "\n")
            log.flush()
            print(row, f"{x.numel() / (time.time() - t0):.0f} tok/s", flush=True)
        if time.time() - last_ckpt > args.ckpt_minutes * 60 or step == args.max_steps:
            save()
            last_ckpt = time.time()
    print("done", flush=True)


if __name__ == "__main__":
    main()
