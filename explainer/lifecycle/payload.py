"""Assembly and validation of a Messages API request body.

The public API validates a body against a schema with pydantic, and so does this module: the
schema (``body_schema.py``: :class:`MessagesBody`, :class:`CountTokensBody` and the turns, blocks
and tools they hold) checks every field's presence and type, so the messages are the API's own
(``messages.0.content: Field required``, ``max_tokens: Input should be a valid integer``), each
naming the field it is about. Of all the errors the schema finds, the one reported is the first
the API checks (:data:`_CHECK_ORDER`).

Only the rules that relate one part of the body to another are written by hand, in
:func:`parse_request`, once the schema has passed: the order of roles, each tool_use answered by
a tool_result in the next turn, unique tool names, input_examples that match their tool's
input_schema, at most four cache breakpoints with no 1-hour TTL after a 5-minute one, and a
tool_choice that names a tool the request provides. Consecutive turns of one role are merged,
and a final assistant turn is a prefill that the reply continues.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict

from pydantic import ValidationError

from explainer.lifecycle import body_schema as schema
from explainer.lifecycle.body_schema import IGNORED_FIELDS, MAX_MESSAGES, MAX_STOP_SEQUENCES, UNSUPPORTED_FIELDS  # noqa: F401
from explainer.lifecycle.errors import APIError, invalid
from explainer.lifecycle.tool_format import tool_call_text, tool_result_text

MAX_BREAKPOINTS = 4


@dataclass
class Message:
    role: str  # "user" | "assistant"
    text: str


@dataclass(frozen=True)
class CacheBreakpoint:
    """A ``cache_control`` marker: the prefix up to the end of turn ``segment`` ("system" or "messages.N")."""

    segment: str
    ttl: str  # "5m" | "1h"
    where: str  # the field path it was found at, for messages


class ToolDefinition(TypedDict):
    """A tool as the model is shown it: a request's tool less the fields that change nothing here."""

    name: str
    description: str  # "" when the request gives none
    input_schema: dict[str, Any]


@dataclass
class MessagesRequest:
    model: str
    max_tokens: int
    messages: list[Message]
    system: str | None = None
    stop_sequences: tuple[str, ...] = ()
    stream: bool = False
    temperature: float = 1.0
    top_p: float | None = None
    top_k: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    breakpoints: tuple[CacheBreakpoint, ...] = ()
    tools: list[ToolDefinition] = field(default_factory=list)
    tool_choice: dict[str, Any] = field(default_factory=lambda: {"type": "auto"})

    @property
    def prefill(self) -> str | None:
        return self.messages[-1].text if self.messages[-1].role == "assistant" else None


# ---- which error is reported -----------------------------------------------------------------------------

# The schema finds every error; the API reports the first it checks. Its order within one object, where
# it is not the schema's: "extra" stands for the unknown keys (alphabetically), "missing" for the required
# keys left out; fields not named here follow in schema order, then unknown keys.
_CHECK_ORDER = {
    "": ("extra", "missing", "model", "max_tokens", "messages", "system", "stop_sequences", "stream",
         "temperature", "top_p", "top_k", "metadata", "tools", "cache_control", "tool_choice"),
    "messages.#": ("missing", "extra"),
    "messages.#.content.#": ("type", "text", "extra"),
    "messages.#.content.#.content.#": ("type", "text", "extra"),
    "system.#": ("type", "text", "extra"),
    "metadata": ("extra",),
    "tools.#": ("type", "extra"),
    "tool_choice": ("type", "extra"),
}
# Lists of tagged unions: pydantic puts the member's tag after the index in an error's location.
_TAGGED = {"messages", "content", "system"}
# Lists whose blocks' cache_control the API checks once all the list is checked.
_LATE_CACHE_CONTROL = {"tools", "system", "messages.#.content"}
Loc = tuple[int | str, ...]  # where an error is: keys and list indexes, from the body down


def _path(loc: Loc) -> Loc:
    """An error's location as the API writes it: without the union tags."""
    return tuple(part for i, part in enumerate(loc)
                 if not (i >= 2 and isinstance(loc[i - 1], int) and loc[i - 2] in _TAGGED))


def _check_rank(path: Loc, kind: str, seen: dict[Loc, int]) -> list[tuple[float, int, str]]:
    """Sort key of an error at ``path``: level by level, the order in which the API checks. ``seen``:
    where each location first appears in pydantic's list of errors, which follows the schema's order."""
    key: list[tuple[float, int, str]] = []
    pattern = ""
    for depth, part in enumerate(path):
        if isinstance(part, int):  # a list's blocks in order; their cache_control after all else, where the API checks it
            late = pattern in _LATE_CACHE_CONTROL and path[depth + 1:depth + 2] == ("cache_control",)
            key.append((late, part, ""))
        else:
            order = _CHECK_ORDER.get(pattern, ())
            slot = {"extra_forbidden": "extra", "missing": "missing"}.get(kind) if depth == len(path) - 1 else None
            in_schema = order.index(part) if part in order else len(order) + seen[path[:depth + 1]]
            if slot == "extra":  # unknown keys go alphabetically, where the API checks them (else last)
                key.append((order.index("extra") if "extra" in order else float("inf"), 0, part))
            elif slot in order:
                key.append((order.index(slot), in_schema, ""))
            else:
                key.append((in_schema, 0, ""))
        pattern = f"{pattern}.{'#' if isinstance(part, int) else part}".lstrip(".")
    return key


def _first_error(exc: ValidationError) -> tuple[Loc, APIError]:
    """The error the API reports first, and its path."""
    errors = [(_path(e["loc"]), e) for e in exc.errors(include_url=False)]
    seen: dict[Loc, int] = {}
    for n, (path, _) in enumerate(errors):
        for depth in range(1, len(path) + 1):
            seen.setdefault(path[:depth], n)
    path, error = min(errors, key=lambda pe: _check_rank(pe[0], pe[1]["type"], seen))
    return path, invalid(f"{'.'.join(map(str, path))}: {error['msg']}")


def _rules_before(body: dict[str, Any], counting: bool, path: Loc) -> None:
    """Raise the error of a rule across fields that the API checks before the schema error at ``path``, if one is broken.

    The API checks the turns one by one, each turn's tool_use/tool_result pairing right after its
    content, then the order of roles; the fields after messages in order; unique names and examples
    with the tools; the cache breakpoints; and that tool_choice comes with tools before tool_choice itself.
    """
    field = path[0] if path else None
    try:
        if field == "messages" and len(path) > 1 and isinstance(path[1], int):  # the turns before the bad one
            turns = body["messages"][:path[1]]
            if path[2:3] == ("content",) and path[4:5] == ("cache_control",):  # and its pairing, checked before its cache_control
                turn = body["messages"][path[1]]
                blocks = [{k: v for k, v in b.items() if k != "cache_control"} if isinstance(b, dict) else b for b in turn["content"]]
                turns.append({**turn, "content": blocks})
            _turns(schema.TURNS.validate_python(turns), whole=False)
            return
        order = _CHECK_ORDER[""]
        if field not in order or order.index(field) <= order.index("messages"):
            return
        b = schema.BODY[counting].validate_python({k: v for k, v in body.items() if k not in order or order.index(k) < order.index(field)})
    except ValidationError:  # not expected: errors before ``path`` are reported first
        return
    messages, marks = _turns(b["messages"])
    tools, deferred = _tools(b.get("tools") or [])
    if field == "tool_choice":
        system = "".join(block["text"] for block in b["system"]) if b.get("system") is not None else None
        _breakpoints(b, tools, system, marks, len(messages) - 1)
        if not tools and not deferred:
            raise invalid("tool_choice: may only be specified while providing tools")


# ---- the rules across fields, by hand --------------------------------------------------------------------

def _turn_text(blocks: Sequence[Mapping[str, Any]]) -> tuple[str, list[str], list[str]]:
    """A turn's content as the model reads it, plus the tool_use ids and tool_result ids it holds.

    tool_use blocks (assistant turns) and tool_result blocks (user turns) are written into the
    text with the bundled model's tool format (``explainer.lifecycle.tool_format``).
    """
    parts: list[str] = []
    uses: list[str] = []
    results: list[str] = []
    for block in blocks:
        if block["type"] == "tool_use":
            uses.append(block["id"])
            parts.append(tool_call_text(block["name"], json.dumps(block["input"], ensure_ascii=False, separators=(",", ":"))))
        elif block["type"] == "tool_result":
            results.append(block["tool_use_id"])
            parts.append(tool_result_text("".join(b["text"] for b in block.get("content", ())), block.get("is_error", False)))
        else:
            parts.append(block["text"])
    return "\n".join(p for p in parts if p) if (uses or results) else "".join(parts), uses, results


def _marks(blocks: Sequence[Mapping[str, Any]] | None, where: str) -> list[tuple[str, str]]:
    """(path, ttl) of each block that carries a cache_control."""
    return [(f"{where}.{i}", b["cache_control"].get("ttl", "5m")) for i, b in enumerate(blocks or ()) if b.get("cache_control")]


def _turns(turns: Sequence[Mapping[str, Any]], whole: bool = True) -> tuple[list[Message], list[tuple[int, str, str]]]:
    """The turns merged by role, and each breakpoint as (merged turn index, ttl, path). ``whole=False``:
    the turns are the first few, and the first turn's role is not checked."""
    merged: list[tuple[str, list[str]]] = []  # (role, the texts of its consecutive turns)
    marks: list[tuple[int, str, str]] = []
    pending: list[str] = []  # the tool_use ids of the previous turn, awaiting results
    for i, turn in enumerate(turns):
        text, uses, results = _turn_text(turn["content"])
        missing = [u for u in pending if u not in results]
        if missing and turn["role"] == "user":
            raise invalid(f"messages.{i}: tool_use ids were found without tool_result blocks immediately after: {', '.join(missing)}. "
                          "Each tool_use block must have a corresponding tool_result block in the next message.")
        for rid in results:
            if rid not in pending:
                raise invalid(f"messages.{i}.content: unexpected tool_use_id found in tool_result blocks: {rid}. "
                              "Each tool_result block must have a corresponding tool_use block in the previous message.")
        pending = uses
        if merged and merged[-1][0] == turn["role"]:
            merged[-1][1].append(text)  # consecutive turns of one role are merged
        else:
            merged.append((turn["role"], [text]))
        marks += [(len(merged) - 1, ttl, path) for path, ttl in _marks(turn["content"], f"messages.{i}.content")]
    if whole and merged[0][0] != "user":
        raise invalid("messages.0.role: the first message must use the 'user' role")
    return [Message(role, "\n\n".join(texts)) for role, texts in merged], marks


def _tools(tools: Sequence[Mapping[str, Any]]) -> tuple[list[ToolDefinition], set[str]]:
    """The tools the model is shown, and the names of the deferred ones (``defer_loading: true``).

    A deferred tool is only loaded by a tool search tool, a server tool this server does not have:
    it is validated, then left out of the prompt, and it cannot be called.
    """
    names: set[str] = set()
    out: list[ToolDefinition] = []
    deferred: set[str] = set()
    for i, t in enumerate(tools):
        if t["name"] in names:
            raise invalid(f"tools.{i}.name: tool names must be unique ({t['name']!r} appears twice)")
        names.add(t["name"])
        if t.get("input_examples"):
            from jsonschema import Draft202012Validator  # lazily, as in schema.json_schema

            validator = Draft202012Validator(t["input_schema"])
            for k, example in enumerate(t["input_examples"]):
                err = next(iter(validator.iter_errors(example)), None)
                if err is not None:
                    raise invalid(f"tools.{i}.input_examples.{k}: does not match input_schema: {err.message}")
        if t.get("defer_loading"):
            deferred.add(t["name"])
            continue
        out.append({"name": t["name"], "description": t.get("description", ""), "input_schema": t["input_schema"]})
    return out, deferred


def _breakpoints(body: Mapping[str, Any], tools: list[ToolDefinition], system: str | None, marks: list[tuple[int, str, str]],
                 last_turn: int) -> tuple[CacheBreakpoint, ...]:
    """Cache breakpoints in prefix order (tools, system, messages); at most four, no 1h after a 5m.

    A breakpoint counts from the end of its turn: the bundled model's cache works at turn boundaries
    (see prompt_cache.py). The bundled model reads tool definitions inside its system turn, so a
    tool's breakpoint covers the prefix through the end of that turn.
    """
    bps = [CacheBreakpoint("system", ttl, path) for path, ttl in _marks(body.get("tools"), "tools") if tools]
    bps += [CacheBreakpoint("system", ttl, path) for path, ttl in _marks(body.get("system"), "system") if system]
    bps += [CacheBreakpoint(f"messages.{turn}", ttl, path) for turn, ttl, path in marks]
    if body.get("cache_control") is not None:  # automatic: on the last cacheable block
        bps.append(CacheBreakpoint(f"messages.{last_turn}", body["cache_control"].get("ttl", "5m"), "cache_control"))
    if len(bps) > MAX_BREAKPOINTS:
        raise invalid(f"A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided. Found {len(bps)}.")
    seen_5m = None
    for bp in bps:
        if bp.ttl == "5m":
            seen_5m = seen_5m or bp
        elif seen_5m is not None:
            raise invalid(f"{bp.where}: a cache_control with ttl '1h' must not come after one with ttl '5m' ({seen_5m.where})")
    return tuple(bps)


def _tool_choice(choice: Mapping[str, Any] | None, tools: list[ToolDefinition], deferred: set[str]) -> dict[str, Any]:
    if choice is None:
        return {"type": "auto"}
    if not tools and not deferred:
        raise invalid("tool_choice: may only be specified while providing tools")
    name = choice.get("name")
    if choice["type"] == "tool":
        if isinstance(name, str) and name in deferred:
            raise invalid(f"tool_choice.name: {name!r} has defer_loading true: only a tool search tool could load it, "
                          "and this server has none")
        if name not in [t["name"] for t in tools]:
            raise invalid(f"tool_choice.name: no tool named {name!r} in tools")
    if choice["type"] == "any" and not tools:
        raise invalid("tool_choice: every tool has defer_loading true, so none can be called (this server has no tool search tool)")
    return dict(choice)


def parse_request(body: Any, counting: bool = False) -> MessagesRequest:
    """Validate a decoded JSON body; raise :class:`APIError` (400) naming the first bad field.

    ``counting=True`` validates a ``count_tokens`` body: the same fields less ``max_tokens``, the
    sampling fields, ``stream`` and ``metadata``.
    """
    if not isinstance(body, dict):
        raise invalid(f"The request body must be a JSON object, got {schema.type_name(body)}")
    for name, why in UNSUPPORTED_FIELDS.items():
        if body.get(name) is not None:
            raise invalid(f"{name}: {why}")
    try:
        b = schema.BODY[counting].validate_python(body)
    except ValidationError as exc:
        path, error = _first_error(exc)
        _rules_before(body, counting, path)
        raise error from None

    messages, marks = _turns(b["messages"])
    system = "".join(block["text"] for block in b["system"]) if b.get("system") is not None else None
    tools, deferred = _tools(b.get("tools") or [])
    temperature, top_p = b.get("temperature"), b.get("top_p")
    return MessagesRequest(
        model=b["model"], max_tokens=b.get("max_tokens", 1), messages=messages, system=system or None,
        stop_sequences=tuple(b.get("stop_sequences") or ()), stream=bool(b.get("stream")),
        temperature=1.0 if temperature is None else float(temperature), top_p=None if top_p is None else float(top_p),
        top_k=b.get("top_k"), metadata=b.get("metadata", {}),
        breakpoints=_breakpoints(b, tools, system, marks, len(messages) - 1),
        tool_choice=_tool_choice(b.get("tool_choice"), tools, deferred), tools=tools,
    )
