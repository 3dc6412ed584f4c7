"""Constrained decoding: the constraints (cursors over a shared machine) and the sampling loop.

A :class:`JsonConstraint` keeps the output a prefix of a JSON document that validates
against a tool's ``input_schema``; a :class:`ChoiceConstraint` picks one of a few strings
(a tool's name). :func:`constrained_generate` samples under one of them, token by token,
masking every token that would break it, and reports how much probability the mask removed.
"""
from __future__ import annotations

import codecs
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Self

import numpy as np

from explainer.llm.constrained.automaton import Literal, Node, State
from explainer.llm.constrained.machine import Machine, machine_for
from explainer.llm.constrained.schema import Compiler, UnsupportedSchema, check_schema_depth
from explainer.llm.interface import Cache, ContextWindowExceeded, LanguageModel
from explainer.llm.interface import ChatTokenizer as Tokenizer
from explainer.llm.sampling import Candidate, SamplingParams, distribution, draw


class Constraint:
    """A cursor over one machine: the state after the tokens so far, and their bytes."""

    def __init__(self, machine: Machine):
        self.machine = machine
        self.tokenizer = machine.tok
        self.state: State = machine.start
        self.tokens: list[int] = []
        self._bytes = bytearray()

    def allowed(self) -> np.ndarray:
        """Boolean mask [vocab]: True for each token that keeps the output a valid prefix
        (only ``<|end|>`` once :meth:`done`). Read-only and shared: copy before changing it."""
        return self.machine.mask(self.state)

    def accepts(self, token: int) -> bool:
        """Whether ``token`` may come next, by feeding its bytes (no mask involved)."""
        if token == self.machine.end_id:
            return self.done()
        if self.tokenizer.is_special(token) or not 0 <= token < self.tokenizer.vocab_size:
            return False
        return self.machine.walk(self.state, self.tokenizer.token_bytes(token)) is not None

    def advance(self, token: int) -> None:
        """Append ``token``; ValueError when it is not allowed here."""
        if token == self.machine.end_id and self.done():
            self.tokens.append(token)
            return
        if self.tokenizer.is_special(token) or not 0 <= token < self.tokenizer.vocab_size:
            raise ValueError(f"token {token} is not allowed here")
        data = self.tokenizer.token_bytes(token)
        new = self.machine.walk(self.state, data)
        if new is None:
            raise ValueError(f"token {token} ({data!r}) is not allowed after {bytes(self._bytes)!r}")
        self.state = new
        self.tokens.append(token)
        self._bytes += data

    def done(self) -> bool:
        return not self.state

    def output_bytes(self) -> bytes:
        return bytes(self._bytes)

    def text(self) -> str:
        """The output so far (a character cut mid-way shows as U+FFFD until it is complete)."""
        return self._bytes.decode("utf-8", errors="replace")

    def copy(self) -> Self:
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.tokens, new._bytes = list(self.tokens), bytearray(self._bytes)
        return new


class JsonConstraint(Constraint):
    """Which tokens may come next so that the output stays a prefix of a JSON document that
    validates against ``schema`` (the family of schemas: see ``explainer.llm.constrained``).

    Example:
        >>> from explainer.llm.tokenizer import load_tokenizer
        >>> tok = load_tokenizer()
        >>> c = JsonConstraint({"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}, tok)
        >>> bool(c.allowed()[tok.encode('{"')[0]]), bool(c.allowed()[tok.encode("[")[0]])
        (True, False)
    """

    def __init__(self, schema: dict[str, Any], tokenizer: Tokenizer, shared: bool = True):
        """``shared=False`` compiles a private automaton with empty caches (a reference for tests)."""
        if not isinstance(schema, dict) or schema.get("type") != "object":
            raise UnsupportedSchema("a tool's input_schema must have type 'object'")
        check_schema_depth(schema)
        self.schema = schema

        def build(c: Compiler) -> Node:
            return c.compile(schema, "input_schema", 0)

        if shared:
            key = json.dumps(schema, ensure_ascii=False)  # keeps property order, which sets key order
            machine = machine_for(key, tokenizer, build)
        else:
            compiler = Compiler()
            root = build(compiler)
            machine = Machine(compiler.nodes, root, tokenizer)
        super().__init__(machine)

    def value(self) -> Any:
        """The parsed document once :meth:`done`."""
        if not self.done():
            raise ValueError("the document is not complete yet")
        return json.loads(self.output_bytes())


class ChoiceConstraint(Constraint):
    """Exactly one of a few byte strings, none a prefix of another (e.g. tool names + "\\n").

    Example: ``ChoiceConstraint(["get_time\\n", "calculator\\n"], tok)``
    """

    def __init__(self, options: list[str], tokenizer: Tokenizer):
        data = [o.encode("utf-8") for o in options]
        if not data or any(not d for d in data) or any(a != b and b.startswith(a) for a in data for b in data):
            raise ValueError("options must be non-empty and none may be a prefix of another")
        self.options = list(options)
        key = "choice:" + json.dumps(options)
        super().__init__(machine_for(key, tokenizer, lambda c: c.add(lambda i: Literal(i, data))))



@dataclass
class ConstrainedStep:
    """One sampled token with the distribution before and after the mask."""

    index: int
    token: int
    piece: str  # text released by this token (whole characters only)
    n_allowed: int  # tokens the mask allowed at this step
    mass_removed: float  # probability the unconstrained distribution gave to forbidden tokens
    before: list[Candidate]  # top rows of the unconstrained distribution
    after: list[Candidate]  # top rows after masking (what the draw used)
    mask_ms: float


@dataclass
class ConstrainedFinish:
    text: str
    complete: bool
    stop_reason: str  # "complete" | "max_tokens" | "model_context_window_exceeded"
    output_tokens: int
    value: Any = None  # the parsed document when complete


def constrained_generate(logits_fn: Callable[[int | None], np.ndarray], constraint: Constraint,
                         sampling_params: SamplingParams, rng: np.random.Generator, max_tokens: int,
                         n_candidates: int = 10) -> Iterator[ConstrainedStep | ConstrainedFinish]:
    """Sample until the constraint is complete (nothing more is appended: the caller adds
    ``<|end|>``) or ``max_tokens``; yields one :class:`ConstrainedStep` per token, then a
    :class:`ConstrainedFinish`.

    ``logits_fn(prev)`` returns next-token logits [V]: with None, after the prompt; otherwise
    after also feeding ``prev`` (see :func:`model_logits_fn`). The last token is never fed.

    Example (flat logits; :func:`model_logits_fn` gives the bundled model's):
        >>> from explainer.llm.tokenizer import load_tokenizer
        >>> tok = load_tokenizer()
        >>> schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
        >>> flat = lambda prev: np.zeros(tok.vocab_size)
        >>> *steps, finish = constrained_generate(flat, JsonConstraint(schema, tok), SamplingParams(),
        ...                                       np.random.default_rng(0), 64)
        >>> finish.complete, finish.stop_reason, sorted(finish.value)
        (True, 'complete', ['ok'])
    """
    tok = constraint.tokenizer
    banned = tok.banned_ids  # "before" is what plain generation would draw from: role markers are never sampled
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    prev: int | None = None
    n, reason = 0, "complete"
    while not constraint.done():
        if n >= max_tokens:
            reason = "max_tokens"
            break
        try:
            logits = np.asarray(logits_fn(prev), dtype=np.float64)
        except ContextWindowExceeded:
            reason = "model_context_window_exceeded"
            break
        t0 = time.perf_counter()
        mask = constraint.allowed()
        mask_ms = (time.perf_counter() - t0) * 1000
        before = distribution(logits, sampling_params, banned=banned)
        after = distribution(np.where(mask, logits, -np.inf), sampling_params)
        token = draw(after, rng)
        constraint.advance(token)
        yield ConstrainedStep(n, token, decoder.decode(tok.token_bytes(token)), int(mask.sum()),
                              float(before.probs[~mask].sum()), before.rows(n_candidates),
                              after.rows(n_candidates), mask_ms)
        prev, n = token, n + 1
    complete = constraint.done()
    value = constraint.value() if complete and isinstance(constraint, JsonConstraint) else None
    yield ConstrainedFinish(constraint.text(), complete, reason, n, value)


class ModelLogits:
    """A ``logits_fn`` over a model: prefill ``prompt_ids`` (after what ``cache``
    holds) on the first call, then one token per call, reusing the KV cache (``.cache``:
    the caller appends <|end|> to it after the call)."""

    def __init__(self, model: LanguageModel, prompt_ids: list[int], cache: Cache, first_logits: np.ndarray | None):
        self.model, self.prompt_ids, self.cache = model, prompt_ids, cache
        self._pending = [first_logits] if first_logits is not None else []

    def __call__(self, prev: int | None) -> np.ndarray:
        if prev is None and self._pending:
            return self._pending.pop()
        ids = self.prompt_ids[self.cache.length:] if prev is None else [prev]
        last: np.ndarray = self.model.forward(ids, cache=self.cache).logits[-1]
        return last


def model_logits_fn(model: LanguageModel, prompt_ids: list[int], cache: Cache | None = None,
                    first_logits: np.ndarray | None = None) -> ModelLogits:
    """The ``logits_fn`` of ``model`` for a prompt: see :class:`ModelLogits`.

    ``first_logits``: the caller already ran the prefill (to time it where it happens); the
    first call returns these instead of running the model."""
    return ModelLogits(model, prompt_ids, cache if cache is not None else model.new_cache(), first_logits)
