"""A recorded call replayed on the bundled model: its request as a scenario, and the stage pages' links to it.

Claude's tokenizer and weights are not public, so the walk-through cannot show what Claude computed; it
can run the same request here, on the bundled model, stage by stage. What the bundled model cannot take
is left out and said: inline images and documents, a ``max_tokens`` above ``REPLAY_MAX_TOKENS``, a model
name that is not Claude's, and what does not fit its window (prompt and reply together): the oldest turns
first, then the end of the system prompt.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypedDict
from urllib.parse import urlencode

from django.urls import reverse

from explainer.lifecycle.errors import APIError
from explainer.lifecycle.payload import parse_request
from explainer.lifecycle.scenario import DEFAULT_MODEL, Scenario, ScenarioError
from explainer.stages.registry import STAGES
from explainer.stages.runs import codec, engine

REPLAY_MAX_TOKENS = 200
KEPT_BLOCKS = ("text", "tool_use", "tool_result")
_TOO_LONG = re.compile(r"at least (\d+) tokens")


class Link(TypedDict):
    title: str
    slug: str
    url: str


class Replay(TypedDict):
    links: list[Link]
    notes: list[str]


def _content(content: Any, notes: list[str]) -> Any:
    if not isinstance(content, list):
        return content
    kept = [b for b in content if isinstance(b, dict) and b.get("type") in KEPT_BLOCKS]
    if len(kept) < len(content):
        notes.append("Images, documents and other blocks the bundled model cannot read are left out.")
    return kept or ""


def scenario(body: Any) -> tuple[Scenario | None, list[str]]:
    """The scenario that replays ``body`` here, and what was changed to make it one (None: it cannot be replayed)."""
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list) or "truncated_json" in body:
        return None, ["The recorded body is not a whole Messages API request."]
    notes: list[str] = []
    system = body.get("system") or ""
    if isinstance(system, list):
        system = "".join(b.get("text", "") for b in system if isinstance(b, dict))
    messages = [{"role": m.get("role"), "content": _content(m.get("content"), notes)} for m in body["messages"] if isinstance(m, dict)]
    asked = body.get("max_tokens")
    max_tokens = asked if isinstance(asked, int) else 48
    if max_tokens > REPLAY_MAX_TOKENS:
        notes.append(f"max_tokens is cut from {max_tokens:,} to {REPLAY_MAX_TOKENS} for the bundled model.")
        max_tokens = REPLAY_MAX_TOKENS
    model = str(body.get("model") or "")
    if not model.startswith("claude-"):  # never another installed model: this is a replay of a Claude call
        notes.append(f"The model name “{model[:60]}” is not a Claude model's; the replay names {DEFAULT_MODEL} (its prices).")
        model = DEFAULT_MODEL
    data = {"system": str(system), "messages": messages, "tools": body.get("tools") or [], "model": model,
            "max_tokens": max_tokens, "temperature": float(body.get("temperature", 1.0)), "stream": bool(body.get("stream")),
            "stop_sequences": body.get("stop_sequences") or [], "seed": 0}
    for k in ("top_p", "top_k"):
        if body.get(k) is not None:
            data[k] = body[k]
    try:
        s = Scenario.from_changes(data)
    except (ScenarioError, TypeError, ValueError) as exc:
        return None, [str(exc)]
    fitted, cut = fit_window(s)
    return fitted, sorted(set(notes)) + cut


# ---- the bundled model's window ---------------------------------------------------------------------------------------


def prompt_tokens(s: Scenario) -> tuple[int, bool] | None:
    """The bundled model's prompt tokens for ``s``, its chat template included, and whether that is the count (False:
    a lower bound, for a text far too long to cut into tokens); None when the engine refuses the request for another
    reason (the stage pages say which)."""
    eng = engine(s)
    try:
        return len(eng.prompt_ids(parse_request(s.request_body()))), True
    except APIError as exc:
        found = _TOO_LONG.search(exc.message)
        return (int(found.group(1)), False) if found else None


def _starts(messages: list[dict[str, Any]]) -> list[int]:
    """Where a cut history may begin: a user turn that answers no tool call (its tool_use would be cut off)."""
    def answers_a_tool(m: dict[str, Any]) -> bool:
        c = m.get("content")
        return isinstance(c, list) and any(isinstance(b, dict) and b.get("type") == "tool_result" for b in c)
    return [i for i, m in enumerate(messages) if i and m.get("role") == "user" and not answers_a_tool(m)]


def _least(candidates: list[int], fits: Callable[[int], bool]) -> int | None:
    """The first of ``candidates`` (ascending; ``fits`` holds from some point on) for which ``fits`` holds."""
    lo, hi, found = 0, len(candidates) - 1, None
    while lo <= hi:
        mid = (lo + hi) // 2
        if fits(candidates[mid]):
            found, hi = candidates[mid], mid - 1
        else:
            lo = mid + 1
    return found


def _most(n: int, fits: Callable[[int], bool]) -> int | None:
    """The largest ``m`` in 0..n for which ``fits(m)`` holds (it holds up to some point), or None."""
    if not fits(0):
        return None
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def fit_window(s: Scenario) -> tuple[Scenario, list[str]]:
    """``s`` cut so its prompt and its reply fit the bundled model's window: the oldest turns left out first, then the end
    of the system prompt; and the notes that say so. Returned unchanged when it fits, or when the engine refuses it
    for another reason."""
    eng = engine(s)
    window = eng.context_window
    room = window - s.max_tokens  # the prompt's share: what the reply does not need
    counted = prompt_tokens(s)
    if counted is None or counted[0] <= room:
        return s, []
    n, exact = counted
    notes = [f"The bundled model reads {window:,} tokens, prompt and reply together; by its tokenizer this request's prompt "
             f"takes {'' if exact else 'at least '}{n:,} (its chat template included), so the replay is cut to the window."]
    total = len(s.messages)

    def fits(k: int) -> bool:
        got = prompt_tokens(s.replace(messages=s.messages[k:]))
        return got is not None and got[0] <= room

    k = _least(_starts(s.messages), fits)
    if k is not None:
        notes.append(f"It leaves out the first {k:,} of the {total:,} messages.")
        return s.replace(messages=s.messages[k:]), notes
    starts = _starts(s.messages)
    if starts:
        s = s.replace(messages=s.messages[starts[-1]:])
        notes.append(f"It leaves out the first {starts[-1]:,} of the {total:,} messages.")
    system = s.system

    def fits_system(n_chars: int) -> bool:
        got = prompt_tokens(s.replace(system=system[:n_chars]))
        return got is not None and got[0] <= room

    keep = _most(len(system), fits_system) if system else None
    if keep is not None:
        notes.append(f"The system prompt is cut to its first {keep:,} of {len(system):,} characters.")
        return s.replace(system=system[:keep]), notes
    notes.append("Even the last turn alone is longer than the window: the stages show the bundled model refusing it.")
    return s, notes


def links(body: Any, origin: tuple[str, int] | None = None) -> Replay:
    """The call's replay in the walk-through: a link per stage, and what was changed to replay it here. With
    ``origin`` (the session's id and the call's number) the stages link back to the call."""
    s, notes = scenario(body)
    if s is None:
        return {"links": [], "notes": notes}
    try:
        blob = codec().encode(s)
    except ScenarioError as exc:
        return {"links": [], "notes": [*notes, str(exc)]}
    q = "?" + urlencode(({"s": blob} if blob else {}) | ({"call": f"{origin[0]}/{origin[1]}"} if origin else {}))
    return {"links": [{"title": st.title, "slug": st.slug, "url": reverse("stage", args=[st.slug]) + q} for st in STAGES if st.built],
            "notes": notes}
