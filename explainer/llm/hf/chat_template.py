"""A model's chat template, rendered in a sandbox and cut into the parts a page labels.

Chat templates come from the model's folder: they are untrusted Jinja code. They run in Jinja's
``ImmutableSandboxedEnvironment`` (no attribute starting with ``_``, no mutation of the
messages), with the globals and filters ``transformers`` gives them, so a template renders here
exactly as it does in ``tokenizer.apply_chat_template``.

The sandbox keeps a template away from Python's internals, not from the machine's time and memory,
so every render also runs under a budget (:class:`_RenderBudget`) that the template's own code
meets at every step: each loop iteration, call, filter, ``~``, ``+``, ``*``, ``**`` and ``%``, and
each piece of output. Anything that could build a large value (``'x' * 10**8``,
``'x'|center(10**9)``, ``lipsum(n=200000)``, a ``%`` format with a huge width, a list nested into
itself) is refused before it is computed, from its operands' sizes; anything that could run long
(a loop, a recursive macro) meets the clock between steps. The request's own budget
(:mod:`explainer.llm.budget`) is checked at the same places, so a cancelled request stops a render.

To tell the template's own text (role markers, separators) from the conversation's text, the
conversation is rendered with every text replaced by a sentinel, a private-use character around
the text's index; the rendering is then cut at the sentinels. A folder without a template (GPT-2)
gets :data:`FALLBACK_TEMPLATE` through the same code path.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import jinja2
import regex

from explainer.llm import budget
from explainer.llm.budget import Interrupted
from explainer.llm.hf.render_budget import (
    CONVERSATION_SECONDS,
    MAX_TEMPLATE_CHARS,
    RENDER_MAX_CHARS,
    RENDER_SECONDS,
    RENDER_TEXT_FACTOR,
    ChatTemplateBudgetError,
    ChatTemplateError,
    _OverBudget,
    _RenderBudget,
    _state,
)
from explainer.llm.hf.template_sandbox import _environment, _Refused, _short
from explainer.llm.interface import ModelLoadError

# Plain text turns for a model trained without a chat template. Each turn ends with the end-of-text
# token (the engine stops on it); the role's name sits on its own line, so the text of a turn is
# tokenized as it would be at the start of a line, whether it is sent or generated.
FALLBACK_TEMPLATE = (
    "{% for message in messages %}"
    "{% if not loop.first %}{{ '\\n\\n' }}{% endif %}"
    "{{ message['role'] | capitalize }}:\n{{ message['content'] }}{{ eos_token }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{% if messages %}{{ '\\n\\n' }}{% endif %}{{ 'Assistant:\\n' }}{% endif %}"
)
SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
_PRIVATE_USE = range(0xE000, 0xF900)
_CACHE_MAX = 256  # sentinel renderings kept per template (keyed by the roles, not the texts)


@dataclass(frozen=True)
class Piece:
    """One part of a rendered conversation, in order."""

    label: str  # "template" (the template's own text), "system" or "messages.i"
    text: str
    closes: str | None = None  # the turn that ends with this piece (``ends[closes]`` counts the ids up to here)


class ChatTemplate:
    """The template of one model folder, compiled once.

    ``origin`` is the file it came from (``tokenizer_config.json`` or ``chat_template.jinja``):
    every error names it. ``variables`` are the special tokens' texts (``bos_token``, ...).
    """

    def __init__(self, source: str | None, origin: str, variables: dict[str, str]):
        self.has_own_template = source is not None
        self.source = source if source is not None else FALLBACK_TEMPLATE
        self.origin = origin if source is not None else "the built-in plain-text chat template"
        self.variables = dict(variables)
        if len(self.source) > MAX_TEMPLATE_CHARS:
            raise ModelLoadError(f"{self.origin}: the chat template is {len(self.source):,} characters long; at most "
                                 f"{MAX_TEMPLATE_CHARS:,} are accepted (real templates are a few thousand).")
        try:
            self._template = _environment().from_string(self.source)
        except jinja2.TemplateSyntaxError as exc:
            raise ModelLoadError(f"{self.origin}: the chat template is not valid Jinja ({exc.message}, line {exc.lineno}).") from None
        except Exception as exc:  # a parser pushed past its limits (nesting, a 5,000-digit number) by hostile source
            raise ModelLoadError(f"{self.origin}: the chat template cannot be compiled ({type(exc).__name__}: "
                                 f"{_short(exc)}).") from None
        self._cache: dict[tuple[tuple[str, ...], bool, bool, str], tuple[list[str], list[str]]] = {}

    # ---- rendering ----------------------------------------------------------------
    def render(self, messages: list[tuple[str, str]], add_generation_prompt: bool, deadline: float | None = None) -> str:
        """The conversation as the model reads it, as ``apply_chat_template(..., tokenize=False)`` renders it.

        The render runs under its budget: RENDER_SECONDS (or until ``deadline``, a ``time.monotonic()``
        value, if that comes first), and RENDER_MAX_CHARS plus twice the conversation's text for what it
        writes or builds. Past it, :class:`ChatTemplateBudgetError` (a ModelLoadError and a
        TokenizerError: the folder's fault when it is opened, the request's 400 when it is served); a
        cancelled request raises :class:`~explainer.llm.budget.Interrupted`.
        """
        chat = [{"role": role, "content": text} for role, text in messages]
        ends = time.monotonic() + RENDER_SECONDS
        late = f"it ran for over {RENDER_SECONDS:g} s"
        if deadline is not None and deadline < ends:
            ends, late = deadline, f"its renders for this conversation ran for over {CONVERSATION_SECONDS:g} s"
        limit = RENDER_MAX_CHARS + RENDER_TEXT_FACTOR * sum(len(text) for _, text in messages)
        b = _RenderBudget(limit, ends, late)
        outer, _state.budget = getattr(_state, "budget", None), b
        try:
            b.check_now()
            out, written = [], 0
            for chunk in self._template.generate(messages=chat, add_generation_prompt=add_generation_prompt,
                                                 tools=None, documents=None, **self.variables):
                b.tick()
                written += len(chunk)
                b.need(written, "the rendered conversation")
                out.append(chunk)
            return "".join(out)
        except _OverBudget as exc:
            raise ChatTemplateBudgetError(f"{self.origin}: the chat template exceeded its render budget ({exc.reason}).") from None
        except Interrupted:
            raise
        except _Refused as exc:
            raise ChatTemplateError(f"{self.origin}: the chat template refuses this conversation: {_short(exc.message)}") from None
        except Exception as exc:  # untrusted code: whatever it raises is the template's failure
            if b.broken is not None:  # the template caught the refusal somewhere and failed otherwise
                raise ChatTemplateBudgetError(f"{self.origin}: the chat template exceeded its render budget ({b.broken}).") from None
            raise ChatTemplateError(f"{self.origin}: the chat template failed ({type(exc).__name__}: {_short(exc)}).") from None
        finally:
            _state.budget = outer

    # ---- cutting into parts ---------------------------------------------------------
    def pieces(self, system: str | None, messages: list[tuple[str, str]], add_generation_prompt: bool = True) -> list[Piece]:
        """The rendered conversation cut into the template's text and each turn's text.

        A final assistant message is a prefill: the rendering stops right after its text
        (transformers' ``continue_final_message``). The template's text after turn i is split into
        what closes turn i (what rendering the conversation up to turn i puts after its text) and
        what opens the next turn, so ``closes`` marks where a turn ends.
        """
        deadline = time.monotonic() + CONVERSATION_SECONDS
        turns = ([("system", system)] if system else []) + list(messages)
        labels = (["system"] if system else []) + [f"messages.{i}" for i in range(len(messages))]
        prefill = bool(messages) and messages[-1][0] == "assistant"
        generate = add_generation_prompt and not prefill
        texts = [text for _, text in turns]
        mark = self._sentinel(texts)
        roles = tuple(role for role, _ in turns)
        glue, closings = self._glue(roles, generate, prefill, mark, deadline)
        texts = self._texts_as_rendered(turns, generate, prefill, glue, labels, deadline)
        out = [Piece("template", glue[0])]
        for i, (label, text) in enumerate(zip(labels, texts)):
            last = i == len(turns) - 1
            if last and prefill:
                out.append(Piece(label, text, closes=label))
                break
            closing = closings[i]
            out += [Piece(label, text), Piece("template", closing, closes=label), Piece("template", glue[i + 1][len(closing):])]
        return out

    def assistant_closing(self) -> str | None:
        """What the template writes right after an assistant turn's text (None if it cannot render one)."""
        mark = self._sentinel([])
        try:
            glue, _ = self._glue(("user", "assistant"), False, False, mark, time.monotonic() + CONVERSATION_SECONDS)
        except ChatTemplateBudgetError:
            raise  # a template past its budget on two short turns is refused outright
        except ModelLoadError:
            return None
        return glue[2]

    def _sentinel(self, texts: list[str]) -> str:
        """A private-use character that neither the texts, the template nor its variables contain."""
        for code in _PRIVATE_USE:
            if not code & 63:
                budget.check()
            c = chr(code)
            if c not in self.source and not any(c in t for t in (*texts, *self.variables.values())):
                return c
        raise ChatTemplateError("the conversation uses every private-use character, so it cannot be split into turns.")

    def _cut(self, rendered: str, n: int, mark: str) -> list[str]:
        """The template's text between the sentinels 0..n-1 of ``rendered`` (n + 1 strings)."""
        parts = regex.split(f"{mark}(\\d+){mark}", rendered)
        glue, found = parts[0::2], parts[1::2]
        if found != [str(i) for i in range(n)] or any(mark in g for g in glue):
            raise ChatTemplateError(f"{self.origin}: the chat template drops, repeats or rewrites the text of a message, "
                                    "so its own tokens cannot be told apart from the conversation's.")
        return glue

    def _glue(self, roles: tuple[str, ...], generate: bool, prefill: bool, mark: str,
              deadline: float) -> tuple[list[str], list[str]]:
        """The template's text around each turn, and what closes each turn; depends on the roles only."""
        key = (roles, generate, prefill, mark)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        marks = [f"{mark}{i}{mark}" for i in range(len(roles))]
        glue = self._cut(self.render(list(zip(roles, marks)), generate, deadline), len(roles), mark)
        closings = []
        for i in range(len(roles) - (1 if prefill else 0)):
            try:
                alone = self._cut(self.render(list(zip(roles[:i + 1], marks)), False, deadline), i + 1, mark)[-1]
            except ChatTemplateBudgetError:
                raise
            except ModelLoadError:  # the template refuses a conversation that stops here: end the turn at its text
                alone = ""
            closings.append(alone if glue[i + 1].startswith(alone) else "")
        if prefill:
            glue[-1] = ""
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[key] = (glue, closings)
        return glue, closings

    def _texts_as_rendered(self, turns: list[tuple[str, str]], generate: bool, prefill: bool, glue: list[str],
                           labels: list[str], deadline: float) -> list[str]:
        """Each turn's text as the template writes it: as sent, or trimmed (Llama 3's templates ``trim``).

        The conversation is rendered once more with its real texts and matched against the template's
        text around the sentinels; a template that rewrites a text any other way is refused.
        """
        if not turns:
            return []
        rendered = self.render(turns, generate, deadline)
        pos, out = len(glue[0]), []
        if not rendered.startswith(glue[0]):
            raise self._rewrites(labels[0])
        for i, (_, text) in enumerate(turns):
            after = None if prefill and i == len(turns) - 1 else glue[i + 1]  # a prefill's rendering goes on after it
            for candidate in dict.fromkeys((text, text.strip(), text.lstrip(), text.rstrip())):
                if not rendered.startswith(candidate, pos):
                    continue
                end = pos + len(candidate)
                if after is None or (rendered.startswith(after, end) and (i + 1 < len(turns) or end + len(after) == len(rendered))):
                    out.append(candidate)
                    pos = end + (len(after) if after is not None else 0)
                    break
            else:
                raise self._rewrites(labels[i])
        return out

    def _rewrites(self, label: str) -> ChatTemplateError:
        return ChatTemplateError(f"{self.origin}: the chat template rewrites the text of {label} (other than trimming it), "
                                 "so the conversation's tokens cannot be told apart from the template's.")
