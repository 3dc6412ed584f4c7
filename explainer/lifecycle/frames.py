"""The event protocol, declared once: the engine's events, the explainer's frames, and the frames
of the two sockets (``ws/stream/`` and ``ws/rooms/<code>/``).

Every frame is a JSON object whose ``type`` names it. The names are the constants below; the
shapes are the TypedDicts. Python builds a frame by calling its TypedDict (a plain dict comes out,
keys in the order given, so what goes on the wire is what it always was) and tells frames apart by
comparing ``frame["type"]`` with a constant, never with a string typed again.

The shapes of a room's frames are ``room_frames.py``'s (their names are here, with every other).
The JavaScript reads the same declarations as a JSON Schema, generated from them by pydantic and
committed at ``static/schema/frames.json`` (``python -m explainer.lifecycle.frame_schema`` writes it again;
tests/test_frames.py fails when the file and the declarations disagree). Its ``$defs`` name every
frame and five roots: ``EngineEvent`` (what ``Engine.stream`` yields), ``StreamFrame`` and
``StreamCommand`` (``ws/stream/``: to the browser, from it), ``RoomFrame`` and ``RoomCommand``
(``ws/rooms/<code>/``). The tests validate the frames that sockets and browsers really receive
against it.

Example:
    >>> frame = ContentBlockStop(type=CONTENT_BLOCK_STOP, index=0)
    >>> frame
    {'type': 'content_block_stop', 'index': 0}
    >>> frame["type"] in API_EVENTS
    True
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Literal, NotRequired

from pydantic import ConfigDict, with_config
from pydantic.json_schema import SkipJsonSchema

# typing_extensions' TypedDict, not typing's: pydantic reads that one only from Python 3.12 on
from typing_extensions import TypedDict

# ---- the names -------------------------------------------------------------------------------------

# The Messages API's stream events, exactly as the API names them.
MESSAGE_START: Final = "message_start"
CONTENT_BLOCK_START: Final = "content_block_start"
PING: Final = "ping"
CONTENT_BLOCK_DELTA: Final = "content_block_delta"
CONTENT_BLOCK_STOP: Final = "content_block_stop"
MESSAGE_DELTA: Final = "message_delta"
MESSAGE_STOP: Final = "message_stop"
ERROR: Final = "error"  # the API's error envelope, as an event of a stream or a frame of a socket
# in the order they come (ping may come at any time); an error is reported on its own
API_EVENTS: Final = (MESSAGE_START, CONTENT_BLOCK_START, PING, CONTENT_BLOCK_DELTA, CONTENT_BLOCK_STOP,
                     MESSAGE_DELTA, MESSAGE_STOP)
# the message object (a reply, and what message_start opens), a content block's delta, and a content block
MESSAGE: Final = "message"
TEXT_DELTA: Final = "text_delta"
INPUT_JSON_DELTA: Final = "input_json_delta"
TEXT: Final = "text"
TOOL_USE: Final = "tool_use"

# The explainer's own frames, interleaved with the API's events; the HTTP API drops them.
EXPLAINER_PREFIX: Final = "explainer."
PROMPT: Final = "explainer.prompt"  # before message_start: the prompt's tokens, the model, the cache
TOKEN: Final = "explainer.token"  # before its delta: one sampled token with its candidates
DONE: Final = "explainer.done"  # after message_stop: usage, stop reason, timings
HELLO: Final = "explainer.hello"  # ws/stream/ on connect

# ws/stream/ from the browser (besides a Messages API body)
CANCEL: Final = "cancel"

# ws/rooms/<code>/ to the browser
ROOM_HELLO: Final = "room.hello"
ROOM_STATE: Final = "room.state"
ROOM_RUN: Final = "room.run"
ROOM_TOKEN: Final = "room.token"
ROOM_READY: Final = "room.ready"
ROOM_GUESS: Final = "room.guess"
ROOM_REVEAL: Final = "room.reveal"
ROOM_CATCHUP: Final = "room.catchup"
ROOM_GUESSED: Final = "room.guessed"
ROOM_MODE: Final = "room.mode"
ROOM_STUDENTS: Final = "room.students"
ROOM_TALLY: Final = "room.tally"
ROOM_ANSWERS: Final = "room.answers"
ROOM_NICKNAME: Final = "room.nickname"
ROOM_RESULT: Final = "room.result"  # to one student after a reveal: their own guess, whether it was right, their score
ROOM_SCORE: Final = "room.score"  # to the presenters: the class score, when the presenter turned it on
ROOM_ENDED: Final = "room.ended"
ROOM_INTERRUPTED: Final = "room.interrupted"
ROOM_ASK: Final = "room.ask"  # "Everyone asks": a round opened, its questions were sent to the model, or it closed
ROOM_ASKED: Final = "room.asked"  # to one student: the question the room took from them for this round
ROOM_REPLY: Final = "room.reply"  # to one student: their own reply (start, each token, end)
ROOM_QUESTIONS: Final = "room.questions"  # to the presenters: the round's questions that are not hidden
ROOM_TIMELINE: Final = "room.timeline"  # to the presenters: the scheduler's steps that served the class's requests

# ws/rooms/<code>/ from the browser: a presenter's commands, and a student's
AUTH: Final = "auth"
STATE: Final = "state"
RUN: Final = "run"
PAUSE: Final = "pause"
PLAY: Final = "play"
STEP: Final = "step"
PACE: Final = "pace"
GUESS: Final = "guess"  # a presenter's: open a guess; a student's (with text): the guess
REVEAL: Final = "reveal"
STOP: Final = "stop"
END: Final = "end"
NICKNAME: Final = "nickname"
SCORE: Final = "score"  # a presenter's: show the class score (on) or hide it
ASK: Final = "ask"  # a presenter's "Everyone asks": {"op": "open" | "send" | "close" | "hide", "qid"}
QUESTION: Final = "question"  # a student's question for the open round: {"text"}
PRESENTER_COMMANDS: Final = (STATE, RUN, PAUSE, PLAY, STEP, PACE, GUESS, REVEAL, STOP, END, SCORE)

# Messages between the sockets of one room, through the channel layer: never sent to a browser
# (Channels calls the consumer's method of the same name, dots as underscores).
ROOM_FRAME: Final = "room.frame"  # a room frame for the receiving sockets to pass on, as JSON text
PRESENCE: Final = "presence"  # a student joined, renamed or left
PRESENCE_QUERY: Final = "presence.query"  # a presenter asks who is here
GUESS_IN: Final = "guess.in"  # a student's guess, for the presenters
ASK_IN: Final = "ask.in"  # a student's checked question, for the presenters
ASK_TAKEN: Final = "ask.taken"  # a presenter took it: its number in the round, its label in the scheduler's record
ASK_REFUSED: Final = "ask.refused"  # a presenter refused it (the round is full, or not open now)
ASK_DONE: Final = "ask.done"  # a student's reply ended (or could not start), for the presenters


def is_explainer(frame: Mapping[str, Any]) -> bool:
    """Whether ``frame`` is one of the explainer's own frames (not the API's).

    >>> is_explainer({"type": TOKEN}), is_explainer({"type": PING})
    (True, False)
    """
    return str(frame["type"]).startswith(EXPLAINER_PREFIX)


# ---- the shapes -------------------------------------------------------------------------------------
#
# Closed objects (extra="forbid"): a field a frame gains is declared here first, or the schema's
# tests fail on the frames that carry it.

CLOSED = ConfigDict(extra="forbid")


@with_config(CLOSED)
class CacheCreation(TypedDict):
    """The tokens written to the cache, by lifetime."""
    ephemeral_5m_input_tokens: int
    ephemeral_1h_input_tokens: int


@with_config(CLOSED)
class Usage(TypedDict):
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int
    cache_read_input_tokens: int
    cache_creation: NotRequired[CacheCreation]  # with cache breakpoints


@with_config(CLOSED)
class Message(TypedDict):
    """The message as ``message_start`` opens it: no content yet."""
    id: str
    type: Literal["message"]
    role: Literal["assistant"]
    content: list[Any]
    model: str
    stop_reason: str | None
    stop_sequence: str | None
    usage: Usage


@with_config(CLOSED)
class MessageStart(TypedDict):
    type: Literal["message_start"]
    message: Message


@with_config(CLOSED)
class TextBlock(TypedDict):
    type: Literal["text"]
    text: str


@with_config(CLOSED)
class ToolUseBlock(TypedDict):
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any]


@with_config(CLOSED)
class ContentBlockStart(TypedDict):
    type: Literal["content_block_start"]
    index: int
    content_block: TextBlock | ToolUseBlock


@with_config(CLOSED)
class Ping(TypedDict):
    type: Literal["ping"]


@with_config(CLOSED)
class TextDelta(TypedDict):
    type: Literal["text_delta"]
    text: str


@with_config(CLOSED)
class InputJsonDelta(TypedDict):
    type: Literal["input_json_delta"]
    partial_json: str


@with_config(CLOSED)
class ContentBlockDelta(TypedDict):
    type: Literal["content_block_delta"]
    index: int
    delta: TextDelta | InputJsonDelta


@with_config(CLOSED)
class ContentBlockStop(TypedDict):
    type: Literal["content_block_stop"]
    index: int


@with_config(CLOSED)
class StopDelta(TypedDict):
    stop_reason: str | None
    stop_sequence: str | None


@with_config(CLOSED)
class MessageDelta(TypedDict):
    """The usage is the request's cumulative usage, as the live API sends it."""
    type: Literal["message_delta"]
    delta: StopDelta
    usage: Usage


@with_config(CLOSED)
class MessageStop(TypedDict):
    type: Literal["message_stop"]


@with_config(CLOSED)
class ErrorDetail(TypedDict):
    type: str  # invalid_request_error, rate_limit_error, overloaded_error, ...
    message: str


@with_config(CLOSED)
class Error(TypedDict):
    """The API's error envelope. ``request_id`` in an HTTP stream; ``retry_after`` (seconds) on a socket,
    which has no headers; ``frame`` names the room frame a refusal answers (``nickname``)."""
    type: Literal["error"]
    error: ErrorDetail
    request_id: NotRequired[str]
    retry_after: NotRequired[int]
    frame: NotRequired[str]


# -- the explainer's frames

@with_config(CLOSED)
class PromptToken(TypedDict):
    id: int
    text: str


@with_config(CLOSED)
class ServedModel(TypedDict):
    requested: str  # the name the request gave
    served_by: str  # the model that really ran
    parameters: int


@with_config(CLOSED)
class CacheBreakpoint(TypedDict):
    length: int
    ttl: str
    outcome: str


@with_config(CLOSED)
class CacheUse(TypedDict):
    read: int
    written: int
    breakpoints: list[CacheBreakpoint]


@with_config(CLOSED)
class Prompt(TypedDict):
    type: Literal["explainer.prompt"]
    input_tokens: int
    context_window: int
    tokens: list[PromptToken]
    model: ServedModel
    cache: CacheUse | None


@with_config(CLOSED)
class Candidate(TypedDict):
    """One of a step's top candidates (``explainer.llm.sampling.Candidate.to_dict`` and its text); a score
    the mask removed is null."""
    token: int
    logit: float | None
    scaled_logit: float | None
    probability: float
    kept: bool
    final_probability: float
    cumulative: float
    text: str


@with_config(CLOSED)
class BannedWord(TypedDict):
    token: int
    text: str
    word: str
    probability: float


@with_config(CLOSED)
class Token(TypedDict):
    """One sampled token. A constrained one (a tool's name or input) also says what the schema's mask did:
    the tokens it allowed, the probability it removed, and the distribution before it."""
    type: Literal["explainer.token"]
    index: int
    token: int
    text: str
    piece: str
    ms: float
    candidates: list[Candidate]
    banned_words: NotRequired[list[BannedWord]]
    constrained: NotRequired[Literal[True]]
    n_allowed: NotRequired[int]
    mass_removed: NotRequired[float]
    unconstrained: NotRequired[list[Candidate]]
    # for in-process callers only (stage pages redraw a step from them), never sent
    logits: NotRequired[SkipJsonSchema[Any]]
    word_ban: NotRequired[SkipJsonSchema[tuple[int, ...]]]


@with_config(CLOSED)
class Timings(TypedDict):
    prefill_ms: float
    prefill_tokens: int
    time_to_first_token_ms: float
    decode_ms: float
    tokens_per_second: float | None
    total_ms: float


@with_config(CLOSED)
class Done(TypedDict):
    type: Literal["explainer.done"]
    usage: Usage
    stop_reason: str | None
    timings: Timings


@with_config(CLOSED)
class SocketLimits(TypedDict):
    max_frame_bytes: int
    frames_per_10s: int
    max_pace_ms: NotRequired[int]  # a presenter's


@with_config(CLOSED)
class Hello(TypedDict):
    """``ws/stream/`` on connect: the model that answers by default, and the local ones a body may name."""
    type: Literal["explainer.hello"]
    default_model: str
    local_models: list[str]
    limits: SocketLimits


ApiEvent = MessageStart | ContentBlockStart | Ping | ContentBlockDelta | ContentBlockStop | MessageDelta | MessageStop
ExplainerFrame = Prompt | Token | Done
EngineEvent = ApiEvent | ExplainerFrame

# -- ws/stream/


@with_config(CLOSED)
class Cancel(TypedDict):
    type: Literal["cancel"]


@with_config(CLOSED)
class StreamOptions(TypedDict):
    seed: NotRequired[int]
    pace_ms: NotRequired[int]


@with_config(ConfigDict(extra="allow"))
class StreamRequest(TypedDict):
    """A Messages API body (explainer/lifecycle/payload.py checks it as the API does), with the app's own
    options beside it."""
    model: str
    max_tokens: int
    messages: list[Any]
    explainer: NotRequired[StreamOptions]


StreamFrame = Hello | EngineEvent | Error
StreamCommand = Cancel | StreamRequest
