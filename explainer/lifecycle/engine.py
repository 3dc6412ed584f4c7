"""Runs one Messages API request end to end and yields its events.

The events are the Messages API stream events, exactly as the API sends them
(``message_start``, ``content_block_start``, ``ping``, ``content_block_delta``,
``content_block_stop``, ``message_delta``, ``message_stop``), interleaved with
explainer frames whose types start with ``explainer.`` (the prompt's tokens, each
sampled token with its candidates, timings). The WebSocket forwards them as they
are; the HTTP endpoint keeps the API events and drops the rest.

Example:
    >>> req = parse_request({"model": "claude-sonnet-4-5", "max_tokens": 8,
    ...                      "messages": [{"role": "user", "content": "Hi"}]})
    >>> [e["type"] for e in Engine().stream(req)][:2]
    ['explainer.prompt', 'message_start']
"""
from __future__ import annotations

import itertools
import secrets
import string
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np

from explainer.lifecycle import frames as fr
from explainer.lifecycle import lru
from explainer.lifecycle.errors import APIError, invalid
from explainer.lifecycle.payload import MessagesRequest, parse_request
from explainer.lifecycle.prompt_cache import Plan, PromptCache
from explainer.lifecycle.tool_format import TOOL_USE_PREFIX, tools_system_prompt
from explainer.llm.batching import scheduler_for
from explainer.llm.budget import Interrupted
from explainer.llm.budget import check as check_budget
from explainer.llm.catalog import BUNDLED_NAME, bundled
from explainer.llm.constrained import (
    ChoiceConstraint,
    ConstrainedFinish,
    ConstrainedStep,
    Constraint,
    JsonConstraint,
    Machine,
    ModelLogits,
    UnsupportedSchema,
    constrained_generate,
    model_logits_fn,
    use_machine_cache,
)
from explainer.llm.generate import Finish, GenerationConfig, Step, generate
from explainer.llm.hf.cache import KVCache
from explainer.llm.hf.passes import HFModel
from explainer.llm.interface import Cache, ChatTokenizer, LanguageModel, LoadedModel, TokenizerError
from explainer.llm.sampling import Candidate, SamplingParams

BUNDLED_MODEL_NAME = BUNDLED_NAME
_ALPHABET = string.ascii_letters + string.digits


def _weigh(x: object) -> int:
    """Bytes for the schema automata's cache: a machine by its own estimate (it shares the
    tokenizer's trie with every other machine, which ``lru.sizeof`` would count again for each)."""
    return x.approx_bytes() if isinstance(x, Machine) else lru.sizeof(x)


def share_automata() -> None:
    """Keep the automata that constrained decoding compiles per schema in a cache under the process-wide
    cache budget, with the app's other caches (the model core knows no budget). The app's services call
    this when they are built (``explainer.web.services``); until then the core keeps its own small cache."""
    use_machine_cache(lru.LRU("schema automata", sizeof=_weigh, max_entries=64))


def new_id(prefix: str) -> str:
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(24))


class Cancelled(Interrupted):
    """The caller went away; generation stopped early. The same as the run's budget ending with
    ``Interrupted("cancelled")`` (``explainer.llm.budget``): catch ``Interrupted`` for both."""

    def __init__(self) -> None:
        super().__init__("cancelled")


def _check(cancelled: Callable[[], bool]) -> None:
    """Stop here if the caller's flag is up, or the run's budget (its cancel flag, its deadline) says so."""
    if cancelled():
        raise Cancelled()
    check_budget()


class Engine:
    """One model's engine. ``Engine()`` serves the bundled model; ``Engine(loaded)`` any :class:`LoadedModel`.

    Without ``loaded``, ``model`` or ``tokenizer`` stand in for the bundled model's (for tests: another
    model with the bundled tokenizer)."""

    def __init__(self, loaded: LoadedModel | None = None, model: LanguageModel | None = None,
                 tokenizer: ChatTokenizer | None = None, prompt_cache: PromptCache | None = None) -> None:
        if loaded is None:
            base = bundled()
            loaded = LoadedModel(base.name, model or base.model, tokenizer or base.tokenizer,
                                 base.fingerprint, bundled=True, card=base.card)
        self.loaded = loaded
        self.model, self.tokenizer = loaded.model, loaded.tokenizer
        # The cache the API and the live socket share; pages that explain caching bring their own.
        self.prompt_cache = prompt_cache or PromptCache(model_id=f"{self.name}:{loaded.fingerprint}")
        self._labels: dict[int, str] = {}  # at most the vocabulary's size
        # Decode steps of every request on this model run together (a model without batched steps: one by one).
        self.scheduler = scheduler_for(self.model) if isinstance(self.model, HFModel) else None

    @property
    def name(self) -> str:
        """The name this engine's model answers to (the bundled one for every Claude name)."""
        return self.loaded.name

    @property
    def context_window(self) -> int:
        return self.model.config.n_ctx

    def token_label(self, token: int) -> str:
        """A token's text as the pages show it (kept: every step labels its ten candidates)."""
        label = self._labels.get(token)
        if label is None:
            label = self._labels[token] = self.tokenizer.token_str(token)
        return label

    def prompt_ids(self, req: MessagesRequest) -> list[int]:
        return self.prompt_segments(req)[0]

    def prompt_segments(self, req: MessagesRequest) -> tuple[list[int], dict[str, int]]:
        """The prompt's ids and where each turn ends (for cache breakpoints)."""
        try:
            system = req.system
            if req.tools:  # the model reads tool definitions as part of its system prompt
                system = tools_system_prompt(req.system, req.tools)
            turns = [(m.role, m.text) for m in req.messages]
            self.check_size(system, turns)
            return self.tokenizer.encode_chat_segments(system, turns)
        except TokenizerError as exc:
            raise invalid(f"messages: {exc}") from None

    @property
    def max_prompt_tokens(self) -> int:
        """The window holds prompt and reply: a prompt may use all of it but one token."""
        return self.context_window - 1

    @property
    def longest_token_bytes(self) -> int:
        tok = self.tokenizer
        if not hasattr(self, "_longest"):
            self._longest = max(len(tok.token_bytes(t)) for t in range(tok.vocab_size) if not tok.is_special(t))
        return self._longest

    def check_size(self, system: str | None, turns: list[tuple[str, str]]) -> None:
        """Refuse, before any BPE, a prompt whose text cannot fit however it is cut.

        No token is longer than ``longest_token_bytes``, so a text of B bytes needs at least
        B / longest tokens. This costs one pass over the text's length and stops a megabyte of
        text from reaching the tokenizer: what passes is at most a few kilobytes.
        """
        n = len((system or "").encode("utf-8", "surrogatepass")) + sum(len(t.encode("utf-8", "surrogatepass")) for _, t in turns)
        at_least = -(-n // self.longest_token_bytes)
        if at_least > self.max_prompt_tokens:
            raise invalid(f"prompt is too long: at least {at_least} tokens > {self.max_prompt_tokens} maximum")

    def check_fits(self, ids: list[int]) -> None:
        if len(ids) > self.max_prompt_tokens:
            raise invalid(f"prompt is too long: {len(ids)} tokens > {self.max_prompt_tokens} maximum")

    def stream(self, req: MessagesRequest, seed: int = 0, n_candidates: int = 10,
               cancelled: Callable[[], bool] = lambda: False, keep_logits: bool = False,
               prompt_cache: PromptCache | None = None, label: str = "") -> Iterator[fr.EngineEvent]:
        """Yield every event of one request; raises APIError before the first event if the request cannot run.

        With ``prompt_cache``, the request's cache breakpoints are looked up and written there. ``label``
        names the request in the batch scheduler's record (the Serving stage shows it; empty: no name).
        """
        started = time.perf_counter()
        _check(cancelled)  # a run that waited for a worker may be over before it starts
        ids, ends = self.prompt_segments(req)
        self.check_fits(ids)
        if req.tools and req.tool_choice["type"] in ("any", "tool"):
            self._check_decodable(req)
            # the forced "tool_use NAME" line is part of what the model reads: it must fit as well
            forced = TOOL_USE_PREFIX + (req.tool_choice["name"] + "\n" if req.tool_choice["type"] == "tool" else "")
            n = len(ids) + len(self.tokenizer.encode(forced))
            if n > self.max_prompt_tokens:
                raise invalid(f"prompt is too long: {n} tokens with the tool call's opening line > {self.max_prompt_tokens} maximum")
        kv = self.model.new_cache()
        plan = None
        if prompt_cache is not None and req.breakpoints:
            plan = prompt_cache.plan(ids, [(ends[bp.segment], bp.ttl) for bp in req.breakpoints if bp.segment in ends])
            if plan.hit is not None:
                kv = plan.hit.kv.copy(length=min(plan.read, len(ids) - 1))  # at least one token is computed
        with self._batched(kv, ids, req, label):
            yield from self._events(req, ids, kv, plan, started, seed, n_candidates, cancelled, keep_logits, prompt_cache)

    def _batched(self, kv: Cache, ids: list[int], req: MessagesRequest, label: str) -> AbstractContextManager[object]:
        """This request's place among the model's decoding requests (``explainer.llm.batching``): its decode steps
        are rows of the steps the model runs for every request at once. Waits here, before the prefill, while its
        KV cache (room for the prompt, the call line and ``max_tokens``) does not fit the budget."""
        if self.scheduler is None or not isinstance(kv, KVCache):
            return nullcontext()
        kv.reserve(min(self.context_window, len(ids) + req.max_tokens + 16))  # 16: a forced tool-call line
        return self.scheduler.join(kv, label=label, prompt_tokens=len(ids), reserve_bytes=kv.nbytes)

    def _events(self, req: MessagesRequest, ids: list[int], kv: Cache, plan: Plan | None, started: float, seed: int,
                n_candidates: int, cancelled: Callable[[], bool], keep_logits: bool,
                prompt_cache: PromptCache | None) -> Iterator[fr.EngineEvent]:
        """The request's events, from the prompt frame to the done frame."""
        usage = fr.Usage(input_tokens=len(ids), output_tokens=0, cache_creation_input_tokens=0, cache_read_input_tokens=0)
        if plan is not None:
            usage = fr.Usage(**plan.usage(), output_tokens=0)
        yield fr.Prompt(
            type=fr.PROMPT,
            input_tokens=len(ids),
            context_window=self.context_window,
            tokens=[fr.PromptToken(id=t, text=self.token_label(t)) for t in ids],
            model=fr.ServedModel(requested=req.model, served_by=self.name, parameters=self.model.n_params),
            cache=fr.CacheUse(read=plan.read, written=plan.write, breakpoints=plan.breakpoints) if plan else None,
        )
        yield fr.MessageStart(type=fr.MESSAGE_START, message=fr.Message(
            id=new_id("msg_"), type=fr.MESSAGE, role="assistant", content=[], model=req.model,
            stop_reason=None, stop_sequence=None, usage=fr.Usage(**usage),
        ))
        first_token_at = None
        kv_start = kv.length
        if req.tools and req.tool_choice["type"] in ("any", "tool"):
            finish = yield from self._tool_call(req, ids, kv, seed, n_candidates, cancelled)
            first_token_at = finish.first_token_at
        else:
            reply = self._text_generator(req, ids, kv, seed, n_candidates)
            opened = self._open(reply, cancelled)
            if self._opens_call(req, ids, opened[0]):  # tool_choice auto: the reply's first token opens a call
                finish = yield from self._tool_call(req, ids, kv, seed, n_candidates, cancelled)
                finish.prefill_seconds += opened[1]  # the prompt's prefill ran in the text reply's first step
            else:
                finish = yield from self._text_reply(cancelled, keep_logits, reply, opened)
            first_token_at = finish.first_token_at
        if plan is not None and plan.writes and prompt_cache is not None:  # (a plan comes from prompt_cache)
            prompt_cache.store(plan, kv)
        usage["output_tokens"] = finish.output_tokens
        # As the live API: message_delta's usage is the request's cumulative usage (input and cache
        # counts too, not only output_tokens); clients such as LangChain read streamed input usage here.
        yield fr.MessageDelta(type=fr.MESSAGE_DELTA,
                              delta=fr.StopDelta(stop_reason=finish.stop_reason, stop_sequence=finish.stop_sequence),
                              usage=fr.Usage(input_tokens=usage["input_tokens"],
                                             cache_creation_input_tokens=usage["cache_creation_input_tokens"],
                                             cache_read_input_tokens=usage["cache_read_input_tokens"],
                                             output_tokens=usage["output_tokens"]))
        yield fr.MessageStop(type=fr.MESSAGE_STOP)
        total = time.perf_counter() - started
        yield fr.Done(
            type=fr.DONE, usage=fr.Usage(**usage), stop_reason=finish.stop_reason,
            timings=fr.Timings(
                prefill_ms=round(finish.prefill_seconds * 1000, 2),
                prefill_tokens=len(ids) - kv_start,
                time_to_first_token_ms=round(((first_token_at or time.perf_counter()) - started) * 1000, 2),
                decode_ms=round(finish.decode_seconds * 1000, 2),
                tokens_per_second=round(finish.output_tokens / finish.decode_seconds, 1) if finish.decode_seconds > 0 else None,
                total_ms=round(total * 1000, 2),
            ),
        )

    def _open(self, reply: Iterator[Step | Finish], cancelled: Callable[[], bool]) -> tuple[Step | Finish, float, float]:
        """The text reply's first item (the prompt's prefill, then its first token drawn), the seconds
        it took, and when it came."""
        _check(cancelled)
        t0 = time.perf_counter()
        first = next(reply)
        now = time.perf_counter()
        return first, now - t0, now

    def _opens_call(self, req: MessagesRequest, ids: list[int], first: Step | Finish) -> bool:
        """With tool_choice auto: does the reply open with a tool call?

        It does when its first token, drawn as any first token of a text reply, is the first token
        of ``tool_use `` (the format the model was trained to answer in when a tool is needed); the
        call then goes on as with tool_choice any. A tool whose schema cannot be decoded, or a call
        line that would not fit in the window, leaves that token to the text.
        """
        opening = self.tokenizer.encode(TOOL_USE_PREFIX)
        if not (req.tools and req.tool_choice["type"] == "auto" and isinstance(first, Step) and first.token == opening[0]):
            return False
        if len(ids) + len(opening) > self.max_prompt_tokens:
            return False
        for t in req.tools:
            try:
                JsonConstraint(t["input_schema"], self.tokenizer)
            except UnsupportedSchema:
                return False
        return True

    def _check_decodable(self, req: MessagesRequest) -> None:
        """A 400 before anything runs when a tool's schema is outside what constrained decoding supports."""
        names = [req.tool_choice["name"]] if req.tool_choice["type"] == "tool" else [t["name"] for t in req.tools]
        for i, t in enumerate(req.tools):
            if t["name"] in names:
                try:
                    JsonConstraint(t["input_schema"], self.tokenizer)
                except UnsupportedSchema as exc:
                    raise invalid(f"tools.{i}.input_schema: {self.name} cannot decode this schema: {exc}") from None

    def _text_generator(self, req: MessagesRequest, ids: list[int], kv: Cache, seed: int,
                        n_candidates: int) -> Iterator[Step | Finish]:
        cfg = GenerationConfig(
            max_tokens=req.max_tokens, seed=seed, n_candidates=n_candidates, stop_sequences=req.stop_sequences,
            sampling=SamplingParams(temperature=req.temperature, top_k=req.top_k, top_p=req.top_p),
        )
        return generate(self.model, self.tokenizer, ids, cfg, cache=kv)

    def _text_reply(self, cancelled: Callable[[], bool], keep_logits: bool, reply: Iterator[Step | Finish],
                    opened: tuple[Step | Finish, float, float]) -> Generator[fr.EngineEvent, None, Finish]:
        """The text content block, token by token (``opened``: its first item, already drawn); returns the Finish."""
        yield fr.ContentBlockStart(type=fr.CONTENT_BLOCK_START, index=0, content_block=fr.TextBlock(type=fr.TEXT, text=""))
        yield fr.Ping(type=fr.PING)
        first, _, opened_at = opened
        first_token_at = opened_at if isinstance(first, Step) else None
        finish: Finish | None = None
        for item in itertools.chain([first], reply):
            _check(cancelled)
            if isinstance(item, Finish):
                finish = item
                break
            step: Step = item
            frame = fr.Token(
                type=fr.TOKEN, index=step.index, token=step.token,
                text=self.token_label(step.token), piece=step.text, ms=round(step.seconds * 1000, 3),
                candidates=self._candidates(step.candidates),
            )
            if step.word_ban_p:  # a blocked word's token that the model really considered was removed
                frame["banned_words"] = [
                    fr.BannedWord(token=t, text=self.token_label(t), word=step.word_ban[t], probability=round(p, 6))
                    for t, p in sorted(step.word_ban_p.items(), key=lambda kv: -kv[1])]
            if keep_logits:
                frame["logits"] = step.logits  # numpy, for in-process callers only (not JSON)
                frame["word_ban"] = tuple(step.word_ban)  # every id the ban removed, to redraw this step exactly
            yield frame
            if step.text:
                yield fr.ContentBlockDelta(type=fr.CONTENT_BLOCK_DELTA, index=0, delta=fr.TextDelta(type=fr.TEXT_DELTA, text=step.text))
        assert finish is not None
        yield fr.ContentBlockStop(type=fr.CONTENT_BLOCK_STOP, index=0)
        finish.first_token_at = first_token_at
        return finish

    def _tool_call(self, req: MessagesRequest, ids: list[int], kv: Cache, seed: int, n_candidates: int,
                   cancelled: Callable[[], bool]) -> Generator[fr.EngineEvent, None, Finish]:
        """A tool_use content block whose input is decoded under its tool's JSON Schema.

        With tool_choice "tool" the call line ``tool_use NAME`` is forced; with "any" the model
        picks the name among the tools (a constrained choice), then writes the input JSON, every
        token masked to what keeps the JSON valid for the schema. This is how a model this small
        emits well-formed calls: it was never trained on tools.
        """
        tok, model = self.tokenizer, self.model
        rng = np.random.default_rng(seed)
        params = SamplingParams(temperature=req.temperature, top_k=req.top_k, top_p=req.top_p)
        t0 = time.perf_counter()
        by_name = {t["name"]: t for t in req.tools}
        forced = TOOL_USE_PREFIX + (req.tool_choice["name"] + "\n" if req.tool_choice["type"] == "tool" else "")
        seq = ids + tok.encode(forced)

        def budget() -> int:  # the input's tokens: what max_tokens leaves after the call line, within the window
            return max(1, min(req.max_tokens - (len(seq) - len(ids)), model.config.n_ctx - len(seq) - 1))

        frames: list[fr.Token] = []
        # The prefill runs here, where it is timed, not lazily inside the first constrained step
        # (which would count it as decode time).
        prefilled: np.ndarray | None = model.forward(seq[kv.length:], cache=kv).logits[-1]
        prefill_end = time.perf_counter()
        first_sampled: list[float] = []

        def logits_fn() -> ModelLogits:
            nonlocal prefilled
            first, prefilled = prefilled, None
            return model_logits_fn(model, seq, cache=kv, first_logits=first)

        def run(constraint: Constraint, limit: int) -> tuple[list[ConstrainedStep], ConstrainedFinish | None]:
            fn = logits_fn()
            out: list[ConstrainedStep] = []
            finish = None
            for item in constrained_generate(fn, constraint, params, rng, limit, n_candidates=n_candidates):
                _check(cancelled)
                if isinstance(item, ConstrainedFinish):
                    finish = item
                    break
                if not first_sampled:
                    first_sampled.append(time.perf_counter())
                out.append(item)
                frames.append(self._constrained_frame(len(frames), item))
            return out, finish

        if req.tool_choice["type"] == "tool":
            name = req.tool_choice["name"]
        else:
            # The name is written whole, as the forced line of tool_choice tool is: max_tokens cuts the input, not the name.
            steps, choice = run(ChoiceConstraint([n + "\n" for n in by_name], tok), max(1, model.config.n_ctx - len(seq) - 1))
            assert choice is not None  # constrained decoding ends with its Finish
            name = choice.text.rstrip("\n")
            seq = seq + [s.token for s in steps]
        yield fr.ContentBlockStart(type=fr.CONTENT_BLOCK_START, index=0,
                                   content_block=fr.ToolUseBlock(type=fr.TOOL_USE, id=new_id("toolu_"), name=name, input={}))
        yield fr.Ping(type=fr.PING)
        sent = len(frames)
        yield from frames
        steps = []
        fin = None
        fn = logits_fn()
        for item in constrained_generate(fn, JsonConstraint(by_name[name]["input_schema"], tok), params, rng, budget(),
                                         n_candidates=n_candidates):
            _check(cancelled)
            if isinstance(item, ConstrainedFinish):
                fin = item
                break
            if not first_sampled:
                first_sampled.append(time.perf_counter())
            steps.append(item)
            yield self._constrained_frame(sent + len(steps) - 1, item)
            if item.piece:
                yield fr.ContentBlockDelta(type=fr.CONTENT_BLOCK_DELTA, index=0,
                                           delta=fr.InputJsonDelta(type=fr.INPUT_JSON_DELTA, partial_json=item.piece))
        yield fr.ContentBlockStop(type=fr.CONTENT_BLOCK_STOP, index=0)
        assert fin is not None
        # forced call line + chosen name + the JSON, and the <|end|> that closes the turn when complete
        n_out = (len(seq) - len(ids)) + len(steps) + (1 if fin.complete else 0)
        stop = {"complete": "tool_use"}.get(fin.stop_reason, fin.stop_reason)
        now = time.perf_counter()
        return Finish(stop, None, n_out, fin.text, prefill_end - t0, now - prefill_end,
                      first_token_at=first_sampled[0] if first_sampled else None)

    def _constrained_frame(self, index: int, item: ConstrainedStep) -> fr.Token:
        """The ``explainer.token`` frame of one constrained token (the tool's name or its input):
        the candidates after the mask, and the distribution the model gave before it."""
        return fr.Token(
            type=fr.TOKEN, index=index, token=item.token, text=self.token_label(item.token),
            piece=item.piece, ms=round(item.mask_ms, 3), constrained=True,
            n_allowed=int(item.n_allowed), mass_removed=round(float(item.mass_removed), 6),
            candidates=self._candidates(item.after),
            unconstrained=self._candidates(item.before),
        )

    def _candidates(self, candidates: Iterable[Candidate]) -> list[fr.Candidate]:
        """A step's candidates as a frame lists them: the sampler's numbers and each token's text."""
        return [fr.Candidate(**c.to_dict(), text=self.token_label(c.token)) for c in candidates]


@dataclass
class Run:
    """Everything one scenario produced: what the stage pages render."""

    body: dict[str, Any]
    request: MessagesRequest | None
    error: fr.Error | None  # the API's error body when the request is refused
    prompt_ids: list[int]
    prompt_tokens: list[fr.PromptToken]
    events: list[fr.EngineEvent]  # the Messages API stream events, in order (no explainer frame)
    steps: list[fr.Token]  # explainer.token frames, with "logits"
    done: fr.Done | None  # the explainer.done frame (usage, stop reason, timings)

    @property
    def text(self) -> str:
        return "".join(s["piece"] for s in self.steps)


def run_request(engine: Engine, body: dict[str, Any], seed: int = 0, n_candidates: int = 10) -> Run:
    """Validate ``body`` and run it to the end, collecting every event."""
    req: MessagesRequest | None = None
    try:
        req = parse_request(body)
        events = list(engine.stream(req, seed=seed, n_candidates=n_candidates, keep_logits=True))
    except APIError as exc:
        ids: list[int] = []
        if req is not None:
            try:
                ids = engine.prompt_ids(req)
            except APIError:
                ids = []
        return Run(body, req, exc.body(), ids, [{"id": t, "text": engine.token_label(t)} for t in ids], [], [], None)
    prompt, done = events[0], events[-1]
    assert prompt["type"] == fr.PROMPT and done["type"] == fr.DONE  # a run's first and last frames
    return Run(
        body=body, request=req, error=None,
        prompt_ids=[t["id"] for t in prompt["tokens"]], prompt_tokens=prompt["tokens"],
        events=[e for e in events if not fr.is_explainer(e)],
        steps=[e for e in events if e["type"] == fr.TOKEN],
        done=done,
    )
