"""The frames of a classroom room's socket (``ws/rooms/<code>/``), both ways, declared as ``frames.py``
declares the stream's: the names (``ROOM_*``) are ``frames.py``'s constants, the shapes are here.
"""
from __future__ import annotations

from typing import Literal, NotRequired

from pydantic import with_config

# typing_extensions' TypedDict, not typing's: pydantic reads that one only from Python 3.12 on
from typing_extensions import TypedDict

from explainer.lifecycle.frames import CLOSED, Error, ErrorDetail, SocketLimits, Usage

# -- ws/rooms/<code>/ to the browser. A broadcast frame (room.state, room.run, room.token, room.guess,
# room.reveal, room.ended) carries ``seq`` (consecutive per presenter connection) and ``src`` (that
# connection); the copies of them that room.catchup carries do not.


@with_config(CLOSED)
class StageState(TypedDict):
    slug: str
    href: str
    title: str
    number: int | None  # its number in the one list of stages (Compose is 1); None for the overview, the start


@with_config(CLOSED)
class RoomHello(TypedDict):
    """On connect (role ``student``), and to a socket that proved the room's secret (``presenter``,
    with its pace)."""
    type: Literal["room.hello"]
    role: Literal["student", "presenter"]
    code: str
    state: StageState
    limits: SocketLimits
    pace_ms: NotRequired[int]
    sid: NotRequired[str]  # a student's: who they are in this room's rounds, sent again on a reconnect (?sid=)


@with_config(CLOSED)
class RoomState(TypedDict):
    type: Literal["room.state"]
    state: StageState
    seq: NotRequired[int]
    src: NotRequired[str]


@with_config(CLOSED)
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


@with_config(CLOSED)
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


@with_config(CLOSED)
class RoomCandidate(TypedDict):
    token: int
    text: str
    p: float


@with_config(CLOSED)
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


@with_config(CLOSED)
class RoomReady(TypedDict):
    """To the presenter running the run: the next token is ready (a guess can open now)."""
    type: Literal["room.ready"]
    index: int


@with_config(CLOSED)
class RoomGuess(TypedDict):
    type: Literal["room.guess"]
    index: int
    choices: list[str]
    seconds: NotRequired[int]  # a countdown the presenter set: the reveal comes by itself after it (absent: untimed)
    seq: NotRequired[int]
    src: NotRequired[str]


@with_config(CLOSED)
class Bar(TypedDict):
    """A bar of the class's guesses; ``text`` null sums the guesses past the shown ones."""
    text: str | None
    count: int


@with_config(CLOSED)
class ModelBar(TypedDict):
    text: str
    p: float


@with_config(CLOSED)
class Drawn(TypedDict):
    text: str
    token: int
    p: float | None


@with_config(CLOSED)
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


@with_config(CLOSED)
class CatchupToken(TypedDict):
    index: int
    piece: str


@with_config(CLOSED)
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
    mine: NotRequired[str]  # a student who rejoins while a guess is open: the guess they had made


@with_config(CLOSED)
class RoomGuessed(TypedDict):
    type: Literal["room.guessed"]
    index: int
    text: str


@with_config(CLOSED)
class Score(TypedDict):
    """Right guesses over the rounds of this presenter's session (accuracy only: how fast never counts)."""
    right: int
    answered: int
    rounds: int


@with_config(CLOSED)
class RoomResult(TypedDict):
    """To each student after a reveal: their own guess (None: they did not answer) and whether it was right."""
    type: Literal["room.result"]
    index: int
    guess: str | None
    right: bool
    score: Score


@with_config(CLOSED)
class BoardRow(TypedDict):
    name: str
    right: int
    answered: int


@with_config(CLOSED)
class RoomScore(TypedDict):
    """To the presenters: the class's right guesses over the rounds, and (only when ``names`` is on) the
    nicknamed students' own counts, most right first. Anonymous students count in the class total only."""
    type: Literal["room.score"]
    on: bool
    names: bool
    rounds: int
    right: int
    answered: int
    board: list[BoardRow]


@with_config(CLOSED)
class RoomMode(TypedDict):
    type: Literal["room.mode"]
    mode: Literal["play", "pause"]
    pace_ms: int


@with_config(CLOSED)
class RoomStudents(TypedDict):
    type: Literal["room.students"]
    count: int
    names: list[str]
    more: int  # named students not listed
    unnamed: int


@with_config(CLOSED)
class RoomTally(TypedDict):
    type: Literal["room.tally"]
    index: int
    guesses: list[Bar]
    total: int


@with_config(CLOSED)
class RoomAnswers(TypedDict):
    type: Literal["room.answers"]
    index: int
    answered: int
    connected: int


@with_config(CLOSED)
class RoomNickname(TypedDict):
    type: Literal["room.nickname"]
    name: str | None


@with_config(CLOSED)
class RoomEnded(TypedDict):
    type: Literal["room.ended"]
    seq: NotRequired[int]
    src: NotRequired[str]


@with_config(CLOSED)
class RoomInterrupted(TypedDict):
    """The channel layer (Redis) is unreachable; the socket closes (4503), the client reconnects later."""
    type: Literal["room.interrupted"]
    message: str
    retry_after: int


# -- "Everyone asks" (issue 23, item 4): each student asks the model one question of their own; the presenter sends
# them all at once, each phone streams its own reply, and the projector shows the class's requests sharing the
# model's decode steps (explainer/rooms/asking.py).


@with_config(CLOSED)
class RoomAsk(TypedDict):
    """A round of "Everyone asks": ``open`` (phones show a question box of ``max_chars``), ``sent`` (the ``count`` questions went to the model together: each phone with one
    streams its reply) or ``closed``."""
    type: Literal["room.ask"]
    phase: Literal["open", "sent", "closed"]
    round: int
    max_chars: NotRequired[int]
    count: NotRequired[int]
    seq: NotRequired[int]
    src: NotRequired[str]


@with_config(CLOSED)
class RoomAsked(TypedDict):
    type: Literal["room.asked"]
    round: int
    text: str


@with_config(CLOSED)
class RoomReplyStart(TypedDict):
    type: Literal["room.reply"]
    phase: Literal["start"]
    round: int
    input_tokens: int
    model: str


@with_config(CLOSED)
class RoomReplyToken(TypedDict):
    type: Literal["room.reply"]
    phase: Literal["token"]
    round: int
    index: int
    piece: str


@with_config(CLOSED)
class RoomReplyEnd(TypedDict):
    """The reply ended (``stop_reason``, ``output_tokens``), or could not run (``error``: a full server is the
    API's ``overloaded_error``, its 529)."""
    type: Literal["room.reply"]
    phase: Literal["end"]
    round: int
    stop_reason: NotRequired[str | None]
    output_tokens: NotRequired[int]
    error: NotRequired[ErrorDetail]


@with_config(CLOSED)
class AskQuestion(TypedDict):
    """A question on the presenter's screen: who asked (a nickname, or None) and how its reply is doing."""
    qid: int
    name: str | None
    text: str
    status: Literal["waiting", "answering", "done", "left", "busy", "failed"]
    tokens: int


@with_config(CLOSED)
class RoomQuestions(TypedDict):
    """The round's questions for the presenter's (projected) screen. A question the presenter hid is never in
    it again: only counted in ``hidden``."""
    type: Literal["room.questions"]
    round: int
    phase: Literal["open", "sent", "closed"]
    questions: list[AskQuestion]
    hidden: int
    asked: int  # questions taken this round, hidden ones included
    answered: int  # of them, those whose reply ended well (hidden ones included)
    connected: int
    max_questions: int


@with_config(CLOSED)
class TimelineStep(TypedDict):
    """A decode step of the model's scheduler: when it ran (seconds from the round's start), the requests it served."""
    index: int
    start: float
    end: float
    rows: list[int]
    kv_bytes: int


@with_config(CLOSED)
class TimelineRequest(TypedDict):
    """A request in the scheduler's record (times in seconds from the round's start). The label is always empty:
    the class's requests are named in ``names``, and other users' are anonymous."""
    id: int
    label: str
    prompt_tokens: int
    kv_reserved: int
    queued: float
    admitted: float | None
    first_step: float | None
    left: float | None
    tokens: int
    reason: str | None


@with_config(CLOSED)
class RoomTimeline(TypedDict):
    """The Serving timeline of a round: the steps that served at least one of the class's requests, the class's
    requests (``highlight``, named in ``names`` by id) and any other request that shared those steps."""
    type: Literal["room.timeline"]
    round: int
    done: bool
    max_batch: int
    kv_budget_bytes: int | None
    steps: list[TimelineStep]
    requests: list[TimelineRequest]
    highlight: list[int]
    names: dict[str, str]


RoomRun = RoomRunStart | RoomRunEnd
RoomFrame = (RoomHello | RoomState | RoomRunStart | RoomRunEnd | RoomToken | RoomReady | RoomGuess | RoomReveal
             | RoomCatchup | RoomGuessed | RoomMode | RoomStudents | RoomTally | RoomAnswers | RoomNickname | RoomEnded
             | RoomInterrupted | RoomResult | RoomScore | RoomAsk | RoomAsked | RoomReplyStart | RoomReplyToken
             | RoomReplyEnd | RoomQuestions | RoomTimeline | Error)

# -- ws/rooms/<code>/ from the browser (the consumer checks each field and says what is wrong)


@with_config(CLOSED)
class Auth(TypedDict):
    type: Literal["auth"]
    secret: str


@with_config(CLOSED)
class ShowState(TypedDict):
    type: Literal["state"]
    href: str


@with_config(CLOSED)
class StartRun(TypedDict):
    type: Literal["run"]
    pace_ms: NotRequired[int]
    mode: NotRequired[Literal["play", "pause"]]
    href: NotRequired[str]


@with_config(CLOSED)
class Pace(TypedDict):
    type: Literal["pace"]
    pace_ms: int


@with_config(CLOSED)
class Control(TypedDict):
    type: Literal["pause", "play", "step", "reveal", "stop", "end"]


@with_config(CLOSED)
class Guess(TypedDict):
    """A presenter's opens a guess (with an optional countdown of ``seconds``); a student's carries the guess."""
    type: Literal["guess"]
    text: NotRequired[str]
    seconds: NotRequired[int]


@with_config(CLOSED)
class ScoreCommand(TypedDict):
    """A presenter shows the class score (``on``), and the nicknames beside it (``names``), or hides them."""
    type: Literal["score"]
    on: bool
    names: NotRequired[bool]


@with_config(CLOSED)
class Nickname(TypedDict):
    type: Literal["nickname"]
    name: str | None


@with_config(CLOSED)
class AskCommand(TypedDict):
    """A presenter's "Everyone asks": open a round, send its questions to the model, close it, or hide question ``qid``
    from the projector."""
    type: Literal["ask"]
    op: Literal["open", "send", "close", "hide"]
    qid: NotRequired[int]


@with_config(CLOSED)
class Question(TypedDict):
    """A student's question for the open round."""
    type: Literal["question"]
    text: str


RoomCommand = Auth | ShowState | StartRun | Pace | Control | Guess | Nickname | ScoreCommand | AskCommand | Question
