"""Recap: the current scenario through every stage on one page, each part linking to its stage."""
from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np

from explainer.lifecycle import lru
from explainer.lifecycle.figures import body_figures, chat_text_figures, request_chat_parts, run_figures, text_figures
from explainer.llm.generate import step_banned
from explainer.stages.registry import REQUEST_STEPS
from explainer.stages.words import stop_reason_in_words, token_label, token_row, visible_token
from explainer.llm.sampling import SamplingParams, distribution, softmax

OPTIONS: dict = {}
SHOWN_DRAWS = 40
EVENT_ORDER = ("message_start", "content_block_start", "ping", "content_block_delta", "content_block_stop",
               "message_delta", "message_stop")



def _top_next(page, k: int = 5) -> list[dict]:
    """The model's top predictions at the end of the prompt, from the first step's real logits."""
    if not page.run.steps:
        return []
    logits = np.asarray(page.run.steps[0]["logits"], dtype=np.float64)
    p = softmax(logits)
    order = np.argsort(-p)[:k]
    return [{"text": (text := token_label(page.engine.tokenizer, t)), "label": visible_token(text), "id": int(t), "p": float(p[t])}
            for t in order]


_DRAWS = lru.LRU("recap draws")  # each shown draw re-sorts the vocabulary: once per scenario and model, not per visit


def _draws(page) -> list[dict]:
    """The first draws again, each with its probability after the filters and its rank."""
    s, tok = page.scenario, page.engine.tokenizer
    params = SamplingParams(temperature=s.temperature, top_k=s.top_k, top_p=s.top_p)
    out = []
    shown = page.run.steps[:SHOWN_DRAWS]
    for st, t in zip(shown, token_row(tok, [st["token"] for st in shown])):  # a cut character: its bytes, then it once
        dist = distribution(st["logits"], params, banned=step_banned(tok, st))
        rank = int(np.flatnonzero(dist.order == st["token"])[0]) + 1
        out.append({"index": st["index"], "text": visible_token(t["text"]), "part": t["part"], "joins": t["joins"],
                    "p": float(dist.final[st["token"]]), "rank": rank})
    return out


def context(page) -> dict:
    run, s = page.run, page.scenario
    tok = page.engine.tokenizer
    n_prompt = len(run.prompt_ids or [])
    # the text's own figures: what the chat template adds (special tokens, a role's name) left out
    text = chat_text_figures(tok, request_chat_parts(tok, run.request)) if run.request is not None and n_prompt else text_figures("", 0)
    steps = _DRAWS.get_or_compute((page.engine.loaded.fingerprint, s.key()), lambda: _draws(page))
    counts = Counter(e["type"] for e in run.events)
    figures = run_figures(run, page.engine.max_prompt_tokens)  # the one count every page shows (events, bytes, tokens)
    m = page.engine.model
    entropy = None
    if run.steps:
        p = softmax(np.asarray(run.steps[0]["logits"], dtype=np.float64) / max(s.temperature, 1e-6))
        entropy = float(-(p * np.log(p + 1e-30)).sum())
    return {
        "figures": figures,
        "body_json": json.dumps(s.request_body(), indent=2, ensure_ascii=False),
        "body": body_figures(s.request_body()),
        "n_prompt": n_prompt,
        "text": text,
        "template_tokens": n_prompt - text.tokens,
        # each token's text from its bytes: a byte of a cut character is ‹E4›, and the character follows its run once
        "prompt_preview": [t | {"special": tok.is_special(t["id"]), "label": visible_token(t["text"])}
                           for t in token_row(tok, run.prompt_ids[:80])],
        "prompt_more": max(0, n_prompt - 80),
        "vocab": tok.vocab_size,
        "model_info": {"layers": m.config.n_layer, "heads": m.config.n_head, "d_model": m.config.d_model,
                       "params": m.n_params, "n_ctx": m.config.n_ctx, "maps": m.config.n_layer * m.config.n_head},
        "top_next": _top_next(page),
        "entropy": entropy,
        "perplexity_like": math.exp(entropy) if entropy is not None else None,
        "steps": steps,
        "n_draws": len(run.steps),
        "event_counts": sorted(counts.items(), key=lambda kv: EVENT_ORDER.index(kv[0]) if kv[0] in EVENT_ORDER else len(EVENT_ORDER)),
        "done": run.done,
        "event_total": figures["events"],
        "stop_words": stop_reason_in_words(run.done["stop_reason"]) if run.done else None,
        "links": {slug: page.url(slug) for slug in REQUEST_STEPS},
    }
