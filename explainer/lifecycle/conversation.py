"""A multi-turn conversation as the client keeps it: per-turn accounting and what to do at the limit.

The Messages API keeps no conversation: every request carries the whole history, so the
input tokens of turn k are the tokens of turns 1..k, and the total billed grows roughly
with the square of the number of turns. When the history no longer fits the context
window, the client has to send less. Three common strategies, as pure functions:

- :func:`drop_oldest`: drop the oldest exchanges until the rest fits;
- :func:`keep_last_n`: a sliding window, the last ``n`` exchanges;
- :func:`summarise`: replace the older turns with one user turn holding a summary
  written by a model (the caller passes the function that writes it).

All of them keep the system prompt, start with a user turn and alternate roles.

Messages here are ``{"role": "user" | "assistant", "content": str}`` dicts with roles that
alternate (what :func:`normalise` makes of the API's looser rules). Token counts come from a
``count(system, messages) -> int`` callable, so this module knows nothing about the tokenizer.

Example:
    >>> count = lambda system, msgs: sum(len(m["content"].split()) + 2 for m in msgs)
    >>> msgs = [user("a b c"), assistant("d e"), user("f")]
    >>> [t.input_tokens for t in per_turn(None, msgs, count)]
    [5, 12]
    >>> drop_oldest(None, msgs, count, budget=4).messages
    [{'role': 'user', 'content': 'f'}]
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from explainer.lifecycle import pricing

Count = Callable[[str | None, list[dict[str, Any]]], int]
Summariser = Callable[[list[dict[str, Any]]], str]

SUMMARY_PREFIX = "Summary of earlier conversation: "
STRATEGIES = ("drop_oldest", "keep_last_n", "summarise")


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": text}


def normalise(messages: Sequence[tuple[str, str] | dict[str, Any]]) -> list[dict[str, Any]]:
    """Role/text pairs (or message dicts with text content) as alternating message dicts.

    Consecutive turns of one role are joined with a blank line, as the API merges them.
    Example: ``normalise([("user", "a"), ("user", "b")]) == [user("a\\n\\nb")]``
    """
    out: list[dict[str, Any]] = []
    for m in messages:
        role, text = (m["role"], m["content"]) if isinstance(m, dict) else m
        if out and out[-1]["role"] == role:
            out[-1] = {"role": role, "content": out[-1]["content"] + "\n\n" + text}
        else:
            out.append({"role": role, "content": text})
    return out


def alternates(messages: Sequence[dict[str, Any]]) -> bool:
    """True when the list is non-empty, starts with a user turn and roles alternate."""
    return bool(messages) and messages[0]["role"] == "user" and all(
        a["role"] != b["role"] for a, b in zip(messages, messages[1:]))


def exchanges(messages: Sequence[dict[str, Any]]) -> list[tuple[int, int]]:
    """``(start, end)`` slices of each exchange: a user turn and the reply that follows it, if any.

    Example: ``exchanges([user("a"), assistant("b"), user("c")]) == [(0, 2), (2, 3)]``
    """
    starts = [i for i, m in enumerate(messages) if m["role"] == "user"]
    return [(s, starts[k + 1] if k + 1 < len(starts) else len(messages)) for k, s in enumerate(starts)]


def request_ends(messages: Sequence[dict[str, Any]]) -> list[int]:
    """For each user turn, how many messages the request that sent it carried (the history up to it).

    A final assistant turn (a prefill) belongs to the last request.
    """
    ends = [i + 1 for i, m in enumerate(messages) if m["role"] == "user"]
    if ends and messages and messages[-1]["role"] == "assistant":
        ends[-1] = len(messages)
    return ends


# ---- per-turn accounting ---------------------------------------------------------------------

@dataclass(frozen=True)
class TurnStats:
    turn: int  # 1-based: the k-th request of the conversation
    messages: int  # how many messages that request carried
    input_tokens: int
    output_tokens: int | None  # None: unknown (e.g. the request was refused)
    cumulative_input: int
    cost: float | None  # dollars for this request at the model's list price; None: price unknown
    cumulative_cost: float | None


def per_turn(system: str | None, messages: Sequence[dict[str, Any]], count: Count,
             output_tokens: Sequence[int | None] | None = None, model: str | None = None) -> list[TurnStats]:
    """One row per request of the conversation: what it sent and what it cost.

    ``output_tokens[k]`` is the reply's usage for request k (None when it was refused: a refused
    request is not billed). With ``model``, each request is priced with :func:`pricing.cost`.
    """
    rows: list[TurnStats] = []
    total_in, total_cost = 0, 0.0
    price_known = model is not None and pricing.price_of(model) is not None
    for k, end in enumerate(request_ends(messages)):
        n_in = count(system, list(messages[:end]))
        out = output_tokens[k] if output_tokens is not None and k < len(output_tokens) else None
        refused = output_tokens is not None and out is None
        billed_in = 0 if refused else n_in
        total_in += billed_in
        c = None
        bill = pricing.cost(model, {"input_tokens": billed_in, "output_tokens": out or 0}) if model is not None and price_known else None
        if bill is not None:
            c = bill["total"]
            total_cost += c
        rows.append(TurnStats(k + 1, end, n_in, out, total_in, c, total_cost if price_known else None))
    return rows


@dataclass(frozen=True)
class Projection:
    window: int
    turns: int  # how many requests fit before one would not
    last_input: int  # input tokens of the last request that fits
    total_input: int  # input tokens billed over all of them
    input_cost: float | None  # dollars for total_input at the model's list input price


def project(first: int, growth: float, window: int, model: str | None = None) -> Projection | None:
    """Arithmetic for a conversation that starts at ``first`` tokens and grows by ``growth`` a turn.

    Request k sends ``first + (k-1)*growth`` tokens, so the total over T requests is
    ``T*first + growth*T*(T-1)/2``: linear per request, quadratic in total.
    Example: ``project(100, 100, 1000).total_input == 5500`` (10 requests: 100 + 200 + … + 1000)
    """
    if growth <= 0 or first <= 0 or first > window:
        return None
    turns = int((window - first) // growth) + 1
    total = round(turns * first + growth * turns * (turns - 1) / 2)
    c = pricing.cost(model, {"input_tokens": total, "output_tokens": 0}) if model else None
    return Projection(window, turns, round(first + (turns - 1) * growth), total, c["total"] if c else None)


# ---- overflow strategies ---------------------------------------------------------------------

@dataclass
class Trimmed:
    """What a strategy would send instead of the whole history."""

    strategy: str
    system: str | None
    messages: list[dict[str, Any]]
    tokens: int
    budget: int
    kept: int  # messages of the original history still sent as they were
    dropped: int  # messages of the original history no longer sent
    summary: str | None = None  # the summary text (summarise only)
    summarised: int = 0  # messages the summary stands for
    notes: list[str] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        return self.tokens <= self.budget


def _trimmed(strategy: str, system: str | None, original: Sequence[dict[str, Any]], sent: list[dict[str, Any]], count: Count,
             budget: int, **extra: Any) -> Trimmed:
    """A strategy's result that sends a suffix of the original history."""
    return Trimmed(strategy, system, sent, count(system, sent), budget,
                   kept=len(sent), dropped=len(original) - len(sent), **extra)


def drop_oldest(system: str | None, messages: Sequence[dict[str, Any]], count: Count, budget: int) -> Trimmed:
    """Drop the oldest exchanges (a user turn and its reply) until the history fits ``budget``.

    The newest exchange is never dropped: if it alone does not fit, the result does not fit either.
    """
    messages = list(messages)
    spans = exchanges(messages)
    k = 0
    while k < len(spans) - 1 and count(system, messages[spans[k][0]:]) > budget:
        k += 1
    result = _trimmed("drop_oldest", system, messages, messages[spans[k][0]:] if spans else [], count, budget)
    if not result.fits:
        result.notes.append("Even the newest turn alone is longer than the budget.")
    return result


def keep_last_n(system: str | None, messages: Sequence[dict[str, Any]], count: Count, budget: int, n: int) -> Trimmed:
    """A sliding window: the last ``n`` exchanges, fewer if ``n`` of them do not fit ``budget``."""
    if n < 1:
        raise ValueError("n must be at least 1")
    messages = list(messages)
    spans = exchanges(messages)
    k = max(0, len(spans) - n)
    notes = []
    while k < len(spans) - 1 and count(system, messages[spans[k][0]:]) > budget:
        k += 1
    if len(spans) - k < min(n, len(spans)):
        notes.append(f"The last {n} exchanges do not fit, so only the last {len(spans) - k} are kept.")
    result = _trimmed("keep_last_n", system, messages, messages[spans[k][0]:] if spans else [], count, budget, notes=notes)
    if not result.fits:
        result.notes.append("Even the newest turn alone is longer than the budget.")
    return result


def summarise(system: str | None, messages: Sequence[dict[str, Any]], count: Count, budget: int,
              summarise_fn: Summariser, reserve: int = 64) -> Trimmed:
    """Replace the older turns by one user turn, ``"Summary of earlier conversation: …"``.

    The newest turns are kept word for word. So that roles still alternate, the kept part starts
    with an assistant reply, and the summary stands for everything before it, including the
    question that reply answers; when even the last reply is too long to keep, the summary and
    the newest question travel together as one user turn. ``reserve`` tokens are kept free for
    the summary's text when choosing where to cut; if the summary turns out longer, fewer turns
    are kept and the summary is written again. ``summarise_fn(older_messages) -> text`` writes
    the summary (the model that serves the scenario, in the page).
    """
    messages = list(messages)
    if count(system, messages) <= budget:
        return _trimmed("summarise", system, messages, messages, count, budget,
                        notes=["The whole history fits: nothing to summarise."])
    last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")

    def build(i: int, text: str) -> list[dict[str, Any]]:
        if messages[i]["role"] == "assistant":
            return [user(SUMMARY_PREFIX + text)] + messages[i:]
        return [user(SUMMARY_PREFIX + text + "\n\n" + messages[i]["content"])] + messages[i + 1:]

    # where the kept part may start: a reply, or the newest question itself, with something before it
    cuts = [i for i, m in enumerate(messages) if i > 0 and (m["role"] == "assistant" or i == last_user)]
    if not cuts:
        return _trimmed("summarise", system, messages, messages, count, budget,
                        notes=["There is nothing before the newest turn to summarise, and it alone is too long."])
    # the longest kept part that leaves ``reserve`` tokens for the summary's text
    first = next((i for i in cuts if count(system, build(i, "")) + reserve <= budget), cuts[-1])
    notes: list[str] = []
    for i in [c for c in cuts if c >= first]:
        text = summarise_fn(messages[:i])
        sent = build(i, text)
        result = Trimmed("summarise", system, sent, count(system, sent), budget, kept=len(messages) - i, dropped=i,
                         summary=text, summarised=i, notes=list(notes))
        if result.fits:
            return result
        notes.append("The summary left too little room, so fewer turns are kept word for word.")
    result.notes.append("Even a summary and the newest turn are longer than the budget.")
    return result


def reply_budget(window: int, max_prompt: int, max_tokens: int) -> int:
    """How many prompt tokens a client can send and still leave room for a reply of ``max_tokens``."""
    return max_prompt if max_tokens >= window else min(max_prompt, window - max_tokens)
