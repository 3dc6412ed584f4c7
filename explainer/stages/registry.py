"""The lifecycle stages, in the order a request passes through them.

Each stage has a slug (its URL), a title, a one-line summary, and whether its page
is built yet. The overview draws every stage; navigation links only built ones.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    slug: str
    title: str
    summary: str
    built: bool = False

    @property
    def template(self) -> str:
        return f"stages/{self.slug}.html"


STAGES: tuple[Stage, ...] = (
    Stage("overview", "Overview", "The whole journey of one request, sent for real.", built=True),
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

# The seven steps of one request that the rail shows (conversation, caching and tools
# are about many requests and sit beside the rail).
REQUEST_STEPS = ("compose", "gateway", "tokenize", "transformer", "sampling", "streaming", "recap")

BY_SLUG = {s.slug: s for s in STAGES}
