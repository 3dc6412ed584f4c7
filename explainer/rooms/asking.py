""""Everyone asks" (issue 23, item 4), without the sockets: a round's questions and what the projector may show.

A round goes: the presenter opens it (every phone shows a question box), each student sends one question
(checked as a nickname is, rooms.clean_question), the presenter sends them all to the model at once, each
student's own socket runs its request and streams the reply to that phone only, and the presenter's screen
shows the questions (minus those it hid) and the scheduler's record of the class's requests sharing the
model's decode steps. :class:`AskRound` holds a presenter's round, :class:`MyQuestion` a student's question;
RoomSession (session.py) turns them into frames, and :func:`timeline` cuts the scheduler's record down to
what the projector may show. Nothing here touches a socket, the engine or Django.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from explainer.lifecycle import frames as fr
from explainer.lifecycle import room_frames as rf
from explainer.lifecycle.frames import ErrorDetail

MAX_QUESTION_CHARS = 160  # a question a phone can type and a projector can show in two lines
MAX_QUESTIONS = 40      # questions in one round: a large class; past MAX_BATCH rows the scheduler decodes them in turns
ASK_MAX_TOKENS = 48     # each reply's max_tokens: a few seconds of everyone's phones streaming
MANY_QUESTIONS = 12     # from this many questions on, the presenter's list is sent at most every QUESTIONS_DELAY_S
QUESTIONS_DELAY_S = 0.2
TIMELINE_EVERY_S = 0.3  # the projector's timeline is redrawn this often while replies stream
MAX_TIMELINE_STEPS = 800  # the latest steps of a round that a timeline frame carries (48 tokens each: plenty)
MAX_OTHER_REQUESTS = 64   # other users' requests that shared the class's steps, shown without any text

# why a reply ended (``ask.done``) -> the question's status on the presenter's screen
ENDED = {"done": "done", "busy": "busy", "failed": "failed"}


@dataclass
class Asked:
    """A question on the presenter's side."""
    qid: int
    ch: str        # the student's socket (its channel name) when it asked
    sid: str       # the student (the same after a reconnection)
    name: str | None
    text: str
    status: str = "waiting"
    tokens: int = 0
    hidden: bool = False

    def row(self) -> rf.AskQuestion:
        return rf.AskQuestion(qid=self.qid, name=self.name, text=self.text, status=self.status, tokens=self.tokens)


@dataclass
class AskRound:
    """A presenter's round: open for questions, then sent (the replies stream), or closed."""
    round: int
    phase: str = "open"  # open, sent, closed
    questions: dict[int, Asked] = field(default_factory=dict)
    by_sid: dict[str, int] = field(default_factory=dict)
    unsent: bool = False  # the presenter's list changed since it was last sent
    t0: float | None = None  # when it was sent, in the scheduler's seconds (its record is read from there)

    @property
    def answering(self) -> bool:
        return self.phase == "sent" and any(q.status == "answering" for q in self.questions.values())

    def names(self) -> dict[int, str]:
        """Each question's name on the timeline: its number and the asker's nickname, never the question's text
        (a hidden question is only its number)."""
        return {q.qid: f"Q{q.qid}" if q.hidden or not q.name else f"Q{q.qid} · {q.name}" for q in self.questions.values()}


@dataclass
class MyQuestion:
    """A student's question for a round: taken (``qid``, ``label``) once a presenter accepted it."""
    round: int
    text: str
    qid: int | None = None
    label: str = ""
    started: bool = False


def label(prefix: str, round_: int, qid: int) -> str:
    """A question's name in the model scheduler's record: ``<prefix>:<round>:<qid>`` (the prefix names the room
    and the presenter's connection, so two rooms, or two presenter connections, never mix their rows).

    >>> label("room:ABC234:9f3e", 2, 7)
    'room:ABC234:9f3e:2:7'
    """
    return f"{prefix}:{round_}:{qid}"


def _qid_of(lbl: str, prefix: str) -> int | None:
    if not lbl.startswith(prefix):
        return None
    tail = lbl[len(prefix):]
    return int(tail) if tail.isdigit() else None


def timeline(record: dict, prefix: str, rnd: AskRound, done: bool) -> rf.RoomTimeline:
    """What the projector shows of the scheduler's ``record`` (``Scheduler.record(since=round's t0)``) for round
    ``rnd``: the steps that served one of its questions, its requests named by ``AskRound.names`` (by the
    scheduler's request id), and the other requests that shared those steps, anonymous. Times are seconds from
    the round's start. Every label is emptied: whatever other users called their requests never reaches a screen.
    """
    t0 = rnd.t0 or 0.0
    own = f"{prefix}:{rnd.round}:"
    names = rnd.names()
    mine: dict[int, int] = {}  # scheduler id -> qid
    for r in record["requests"]:
        qid = _qid_of(r["label"], own)
        if qid is not None and qid in rnd.questions:
            mine[r["id"]] = qid
    steps = [s for s in record["steps"] if any(i in mine for i in s["rows"])][-MAX_TIMELINE_STEPS:]
    shared = {i for s in steps for i in s["rows"]} - set(mine)
    others = sorted(shared)[:MAX_OTHER_REQUESTS]
    keep = set(mine) | set(others)

    def rel(t: float | None) -> float | None:
        return None if t is None else round(t - t0, 4)

    requests = [rf.TimelineRequest(id=r["id"], label="", prompt_tokens=r["prompt_tokens"], kv_reserved=r["kv_reserved"],
                                   queued=rel(r["queued"]), admitted=rel(r["admitted"]), first_step=rel(r["first_step"]),
                                   left=rel(r["left"]), tokens=r["tokens"], reason=r["reason"])
                for r in record["requests"] if r["id"] in keep]
    return rf.RoomTimeline(
        type=fr.ROOM_TIMELINE, round=rnd.round, done=done, max_batch=record["max_batch"],
        kv_budget_bytes=record["kv_budget_bytes"],
        steps=[rf.TimelineStep(index=s["index"], start=rel(s["start"]), end=rel(s["end"]),
                               rows=[i for i in s["rows"] if i in keep], kv_bytes=s["kv_bytes"]) for s in steps],
        requests=requests, highlight=sorted(mine), names={str(i): names[q] for i, q in mine.items()})


def busy_sentence() -> str:
    """What a phone says when the server is full (the API's 529, ``overloaded_error``)."""
    return ("The server is answering as many requests as it can hold right now (the API's 529, “overloaded”), "
            "so your question was not answered. Your teacher can run another round in a moment.")


def reply_error(error: dict) -> tuple[ErrorDetail, str]:
    """A run's error envelope as the phone's message, and the question's status for the presenter."""
    detail = error.get("error") or {}
    kind = detail.get("type", "api_error")
    if kind == "overloaded_error":
        return ErrorDetail(type=kind, message=busy_sentence()), "busy"
    return ErrorDetail(type=kind, message=detail.get("message") or "The reply failed on the server."), "failed"
