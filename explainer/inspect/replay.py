"""A recorded call replayed on the bundled model: its request as a scenario, and the stage pages' links to it.

Claude's tokenizer and weights are not public, so the walk-through cannot show what Claude computed; it
can run the same request here, on the bundled model, stage by stage. What the bundled model cannot take
is left out and said: inline images and documents, and a ``max_tokens`` above ``REPLAY_MAX_TOKENS``.
"""
from __future__ import annotations

from typing import Any

from django.urls import reverse

from explainer.lifecycle.scenario import Scenario, ScenarioError
from explainer.stages.registry import BY_SLUG, REQUEST_STEPS
from explainer.stages.runs import codec

REPLAY_MAX_TOKENS = 200
KEPT_BLOCKS = ("text", "tool_use", "tool_result")


def scenario(body: Any) -> tuple[Scenario | None, list[str]]:
    """The scenario that replays ``body`` here, and what was changed to make it one (None: it cannot be replayed)."""
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list) or "truncated_json" in body:
        return None, ["The recorded body is not a whole Messages API request."]
    notes: list[str] = []
    system = body.get("system") or ""
    if isinstance(system, list):
        system = "".join(b.get("text", "") for b in system if isinstance(b, dict))
    messages = []
    for m in body["messages"]:
        if not isinstance(m, dict):
            continue
        content = m.get("content")
        if isinstance(content, list):
            kept = [b for b in content if isinstance(b, dict) and b.get("type") in KEPT_BLOCKS]
            if len(kept) < len(content):
                notes.append("Images, documents and other blocks the bundled model cannot read are left out.")
            content = kept or ""
        messages.append({"role": m.get("role"), "content": content})
    max_tokens = body.get("max_tokens") if isinstance(body.get("max_tokens"), int) else 48
    if max_tokens > REPLAY_MAX_TOKENS:
        notes.append(f"max_tokens is cut from {max_tokens:,} to {REPLAY_MAX_TOKENS} for the bundled model.")
        max_tokens = REPLAY_MAX_TOKENS
    data = {"system": str(system), "messages": messages, "tools": body.get("tools") or [], "model": str(body.get("model") or ""),
            "max_tokens": max_tokens, "temperature": float(body.get("temperature", 1.0)), "stream": bool(body.get("stream")),
            "stop_sequences": body.get("stop_sequences") or [], "seed": 0}
    for k in ("top_p", "top_k"):
        if body.get(k) is not None:
            data[k] = body[k]
    try:
        return Scenario.from_changes(data), sorted(set(notes))
    except (ScenarioError, TypeError, ValueError) as exc:
        return None, [str(exc)]


def links(body: Any) -> dict[str, Any]:
    """``{"links": [{"title", "url"}], "notes": [...]}`` for the call's replay in the walk-through."""
    s, notes = scenario(body)
    if s is None:
        return {"links": [], "notes": notes}
    try:
        blob = codec().encode(s)
    except ScenarioError as exc:
        return {"links": [], "notes": [*notes, str(exc)]}
    q = f"?s={blob}" if blob else ""
    return {"links": [{"title": BY_SLUG[slug].title, "url": reverse("stage", args=[slug]) + q}
                      for slug in ("overview", *REQUEST_STEPS, "recap") if BY_SLUG[slug].built], "notes": notes}
