"""The lifecycle stages, in the order a request passes through them.

Each stage has a slug (its URL, ``/learn/<slug>/``), a title, a one-line summary, and a
page module in ``explainer/stages/pages/`` that turns the computed run into the page's
data. Stages without a page module yet are listed (the rail and the overview show them)
but not linked.
"""
from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from functools import cached_property


@dataclass(frozen=True)
class Stage:
    slug: str
    title: str
    summary: str

    @property
    def built(self) -> bool:
        """A stage is on the walk-through once its page module exists."""
        return importlib.util.find_spec(f"explainer.stages.pages.{self.slug}") is not None

    @property
    def template(self) -> str:
        return f"stages/{self.slug}.html"

    @cached_property
    def page(self):
        """The module that builds this stage's context (``OPTIONS`` and ``context(page)``)."""
        return importlib.import_module(f"explainer.stages.pages.{self.slug}")


STAGES: tuple[Stage, ...] = (
    Stage("overview", "Overview", "The whole journey of one request, sent for real."),
    Stage("compose", "Compose", "Your system prompt, turns and parameters become one JSON body."),
    Stage("gateway", "Gateway", "Key check, rate limits and the cache-prefix lookup."),
    Stage("tokenize", "Tokenize", "Text becomes token ids by byte-level BPE."),
    Stage("transformer", "Transformer", "Embeddings, attention and feed-forward layers score every next token."),
    Stage("sampling", "Sampling", "Temperature, top-k and top-p turn scores into one chosen token."),
    Stage("streaming", "Streaming", "Tokens travel back as server-sent events, one delta at a time."),
    Stage("conversation", "Conversation", "The whole history is resent every turn."),
    Stage("caching", "Caching", "A repeated prefix is read from cache instead of recomputed."),
    Stage("tools", "Tools", "The model asks for a tool; your code runs it and replies."),
    Stage("recap", "Recap", "Every stage of this request on one page."),
)

# The seven steps of one request that the rail shows. Conversation, caching and tools are
# about many requests and sit beside the rail.
REQUEST_STEPS = ("compose", "gateway", "tokenize", "transformer", "sampling", "streaming", "recap")
BESIDE_RAIL = ("conversation", "caching", "tools")

BY_SLUG = {s.slug: s for s in STAGES}


def built() -> tuple[Stage, ...]:
    return tuple(s for s in STAGES if s.built)


def neighbours(slug: str) -> tuple[Stage | None, Stage | None]:
    """Previous and next built stage in walk-through order."""
    order = built()
    i = [s.slug for s in order].index(slug)
    return (order[i - 1] if i > 0 else None, order[i + 1] if i + 1 < len(order) else None)
