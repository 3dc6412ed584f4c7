"""Words a learner reads instead of raw values: a stop reason said in words (the API's name kept
beside it), a token's text with its invisible characters shown, and a token that holds part of a
character shown as its bytes (‹E4›), with the character once after the run of tokens that makes it.
The browser says the same with ``stopReasonInWords`` (static/js/lib/text.js) and ``visibleToken``,
``tokenText`` and ``tokenRuns`` (static/js/lib/tokens.js); tests check that both agree."""
from __future__ import annotations

import unicodedata

from explainer.llm.tokentext import _characters, token_text  # noqa: F401  (token_text is re-exported for the pages)

STOP_WORDS = {
    "end_turn": "the model chose to stop (end_turn)",
    "max_tokens": "reached max_tokens, the limit you set",
    "stop_sequence": "hit one of your stop sequences (stop_sequence)",
    "tool_use": "the model called a tool (tool_use)",
    "model_context_window_exceeded": "the context window is full (model_context_window_exceeded)",
    "refusal": "the model refused (refusal)",
    "pause_turn": "the turn was paused (pause_turn)",
}


def stop_reason_in_words(reason: str | None) -> str | None:
    return None if reason is None else STOP_WORDS.get(reason, reason)


_INVISIBLE = {"Cc", "Cf", "Zl", "Zp", "Zs", "Co", "Cn"}
_MARKS = {" ": "·", "\n": "↵", "\t": "⇥", "\r": "␍"}


def visible_token(text: str) -> str:
    """A token's text as every page shows it (static/js/lib/tokens.js does the same in the browser):
    whitespace as · ↵ ⇥ ␍, the empty string as ∅, any other invisible character as ⟨U+XXXX⟩.

    >>> visible_token(" the\\n"), visible_token(""), visible_token("a\\u202eb")
    ('·the↵', '∅', 'a⟨U+202E⟩b')
    """
    if text == "":
        return "∅"
    return "".join(_MARKS.get(c) or (f"⟨U+{ord(c):04X}⟩" if unicodedata.category(c) in _INVISIBLE else c) for c in text)


# ---- a token's bytes ------------------------------------------------------------------------------
# A byte-level tokenizer cuts text anywhere, also inside a character: 中 is the three bytes E4 B8 AD, and a
# token may hold E4 alone. Decoding such a token by itself gives U+FFFD (�), which hides what the token
# is; every page shows the byte instead, as ‹E4› (the form the tokenize stage introduced), and where a
# run of neighbouring tokens together makes whole characters, shows those characters once beside the run.
# static/js/lib/tokens.js (tokenText, tokenRuns) does the same in the browser; a test checks both agree.

def token_runs(pieces: list[bytes]) -> list[tuple[bool, str | None]]:
    """For each token of a sequence (given as its bytes): whether it holds part of a character (a byte
    that ``token_text`` shows as ‹E4›), and, on the last token of each run of neighbours that together
    make whole characters, those characters as ``visible_token`` shows them (else None). A run takes in
    every token from the first byte of its first cut character to the last byte of its last one.

    >>> token_runs([b"a", b"\\xe4", b"\\xb8\\xad", b"b"])
    [(False, None), (True, None), (True, '中'), (False, None)]
    """
    data = b"".join(pieces)
    owner = [k for k, p in enumerate(pieces) for _ in p]  # the token each byte of the sequence belongs to
    out: list[list] = [[_cut(p), None] for p in pieces]
    run = None  # [first token, last token, first byte, last byte + 1] of the run being gathered
    for a, b, ch in _characters(data):
        if ch is None or owner[a] == owner[b - 1]:
            continue  # a stray byte, or a character one token holds whole
        if run and owner[a] <= run[1]:
            run[1], run[3] = owner[b - 1], b
        else:
            _close(out, data, run)
            run = [owner[a], owner[b - 1], a, b]
    _close(out, data, run)
    return [(part, joins) for part, joins in out]


def _cut(piece: bytes) -> bool:
    try:
        piece.decode("utf-8")
        return False
    except UnicodeDecodeError:
        return True


def _close(out: list[list], data: bytes, run) -> None:
    if run:
        out[run[1]][1] = visible_token(token_text(data[run[2]:run[3]]))


def token_row(tokenizer, ids) -> list[dict]:
    """``{"id", "text", "part", "joins"}`` for each id of a sequence, as ``token_text`` and ``token_runs``
    show it; ``tokenizer`` is any of the app's tokenizers (``token_bytes``)."""
    ids = [int(t) for t in ids]
    pieces = [tokenizer.token_bytes(t) for t in ids]
    return [{"id": t, "text": token_text(p), "part": part, "joins": joins}
            for t, p, (part, joins) in zip(ids, pieces, token_runs(pieces))]


def token_label(tokenizer, token: int) -> str:
    """One token's text by itself (its bytes through ``token_text``), for a token shown without its
    neighbours: a candidate, a vocabulary entry."""
    return token_text(tokenizer.token_bytes(int(token)))
