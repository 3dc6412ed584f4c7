"""Export a training checkpoint to the app's weights and record the golden logits.

Usage::

    python -m explainer.llm.training.export --ckpt data/train/ckpt.pt

Writes ``explainer/llm/weights/model.npz`` (float16) and ``tests/golden/forward_logits.npz``:
logits that PyTorch computes from the *exported* (float16-rounded) weights for fixed
inputs, which the numpy forward pass must reproduce.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from explainer.llm.model import WEIGHTS_PATH, ModelConfig, read_weights, save_weights
from explainer.llm.tokenizer import load_tokenizer
from explainer.llm.training.torch_model import TinyGPT

GOLDEN_PATH = Path(__file__).resolve().parents[3] / "tests" / "golden" / "forward_logits.npz"
GOLDEN_PROMPTS = [
    (None, "How does Apache Airflow schedule DAGs in production?"),
    ("You are a helpful assistant for software engineers.", "What is a PostgreSQL index?"),
    (None, "def add(a, b):\n    return a + b  # 👍 héllo"),
]


def torch_from_npz(path: Path = WEIGHTS_PATH) -> TinyGPT:
    """The PyTorch model holding exactly the weights the app ships."""
    config, weights, _ = read_weights(path)
    model = TinyGPT(config)
    model.load_numpy_weights(weights)
    return model.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", type=Path, default=Path("data/train/ckpt.pt"))
    ap.add_argument("--log", type=Path, default=Path("data/train/log.jsonl"))
    args = ap.parse_args()

    ck = torch.load(args.ckpt, weights_only=False, map_location="cpu")
    cfg = ModelConfig(**ck["config"])
    model = TinyGPT(cfg)
    model.load_state_dict(ck["model"])
    val = [json.loads(l) for l in args.log.read_text().splitlines()] if args.log.exists() else []
    val = [r for r in val if "val_loss" in r and r["step"] <= ck["step"]]
    meta = {"step": ck["step"], "tokens_seen": ck["tokens_seen"], "train_seconds": round(ck["train_seconds"]),
            "val_loss": val[-1]["val_loss"] if val else None}
    save_weights(cfg, model.numpy_weights(), WEIGHTS_PATH, meta=meta)

    tok = load_tokenizer()
    ref = torch_from_npz()
    inputs, logits = [], []
    with torch.no_grad():
        for system, text in GOLDEN_PROMPTS:
            ids = tok.encode_chat(system, [("user", text)])
            inputs.append(np.asarray(ids, dtype=np.int64))
            logits.append(ref(torch.tensor([ids]))[0].numpy())
    np.savez_compressed(GOLDEN_PATH, **{f"ids_{i}": a for i, a in enumerate(inputs)},
                        **{f"logits_{i}": a for i, a in enumerate(logits)}, torch_version=np.array(torch.__version__))
    print(f"exported step {ck['step']} -> {WEIGHTS_PATH} ({WEIGHTS_PATH.stat().st_size / 1e6:.1f} MB); golden -> {GOLDEN_PATH}")


if __name__ == "__main__":
    main()
