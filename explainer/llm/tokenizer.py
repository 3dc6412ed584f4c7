"""Byte-level BPE tokenizer: encode with a merge trace, decode, and a rank cut-off.

Token ids:
    0..255              single bytes
    256..256+S-1        special tokens of the chat template (never produced from text)
    256+S+r             the token made by merge number r (rank r, 0-based)

One merge list is trained by the project (``training/train_tokenizer.py``); the model
uses only its first ``model_merges`` ranks, and ``encode(text, max_merges=N)``
re-tokenises with the first N merges for the vocabulary-size slider.

Example:
    >>> tok = load_tokenizer()
    >>> tok.decode(tok.encode("hello world")) == "hello world"
    True
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from explainer.llm import bpe
from explainer.llm.interface import ChunkTrace, MergeStep
from explainer.llm.tokentext import token_text

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
TOKENIZER_PATH = WEIGHTS_DIR / "tokenizer.json"

# GPT-2's pre-tokenisation pattern, written for the standard library's ``re``:
# [^\W\d_] is "a letter", (?:[^\s\w]|_) is "punctuation or symbol".
PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?[^\W\d_]+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+"""
SPECIAL_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>")
TRACE_MAX_BYTES = 256  # longer chunks are encoded without a merge trace


@dataclass
class Tokenizer:
    merges: list[tuple[int, int]]
    model_merges: int
    pattern: str = PATTERN
    specials: tuple[str, ...] = SPECIAL_TOKENS
    _ranks: dict[tuple[int, int], int] = field(init=False, repr=False)
    _bytes: list[bytes] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._regex = re.compile(self.pattern)
        self.n_special = len(self.specials)
        self.first_merge_id = 256 + self.n_special
        self._ranks = {pair: r for r, pair in enumerate(self.merges)}
        self._merge_ids = range(self.first_merge_id, self.first_merge_id + len(self.merges))  # merge r makes id first + r
        self._bytes = [bytes([i]) for i in range(256)] + [s.encode() for s in self.specials]
        for a, b in self.merges:
            self._bytes.append(self._bytes[a] + self._bytes[b])
        self._cache = bpe.ChunkCache()

    # ---- vocabulary -------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """Size of the model's vocabulary (bytes + specials + the merges it uses)."""
        return self.first_merge_id + self.model_merges

    def special_id(self, name: str) -> int:
        """Example: ``tok.special_id("<|user|>") == 257``."""
        return 256 + self.specials.index(name)

    def is_special(self, token: int) -> bool:
        return 256 <= token < self.first_merge_id

    def token_bytes(self, token: int) -> bytes:
        return self._bytes[token]

    def byte_id(self, byte: int) -> int:
        """The token of one byte: here byte b is id b (a Hugging Face tokenizer orders them otherwise)."""
        return byte

    def merge_id(self, rank: int) -> int:
        """The token that merge number ``rank`` makes."""
        return self.first_merge_id + rank

    @property
    def end_id(self) -> int:
        """``<|end|>`` closes every turn: a reply ends when the model draws it."""
        return self.special_id("<|end|>")

    @property
    def stop_ids(self) -> tuple[int, ...]:
        return (self.end_id,)

    @property
    def banned_ids(self) -> tuple[int, ...]:
        """Role markers other than ``<|end|>`` would open a new turn inside a reply: never sampled."""
        return tuple(self.special_id(s) for s in self.specials if s != "<|end|>")

    def rank_of(self, token: int) -> int | None:
        """Merge rank that made ``token``; None for a byte or a special token."""
        return token - self.first_merge_id if token >= self.first_merge_id else None

    def token_str(self, token: int) -> str:
        """Readable form of one token: a byte that is not part of a whole character in it is written ‹E4›."""
        return token_text(self._bytes[token])

    # ---- encoding ---------------------------------------------------------------
    def _limit(self, max_merges: int | None) -> int:
        return bpe.merge_limit(max_merges, self.model_merges, len(self.merges))

    def chunks(self, text: str) -> list[str]:
        """Pre-tokenisation: split text into the pieces BPE works on independently."""
        return self._regex.findall(text)

    _utf8 = staticmethod(bpe.utf8)

    def _bpe(self, chunk: bytes, limit: int, trace: list[MergeStep] | None = None) -> tuple[int, ...]:
        """The chunk's bytes (ids 0..255 here) merged with the first ``limit`` merges (``explainer.llm.bpe``)."""
        return bpe.merge(list(chunk), self._ranks, self._merge_ids, limit, trace)

    def encode(self, text: str, max_merges: int | None = None) -> list[int]:
        """Text -> token ids using the first ``max_merges`` merges (default: the model's)."""
        self._utf8(text)
        limit = self._limit(max_merges)
        out: list[int] = []
        for chunk in self._regex.findall(text):
            out.extend(self._cache.ids(chunk, limit, self._bpe))
        return out

    def encode_with_trace(self, text: str, max_merges: int | None = None) -> list[ChunkTrace]:
        """Per pre-tokenised chunk: its bytes, the merge steps applied, and the final ids.

        Example: ``tok.encode_with_trace("hello")[0]["steps"][0].rank``
        """
        self._utf8(text)
        limit = self._limit(max_merges)
        result: list[ChunkTrace] = []
        for chunk in self._regex.findall(text):
            data = chunk.encode("utf-8")
            steps: list[MergeStep] = []
            # each step keeps the chunk's ids: a long chunk's trace would be quadratic in time and memory
            ids = self._bpe(data, limit, steps if len(data) <= TRACE_MAX_BYTES else None)
            result.append({"text": chunk, "bytes": list(data), "steps": steps, "ids": list(ids),
                           "traced": len(data) <= TRACE_MAX_BYTES})
        return result

    def decode_bytes(self, ids: list[int]) -> bytes:
        return b"".join(self._bytes[i] for i in ids)

    def decode(self, ids: list[int]) -> str:
        """Token ids -> text. Bytes that do not form UTF-8 (a cut mid-character) become U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    # ---- chat template ----------------------------------------------------------
    def encode_chat(self, system: str | None, messages: list[tuple[str, str]], add_generation_prompt: bool = True) -> list[int]:
        """The model's chat template as ids::

            <|system|>SYSTEM<|end|><|user|>TEXT<|end|><|assistant|>TEXT<|end|>...<|assistant|>

        A final assistant turn is a prefill: it is left open so the reply continues it.
        """
        return self.encode_chat_segments(system, messages, add_generation_prompt)[0]

    def encode_chat_segments(self, system: str | None, messages: list[tuple[str, str]],
                             add_generation_prompt: bool = True) -> tuple[list[int], dict[str, int]]:
        """Like :meth:`encode_chat`, and where each turn ends: ``{"system": n, "messages.0": n, ...}``
        maps a turn to the number of ids up to and including its closing ``<|end|>``.

        The special tokens are hard boundaries for BPE, so the ids before a turn's end never
        depend on what follows: a prefix that ends there is stable, which prompt caching needs.
        """
        end = self.special_id("<|end|>")
        ids: list[int] = []
        ends: dict[str, int] = {}
        if system:
            ids += [self.special_id("<|system|>"), *self.encode(system), end]
            ends["system"] = len(ids)
        for i, (role, text) in enumerate(messages):
            ids.append(self.special_id(f"<|{role}|>"))
            ids += self.encode(text)
            prefill = role == "assistant" and i == len(messages) - 1
            if not prefill:
                ids.append(end)
            ends[f"messages.{i}"] = len(ids)
        if add_generation_prompt and (not messages or messages[-1][0] != "assistant"):
            ids.append(self.special_id("<|assistant|>"))
        return ids, ends

    def chat_parts(self, system: str | None, messages: list[tuple[str, str]],
                   add_generation_prompt: bool = True) -> list[tuple[str, list[int]]]:
        """The ids of :meth:`encode_chat` cut into labelled parts: ``("template", ids)`` for the
        role markers and ``<|end|>``, ``("system", ids)`` / ``("messages.i", ids)`` for each text."""
        end = self.end_id
        parts: list[tuple[str, list[int]]] = []
        if system:
            parts += [("template", [self.special_id("<|system|>")]), ("system", self.encode(system)), ("template", [end])]
        for i, (role, text) in enumerate(messages):
            parts += [("template", [self.special_id(f"<|{role}|>")]), (f"messages.{i}", self.encode(text))]
            if not (role == "assistant" and i == len(messages) - 1):
                parts.append(("template", [end]))
        if add_generation_prompt and (not messages or messages[-1][0] != "assistant"):
            parts.append(("template", [self.special_id("<|assistant|>")]))
        return parts

    # ---- persistence ------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"pattern": self.pattern, "specials": list(self.specials), "model_merges": self.model_merges, "merges": [list(m) for m in self.merges]}

    def save(self, path: Path = TOKENIZER_PATH) -> None:
        path.write_text(json.dumps(self.to_dict(), separators=(",", ":")))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Tokenizer:
        return cls(merges=[tuple(m) for m in data["merges"]], model_merges=int(data["model_merges"]), pattern=data["pattern"], specials=tuple(data["specials"]))


@lru_cache(maxsize=4)
def load_tokenizer(path: Path = TOKENIZER_PATH) -> Tokenizer:
    return Tokenizer.from_dict(json.loads(Path(path).read_text()))
