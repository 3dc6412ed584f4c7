"""Sampling: one step of the autoregressive loop, its real next-token distribution, and the
knobs (temperature, top-k, top-p) that reshape it.

The page sends the step's raw logits to the browser, where ``static/js/lib/sampling.js`` (a port
of ``explainer/llm/sampling.py``) recomputes the distribution as the sliders move. The sliders are
*view options* (``t``, ``k``, ``p``): they explore, they never change the request; absent, they
follow the request's settings.

A vocabulary of up to ``FULL_VOCAB_MAX`` ids (the bundled model's 4,096) travels whole: every
logit, every token's text once per page. A real model's (49,152 to 151,936 ids) would be a
megabyte a step, so its step travels compact (:func:`compact_step`): the ``TOP_EXACT`` most likely
tokens exactly, with their texts, the engine's own pick wherever it ranks, and the rest as
``TAIL_GROUPS`` runs of neighbours in rank, each one count and one representative score. The size
does not grow with the vocabulary.
"""
from __future__ import annotations

import math

import numpy as np

from explainer.lifecycle import lru
from explainer.llm.generate import step_banned
from explainer.llm.sampling import SamplingParams, distribution, softmax
from explainer.stages.options import DecimalOption, IntOption, OptionalIntOption, OptionError
from explainer.stages.words import stop_reason_in_words, token_label, token_row, visible_token

PROMPT_TAIL = 24  # prompt tokens shown before the reply in the step-through
API_TEMPERATURE_MAX = 1.0
EXPLORE_TEMPERATURE_MAX = 2.0  # 1–2 is outside the API's range: offered to explore, labelled as such
TOP_K_SLIDER_MAX = 100
FULL_VOCAB_MAX = 8192  # a larger vocabulary's steps travel compact
TOP_EXACT = 512  # compact: the most likely tokens sent exactly (the table shows 50 at most, top_k's slider 100)
TAIL_GROUPS = 256  # compact: the other drawable tokens, in this many runs of neighbours in rank

DATA = {"sampling-config": "config", "sampling-step": "step"}  # element id -> context key: embedded once by _stage.html, served by /learn/<slug>/data
OPTIONS = {
    "step": IntOption(0, 0, None, "step of the autoregressive loop"),
    "t": DecimalOption(0.0, EXPLORE_TEMPERATURE_MAX),
    "k": OptionalIntOption(0, 100_000),
    "p": DecimalOption(0.0, 1.0, low_open=True),
}


def request_params(page) -> dict:
    """The sampling settings the request itself sent (what the engine used)."""
    src = page.run.request or page.scenario
    return {"temperature": float(src.temperature), "top_k": src.top_k, "top_p": src.top_p}


def engine_uniform(seed: int, index: int) -> float:
    """The uniform number the engine's draw used at step ``index``.

    ``generate`` makes one ``default_rng(seed)`` per request and calls ``random()`` exactly once
    per token (``sampling.draw``), so step i used the i-th number of that stream.
    """
    return float(np.random.default_rng(seed).random(index + 1)[index])


def compact_step(logits: np.ndarray, banned: tuple[int, ...], token: int, temperature: float, label) -> dict:
    """One step's distribution in a size that does not depend on the vocabulary's.

    ``ids``/``logits``/``labels``: the ``top`` (``TOP_EXACT``) most likely drawable tokens, in rank
    order (ties to the lower id, as the engine orders them), then the engine's ``token`` if it ranks
    lower (its rank is ``token_rank``). ``tail``: every other drawable token, in rank order, as
    ``[count, score]`` runs; a run's score is the log of its tokens' mean e^(z/T) times T at the
    request's temperature, so at the request's settings each run carries exactly its tokens'
    probability. The browser lays the runs out token by token (lib/sampling.js ``expandCompact``).
    """
    x = np.asarray(logits, dtype=np.float64).copy()
    x[list(banned)] = -np.inf
    ids = np.flatnonzero(np.isfinite(x))
    order = ids[np.lexsort((ids, -x[ids]))]
    rank = int(np.flatnonzero(order == token)[0])
    exact = [int(t) for t in order[:TOP_EXACT]] + ([token] if rank >= TOP_EXACT else [])
    rest = np.delete(order, rank)[TOP_EXACT:] if rank >= TOP_EXACT else order[TOP_EXACT:]
    tail = []
    for run in np.array_split(x[rest], min(TAIL_GROUPS, len(rest))) if len(rest) else []:
        if temperature > 0:
            top = run.max()
            score = top + temperature * float(np.log(np.mean(np.exp((run - top) / temperature))))
        else:
            score = float(run.mean())
        tail.append([len(run), round(score, 4)])
    return {"ids": exact, "logits": [round(float(x[t]), 4) for t in exact], "labels": [label(t) for t in exact],
            "top": min(TOP_EXACT, len(order)), "token_rank": rank, "tail": tail}


def step_payload(page, index: int) -> dict:
    """What the browser needs to redraw one step: the logits (whole, or compact for a large
    vocabulary) and the engine's own draw."""
    run, eng = page.run, page.engine
    st = run.steps[index]
    req = request_params(page)
    banned = step_banned(eng.tokenizer, st)
    logits = np.asarray(st["logits"], dtype=np.float64)
    dist = distribution(logits, SamplingParams(req["temperature"], req["top_k"], req["top_p"]), banned=banned)
    token = int(st["token"])
    rank = int(np.flatnonzero(dist.order == token)[0])
    if logits.size > FULL_VOCAB_MAX:
        whole = {"compact": compact_step(logits, banned, token, req["temperature"], lambda t: token_label(eng.tokenizer, t))}
    else:  # ~30 KB: the browser recomputes softmax over all of them
        whole = {"logits": np.round(logits, 4).tolist(), "banned": list(banned)}
    return {
        "step": index,
        **whole,
        # tokens the word ban removed although the model gave them a real chance (blocklist.py)
        "banned_words": [{"token": b["token"], "label": visible(token_label(eng.tokenizer, b["token"])), "word": masked(b["word"]), "probability": b["probability"]}
                         for b in st.get("banned_words", ())],
        "engine": {
            "token": token, "label": token_label(eng.tokenizer, token), "rank": rank,
            "u": engine_uniform(page.scenario.seed, index),
            "probability": float(dist.probs[token]), "final_probability": float(dist.final[token]),
            "kept": int(np.count_nonzero(dist.final)),
        },
    }


def masked(word: str) -> str:
    """A blocked word, named without being written out: "f**k"."""
    return word if len(word) < 3 else word[0] + "*" * (len(word) - 2) + word[-1]


visible = visible_token  # the one way a token is shown (explainer/stages/words.py)


def vocabulary_labels(eng) -> list[str]:
    """Every token's text, by id (~37 KB of JSON, sent once per page, not per step; a byte that is not a
    whole character is written ‹E4›, words.token_text): at temperature 1
    about a sixth of the draws fall outside the 200 most likely tokens, so the page needs them all.
    Empty for a vocabulary over ``FULL_VOCAB_MAX``: each compact step brings its own tokens' texts."""
    vocab = eng.model.config.vocab_size
    return [token_label(eng.tokenizer, t) for t in range(vocab)] if vocab <= FULL_VOCAB_MAX else []


def _fmt(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def try_this(page, index: int) -> list[dict]:
    """Three slider settings worth trying at this step, each with what it does here, computed from the step's logits."""
    run, eng = page.run, page.engine
    st = run.steps[index]
    req = request_params(page)
    banned = step_banned(eng.tokenizer, st)
    logits = np.asarray(st["logits"], dtype=np.float64)
    dist = lambda t, k, p: distribution(logits, SamplingParams(t, k, p), banned=banned)  # noqa: E731
    now = dist(req["temperature"], req["top_k"], req["top_p"])
    top = int(now.order[0])
    label = visible(token_label(eng.tokenizer, top))
    keep = {"step": index or None}
    out = [{"action": "temperature 0", "url": page.url(**keep, t="0"),
            "result": f"greedy: only “{label}” is left, so every draw gives it"}]
    if req["temperature"] != 1.5:
        hot = dist(1.5, req["top_k"], req["top_p"])
        out.append({"action": "temperature 1.5", "url": page.url(**keep, t="1.5"),
                    "result": f"the curve flattens: “{label}” falls from {now.final[top]:.1%} to {hot.final[top]:.1%}, "
                              f"and {np.count_nonzero(hot.final):,} tokens can be drawn"})
    nucleus = dist(req["temperature"], req["top_k"], 0.5)
    n = int(np.count_nonzero(nucleus.final))
    out.append({"action": "top_p 0.5", "url": page.url(**keep, p="0.5"),
                "result": (f"the fewest most likely tokens that reach half the probability stay: {n:,} "
                           f"of the {np.count_nonzero(now.final):,} the request's settings keep")})
    return out


def _checked_step(page) -> int:
    n, i = len(page.run.steps), page.opts["step"]
    if i and i >= max(n, 1):
        raise OptionError(f"“step” must be from 0 to {max(n - 1, 0)}: this reply has {n} token{'s' if n != 1 else ''}.")
    vocab = page.engine.model.config.vocab_size
    if page.opts["k"] is not None and page.opts["k"] > vocab:
        raise OptionError(f"“k” must be from 0 to {vocab}, the size of the vocabulary; got {page.opts['k']}.")
    return i


def _explore(opts: dict, req: dict) -> dict:
    """The sliders' settings: the view options, or the request's own where the link sets none."""
    return {
        "temperature": req["temperature"] if opts["t"] is None else opts["t"],
        "top_k": (req["top_k"] or 0) if opts["k"] is None else opts["k"],
        "top_p": (req["top_p"] if req["top_p"] is not None else 1.0) if opts["p"] is None else opts["p"],
    }


def _joined(t: dict) -> dict:
    return {"part": t["part"], "joins": t["joins"]}


def _token_rows(page) -> tuple[list[dict], list[dict]]:
    """(the reply's tokens, each with its drawn probability; the prompt's last tokens), as one row of tokens:
    a character the tokenizer cut shows as its bytes, and once whole, after the run of tokens that makes it
    (words.token_runs)."""
    run, tok = page.run, page.engine.tokenizer
    n_prompt = len(run.prompt_ids)
    row = token_row(tok, [*run.prompt_ids, *(s["token"] for s in run.steps)])
    steps = [{"token": s["token"], "label": t["text"],
              "p": next((c["final_probability"] for c in s["candidates"] if c["token"] == s["token"]), None)} | _joined(t)
             for s, t in zip(run.steps, row[n_prompt:])]
    return steps, row[max(0, n_prompt - PROMPT_TAIL):n_prompt]


def _config(page, req: dict, explore: dict, steps: list[dict], tail: list[dict]) -> dict:
    """The page script's data (``sampling-config``, also served by /learn/sampling/data)."""
    tok, vocab = page.engine.tokenizer, page.engine.model.config.vocab_size
    return {
        "seed": page.scenario.seed,
        "request": req,
        "explore": explore,
        "n_steps": len(page.run.steps),
        "vocab": vocab,
        "drawable": vocab - len(set(tok.banned_ids)),
        "compact": vocab > FULL_VOCAB_MAX,
        "top_exact": TOP_EXACT,
        "tail_groups": TAIL_GROUPS,
        "steps": steps,
        "labels": vocabulary_labels(page.engine),
        "prompt_tail": [{"text": t["text"], "special": tok.is_special(t["id"])} | _joined(t) for t in tail],
        "prompt_more": max(0, len(page.run.prompt_ids) - PROMPT_TAIL),
        "ranges": {"t_api_max": API_TEMPERATURE_MAX, "t_max": EXPLORE_TEMPERATURE_MAX,
                   "k_max": max(TOP_K_SLIDER_MAX, req["top_k"] or 0, explore["top_k"])},
    }


def _step_view(page, i: int, steps: list[dict]) -> dict:
    """The chosen step of the loop: its distribution, its candidates, the steps so far and the links between them."""
    tok, n, opts = page.engine.tokenizer, len(page.run.steps), page.opts
    keep = {k: v for k, v in (("t", opts["t"]), ("k", opts["k"]), ("p", opts["p"])) if v is not None}
    step = step_payload(page, i)
    return {
        "step": step,
        "engine_label": visible(step["engine"]["label"]),
        "candidates": [c | {"label": visible(token_label(tok, c["token"]))} for c in page.run.steps[i]["candidates"]],
        "prev_url": page.url(step=i - 1 or None, **keep) if i > 0 else None,
        "next_url": page.url(step=i + 1, **keep) if i + 1 < n else None,
        "try_this": try_this(page, i),
        "so_far": [{"index": j, "label": visible(s["label"]), "url": page.url(step=j or None, **keep), "current": j == i,
                    "part": s["part"], "joins": s["joins"]} for j, s in enumerate(steps[: i + 1])],
    }


def context(page) -> dict:
    i = _checked_step(page)
    run, tok = page.run, page.engine.tokenizer
    req = request_params(page)
    explore = _explore(page.opts, req)
    steps, tail = _token_rows(page)
    config = _config(page, req, explore, steps, tail)
    ctx = {
        "never_drawn": [tok.token_str(t) for t in tok.banned_ids if tok.is_special(t)],
        "unused_ids": sum(not tok.is_special(t) for t in tok.banned_ids),  # ids with no token (a padded vocabulary)
        "stop_tokens": [tok.token_str(t) for t in tok.stop_ids],
        "wide": False,
        "stop_words": stop_reason_in_words((run.done or {}).get("stop_reason")),
        "config": config,
        "req_text": {"temperature": _fmt(req["temperature"]),
                     "top_k": "off" if not req["top_k"] else str(req["top_k"]),
                     "top_p": "off" if req["top_p"] is None or req["top_p"] >= 1 else _fmt(req["top_p"])},
        "explore": explore,
        "n_steps": len(run.steps),
        "step_index": i,
        "prompt_tail": [{"text": visible(t["text"]), "special": tok.is_special(t["id"])} | _joined(t) for t in tail],
        "prompt_more": config["prompt_more"],
    }
    return ctx | (_step_view(page, i, steps) if run.steps else {})


RECAP_DRAWS = 40  # the recap shows the first draws
_RECAP_DRAWS = lru.LRU("recap draws")  # each shown draw re-sorts the vocabulary: once per scenario and model, not per visit


def _draws(page) -> list[dict]:
    """The first draws again, each with its probability after the filters and its rank."""
    s, tok = page.scenario, page.engine.tokenizer
    params = SamplingParams(temperature=s.temperature, top_k=s.top_k, top_p=s.top_p)
    out = []
    shown = page.run.steps[:RECAP_DRAWS]
    for st, t in zip(shown, token_row(tok, [st["token"] for st in shown])):  # a cut character: its bytes, then it once
        dist = distribution(st["logits"], params, banned=step_banned(tok, st))
        rank = int(np.flatnonzero(dist.order == st["token"])[0]) + 1
        out.append({"index": st["index"], "text": visible_token(t["text"]), "part": t["part"], "joins": t["joins"],
                    "p": float(dist.final[st["token"]]), "rank": rank})
    return out


def recap(page) -> dict:
    """Sampling's row and card on the recap: the draws, and how many tokens the first one chose among."""
    run, s = page.run, page.scenario
    entropy = None
    if run.steps:
        p = softmax(np.asarray(run.steps[0]["logits"], dtype=np.float64) / max(s.temperature, 1e-6))
        entropy = float(-(p * np.log(p + 1e-30)).sum())
    return {
        "steps": _RECAP_DRAWS.get_or_compute((page.engine.loaded.fingerprint, s.key()), lambda: _draws(page)),
        "n_draws": len(run.steps),
        "perplexity_like": math.exp(entropy) if entropy is not None else None,
    }
