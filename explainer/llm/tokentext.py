"""A token's text from its bytes, never U+FFFD.

A byte-level tokenizer cuts text anywhere, also inside a character: 中 is the three bytes E4 B8 AD, and a
token may hold E4 alone. Decoding such a token by itself gives U+FFFD (�), which hides what the token is;
every token label (the tokenizers' ``token_str``, the engine's frames, every page) shows the byte instead,
as ‹E4›. ``explainer.stages.words`` builds on this for runs of tokens that together make a character.
"""
from __future__ import annotations

from collections.abc import Iterator


def _utf8_length(lead: int) -> int:
    """How many bytes a UTF-8 sequence starting with ``lead`` claims (0: a byte no character starts with)."""
    return 1 if lead < 0x80 else 2 if lead >> 5 == 6 else 3 if lead >> 4 == 14 else 4 if lead >> 3 == 30 else 0


def _characters(data: bytes) -> Iterator[tuple[int, int, str | None]]:
    """(start, end, text or None) for each whole UTF-8 character of ``data``, and for each byte that is not
    part of one (text None), in order. A byte is a stray one when the character it starts is cut off or
    not valid UTF-8 (an overlong form, a surrogate, past U+10FFFF); the next byte is then read afresh."""
    i = 0
    while i < len(data):
        n = _utf8_length(data[i])
        try:
            ch = data[i:i + n].decode("utf-8") if n and i + n <= len(data) else None
        except UnicodeDecodeError:
            ch = None
        if ch is None:
            yield i, i + 1, None
            i += 1
        else:
            yield i, i + n, ch
            i += n


def token_text(data: bytes) -> str:
    """A token's text from its bytes, each byte that is not part of a whole character written ‹E4›
    (never U+FFFD). ``visible_token`` then shows it like any token's text.

    >>> token_text("中".encode()[:1]), token_text(b" \\xe4\\xb8"), token_text("é!".encode())
    ('‹E4›', ' ‹E4›‹B8›', 'é!')
    """
    return "".join(f"‹{data[a]:02X}›" if ch is None else ch for a, _, ch in _characters(data))
