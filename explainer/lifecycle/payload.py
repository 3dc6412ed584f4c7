"""Assembly and validation of a Messages API request body.

The public API validates a body against a schema with pydantic, and so does this module: the
schema below (:class:`MessagesBody`, :class:`CountTokensBody` and the turns, blocks and tools
they hold) checks every field's presence and type, so the messages are the API's own
(``messages.0.content: Field required``, ``max_tokens: Input should be a valid integer``), each
naming the field it is about. Where the API words an error its own way, the schema says so
next to the field (:func:`_one_error`, :func:`_root_words`, :func:`_an_object`). Of all the
errors the schema finds, the one reported is the first the API checks (:data:`_CHECK_ORDER`).

Only the rules that relate one part of the body to another are written by hand, in
:func:`parse_request`, once the schema has passed: the order of roles, each tool_use answered by
a tool_result in the next turn, unique tool names, input_examples that match their tool's
input_schema, at most four cache breakpoints with no 1-hour TTL after a 5-minute one, and a
tool_choice that names a tool the request provides. Consecutive turns of one role are merged,
and a final assistant turn is a prefill that the reply continues.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Union

from pydantic import (
    AfterValidator, BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, PlainValidator, Tag, TypeAdapter, ValidationError,
    WrapValidator, with_config,
)
from pydantic_core import PydanticCustomError
from typing_extensions import NotRequired, TypedDict  # pydantic needs typing_extensions' TypedDict before Python 3.12

from explainer.lifecycle.errors import APIError, invalid
from explainer.lifecycle.tool_format import tool_call_text, tool_result_text

MAX_MESSAGES = 100_000
MAX_STOP_SEQUENCES = 8
MAX_BREAKPOINTS = 4

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


def _type_name(v: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(type(v), type(v).__name__)


# ---- the API's wording, where it is not pydantic's ------------------------------------------------------

def _one_error(message: str, unless_at: str | None = None) -> WrapValidator:
    """Any error of this value reported as one, in the API's words (``{got}``: the JSON type sent,
    ``{value}``: its repr). Errors that are all inside ``unless_at`` keep their own words and paths."""
    def wrap(value: Any, handler):
        try:
            return handler(value)
        except ValidationError as exc:
            if unless_at is not None and all(e["loc"][:1] == (unless_at,) for e in exc.errors()):
                raise
            context = {"got": _type_name(value)}
            if "{value}" in message:
                context["value"] = repr(value)
            raise PydanticCustomError("invalid_value", message, context) from None
    return WrapValidator(wrap)


def _root_words(**words: str) -> WrapValidator:
    """The API's words for an error of the value itself, by pydantic error type (``{got}``: the JSON
    type sent, ``{length}``: a list's length); errors inside it keep their own."""
    def wrap(value: Any, handler):
        try:
            return handler(value)
        except ValidationError as exc:
            error = exc.errors()[0] if exc.error_count() == 1 else None
            if error is None or error["loc"] or error["type"] not in words:
                raise
            length = len(value) if isinstance(value, list) else 0
            raise PydanticCustomError(error["type"], words[error["type"]], {"got": _type_name(value), "length": length}) from None
    return WrapValidator(wrap)


OBJECT = "Input should be an object, got {got}"
WRONG_TYPE = "Input has the wrong type"
REQUIRED = "Field required"


def _an_object(message: str = OBJECT) -> BeforeValidator:
    """Anything but a JSON object is refused in the API's words, before the schema looks inside."""
    def check(value: Any) -> Any:
        if not isinstance(value, dict):
            raise PydanticCustomError("object_type", message, {"got": _type_name(value)})
        return value
    return BeforeValidator(check)


def _as_sent(schema: Any) -> Any:
    """Checked against ``schema``, but kept as the dict that was sent (its key order and all)."""
    adapter = TypeAdapter(schema)

    def check(value: Any) -> Any:
        adapter.validate_python(value)
        return value
    return Annotated[dict, PlainValidator(check)]


def _absent_as(key: str, value: Any) -> BeforeValidator:
    """A missing ``key`` is checked as if it were ``value``: for the fields whose absence the API words as a wrong value."""
    return BeforeValidator(lambda obj: obj if key in obj else {key: value, **obj})


def _refused(message: str) -> Any:
    """A union member that takes no block: a block of this type is refused here with ``message`` (``{kind}``: its type)."""
    def refuse(block: dict) -> None:
        raise PydanticCustomError("block_refused", message, {"kind": str(block["type"])})
    return Annotated[Any, AfterValidator(refuse)]


def _no_such_type(kind: Any) -> None:
    if kind is None:
        raise PydanticCustomError("missing", "Field required")
    raise PydanticCustomError("union_tag_invalid", "Input tag '{tag}' found using 'type' does not match any of the expected tags",
                              {"tag": str(kind)})


def _blocks(value: Any) -> Any:
    """Content is a string (one text block) or a list of content blocks."""
    if isinstance(value, str):
        return [{"type": "text", "text": value}]
    if not isinstance(value, list):
        raise PydanticCustomError("list_type", "Input should be a valid string or a list of content blocks, got {got}",
                                  {"got": _type_name(value)})
    return value


def _by_type(tags: dict[str, str]) -> Discriminator:
    """Pick a block's union member by its ``type`` (any other type, or none: ``unknown``)."""
    def tag(block: dict) -> str:
        kind = block.get("type")
        return tags.get(kind, "unknown") if isinstance(kind, str) else "unknown"
    return Discriminator(tag)


# ---- the schema ----------------------------------------------------------------------------------------
# TypedDicts (validated, they are plain dicts: several times faster than models on a long conversation).
# JSON as sent: no coercion ("10" is not an integer, 1 is not true), and no unknown keys unless said.
STRICT = ConfigDict(strict=True, extra="forbid")
LENIENT = ConfigDict(strict=True, extra="ignore")


@with_config(STRICT)
class CacheControl(TypedDict):
    type: Literal["ephemeral"]
    ttl: NotRequired[Literal["5m", "1h"]]


# The API words any error of a cache_control but its ttl's as one.
CacheControlParam = Annotated[CacheControl,
                              _one_error('Input should be {"type": "ephemeral"} with an optional "ttl"', unless_at="ttl")]


@with_config(STRICT)
class TextBlock(TypedDict):
    type: Literal["text"]
    text: str
    cache_control: NotRequired[CacheControlParam | None]
    citations: NotRequired[Any]


@with_config(STRICT)
class _NestedTextBlock(TypedDict):  # a text block inside a tool_result: its cache_control is no breakpoint, and not checked
    type: Literal["text"]
    text: str
    cache_control: NotRequired[Any]
    citations: NotRequired[Any]


@with_config(LENIENT)
class _UnknownBlock(TypedDict):
    type: Annotated[Any, AfterValidator(_no_such_type)]


@with_config(LENIENT)
class ToolUseBlock(TypedDict):
    type: Literal["tool_use"]
    id: Annotated[str, _one_error(WRONG_TYPE)]
    name: Annotated[str, _one_error(WRONG_TYPE)]
    input: Annotated[dict[str, Any], _one_error(WRONG_TYPE)]
    cache_control: NotRequired[CacheControlParam | None]


UNSUPPORTED_BLOCKS = ("image", "document", "thinking", "redacted_thinking", "search_result")
_NOT_HERE = _refused("content blocks of type '{kind}' are not supported here by the bundled model")
_NOT_SUPPORTED = dict.fromkeys(UNSUPPORTED_BLOCKS, "unsupported")


def _content(block: Any) -> Any:
    """A string, or a list of content blocks."""
    return Annotated[list[Annotated[block, _an_object()]], BeforeValidator(_blocks)]


def _text_only(text_block: Any) -> Any:
    """system, and a tool_result's content: text blocks only."""
    return Annotated[Union[Annotated[text_block, Tag("text")], Annotated[_UnknownBlock, Tag("unknown")],
                           Annotated[_NOT_HERE, Tag("unsupported")]],
                     _by_type({"text": "text", **_NOT_SUPPORTED, "tool_use": "unsupported", "tool_result": "unsupported"})]


@with_config(LENIENT)
class ToolResultBlock(TypedDict):
    type: Literal["tool_result"]
    tool_use_id: Annotated[str, _one_error(REQUIRED)]  # the API's words for a tool_use_id that is not a string
    content: NotRequired[_content(_text_only(_NestedTextBlock))]
    is_error: NotRequired[bool]
    cache_control: NotRequired[CacheControlParam | None]


UserBlock = Annotated[Union[Annotated[TextBlock, Tag("text")], Annotated[ToolResultBlock, Tag("tool_result")],
                            Annotated[_refused("tool_use blocks may only appear in assistant turns"), Tag("tool_use")],
                            Annotated[_UnknownBlock, Tag("unknown")], Annotated[_NOT_HERE, Tag("unsupported")]],
                      _by_type({"text": "text", "tool_result": "tool_result", "tool_use": "tool_use", **_NOT_SUPPORTED})]
AssistantBlock = Annotated[Union[Annotated[TextBlock, Tag("text")], Annotated[ToolUseBlock, Tag("tool_use")],
                                 Annotated[_refused("tool_result blocks may only appear in user turns"), Tag("tool_result")],
                                 Annotated[_UnknownBlock, Tag("unknown")], Annotated[_NOT_HERE, Tag("unsupported")]],
                           _by_type({"text": "text", "tool_use": "tool_use", "tool_result": "tool_result", **_NOT_SUPPORTED})]


@with_config(STRICT)
class UserTurn(TypedDict):
    role: Literal["user"]
    content: _content(UserBlock)


@with_config(STRICT)
class AssistantTurn(TypedDict):
    role: Literal["assistant"]
    content: _content(AssistantBlock)


@with_config(STRICT)
class _OtherTurn(TypedDict):
    role: Literal["user", "assistant"]  # never matches: the turn's role is neither
    content: Any


def _role(turn: dict) -> str:
    role = turn.get("role")
    return role if isinstance(role, str) and role in ("user", "assistant") else "other"


Turn = Annotated[Union[Annotated[UserTurn, Tag("user")], Annotated[AssistantTurn, Tag("assistant")],
                       Annotated[_OtherTurn, Tag("other")]],
                 Discriminator(_role), _an_object()]


@with_config(ConfigDict(strict=True, extra="allow"))
class _ObjectSchema(TypedDict):
    type: Literal["object"]


def _json_schema(schema: dict) -> dict:
    # jsonschema is imported here, on the first request with tools, not at start-up: it is the slowest
    # import of the engine and most runs never need it.
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise PydanticCustomError("json_schema", "not a valid JSON Schema: {detail}", {"detail": exc.message}) from None
    return schema


# The callers of the SDK's ToolParam.allowed_callers; only "direct" is possible on this server.
TOOL_CALLERS = ("direct", "code_execution_20250825", "code_execution_20260120", "code_execution_20260521")
TOOL_NAME = r"^[a-zA-Z0-9_-]{1,64}$"


def _direct(callers: list[str]) -> list[str]:
    if "direct" not in callers:  # only code execution could call it, and this server has none
        raise PydanticCustomError("no_direct_caller", "must include 'direct': the code execution tool is not available on this server")
    return callers


@with_config(STRICT)
class ToolParam(TypedDict):
    """The SDK's ToolParam. Besides name, description and input_schema, its fields change nothing on
    this server, or change it trivially: strict asks that a call's input always match input_schema,
    and here it always does (a tool_use input is decoded under its schema: explainer.llm masks every
    token that would break it); input_json_delta already carries each token as soon as it is decoded
    (eager_input_streaming); defer_loading is acted on by parse_request; input_examples are checked
    against the schema as the live API does, but the bundled model, never trained on tools and with
    a 512-token window, is not shown them."""

    type: NotRequired[Annotated[Literal["custom"], _one_error("server tools ({value}) are not available on this server")] | None]
    # Missing, not a string or not matching: the pattern's words, as the API has them. (pydantic's
    # regex engine has "$" match only at the very end: no trailing newline.)
    name: Annotated[str, Field(pattern=TOOL_NAME), _one_error(f"String should match pattern '{TOOL_NAME}'")]
    description: NotRequired[str]
    input_schema: Annotated[_as_sent(Annotated[_ObjectSchema, _absent_as("type", None)]), _an_object(REQUIRED),
                            AfterValidator(_json_schema)]
    strict: NotRequired[bool]
    eager_input_streaming: NotRequired[bool | None]
    defer_loading: NotRequired[bool]
    input_examples: NotRequired[list[Annotated[dict[str, Any], _an_object()]]]
    allowed_callers: NotRequired[Annotated[list[Annotated[Literal[TOOL_CALLERS], _one_error(f"Input should be {', '.join(map(repr, TOOL_CALLERS))}")]],
                                           AfterValidator(_direct)]]
    cache_control: NotRequired[CacheControlParam | None]


class ToolChoice(BaseModel):
    model_config = STRICT
    # A tool_choice with no valid type, or that is not an object at all, gets the same answer.
    type: Literal["auto", "any", "tool", "none"] = Field(None, validate_default=True)
    name: Any = None  # checked against the tools by parse_request
    disable_parallel_tool_use: bool = False


@with_config(STRICT)
class Metadata(TypedDict, total=False):
    user_id: str | None


def _stop_sequences(stops: list[str]) -> list[str]:
    if len(stops) > MAX_STOP_SEQUENCES:
        raise PydanticCustomError("too_long", f"at most {MAX_STOP_SEQUENCES} stop sequences are allowed")
    if not all(stops):
        raise PydanticCustomError("string_too_short", "each stop sequence must be a non-empty string")
    return stops


def _not_blank(model: str) -> str:
    if not model.strip():
        raise PydanticCustomError("string_too_short", "blank")
    return model


# The current API's fields that are accepted whatever their value: the ignored ones, and the unsupported
# ones (parse_request refuses those when they are not null, before the schema is applied).
_OtherFields = with_config(STRICT)(
    TypedDict("_OtherFields", dict.fromkeys(sorted(IGNORED_FIELDS | set(UNSUPPORTED_FIELDS)), Any), total=False))


@with_config(STRICT)
class CountTokensBody(_OtherFields):
    """A ``count_tokens`` body: a Messages body less max_tokens, the sampling fields, stream and metadata."""

    model: Annotated[str, AfterValidator(_not_blank), _one_error("Input should be a non-empty string")]
    messages: Annotated[list[Turn], Field(min_length=1, max_length=MAX_MESSAGES),
                        _root_words(list_type="Input should be a valid list, got {got}",
                                    too_short="at least one message is required",
                                    too_long=f"at most {MAX_MESSAGES} messages are allowed, got {{length}}")]
    system: NotRequired[_content(_text_only(TextBlock)) | None]
    tools: NotRequired[list[Annotated[ToolParam, _absent_as("name", None), _an_object("Input should be an object")]] | None]
    cache_control: NotRequired[CacheControlParam | None]
    tool_choice: NotRequired[Annotated[_as_sent(ToolChoice), BeforeValidator(lambda v: v if isinstance(v, dict) else {})] | None]


@with_config(STRICT)
class MessagesBody(CountTokensBody):
    max_tokens: Annotated[int, Field(ge=1)]
    stop_sequences: NotRequired[Annotated[list[str], _one_error("Input should be a list of strings"),
                                          AfterValidator(_stop_sequences)] | None]
    stream: NotRequired[bool | None]
    temperature: NotRequired[Annotated[float, Field(ge=0, le=1), _one_error("Input should be a number between 0 and 1")] | None]
    top_p: NotRequired[Annotated[float, Field(gt=0, le=1), _one_error("Input should be a number greater than 0 and at most 1")] | None]
    top_k: NotRequired[Annotated[int, Field(ge=0), _one_error("Input should be an integer greater than or equal to 0")] | None]
    # Any false value (null, 0, "", []) is no metadata.
    metadata: NotRequired[Annotated[Metadata, _an_object("Input should be an object"), BeforeValidator(lambda v: v or {})]]


_BODY = {False: TypeAdapter(MessagesBody), True: TypeAdapter(CountTokensBody)}
_TURNS = TypeAdapter(list[Turn])


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


def _path(loc: tuple) -> tuple:
    """An error's location as the API writes it: without the union tags."""
    return tuple(part for i, part in enumerate(loc)
                 if not (i >= 2 and isinstance(loc[i - 1], int) and loc[i - 2] in _TAGGED))


def _check_rank(path: tuple, kind: str, seen: dict) -> list[tuple]:
    """Sort key of an error at ``path``: level by level, the order in which the API checks. ``seen``:
    where each location first appears in pydantic's list of errors, which follows the schema's order."""
    key, pattern = [], ""
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


def _first_error(exc: ValidationError) -> tuple[tuple, APIError]:
    """The error the API reports first, and its path."""
    errors = [(_path(e["loc"]), e) for e in exc.errors(include_url=False)]
    seen: dict[tuple, int] = {}
    for n, (path, _) in enumerate(errors):
        for depth in range(1, len(path) + 1):
            seen.setdefault(path[:depth], n)
    path, error = min(errors, key=lambda pe: _check_rank(pe[0], pe[1]["type"], seen))
    return path, invalid(f"{'.'.join(map(str, path))}: {error['msg']}")


def _rules_before(body: dict, counting: bool, path: tuple) -> None:
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
            _turns(_TURNS.validate_python(turns), whole=False)
            return
        order = _CHECK_ORDER[""]
        if field not in order or order.index(field) <= order.index("messages"):
            return
        b = _BODY[counting].validate_python({k: v for k, v in body.items() if k not in order or order.index(k) < order.index(field)})
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

def _turn_text(blocks: list[dict]) -> tuple[str, list[str], list[str]]:
    """A turn's content as the model reads it, plus the tool_use ids and tool_result ids it holds.

    tool_use blocks (assistant turns) and tool_result blocks (user turns) are written into the
    text with the bundled model's tool format (``explainer.lifecycle.tool_format``).
    """
    parts, uses, results = [], [], []
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


def _marks(blocks: list[dict] | None, where: str) -> list[tuple[str, str]]:
    """(path, ttl) of each block that carries a cache_control."""
    return [(f"{where}.{i}", b["cache_control"].get("ttl", "5m")) for i, b in enumerate(blocks or ()) if b.get("cache_control")]


def _turns(turns: list[dict], whole: bool = True) -> tuple[list[Message], list[tuple[int, str, str]]]:
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


def _tools(tools: list[dict]) -> tuple[list[dict], set[str]]:
    """The tools the model is shown, and the names of the deferred ones (``defer_loading: true``).

    A deferred tool is only loaded by a tool search tool, a server tool this server does not have:
    it is validated, then left out of the prompt, and it cannot be called.
    """
    names: set[str] = set()
    out, deferred = [], set()
    for i, t in enumerate(tools):
        if t["name"] in names:
            raise invalid(f"tools.{i}.name: tool names must be unique ({t['name']!r} appears twice)")
        names.add(t["name"])
        if t.get("input_examples"):
            from jsonschema import Draft202012Validator  # lazily, as in _json_schema

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


def _breakpoints(body: dict, tools: list[dict], system: str | None, marks: list, last_turn: int) -> tuple[CacheBreakpoint, ...]:
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


def _tool_choice(choice: dict | None, tools: list[dict], deferred: set[str]) -> dict:
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
        raise invalid(f"The request body must be a JSON object, got {_type_name(body)}")
    for name, why in UNSUPPORTED_FIELDS.items():
        if body.get(name) is not None:
            raise invalid(f"{name}: {why}")
    try:
        b = _BODY[counting].validate_python(body)
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
