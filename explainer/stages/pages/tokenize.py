"""Tokenize: the context as the model reads it, byte-level BPE merge by merge, and what the
size of the vocabulary does to the token count.

Everything is computed from the bundled tokenizer. For each pre-tokenised chunk of the context
the page keeps the ranks of the merges BPE applies with the *whole* merge list. With only the
first N merges BPE does exactly the same steps and stops at the first step whose rank is N or
more (it always merges the lowest-ranked pair present, so the state is identical until then).
So one trace per chunk gives the tokens at every vocabulary size: the server uses it for the
tokens-vs-N curve, the browser for the slider.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from explainer.lifecycle import lru
from explainer.lifecycle.figures import prompt_text_figures, text_figures, tokenized_figures
from explainer.llm.tokenizer import Tokenizer, TokenizerError, load_tokenizer
from explainer.stages.options import IntOption, OptionError

_TOK = load_tokenizer()

DATA = {"tokenize-data": "tokenize_data"}  # element id -> context key: embedded once by _stage.html, served by /learn/<slug>/data
OPTIONS: dict = {
    "merges": IntOption(_TOK.model_merges, 0, len(_TOK.merges), "vocabulary size: merges used"),
    "token": IntOption(-1, -1, None, "selected token (-1: the first token of the chosen word)"),
    "word": IntOption(-1, -1, None, "chunk whose merges are stepped through (-1: chosen for you)"),
    "merge": IntOption(0, 0, None, "merge step of that chunk"),
    "img_w": IntOption(1920, 1, 8000, "image width in pixels"),
    "img_h": IntOption(1080, 1, 8000, "image height in pixels"),
}

# What the interactive views cover. The model's window is 512 tokens, so a real context is a
# few thousand bytes at most; a longer one (a hostile link) is shown up to this budget.
MAX_TEXT_BYTES = 4000
MAX_CHUNK_BYTES = 400  # a longer chunk's merge trace is not kept (BPE is quadratic in it)
MAX_WORD_CHOICES = 150

# Two fixed samples for the prose-versus-code comparison (written for this page).
PROSE_SAMPLE = (
    "A tokenizer does not read words the way people do. It cuts text into pieces it has seen "
    "often, so a common word is usually one token, while a rare name is split into several."
)
CODE_SAMPLE = (
    "def total_cost(usage, price):\n"
    "    tokens = usage[\"input_tokens\"] + usage[\"output_tokens\"]\n"
    "    return round(tokens * price / 1_000_000, 6)\n"
)

_WORDISH = re.compile(r"[^\W\d_]")


@dataclass(frozen=True)
class Chunk:
    text: str
    ranks: tuple[int, ...]  # merges applied with the whole list, in order
    pieces: tuple[tuple[int, ...], ...]  # pieces[k]: the tokens after k merges (pieces[0] = bytes)

    def tokens_at(self, n: int) -> tuple[int, ...]:
        """The chunk's tokens with the first ``n`` merges: the trace, stopped at the first rank >= n."""
        k = 0
        while k < len(self.ranks) and self.ranks[k] < n:
            k += 1
        return self.pieces[k]


@dataclass(frozen=True)
class Part:
    role: str  # system | user | assistant | prefill | reply
    open: int  # the special token that starts the turn
    first: int  # chunk indices [first, end)
    end: int
    close: int | None  # <|end|>, or None for an open turn (reply, prefill) or a cut-off one


@dataclass(frozen=True)
class Context:
    parts: tuple[Part, ...]
    chunks: tuple[Chunk, ...]
    truncated: bool
    total_chunks: int  # chunks of the whole context (also those past the budget)

    def tokens_at(self, n: int) -> list[int]:
        out: list[int] = []
        for p in self.parts:
            out.append(p.open)
            for c in self.chunks[p.first:p.end]:
                out.extend(c.tokens_at(n))
            if p.close is not None:
                out.append(p.close)
        return out

    @property
    def text(self) -> str:
        return "".join(c.text for c in self.chunks)


def trace_chunks(tok: Tokenizer, text: str, budget: list[int] | None = None) -> tuple[list[Chunk], bool]:
    """Chunks of ``text`` with their full-list merge traces; stops (returns True) when over budget."""
    out: list[Chunk] = []
    full = len(tok.merges)
    for piece in tok.chunks(text):
        size = len(piece.encode("utf-8"))
        if budget is not None:
            if size > MAX_CHUNK_BYTES or size > budget[0]:
                return out, True
            budget[0] -= size
        for traced in tok.encode_with_trace(piece, max_merges=full):
            steps = traced["steps"]
            out.append(Chunk(traced["text"], tuple(s.rank for s in steps),
                             (tuple(traced["bytes"]), *(s.pieces for s in steps))))
    return out, False


def template_turns(system: str | None, messages: list[tuple[str, str]]) -> list[tuple[str, str, bool]]:
    """(role, text, closed) in the order of ``Tokenizer.encode_chat``; a test checks the two agree."""
    turns = [("system", system, True)] if system else []
    for i, (role, text) in enumerate(messages):
        prefill = role == "assistant" and i == len(messages) - 1
        turns.append(("prefill" if prefill else role, text, not prefill))
    if not messages or messages[-1][0] != "assistant":
        turns.append(("reply", "", False))
    return turns


def build_context(tok: Tokenizer, system: str | None, messages: list[tuple[str, str]]) -> Context:
    end = tok.special_id("<|end|>")
    parts: list[Part] = []
    chunks: list[Chunk] = []
    budget = [MAX_TEXT_BYTES]
    truncated = False
    total = 0
    for role, text, closed in template_turns(system, messages):
        total += len(tok.chunks(text)) if text else 0
        if truncated:
            continue
        opener = tok.special_id("<|assistant|>" if role in ("prefill", "reply") else f"<|{role}|>")
        first = len(chunks)
        new, truncated = trace_chunks(tok, text, budget) if text else ([], False)
        chunks.extend(new)
        parts.append(Part(role, opener, first, len(chunks), end if closed and not truncated else None))
    return Context(tuple(parts), tuple(chunks), truncated, total)


def sample_points(n_merges: int, model: int) -> list[int]:
    """0, powers of two and the whole list, log-spaced; the model's own setting replaces its neighbours."""
    pts = {0, n_merges, model} | {2 ** k for k in range(3, 20) if 2 ** k < n_merges}
    return sorted(p for p in pts if p in (0, model, n_merges) or not (model / 1.2 < p < model * 1.2))


def _chunk_json(chunks) -> list:
    return [[c.text, list(c.ranks)] for c in chunks]


@dataclass(frozen=True)
class Computed:
    """What ``context()`` needs for one scenario, before the view options are applied."""

    ctx: Context | None
    error: str | None
    curve: list[list[int]]
    words: list[dict]  # choices for the merge stepper
    default_word: int | None
    pairs: dict[int, list[int]]


_CACHE = lru.LRU("tokenize page")  # Computed per context, bounded by bytes


@dataclass(frozen=True)
class Sample:
    name: str
    text: str
    chunks: tuple[Chunk, ...]


_SAMPLES: dict[int, tuple[Sample, ...]] = {}


def samples(tok: Tokenizer) -> tuple[Sample, ...]:
    """The prose and code samples with their merge traces (computed once per tokenizer)."""
    if id(tok) not in _SAMPLES:
        _SAMPLES[id(tok)] = tuple(Sample(name, text, tuple(trace_chunks(tok, text)[0]))
                                  for name, text in (("prose", PROSE_SAMPLE), ("code", CODE_SAMPLE)))
    return _SAMPLES[id(tok)]


def _word(index: int, c: Chunk) -> dict:
    label = c.text.replace(" ", "·").replace("\n", "↵").replace("\t", "⇥")
    label = "".join(ch if ch.isprintable() else f"⟨U+{ord(ch):04X}⟩" for ch in label)
    return {"index": index, "label": label if len(label) <= 40 else label[:39] + "…", "steps": len(c.ranks)}


def _pick_word(ctx: Context) -> tuple[list[dict], int | None]:
    seen: set[str] = set()
    words = []
    for i, c in enumerate(ctx.chunks):
        if _WORDISH.search(c.text) and c.ranks and c.text not in seen and len(words) < MAX_WORD_CHOICES:
            seen.add(c.text)
            words.append(_word(i, c))
    last_user = next((p for p in reversed(ctx.parts) if p.role == "user"), None)
    pool = range(last_user.first, last_user.end) if last_user and last_user.end > last_user.first else range(len(ctx.chunks))
    best = None
    for i in pool:
        c = ctx.chunks[i]
        if _WORDISH.search(c.text) and (best is None or len(c.text.strip()) > len(ctx.chunks[best].text.strip())):
            best = i
    if best is None and ctx.chunks:
        best = max(range(len(ctx.chunks)), key=lambda i: len(ctx.chunks[i].ranks))
    return words, best


def compute(tok: Tokenizer, key: tuple, system: str | None, messages: list[tuple[str, str]] | None) -> Computed:
    cached = _CACHE.get(key)
    if cached is not None:
        return cached
    ctx, error = None, None
    if messages is None:
        error = "The request was refused before it reached the tokenizer, so there is no context to show."
    else:
        try:
            ctx = build_context(tok, system, messages)
        except TokenizerError as exc:
            error = f"This text cannot be tokenised: {exc}."
    curve, words, default_word = [], [], None
    used: set[int] = set()
    for s in samples(tok):
        for c in s.chunks:
            used.update(c.ranks)
    if ctx is not None:
        curve = [[n, len(ctx.tokens_at(n))] for n in sample_points(len(tok.merges), tok.model_merges)]
        words, default_word = _pick_word(ctx)
        for c in ctx.chunks:
            used.update(c.ranks)
    pairs = {r: list(tok.merges[r]) for r in sorted(used)}
    result = Computed(ctx, error, curve, words, default_word, pairs)
    _CACHE.put(key, result)
    return result


def context(page) -> dict:
    tok: Tokenizer = page.engine.tokenizer
    run, opts = page.run, page.opts
    req = run.request
    turns = [(m.role, m.text) for m in req.messages] if req is not None else None
    data = compute(tok, (id(tok), page.scenario.key()), req.system if req is not None else None, turns)
    n = opts["merges"]
    if n > len(tok.merges):
        raise OptionError(f"“merges” must be from 0 to {len(tok.merges)}; got {n}.")
    ctx = data.ctx

    # Every count of characters, bytes, words and tokens comes from the figures module: at the slider's
    # setting (recomputed in the browser with figures.js), with the model's merges and with the whole list.
    full = len(tok.merges)
    blocks = []
    for s in samples(tok):
        count = sum(len(c.tokens_at(n)) for c in s.chunks)
        blocks.append({"name": s.name, "title": f"{s.name.capitalize()} sample", "text": s.text,
                       "stats": text_figures(s.text, count).as_dict(),
                       "model": tokenized_figures(tok, s.text, max_merges=tok.model_merges).as_dict(),
                       "full": tokenized_figures(tok, s.text, max_merges=full).as_dict()})
    prose = blocks[0]

    sel_word, sel_token, sel_merge, shown, tokens = None, None, 0, 0, []
    words = list(data.words)
    if ctx is not None:
        tokens = ctx.tokens_at(n)
        shown = len(tokens)
        def text_tokens(m: int) -> int:  # the context's text (the turns, not the template) with m merges
            return sum(len(c.tokens_at(m)) for c in ctx.chunks)
        blocks.insert(0, {"name": "context", "title": "Your context" + (" (shown part)" if ctx.truncated else ""),
                          "text": None, "stats": text_figures(ctx.text, text_tokens(n)).as_dict(),
                          "model": text_figures(ctx.text, text_tokens(tok.model_merges)).as_dict(),
                          "full": text_figures(ctx.text, text_tokens(full)).as_dict()})
        sel_word = opts["word"] if opts["word"] >= 0 else data.default_word
        if sel_word is not None and sel_word >= len(ctx.chunks):
            raise OptionError(f"“word” must be from 0 to {len(ctx.chunks) - 1}; got {sel_word}.")
        if sel_word is not None and all(w["index"] != sel_word for w in words):
            c = ctx.chunks[sel_word]
            words.insert(0, _word(sel_word, c))
        sel_merge = opts["merge"]
        steps = len(ctx.chunks[sel_word].ranks) if sel_word is not None else 0
        if sel_merge > steps:
            raise OptionError(f"“merge” must be from 0 to {steps} for this word; got {sel_merge}.")
        sel_token = opts["token"]
        if sel_token >= shown:
            raise OptionError(f"“token” must be from 0 to {shown - 1}; got {sel_token}.")
        if sel_token < 0:
            sel_token = _first_token_of(ctx, sel_word, n) if sel_word is not None else 0
    elif opts["word"] >= 0 or opts["merge"] > 0 or opts["token"] >= 0:
        raise OptionError("This scenario has no tokens, so “word”, “merge” and “token” cannot be set.")

    model_tokens = len(run.prompt_ids)  # every id the model reads, the template's included: usage.input_tokens
    prompt_text = prompt_text_figures(tok, run.prompt_ids) if run.prompt_ids else text_figures("", 0)
    usage = run.done["usage"] if run.done else None
    payload = {
        "first": tok.first_merge_id, "n_merges": len(tok.merges), "model_merges": tok.model_merges,
        "specials": list(tok.specials),
        "parts": [[p.role, p.open, p.first, p.end, p.close] for p in ctx.parts] if ctx else [],
        "chunks": _chunk_json(ctx.chunks) if ctx else [],
        "truncated": bool(ctx and ctx.truncated),
        "curve": data.curve,
        "pairs": data.pairs,
        "samples": {s.name: _chunk_json(s.chunks) for s in samples(tok)},
        "sel": {"merges": n, "token": sel_token, "word": sel_word, "merge": sel_merge,
                "img_w": opts["img_w"], "img_h": opts["img_h"]},
        "model_tokens": model_tokens,
    }
    return {
        "tk": {
            "error": data.error,
            "model_tokens": model_tokens,
            "prompt_text": prompt_text,
            "template_tokens": model_tokens - prompt_text.tokens,
            "ids": tokens if ctx is not None else [],
            "prose_compare": {"model": prose["model"]["chars_per_token"], "full": prose["full"]["chars_per_token"]},
            "usage_input_tokens": usage["input_tokens"] if usage else None,
            "shown_tokens": shown,
            "truncated": bool(ctx and ctx.truncated),
            "budget_bytes": MAX_TEXT_BYTES,
            "stat_blocks": blocks,
            "merges": n,
            "vocab": tok.first_merge_id + n,
            "n_merges": len(tok.merges),
            "full_vocab": tok.first_merge_id + len(tok.merges),
            "model_merges": tok.model_merges,
            "model_vocab": tok.vocab_size,
            "first_merge_id": tok.first_merge_id,
            "n_special": tok.n_special,
            "specials": tok.specials,
            "curve": data.curve,
            "words": words,
            "word": sel_word,
            "context_window": page.engine.context_window,
        },
        "tokenize_data": payload,
    }


def _first_token_of(ctx: Context, word: int, n: int) -> int:
    i = 0
    for p in ctx.parts:
        i += 1
        for k in range(p.first, p.end):
            if k == word:
                return i
            i += len(ctx.chunks[k].tokens_at(n))
        if p.close is not None:
            i += 1
    return 0
