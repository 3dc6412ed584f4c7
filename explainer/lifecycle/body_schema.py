"""The Messages API body's schema, in pydantic, with the API's own wording for its errors.

:class:`MessagesBody` and :class:`CountTokensBody`, and the turns, blocks and tools they hold, check
every field's presence and type, so the messages are the API's own (``messages.0.content: Field
required``, ``max_tokens: Input should be a valid integer``), each naming the field it is about.
Where the API words an error its own way, the schema says so next to the field
(:func:`_one_error`, :func:`_root_words`, :func:`_an_object`). Which of the errors found is
reported, and the rules that relate one part of a body to another, are ``payload.py``'s.
"""
from __future__ import annotations

from typing import (
    TYPE_CHECKING,
    Annotated,
    Any,
    Literal,
    NotRequired,
    get_args,
)

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PlainValidator,
    Tag,
    TypeAdapter,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    with_config,
)
from pydantic_core import PydanticCustomError
from typing_extensions import TypedDict  # pydantic needs typing_extensions' TypedDict before Python 3.12

MAX_MESSAGES = 100_000
MAX_STOP_SEQUENCES = 8

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


def type_name(v: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(type(v), type(v).__name__)


# ---- the API's wording, where it is not pydantic's ------------------------------------------------------

def _one_error(message: str, unless_at: str | None = None) -> WrapValidator:
    """Any error of this value reported as one, in the API's words (``{got}``: the JSON type sent,
    ``{value}``: its repr). Errors that are all inside ``unless_at`` keep their own words and paths."""
    def wrap(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(value)
        except ValidationError as exc:
            if unless_at is not None and all(e["loc"][:1] == (unless_at,) for e in exc.errors()):
                raise
            context: dict[str, Any] = {"got": type_name(value)}
            if "{value}" in message:
                context["value"] = repr(value)
            raise PydanticCustomError("invalid_value", message, context) from None
    return WrapValidator(wrap)


def _root_words(**words: str) -> WrapValidator:
    """The API's words for an error of the value itself, by pydantic error type (``{got}``: the JSON
    type sent, ``{length}``: a list's length); errors inside it keep their own."""
    def wrap(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(value)
        except ValidationError as exc:
            error = exc.errors()[0] if exc.error_count() == 1 else None
            if error is None or error["loc"] or error["type"] not in words:
                raise
            length = len(value) if isinstance(value, list) else 0
            raise PydanticCustomError(error["type"], words[error["type"]], {"got": type_name(value), "length": length}) from None
    return WrapValidator(wrap)


OBJECT = "Input should be an object, got {got}"
WRONG_TYPE = "Input has the wrong type"
REQUIRED = "Field required"


def _an_object(message: str = OBJECT) -> BeforeValidator:
    """Anything but a JSON object is refused in the API's words, before the schema looks inside."""
    def check(value: Any) -> Any:
        if not isinstance(value, dict):
            raise PydanticCustomError("object_type", message, {"got": type_name(value)})
        return value
    return BeforeValidator(check)


def _as_sent(schema: Any) -> PlainValidator:
    """Checked against ``schema``, but kept as the dict that was sent (its key order and all)."""
    adapter: TypeAdapter[Any] = TypeAdapter(schema)

    def check(value: Any) -> Any:
        adapter.validate_python(value)
        return value
    return PlainValidator(check)


def _absent_as(key: str, value: Any) -> BeforeValidator:
    """A missing ``key`` is checked as if it were ``value``: for the fields whose absence the API words as a wrong value."""
    return BeforeValidator(lambda obj: obj if key in obj else {key: value, **obj})


def _refused(message: str) -> AfterValidator:
    """For a union member that takes no block: a block of this type is refused here with ``message`` (``{kind}``: its type)."""
    def refuse(block: dict[str, Any]) -> None:
        raise PydanticCustomError("block_refused", message, {"kind": str(block["type"])})
    return AfterValidator(refuse)


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
                                  {"got": type_name(value)})
    return value


def _by_type(tags: dict[str, str]) -> Discriminator:
    """Pick a block's union member by its ``type`` (any other type, or none: ``unknown``)."""
    def tag(block: dict[str, Any]) -> str:
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
_NOT_HERE = Annotated[Any, _refused("content blocks of type '{kind}' are not supported here by the bundled model")]
_NOT_SUPPORTED = dict.fromkeys(UNSUPPORTED_BLOCKS, "unsupported")
# The content of system and of a tool_result: text blocks only. The text block itself is a member, so it is
# written out for each (a type cannot be made by a function call where the type checker can read it).
_TEXT_ONLY = _by_type({"text": "text", **_NOT_SUPPORTED, "tool_use": "unsupported", "tool_result": "unsupported"})
_NestedBlock = Annotated[Annotated[_NestedTextBlock, Tag("text")] | Annotated[_UnknownBlock, Tag("unknown")]
                         | Annotated[_NOT_HERE, Tag("unsupported")], _TEXT_ONLY]
_SystemBlock = Annotated[Annotated[TextBlock, Tag("text")] | Annotated[_UnknownBlock, Tag("unknown")]
                         | Annotated[_NOT_HERE, Tag("unsupported")], _TEXT_ONLY]
# Content: a string (one text block) or a list of content blocks, each of them an object.
_CONTENT = BeforeValidator(_blocks)


@with_config(LENIENT)
class ToolResultBlock(TypedDict):
    type: Literal["tool_result"]
    tool_use_id: Annotated[str, _one_error(REQUIRED)]  # the API's words for a tool_use_id that is not a string
    content: NotRequired[Annotated[list[Annotated[_NestedBlock, _an_object()]], _CONTENT]]
    is_error: NotRequired[bool]
    cache_control: NotRequired[CacheControlParam | None]


UserBlock = Annotated[Annotated[TextBlock, Tag("text")] | Annotated[ToolResultBlock, Tag("tool_result")]
                      | Annotated[Any, _refused("tool_use blocks may only appear in assistant turns"), Tag("tool_use")]
                      | Annotated[_UnknownBlock, Tag("unknown")] | Annotated[_NOT_HERE, Tag("unsupported")],
                      _by_type({"text": "text", "tool_result": "tool_result", "tool_use": "tool_use", **_NOT_SUPPORTED})]
AssistantBlock = Annotated[Annotated[TextBlock, Tag("text")] | Annotated[ToolUseBlock, Tag("tool_use")]
                           | Annotated[Any, _refused("tool_result blocks may only appear in user turns"), Tag("tool_result")]
                           | Annotated[_UnknownBlock, Tag("unknown")] | Annotated[_NOT_HERE, Tag("unsupported")],
                           _by_type({"text": "text", "tool_use": "tool_use", "tool_result": "tool_result", **_NOT_SUPPORTED})]


@with_config(STRICT)
class UserTurn(TypedDict):
    role: Literal["user"]
    content: Annotated[list[Annotated[UserBlock, _an_object()]], _CONTENT]


@with_config(STRICT)
class AssistantTurn(TypedDict):
    role: Literal["assistant"]
    content: Annotated[list[Annotated[AssistantBlock, _an_object()]], _CONTENT]


@with_config(STRICT)
class _OtherTurn(TypedDict):
    role: Literal["user", "assistant"]  # never matches: the turn's role is neither
    content: Any


def _role(turn: dict[str, Any]) -> str:
    role = turn.get("role")
    return role if isinstance(role, str) and role in ("user", "assistant") else "other"


Turn = Annotated[Annotated[UserTurn, Tag("user")] | Annotated[AssistantTurn, Tag("assistant")]
                 | Annotated[_OtherTurn, Tag("other")],
                 Discriminator(_role), _an_object()]


@with_config(ConfigDict(strict=True, extra="allow"))
class _ObjectSchema(TypedDict):
    type: Literal["object"]


def json_schema(schema: dict[str, Any]) -> dict[str, Any]:
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
ToolCaller = Literal["direct", "code_execution_20250825", "code_execution_20260120", "code_execution_20260521"]
TOOL_CALLERS = get_args(ToolCaller)
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
    input_schema: Annotated[dict[Any, Any], _as_sent(Annotated[_ObjectSchema, _absent_as("type", None)]),
                            _an_object(REQUIRED), AfterValidator(json_schema)]
    strict: NotRequired[bool]
    eager_input_streaming: NotRequired[bool | None]
    defer_loading: NotRequired[bool]
    input_examples: NotRequired[list[Annotated[dict[str, Any], _an_object()]]]
    allowed_callers: NotRequired[Annotated[list[Annotated[ToolCaller, _one_error(f"Input should be {', '.join(map(repr, TOOL_CALLERS))}")]],
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
# ones (parse_request refuses those when they are not null, before the schema is applied). Built from the
# two lists, which the type checker cannot read: to it, the fields are not declared (nothing reads them).
if TYPE_CHECKING:
    class _OtherFields(TypedDict, total=False):
        pass
else:
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
    system: NotRequired[Annotated[list[Annotated[_SystemBlock, _an_object()]], _CONTENT] | None]
    tools: NotRequired[list[Annotated[ToolParam, _absent_as("name", None), _an_object("Input should be an object")]] | None]
    cache_control: NotRequired[CacheControlParam | None]
    tool_choice: NotRequired[Annotated[dict[Any, Any], _as_sent(ToolChoice),
                                       BeforeValidator(lambda v: v if isinstance(v, dict) else {})] | None]


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


# (a validated body is the dict that was sent, read by payload.py as one)
BODY: dict[bool, TypeAdapter[Any]] = {False: TypeAdapter(MessagesBody), True: TypeAdapter(CountTokensBody)}
TURNS = TypeAdapter(list[Turn])
