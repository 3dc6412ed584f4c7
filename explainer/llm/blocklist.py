"""Words the bundled model never writes: the list, a text check, and the token-sequence ban.

The list is ``blocklist.txt`` beside this file (its header says what is on it and why).

Two layers use it:

- :func:`find_blocked` finds blocked words in a text (whole words, any letter case). The corpus builder drops passages it flags; the evaluation counts them;
  classroom nicknames are refused with it.
- :class:`WordBan` bans, at generation time, every token sequence that spells a blocked
  word: the approach of ``bad_words_ids`` in other inference stacks. For every form of
  every word, with and without a leading space, in lower case, Capitalised and UPPER case,
  it enumerates *every* way the tokenizer's vocabulary can spell it (not only the way BPE
  would cut it), so the model cannot spell the word through an unusual split either. When
  the tokens generated so far are a proper prefix of such a sequence, the token that would
  complete it is banned. A sequence without a leading space only counts at the start of a
  word (after a non-letter, or at the start of the reply).

Example:
    >>> find_blocked("Nothing to see here.")
    []
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

from explainer.llm.interface import ChatTokenizer

BLOCKLIST_PATH = Path(__file__).resolve().parent / "blocklist.txt"


@lru_cache(maxsize=1)
def blocked_words() -> tuple[str, ...]:
    words = []
    for line in BLOCKLIST_PATH.read_text(encoding="utf-8").splitlines():
        words += line.split("#", 1)[0].lower().split()
    return tuple(dict.fromkeys(words))


@lru_cache(maxsize=1)
def _pattern() -> re.Pattern[str]:
    alternatives = "|".join(sorted((re.escape(w) for w in blocked_words()), key=len, reverse=True))
    return re.compile(rf"(?<![^\W\d_])(?:{alternatives})(?![^\W\d_])", re.IGNORECASE)


def find_blocked(text: str) -> list[str]:
    """The blocked words in ``text``, as written there, in order."""
    return [m.group(0) for m in _pattern().finditer(text)]


def _spellings(data: bytes, vocab: dict[bytes, int], max_len: int, limit: int = 4096) -> list[tuple[int, ...]]:
    """Every way to write ``data`` as a sequence of vocabulary tokens (at most ``limit``)."""
    memo: dict[int, list[tuple[int, ...]]] = {len(data): [()]}

    def tails(i: int) -> list[tuple[int, ...]]:
        if i in memo:
            return memo[i]
        out: list[tuple[int, ...]] = []
        for j in range(i + 1, min(len(data), i + max_len) + 1):
            tok = vocab.get(data[i:j])
            if tok is None:
                continue
            for rest in tails(j):
                out.append((tok, *rest))
                if len(out) >= limit:
                    break
        memo[i] = out
        return out

    return tails(0)


class WordBan:
    """The token-level ban: ``banned_next(generated)`` -> token ids that would complete a blocked word.

    ``generated`` is the list of token ids of the reply so far. The lookup costs one dict
    probe per possible prefix length (the longest spelling is a handful of tokens).
    """

    def __init__(self, token_bytes: list[bytes], text_ids: Iterable[int]) -> None:
        vocab = {token_bytes[t]: t for t in text_ids}
        self._token_bytes = token_bytes
        max_len = max(len(b) for b in vocab)
        # prefix (tuple of ids) -> {next id: needs a word boundary before the prefix}
        self._next: dict[tuple[int, ...], dict[int, bool]] = {}
        self.sequences = 0
        for form in blocked_words():
            for cased in {form, form.capitalize(), form.upper()}:
                for spaced, boundary in ((" " + cased, False), (cased, True)):
                    for seq in _spellings(spaced.encode(), vocab, max_len):
                        slot = self._next.setdefault(seq[:-1], {})
                        # a sequence that needs no boundary wins over one that does
                        slot[seq[-1]] = slot.get(seq[-1], True) and boundary
                        self.sequences += 1
        self._max_prefix = max((len(p) for p in self._next), default=0)

    def _at_word_start(self, generated: list[int], start: int) -> bool:
        if start == 0:
            return True
        prev = self._token_bytes[generated[start - 1]]
        if not prev:
            return True
        ch = prev.decode("utf-8", errors="replace")[-1:]
        return not (ch.isalpha())

    def banned_next(self, generated: list[int]) -> dict[int, str]:
        """Token ids banned as the next token, each with the blocked spelling it would complete."""
        out: dict[int, str] = {}
        n = len(generated)
        for k in range(0, min(self._max_prefix, n) + 1):
            prefix = tuple(generated[n - k:]) if k else ()
            slot = self._next.get(prefix)
            if not slot:
                continue
            word_start = None
            for tok, needs_boundary in slot.items():
                if needs_boundary:
                    if word_start is None:
                        word_start = self._at_word_start(generated, n - k)
                    if not word_start:
                        continue
                if tok not in out:
                    out[tok] = b"".join(self._token_bytes[t] for t in (*prefix, tok)).decode("utf-8", errors="replace").strip()
        return out


def word_ban_for(tok: ChatTokenizer) -> WordBan:
    """The ban for a tokenizer, built once (about a second) and kept on the tokenizer."""
    ban = getattr(tok, "_word_ban", None)
    if ban is None:
        ban = WordBan([tok.token_bytes(t) for t in range(tok.vocab_size)],
                      [t for t in range(tok.vocab_size) if not tok.is_special(t) and tok.token_bytes(t)])
        setattr(tok, "_word_ban", ban)  # noqa: B010 (a memo on the tokenizer: its protocol does not declare it)
    return ban
