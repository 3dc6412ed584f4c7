"""Recap: the current scenario through every stage on one page, each part linking to its stage."""
from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np

from explainer.llm.generate import step_banned
from explainer.llm.model import softmax
from explainer.llm.sampling import SamplingParams, distribution

OPTIONS: dict = {}


def _top_next(page, k: int = 5) -> list[dict]:
    """The model's top predictions at the end of the prompt, from the first step's real logits."""
    if not page.run.steps:
        return []
    logits = np.asarray(page.run.steps[0]["logits"], dtype=np.float64)
    p = softmax(logits)
    order = np.argsort(-p)[:k]
    return [{"text": page.engine.token_label(int(t)), "id": int(t), "p": float(p[t])} for t in order]


def context(page) -> dict:
    run, s = page.run, page.scenario
    tok = page.engine.tokenizer
    prompt_text = "".join(t["text"] for t in run.prompt_tokens if not t["text"].startswith("<|"))
    n_prompt = len(run.prompt_ids)
    words = max(1, len(prompt_text.split()))
    steps = []
    params = SamplingParams(temperature=s.temperature, top_k=s.top_k, top_p=s.top_p)
    for st in run.steps[:40]:
        dist = distribution(st["logits"], params, banned=step_banned(tok, st))
        rank = int(np.flatnonzero(dist.order == st["token"])[0]) + 1
        steps.append({"index": st["index"], "text": st["text"], "p": float(dist.final[st["token"]]), "rank": rank})
    counts = Counter(e["type"] for e in run.events)
    m = page.engine.model
    entropy = None
    if run.steps:
        p = softmax(np.asarray(run.steps[0]["logits"], dtype=np.float64) / max(s.temperature, 1e-6))
        entropy = float(-(p * np.log(p + 1e-30)).sum())
    return {
        "body_json": json.dumps(s.request_body(), indent=2, ensure_ascii=False),
        "n_prompt": n_prompt,
        "chars_per_token": len(prompt_text) / max(1, n_prompt - sum(1 for t in run.prompt_tokens if t["text"].startswith("<|"))),
        "tokens_per_word": n_prompt / words,
        "prompt_preview": run.prompt_tokens[:80],
        "prompt_more": max(0, n_prompt - 80),
        "vocab": tok.vocab_size,
        "model_info": {"layers": m.config.n_layer, "heads": m.config.n_head, "d_model": m.config.d_model,
                       "params": m.n_params, "n_ctx": m.config.n_ctx, "maps": m.config.n_layer * m.config.n_head},
        "top_next": _top_next(page),
        "entropy": entropy,
        "perplexity_like": math.exp(entropy) if entropy is not None else None,
        "steps": steps,
        "steps_more": max(0, len(run.steps) - 40),
        "event_counts": sorted(counts.items(), key=lambda kv: ["message_start", "content_block_start", "ping", "content_block_delta", "content_block_stop", "message_delta", "message_stop"].index(kv[0]) if kv[0] in ["message_start", "content_block_start", "ping", "content_block_delta", "content_block_stop", "message_delta", "message_stop"] else 99),
        "done": run.done,
        "links": {slug: page.url(slug) for slug in ("compose", "gateway", "tokenize", "transformer", "sampling", "streaming")},
        "built": {slug: True for slug in ("compose", "gateway", "tokenize", "transformer", "sampling", "streaming")},
    }
