"""The model interface: what everything above ``explainer.llm`` may use of a model.

One forward pass per architecture family implements it: ``explainer.llm.hf.gpt2`` (GPT-2
checkpoints, and the bundled model, a GPT-2-style checkpoint that ``model.py`` loads into it)
and ``explainer.llm.hf.llama`` (the Llama family), all on the arithmetic of ``layers.py``, one
KV cache (``hf/cache.py``) and one BPE merge routine (``bpe.py``) under two tokenizers (the
bundled ``tokenizer.py`` and ``hf/tokenizer.py`` for ``tokenizer.json``). The engine, the stage pages, the API, rooms, the tutorial, constrained decoding
and the prompt cache talk to these three protocols and to :class:`LoadedModel`, never to a
concrete class, so a stage that works for one model works for the other.

Token ids are the model's own. Three facts a page must not assume:
    * bytes are not ids 0..255 (GPT-2's byte alphabet is ordered differently): use ``byte_id``;
    * merge number r does not make id ``r + something``: use ``merge_id(r)`` / ``rank_of(id)``;
    * special tokens are not a contiguous range: use ``is_special`` and ``specials``.

Named intermediates of ``forward(..., want=patterns)`` (T new tokens, S keys, d = d_model):

    embedding_token                    [T, d]   token embedding rows
    embedding_position                 [T, d]   learned position rows (GPT-2 family only)
    embedding                          [T, d]   the residual stream entering block 0
    block_{l}_ln_1                     [T, d]   the norm before attention (LayerNorm or RMSNorm)
    block_{l}_attn_q_rotated           [T, d]   queries after rotary positions (RoPE models only)
    block_{l}_attn_k_rotated           [T, kv]  keys after rotary positions (RoPE models only)
    block_{l}_attn_head_{h}_weights    [T, S]   attention probabilities (rows sum to 1)
    block_{l}_attn_out                 [T, d]   attention output after its projection
    block_{l}_resid_mid                [T, d]   residual stream after attention
    block_{l}_mlp_hidden               [T, f]   MLP activations (after GELU; SiLU(gate) * up for SwiGLU)
    block_{l}_mlp_out                  [T, d]   MLP output
    block_{l}_resid_out                [T, d]   residual stream leaving the block
    final_ln                           [T, d]   after the final norm
    logits                             [T, V]   next-token scores
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NotRequired, Protocol, TypedDict, runtime_checkable

import numpy as np


class ContextWindowExceeded(ValueError):
    """More tokens than the model's context window (``n_ctx``) can hold."""


class TokenizerError(ValueError):
    """Text that cannot be encoded (for example a lone surrogate); the message says why."""


class ModelLoadError(ValueError):
    """A model folder that cannot be opened; the message names the file and what is wrong."""


class ModelBusy(Exception):
    """A sound model folder that cannot be opened right now: the models in use hold the memory it needs.
    Unlike ModelLoadError it says nothing about the folder, and trying again in a moment may work."""


@runtime_checkable
class Config(Protocol):
    """A model's shape; read-only, so a frozen dataclass satisfies it."""

    @property
    def vocab_size(self) -> int: ...

    @property
    def n_ctx(self) -> int: ...  # the longest sequence this app runs (a large model's may be capped below its own; see LoadedModel.limits)

    @property
    def n_layer(self) -> int: ...

    @property
    def n_head(self) -> int: ...

    @property
    def d_model(self) -> int: ...

    @property
    def d_ff(self) -> int: ...

    @property
    def head_dim(self) -> int: ...


@runtime_checkable
class Cache(Protocol):
    """Keys and values of every layer for the positions seen so far."""

    length: int

    def copy(self, length: int | None = None) -> Cache: ...


class Forward(Protocol):
    """What a forward pass returns."""

    @property
    def logits(self) -> np.ndarray: ...  # [T, V]

    @property
    def cache(self) -> Cache: ...  # the cache passed in (or a new one), now holding the new positions too

    @property
    def trace(self) -> dict[str, np.ndarray]: ...  # the named intermediates ``want`` asked for


@runtime_checkable
class LanguageModel(Protocol):
    n_params: int

    @property
    def config(self) -> Config: ...

    def new_cache(self) -> Cache: ...

    def forward(self, ids: Iterable[int], cache: Cache | None = None, want: tuple[str, ...] = ()) -> Forward:
        """Run ``ids`` after what ``cache`` holds (a cache this model's ``new_cache`` made; None: an empty one)."""

    def logit_lens(self, resid: np.ndarray) -> np.ndarray:
        """A residual-stream state [..., d] decoded straight to vocabulary scores (final norm, then the head)."""


@dataclass(frozen=True)
class MergeStep:
    """One step of BPE on one chunk: ``left`` + ``right`` became ``token`` (merge ``rank``)."""

    rank: int
    left: int
    right: int
    token: int
    pieces: tuple[int, ...]  # the chunk's token ids after this step


class ChunkTrace(TypedDict):
    """One pre-tokenised chunk of ``encode_with_trace``: how BPE turned its bytes into its ids."""

    text: str
    bytes: list[int]  # its UTF-8 bytes
    steps: list[MergeStep]  # the merge steps, in order (none when not ``traced``)
    ids: list[int]  # the final ids
    traced: bool  # False for a chunk over the tokenizer's TRACE_MAX_BYTES, whose steps are not kept
    start_ids: NotRequired[list[int]]  # (tokenizer.json) the byte tokens it starts as; the bundled model's are its bytes
    shortcut: NotRequired[bool]  # (tokenizer.json) ``ignore_merges`` made it one token that the steps do not reach


@runtime_checkable
class ChatTokenizer(Protocol):
    """A byte-level BPE tokenizer with a merge trace, and the model's chat template."""

    specials: tuple[str, ...]  # the special tokens' texts
    merges: list[tuple[int, int]]  # the merge list as pairs of token ids, in rank order
    model_merges: int  # how many of them the model uses

    @property
    def vocab_size(self) -> int: ...

    @property
    def end_id(self) -> int:
        """The token that closes an assistant turn (the engine stops when it is drawn)."""

    @property
    def stop_ids(self) -> tuple[int, ...]:
        """Every token that ends a reply (``end_id`` first)."""

    @property
    def banned_ids(self) -> tuple[int, ...]:
        """Special tokens the engine never samples (role markers: they would open a new turn)."""

    def special_id(self, name: str) -> int: ...
    def is_special(self, token: int) -> bool: ...
    def token_bytes(self, token: int) -> bytes: ...
    def token_str(self, token: int) -> str: ...
    def byte_id(self, byte: int) -> int: ...
    def merge_id(self, rank: int) -> int: ...
    def rank_of(self, token: int) -> int | None: ...
    def chunks(self, text: str) -> list[str]: ...
    def encode(self, text: str, max_merges: int | None = None) -> list[int]: ...
    def encode_with_trace(self, text: str, max_merges: int | None = None) -> list[ChunkTrace]: ...
    def decode(self, ids: list[int]) -> str: ...
    def decode_bytes(self, ids: list[int]) -> bytes: ...

    def encode_chat(self, system: str | None, messages: list[tuple[str, str]], add_generation_prompt: bool = True) -> list[int]:
        """The chat template's ids for a conversation (a final assistant turn is left open: a prefill)."""

    def encode_chat_segments(self, system: str | None, messages: list[tuple[str, str]],
                             add_generation_prompt: bool = True) -> tuple[list[int], dict[str, int]]:
        """The chat template's ids, and where each turn ends: ``{"system": n, "messages.0": n, ...}``."""

    def chat_parts(self, system: str | None, messages: list[tuple[str, str]],
                   add_generation_prompt: bool = True) -> list[tuple[str, list[int]]]:
        """The same ids cut into labelled parts, in order: ``("template", ids)`` for what the template
        adds around the text, ``("system", ids)`` / ``("messages.i", ids)`` for each text."""


@dataclass
class LoadedModel:
    """One model the app can serve: its parts, its name, a fingerprint of its weights and its card."""

    name: str  # what the API's ``model`` field, permalinks and menus call it
    model: LanguageModel
    tokenizer: ChatTokenizer
    fingerprint: str  # 12 hex digits of a hash of the weight files: a permalink names it
    bundled: bool = False
    card: dict[str, Any] = field(default_factory=dict)  # architecture, parameters, layers, heads, vocabulary, context, licence, memory
    limits: list[str] = field(default_factory=list)  # sentences a page shows: what this app does differently for this model
    threads: int = 1  # BLAS threads this model's passes should use
