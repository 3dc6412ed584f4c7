"""Words a learner reads instead of raw values: a stop reason said in words (the API's name kept
beside it), and a token's text with its invisible characters shown. The browser says the same with
``stopReasonInWords`` (static/js/lib/text.js) and ``visibleToken`` (static/js/lib/tokens.js); tests check
that both agree."""
from __future__ import annotations

import unicodedata

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
