"""The counting function every page uses: one definition of bytes, characters, words and tokens.

Pages used to count on their own and disagreed ("2.38 tokens per word" on one, "2.75" on
another, "171 bytes" beside "221 characters"). Every figure a page shows about a piece of text
or a request body now comes from here, and ``static/js/lib/figures.js`` mirrors these
definitions for the figures a page recomputes in the browser:

- **characters**: Unicode code points (what Python's ``len`` counts; ``[...s].length`` in JS);
- **bytes**: the UTF-8 encoding's length, what travels on the wire;
- **words**: runs of characters between whitespace;
- **tokens**: the ids the tokenizer gives the text itself, what the chat template adds (special
  tokens such as ``<|user|>``, and for many models a role's name or a line break) excluded, so a
  ratio says something about the text, not about the template.

A request body is counted as the compact JSON the SDKs send (no spaces after separators).

>>> f = text_figures("Hello, world!", 4)
>>> f.characters, f.bytes, f.words, f.tokens, f.chars_per_token, f.tokens_per_word
(13, 13, 2, 4, 3.25, 2.0)
>>> body_figures({"model": "m", "messages": []})["bytes"]
27
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass

from explainer.lifecycle.tool_format import tools_system_prompt

WORD = re.compile(r"[^ \t\n\r\f\v]+")  # the same class as figures.js's WORD


@dataclass(frozen=True)
class TextFigures:
    characters: int
    bytes: int
    words: int
    tokens: int

    @property
    def chars_per_token(self) -> float | None:
        return round(self.characters / self.tokens, 2) if self.tokens else None

    @property
    def tokens_per_word(self) -> float | None:
        return round(self.tokens / self.words, 2) if self.words else None

    def as_dict(self) -> dict:
        return asdict(self) | {"chars_per_token": self.chars_per_token, "tokens_per_word": self.tokens_per_word}


def text_figures(text: str, tokens: int) -> TextFigures:
    """The figures of ``text`` that the tokenizer cut into ``tokens`` ids (special tokens not counted)."""
    return TextFigures(characters=len(text), bytes=len(text.encode("utf-8", "surrogatepass")),
                       words=len(WORD.findall(text)), tokens=tokens)


def tokenized_figures(tokenizer, text: str, max_merges: int | None = None) -> TextFigures:
    """Cut ``text`` with the tokenizer (its first ``max_merges`` merges; default the model's) and count it."""
    return text_figures(text, len(tokenizer.encode(text, max_merges=max_merges)) if text else 0)


def compact_json(body) -> str:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


def body_figures(body) -> dict:
    """A request body as it travels: compact JSON, its characters and its UTF-8 bytes."""
    text = compact_json(body)
    return {"characters": len(text), "bytes": len(text.encode("utf-8", "surrogatepass"))}


def prompt_text_figures(tokenizer, ids) -> TextFigures:
    """The figures of a run's prompt ids: the text they decode to and how many they are, with the
    chat template's special tokens left out of both."""
    plain = [int(t) for t in ids if not tokenizer.is_special(int(t))]
    return text_figures(tokenizer.decode(plain), len(plain))


def request_chat_parts(tokenizer, req) -> list[tuple[str, list[int]]]:
    """A parsed request's prompt as ``chat_parts``: the system text as the model reads it (tool definitions
    included, as the engine writes them) and its turns."""
    system = tools_system_prompt(req.system, req.tools) if req.tools else req.system
    return tokenizer.chat_parts(system, [(m.role, m.text) for m in req.messages])


def chat_text_figures(tokenizer, parts: list[tuple[str, list[int]]]) -> TextFigures:
    """The figures of a prompt's own text, from its ``chat_parts``: everything but the template's parts."""
    ids = [t for label, part in parts if label != "template" for t in part]
    return text_figures(tokenizer.decode(ids), len(ids))
