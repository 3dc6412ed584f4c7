"""Assembly and validation of a Messages API request body.

Validation follows the public API: required fields, types, ranges, the order of
roles; each error message names the field it is about (``messages.1.content``).
Consecutive turns of one role are merged, and a final assistant turn is a prefill
that the reply continues.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from explainer.lifecycle.errors import invalid
from explainer.lifecycle.tool_format import tool_call_text, tool_result_text

MAX_MESSAGES = 100_000
MAX_STOP_SEQUENCES = 8

KNOWN_FIELDS = {
    "model", "max_tokens", "messages", "system", "stop_sequences", "stream", "metadata",
    "temperature", "top_p", "top_k", "tools", "tool_choice", "cache_control",
}
# Fields of the current API that change nothing about what the bundled model computes:
# accepted and ignored (documented in README).
IGNORED_FIELDS = {"service_tier", "diagnostics", "user_profile_id", "workspace_id", "inference_geo"}
# Fields of the current API that the bundled model cannot honour: a clear 400, not silence.
UNSUPPORTED_FIELDS = {
    "thinking": "extended thinking is not available on the bundled model",
    "output_config": "output_config is not supported by the bundled model",
    "output_format": "structured output formats are not supported by the bundled model",
    "speed": "speed modes are not supported by the bundled model",
    "container": "code-execution containers are not supported by this server",
    "context_management": "context management is not supported by this server",
    "mcp_servers": "MCP servers are not supported by this server",
}


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
    metadata: dict = field(default_factory=dict)
    breakpoints: tuple[CacheBreakpoint, ...] = ()
    tools: list[dict] = field(default_factory=list)
    tool_choice: dict = field(default_factory=lambda: {"type": "auto"})

    @property
    def prefill(self) -> str | None:
        return self.messages[-1].text if self.messages[-1].role == "assistant" else None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _type_name(v: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(type(v), type(v).__name__)


MAX_BREAKPOINTS = 4


def _cache_control(cc: Any, where: str) -> str:
    """Validate a block's ``cache_control``; returns its TTL."""
    if not isinstance(cc, dict) or cc.get("type") != "ephemeral" or set(cc) - {"type", "ttl"}:
        raise invalid(f"{where}: Input should be {{\"type\": \"ephemeral\"}} with an optional \"ttl\"")
    ttl = cc.get("ttl", "5m")
    if ttl not in ("5m", "1h"):
        raise invalid(f"{where}.ttl: Input should be '5m' or '1h'")
    return ttl


def _breakpoints_of(value: Any, where: str) -> list[tuple[str, str]]:
    """(path, ttl) of each block in ``value`` that carries cache_control."""
    if not isinstance(value, list):
        return []
    return [(f"{where}.{i}", _cache_control(b["cache_control"], f"{where}.{i}.cache_control"))
            for i, b in enumerate(value) if isinstance(b, dict) and b.get("cache_control") is not None]


def _text_blocks(value: Any, where: str, allow_string: bool = True) -> str:
    """A string, or a list of text blocks, joined in order."""
    if isinstance(value, str) and allow_string:
        return value
    if not isinstance(value, list):
        raise invalid(f"{where}: Input should be a valid string or a list of content blocks, got {_type_name(value)}")
    return "".join(_text_block(block, f"{where}.{i}") for i, block in enumerate(value))


def _text_block(block: Any, at: str) -> str:
    if not isinstance(block, dict):
        raise invalid(f"{at}: Input should be an object, got {_type_name(block)}")
    kind = block.get("type")
    if kind is None:
        raise invalid(f"{at}.type: Field required")
    if kind in ("image", "document", "tool_use", "tool_result", "thinking", "redacted_thinking", "search_result"):
        raise invalid(f"{at}: content blocks of type '{kind}' are not supported here by the bundled model")
    if kind != "text":
        raise invalid(f"{at}.type: Input tag '{kind}' found using 'type' does not match any of the expected tags")
    if "text" not in block:
        raise invalid(f"{at}.text: Field required")
    if not isinstance(block["text"], str):
        raise invalid(f"{at}.text: Input should be a valid string")
    extra = set(block) - {"type", "text", "cache_control", "citations"}
    if extra:
        raise invalid(f"{at}.{sorted(extra)[0]}: Extra inputs are not permitted")
    return block["text"]


TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def _message_content(value: Any, where: str, role: str) -> tuple[str, list[tuple[str, str]], list[str]]:
    """A turn's content as the model reads it, plus the tool_use (id, name) and tool_result ids it holds.

    tool_use blocks (assistant turns) and tool_result blocks (user turns) are written into the
    text with the bundled model's tool format (``explainer.lifecycle.tools``).
    """
    if isinstance(value, str) or not isinstance(value, list):
        return _text_blocks(value, where), [], []
    parts, uses, results = [], [], []
    for i, block in enumerate(value):
        at = f"{where}.{i}"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "tool_use":
            if role != "assistant":
                raise invalid(f"{at}: tool_use blocks may only appear in assistant turns")
            for key, typ in (("id", str), ("name", str), ("input", dict)):
                if not isinstance(block.get(key), typ):
                    raise invalid(f"{at}.{key}: Field required" if key not in block else f"{at}.{key}: Input has the wrong type")
            uses.append((block["id"], block["name"]))
            parts.append(tool_call_text(block["name"], json.dumps(block["input"], ensure_ascii=False, separators=(",", ":"))))
        elif kind == "tool_result":
            if role != "user":
                raise invalid(f"{at}: tool_result blocks may only appear in user turns")
            if not isinstance(block.get("tool_use_id"), str):
                raise invalid(f"{at}.tool_use_id: Field required")
            content = block.get("content", "")
            text = content if isinstance(content, str) else _text_blocks(content, f"{at}.content")
            is_error = block.get("is_error", False)
            if not isinstance(is_error, bool):
                raise invalid(f"{at}.is_error: Input should be a valid boolean")
            results.append(block["tool_use_id"])
            parts.append(tool_result_text(text, is_error))
        else:
            parts.append(_text_block(block, at))
    return "\n".join(p for p in parts if p) if (uses or results) else "".join(parts), uses, results


# The tool fields of the SDK's ToolParam besides name, description, input_schema, cache_control and type.
TOOL_CALLERS = ("direct", "code_execution_20250825", "code_execution_20260120", "code_execution_20260521")
TOOL_FIELDS = {"name", "description", "input_schema", "cache_control", "type",
               "strict", "eager_input_streaming", "input_examples", "defer_loading", "allowed_callers"}


def _tool_options(t: dict, at: str, validator) -> None:
    """Type-check the ToolParam fields that change nothing on this server (or change it trivially)."""
    # strict: true asks that the call's input always match input_schema. Here that holds for every
    # tool: a tool_use input is always decoded under its schema (explainer.lifecycle.tools masks
    # every token that would break it), so strict is honoured trivially, true or false.
    # eager_input_streaming: input_json_delta already carries each token as soon as it is decoded
    # (it may also be null). defer_loading is acted on by the caller.
    for name in ("strict", "eager_input_streaming", "defer_loading"):
        value = t.get(name)
        if name in t and not isinstance(value, bool) and not (name == "eager_input_streaming" and value is None):
            raise invalid(f"{at}.{name}: Input should be a valid boolean")
    # input_examples: checked against the schema as the live API does; the bundled model, never
    # trained on tools and with a 512-token window, is not shown them.
    if "input_examples" in t:
        examples = t["input_examples"]
        if not isinstance(examples, list):
            raise invalid(f"{at}.input_examples: Input should be a valid list")
        for k, ex in enumerate(examples):
            if not isinstance(ex, dict):
                raise invalid(f"{at}.input_examples.{k}: Input should be an object, got {_type_name(ex)}")
            err = next(iter(validator.iter_errors(ex)), None)
            if err is not None:
                raise invalid(f"{at}.input_examples.{k}: does not match input_schema: {err.message}")
    if "allowed_callers" in t:
        callers = t["allowed_callers"]
        if not isinstance(callers, list):
            raise invalid(f"{at}.allowed_callers: Input should be a valid list")
        for k, c in enumerate(callers):
            if c not in TOOL_CALLERS:
                raise invalid(f"{at}.allowed_callers.{k}: Input should be {', '.join(repr(x) for x in TOOL_CALLERS)}")
        if "direct" not in callers:  # only code execution could call it, and this server has none
            raise invalid(f"{at}.allowed_callers: must include 'direct': the code execution tool is not available on this server")


def _tools(raw: Any) -> tuple[list[dict], set[str]]:
    """The tools the model is shown, and the names of the deferred ones (``defer_loading: true``).

    A deferred tool is only loaded by a tool search tool, a server tool this server does not have:
    it is validated, then left out of the prompt, and it cannot be called.
    """
    # jsonschema is imported here, on the first request with tools, not at start-up: it is the slowest
    # import of the engine and most runs never need it.
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    if not isinstance(raw, list):
        raise invalid("tools: Input should be a valid list")
    names = set()
    out, deferred = [], set()
    for i, t in enumerate(raw):
        at = f"tools.{i}"
        if not isinstance(t, dict):
            raise invalid(f"{at}: Input should be an object")
        if t.get("type") not in (None, "custom"):
            raise invalid(f"{at}.type: server tools ({t.get('type')!r}) are not available on this server")
        extra = set(t) - TOOL_FIELDS
        if extra:
            raise invalid(f"{at}.{sorted(extra)[0]}: Extra inputs are not permitted")
        if not isinstance(t.get("name"), str) or not TOOL_NAME.match(t["name"]):
            raise invalid(f"{at}.name: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'")
        if t["name"] in names:
            raise invalid(f"{at}.name: tool names must be unique ({t['name']!r} appears twice)")
        names.add(t["name"])
        if "description" in t and not isinstance(t["description"], str):
            raise invalid(f"{at}.description: Input should be a valid string")
        schema = t.get("input_schema")
        if not isinstance(schema, dict):
            raise invalid(f"{at}.input_schema: Field required")
        if schema.get("type") != "object":
            raise invalid(f"{at}.input_schema.type: Input should be 'object'")
        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError as exc:
            raise invalid(f"{at}.input_schema: not a valid JSON Schema: {exc.message}") from None
        _tool_options(t, at, Draft202012Validator(schema))
        if t.get("defer_loading"):
            deferred.add(t["name"])
            continue
        out.append({"name": t["name"], "description": t.get("description", ""), "input_schema": schema})
    return out, deferred


def _tool_choice(raw: Any, tools: list[dict], deferred: set[str] = frozenset()) -> dict:
    if raw is None:
        return {"type": "auto"}
    if not tools and not deferred:
        raise invalid("tool_choice: may only be specified while providing tools")
    if not isinstance(raw, dict) or raw.get("type") not in ("auto", "any", "tool", "none"):
        raise invalid("tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'")
    extra = set(raw) - {"type", "name", "disable_parallel_tool_use"}
    if extra:
        raise invalid(f"tool_choice.{sorted(extra)[0]}: Extra inputs are not permitted")
    if raw["type"] == "tool":
        if raw.get("name") in deferred:
            raise invalid(f"tool_choice.name: {raw['name']!r} has defer_loading true: only a tool search tool could load it, "
                          "and this server has none")
        if raw.get("name") not in {t["name"] for t in tools}:
            raise invalid(f"tool_choice.name: no tool named {raw.get('name')!r} in tools")
    if raw["type"] == "any" and not tools:
        raise invalid("tool_choice: every tool has defer_loading true, so none can be called (this server has no tool search tool)")
    if not isinstance(raw.get("disable_parallel_tool_use", False), bool):
        raise invalid("tool_choice.disable_parallel_tool_use: Input should be a valid boolean")
    return dict(raw)


def parse_request(body: Any, counting: bool = False) -> MessagesRequest:
    """Validate a decoded JSON body; raise :class:`APIError` (400) naming the first bad field.

    ``counting=True`` validates a ``count_tokens`` body: the same fields less ``max_tokens`` and ``stream``.
    """
    if not isinstance(body, dict):
        raise invalid(f"The request body must be a JSON object, got {_type_name(body)}")
    for name, why in UNSUPPORTED_FIELDS.items():
        if name in body and body[name] is not None:
            raise invalid(f"{name}: {why}")
    known = KNOWN_FIELDS - ({"max_tokens", "stream", "stop_sequences", "temperature", "top_p", "top_k", "metadata"} if counting else set())
    extra = sorted(set(body) - known - IGNORED_FIELDS - set(UNSUPPORTED_FIELDS))
    if extra:
        raise invalid(f"{extra[0]}: Extra inputs are not permitted")
    if counting:
        body = {**body, "max_tokens": 1}
    for name in ("model", "max_tokens", "messages"):
        if name not in body:
            raise invalid(f"{name}: Field required")

    model = body["model"]
    if not isinstance(model, str) or not model.strip():
        raise invalid("model: Input should be a non-empty string")
    max_tokens = body["max_tokens"]
    if not _is_int(max_tokens):
        raise invalid("max_tokens: Input should be a valid integer")
    if max_tokens < 1:
        raise invalid("max_tokens: Input should be greater than or equal to 1")

    raw = body["messages"]
    if not isinstance(raw, list):
        raise invalid(f"messages: Input should be a valid list, got {_type_name(raw)}")
    if not raw:
        raise invalid("messages: at least one message is required")
    if len(raw) > MAX_MESSAGES:
        raise invalid(f"messages: at most {MAX_MESSAGES} messages are allowed, got {len(raw)}")
    merged: list[Message] = []
    marks: list[tuple[int, str, str]] = []  # (merged turn index, ttl, path)
    pending_uses: list[tuple[str, str]] = []  # tool_use blocks of the previous turn, awaiting results
    for i, m in enumerate(raw):
        if not isinstance(m, dict):
            raise invalid(f"messages.{i}: Input should be an object, got {_type_name(m)}")
        for key in ("role", "content"):
            if key not in m:
                raise invalid(f"messages.{i}.{key}: Field required")
        extra = set(m) - {"role", "content"}
        if extra:
            raise invalid(f"messages.{i}.{sorted(extra)[0]}: Extra inputs are not permitted")
        if m["role"] not in ("user", "assistant"):
            raise invalid(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        text, uses, results = _message_content(m["content"], f"messages.{i}.content", m["role"])
        if pending_uses and m["role"] == "user":
            missing = [u for u, _ in pending_uses if u not in results]
            if missing:
                raise invalid(f"messages.{i}: tool_use ids were found without tool_result blocks immediately after: {', '.join(missing)}. "
                              "Each tool_use block must have a corresponding tool_result block in the next message.")
        known = {u for u, _ in pending_uses}
        for rid in results:
            if rid not in known:
                raise invalid(f"messages.{i}.content: unexpected tool_use_id found in tool_result blocks: {rid}. "
                              "Each tool_result block must have a corresponding tool_use block in the previous message.")
        pending_uses = uses
        if merged and merged[-1].role == m["role"]:
            merged[-1].text += "\n\n" + text  # consecutive turns of one role are merged
        else:
            merged.append(Message(m["role"], text))
        marks += [(len(merged) - 1, ttl, path) for path, ttl in _breakpoints_of(m["content"], f"messages.{i}.content")]
    if merged[0].role != "user":
        raise invalid("messages.0.role: the first message must use the 'user' role")

    system = None
    system_marks: list[tuple[str, str]] = []
    if "system" in body and body["system"] is not None:
        system = _text_blocks(body["system"], "system")
        system_marks = _breakpoints_of(body["system"], "system")

    stops: tuple[str, ...] = ()
    if body.get("stop_sequences") is not None:
        s = body["stop_sequences"]
        if not isinstance(s, list) or not all(isinstance(x, str) for x in s):
            raise invalid("stop_sequences: Input should be a list of strings")
        if len(s) > MAX_STOP_SEQUENCES:
            raise invalid(f"stop_sequences: at most {MAX_STOP_SEQUENCES} stop sequences are allowed")
        if any(not x for x in s):
            raise invalid("stop_sequences: each stop sequence must be a non-empty string")
        stops = tuple(s)

    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise invalid("stream: Input should be a valid boolean")

    temperature = body.get("temperature", 1.0)
    if temperature is None:
        temperature = 1.0
    if not _is_number(temperature) or not (0.0 <= temperature <= 1.0):
        raise invalid("temperature: Input should be a number between 0 and 1")
    top_p = body.get("top_p")
    if top_p is not None and (not _is_number(top_p) or not (0.0 < top_p <= 1.0)):
        raise invalid("top_p: Input should be a number greater than 0 and at most 1")
    top_k = body.get("top_k")
    if top_k is not None and (not _is_int(top_k) or top_k < 0):
        raise invalid("top_k: Input should be an integer greater than or equal to 0")

    metadata = body.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise invalid("metadata: Input should be an object")
    if set(metadata) - {"user_id"}:
        raise invalid(f"metadata.{sorted(set(metadata) - {'user_id'})[0]}: Extra inputs are not permitted")
    if metadata.get("user_id") is not None and not isinstance(metadata["user_id"], str):
        raise invalid("metadata.user_id: Input should be a valid string")

    # Cache breakpoints, in prefix order (tools, system, messages). A breakpoint counts from the end
    # of its turn: the bundled model's cache works at turn boundaries (see prompt_cache.py).
    tools, deferred = _tools(body["tools"]) if body.get("tools") is not None else ([], set())
    # The bundled model reads tool definitions inside its system turn, so a tool's breakpoint
    # covers the prefix through the end of that turn.
    bps = [CacheBreakpoint("system", ttl, path) for path, ttl in _breakpoints_of(body.get("tools"), "tools") if tools]
    bps += [CacheBreakpoint("system", ttl, path) for path, ttl in system_marks if system]
    bps += [CacheBreakpoint(f"messages.{turn}", ttl, path) for turn, ttl, path in marks]
    if body.get("cache_control") is not None:  # automatic: on the last cacheable block
        bps.append(CacheBreakpoint(f"messages.{len(merged) - 1}", _cache_control(body["cache_control"], "cache_control"), "cache_control"))
    if len(bps) > MAX_BREAKPOINTS:
        raise invalid(f"A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided. Found {len(bps)}.")
    seen_5m = None
    for bp in bps:
        if bp.ttl == "5m":
            seen_5m = seen_5m or bp
        elif seen_5m is not None:
            raise invalid(f"{bp.where}: a cache_control with ttl '1h' must not come after one with ttl '5m' ({seen_5m.where})")

    tool_choice = _tool_choice(body.get("tool_choice"), tools, deferred)

    return MessagesRequest(
        model=model, max_tokens=max_tokens, messages=merged, system=system or None,
        stop_sequences=stops, stream=stream, temperature=float(temperature),
        top_p=float(top_p) if top_p is not None else None, top_k=top_k, metadata=metadata,
        breakpoints=tuple(bps), tools=tools, tool_choice=tool_choice,
    )
