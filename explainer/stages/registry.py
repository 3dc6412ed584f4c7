"""The lifecycle stages: the one ordered list the rail, the pager, the kicker's numbering, the
recap, the overview and the classroom all read.

Each stage has a slug (its URL, ``/learn/<slug>/``), a title, a one-line summary, what its main
visual shows, and a page module in ``explainer/stages/pages/`` that turns the computed run into
the page's data. Stages without a page module yet are listed but not linked. What a new stage
provides is in ``explainer/stages/README.md``.
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
    visual: str  # what the stage's main visual shows: the page opens on it, the projector fills the screen with it
    group: str = ""  # "One request" or "Many requests": the kicker's words and the rail's shading
    # On the request path: the frames that light this step on the overview's pipeline (the engine's event
    # types, and the overview's own "local.compose" and "local.gateway": the body it sends, the server's first
    # answer). A stage with any is one of REQUEST_STEPS: the overview's pipeline and the recap's rows.
    lit_by: tuple[str, ...] = ()

    @property
    def built(self) -> bool:
        """A stage is on the walk-through once its page module exists."""
        return importlib.util.find_spec(f"explainer.stages.pages.{self.slug}") is not None

    @property
    def template(self) -> str:
        return f"stages/{self.slug}.html"

    @property
    def number(self) -> int | None:
        """The stage's number in the one list the rail, the pager, the kicker and the classroom share
        (Overview is the start, unnumbered; Compose is 1, Recap the last)."""
        i = SLUGS.index(self.slug)
        return i or None

    @cached_property
    def page(self):
        """The module that builds this stage's context (``OPTIONS`` and ``context(page)``)."""
        return importlib.import_module(f"explainer.stages.pages.{self.slug}")


ONE, MANY = "One request", "Many requests"

# The one ordered list of stages: the walk-through's order, the rail's, the pager's and the
# classroom's. Conversation, caching and tools are about many requests; recap closes the walk.
STAGES: tuple[Stage, ...] = (
    Stage("overview", "Overview", "The whole journey of one request, sent for real.",
          "the pipeline lighting up as one request passes through it"),
    Stage("compose", "Compose", "Your system prompt, turns and parameters become one JSON body.",
          "the JSON body the API receives", ONE, ("local.compose",)),
    Stage("gateway", "Gateway", "Key check, rate limits and the cache-prefix lookup.",
          "the checks a request passes before any model sees it", ONE, ("local.gateway",)),
    Stage("tokenize", "Tokenize", "Text becomes token ids by byte-level BPE.",
          "the prompt as token chips with their ids", ONE, ("explainer.prompt",)),
    Stage("transformer", "Transformer", "Embeddings, attention and feed-forward layers score every next token.",
          "the attention map of the chosen head", ONE, ("message_start",)),
    Stage("sampling", "Sampling", "Temperature, top-k and top-p turn scores into one chosen token.",
          "the next-token distribution and the draw", ONE, ("explainer.token",)),
    Stage("streaming", "Streaming", "Tokens travel back as server-sent events, one delta at a time.",
          "the reply's text and the events that carried it", ONE, ("content_block_delta", "message_stop", "explainer.done")),
    Stage("conversation", "Conversation", "The whole history is resent every turn.",
          "the tokens each turn sends, growing with the history", MANY),
    Stage("caching", "Caching", "A repeated prefix is read from cache instead of recomputed.",
          "two requests' usage side by side, without and with the cache", MANY),
    Stage("tools", "Tools", "The model asks for a tool; your code runs it and replies.",
          "the tool-use loop, request by request, and the attention from the call's argument back to the question", MANY),
    Stage("serving", "Serving", "Many requests share the model's steps; a busy server queues, then answers 529.",
          "the decode steps of every request being served, this one highlighted", MANY),
    Stage("recap", "Recap", "Every stage of this request on one page.",
          "the request's figures, stage by stage"),
)
SLUGS = tuple(s.slug for s in STAGES)
# The steps one request passes through, in order: the overview's pipeline lights them, the recap has a row
# and a card for each (its page module's ``recap(page)`` and ``templates/stages/recap/<slug>.html``).
REQUEST_STEPS = tuple(s.slug for s in STAGES if s.lit_by)
LAST_NUMBER = len(STAGES) - 1

BY_SLUG = {s.slug: s for s in STAGES}


def built() -> tuple[Stage, ...]:
    return tuple(s for s in STAGES if s.built)


def neighbours(slug: str) -> tuple[Stage | None, Stage | None]:
    """Previous and next built stage in walk-through order."""
    order = built()
    i = [s.slug for s in order].index(slug)
    return (order[i - 1] if i > 0 else None, order[i + 1] if i + 1 < len(order) else None)
