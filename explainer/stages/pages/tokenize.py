"""Tokenize: the context as the model reads it, byte-level BPE merge by merge, and what the
size of the vocabulary does to the token count.

Everything is computed from the tokenizer of the model that serves the scenario, through the model
interface only (``explainer/llm/interface.py``): bytes, merges and special tokens are not id ranges.
For each pre-tokenised chunk of the context the page keeps the ranks of the merges BPE applies with
the *whole* merge list. With only the first N merges BPE does exactly the same steps and stops at
the first step whose rank is N or more (it always merges the lowest-ranked pair present, so the
state is identical until then). So one trace per chunk gives the tokens at every vocabulary size:
the server uses it for the tokens-vs-N curve, the browser for the slider.

The chat template comes from ``chat_parts``: what the template adds (special tokens, and for many
models plain text such as a role's name) and each turn's own text. A template's lone special token
before or after a turn's text is that turn's ``open`` / ``close``; anything else the template adds
is cut into chunks like the text, marked as the template's.

The browser gets only what the shown chunks need (the byte ids, the merges they replay, the special
tokens they show), never a table over the vocabulary: a real model's has 49,152 to 151,936 ids.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from explainer.lifecycle import lru
from explainer.lifecycle.figures import chat_text_figures, request_chat_parts, text_figures, tokenized_figures
from explainer.lifecycle.tool_format import tools_system_prompt
from explainer.llm.interface import ChatTokenizer, TokenizerError
from explainer.stages.options import IntOption, OptionError
from explainer.stages.words import token_row, visible_token

DATA = {"tokenize-data": "tokenize_data"}  # element id -> context key: embedded once by _stage.html, served by /learn/<slug>/data
OPTIONS: dict = {
    # absent: the model's own merges (each model has its own number, known once the scenario is read)
    "merges": IntOption(None, 0, None, "vocabulary size: merges used"),
    "token": IntOption(-1, -1, None, "selected token (-1: the first token of the chosen word)"),
    "word": IntOption(-1, -1, None, "chunk whose merges are stepped through (-1: chosen for you)"),
    "merge": IntOption(0, 0, None, "merge step of that chunk"),
    "img_w": IntOption(1920, 1, 8000, "image width in pixels"),
    "img_h": IntOption(1080, 1, 8000, "image height in pixels"),
}

# What the interactive views cover. A context is a few thousand bytes for the bundled model's
# 512-token window; a longer one (a large window, a hostile link) is shown up to this budget.
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


def replay(start: tuple[int, ...], ranks: tuple[int, ...], merges: list[tuple[int, int]], made: dict[int, int]) -> list[tuple[int, ...]]:
    """The states the browser computes (tokenize.js's ``Chunk.after``): each rank's pair merged
    everywhere, left to right. ``made[r]`` is the id merge r makes."""
    states = [tuple(start)]
    for r in ranks:
        a, b = merges[r]
        prev, out, i = states[-1], [], 0
        while i < len(prev):
            if i + 1 < len(prev) and prev[i] == a and prev[i + 1] == b:
                out.append(made[r])
                i += 2
            else:
                out.append(prev[i])
                i += 1
        states.append(tuple(out))
    return states


@dataclass(frozen=True)
class Chunk:
    text: str
    ranks: tuple[int, ...]  # merges applied with the whole list, in order
    pieces: tuple[tuple[int, ...], ...]  # pieces[k]: the tokens after k merges (pieces[0]: the byte tokens)
    kind: str = "text"  # text: the conversation's; template: what the chat template adds
    fixed: bool = False  # the ids kept as they are at every vocabulary size (a special token; text that does not replay)
    whole: tuple[int, int] | None = None  # (n, id): from n merges on the chunk is this one token (a model's ignore_merges)
    replays: bool = True  # False: replaying the ranks does not give ``pieces`` (the browser gets the pieces)

    def tokens_at(self, n: int) -> tuple[int, ...]:
        """The chunk's tokens with the first ``n`` merges: the trace, stopped at the first rank >= n."""
        if self.whole is not None and n >= self.whole[0]:
            return (self.whole[1],)
        k = 0
        while k < len(self.ranks) and self.ranks[k] < n:
            k += 1
        return self.pieces[k]


def fixed(ids: list[int], text: str, kind: str) -> Chunk:
    """Ids shown as the model reads them at every vocabulary size (a special token; text whose trace does not give them)."""
    return Chunk(text, (), (tuple(ids),), kind, fixed=True)


@dataclass(frozen=True)
class Part:
    role: str  # system | user | assistant | prefill | reply | template (a turn the chat template writes on its own)
    open: int | None  # the template's lone special token before the turn's text (None: the template's chunks say it)
    first: int  # chunk indices [first, end)
    end: int
    close: int | None  # its lone special token after the text; None for an open turn, a cut-off one, or another template


@dataclass(frozen=True)
class Context:
    parts: tuple[Part, ...]
    chunks: tuple[Chunk, ...]
    truncated: bool

    def tokens_at(self, n: int) -> list[int]:
        out: list[int] = []
        for p in self.parts:
            if p.open is not None:
                out.append(p.open)
            for c in self.chunks[p.first:p.end]:
                out.extend(c.tokens_at(n))
            if p.close is not None:
                out.append(p.close)
        return out

    @property
    def text_chunks(self) -> list[Chunk]:
        """The conversation's own chunks (not the template's)."""
        return [c for c in self.chunks if c.kind == "text"]

    @property
    def text(self) -> str:
        return "".join(c.text for c in self.text_chunks)


def trace_chunks(tok: ChatTokenizer, text: str, budget: list[int] | None = None, kind: str = "text") -> tuple[list[Chunk], bool]:
    """Chunks of ``text`` with their full-list merge traces; stops (returns True) when over budget."""
    out: list[Chunk] = []
    full = len(tok.merges)
    made: dict[int, int] = {}
    for traced in tok.encode_with_trace(text, max_merges=full):
        size = len(traced["bytes"])
        if not traced["traced"] or (budget is not None and (size > MAX_CHUNK_BYTES or size > budget[0])):
            return out, True
        if budget is not None:
            budget[0] -= size
        steps = traced["steps"]
        start = tuple(traced.get("start_ids") or (tok.byte_id(b) for b in traced["bytes"]))
        pieces = (start, *(s.pieces for s in steps))
        ranks = tuple(s.rank for s in steps)
        made.update((s.rank, s.token) for s in steps)
        whole = (full, traced["ids"][0]) if traced.get("shortcut") else None
        out.append(Chunk(traced["text"], ranks, pieces, kind, False, whole, replay(start, ranks, tok.merges, made) == list(pieces)))
    return out, False


def _traced_or_fixed(tok: ChatTokenizer, ids: list[int], kind: str, budget: list[int] | None) -> tuple[list[Chunk], bool]:
    """``ids`` (one text part, or a run of the template's plain text) as traced chunks, if tracing their
    decoded text gives them back; else as they are."""
    if not ids:
        return [], False
    text = tok.decode(ids)
    chunks, cut = trace_chunks(tok, text, budget, kind)
    if cut or [t for c in chunks for t in c.tokens_at(tok.model_merges)] == list(ids):
        return chunks, cut
    return [fixed(ids, text, kind)], False


def _template_chunks(tok: ChatTokenizer, ids: list[int]) -> list[Chunk]:
    """What the template adds: each special token on its own, its plain text traced like the conversation's."""
    out: list[Chunk] = []
    run: list[int] = []
    for t in [*ids, None]:
        if t is not None and not tok.is_special(t):
            run.append(t)
            continue
        out += _traced_or_fixed(tok, run, "template", None)[0]
        run = []
        if t is not None:
            out.append(fixed([t], tok.token_str(t), "template"))
    return out


def _turns(tok: ChatTokenizer, system: str | None, messages: list[tuple[str, str]]) -> list[tuple[str, list[int], list[int], list[int]]]:
    """(role, the template's ids before the text, the text's ids, the template's ids after it) for each turn,
    cut where ``encode_chat_segments`` says each turn ends; what is left opens the reply."""
    _, ends = tok.encode_chat_segments(system, messages)
    roles = {"system": "system"}
    for i, (role, _) in enumerate(messages):
        roles[f"messages.{i}"] = "prefill" if role == "assistant" and i == len(messages) - 1 else role
    turns: list[tuple[str, list[int], list[int], list[int]]] = []
    label, before, text, after = None, [], [], []
    pos = 0
    for name, ids in tok.chat_parts(system, messages):
        # a template part may close one turn and open the next: it is read one id at a time
        for piece in ([ids] if name != "template" else [[t] for t in ids]):
            if name != "template":
                label, text = name, list(piece)
            else:
                (after if label else before).extend(piece)
            pos += len(piece)
            if label and pos == ends.get(label):
                turns.append((roles.get(label, "user"), before, text, after))
                label, before, text, after = None, [], [], []
    if label or before:
        turns.append((roles.get(label, "user") if label else "reply", before, text, after))
    return [t for turn in turns for t in _split_template_turn(tok, turn)]


def _split_template_turn(tok: ChatTokenizer, turn: tuple) -> list[tuple]:
    """A turn whose opening holds a whole turn of the template's own (SmolLM2's default system prompt,
    written when the request has none), as that turn ("template") and the rest."""
    role, before, text, after = turn
    if tok.end_id not in before:
        return [turn]
    cut = len(before) - before[::-1].index(tok.end_id)
    while cut < len(before) and not tok.is_special(before[cut]):  # the closing's own line break
        cut += 1
    return [("template", before[:cut], [], []), (role, before[cut:], text, after)]


def build_context(tok: ChatTokenizer, system: str | None, messages: list[tuple[str, str]]) -> Context:
    parts: list[Part] = []
    chunks: list[Chunk] = []
    budget = [MAX_TEXT_BYTES]
    for role, before, text_ids, after in _turns(tok, system, messages):
        first = len(chunks)
        opener = before[0] if len(before) == 1 and tok.is_special(before[0]) else None
        if opener is None:
            chunks += _template_chunks(tok, before)
        new, truncated = _traced_or_fixed(tok, text_ids, "text", budget)
        chunks += new
        if truncated:
            parts.append(Part(role, opener, first, len(chunks), None))
            return Context(tuple(parts), tuple(chunks), True)
        closer = after[0] if len(after) == 1 and tok.is_special(after[0]) else None
        if closer is None:
            chunks += _template_chunks(tok, after)
        parts.append(Part(role, opener, first, len(chunks), closer))
    return Context(tuple(parts), tuple(chunks), False)


def sample_points(n_merges: int, model: int) -> list[int]:
    """0, powers of two and the whole list, log-spaced; the model's own setting replaces its neighbours."""
    pts = {0, n_merges, model} | {2 ** k for k in range(3, 20) if 2 ** k < n_merges}
    return sorted(p for p in pts if p in (0, model, n_merges) or not (model / 1.2 < p < model * 1.2))


def _chunk_json(chunks: list[Chunk] | tuple[Chunk, ...], tok: ChatTokenizer) -> list:
    """``[text, ranks]`` per chunk, and a third item only where the browser needs more than the bytes and ranks:
    ``template`` (the chat template's text), ``ids`` (a fixed chunk), ``start`` (it does not start as its
    bytes: an added token), ``whole`` ([n, id]) and ``states`` (every state, where replaying the ranks differs)."""
    out = []
    for c in chunks:
        extra: dict = {}
        if c.kind == "template":
            extra["template"] = 1
        if c.fixed:
            extra["ids"] = list(c.pieces[0])
        elif list(c.pieces[0]) != [tok.byte_id(b) for b in c.text.encode("utf-8")]:
            extra["start"] = list(c.pieces[0])
        if c.whole is not None:
            extra["whole"] = list(c.whole)
        if not c.replays:
            extra["states"] = [list(p) for p in c.pieces]
        out.append([c.text, list(c.ranks), extra] if extra else [c.text, list(c.ranks)])
    return out


def _tables(tok: ChatTokenizer, chunks: list[Chunk], extra_ids: set[int]) -> dict:
    """What the browser needs to show the tokens of ``chunks``: the merges they replay (rank -> pair and the id
    it makes), the special tokens' texts, and the bytes of any other id that neither bytes nor those merges make."""
    ranks = sorted({r for c in chunks for r in c.ranks})
    made = {r: tok.merge_id(r) for r in ranks}
    derivable = {tok.byte_id(b) for b in range(256)} | set(made.values())
    ids = set(extra_ids)
    for c in chunks:
        ids.update(c.pieces[0])
        if c.whole is not None:
            ids.add(c.whole[1])
    specials = {t: tok.token_str(t) for t in sorted(ids) if tok.is_special(t)}
    return {
        "pairs": {r: list(tok.merges[r]) for r in ranks}, "made": made, "specials": specials,
        "bytes_of": {t: list(tok.token_bytes(t)) for t in sorted(ids - derivable - set(specials))},
    }


@dataclass(frozen=True)
class Computed:
    """What ``context()`` needs for one scenario, before the view options are applied."""

    ctx: Context | None
    error: str | None
    curve: list[list[int]]
    words: list[dict]  # choices for the merge stepper
    default_word: int | None
    tables: dict  # _tables() for the context's chunks and the samples'


_CACHE = lru.LRU("tokenize page")  # Computed per context, and the samples per tokenizer, bounded by bytes


@dataclass(frozen=True)
class Sample:
    name: str
    text: str
    chunks: tuple[Chunk, ...]


def samples(tok: ChatTokenizer, model_key: tuple) -> tuple[Sample, ...]:
    """The prose and code samples with their merge traces (computed once per model)."""
    return _CACHE.get_or_compute(("samples", *model_key), lambda: tuple(
        Sample(name, text, tuple(trace_chunks(tok, text)[0])) for name, text in (("prose", PROSE_SAMPLE), ("code", CODE_SAMPLE))))


def _word(index: int, c: Chunk) -> dict:
    label = c.text.replace(" ", "·").replace("\n", "↵").replace("\t", "⇥")
    label = "".join(ch if ch.isprintable() else f"⟨U+{ord(ch):04X}⟩" for ch in label)
    return {"index": index, "label": label if len(label) <= 40 else label[:39] + "…", "steps": len(c.ranks)}


def _offered_words(ctx: Context, texts: list[int]) -> list[dict]:
    """The text's word-like chunks with merges to step through, each once, at most MAX_WORD_CHOICES."""
    seen: set[str] = set()
    words = []
    for i in texts:
        c = ctx.chunks[i]
        if _WORDISH.search(c.text) and c.ranks and c.text not in seen and len(words) < MAX_WORD_CHOICES:
            seen.add(c.text)
            words.append(_word(i, c))
    return words


def _pick_word(ctx: Context) -> tuple[list[dict], int | None]:
    """The chunks of the conversation's text offered to the merge stepper, and the one it opens on:
    the longest word of the last user message (the first of the longest; else the chunk with most merges)."""
    texts = [i for i, c in enumerate(ctx.chunks) if c.kind == "text"]
    last_user = next((p for p in reversed(ctx.parts) if p.role == "user"), None)
    pool = [i for i in texts if last_user and last_user.first <= i < last_user.end] or texts
    wordish = [i for i in pool if _WORDISH.search(ctx.chunks[i].text)]
    best = max(wordish, key=lambda i: len(ctx.chunks[i].text.strip()), default=None)
    if best is None and texts:
        best = max(texts, key=lambda i: len(ctx.chunks[i].ranks))
    return _offered_words(ctx, texts), best


def compute(tok: ChatTokenizer, key: tuple, model_key: tuple, system: str | None, messages: list[tuple[str, str]] | None) -> Computed:
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
    shown = [c for s in samples(tok, model_key) for c in s.chunks]
    extra: set[int] = set()
    if ctx is not None:
        curve = [[n, len(ctx.tokens_at(n))] for n in sample_points(len(tok.merges), tok.model_merges)]
        words, default_word = _pick_word(ctx)
        shown += ctx.chunks
        extra = {t for p in ctx.parts for t in (p.open, p.close) if t is not None}
    result = Computed(ctx, error, curve, words, default_word, _tables(tok, shown, extra))
    _CACHE.put(key, result)
    return result


def template_example(tok: ChatTokenizer) -> str:
    """The chat template around a system prompt and one message, each written "…", line breaks shown as ↵."""
    return tok.decode(tok.encode_chat("…", [("user", "…")])).replace("\n", "↵")


@dataclass
class Selection:
    """What the page picks out of the context: the token ids at the slider's merges, the chosen word (chunk),
    its merge step and the chosen token, and the words offered (the chosen one among them)."""
    tokens: list[int]
    word: int | None
    merge: int
    token: int | None
    words: list[dict]

    @property
    def shown(self) -> int:
        return len(self.tokens)


def _merges(tok: ChatTokenizer, opts: dict) -> int:
    """The slider's vocabulary: how many merges are used (the model's own by default)."""
    full = len(tok.merges)
    n = tok.model_merges if opts["merges"] is None else opts["merges"]
    if n > full:
        raise OptionError(f"“merges” must be from 0 to {full}; got {n}.")
    return n


def _figures_block(name: str, title: str, text: str, at_n: int, at_model: int, at_full: int, shown_text: str | None) -> dict:
    return {"name": name, "title": title, "text": shown_text, "stats": text_figures(text, at_n).as_dict(),
            "model": text_figures(text, at_model).as_dict(), "full": text_figures(text, at_full).as_dict()}


def _stat_blocks(tok: ChatTokenizer, model_key, ctx, n: int) -> list[dict]:
    """Characters, bytes, words and tokens of the context's text and of each sample: at the slider's setting
    (recomputed in the browser with figures.js), with the model's merges and with the whole list. Every count
    comes from the figures module."""
    full = len(tok.merges)
    blocks = []
    for s in samples(tok, model_key):
        count = sum(len(c.tokens_at(n)) for c in s.chunks)
        blocks.append({"name": s.name, "title": f"{s.name.capitalize()} sample", "text": s.text,
                       "stats": text_figures(s.text, count).as_dict(),
                       "model": tokenized_figures(tok, s.text, max_merges=tok.model_merges).as_dict(),
                       "full": tokenized_figures(tok, s.text, max_merges=full).as_dict()})
    if ctx is not None:
        def text_tokens(m: int) -> int:  # the context's text (the turns, not the template) with m merges
            return sum(len(c.tokens_at(m)) for c in ctx.text_chunks)
        title = "Your context" + (" (shown part)" if ctx.truncated else "")
        blocks.insert(0, _figures_block("context", title, ctx.text, text_tokens(n), text_tokens(tok.model_merges),
                                        text_tokens(full), None))
    return blocks


def _selection(data, opts: dict, n: int) -> Selection:
    """The chosen word, merge step and token, checked against the context (a scenario without tokens takes none)."""
    ctx, words = data.ctx, list(data.words)
    if ctx is None:
        if opts["word"] >= 0 or opts["merge"] > 0 or opts["token"] >= 0:
            raise OptionError("This scenario has no tokens, so “word”, “merge” and “token” cannot be set.")
        return Selection([], None, 0, None, words)
    tokens = ctx.tokens_at(n)
    word = opts["word"] if opts["word"] >= 0 else data.default_word
    if word is not None and word >= len(ctx.chunks):
        raise OptionError(f"“word” must be from 0 to {len(ctx.chunks) - 1}; got {word}.")
    if word is not None and all(w["index"] != word for w in words):
        words.insert(0, _word(word, ctx.chunks[word]))
    steps = len(ctx.chunks[word].ranks) if word is not None else 0
    if opts["merge"] > steps:
        raise OptionError(f"“merge” must be from 0 to {steps} for this word; got {opts['merge']}.")
    return Selection(tokens, word, opts["merge"], _token(ctx, opts["token"], len(tokens), word, n), words)


def _token(ctx, token: int, shown: int, word: int | None, n: int) -> int:
    """The chosen token: the option's, or (-1) the first token of the chosen word."""
    if token >= shown:
        raise OptionError(f"“token” must be from 0 to {shown - 1}; got {token}.")
    if token < 0:
        return _first_token_of(ctx, word, n) if word is not None else 0
    return token


def _script_data(tok: ChatTokenizer, loaded, model_key, data, sel: Selection, n: int, opts: dict, model_tokens: int) -> dict:
    """The page script's data (``tokenize-data``, also served by /learn/tokenize/data)."""
    ctx, full = data.ctx, len(tok.merges)
    return {
        "first": tok.merge_id(0) if full else None,  # what merge 0 makes; later merges' ids are in "made"
        "n_merges": full, "model_merges": tok.model_merges, "base": 256 + len(tok.specials),
        "byte_ids": [tok.byte_id(b) for b in range(256)],
        **data.tables,
        "parts": [[p.role, p.open, p.first, p.end, p.close] for p in ctx.parts] if ctx else [],
        "chunks": _chunk_json(ctx.chunks, tok) if ctx else [],
        "truncated": bool(ctx and ctx.truncated),
        "curve": data.curve,
        "samples": {s.name: _chunk_json(s.chunks, tok) for s in samples(tok, model_key)},
        "sel": {"merges": n, "token": sel.token, "word": sel.word, "merge": sel.merge,
                "img_w": opts["img_w"], "img_h": opts["img_h"]},
        "model_tokens": model_tokens,
        "model": loaded.name,
    }


def context(page) -> dict:
    tok: ChatTokenizer = page.engine.tokenizer
    loaded = page.engine.loaded
    run, opts = page.run, page.opts
    req = run.request
    model_key = (loaded.name, loaded.fingerprint)
    system = (tools_system_prompt(req.system, req.tools) if req.tools else req.system) if req is not None else None
    turns = [(m.role, m.text) for m in req.messages] if req is not None else None
    data = compute(tok, (*model_key, page.scenario.key()), model_key, system, turns)
    n = _merges(tok, opts)
    full, base = len(tok.merges), 256 + len(tok.specials)  # the vocabulary with no merge: the bytes and the special tokens
    blocks = _stat_blocks(tok, model_key, data.ctx, n)
    prose = next(b for b in blocks if b["name"] != "context")  # the first sample
    sel = _selection(data, opts, n)
    model_tokens = len(run.prompt_ids)  # every id the model reads, the template's included: usage.input_tokens
    prompt_text = (chat_text_figures(tok, request_chat_parts(tok, req)) if req is not None and run.prompt_ids
                   else text_figures("", 0))
    usage = run.done["usage"] if run.done else None
    return {
        "tk": {
            "error": data.error,
            "model_tokens": model_tokens,
            "prompt_text": prompt_text,
            "template_tokens": model_tokens - prompt_text.tokens,
            "ids": sel.tokens,
            "prose_compare": {"model": prose["model"]["chars_per_token"], "full": prose["full"]["chars_per_token"]},
            "usage_input_tokens": usage["input_tokens"] if usage else None,
            "shown_tokens": sel.shown,
            "truncated": bool(data.ctx and data.ctx.truncated),
            "budget_bytes": MAX_TEXT_BYTES,
            "stat_blocks": blocks,
            "merges": n,
            "vocab": base + n,
            "n_merges": full,
            "full_vocab": base + full,
            "model_merges": tok.model_merges,
            "model_vocab": tok.vocab_size,
            "other_ids": tok.vocab_size - base - tok.model_merges,  # ids no merge makes: added tokens, padding
            "base": base,
            "n_special": len(tok.specials),
            "specials": tok.specials,
            "template_example": template_example(tok),
            "curve": data.curve,
            "words": sel.words,
            "word": sel.word,
            "context_window": page.engine.context_window,
        },
        "tokenize_data": _script_data(tok, loaded, model_key, data, sel, n, opts, model_tokens),
    }


def _first_token_of(ctx: Context, word: int, n: int) -> int:
    i = 0
    for p in ctx.parts:
        i += p.open is not None
        for k in range(p.first, p.end):
            if k == word:
                return i
            i += len(ctx.chunks[k].tokens_at(n))
        i += p.close is not None
    return 0


RECAP_TOKENS = 80  # the recap shows the prompt's first tokens


def recap(page) -> dict:
    """Tokenize's row and card on the recap: the text's own figures (the chat template's tokens apart) and the
    prompt's first tokens, each from its bytes (a byte of a cut character is ‹E4›, the character follows its run once)."""
    run, tok = page.run, page.engine.tokenizer
    n_prompt = len(run.prompt_ids or [])
    text = chat_text_figures(tok, request_chat_parts(tok, run.request)) if run.request is not None and n_prompt else text_figures("", 0)
    return {
        "text": text,
        "template_tokens": n_prompt - text.tokens,
        "prompt_preview": [t | {"special": tok.is_special(t["id"]), "label": visible_token(t["text"])}
                           for t in token_row(tok, run.prompt_ids[:RECAP_TOKENS])],
        "prompt_more": max(0, n_prompt - RECAP_TOKENS),
        "vocab": tok.vocab_size,
    }
