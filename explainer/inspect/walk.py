"""One recorded call, stage by stage: what its page (``/inspect/<id>/call/<n>/``) shows of the real payload.

Compose gets the body and headers as they were sent (the key masked: it was never recorded), Gateway the
upstream's rate-limit headers, Conversation the history this call resent (and what it no longer sent),
Caching the real usage beside the breakpoints, Tools the tool_use / tool_result loop, Streaming the events'
arrival. Pure functions over the recorded dicts (no Django); the analysis row (cost, cache outcome, context
split, findings) is the session's own, so a figure shown on both pages is the same number.

Example:
    >>> [r["kind"] for r in rate_limits({"anthropic-ratelimit-requests-limit": "50",
    ...                                  "anthropic-ratelimit-requests-remaining": "49", "retry-after": "7"})]
    ['requests']
"""
from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, TypedDict

from explainer.inspect.analysis import history_changes, total_input
from explainer.inspect.jsonish import obj
from explainer.inspect.prefix import Breakpoint, breakpoints
from explainer.inspect.record import KEY_HEADERS, KEY_MASK
from explainer.lifecycle.pricing import cost

MAX_SHOWN_CHARS = 200_000  # of a body's JSON on the page; the rest is said, not shown (the body is kept up to 1 MB)
PREVIEW_CHARS = 280  # of a message's text in the history's list
MAX_COUNTED_CHARS = 400_000  # text the bundled tokenizer counts for one call (a few ms for 100,000 characters)
_LIMIT = re.compile(r"^anthropic-ratelimit-(?P<kind>[a-z-]+?)-(?P<field>limit|remaining|reset)$")


# ---- Compose: the headers and body as sent ----------------------------------------------------------------------------


def headers_sent(method: str, path: str, query: str, recorded: Mapping[str, str]) -> list[tuple[str, str]]:
    """The request line and headers as the client sent them, the key's value masked.

    Example:
        >>> headers_sent("POST", "/v1/messages", "beta=true", {"x-api-key": "(not recorded)", "anthropic-version": "2023-06-01"})
        [('POST', '/v1/messages?beta=true'), ('x-api-key', '••••••••'), ('anthropic-version', '2023-06-01')]
    """
    lines = [(method, path + (f"?{query}" if query else ""))]
    for k in KEY_HEADERS:
        if k in recorded:
            lines.append((k, "••••••••"))
    lines += [(k, str(v)) for k, v in recorded.items() if k not in KEY_HEADERS and v != KEY_MASK]
    return lines


def body_text(body: Any) -> tuple[str, int, bool]:
    """(the body as indented JSON, its compact size in bytes, whether the text shown is cut)."""
    if body is None:
        return "", 0, False
    size = len(json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass"))
    text = json.dumps(body, indent=2, ensure_ascii=False)
    return text[:MAX_SHOWN_CHARS], size, len(text) > MAX_SHOWN_CHARS


# ---- Gateway: the upstream's rate limits ------------------------------------------------------------------------------


class Limit(TypedDict):
    kind: str  # requests, tokens, input-tokens, output-tokens
    limit: int | None
    remaining: int | None
    reset: str
    used: int | None  # limit - remaining


def _int(v: Any) -> int | None:
    try:
        return int(str(v).strip())
    except ValueError:
        return None


def rate_limits(headers: Mapping[str, str]) -> list[Limit]:
    """The ``anthropic-ratelimit-<kind>-{limit,remaining,reset}`` headers, one row per kind, in the order they came."""
    rows: dict[str, Limit] = {}
    for name, value in headers.items():
        m = _LIMIT.match(name.lower())
        if m is None:
            continue
        row = rows.setdefault(m["kind"], {"kind": m["kind"], "limit": None, "remaining": None, "reset": "", "used": None})
        if m["field"] == "reset":
            row["reset"] = str(value)[:64]
        else:
            row[m["field"]] = _int(value)  # type: ignore[literal-required]  # "limit" or "remaining", by the pattern
    for row in rows.values():
        if row["limit"] is not None and row["remaining"] is not None:
            row["used"] = max(0, row["limit"] - row["remaining"])
    return list(rows.values())


def other_headers(headers: Mapping[str, str]) -> list[tuple[str, str]]:
    """What the upstream sent beside the per-kind limits: ``retry-after``, ``retry-after-ms``, and limits this page
    does not know how to group."""
    return [(k, str(v)) for k, v in headers.items() if not _LIMIT.match(k.lower())]


# ---- Conversation: the history resent -------------------------------------------------------------------------------


class Block(TypedDict):
    type: str
    text: str  # a preview: text, a tool's input as JSON, a result's text, an image's size
    name: str  # a tool_use's tool, or ""
    id: str  # a tool_use's id or a tool_result's tool_use_id
    is_error: bool


class Message(TypedDict):
    index: int
    role: str
    blocks: list[Block]
    chars: int
    state: str  # "new" (first sent by this call) or "resent" (the previous call sent it too)


class History(TypedDict):
    messages: list[Message]
    new: int
    resent: int
    dropped: list[Message]  # messages of the previous call that this one no longer sends, while later ones are kept
    previous: int | None  # the call compared with


def _clip(text: str, n: int = PREVIEW_CHARS) -> str:
    return text if len(text) <= n else text[:n - 1] + "…"


def _block_text(b: Mapping[str, Any]) -> str:
    kind = b.get("type")
    if kind == "text":
        return str(b.get("text", ""))
    if kind == "tool_use":
        return json.dumps(b.get("input"), ensure_ascii=False)
    if kind == "tool_result":
        c = b.get("content")
        if isinstance(c, list):
            return " ".join(str(x.get("text", "")) for x in c if isinstance(x, dict) and x.get("type") == "text")
        return "" if c is None else str(c)
    if kind in ("image", "document"):
        src = obj(b.get("source"))
        size = f"{src['width']}×{src['height']}, " if "width" in src and "height" in src else ""
        n = src.get("bytes")
        return f"{src.get('media_type', kind)}, {size}{n:,} bytes (not recorded)" if isinstance(n, int) else str(src.get("media_type", kind))
    return ""


def blocks(content: Any) -> list[Block]:
    """A message's content as blocks (a string is one text block), each with a preview of its text."""
    if isinstance(content, str):
        content = [{"type": "text", "text": content}]
    out: list[Block] = []
    for b in content if isinstance(content, list) else []:
        if not isinstance(b, dict):
            continue
        out.append({"type": str(b.get("type", "?")), "text": _clip(_block_text(b)), "name": str(b.get("name", "")),
                    "id": str(b.get("id") or b.get("tool_use_id") or ""), "is_error": bool(b.get("is_error"))})
    return out


def message_text(m: Any) -> str:
    """The text a model reads of a message: its text blocks, tool inputs and tool results (not block types or ids)."""
    if not isinstance(m, dict):
        return ""
    content = m.get("content")
    if isinstance(content, str):
        return content
    return "\n".join(_block_text(b) for b in content if isinstance(b, dict)) if isinstance(content, list) else ""


def _messages(body: Mapping[str, Any]) -> list[Any]:
    m = body.get("messages")
    return m if isinstance(m, list) else []


def history(body: Mapping[str, Any], previous: tuple[int, Mapping[str, Any]] | None) -> History:
    """This call's messages, each marked new or resent against the previous call, and the ones it dropped."""
    now = _messages(body)
    before = _messages(previous[1]) if previous else []
    sent_before = {json.dumps(m, sort_keys=True, ensure_ascii=False) for m in before}
    rows: list[Message] = []
    for i, m in enumerate(now):
        if not isinstance(m, dict):
            continue
        state = "resent" if json.dumps(m, sort_keys=True, ensure_ascii=False) in sent_before else "new"
        rows.append({"index": i, "role": str(m.get("role", "?")), "blocks": blocks(m.get("content")),
                     "chars": len(message_text(m)), "state": state})
    dropped_at, _ = history_changes(before, now) if previous else ([], [])
    dropped: list[Message] = [{"index": i, "role": str(before[i].get("role", "?")), "blocks": blocks(before[i].get("content")),
                               "chars": len(message_text(before[i])), "state": "dropped"}
                              for i in dropped_at if isinstance(before[i], dict)]
    return {"messages": rows, "new": sum(r["state"] == "new" for r in rows), "resent": sum(r["state"] == "resent" for r in rows),
            "dropped": dropped, "previous": previous[0] if previous else None}


# ---- Caching: the real usage and the breakpoints --------------------------------------------------------------------


class UsageRow(TypedDict):
    field: str
    tokens: int
    usd: float | None


class Caching(TypedDict):
    usage: list[UsageRow]
    input_tokens: int  # every input token: fresh, written and read
    cost_usd: float | None
    uncached_usd: float | None  # the same input at the base price, had nothing been read from or written to the cache
    breakpoints: list[Breakpoint]


def caching(body: Mapping[str, Any], usage: Mapping[str, Any], model: str) -> Caching:
    """The usage block as the upstream sent it, priced field by field, and what the same call costs without the cache."""
    c = cost(model, usage) if usage else None
    created = obj(usage.get("cache_creation"))
    rows: list[UsageRow] = [{"field": "input_tokens", "tokens": int(usage.get("input_tokens") or 0), "usd": c["input"] if c else None}]
    if created:
        for ttl in ("5m", "1h"):
            n = int(created.get(f"ephemeral_{ttl}_input_tokens") or 0)
            rows.append({"field": f"cache_creation.ephemeral_{ttl}_input_tokens", "tokens": n, "usd": None})
    rows.append({"field": "cache_creation_input_tokens", "tokens": int(usage.get("cache_creation_input_tokens") or 0),
                 "usd": c["cache_write"] if c else None})
    rows.append({"field": "cache_read_input_tokens", "tokens": int(usage.get("cache_read_input_tokens") or 0),
                 "usd": c["cache_read"] if c else None})
    rows.append({"field": "output_tokens", "tokens": int(usage.get("output_tokens") or 0), "usd": c["output"] if c else None})
    whole = total_input(dict(usage))
    plain = cost(model, {"input_tokens": whole, "output_tokens": int(usage.get("output_tokens") or 0)}) if usage else None
    return {"usage": rows, "input_tokens": whole, "cost_usd": c["total"] if c else None,
            "uncached_usd": plain["total"] if plain else None, "breakpoints": breakpoints(body)}


# ---- Tools: the loop ------------------------------------------------------------------------------------------------


class ToolStep(TypedDict):
    where: str  # "messages[3]" or "this call's reply"
    role: str
    type: str  # tool_use | tool_result
    name: str
    id: str
    text: str
    is_error: bool


def tool_loop(body: Mapping[str, Any], response: Any) -> list[ToolStep]:
    """Every tool_use and tool_result of the history, then this call's reply's, in order, each result named after its call."""
    names: dict[str, str] = {}
    steps: list[ToolStep] = []
    reply = response.get("content") if isinstance(response, dict) and response.get("type") == "message" else None
    sources: list[tuple[str, str, Any]] = [(f"messages[{i}]", str(m.get("role", "?")), m.get("content"))
                                           for i, m in enumerate(_messages(body)) if isinstance(m, dict)]
    sources.append(("this call's reply", "assistant", reply))
    for where, role, content in sources:
        for b in blocks(content):
            if b["type"] == "tool_use":
                names[b["id"]] = b["name"]
            elif b["type"] != "tool_result":
                continue
            steps.append({"where": where, "role": role, "type": b["type"], "name": b["name"] or names.get(b["id"], "?"),
                          "id": b["id"], "text": b["text"], "is_error": b["is_error"]})
    return steps


def tool_names(body: Mapping[str, Any]) -> list[str]:
    tools = body.get("tools")
    return [str(t.get("name", "?")) for t in tools if isinstance(t, dict)] if isinstance(tools, list) else []


# ---- Streaming: the events as they arrived --------------------------------------------------------------------------


def stream_events(events: list[Any]) -> list[tuple[str, int]]:
    """How many events of each type the stream carried, in the order each type first came."""
    return list(Counter(str(e.get("type", "?")) for e in events if isinstance(e, dict)).items())


# ---- Tokens: the real usage beside the bundled tokenizer ------------------------------------------------------------


class TokenRow(TypedDict):
    part: str
    chars: int
    bundled: int | None  # the bundled tokenizer's count of the same text (None: too long to count here)
    claude: int | None  # the real usage's count, where the API reports one (it reports totals only)


def token_rows(body: Mapping[str, Any], response: Any, usage: Mapping[str, Any], count: Callable[[str], int]) -> list[TokenRow]:
    """Per part of the request, and the reply: characters and the bundled tokenizer's tokens (``count``); the input's and
    the reply's totals beside the real usage's. Nothing is counted past ``MAX_COUNTED_CHARS`` characters."""
    tools = body.get("tools")
    system = body.get("system")
    if isinstance(system, list):
        system = "\n".join(str(b.get("text", "")) for b in system if isinstance(b, dict))
    parts = [("tools", json.dumps(tools, ensure_ascii=False, separators=(",", ":")) if tools else ""),
             ("system", str(system or ""))]
    parts += [(f"messages[{i}] ({m.get('role', '?')})", message_text(m)) for i, m in enumerate(_messages(body)) if isinstance(m, dict)]
    budget = [MAX_COUNTED_CHARS]

    def counted(text: str) -> int | None:
        if len(text) > budget[0]:
            budget[0] = -1
            return None
        budget[0] -= len(text)
        return count(text) if text else 0

    rows: list[TokenRow] = [{"part": p, "chars": len(t), "bundled": counted(t), "claude": None} for p, t in parts if t]
    known = [r["bundled"] for r in rows]
    rows.append({"part": "input, in all", "chars": sum(r["chars"] for r in rows),
                 "bundled": None if None in known else sum(n or 0 for n in known), "claude": total_input(dict(usage)) if usage else None})
    reply = message_text({"content": response.get("content")}) if isinstance(response, dict) and response.get("type") == "message" else ""
    rows.append({"part": "reply (output)", "chars": len(reply), "bundled": counted(reply),
                 "claude": int(usage["output_tokens"]) if isinstance(usage.get("output_tokens"), int) else None})
    return rows
