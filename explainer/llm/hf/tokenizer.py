"""Byte-level BPE read from a Hugging Face ``tokenizer.json``, in pure Python.

The encoding is the ``tokenizers`` library's (tests compare ids on thousands of strings): the
added tokens are cut out of the raw text, the rest is normalized (NFC/NFKC), normalized added
tokens are cut out of that, the pre-tokenizers split it into chunks, and each chunk's UTF-8 bytes,
as GPT-2's byte alphabet, are merged by rank. The members and return shapes are those of the
bundled :class:`explainer.llm.tokenizer.Tokenizer`, so a page cannot tell the two apart; unlike
the bundled one, bytes, merges and special tokens are not id ranges (see ``interface.py``).

What is supported is what GPT-2, the Llama 3 and Qwen2 families and SmolLM use; anything else in
the file is refused with a :class:`ModelLoadError` naming the component.

The folder is untrusted: the files' sizes and every count and length in tokenizer.json are checked
before anything is built from them, a pre-tokenizer's regular expression is tried on adversarial
strings when the folder is opened and runs with a time limit on every text, and encoding checks
the running request's budget (:mod:`explainer.llm.budget`) between chunks, so a cancelled request
stops tokenizing at once.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import regex

from explainer.llm import bpe, budget
from explainer.llm.hf import pretokenize
from explainer.llm.hf.chat_template import SPECIAL_TOKEN_NAMES, ChatTemplate
from explainer.llm.hf.folder import ModelFolder
from explainer.llm.hf.pretokenize import PatternTimeout  # noqa: F401 (a tokenizer's error: callers import it from here)
from explainer.llm.hf.render_budget import MAX_TEMPLATE_CHARS
from explainer.llm.interface import ChunkTrace, MergeStep, ModelLoadError
from explainer.llm.tokenizer import TRACE_MAX_BYTES
from explainer.llm.tokentext import token_text

_WORD = regex.compile(r"\w")  # Rust regex's \w (Unicode), for an added token's single_word
# Unicode's White_Space property (Rust's char::is_whitespace), for an added token's lstrip/rstrip
_WHITESPACE = frozenset("\t\n\x0b\x0c\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000" + "".join(map(chr, range(0x2000, 0x200B))))

MAX_TOKEN_ID = 1 << 22  # 4M: far above any real vocabulary (Qwen's is 152k), far below a list that could exhaust memory

# What a folder's files may claim, checked before anything is built from the claim. Real byte-level BPE
# tokenizers: Qwen2 151,643 tokens and 151,387 merges, Llama 3 128,000 tokens and 280,147 merges, tokenizer.json
# 7-11 MB; Llama 3 has 256 added tokens and Mistral Nemo 1,000; the longest tokens are a few hundred bytes.
MAX_TOKENIZER_JSON_BYTES = 32 * 1024 * 1024
MAX_CONFIG_JSON_BYTES = 8 * 1024 * 1024  # tokenizer_config.json (with its added_tokens_decoder) and generation_config.json
MAX_VOCAB = 1 << 20
MAX_MERGES = 1 << 20
MAX_ADDED_TOKENS = 1 << 13  # each is an alternative of one regular expression, which takes about 1 s to compile at 8,192
MAX_TOKEN_CHARS = 1024


def _byte_chars() -> list[str]:
    """GPT-2's byte alphabet: byte b is the character ``BYTE_CHARS[b]`` (printable bytes are themselves)."""
    kept = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    chars = {b: chr(b) for b in kept}
    n = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + n)
            n += 1
    return [chars[b] for b in range(256)]


BYTE_CHARS = _byte_chars()
_CHAR_BYTES = {c: b for b, c in enumerate(BYTE_CHARS)}
_TO_BYTE_CHARS = str.maketrans(dict(enumerate(BYTE_CHARS)))  # applied to bytes decoded as Latin-1


def _token_bytes(token: str) -> bytes:
    """What the ByteLevel decoder makes of one token's string (its UTF-8 if it is not in the byte alphabet)."""
    try:
        return bytes(map(_CHAR_BYTES.__getitem__, token))
    except KeyError:
        return token.encode("utf-8")


@dataclass(frozen=True)
class AddedToken:
    """One entry of ``added_tokens``: matched in the text before the pre-tokenizers run."""

    id: int
    content: str
    special: bool
    lstrip: bool = False
    rstrip: bool = False
    single_word: bool = False
    normalized: bool = False


class _AddedMatcher:
    """Leftmost-longest matching of added tokens (the ``tokenizers`` library's Aho-Corasick), by regex."""

    def __init__(self, tokens: dict[str, AddedToken]):
        self.tokens = tokens
        self.regex = regex.compile("|".join(regex.escape(p) for p in sorted(tokens, key=len, reverse=True)))

    def cut(self, text: str, specials: bool) -> list[tuple[str, int | None]]:
        """``text`` as pieces, each an added token's match (with its id) or the text between.

        With ``specials`` False, special tokens are not cut (``encode_special_tokens``): their text
        stays plain text, and a match found there still hides any other match it overlaps.
        """
        out: list[tuple[str, int | None]] = []
        cursor = 0
        for n, m in enumerate(self.regex.finditer(text)):
            if not n & 255:
                budget.check()
            tok = self.tokens[m.group()]
            start, stop = m.span()
            if tok.special and not specials:
                continue
            if tok.single_word and ((start > 0 and _WORD.match(text[start - 1])) or (stop < len(text) and _WORD.match(text[stop]))):
                continue
            if tok.lstrip:
                while start > cursor and text[start - 1] in _WHITESPACE:
                    start -= 1
            if tok.rstrip:
                while stop < len(text) and text[stop] in _WHITESPACE:
                    stop += 1
            if cursor < start:
                out.append((text[cursor:start], None))
            out.append((text[start:stop], tok.id))
            cursor = stop
        if cursor < len(text):
            out.append((text[cursor:], None))
        return out


def _read_text(folder: ModelFolder, name: str, limit: int) -> str:
    """A file's text, refused if it is larger than ``limit`` bytes; opened inside ``folder`` without following
    a link (a link, a FIFO or a folder in its place is refused in a sentence)."""
    with folder.open(name) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ModelLoadError(f"{name} is larger than {limit:,} bytes, far larger than any real one, so it is not read.")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ModelLoadError(f"{name} is not UTF-8 text.") from None


def _read_json(folder: ModelFolder, name: str, required: bool = False, limit: int = MAX_CONFIG_JSON_BYTES) -> Any:
    if not folder.exists(name):
        if required:
            raise ModelLoadError(f"{name} is missing.")
        return None
    text = _read_text(folder, name, limit)
    try:
        return json.loads(text)
    except ValueError as exc:  # JSONDecodeError, or a number of more than 4,300 digits
        raise ModelLoadError(f"{name} is not valid JSON ({str(exc)[:200]}).") from None
    except RecursionError:
        raise ModelLoadError(f"{name} is nested too deeply to be read.") from None


def _content(value: Any) -> str | None:
    """A special token in tokenizer_config.json: a string or an ``{"content": ...}`` object."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _ids(value: Any) -> list[int]:
    """generation_config.json's ``eos_token_id``: one id, a list of ids, or none."""
    values = value if isinstance(value, list) else [] if value is None else [value]
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
        raise ModelLoadError(f"generation_config.json: eos_token_id must be a token id or a list of them, not {value!r}.")
    return values


class HFTokenizer:
    """A Hugging Face byte-level BPE tokenizer and its chat template (the ``ChatTokenizer`` protocol)."""

    def __init__(self, data: dict[str, Any], config: dict[str, Any] | None = None, generation: dict[str, Any] | None = None,
                 template: tuple[str, str] | None = None, model_vocab_size: int | None = None):
        """``data`` is tokenizer.json; ``config`` tokenizer_config.json; ``generation`` generation_config.json;
        ``template`` the chat template's (source, file name)."""
        if not isinstance(data, dict):
            raise ModelLoadError("tokenizer.json: the file is not a JSON object.")
        model = data.get("model")
        if not isinstance(model, dict):
            raise ModelLoadError("tokenizer.json: there is no model object.")
        self._read_model(model)
        self._read_added(data.get("added_tokens") or [])
        self._normalize = pretokenize.read_normalizer(data.get("normalizer"))
        self._build_matchers()
        self._steps = pretokenize.read_pre_tokenizer(data.get("pre_tokenizer"))
        decoder = data.get("decoder")
        if decoder is not None and (not isinstance(decoder, dict) or decoder.get("type") != "ByteLevel"):
            raise ModelLoadError(f"tokenizer.json: decoder {self._kind(decoder)} is not supported; only ByteLevel is.")
        self._vocab_size = max(model_vocab_size or 0, len(self._bytes))
        self._bytes += [b""] * (self._vocab_size - len(self._bytes))
        self._holes = tuple(i for i, s in enumerate(self._strings) if s is None) + tuple(range(len(self._strings), self._vocab_size))
        self._cache = bpe.ChunkCache()
        self._read_chat(config or {}, generation or {}, template)

    @classmethod
    def from_folder(cls, folder: Path | ModelFolder, model_vocab_size: int | None = None) -> HFTokenizer:
        """The tokenizer of a Hugging Face model folder: tokenizer.json, and when present tokenizer_config.json
        (special tokens, chat template), chat_template.jinja (a newer place for the template, preferred)
        and generation_config.json (end-of-sequence ids). Every file is read inside the folder, never
        through a link (``ModelFolder``); a path is opened as one first."""
        if not isinstance(folder, ModelFolder):
            with ModelFolder(folder) as opened:
                return cls.from_folder(opened, model_vocab_size)
        data = _read_json(folder, "tokenizer.json", required=True, limit=MAX_TOKENIZER_JSON_BYTES)
        config = _read_json(folder, "tokenizer_config.json") or {}
        if not isinstance(config, dict):
            raise ModelLoadError("tokenizer_config.json: the file is not a JSON object.")
        generation = _read_json(folder, "generation_config.json") or {}
        if not isinstance(generation, dict):
            raise ModelLoadError("generation_config.json: the file is not a JSON object.")
        template = None
        if folder.exists("chat_template.jinja"):
            template = (_read_text(folder, "chat_template.jinja", 4 * MAX_TEMPLATE_CHARS), "chat_template.jinja")
        elif config.get("chat_template") is not None:
            template = (cls._config_template(config["chat_template"]), "tokenizer_config.json")
        return cls(data, config, generation, template, model_vocab_size)

    # ---- reading tokenizer.json -------------------------------------------------
    @staticmethod
    def _kind(component: Any) -> str:
        return repr(component.get("type")) if isinstance(component, dict) else repr(component)

    def _read_model(self, model: dict[str, Any]) -> None:
        kind = model.get("type", "BPE" if "merges" in model else None)
        if kind != "BPE":
            raise ModelLoadError(f"tokenizer.json: model type {kind!r} is not supported; only byte-level BPE is.")
        for key in ("continuing_subword_prefix", "end_of_word_suffix"):
            if model.get(key):
                raise ModelLoadError(f"tokenizer.json: the BPE model's {key} {model[key]!r} is not supported (byte-level BPE has none).")
        if model.get("dropout"):
            raise ModelLoadError("tokenizer.json: BPE dropout is not supported (encoding must be deterministic).")
        if model.get("byte_fallback"):
            raise ModelLoadError("tokenizer.json: this is a SentencePiece-style BPE with byte fallback (as Llama 2's and "
                                 "TinyLlama's are), which is not supported; only byte-level BPE (GPT-2, SmolLM2, Qwen2, Llama 3) is.")
        vocab = model.get("vocab")
        if isinstance(vocab, dict) and len(vocab) > MAX_VOCAB:
            raise ModelLoadError(f"tokenizer.json: the BPE model's vocab has {len(vocab):,} tokens; at most {MAX_VOCAB:,} are "
                                 "accepted (real vocabularies have up to about 260,000).")
        if not isinstance(vocab, dict) or not set(map(type, vocab.values())) <= {int} or min(vocab.values(), default=0) < 0:
            raise ModelLoadError("tokenizer.json: the BPE model's vocab must map token strings to non-negative ids.")
        if max(vocab.values(), default=0) >= MAX_TOKEN_ID:
            raise ModelLoadError(f"tokenizer.json: the BPE model's vocab has an id of {max(vocab.values()):,}; "
                                 f"ids above {MAX_TOKEN_ID:,} are refused (no real vocabulary is that large).")
        longest = max(vocab, key=len, default="")
        if len(longest) > MAX_TOKEN_CHARS:
            raise ModelLoadError(f"tokenizer.json: the vocab has a token of {len(longest):,} characters ({pretokenize.shown(longest, 30)}); "
                                 f"at most {MAX_TOKEN_CHARS:,} are accepted.")
        self._vocab: dict[str, int] = vocab
        self._ignore_merges = bool(model.get("ignore_merges", False))
        self._strings: list[str | None] = [None] * (max(vocab.values(), default=-1) + 1)
        for s, i in vocab.items():
            self._strings[i] = s
        self._bytes: list[bytes] = [b"" if s is None else _token_bytes(s) for s in self._strings]
        missing = [b for b in range(256) if BYTE_CHARS[b] not in vocab]
        if missing:
            raise ModelLoadError(f"tokenizer.json: the vocabulary has no token for byte 0x{missing[0]:02X} "
                                 f"({len(missing)} of the 256 bytes are missing); only byte-level BPE is supported.")
        self._byte_ids: list[int] = [vocab[c] for c in BYTE_CHARS]
        merges = model.get("merges") or []
        if not isinstance(merges, list):
            raise ModelLoadError("tokenizer.json: the BPE model's merges must be a list.")
        if len(merges) > MAX_MERGES:
            raise ModelLoadError(f"tokenizer.json: the BPE model has {len(merges):,} merges; at most {MAX_MERGES:,} are accepted "
                                 "(real models have up to about 300,000).")
        try:  # the fast way; the slow one below finds what is wrong
            pairs = [m.split(" ", 1) if type(m) is str else m for m in merges]
            self.merges: list[tuple[int, int]] = [(vocab[a], vocab[b]) for a, b in pairs]
            self._merge_ids: list[int] = [vocab[a + b] for a, b in pairs]
        except (KeyError, TypeError, ValueError, AttributeError):
            for rank, merge in enumerate(merges):
                parts = merge.split(" ", 1) if isinstance(merge, str) else merge
                if not isinstance(parts, list) or len(parts) != 2 or not all(isinstance(p, str) for p in parts):
                    raise ModelLoadError(f"tokenizer.json: merge {rank} ({merge!r}) is not a pair of tokens.") from None
                a, b = parts
                if a not in vocab or b not in vocab or a + b not in vocab:
                    raise ModelLoadError(f"tokenizer.json: merge {rank} ({a!r} + {b!r}) uses or makes a token that is "
                                         "not in the vocabulary.") from None
            raise
        self.model_merges = len(self.merges)
        self._ranks = {pair: r for r, pair in enumerate(self.merges)}  # a repeated pair keeps its last rank, as in tokenizers
        self._rank_of: dict[int, int] = {}
        for r, token in enumerate(self._merge_ids):
            self._rank_of.setdefault(token, r)

    def _read_added(self, entries: list[Any]) -> None:
        self._added: dict[int, AddedToken] = {}
        if not isinstance(entries, list):
            raise ModelLoadError("tokenizer.json: added_tokens must be a list.")
        if len(entries) > MAX_ADDED_TOKENS:
            raise ModelLoadError(f"tokenizer.json: there are {len(entries):,} added tokens; at most {MAX_ADDED_TOKENS:,} are "
                                 "accepted (real models have up to about 1,000).")
        try:
            for e in entries:
                tok = AddedToken(int(e["id"]), str(e["content"]), bool(e.get("special", False)), bool(e.get("lstrip", False)),
                                 bool(e.get("rstrip", False)), bool(e.get("single_word", False)),
                                 bool(e.get("normalized", not e.get("special", False))))
                if tok.content:
                    self._added[tok.id] = tok
        except (KeyError, TypeError, ValueError):
            raise ModelLoadError("tokenizer.json: added_tokens must be objects with an id and a content.") from None
        if any(not 0 <= i < MAX_TOKEN_ID for i in self._added):
            raise ModelLoadError(f"tokenizer.json: an added token's id is outside 0..{MAX_TOKEN_ID - 1:,}.")
        long = next((t.content for t in self._added.values() if len(t.content) > MAX_TOKEN_CHARS), None)
        if long is not None:
            raise ModelLoadError(f"tokenizer.json: an added token has {len(long):,} characters ({pretokenize.shown(long, 30)}); "
                                 f"at most {MAX_TOKEN_CHARS:,} are accepted.")
        size = max([len(self._bytes) - 1, *self._added]) + 1
        self._bytes += [b""] * (size - len(self._bytes))
        self._strings += [None] * (size - len(self._strings))
        for tok in self._added.values():
            self._bytes[tok.id], self._strings[tok.id] = _token_bytes(tok.content), tok.content
        specials = sorted((t.id, t.content) for t in self._added.values() if t.special)
        self.specials: tuple[str, ...] = tuple(content for _, content in specials)
        self._special_ids = {content: i for i, content in specials}
        self._special_set = frozenset(self._special_ids.values())

    def _build_matchers(self) -> None:
        """The added tokens matched in the raw text, and those matched after normalization (``normalized``)."""
        # special tokens first, then the others, as tokenizers orders them (it matters only for equal patterns)
        ordered = sorted(self._added.values(), key=lambda t: (not t.special, t.id))
        raw: dict[str, AddedToken] = {}
        norm: dict[str, AddedToken] = {}
        for t in ordered:
            if t.normalized:
                pattern = self._normalize(t.content) if self._normalize else t.content
                if pattern:
                    norm.setdefault(pattern, t)
            else:
                raw.setdefault(t.content, t)
        self._raw_matcher = _AddedMatcher(raw) if raw else None
        self._norm_matcher = _AddedMatcher(norm) if norm else None

    # ---- reading the chat side --------------------------------------------------
    @staticmethod
    def _config_template(value: Any) -> str:
        if isinstance(value, str):
            return value
        if isinstance(value, list):
            for entry in value:
                template = entry.get("template") if isinstance(entry, dict) else None
                if isinstance(template, str) and entry.get("name") == "default":
                    return template
        raise ModelLoadError("tokenizer_config.json: chat_template is neither a template nor a list with one named 'default'.")

    def _token_id(self, text: str) -> int | None:
        for tok in self._added.values():
            if tok.content == text:
                return tok.id
        return self._vocab.get(text)

    def _read_chat(self, config: dict[str, Any], generation: dict[str, Any], template: tuple[str, str] | None) -> None:
        eos_ids = _ids(generation.get("eos_token_id"))
        for i in eos_ids:
            if i >= len(self._strings) or self._strings[i] is None:
                raise ModelLoadError(f"generation_config.json: eos_token_id {i} is not a token of tokenizer.json.")
        named = {name: _content(config.get(name)) for name in SPECIAL_TOKEN_NAMES}
        if named["eos_token"] is None and eos_ids:
            named["eos_token"] = self._strings[eos_ids[0]]
        variables = {k: v for k, v in named.items() if v is not None}
        if template is None and "eos_token" not in variables:
            raise ModelLoadError("tokenizer_config.json: there is no chat template and no eos_token to end the plain-text turns with.")
        source, origin = template if template is not None else (None, "tokenizer_config.json")
        self.chat_template = ChatTemplate(source, origin, variables)
        eos = variables.get("eos_token")
        if eos is not None:
            eos_id = self._token_id(eos)
            if eos_id is None:
                raise ModelLoadError(f"tokenizer_config.json: eos_token {eos!r} is not a token of tokenizer.json.")
            eos_ids.append(eos_id)
        closing = self.chat_template.assistant_closing()
        ends = [i for i in self.encode_with_specials(closing) if i in self._special_set] if closing else []
        stops = ends[:1] + eos_ids
        if not stops:
            raise ModelLoadError(f"{origin}: nothing ends an assistant turn: the chat template closes it with no special "
                                 "token and there is no eos token.")
        self._stop_ids = tuple(dict.fromkeys(stops))
        stop = set(self._stop_ids)
        self._banned = tuple(sorted((self._special_set - stop) | set(self._holes)))

    # ---- vocabulary -------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """The model's vocabulary: every id up to the highest, or the model's (padded) size if larger."""
        return self._vocab_size

    @property
    def end_id(self) -> int:
        """The special token the chat template writes right after an assistant turn's text, else the eos token."""
        return self._stop_ids[0]

    @property
    def stop_ids(self) -> tuple[int, ...]:
        return self._stop_ids

    @property
    def banned_ids(self) -> tuple[int, ...]:
        """Special tokens that do not end a reply, and ids with no token (a vocabulary padded for the GPU)."""
        return self._banned

    @property
    def has_own_template(self) -> bool:
        """False when the folder has no chat template and turns are written as plain text."""
        return self.chat_template.has_own_template

    def special_id(self, name: str) -> int:
        try:
            return self._special_ids[name]
        except KeyError:
            raise ValueError(f"{name!r} is not a special token of this tokenizer") from None

    def is_special(self, token: int) -> bool:
        return token in self._special_set

    def token_bytes(self, token: int) -> bytes:
        """The bytes a token stands for (b"" for an id with no token)."""
        return self._bytes[token]

    def token_str(self, token: int) -> str:
        """Readable form of one token: a byte that is not part of a whole character in it is written ‹E4›."""
        return token_text(self._bytes[token])

    def byte_id(self, byte: int) -> int:
        return self._byte_ids[byte]

    def merge_id(self, rank: int) -> int:
        return self._merge_ids[rank]

    def rank_of(self, token: int) -> int | None:
        """The first merge that makes ``token``; None for a byte, a special token or a token no merge makes."""
        return self._rank_of.get(token)

    # ---- encoding ---------------------------------------------------------------
    def _limit(self, max_merges: int | None) -> int:
        return bpe.merge_limit(max_merges, self.model_merges, len(self.merges))

    _utf8 = staticmethod(bpe.utf8)

    def _pieces(self, text: str, specials: bool) -> list[tuple[str, int | None]]:
        """Chunks of ``text`` (normalized), each with its added token's id or None for BPE to encode."""
        out: list[tuple[str, int | None]] = []
        raw = self._raw_matcher.cut(text, specials) if self._raw_matcher else [(text, None)] if text else []
        for piece, token in raw:
            budget.check()
            if token is not None:
                out.append((piece, token))
                continue
            if self._normalize:
                piece = self._normalize(piece)
            for part, token in self._norm_matcher.cut(piece, specials) if self._norm_matcher else [(piece, None)]:
                if token is not None:
                    out.append((part, token))
                    continue
                chunks = [part]
                for step in self._steps:
                    chunks = [c for chunk in chunks for c in step(chunk)]
                out.extend((c, None) for c in chunks)
        return out

    def chunks(self, text: str) -> list[str]:
        """Pre-tokenisation: split text into the pieces BPE works on independently (an added token is one piece)."""
        self._utf8(text)
        return [piece for piece, _ in self._pieces(text, False)]

    def _whole(self, data: bytes, limit: int) -> int | None:
        """With ``ignore_merges`` (Llama 3), a chunk that is itself in the vocabulary is that token, whatever the merges
        make; only at the full merge list (the slider's smaller lists are plain BPE), never a special token."""
        if not self._ignore_merges or limit != len(self.merges):
            return None
        token = self._vocab.get(data.decode("latin-1").translate(_TO_BYTE_CHARS))
        return None if token in self._special_set else token

    def _merge_chunk(self, data: bytes, limit: int) -> tuple[int, ...]:
        whole = self._whole(data, limit)
        return (whole,) if whole is not None else self._bpe(data, limit)

    def _bpe(self, chunk: bytes, limit: int, trace: list[MergeStep] | None = None) -> tuple[int, ...]:
        """The chunk's byte tokens merged with the first ``limit`` merges, as the ``tokenizers`` library merges
        (``explainer.llm.bpe``; the bundled tokenizer shares the routine: for its merge list the order is the same)."""
        return bpe.merge([self._byte_ids[b] for b in chunk], self._ranks, self._merge_ids, limit, trace)

    def _encode(self, text: str, max_merges: int | None, specials: bool) -> list[int]:
        self._utf8(text)
        limit = self._limit(max_merges)
        out: list[int] = []
        for n, (chunk, token) in enumerate(self._pieces(text, specials)):
            if not n & 15:
                budget.check()
            if token is not None:
                out.append(token)
                continue
            out.extend(self._cache.ids(chunk, limit, self._merge_chunk))
        return out

    def encode(self, text: str, max_merges: int | None = None) -> list[int]:
        """Text -> token ids using the first ``max_merges`` merges (default: all of them).

        Special tokens' text is encoded as plain text: a conversation's text can never forge a role
        marker. Added tokens that are not special (Qwen's ``<tool_call>``) are cut out as the model's
        own tokenizer cuts them.
        """
        return self._encode(text, max_merges, specials=False)

    def encode_with_specials(self, text: str, max_merges: int | None = None) -> list[int]:
        """Text -> ids with every added token cut out first, special ones included: what
        ``tokenizers.Tokenizer.encode(text, add_special_tokens=False).ids`` returns. For the chat
        template's own text only, never for a conversation's."""
        return self._encode(text, max_merges, specials=True)

    def encode_with_trace(self, text: str, max_merges: int | None = None) -> list[ChunkTrace]:
        """Per chunk: its text, its UTF-8 ``bytes``, the byte tokens it starts as (``start_ids``), the merge
        steps, the final ``ids`` and whether it was ``traced`` (chunks over TRACE_MAX_BYTES are not).

        An added token is a chunk of one token and no steps. ``shortcut`` is True where
        ``ignore_merges`` made the whole chunk one token that the steps do not reach.
        """
        self._utf8(text)
        limit = self._limit(max_merges)
        result: list[ChunkTrace] = []
        for chunk, token in self._pieces(text, False):
            budget.check()
            data = chunk.encode("utf-8")
            if token is not None:
                result.append({"text": chunk, "bytes": list(data), "start_ids": [token], "steps": [], "ids": [token],
                               "traced": True, "shortcut": False})
                continue
            steps: list[MergeStep] = []
            traced = len(data) <= TRACE_MAX_BYTES
            # each step keeps the chunk's ids: a long chunk's trace would be quadratic in time and memory
            ids = self._bpe(data, limit, steps if traced else None)
            whole = self._whole(data, limit)
            shortcut = whole is not None and ids != (whole,)
            result.append({"text": chunk, "bytes": list(data), "start_ids": [self._byte_ids[b] for b in data],
                           "steps": steps, "ids": [whole] if shortcut and whole is not None else list(ids), "traced": traced, "shortcut": shortcut})
        return result

    def decode_bytes(self, ids: list[int]) -> bytes:
        return b"".join(self._bytes[i] for i in ids)

    def decode(self, ids: list[int]) -> str:
        """Token ids -> text. Bytes that do not form UTF-8 (a cut mid-character) become U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    # ---- chat template ----------------------------------------------------------
    def _chat_pieces(self, system: str | None, messages: list[tuple[str, str]],
                     add_generation_prompt: bool) -> list[tuple[str, list[int], str | None]]:
        """The template's text is encoded with its special tokens, each turn's text with :meth:`encode`, where
        special tokens' text is plain text: this is what keeps a message from injecting a role marker."""
        out = []
        for piece in self.chat_template.pieces(system, messages, add_generation_prompt):
            ids = self.encode_with_specials(piece.text) if piece.label == "template" else self.encode(piece.text)
            out.append((piece.label, ids, piece.closes))
        return out

    def encode_chat(self, system: str | None, messages: list[tuple[str, str]], add_generation_prompt: bool = True) -> list[int]:
        """The conversation as the chat template writes it, as ids. A final assistant turn is a prefill."""
        return self.encode_chat_segments(system, messages, add_generation_prompt)[0]

    def encode_chat_segments(self, system: str | None, messages: list[tuple[str, str]],
                             add_generation_prompt: bool = True) -> tuple[list[int], dict[str, int]]:
        """The chat template's ids, and where each turn ends: ``{"system": n, "messages.0": n, ...}`` counts the
        ids up to and including what the template writes to close that turn (a prefill: up to its text).

        A turn's closing and the next turn's opening are encoded apart, so the ids before a turn's end
        never depend on what follows: a prefix that ends there is stable, which prompt caching needs.
        """
        ids: list[int] = []
        ends: dict[str, int] = {}
        for _, part, closes in self._chat_pieces(system, messages, add_generation_prompt):
            ids += part
            if closes:
                ends[closes] = len(ids)
        return ids, ends

    def chat_parts(self, system: str | None, messages: list[tuple[str, str]],
                   add_generation_prompt: bool = True) -> list[tuple[str, list[int]]]:
        """The same ids cut into labelled parts, in order: ``("template", ids)`` for the template's own text
        (adjacent pieces joined, empty ones left out), ``("system", ids)`` / ``("messages.i", ids)`` for each text."""
        out: list[tuple[str, list[int]]] = []
        for label, part, _ in self._chat_pieces(system, messages, add_generation_prompt):
            if label != "template":
                out.append((label, part))
            elif part and out and out[-1][0] == "template":
                out[-1] = ("template", out[-1][1] + part)
            elif part:
                out.append(("template", part))
        return out

