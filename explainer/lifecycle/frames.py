"""The event protocol, declared once: the engine's events, the explainer's frames, and the frames
of the two sockets (``ws/stream/`` and ``ws/rooms/<code>/``).

Every frame is a JSON object whose ``type`` names it. The names are the constants below; the
shapes are the TypedDicts. Python builds a frame by calling its TypedDict (a plain dict comes out,
keys in the order given, so what goes on the wire is what it always was) and tells frames apart by
comparing ``frame["type"]`` with a constant, never with a string typed again.

The JavaScript reads the same declarations as a JSON Schema, generated from them by pydantic and
committed at ``static/schema/frames.json`` (``python -m explainer.lifecycle.frames`` writes it again;
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

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, Literal, NotRequired

from pydantic import ConfigDict, TypeAdapter, with_config
from pydantic.json_schema import SkipJsonSchema

# typing_extensions' TypedDict, not typing's: pydantic reads that one only from Python 3.12 on
from typing_extensions import TypedDict

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "static" / "schema" / "frames.json"

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
ROOM_ENDED: Final = "room.ended"
ROOM_INTERRUPTED: Final = "room.interrupted"

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
PRESENTER_COMMANDS: Final = (STATE, RUN, PAUSE, PLAY, STEP, PACE, GUESS, REVEAL, STOP, END)

# Messages between the sockets of one room, through the channel layer: never sent to a browser
# (Channels calls the consumer's method of the same name, dots as underscores).
ROOM_FRAME: Final = "room.frame"  # a room frame for the receiving sockets to pass on, as JSON text
PRESENCE: Final = "presence"  # a student joined, renamed or left
PRESENCE_QUERY: Final = "presence.query"  # a presenter asks who is here
GUESS_IN: Final = "guess.in"  # a student's guess, for the presenters


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

_CLOSED = ConfigDict(extra="forbid")


@with_config(_CLOSED)
class CacheCreation(TypedDict):
    """The tokens written to the cache, by lifetime."""
    ephemeral_5m_input_tokens: int
    ephemeral_1h_input_tokens: int


@with_config(_CLOSED)
class Usage(TypedDict):
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int
    cache_read_input_tokens: int
    cache_creation: NotRequired[CacheCreation]  # with cache breakpoints


@with_config(_CLOSED)
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


@with_config(_CLOSED)
class MessageStart(TypedDict):
    type: Literal["message_start"]
    message: Message


@with_config(_CLOSED)
class TextBlock(TypedDict):
    type: Literal["text"]
    text: str


@with_config(_CLOSED)
class ToolUseBlock(TypedDict):
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any]


@with_config(_CLOSED)
class ContentBlockStart(TypedDict):
    type: Literal["content_block_start"]
    index: int
    content_block: TextBlock | ToolUseBlock


@with_config(_CLOSED)
class Ping(TypedDict):
    type: Literal["ping"]


@with_config(_CLOSED)
class TextDelta(TypedDict):
    type: Literal["text_delta"]
    text: str


@with_config(_CLOSED)
class InputJsonDelta(TypedDict):
    type: Literal["input_json_delta"]
    partial_json: str


@with_config(_CLOSED)
class ContentBlockDelta(TypedDict):
    type: Literal["content_block_delta"]
    index: int
    delta: TextDelta | InputJsonDelta


@with_config(_CLOSED)
class ContentBlockStop(TypedDict):
    type: Literal["content_block_stop"]
    index: int


@with_config(_CLOSED)
class StopDelta(TypedDict):
    stop_reason: str | None
    stop_sequence: str | None


@with_config(_CLOSED)
class MessageDelta(TypedDict):
    """The usage is the request's cumulative usage, as the live API sends it."""
    type: Literal["message_delta"]
    delta: StopDelta
    usage: Usage


@with_config(_CLOSED)
class MessageStop(TypedDict):
    type: Literal["message_stop"]


@with_config(_CLOSED)
class ErrorDetail(TypedDict):
    type: str  # invalid_request_error, rate_limit_error, overloaded_error, ...
    message: str


@with_config(_CLOSED)
class Error(TypedDict):
    """The API's error envelope. ``request_id`` in an HTTP stream; ``retry_after`` (seconds) on a socket,
    which has no headers; ``frame`` names the room frame a refusal answers (``nickname``)."""
    type: Literal["error"]
    error: ErrorDetail
    request_id: NotRequired[str]
    retry_after: NotRequired[int]
    frame: NotRequired[str]


# -- the explainer's frames

@with_config(_CLOSED)
class PromptToken(TypedDict):
    id: int
    text: str


@with_config(_CLOSED)
class ServedModel(TypedDict):
    requested: str  # the name the request gave
    served_by: str  # the model that really ran
    parameters: int


@with_config(_CLOSED)
class CacheBreakpoint(TypedDict):
    length: int
    ttl: str
    outcome: str


@with_config(_CLOSED)
class CacheUse(TypedDict):
    read: int
    written: int
    breakpoints: list[CacheBreakpoint]


@with_config(_CLOSED)
class Prompt(TypedDict):
    type: Literal["explainer.prompt"]
    input_tokens: int
    context_window: int
    tokens: list[PromptToken]
    model: ServedModel
    cache: CacheUse | None


@with_config(_CLOSED)
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


@with_config(_CLOSED)
class BannedWord(TypedDict):
    token: int
    text: str
    word: str
    probability: float


@with_config(_CLOSED)
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


@with_config(_CLOSED)
class Timings(TypedDict):
    prefill_ms: float
    prefill_tokens: int
    time_to_first_token_ms: float
    decode_ms: float
    tokens_per_second: float | None
    total_ms: float


@with_config(_CLOSED)
class Done(TypedDict):
    type: Literal["explainer.done"]
    usage: Usage
    stop_reason: str | None
    timings: Timings


@with_config(_CLOSED)
class SocketLimits(TypedDict):
    max_frame_bytes: int
    frames_per_10s: int
    max_pace_ms: NotRequired[int]  # a presenter's


@with_config(_CLOSED)
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


@with_config(_CLOSED)
class Cancel(TypedDict):
    type: Literal["cancel"]


@with_config(_CLOSED)
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

# -- ws/rooms/<code>/ to the browser. A broadcast frame (room.state, room.run, room.token, room.guess,
# room.reveal, room.ended) carries ``seq`` (consecutive per presenter connection) and ``src`` (that
# connection); the copies of them that room.catchup carries do not.


@with_config(_CLOSED)
class StageState(TypedDict):
    slug: str
    href: str
    title: str
    number: int | None  # its number in the one list of stages (Compose is 1); None for the overview, the start


@with_config(_CLOSED)
class RoomHello(TypedDict):
    """On connect (role ``student``), and to a socket that proved the room's secret (``presenter``,
    with its pace)."""
    type: Literal["room.hello"]
    role: Literal["student", "presenter"]
    code: str
    state: StageState
    limits: SocketLimits
    pace_ms: NotRequired[int]


@with_config(_CLOSED)
class RoomState(TypedDict):
    type: Literal["room.state"]
    state: StageState
    seq: NotRequired[int]
    src: NotRequired[str]


@with_config(_CLOSED)
class RoomRunStart(TypedDict):
    type: Literal["room.run"]
    phase: Literal["start"]
    run_id: str
    input_tokens: int
    max_tokens: int
    prompt: str
    mode: Literal["play", "pause"]
    pace_ms: int
    model: str
    seq: NotRequired[int]
    src: NotRequired[str]


@with_config(_CLOSED)
class RoomRunEnd(TypedDict):
    """The run ended: with its stop reason and usage, stopped by the presenter (``stopped``), or failed."""
    type: Literal["room.run"]
    phase: Literal["end"]
    run_id: str
    stop_reason: NotRequired[str | None]
    usage: NotRequired[Usage]
    error: NotRequired[ErrorDetail]
    seq: NotRequired[int]
    src: NotRequired[str]


@with_config(_CLOSED)
class RoomCandidate(TypedDict):
    token: int
    text: str
    p: float


@with_config(_CLOSED)
class RoomToken(TypedDict):
    """``t``: when the token was let go (wall-clock seconds)."""
    type: Literal["room.token"]
    run_id: str
    index: int
    token: int
    text: str
    piece: str
    t: float
    candidates: list[RoomCandidate]
    seq: NotRequired[int]
    src: NotRequired[str]


@with_config(_CLOSED)
class RoomReady(TypedDict):
    """To the presenter running the run: the next token is ready (a guess can open now)."""
    type: Literal["room.ready"]
    index: int


@with_config(_CLOSED)
class RoomGuess(TypedDict):
    type: Literal["room.guess"]
    index: int
    choices: list[str]
    seq: NotRequired[int]
    src: NotRequired[str]


@with_config(_CLOSED)
class Bar(TypedDict):
    """A bar of the class's guesses; ``text`` null sums the guesses past the shown ones."""
    text: str | None
    count: int


@with_config(_CLOSED)
class ModelBar(TypedDict):
    text: str
    p: float


@with_config(_CLOSED)
class Drawn(TypedDict):
    text: str
    token: int
    p: float | None


@with_config(_CLOSED)
class RoomReveal(TypedDict):
    type: Literal["room.reveal"]
    index: int
    guesses: list[Bar]
    total: int
    right: int
    model: list[ModelBar]
    drawn: Drawn
    seq: NotRequired[int]
    src: NotRequired[str]


@with_config(_CLOSED)
class CatchupToken(TypedDict):
    index: int
    piece: str


@with_config(_CLOSED)
class RoomCatchup(TypedDict):
    """To a student who joins during a run: the run so far (its start, its tokens, the last one, the open
    guess or the last reveal, its end)."""
    type: Literal["room.catchup"]
    run: RoomRunStart
    tokens: list[CatchupToken]
    last: RoomToken | None
    guess: RoomGuess | None
    reveal: RoomReveal | None
    end: RoomRunEnd | None


@with_config(_CLOSED)
class RoomGuessed(TypedDict):
    type: Literal["room.guessed"]
    index: int
    text: str


@with_config(_CLOSED)
class RoomMode(TypedDict):
    type: Literal["room.mode"]
    mode: Literal["play", "pause"]
    pace_ms: int


@with_config(_CLOSED)
class RoomStudents(TypedDict):
    type: Literal["room.students"]
    count: int
    names: list[str]
    more: int  # named students not listed
    unnamed: int


@with_config(_CLOSED)
class RoomTally(TypedDict):
    type: Literal["room.tally"]
    index: int
    guesses: list[Bar]
    total: int


@with_config(_CLOSED)
class RoomAnswers(TypedDict):
    type: Literal["room.answers"]
    index: int
    answered: int
    connected: int


@with_config(_CLOSED)
class RoomNickname(TypedDict):
    type: Literal["room.nickname"]
    name: str | None


@with_config(_CLOSED)
class RoomEnded(TypedDict):
    type: Literal["room.ended"]
    seq: NotRequired[int]
    src: NotRequired[str]


@with_config(_CLOSED)
class RoomInterrupted(TypedDict):
    """The channel layer (Redis) is unreachable; the socket closes (4503), the client reconnects later."""
    type: Literal["room.interrupted"]
    message: str
    retry_after: int


RoomRun = RoomRunStart | RoomRunEnd
RoomFrame = (RoomHello | RoomState | RoomRunStart | RoomRunEnd | RoomToken | RoomReady | RoomGuess | RoomReveal
             | RoomCatchup | RoomGuessed | RoomMode | RoomStudents | RoomTally | RoomAnswers | RoomNickname | RoomEnded
             | RoomInterrupted | Error)

# -- ws/rooms/<code>/ from the browser (the consumer checks each field and says what is wrong)


@with_config(_CLOSED)
class Auth(TypedDict):
    type: Literal["auth"]
    secret: str


@with_config(_CLOSED)
class ShowState(TypedDict):
    type: Literal["state"]
    href: str


@with_config(_CLOSED)
class StartRun(TypedDict):
    type: Literal["run"]
    pace_ms: NotRequired[int]
    mode: NotRequired[Literal["play", "pause"]]
    href: NotRequired[str]


@with_config(_CLOSED)
class Pace(TypedDict):
    type: Literal["pace"]
    pace_ms: int


@with_config(_CLOSED)
class Control(TypedDict):
    type: Literal["pause", "play", "step", "reveal", "stop", "end"]


@with_config(_CLOSED)
class Guess(TypedDict):
    """A presenter's opens a guess; a student's carries the guess."""
    type: Literal["guess"]
    text: NotRequired[str]


@with_config(_CLOSED)
class Nickname(TypedDict):
    type: Literal["nickname"]
    name: str | None


RoomCommand = Auth | ShowState | StartRun | Pace | Control | Guess | Nickname

# ---- the JSON Schema ---------------------------------------------------------------------------------

ROOTS: Final[dict[str, Any]] = {"EngineEvent": EngineEvent, "StreamFrame": StreamFrame, "StreamCommand": StreamCommand,
                "RoomFrame": RoomFrame, "RoomCommand": RoomCommand}
_REF: Final = "#/$defs/{model}"


def json_schema() -> dict[str, Any]:
    """The JSON Schema of every frame: each TypedDict under ``$defs`` by its name, the five roots
    (``ROOTS``) beside them, and the document itself any frame of any root."""
    defs: dict[str, Any] = {}
    for name, tp in ROOTS.items():
        schema = TypeAdapter(tp).json_schema(ref_template=_REF)
        defs.update(schema.pop("$defs", {}))
        defs[name] = schema
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Lifecycle Explainer frames",
        "description": "Generated from explainer/lifecycle/frames.py by `python -m explainer.lifecycle.frames`; do not edit.",
        "anyOf": [{"$ref": _REF.format(model=name)} for name in ROOTS],
        "$defs": dict(sorted(defs.items())),
    }


def schema_text() -> str:
    """The committed file's text: the schema as indented JSON, one trailing newline."""
    return json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m explainer.lifecycle.frames",
                                     description="Write the frames' JSON Schema (or check it is up to date).")
    parser.add_argument("--check", action="store_true", help="exit 1 when the committed file differs")
    parser.add_argument("--path", type=Path, default=SCHEMA_PATH)
    args = parser.parse_args(argv)
    text = schema_text()
    if args.check:
        same = args.path.exists() and args.path.read_text(encoding="utf-8") == text
        print(f"{args.path}: {'up to date' if same else 'out of date: run python -m explainer.lifecycle.frames'}")
        return 0 if same else 1
    args.path.parent.mkdir(parents=True, exist_ok=True)
    args.path.write_text(text, encoding="utf-8")
    print(f"wrote {args.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
