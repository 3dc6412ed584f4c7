"""Write ``weights/MODEL_CARD.md`` and ``weights/loss_curve.png`` from the committed weights.

Every figure is measured here, from the files the app ships: validation loss of the numpy
model on the held-out split, a bigram baseline on the same split, and samples generated
by the app's own sampler.

Usage::

    python -m explainer.llm.training.model_card --corpus data/corpus --train-dir data/train
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from explainer.llm.generate import Finish, GenerationConfig, generate
from explainer.llm.model import WEIGHTS_PATH, load_model, read_weights, softmax
from explainer.llm.sampling import SamplingParams
from explainer.llm.tokenizer import load_tokenizer

WEIGHTS_DIR = WEIGHTS_PATH.parent
SAMPLE_PROMPTS = [
    (None, "How does Apache Airflow schedule DAGs in production?"),
    ("You are a helpful assistant for software engineers.", "What is a PostgreSQL index?"),
    (None, "How do I define a model in Django?"),
    ("Answer clearly and accurately.", "What does the Python with statement do?"),
    (None, "Explain transactions in PostgreSQL."),
]


def model_val_loss(val: np.ndarray) -> float:
    model = load_model()
    n_ctx = model.config.n_ctx
    total, count = 0.0, 0
    for start in range(0, len(val) - n_ctx - 1, n_ctx):
        x = val[start : start + n_ctx].astype(np.int64)
        y = val[start + 1 : start + n_ctx + 1].astype(np.int64)
        logp = np.log(softmax(model.forward(x).logits.astype(np.float64)))
        total -= logp[np.arange(n_ctx), y].sum()
        count += n_ctx
    return total / count


def bigram_val_loss(train: np.ndarray, val: np.ndarray, vocab: int, alpha: float = 1.0) -> float:
    """Bigram counts from the training split, smoothed towards the unigram distribution."""
    uni = np.bincount(train, minlength=vocab).astype(np.float64) + 1
    uni /= uni.sum()
    pairs = train[:-1].astype(np.int64) * vocab + train[1:]
    counts = np.bincount(pairs, minlength=vocab * vocab).reshape(vocab, vocab)
    a, b = val[:-1].astype(np.int64), val[1:].astype(np.int64)
    p = (counts[a, b] + alpha * uni[b]) / (counts[a].sum(axis=1) + alpha)
    return float(-np.log(p).mean())


def loss_curve(log: Path, out: Path, max_step: int | None = None) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(l) for l in log.read_text().splitlines()]
    rows = [r for r in rows if max_step is None or r["step"] <= max_step]  # only what the shipped weights saw
    tr = [(r["tokens"] / 1e6, r["train_loss"]) for r in rows]
    va = [(r["tokens"] / 1e6, r["val_loss"]) for r in rows if "val_loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    ax.plot(*zip(*tr), label="train (batch)", color="#0b5cad", alpha=0.6, linewidth=1)
    ax.plot(*zip(*va), label="validation", color="#c25e00", marker="o", linewidth=2)
    ax.set_xlabel("training tokens (millions)")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_ylim(bottom=max(0, min(v for _, v in tr + va) - 0.5), top=min(8.5, max(v for _, v in tr) + 0.2))
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("Training the bundled model")
    fig.tight_layout()
    fig.savefig(out)
    return {"steps": rows[-1]["step"], "tokens": rows[-1]["tokens"], "seconds": rows[-1]["seconds"]}


def golden_difference() -> dict:
    """Largest |numpy - PyTorch| over the golden logits (tests/golden, written by export.py)."""
    path = Path(__file__).resolve().parents[3] / "tests" / "golden" / "forward_logits.npz"
    g = np.load(path)
    model, worst, n = load_model(), 0.0, 0
    for key in (k for k in g.files if k.startswith("ids_")):
        ref = g["logits_" + key[4:]]
        worst = max(worst, float(np.abs(model.forward(g[key]).logits - ref).max()))
        n += ref.size
    return {"max_abs_diff": worst, "logits": n, "torch": str(g["torch_version"])}


def samples() -> list[dict]:
    model, tok = load_model(), load_tokenizer()
    out = []
    for i, (system, user) in enumerate(SAMPLE_PROMPTS):
        ids = tok.encode_chat(system, [("user", user)])
        cfg = GenerationConfig(max_tokens=90, seed=i, sampling=SamplingParams(temperature=0.7, top_p=0.95))
        fin = [x for x in generate(model, tok, ids, cfg) if isinstance(x, Finish)][0]
        out.append({"system": system, "user": user, "reply": fin.text, "stop_reason": fin.stop_reason})
    return out


def _quote(text: str) -> str:
    return "\n".join("> " + line if line else ">" for line in (text or "(empty reply)").splitlines())


def render(r: dict) -> str:
    c, meta = r["config"], r["meta"]
    src_rows = "\n".join(
        f"| {s['name']} | `{s['package']}` | {s['licence']} | {s['conversations']:,} | {s['characters'] / 1e6:.1f} M |"
        for s in r["sources"])
    sample_md = "\n\n".join(
        f"**{i + 1}.** system: {('`' + x['system'] + '`') if x['system'] else '(none)'}  \nuser: `{x['user']}`  \n"
        f"reply (stop_reason `{x['stop_reason']}`):\n\n{_quote(x['reply'])}"
        for i, x in enumerate(r["samples"]))
    hours = r["curve"]["seconds"] / 3600
    planned = r.get("schedule_steps")
    schedule_note = (f"The schedule was planned for {planned:,} steps; these weights are the checkpoint at step {meta.get('step'):,}, "
                     "taken when the session's time ran out, so the learning rate had not finished decaying and more training "
                     "would lower the loss further." if planned and meta.get("step") and meta["step"] < planned else "")
    return f"""# Model card: tiny-explainer-4l

The model every page of the Lifecycle Explainer runs. It exists to be looked inside (its
tokens, attention and probabilities are what the stages show), not to give good answers:
it is about a thousand times smaller than a production model and was trained for about
{hours:.1f} hours on two CPU cores. Expect fluent-looking, documentation-flavoured text
that is often wrong.

*This file is generated by `python -m explainer.llm.training.model_card` from the committed
weights; do not edit the numbers by hand.*

## Architecture
Decoder-only transformer in the GPT-2 style: learned token and position embeddings,
{c['n_layer']} pre-LayerNorm blocks (causal self-attention with {c['n_head']} heads, then a tanh-GELU MLP),
a final LayerNorm and an output layer tied to the token embedding. No biases in linear layers.

| | |
|---|---|
| parameters | {r['n_params']:,} |
| layers / heads / d_model / d_ff | {c['n_layer']} / {c['n_head']} / {c['d_model']} / {c['d_ff']} |
| context window | {c['n_ctx']} tokens |
| vocabulary | {c['vocab_size']:,} (256 bytes, 4 chat-template specials, the first {r['model_merges']:,} of {r['merges']:,} BPE merges) |
| weights | `model.npz`, float16, {r['size_mb']:.1f} MB |
| runtime | pure numpy (`explainer/llm/model.py`), float32 |
| golden test | numpy against PyTorch {r['golden']['torch']} on the same weights: largest difference {r['golden']['max_abs_diff']:.1e} over {r['golden']['logits']:,} logits (the test allows 2e-3) |

## Training data
Chat-shaped text built by `explainer/llm/training/corpus.py` from HTML documentation shipped in
Debian packages: each section heading becomes a user question (several phrasings), the section's
prose becomes the assistant's answer, and about four in five conversations get one of a few short
system prompts. The build is deterministic; about 3% of source documents (chosen by a hash of
their path) are held out as the validation split.

| source | Debian package | licence | conversations | characters |
|---|---|---|---:|---:|
{src_rows}

Training split: {r['train_tokens']:,} tokens. Validation split: {r['val_tokens']:,} tokens.

## Training
PyTorch (`explainer/llm/training/train.py`), AdamW (betas 0.9/0.95, weight decay 0.1), peak
learning rate 1.5e-3 with warm-up and cosine decay, batches of 16 windows of 512 tokens, on
2 CPU cores, sharing them with other work. Steps: {meta.get('step')}; tokens seen: {meta.get('tokens_seen', 0):,}
(about {meta.get('tokens_seen', 0) / max(1, r['train_tokens']):.1f} passes over the training split); training time: {meta.get('train_seconds', 0) / 60:.0f} minutes.
{schedule_note}

![loss curve](loss_curve.png)

## Evaluation (held-out split, measured on the shipped float16 weights)

| model | cross-entropy (nats/token) | perplexity |
|---|---:|---:|
| tiny-explainer-4l (numpy, windows of {c['n_ctx']}) | {r['val_loss']:.3f} | {r['val_ppl']:.1f} |
| bigram baseline (train-split counts, unigram-smoothed) | {r['bigram_loss']:.3f} | {r['bigram_ppl']:.1f} |

## Samples
Five unedited replies, generated by the app's own sampler (temperature 0.7, top_p 0.95, seeds 0–4,
at most 90 tokens) from prompts in the chat template.

{sample_md}

## Limits
- It knows only what three sets of software documentation say, and mixes them up freely.
- It has no notion of truth, safety or refusal; it has never seen a conversation with more than one turn.
- Any Claude model name sent to the app is served by this model; the app says so on every page.
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=Path("data/corpus"))
    ap.add_argument("--train-dir", type=Path, default=Path("data/train"))
    ap.add_argument("--schedule-steps", type=int, default=3000, help="the --max-steps the run was started with")
    args = ap.parse_args()
    train = np.load(args.train_dir / "tokens_train.npy")
    val = np.load(args.train_dir / "tokens_val.npy")
    config, _, meta = read_weights()
    tok = load_tokenizer()
    curve = loss_curve(args.train_dir / "log.jsonl", WEIGHTS_DIR / "loss_curve.png", meta.get("step"))
    m_loss = model_val_loss(val)
    b_loss = bigram_val_loss(train, val, config.vocab_size)
    sources = json.loads((args.corpus / "sources.json").read_text())["sources"]
    report = {"val_loss": m_loss, "val_ppl": math.exp(m_loss), "bigram_loss": b_loss, "bigram_ppl": math.exp(b_loss),
              "train_tokens": int(len(train)), "val_tokens": int(len(val)), "meta": meta, "curve": curve,
              "sources": sources, "samples": samples(), "config": config.__dict__,
              "n_params": load_model().n_params, "merges": len(tok.merges), "model_merges": tok.model_merges,
              "size_mb": WEIGHTS_PATH.stat().st_size / 1e6, "schedule_steps": args.schedule_steps,
              "golden": golden_difference()}
    (WEIGHTS_DIR / "metrics.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    (WEIGHTS_DIR / "MODEL_CARD.md").write_text(render(report))
    print(json.dumps({k: report[k] for k in ("val_loss", "val_ppl", "bigram_loss", "bigram_ppl")}, indent=2))


if __name__ == "__main__":
    main()
