"""A classroom room's rules, without the sockets: what one socket of ``ws/rooms/<code>/`` knows and
decides (the frames themselves are listed in consumers.py's docstring).

Every socket starts as a student; one that proves the room's secret becomes a presenter. A
:class:`RoomSession` holds both sides:

- a student's: the step a guess is open for (from the room's frames it hears), its nickname and
  how often it changed;
- a presenter's: who is here (students' channels and nicknames), the run (pacing: play or pause,
  pace, a step, the generated token held until it may go), the guess round (the candidates, each
  student's guess, the tally and how many of those here have answered), the frames' ``seq`` and
  ``src``, and what a student who joins in the middle of a run needs to catch up.

It touches no socket, no channel layer, no database and no Django: each method takes what happened
(a frame from the client, a message from another socket of the room, an engine event, the time)
and returns what to send as :class:`Out` values, or raises :class:`APIError` for the client.
``RoomConsumer`` (consumers.py) does the rest: who is who, the database, the channel layer, the
engine's task and the waiting. tests/test_room_session.py checks the rules directly.
"""
from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from explainer.lifecycle import frames as fr
from explainer.lifecycle import room_frames as rf
from explainer.lifecycle.errors import APIError
from explainer.rooms import asking
from explainer.rooms.asking import MAX_QUESTION_CHARS, Asked, AskRound, MyQuestion

DEFAULT_PACE_MS = 300
MAX_PACE_MS = 2000    # as explainer.web.sockets.MAX_PACE_MS (not imported: that module loads Channels)
CHOICES = 8           # tokens a student can pick from when guessing
MAX_GUESS_CHARS = 40
MAX_PROMPT_CHARS = 400  # of the prompt shown with a run
SHOWN_GUESSES = 12    # bars in the class histogram; the rest are summed as "other"
SHOWN_NAMES = 60      # nicknames in one room.students frame; the rest are counted in "more"
NICKNAME_CHANGES = 5  # per socket per minute, on top of the frame limit: names flickering on the projector help nobody
MANY_GUESSES = 20     # from this many answers on, tallies are sent at most every TALLY_DELAY_S
TALLY_DELAY_S = 0.15
COUNTDOWNS = (0, 10, 15, 20, 30, 45, 60)  # seconds a presenter may give a guess (0: untimed, the default)
BOARD_ROWS = 30       # nicknames on the presenter's score board

# Where an Out goes
ME = "me"                  # this socket's own client
ROOM = "room"              # every socket in the room (presenters included)
PRESENTERS = "presenters"  # the room's presenter sockets
# ... or one socket, by its channel name (a student who needs to catch up)


@dataclass(frozen=True)
class Out:
    """One thing to send.

    ``kind`` None: ``frame`` goes as it is, to this socket's client (``to`` ME), or as a message to
    the sessions of the sockets in ``to`` (``presence``, ``presence.query``, ``guess.in``: never
    shown to anyone, each handled by the RoomSession method of the same name).
    ``kind`` a string: ``frame`` is a room frame that the receiving sockets pass on to their
    clients, and track by kind (:meth:`RoomSession.heard`): "guess" (opens a guess for step
    ``index``), "reveal", "run_end", "ended" (the socket closes), or "".
    """
    to: str
    frame: dict
    kind: str | None = None
    index: int | None = None


def pace_ms(raw) -> int:
    if raw is None:
        return DEFAULT_PACE_MS
    if not isinstance(raw, int) or isinstance(raw, bool) or not 0 <= raw <= MAX_PACE_MS:
        raise APIError("invalid_request_error", f"pace_ms: an integer from 0 to {MAX_PACE_MS}")
    return raw


def _norm(text: str) -> str:
    return text.strip().casefold()


def _as_candidate(candidates: list[dict]) -> Callable[[str], str]:
    """What a guess counts as: the model's candidate it matches when spaces and case are ignored (students
    type "the", the token is " the"), else the guess itself, trimmed."""
    by_norm: dict[str, str] = {}
    for c in candidates:
        by_norm.setdefault(_norm(c["text"]), c["text"])
    return lambda g: by_norm.get(_norm(g), g.strip())


def tally(guesses: dict[str, str], candidates: list[dict]) -> tuple[list[rf.Bar], int]:
    """The class's guesses as histogram bars, each guess counted as :func:`_as_candidate` reads it."""
    counted = _as_candidate(candidates)
    counts = Counter(counted(g) for g in guesses.values())
    bars = [rf.Bar(text=t, count=n) for t, n in counts.most_common(SHOWN_GUESSES)]
    other = sum(counts.values()) - sum(b["count"] for b in bars)
    if other:
        bars.append(rf.Bar(text=None, count=other))
    return bars, sum(counts.values())


@dataclass
class Run:
    """The presenter's run that is going."""
    run_id: str
    max_tokens: int
    prompt: str
    ended: bool = False  # its room.run "end" frame is made


@dataclass
class GuessRound:
    """An open "guess the next token": the held token's step and candidates, and the guesses so far."""
    index: int
    candidates: list[dict]
    guesses: dict[str, str] = field(default_factory=dict)  # student's id (sid) -> what they typed or picked
    unsent: bool = False  # guesses came in since the last tally
    seconds: int = 0      # the countdown the presenter set (0: untimed)


@dataclass
class Scores:
    """Right guesses over the rounds of one presenter's session, per student (by sid) and for the class.
    Accuracy only: when a guess came in never counts."""
    rounds: int = 0
    right: dict[str, int] = field(default_factory=dict)
    answered: dict[str, int] = field(default_factory=dict)
    on: bool = False      # the presenter shows the class score
    names: bool = False   # ... and the nicknamed students' counts beside it

    def mine(self, sid: str) -> rf.Score:
        return rf.Score(right=self.right.get(sid, 0), answered=self.answered.get(sid, 0), rounds=self.rounds)


def _error(message: str, kind: str = "invalid_request_error") -> APIError:
    return APIError(kind, message)


def _plain_question(raw) -> str:
    if not isinstance(raw, str) or not raw.strip() or len(raw.strip()) > MAX_QUESTION_CHARS:
        raise ValueError(f"text: a question of 1 to {MAX_QUESTION_CHARS} characters")
    return raw.strip()


class RoomSession:
    def __init__(self, channel: str, src: str, clean_nickname: Callable[[object], str | None], sid: str | None = None,
                 clean_question: Callable[[object], str] | None = None, label_prefix: str = "room"):
        """``channel``: this socket's name among the room's sockets. ``src``: the tag of this
        connection's broadcasts (their ``seq`` counts from 1 per src). ``clean_nickname``: the
        nickname to show for what a student sent (None: none), or ValueError with the reason.
        ``sid``: the student's id in this room's rounds, the same across their reconnections (a new
        socket without one is its own student). ``clean_question``: a student's question as it will be
        shown, or ValueError with the reason (by default: trimmed, at most MAX_QUESTION_CHARS).
        ``label_prefix``: what names this room's requests in the model scheduler's record."""
        self.channel, self.src, self.clean_nickname = channel, src, clean_nickname
        self.clean_question = clean_question or _plain_question
        self.label_prefix = f"{label_prefix}:{src}"
        self.sid = sid or channel
        self.role = "student"
        # a student's
        self.guess_index: int | None = None  # the step a guess is open for
        self.nickname: str | None = None     # shown on the presenter's screen; never stored
        self.renames: deque[float] = deque()
        # a presenter's: who is here
        self.students: dict[str, str | None] = {}  # channel -> nickname, in the order they joined
        self.sids: dict[str, str] = {}  # channel -> the student's id (the same after a reconnection)
        self.scores = Scores()
        self.roster_unsent = False
        # a presenter's: the run
        self.seq = 0
        self.run: Run | None = None
        self.mode, self.pace_ms, self.release = "play", DEFAULT_PACE_MS, False
        self.held: dict | None = None  # the generated token waiting to be broadcast
        self.deadline = 0.0             # when the held token goes while playing (monotonic seconds)
        self.guess: GuessRound | None = None
        self.snapshot: dict | None = None  # the current (or last) run so far, for students who join late
        # "Everyone asks": a presenter's round, and a student's open round and question
        self.ask: AskRound | None = None
        self.ask_rounds = 0
        self.ask_open: int | None = None  # (a student's) the round whose question box is open
        self.question: MyQuestion | None = None

    # ---- a student ----------------------------------------------------------------------------

    def announce(self, op: str) -> Out:
        """Tell the presenters this student joined (op "join") or changed their nickname ("name")."""
        return Out(PRESENTERS, {"type": fr.PRESENCE, "op": op, "ch": self.channel, "name": self.nickname, "sid": self.sid})

    def leaving(self) -> list[Out]:
        """This socket closes."""
        if self.role == "presenter":
            return []
        return [Out(PRESENTERS, {"type": fr.PRESENCE, "op": "leave", "ch": self.channel})]

    def presence_query(self) -> list[Out]:
        """A presenter (new, or reconnected) asks who is here."""
        return [self.announce("join")] if self.role == "student" else []

    def heard(self, kind: str | None, index: int | None) -> None:
        """A room frame of this kind reached this socket (on its way to the client)."""
        if kind == "guess":
            self.guess_index = index
        elif kind in ("reveal", "run_end"):
            self.guess_index = None
        elif kind == "ask_open":
            self.ask_open = index
            if self.question is not None and self.question.round != index:
                self.question = None
        elif kind in ("ask_sent", "ask_closed"):
            self.ask_open = None

    def send_guess(self, text) -> list[Out]:
        """A student's guess (a choice, or typed) for the open step."""
        if self.guess_index is None:
            raise _error("No guess is open right now.")
        if not isinstance(text, str) or not text.strip() or len(text) > MAX_GUESS_CHARS:
            raise _error(f"text: a guess of 1 to {MAX_GUESS_CHARS} characters")
        return [Out(PRESENTERS, {"type": fr.GUESS_IN, "index": self.guess_index, "ch": self.channel, "sid": self.sid, "text": text}),
                Out(ME, rf.RoomGuessed(type=fr.ROOM_GUESSED, index=self.guess_index, text=text))]

    def set_nickname(self, raw, now: float) -> list[Out]:
        """A student names (or un-names, with an empty name) themselves, at ``now`` (seconds). A
        refusal is the usual error envelope with ``"frame": "nickname"``, so that the page can show
        it beside the nickname box; it counts against NICKNAME_CHANGES only when accepted."""
        while self.renames and now - self.renames[0] > 60:
            self.renames.popleft()
        try:
            if self.role != "student":
                raise _error("Only students choose a nickname.")
            if len(self.renames) >= NICKNAME_CHANGES:
                raise _error(f"Too many nickname changes: at most {NICKNAME_CHANGES} a minute. Wait a little.",
                             "rate_limit_error")
            try:
                name = self.clean_nickname(raw)
            except ValueError as exc:
                raise _error(str(exc)) from None
        except APIError as exc:
            return [Out(ME, fr.Error(**exc.body(), frame=fr.NICKNAME))]
        self.renames.append(now)
        outs = []
        if name != self.nickname:
            self.nickname = name
            outs.append(self.announce("name"))
        return outs + [Out(ME, rf.RoomNickname(type=fr.ROOM_NICKNAME, name=name))]

    # ---- becoming a presenter, and who is here -----------------------------------------------------

    def become_presenter(self) -> list[Out]:
        """The secret was right. What to send before this socket joins the presenters: it is no
        longer one of the students."""
        self.role = "presenter"
        return [Out(PRESENTERS, {"type": fr.PRESENCE, "op": "leave", "ch": self.channel})]

    def presenter_ready(self) -> list[Out]:
        """After the presenter's hello: who is here so far, and a question to every student."""
        return self.take_roster() + [Out(ROOM, {"type": fr.PRESENCE_QUERY})]

    def presence(self, op: str, ch: str, name=None, sid=None) -> list[Out]:
        """A student joined ("join"), renamed ("name") or left ("leave"). A student this presenter
        has not seen yet gets the run so far (``room.catchup``), with their guess if they made one
        before they reconnected. The roster is then unsent (:meth:`take_roster`)."""
        if self.role != "presenter":
            return []
        outs = []
        if op in ("join", "name"):
            self.sids[ch] = sid if isinstance(sid, str) and sid else ch
            if ch not in self.students and self.snapshot is not None:
                outs.append(self.catchup(ch))
            if ch not in self.students:
                outs += self.ask_catchup(ch)
            self.students[ch] = name if isinstance(name, str) else None
        else:
            self.students.pop(ch, None)
            self.sids.pop(ch, None)
            self.ask_left(ch)
        self.roster_unsent = True
        if self.ask is not None and self.ask.phase == "open":
            self.ask.unsent = True  # "5 of 19 asked" counts who is here now
        return outs

    def catchup(self, ch: str) -> Out:
        snap = self.snapshot
        frame = rf.RoomCatchup(type=fr.ROOM_CATCHUP, run=snap["run"], tokens=list(snap["tokens"]), last=snap["last"],
                               guess=snap["guess"], reveal=snap["reveal"], end=snap["end"])
        mine = self.guess.guesses.get(self.sids.get(ch, ch)) if self.guess is not None and snap["guess"] else None
        if mine is not None:
            frame["mine"] = mine
        return Out(ch, frame, kind="guess" if snap["guess"] else "", index=snap["guess"]["index"] if snap["guess"] else None)

    def take_roster(self) -> list[Out]:
        """How many students are here, their nicknames and how many chose none (and, while the class
        answers, how many of them have)."""
        self.roster_unsent = False
        named = [n for n in self.students.values() if n]
        outs = [Out(ME, rf.RoomStudents(type=fr.ROOM_STUDENTS, count=len(self.students), names=named[:SHOWN_NAMES],
                                        more=max(0, len(named) - SHOWN_NAMES), unnamed=len(self.students) - len(named)))]
        return outs + self.answers()

    def answers(self) -> list[Out]:
        """While a guess is open: how many of the students here have answered ("12 of 19")."""
        g = self.guess
        if g is None:
            return []
        here = set(self.sids.get(ch, ch) for ch in self.students)
        answered = sum(1 for sid in g.guesses if sid in here)  # of those still here
        return [Out(ME, rf.RoomAnswers(type=fr.ROOM_ANSWERS, index=g.index, answered=answered, connected=len(self.students)))]

    # ---- guesses coming in ----------------------------------------------------------------------

    def guess_in(self, index, ch: str, text: str, sid: str | None = None) -> bool:
        """A student's guess reached this presenter: whether it counts (a guess for the open step).
        A changed guess replaces the student's earlier one (also one made before a reconnection: a
        student is their ``sid``). The tally is then unsent."""
        g = self.guess
        if self.role != "presenter" or g is None or g.index != index:
            return False
        g.guesses[sid if isinstance(sid, str) and sid else ch] = text
        g.unsent = True
        return True

    @property
    def tally_unsent(self) -> bool:
        return self.guess is not None and self.guess.unsent

    def tally_delay(self) -> float:
        """How long to gather guesses before the next tally: none for a few, a little for a class."""
        return 0.0 if self.guess is None or len(self.guess.guesses) < MANY_GUESSES else TALLY_DELAY_S

    def take_tally(self) -> list[Out]:
        g = self.guess
        if g is None:
            return []
        g.unsent = False
        bars, total = tally(g.guesses, g.candidates)
        return self.answers() + [Out(ME, rf.RoomTally(type=fr.ROOM_TALLY, index=g.index, guesses=bars, total=total))]

    # ---- broadcasting -----------------------------------------------------------------------------

    def broadcast(self, frame: dict, kind: str = "") -> Out:
        """A frame for every socket of the room, numbered (``seq`` per ``src``) and remembered for
        students who join later. Its ``index`` (a step; an ask round's ``round``) travels with it for
        :meth:`heard`."""
        self._remember(frame)
        self.seq += 1
        return Out(ROOM, {**frame, "seq": self.seq, "src": self.src}, kind=kind, index=frame.get("index", frame.get("round")))

    def _remember(self, frame: dict) -> None:
        """What a student who joins in the middle of a run needs to catch up."""
        t = frame["type"]
        if t == fr.ROOM_RUN and frame["phase"] == "start":
            self.snapshot = {"run": frame, "tokens": [], "last": None, "guess": None, "reveal": None, "end": None}
        elif self.snapshot is None:
            return
        elif t == fr.ROOM_TOKEN:
            self.snapshot["tokens"].append(rf.CatchupToken(index=frame["index"], piece=frame["piece"]))
            self.snapshot["last"] = frame
        elif t == fr.ROOM_GUESS:
            self.snapshot["guess"], self.snapshot["reveal"] = frame, None
        elif t == fr.ROOM_REVEAL:
            self.snapshot["guess"], self.snapshot["reveal"] = None, frame
        elif t == fr.ROOM_RUN:
            self.snapshot["end"], self.snapshot["guess"] = frame, None

    def show_state(self, state: dict) -> list[Out]:
        """The presenter moved to another stage (``state``: a checked rooms.StageState, as a dict)."""
        return [self.broadcast(rf.RoomState(type=fr.ROOM_STATE, state=state))]

    def end_room(self) -> list[Out]:
        return [self.broadcast(rf.RoomEnded(type=fr.ROOM_ENDED), kind="ended")]

    # ---- the run --------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.run is not None

    def need_run(self) -> None:
        if self.run is None:
            raise _error("No run is going: start one with “run”.")

    def run_pace(self, frame: dict) -> int:
        """A "run" command's pace, checked before the stage's scenario is read. A run whose end the class
        has heard is over, even while its task finishes (``run_over`` then leaves the new run alone): the
        presenter's Run is enabled by that end frame."""
        if self.run is not None and not self.run.ended:
            raise _error("A run is already going: stop it first.")
        return pace_ms(frame.get("pace_ms"))

    def start_run(self, req, pace: int, mode, run_id: str) -> None:
        """A run of ``req`` (a lifecycle Request) starts: nothing is sent until the engine's first
        event (:meth:`run_event`)."""
        if mode not in ("play", "pause"):
            raise _error("mode: “play” or “pause”")
        prompt = next((m.text for m in reversed(req.messages) if m.role == "user"), "")[-MAX_PROMPT_CHARS:]
        self.run = Run(run_id, req.max_tokens, prompt)
        self.pace_ms, self.mode, self.release, self.guess = pace, mode, False, None

    def run_event(self, ev: dict, t: float) -> list[Out]:
        """One event of the engine (a token once it was let go, see :meth:`hold`), at wall-clock ``t``."""
        run, kind = self.run, ev["type"]
        if kind == fr.PROMPT:
            return [self.broadcast(rf.RoomRunStart(
                type=fr.ROOM_RUN, phase="start", run_id=run.run_id, input_tokens=ev["input_tokens"], max_tokens=run.max_tokens,
                prompt=run.prompt, mode=self.mode, pace_ms=self.pace_ms, model=ev["model"]["served_by"]))]
        if kind == fr.TOKEN:
            return [self.broadcast(rf.RoomToken(
                type=fr.ROOM_TOKEN, run_id=run.run_id, index=ev["index"], token=ev["token"], text=ev["text"],
                piece=ev.get("piece", ""), t=t,
                candidates=[rf.RoomCandidate(token=c["token"], text=c["text"], p=c["final_probability"]) for c in ev["candidates"][:CHOICES]],
            ))]
        if kind == fr.DONE:
            run.ended = True
            return [self.broadcast(rf.RoomRunEnd(type=fr.ROOM_RUN, phase="end", run_id=run.run_id, stop_reason=ev["stop_reason"],
                                                 usage=ev["usage"]), kind="run_end")]
        if kind == fr.ERROR:
            run.ended = True
            return [self.broadcast(rf.RoomRunEnd(type=fr.ROOM_RUN, phase="end", run_id=run.run_id, error=ev["error"]), kind="run_end")]
        return []

    def run_stopped(self) -> list[Out]:
        """The presenter stopped the run: the class is told, unless it already ended."""
        run = self.run
        if run is None or run.ended:
            return []
        run.ended = True
        return [self.broadcast(rf.RoomRunEnd(type=fr.ROOM_RUN, phase="end", run_id=run.run_id, stop_reason="stopped"), kind="run_end")]

    def run_failed(self) -> list[Out]:
        run = self.run
        if run is None:
            return []
        run.ended = True
        return [self.broadcast(rf.RoomRunEnd(type=fr.ROOM_RUN, phase="end", run_id=run.run_id,
                                             error=fr.ErrorDetail(type="api_error", message="The run failed on the server.")),
                               kind="run_end")]

    def run_over(self, run_id: str) -> None:
        """The run's task is over (ended, stopped, failed or interrupted); a later run is left alone."""
        if self.run is not None and self.run.run_id == run_id:
            self.run, self.held, self.guess = None, None, None

    # ---- pacing -----------------------------------------------------------------------------------

    def hold(self, ev: dict, now: float) -> list[Out]:
        """A generated token, at ``now`` (monotonic seconds): it waits for the pace, a step or a reveal.
        The presenter running the run hears that it is ready (``room.ready``): a guess can open now."""
        self.held = ev
        self.deadline = now + self.pace_ms / 1000
        return [Out(ME, rf.RoomReady(type=fr.ROOM_READY, index=ev["index"]))]

    def token_wait(self, now: float) -> float | None:
        """How long the held token still waits before asking again: 0 when it goes now (the session
        lets go of it), seconds while playing at a pace, None until the presenter acts (paused, or
        a guess is open)."""
        if self.release:
            self.release, self.held = False, None
            return 0
        if self.mode == "play" and self.guess is None:
            left = self.deadline - now
            if left <= 0:
                self.held = None
                return 0
            return left
        return None

    def control(self, kind: str, frame: dict) -> list[Out]:
        """A presenter's pacing or guess command: "pause", "play", "pace", "step", "guess", "reveal"."""
        if kind in (fr.PAUSE, fr.PLAY):
            self.mode = kind
            return [self._mode()]
        if kind == fr.PACE:
            self.pace_ms = pace_ms(frame.get("pace_ms"))
            return [self._mode()]
        if kind == fr.STEP:
            self.need_run()
            self.release = True
            return []
        if kind == fr.GUESS:
            return self.open_guess(frame.get("seconds", 0))
        if kind == fr.REVEAL:
            return self.reveal()
        if kind == fr.SCORE:
            return self.set_score(frame.get("on"), frame.get("names", False))
        raise ValueError(f"not a pacing command: {kind}")

    def _mode(self) -> Out:
        return Out(ME, rf.RoomMode(type=fr.ROOM_MODE, mode=self.mode, pace_ms=self.pace_ms))

    def open_guess(self, seconds=0) -> list[Out]:
        """The class guesses the held token: the run pauses, students get the choices. With ``seconds``
        (one of COUNTDOWNS; 0, untimed, is the default) the reveal comes by itself when they run out
        (``countdown``: the consumer waits, then calls ``reveal``)."""
        self.need_run()
        if seconds not in COUNTDOWNS or isinstance(seconds, bool):
            raise _error(f"seconds: a countdown of {', '.join(map(str, COUNTDOWNS[1:]))} seconds, or 0 for none")
        if self.held is None:
            raise _error("Wait for the next token to be ready, then open the guess.")
        if self.guess is not None:
            return []
        self.mode = "pause"
        held = self.held
        cands = held["candidates"][:CHOICES]
        self.guess = GuessRound(held["index"], cands, seconds=seconds)
        choices = sorted({c["text"] for c in cands}, key=str.casefold)
        frame = rf.RoomGuess(type=fr.ROOM_GUESS, index=held["index"], choices=choices)
        if seconds:
            frame["seconds"] = seconds
        return [self._mode(), self.broadcast(frame, kind="guess"), *self.answers()]

    @property
    def countdown(self) -> tuple[int, int] | None:
        """(step, seconds) of the open guess when it has a countdown; None otherwise."""
        g = self.guess
        return (g.index, g.seconds) if g is not None and g.seconds else None

    def reveal(self) -> list[Out]:
        """The class's guesses beside the model's distribution and its draw; the held token goes."""
        g, ev = self.guess, self.held
        if g is None or ev is None:
            raise _error("No guess is open: open one with “guess”.")
        bars, total = tally(g.guesses, g.candidates)
        drawn = ev["text"]
        right = sum(b["count"] for b in bars if b["text"] == drawn)
        out = self.broadcast(rf.RoomReveal(
            type=fr.ROOM_REVEAL, index=g.index, guesses=bars, total=total, right=right,
            model=[rf.ModelBar(text=c["text"], p=c["final_probability"]) for c in g.candidates],
            drawn=rf.Drawn(text=drawn, token=ev["token"],
                           p=next((c["final_probability"] for c in ev["candidates"] if c["token"] == ev["token"]), None)),
        ), kind="reveal")
        self.guess = None
        self.release = True
        return [out, *self._results(g, drawn), *self._score()]

    def _results(self, g: GuessRound, drawn: str) -> list[Out]:
        """Each student here learns their own guess and whether it was right (read as the tally reads it);
        the round counts in everyone's score."""
        counted, sc = _as_candidate(g.candidates), self.scores
        sc.rounds += 1
        outs = []
        for ch in self.students:
            sid = self.sids.get(ch, ch)
            guess = g.guesses.get(sid)
            right = guess is not None and counted(guess) == drawn
            if guess is not None:
                sc.answered[sid] = sc.answered.get(sid, 0) + 1
                sc.right[sid] = sc.right.get(sid, 0) + right
            outs.append(Out(ch, rf.RoomResult(type=fr.ROOM_RESULT, index=g.index, guess=guess, right=right, score=sc.mine(sid)),
                            kind="result"))
        return outs

    def set_score(self, on, names=False) -> list[Out]:
        """The presenter shows the class score (and, with ``names``, the nicknamed students' counts) or hides it."""
        if not isinstance(on, bool) or not isinstance(names, bool):
            raise _error("on, names: true or false")
        self.scores.on, self.scores.names = on, on and names
        return self._score(always=True)

    def _score(self, always: bool = False) -> list[Out]:
        """The class score for this presenter's screen: sent when it is on (or just turned off)."""
        sc = self.scores
        if not (sc.on or always):
            return []
        board: list[rf.BoardRow] = []
        if sc.names:
            named = {self.sids.get(ch, ch): n for ch, n in self.students.items() if n}
            board = sorted((rf.BoardRow(name=n, right=sc.right.get(sid, 0), answered=sc.answered.get(sid, 0))
                            for sid, n in named.items()), key=lambda r: (-r["right"], r["name"].casefold()))[:BOARD_ROWS]
        return [Out(ME, rf.RoomScore(type=fr.ROOM_SCORE, on=sc.on, names=sc.names, rounds=sc.rounds,
                                     right=sum(sc.right.values()), answered=sum(sc.answered.values()), board=board))]

    # ---- "Everyone asks" (asking.py): a student's side ---------------------------------------------------

    def send_question(self, raw) -> list[Out]:
        """A student's question for the open round: checked here (as a nickname is), then for the presenters to
        take (``ask_in``). One per student per round. A refusal is the error envelope with ``"frame": "question"``."""
        try:
            if self.role != "student":
                raise _error("Only students ask questions.")
            if self.ask_open is None:
                raise _error("No round of questions is open right now.")
            if self.question is not None and self.question.round == self.ask_open:
                raise _error("One question per round: yours is already in.")
            try:
                text = self.clean_question(raw)
            except ValueError as exc:
                raise _error(str(exc)) from None
        except APIError as exc:
            return [Out(ME, fr.Error(**exc.body(), frame=fr.QUESTION))]
        self.question = MyQuestion(self.ask_open, text)
        return [Out(PRESENTERS, {"type": fr.ASK_IN, "round": self.ask_open, "ch": self.channel, "sid": self.sid,
                                 "name": self.nickname, "text": text})]

    def ask_taken(self, round_, qid, label: str, text: str) -> list[Out]:
        """A presenter took this student's question (``text``: the one it took, which after a reconnection may be
        the one asked before it): it runs when the round is sent."""
        q = self.question
        if round_ != self.ask_open or (q is not None and q.round == round_ and q.qid is not None):
            return []
        self.question = MyQuestion(round_, text, qid, label)
        return [Out(ME, rf.RoomAsked(type=fr.ROOM_ASKED, round=round_, text=text))]

    def ask_refused(self, round_, message: str) -> list[Out]:
        q = self.question
        if q is None or q.round != round_ or q.qid is not None:
            return []
        self.question = None
        return [Out(ME, fr.Error(type=fr.ERROR, error=fr.ErrorDetail(type="invalid_request_error", message=message),
                                 frame=fr.QUESTION))]

    def question_to_run(self, round_) -> MyQuestion | None:
        """The round was sent: this student's question, if a presenter took it and it has not run yet."""
        q = self.question
        if q is None or q.round != round_ or q.qid is None or q.started:
            return None
        q.started = True
        return q

    def reply_event(self, q: MyQuestion, ev: dict) -> list[Out]:
        """One engine event of this student's reply: their phone's frames, and at the end the presenters' ``ask.done``."""
        kind = ev["type"]
        if kind == fr.PROMPT:
            return [Out(ME, rf.RoomReplyStart(type=fr.ROOM_REPLY, phase="start", round=q.round,
                                              input_tokens=ev["input_tokens"], model=ev["model"]["served_by"]))]
        if kind == fr.TOKEN:
            return [Out(ME, rf.RoomReplyToken(type=fr.ROOM_REPLY, phase="token", round=q.round, index=ev["index"],
                                              piece=ev.get("piece", "")))]
        if kind == fr.DONE:
            tokens = ev["usage"]["output_tokens"]
            return [Out(ME, rf.RoomReplyEnd(type=fr.ROOM_REPLY, phase="end", round=q.round, stop_reason=ev["stop_reason"],
                                            output_tokens=tokens)),
                    self._ask_done(q, "done", tokens)]
        if kind == fr.ERROR:
            detail, status = asking.reply_error(ev)
            return [Out(ME, rf.RoomReplyEnd(type=fr.ROOM_REPLY, phase="end", round=q.round, error=detail)),
                    self._ask_done(q, status, 0)]
        return []

    def reply_failed(self, q: MyQuestion) -> list[Out]:
        detail = fr.ErrorDetail(type="api_error", message="The reply failed on the server.")
        return [Out(ME, rf.RoomReplyEnd(type=fr.ROOM_REPLY, phase="end", round=q.round, error=detail)),
                self._ask_done(q, "failed", 0)]

    def _ask_done(self, q: MyQuestion, status: str, tokens: int) -> Out:
        return Out(PRESENTERS, {"type": fr.ASK_DONE, "round": q.round, "qid": q.qid, "status": status, "tokens": tokens})

    # ---- "Everyone asks": a presenter's side ---------------------------------------------------------------

    def ask_command(self, frame: dict) -> list[Out]:
        """The presenter's "ask" command: ``op`` open, send, close or hide (``qid``)."""
        op = frame.get("op")
        if op == "open":
            return self.open_ask()
        if op == "send":
            return self.send_ask()
        if op == "close":
            return self.close_ask()
        if op == "hide":
            return self.hide_question(frame.get("qid"))
        raise _error("op: “open”, “send”, “close” or “hide”")

    def open_ask(self) -> list[Out]:
        """A new round: every phone shows a question box (a round already open stays as it is)."""
        if self.ask is not None and self.ask.phase == "open":
            return self.take_questions()
        self.ask_rounds += 1
        self.ask = AskRound(self.ask_rounds)
        frame = rf.RoomAsk(type=fr.ROOM_ASK, phase="open", round=self.ask.round, max_chars=MAX_QUESTION_CHARS)
        return [self.broadcast(frame, kind="ask_open"), *self.take_questions()]

    def ask_catchup(self, ch: str) -> list[Out]:
        """A student who arrives (or comes back) while a round is open gets the question box, with the question they
        had asked if they had."""
        a = self.ask
        if a is None or a.phase != "open":
            return []
        frame = rf.RoomAsk(type=fr.ROOM_ASK, phase="open", round=a.round, max_chars=MAX_QUESTION_CHARS)
        outs = [Out(ch, frame, kind="ask_open", index=a.round)]
        qid = a.by_sid.get(self.sids.get(ch, ch))
        if qid is not None:
            outs.append(self._taken(a, a.questions[qid], ch))
        return outs

    def _taken(self, a: AskRound, q: Asked, ch: str) -> Out:
        q.ch = ch
        return Out(ch, {"type": fr.ASK_TAKEN, "round": a.round, "qid": q.qid, "text": q.text,
                        "label": asking.label(self.label_prefix, a.round, q.qid)})

    def ask_in(self, round_, ch: str, sid, name, text: str) -> list[Out]:
        """A student's question reached this presenter: taken (``ask.taken`` to that student, with its label in the
        scheduler's record) or refused (``ask.refused``: the round is full, or not open now)."""
        a = self.ask
        if self.role != "presenter":
            return []
        sid = sid if isinstance(sid, str) and sid else ch
        if a is not None and a.round == round_ and a.phase == "sent":
            why = "The questions of this round were already sent: wait for the next round."
        elif a is None or a.round != round_ or a.phase != "open":  # closed, or a round of the presenter's page before it reloaded
            why = "This round is over: wait for your teacher to open the next one."
        elif sid in a.by_sid:  # one per student: their first is in (asked before they reconnected)
            return [self._taken(a, a.questions[a.by_sid[sid]], ch)]
        elif len(a.questions) >= asking.MAX_QUESTIONS:
            why = f"This round is full ({asking.MAX_QUESTIONS} questions): wait for the next one."
        else:
            qid = len(a.questions) + 1
            a.questions[qid] = q = Asked(qid, ch, sid, name if isinstance(name, str) else None, text)
            a.by_sid[sid] = qid
            a.unsent = True
            return [self._taken(a, q, ch)]
        return [Out(ch, {"type": fr.ASK_REFUSED, "round": round_, "message": why})]

    def send_ask(self) -> list[Out]:
        """Every question of the open round goes to the model at once: each student's socket runs its own."""
        a = self.ask
        if a is None or a.phase != "open":
            raise _error("No round of questions is open: press A to open one.")
        if not a.questions:
            raise _error("No question has come in yet: wait for the class to type theirs.")
        a.phase = "sent"
        for q in a.questions.values():
            q.status = "answering"
        frame = rf.RoomAsk(type=fr.ROOM_ASK, phase="sent", round=a.round, count=len(a.questions))
        return [self.broadcast(frame, kind="ask_sent"), *self.take_questions()]

    def close_ask(self) -> list[Out]:
        """The round ends for every screen (replies still streaming go on, on their phones)."""
        a = self.ask
        if a is None or a.phase == "closed":
            return []
        a.phase = "closed"
        return [self.broadcast(rf.RoomAsk(type=fr.ROOM_ASK, phase="closed", round=a.round), kind="ask_closed"),
                *self.take_questions()]

    def hide_question(self, qid) -> list[Out]:
        """A question leaves the projector, for good: no later frame carries its text."""
        a = self.ask
        if a is None or not isinstance(qid, int) or isinstance(qid, bool) or qid not in a.questions:
            raise _error("qid: the number of a question of this round")
        a.questions[qid].hidden = True
        return self.take_questions()

    def ask_done(self, round_, qid, status, tokens) -> bool:
        """A student's reply ended (``status`` one of asking.ENDED): whether it counted."""
        a = self.ask
        if self.role != "presenter" or a is None or a.round != round_ or qid not in a.questions:
            return False
        q = a.questions[qid]
        q.status = asking.ENDED.get(status, "failed")
        q.tokens = tokens if isinstance(tokens, int) else 0
        a.unsent = True
        return True

    def ask_left(self, ch: str) -> None:
        """A student's socket closed: a reply still streaming to it was cancelled with it."""
        a = self.ask
        if a is None:
            return
        for q in a.questions.values():
            if q.ch == ch and q.status == "answering":
                q.status = "left"
                a.unsent = True

    @property
    def questions_unsent(self) -> bool:
        return self.ask is not None and self.ask.unsent

    def questions_delay(self) -> float:
        return 0.0 if self.ask is None or len(self.ask.questions) < asking.MANY_QUESTIONS else asking.QUESTIONS_DELAY_S

    def take_questions(self) -> list[Out]:
        """The round's questions for this presenter's screen: the hidden ones only as a count."""
        a = self.ask
        if a is None:
            return []
        a.unsent = False
        shown = [q.row() for q in a.questions.values() if not q.hidden]
        return [Out(ME, rf.RoomQuestions(type=fr.ROOM_QUESTIONS, round=a.round, phase=a.phase, questions=shown,
                                         hidden=len(a.questions) - len(shown), asked=len(a.questions),
                                         answered=sum(q.status == "done" for q in a.questions.values()),
                                         connected=len(self.students), max_questions=asking.MAX_QUESTIONS))]

    def timeline(self, record: dict, done: bool) -> list[Out]:
        """The Serving timeline of the sent round, from the model scheduler's ``record`` (since the round's start)."""
        a = self.ask
        if a is None or a.t0 is None:
            return []
        return [Out(ME, asking.timeline(record, self.label_prefix, a, done))]
