"""Train the bundled model; checkpoints often and resumes where it stopped.

Usage (runs in the background; rerun the same command to resume)::

    python -m explainer.llm.training.train --out data/train --max-steps 2600
    python -m explainer.llm.training.export --ckpt data/train/best.pt

``--init-npz explainer/llm/weights/model.npz`` starts from shipped weights instead of a
random initialisation (a fine-tune on a new corpus). ``best.pt`` is the checkpoint with
the lowest validation loss seen so far: on a small corpus that is run for several
epochs, the last step is not always the best one.

The corpus is tokenised once with the project's tokenizer in its chat template
(``<|system|>…<|end|><|user|>…<|end|><|assistant|>…<|end|>``) and conversations are
concatenated into one stream. Training windows of ``n_ctx`` tokens start where a conversation
starts: a window cut in the middle of one teaches a tool call (or an answer) without the
question it answers, that is, to make an identifier up instead of copying it. ``--tool-share``
is the share of windows that start on a tool-use conversation (default: as often as they occur).
The loss weighs the assistant's turns fully and everything else by ``--prompt-weight``: the
answers (a call's argument, a result's key fact) are what is learnt, the rest is kept.
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
    """The token streams (``train``, ``val``) and, for training, where each conversation starts
    (``train_starts``) and whether it is a tool-use one (``train_tool``)."""
    tok = load_tokenizer()
    streams = {}
    for split in ("train", "val"):
        path = out / f"tokens_{split}.npy"
        starts_path, tool_path = out / f"starts_{split}.npy", out / f"tool_{split}.npy"
        if path.exists() and starts_path.exists() and tool_path.exists():
            streams[split], streams[f"{split}_starts"], streams[f"{split}_tool"] = (
                np.load(path), np.load(starts_path), np.load(tool_path))
            continue
        ids: list[int] = []
        starts: list[int] = []
        tool: list[bool] = []
        with (corpus / f"{split}.jsonl").open(encoding="utf-8") as f:
            for line in f:
                # The chat template leaves a final assistant turn open (a prefill the reply continues).
                # Here it is a whole answer: it is closed, or the model never learns to end a reply.
                # A tool call is cut into tokens the way the engine writes it (tool_corpus).
                conv = json.loads(line)
                starts.append(len(ids))
                tool.append("family" in conv)  # a tool_corpus conversation (calls, answers, copying drills)
                ids += encode_conversation(tok, conv)
        arr = np.asarray(ids, dtype=np.uint16)
        np.save(path, arr)
        np.save(starts_path, np.asarray(starts, dtype=np.int64))
        np.save(tool_path, np.asarray(tool, dtype=bool))
        streams[split], streams[f"{split}_starts"], streams[f"{split}_tool"] = arr, np.load(starts_path), np.load(tool_path)
    return streams


def answer_mask(stream: np.ndarray, assistant: int, end: int) -> np.ndarray:
    """True where a token belongs to an assistant turn (after ``<|assistant|>``, up to and with its ``<|end|>``)."""
    mask = np.zeros(len(stream), dtype=bool)
    opens = np.flatnonzero(stream == assistant)
    ends = np.flatnonzero(stream == end)
    for o in opens:
        k = int(np.searchsorted(ends, o))
        mask[o + 1 : (ends[k] + 1) if k < len(ends) else len(stream)] = True
    return mask


def batch(stream: np.ndarray, batch_size: int, n_ctx: int, rng: np.random.Generator,
          starts: np.ndarray | None = None, tool: np.ndarray | None = None, tool_share: float | None = None,
          mask: np.ndarray | None = None, prompt_weight: float = 1.0):
    """``batch_size`` windows (inputs, targets, loss weights): at random offsets, or from ``starts`` (a window
    begins where a conversation begins; ``tool_share`` of them on tool-use conversations)."""
    last = len(stream) - n_ctx - 1
    if starts is None:
        begins = rng.integers(0, last, size=batch_size)
    else:
        ok = starts <= last
        pools = [starts[ok]] if tool is None or tool_share is None else [starts[ok & tool], starts[ok & ~tool]]
        if len(pools) == 1:
            begins = rng.choice(pools[0], size=batch_size)
        else:
            pick_tool = rng.random(batch_size) < tool_share
            begins = np.where(pick_tool, rng.choice(pools[0], size=batch_size), rng.choice(pools[1], size=batch_size))
    x = np.stack([stream[s : s + n_ctx] for s in begins]).astype(np.int64)
    y = np.stack([stream[s + 1 : s + n_ctx + 1] for s in begins]).astype(np.int64)
    if mask is None:
        w = np.ones(y.shape, dtype=np.float32)
    else:
        w = np.stack([np.where(mask[s + 1 : s + n_ctx + 1], 1.0, prompt_weight) for s in begins]).astype(np.float32)
    return torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(w)


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
    ap.add_argument("--tool-share", type=float, default=None,
                    help="share of windows that start on a tool-use conversation (default: as they occur)")
    ap.add_argument("--prompt-weight", type=float, default=1.0,
                    help="loss weight of tokens outside the assistant's turns (1: every token alike)")
    ap.add_argument("--random-windows", action="store_true", help="windows at any offset, not at conversation starts")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    tok = load_tokenizer()
    cfg = ModelConfig(vocab_size=tok.vocab_size)
    streams = tokenize_corpus(args.corpus, args.out)
    mask = answer_mask(streams["train"], tok.special_id("<|assistant|>"), tok.special_id("<|end|>"))
    tool_convs = int(streams["train_tool"].sum())
    print(f"train tokens {len(streams['train'])} ({len(streams['train_starts'])} conversations, {tool_convs} with tools; "
          f"{mask.mean():.0%} of tokens in answers), val tokens {len(streams['val'])}", flush=True)

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
        x, y, w = batch(streams["train"], args.batch_size, cfg.n_ctx, rng,
                        None if args.random_windows else streams["train_starts"], streams["train_tool"], args.tool_share,
                        mask if args.prompt_weight != 1.0 else None, args.prompt_weight)
        per_token = F.cross_entropy(model(x).flatten(0, 1), y.flatten(), reduction="none")
        loss = (per_token * w.flatten()).sum() / w.sum()
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
