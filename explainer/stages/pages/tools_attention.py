"""Where the model looked while it wrote the call's argument: attention from the argument's tokens back
to the identifier that the question names.

A model that fills ``{"dag_id": "etl_pipeline"}`` from "Did my etl_pipeline DAG run today?" copies the
identifier, and copying is what attention does: while it writes each token of the argument, some head
puts most of its weight on the question's tokens of ``etl_pipeline``. This module measures what the
scenario's model really does, with one forward pass over the sequence the engine ran (the prompt, the
call's opening line and every token of the call), asking the model for its attention weights by name
(``block_{l}_attn_head_{h}_weights``, as the Transformer stage does):

- the rows: one per token of the argument's values, the attention at the step that chose that token
  (a decoder picks token ``p`` from the position before it, ``p - 1``);
- the columns: the question's tokens (those around the identifier when the question is longer than a
  phone's width, ``COLUMN_CHARS``), and the rest of each row's weight, so that every row sums to 1;
  the figures split that rest into what lies before the question (the system prompt with the tool's
  definition) and after it (the turn's markers, the call's opening and the JSON written so far);
- for every layer and head, the share of attention on the identifier's tokens, averaged over the rows;
  the head with the largest share is the one drawn, beside the share an even spread would give.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from explainer.lifecycle.tool_format import TOOL_USE_PREFIX
from explainer.stages.words import token_row, visible_token

_BREAKS = str.maketrans({"\n": "↵", "\t": "⇥", "\r": "␍"})
ROWS = 6  # argument tokens drawn (the figures are measured over all of them)
COLUMN_CHARS = 40  # the question's tokens drawn, at most this many characters as shown: a phone's width
DIGITS = 4  # weights as the page and /data carry them

_IDENTIFIER = re.compile(r"[\"'“‘]([^\"'”’\s]{2,64})[\"'”’]"  # quoted
                         r"|\b([A-Za-z0-9]+(?:[_\-./:@][A-Za-z0-9]+)+)\b"  # etl_pipeline, payments-api, A-10293
                         r"|\b([A-Za-z]*\d[A-Za-z0-9]*)\b")  # 88412, jsmith42


def _strings(value) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    if isinstance(value, bool) or value is None:
        return []
    return [str(value)]


def find_identifier(question: str, call_input) -> str | None:
    """The identifier the question names: an argument value that the question contains (the model copied it;
    the longest), else the first word that looks like an id (quoted, joined by ``_ - . / : @``, or with a
    digit), else None.

    >>> find_identifier("Did my etl_pipeline DAG run today?", {"dag_id": ") returns"})
    'etl_pipeline'
    >>> find_identifier("Where is order A-10293?", {"order": "A-10293"}), find_identifier("Weather in Oslo?", {"city": "Lima"})
    ('A-10293', None)
    """
    copied = sorted((s for s in _strings(call_input) if len(s) >= 2 and s in question), key=len, reverse=True)
    if copied:
        return copied[0]
    m = _IDENTIFIER.search(question)
    return next(g for g in m.groups() if g) if m else None


def value_spans(raw: bytes) -> list[tuple[int, int]]:
    """The byte spans of a JSON text's values (inside a string's quotes; a number, true, false or null), keys
    left out. A text cut short (max_tokens) is read as far as it goes.

    >>> value_spans(b'{"dag_id":"etl"}'), value_spans(b'{"n":42,"ok":true}'), value_spans(b'{"dag_id":"et')
    ([(11, 14)], [(5, 7), (13, 17)], [(11, 13)])
    """
    spans, i, n = [], 0, len(raw)
    while i < n:
        c = raw[i:i + 1]
        if c == b'"':
            j = i + 1
            while j < n and raw[j:j + 1] != b'"':
                j += 2 if raw[j:j + 1] == b"\\" else 1
            k = j + 1
            while k < n and raw[k:k + 1] in b" \t\r\n":
                k += 1
            if not (k < n and raw[k:k + 1] == b":"):  # a key is followed by a colon
                spans.append((i + 1, min(j, n)))
            i = j + 1
        elif c in b"{}[],: \t\r\n":
            i += 1
        else:
            j = i
            while j < n and raw[j:j + 1] not in b'{}[],:" \t\r\n':
                j += 1
            spans.append((i, j))
            i = j
    return [s for s in spans if s[1] > s[0]]


def _overlapping(lengths: Sequence[int], start: int, end: int) -> list[int]:
    """Indices of the pieces (given by their byte lengths, end to end) that hold any byte of [start, end)."""
    out, at = [], 0
    for i, n in enumerate(lengths):
        if n and at < end and at + n > start:
            out.append(i)
        at += n
    return out


def window(widths: Sequence[int], centre: int, limit: int = COLUMN_CHARS) -> tuple[int, int]:
    """The widest run ``[lo, hi)`` of neighbouring pieces around ``centre`` whose widths add up to at most ``limit``
    (the centre itself always), grown to the right and the left in turn.

    >>> window([3, 3, 3], 1), window([5, 5, 5, 5, 5], 2, limit=12), window([50, 1], 0)
    ((0, 3), (2, 4), (0, 1))
    """
    lo, hi, total = centre, centre + 1, widths[centre]
    grown = True
    while grown:
        grown = False
        if hi < len(widths) and total + widths[hi] <= limit:
            total, hi, grown = total + widths[hi], hi + 1, True
        if lo > 0 and total + widths[lo - 1] <= limit:
            total, lo, grown = total + widths[lo - 1], lo - 1, True
    return lo, hi


def input_start(steps: list[dict], choice: str, name: str) -> int:
    """The first step of the call's input JSON: with tool_choice ``tool`` the engine wrote the name itself;
    otherwise the model chose it, token by token, up to its newline."""
    if choice == "tool":
        return 0
    text = ""
    for i, s in enumerate(steps):
        text += s["piece"]
        if text == name + "\n":
            return i + 1
    return len(steps)


def sequence(tokenizer, run, choice: str, name: str) -> tuple[list[int], int]:
    """The ids the engine ran for this call, and where the call's steps start in them: the prompt, the
    opening line the engine forced (``tool_use NAME`` and a newline with tool_choice ``tool``, ``tool_use ``
    alone otherwise), then every generated token."""
    forced = TOOL_USE_PREFIX + (name + "\n" if choice == "tool" else "")
    head = list(run.prompt_ids) + tokenizer.encode(forced)
    return head + [s["token"] for s in run.steps], len(head)


def measure(engine, run, *, choice: str, name: str, question: str, identifier: str | None) -> dict:
    """The attention picture's data (see the module's docstring); ``reason`` says why there is none."""
    tok, model = engine.tokenizer, engine.model
    first = input_start(run.steps, choice, name)
    call = run.steps[first:]
    lengths = [len(tok.token_bytes(s["token"])) for s in call]
    raw = b"".join(tok.token_bytes(s["token"]) for s in call)
    args = sorted({i for a, b in value_spans(raw) for i in _overlapping(lengths, a, b)})
    if not args:
        return {"reason": "The call's input holds no value to trace."}
    prompt = list(run.prompt_ids)
    plens = [len(tok.token_bytes(t)) for t in prompt]
    text = b"".join(tok.token_bytes(t) for t in prompt)
    q = question.encode("utf-8", "surrogatepass")
    at = text.rfind(q) if q else -1
    if at < 0:
        return {"reason": "The question's text is not found in the prompt's tokens."}
    question_tokens = _overlapping(plens, at, at + len(q))
    ident: list[int] = []
    if identifier:
        i_at = question.find(identifier)
        if i_at >= 0:
            a = at + len(question[:i_at].encode("utf-8", "surrogatepass"))
            ident = _overlapping(plens, a, a + len(identifier.encode("utf-8", "surrogatepass")))
    ids, offset = sequence(tok, run, choice, name)
    pos = [offset + first + i for i in args]  # where the argument's tokens sit in ids
    q0 = pos[0] - 1  # the first query: the position that chose the first argument token
    cache = model.new_cache()
    model.forward(ids[:q0], cache)  # the positions before it, without their intermediates
    trace = model.forward(ids[q0:pos[-1]], cache, want=("block_*_attn_head_*_weights",)).trace
    L, H = model.config.n_layer, model.config.n_head
    rows = [p - 1 - q0 for p in pos]
    # [L, H, R, S]: each argument token's attention over every position it could see
    w = np.stack([np.stack([np.asarray(trace[f"block_{l}_attn_head_{h}_weights"], dtype=np.float64)[rows]
                            for h in range(H)]) for l in range(L)])
    # [L, H]: the share on the identifier's tokens, or (a question that names none) on the question's
    shares = w[..., ident or question_tokens].sum(-1).mean(-1)
    bl, bh = (int(x) for x in np.unravel_index(int(np.argmax(shares)), shares.shape))
    best = w[bl, bh]  # [R, S]
    # the columns drawn: the question's tokens, or those around the identifier when it is long
    heads = token_row(tok, [prompt[c] for c in question_tokens])
    lo, hi = window([len(h["text"]) for h in heads], question_tokens.index(ident[0]) if ident else 0)
    columns, heads = question_tokens[lo:hi], heads[lo:hi]
    c0, c1 = columns[0], columns[-1] + 1
    labels = token_row(tok, [ids[p] for p in pos])
    # [R] each: before the question (system prompt, tool definition), after it (the call so far), the question's tokens
    # that are not the identifier's, and each row's weight outside the drawn columns (its "rest")
    q_first, q_last = question_tokens[0], question_tokens[-1] + 1
    before = best[:, :q_first].sum(-1)
    after = np.array([best[r, q_last:p].sum() for r, p in enumerate(pos)])  # query p - 1 sees keys 0..p-1
    target = best[:, ident or question_tokens].sum(-1)
    other = best[:, q_first:q_last].sum(-1) - target
    rest = 1 - best[:, c0:c1].sum(-1)
    on_ident = best[:, ident].sum(-1) if ident else None
    even = float(np.mean([len(ident) / p for p in pos]))  # p keys are visible from query p - 1
    pct = lambda x, d=1: round(float(x) * 100, d)  # noqa: E731
    return {
        "reason": None,
        "identifier": identifier if ident else None,
        "call_json": raw.decode("utf-8", "replace"),
        "copied": bool(identifier) and identifier in _strings_of(raw),
        # a column's head reads as the question does, spaces kept; a line break or tab is marked, not obeyed
        "columns": [{"text": h["text"].translate(_BREAKS), "ident": c in ident} for h, c in zip(heads, columns)],
        "rows": [{"text": visible_token(labels[r]["text"]), "position": p,
                  "cells": [{"pct": pct(best[r, c], 2), "ident": c in ident} for c in columns],
                  "before_pct": pct(before[r]), "after_pct": pct(after[r]), "rest_pct": round(float(rest[r]) * 100),
                  "share_pct": pct(on_ident[r]) if ident else None}
                 for r, p in enumerate(pos[:ROWS])],
        "n_rows": len(pos), "n_ident": len(ident), "n_layer": L, "n_head": H, "n_question": len(question_tokens),
        "layer": bl, "head": bh, "picked_by": "identifier" if ident else "question",
        # the drawn head, over all the argument's tokens
        "share_pct": pct(shares[bl, bh]),
        "before_pct": pct(before.mean()), "after_pct": pct(after.mean()),
        "other_pct": pct(other.mean()),  # share + before + after + other = 100
        "even_pct": pct(even) if ident else None,
        "times_even": round(float(shares[bl, bh]) / even, 1) if ident else None,
        "mean_pct": pct(shares.mean()),  # every head's share, averaged
        "shares_pct": [[pct(x) for x in row] for row in shares],  # [L][H]
        "max_pct": pct(best[:ROWS, c0:c1].max(), 2),  # the darkest cell drawn
    }


def _strings_of(raw: bytes) -> list[str]:
    """The call's value texts as written (escapes left as they are: an identifier has none)."""
    return [raw[a:b].decode("utf-8", "replace") for a, b in value_spans(raw)]
