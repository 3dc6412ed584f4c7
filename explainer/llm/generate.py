"""The autoregressive loop: prefill the prompt, then sample one token at a time with the KV cache.

Yields one :class:`Step` per generated token, with its text (only whole characters, and
never text that might still turn out to be the start of a stop sequence), its candidate
rows and timings, and finally the stop reason.

The run's budget (``explainer.llm.budget``) is checked before every token, and by the model
between its layers, so a cancelled or overdue run stops within one step.
"""
from __future__ import annotations

import codecs
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from explainer.llm import budget
from explainer.llm.blocklist import word_ban_for
from explainer.llm.interface import Cache, ChatTokenizer, LanguageModel
from explainer.llm.sampling import DRAW_ROWS_MAX_VOCAB, Candidate, Draw, Drawn, SamplingParams, distribution, draw


@dataclass
class GenerationConfig:
    max_tokens: int = 128
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stop_sequences: tuple[str, ...] = ()
    seed: int = 0
    n_candidates: int = 10
    ban_words: bool = True  # ban the token sequences that spell a blocked word (blocklist.py)


@dataclass
class Step:
    index: int
    token: int
    text: str  # text released by this step (may be "" while held back)
    candidates: list[Candidate]
    seconds: float
    logits: np.ndarray | None = None  # the raw scores this token was drawn from [V]
    word_ban: dict[int, str] = field(default_factory=dict)  # token -> blocked word it would have completed
    word_ban_p: dict[int, float] = field(default_factory=dict)  # their probability before the ban (if >= 1e-4)


@dataclass
class Finish:
    stop_reason: str  # end_turn | max_tokens | stop_sequence | model_context_window_exceeded
    stop_sequence: str | None
    output_tokens: int
    text: str
    prefill_seconds: float
    decode_seconds: float
    first_token_at: float | None = None  # perf_counter() when the first token was sampled, if the caller records it


def _held_back(text: str, stops: tuple[str, ...]) -> int:
    """How many trailing characters of ``text`` could be the start of a stop sequence."""
    hold = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:n]):
                hold = max(hold, n)
                break
    return hold


def step_banned(tok: ChatTokenizer, step: Mapping[str, Any]) -> tuple[int, ...]:
    """Every id the engine could not draw at a recorded step: the role markers, and what the word ban removed."""
    return tok.banned_ids + tuple(step.get("word_ban", ()))


def ban_probabilities(logits: np.ndarray, params: SamplingParams, banned: tuple[int, ...],
                      words: dict[int, str], floor: float = 1e-4) -> dict[int, float]:
    """How likely each word-banned token was before the ban removed it (only those above ``floor``)."""
    x = np.asarray(logits, dtype=np.float64).copy()
    x[list(banned)] = -np.inf
    if params.temperature == 0:
        top = int(np.argmax(x))
        return {top: 1.0} if top in words else {}
    x = x / params.temperature
    x = np.exp(x - x.max())
    x /= x.sum()
    return {t: float(x[t]) for t in words if x[t] >= floor}


def generate(model: LanguageModel, tok: ChatTokenizer, prompt: list[int], cfg: GenerationConfig,
             cache: Cache | None = None) -> Iterator[Step | Finish]:
    """Run the model on ``prompt`` (after whatever ``cache`` already holds) and sample a reply."""
    rng = np.random.default_rng(cfg.seed)
    stops = set(tok.stop_ids)
    banned = tok.banned_ids
    ban = word_ban_for(tok) if cfg.ban_words else None
    generated: list[int] = []
    n_ctx = model.config.n_ctx

    t0 = time.perf_counter()
    new = prompt[cache.length:] if cache is not None else prompt
    out = model.forward(new, cache=cache)
    cache, logits = out.cache, out.logits[-1]
    prefill = time.perf_counter() - t0

    # A request decoding in a batch (``explainer.llm.batching``) sends its next draw with its token: the
    # scheduler draws every row's next token together, right after the step. The same numbers, either way.
    # (Only for the model the batch runs: a stand-in model given the same cache runs its own forward.)
    stepper = getattr(cache, "batch", None)
    batched = (stepper is not None and hasattr(stepper, "step_draw") and stepper.serves(model)
               and model.config.vocab_size <= DRAW_ROWS_MAX_VOCAB)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    text, released = "", 0
    stop_reason, stop_seq, n_out = None, None, 0
    drawn: Drawn | None = None
    words = ban.banned_next(generated) if ban is not None else {}
    decode_start = time.perf_counter()
    while stop_reason is None:
        budget.check()
        t = time.perf_counter()
        if drawn is None:
            dist = distribution(logits, cfg.sampling, banned=banned + tuple(words) if words else banned)
            token, candidates = draw(dist, rng), dist.rows(cfg.n_candidates)
        else:
            dist, token, candidates = drawn
        generated.append(token)
        n_out += 1
        hit = None
        if token in stops:
            stop_reason = "end_turn"
        else:
            text += decoder.decode(tok.token_bytes(token))
            hit = min(((text.find(s), s) for s in cfg.stop_sequences if s and s in text), default=None)
            if hit:
                text, stop_reason, stop_seq = text[: hit[0]], "stop_sequence", hit[1]
            elif n_out >= cfg.max_tokens:
                stop_reason = "max_tokens"
            elif cache.length + 1 >= n_ctx:  # prompt + output now fill the window
                stop_reason = "model_context_window_exceeded"
        if stop_reason is None:
            safe = len(text) - _held_back(text, cfg.stop_sequences)
        else:
            if stop_reason != "stop_sequence":
                text += decoder.decode(b"", final=True)  # release a cut-off character as U+FFFD
            safe = len(text)
        piece, released = text[released:safe], max(released, safe)
        yield Step(n_out - 1, token, piece, candidates, time.perf_counter() - t, logits,
                   words, ban_probabilities(logits, cfg.sampling, banned, words) if words else {})
        if stop_reason is None:
            words = ban.banned_next(generated) if ban is not None else {}
            if batched:
                spec = Draw(cfg.sampling, banned + tuple(words) if words else banned, rng, cfg.n_candidates)
                logits, drawn = stepper.step_draw(token, spec)  # type: ignore[union-attr]
            else:
                logits = model.forward([token], cache=cache).logits[-1]
    yield Finish(stop_reason, stop_seq, n_out, text, prefill, time.perf_counter() - decode_start)
