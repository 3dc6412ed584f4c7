"""The rooms' rules without sockets: explainer.rooms.session.RoomSession takes what happened and
returns the frames to send (and to whom). The same rules over real sockets: tests/test_rooms*.py."""
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from explainer.lifecycle import frames as fr
from explainer.lifecycle.errors import APIError
from explainer.rooms import session as rules
from explainer.rooms.session import ME, PRESENTERS, ROOM, RoomSession

ROOT = Path(__file__).resolve().parent.parent


def clean(raw):
    """Stands in for rooms.clean_nickname: trims, refuses "bad"."""
    if raw is None or not str(raw).strip():
        return None
    if raw == "bad":
        raise ValueError("That nickname is not allowed in a classroom.")
    return raw.strip()


def student(ch="s1") -> RoomSession:
    return RoomSession(ch, "srcS", clean_nickname=clean)


@dataclass
class Msg:
    role: str
    text: str


@dataclass
class Req:
    max_tokens: int = 6
    messages: tuple = (Msg("user", "Name a colour."),)


def token(index, text=" the", cands=((" the", 0.5), (" a", 0.3), ("The", 0.2))):
    candidates = [{"token": 100 + i, "text": t, "final_probability": p} for i, (t, p) in enumerate(cands)]
    tok = next(c["token"] for c in candidates if c["text"] == text)
    return {"type": "explainer.token", "index": index, "token": tok, "text": text, "piece": text, "candidates": candidates}


def presenter(*students, mode="play", pace=0) -> RoomSession:
    """A presenter with these students here and a run started (its room.run "start" sent)."""
    p = RoomSession("p1", "srcP", clean_nickname=clean)
    p.become_presenter()
    for ch in students:
        p.presence("join", ch)
    p.take_roster()
    p.start_run(Req(), p.run_pace({"pace_ms": pace}), mode, "run1")
    p.run_event({"type": "explainer.prompt", "input_tokens": 9, "model": {"served_by": "tiny-explainer-4l"}}, t=0.0)
    return p


def frames(outs, to=None, type=None):
    return [o.frame for o in outs if (to is None or o.to == to) and (type is None or o.frame["type"] == type)]


def held(p: RoomSession, ev, now=0.0):
    """The token reached the gate; it waits (paused) until released."""
    p.hold(ev, now)
    return p.token_wait(now)


# ---- guesses ------------------------------------------------------------------------------------

def test_a_guess_opens_on_the_held_token_and_closes_on_reveal():
    p = presenter("s1", "s2", mode="pause")
    assert held(p, token(0)) is None  # paused: the token waits for the presenter
    outs = p.control("guess", {})
    assert [(o.to, o.frame["type"], o.kind) for o in outs] == [
        (ME, "room.mode", None), (ROOM, "room.guess", "guess"), (ME, "room.answers", None)]
    assert outs[0].frame == {"type": "room.mode", "mode": "pause", "pace_ms": 0}
    guess = outs[1]
    assert guess.index == 0 and guess.frame["choices"] == [" a", " the", "The"]  # sorted, case-blind
    assert outs[2].frame == {"type": "room.answers", "index": 0, "answered": 0, "connected": 2}
    assert p.control("guess", {}) == []  # already open: nothing new
    assert p.token_wait(100.0) is None  # a guess is open: the token waits, even playing
    assert p.guess_in(0, "s1", "the") and p.guess_in(0, "s2", "a")
    rv, *results = p.control("reveal", {})
    assert [(o.to, o.kind, o.frame["guess"], o.frame["right"]) for o in results] == [("s1", "result", "the", True), ("s2", "result", "a", False)]
    assert rv.to == ROOM and rv.kind == "reveal" and rv.frame["index"] == 0
    assert rv.frame["total"] == 2 and rv.frame["right"] == 1 and rv.frame["drawn"] == {"text": " the", "token": 100, "p": 0.5}
    assert rv.frame["model"] == [{"text": " the", "p": 0.5}, {"text": " a", "p": 0.3}, {"text": "The", "p": 0.2}]
    assert p.guess is None and p.token_wait(0.0) == 0 and p.held is None  # the revealed token goes now
    with pytest.raises(APIError, match="No guess is open"):
        p.control("reveal", {})


def test_a_guess_needs_a_run_and_a_held_token():
    p = RoomSession("p1", "srcP", clean_nickname=clean)
    p.become_presenter()
    with pytest.raises(APIError, match="No run is going"):
        p.control("guess", {})
    p.start_run(Req(), 0, "pause", "r")
    with pytest.raises(APIError, match="Wait for the next token"):
        p.control("guess", {})


def test_a_typed_guess_counts_for_the_candidate_it_matches():
    p = presenter("s1", "s2", "s3", mode="pause")
    held(p, token(0))
    p.control("guess", {})
    for ch, typed in (("s1", "THE "), ("s2", "  the"), ("s3", "zebra")):
        assert p.guess_in(0, ch, typed)
    rv, *results = p.control("reveal", {})
    assert [o.frame["right"] for o in results] == [True, True, False]  # each student's result reads a guess as the tally does
    assert rv.frame["guesses"] == [{"text": " the", "count": 2}, {"text": "zebra", "count": 1}]
    assert rv.frame["right"] == 2 and rv.frame["total"] == 3


def test_guesses_for_another_step_or_to_a_student_do_not_count():
    p = presenter("s1", mode="pause")
    held(p, token(4))
    p.control("guess", {})
    assert not p.guess_in(3, "s1", "the")
    assert not student().guess_in(4, "s1", "the")
    assert not p.tally_unsent


def test_the_tally_and_answer_counts_follow_the_guesses():
    p = presenter("s1", "s2", "s3", mode="pause")
    held(p, token(0))
    p.control("guess", {})
    assert p.guess_in(0, "s1", " the") and p.tally_unsent and p.tally_delay() == 0
    answers, tally = p.take_tally()
    assert answers.frame == {"type": "room.answers", "index": 0, "answered": 1, "connected": 3}
    assert tally.frame == {"type": "room.tally", "index": 0, "guesses": [{"text": " the", "count": 1}], "total": 1}
    assert not p.tally_unsent
    p.guess_in(0, "s1", "a")  # a changed guess is still one answer
    assert frames(p.take_tally(), type="room.answers")[0]["answered"] == 1
    p.guess_in(0, "s2", "a")
    p.presence("leave", "s3")  # someone leaves while the class answers: "2 of 2"
    assert frames(p.take_roster(), type="room.answers") == [{"type": "room.answers", "index": 0, "answered": 2, "connected": 2}]
    p.presence("leave", "s2")  # one who answered and left is not counted
    assert frames(p.take_roster(), type="room.answers")[0] == {"type": "room.answers", "index": 0, "answered": 1, "connected": 1}


def test_a_class_answering_at_once_gets_tallies_less_often():
    p = presenter(*[f"s{i}" for i in range(30)], mode="pause")
    held(p, token(0))
    p.control("guess", {})
    for i in range(rules.MANY_GUESSES):
        p.guess_in(0, f"s{i}", "x")
    assert p.tally_delay() == rules.TALLY_DELAY_S


def test_a_student_guesses_only_while_a_guess_is_open():
    s = student()
    with pytest.raises(APIError, match="No guess is open right now."):
        s.send_guess("the")
    s.heard("guess", 2)
    to_presenters, to_me = s.send_guess(" the")
    assert to_presenters.to == PRESENTERS and to_presenters.kind is None
    assert to_presenters.frame == {"type": "guess.in", "index": 2, "ch": "s1", "sid": "s1", "text": " the"}
    assert to_me.to == ME and to_me.frame == {"type": "room.guessed", "index": 2, "text": " the"}
    for bad in ("", "   ", "x" * (rules.MAX_GUESS_CHARS + 1), 5, None):
        with pytest.raises(APIError, match="text: a guess of 1 to"):
            s.send_guess(bad)
    s.heard("reveal", 2)
    with pytest.raises(APIError, match="No guess is open"):
        s.send_guess("the")
    s.heard("guess", 3)
    s.heard("run_end", None)  # a stopped run closes the guess too
    assert s.guess_index is None


# ---- pacing --------------------------------------------------------------------------------------

def test_a_pause_and_step_sequence():
    p = presenter("s1", pace=300)
    p.hold(token(0), now=10.0)
    assert p.token_wait(10.0) == pytest.approx(0.3)  # playing: the token waits for the pace
    assert p.token_wait(10.2) == pytest.approx(0.1)
    [mode] = p.control("pause", {})
    assert mode.frame == {"type": "room.mode", "mode": "pause", "pace_ms": 300}
    assert p.token_wait(10.5) is None  # paused: past the pace, it still waits
    assert p.control("step", {}) == []
    assert p.token_wait(10.5) == 0 and p.held is None  # a step lets exactly one token go
    p.hold(token(1), now=11.0)
    assert p.token_wait(20.0) is None  # ... and the next waits again
    [mode] = p.control("pace", {"pace_ms": 1000})
    assert mode.frame == {"type": "room.mode", "mode": "pause", "pace_ms": 1000}
    [mode] = p.control("play", {})
    assert mode.to == ME and mode.frame == {"type": "room.mode", "mode": "play", "pace_ms": 1000}
    assert p.token_wait(20.0) == 0  # playing again, its time has long come
    p.hold(token(2), now=30.0)
    assert p.token_wait(30.0) == pytest.approx(1.0)  # the new pace
    for bad in (-1, rules.MAX_PACE_MS + 1, "fast", True):
        with pytest.raises(APIError, match="pace_ms"):
            p.control("pace", {"pace_ms": bad})


def test_a_step_needs_a_run_and_a_second_run_waits_for_the_first():
    p = RoomSession("p1", "srcP", clean_nickname=clean)
    p.become_presenter()
    with pytest.raises(APIError, match="No run is going"):
        p.control("step", {})
    assert p.run_pace({}) == rules.DEFAULT_PACE_MS
    with pytest.raises(APIError, match="mode"):
        p.start_run(Req(), 0, "fast", "r0")
    p.start_run(Req(), 0, "play", "r1")
    with pytest.raises(APIError, match="already going"):
        p.run_pace({})
    p.run_over("r0")  # an older run's task ending leaves this one alone
    assert p.running
    p.run_over("r1")
    assert not p.running and p.run_pace({"pace_ms": 0}) == 0
    # once the class heard a run's end, the next may start while the first one's task is still finishing
    p.start_run(Req(), 0, "play", "r2")
    p.run_event({"type": "explainer.done", "stop_reason": "end_turn", "usage": {}}, t=1)
    assert p.run_pace({}) == rules.DEFAULT_PACE_MS
    p.start_run(Req(), 0, "play", "r3")
    p.run_over("r2")  # r2's task ends only now: r3 goes on
    assert p.running and p.run.run_id == "r3"


# ---- the run's frames ----------------------------------------------------------------------------

def test_a_runs_frames_are_numbered_and_end_once():
    p = RoomSession("p1", "srcP", clean_nickname=clean)
    p.become_presenter()
    p.start_run(Req(messages=(Msg("user", "x" * 500),)), 0, "play", "r1")
    [start] = p.run_event({"type": "explainer.prompt", "input_tokens": 3, "model": {"served_by": "tiny-llama"}}, t=1.0)
    assert start.to == ROOM and start.kind == "" and start.index is None
    assert start.frame == {"type": "room.run", "phase": "start", "run_id": "r1", "input_tokens": 3, "max_tokens": 6,
                           "prompt": "x" * rules.MAX_PROMPT_CHARS, "mode": "play", "pace_ms": 0, "model": "tiny-llama",
                           "seq": 1, "src": "srcP"}
    many = token(0, cands=[(f"t{i}", 0.1) for i in range(12)], text="t0")
    [tok] = p.run_event(many, t=2.5)
    assert tok.index == 0 and tok.frame["seq"] == 2 and tok.frame["t"] == 2.5
    assert len(tok.frame["candidates"]) == rules.CHOICES and tok.frame["candidates"][0] == {"token": 100, "text": "t0", "p": 0.1}
    assert p.run_event({"type": "explainer.nothing"}, t=3) == []
    [end] = p.run_event({"type": "explainer.done", "stop_reason": "max_tokens", "usage": {"output_tokens": 1}}, t=3)
    assert end.kind == "run_end" and end.frame["phase"] == "end" and end.frame["seq"] == 3
    assert p.run_stopped() == []  # ended already: a stop says nothing more
    p.run_over("r1")
    p.start_run(Req(), 0, "play", "r2")
    [stopped] = p.run_stopped()
    assert stopped.frame["stop_reason"] == "stopped" and stopped.frame["run_id"] == "r2" and stopped.frame["seq"] == 4
    assert p.run_stopped() == []


def test_state_and_end_are_broadcast():
    p = RoomSession("p1", "srcP", clean_nickname=clean)
    [st] = p.show_state({"slug": "overview"})
    assert st.to == ROOM and st.frame == {"type": "room.state", "state": {"slug": "overview"}, "seq": 1, "src": "srcP"}
    [end] = p.end_room()
    assert end.kind == "ended" and end.frame["type"] == "room.ended"


# ---- who is here, and catching up ------------------------------------------------------------------

def test_a_late_joiner_catches_up_with_the_run_and_the_open_guess():
    p = presenter("early", mode="pause")
    for i in range(2):
        held(p, token(i))
        p.control("step", {})
        assert p.token_wait(0) == 0
        p.run_event(token(i), t=0)
    held(p, token(2))
    p.control("guess", {})
    [catchup] = p.presence("join", "late", None)
    assert catchup.to == "late" and catchup.kind == "guess" and catchup.index == 2
    f = catchup.frame
    assert f["type"] == "room.catchup" and list(f) == ["type", "run", "tokens", "last", "guess", "reveal", "end"]
    assert f["run"]["phase"] == "start" and [t["index"] for t in f["tokens"]] == [0, 1] and f["last"]["index"] == 1
    assert f["guess"]["index"] == 2 and f["end"] is None and f["reveal"] is None
    assert p.presence("name", "late", "Ana") == []  # known already: a new name is no reason to catch up again
    assert p.presence("join", "early") == []
    # after the reveal and the end, a newcomer sees those instead of an open guess
    p.control("reveal", {})
    p.run_event({"type": "explainer.done", "stop_reason": "end_turn", "usage": {}}, t=0)
    [later] = p.presence("join", "later")
    assert later.kind == "" and later.index is None
    assert later.frame["guess"] is None and later.frame["reveal"]["index"] == 2 and later.frame["end"]["phase"] == "end"


def test_nobody_catches_up_before_the_first_run():
    p = RoomSession("p1", "srcP", clean_nickname=clean)
    p.become_presenter()
    assert p.presence("join", "s1") == [] and p.roster_unsent
    assert student().presence("join", "s1") == []  # a student keeps no roster


def test_the_roster_counts_students_and_caps_the_names(monkeypatch):
    monkeypatch.setattr(rules, "SHOWN_NAMES", 2)
    p = RoomSession("p1", "srcP", clean_nickname=clean)
    p.become_presenter()
    for i, name in enumerate(["A", None, "B", "C", 5]):
        p.presence("join", f"s{i}", name)
    outs = p.take_roster()
    assert not p.roster_unsent
    # 5 here, 3 of them named (2 listed, 1 more): 2 joined without a nickname (None, and 5, which is not a name)
    assert frames(outs) == [{"type": "room.students", "count": 5, "names": ["A", "B"], "more": 1, "unnamed": 2}]
    p.presence("leave", "s0")
    assert frames(p.take_roster())[0] == {"type": "room.students", "count": 4, "names": ["B", "C"], "more": 0, "unnamed": 2}
    p.presence("name", "s1", "D")  # one of them names themself
    assert frames(p.take_roster())[0]["unnamed"] == 1


def test_becoming_a_presenter_leaves_the_students_and_asks_who_is_here():
    s = student("x")
    assert s.presence_query() == [s.announce("join")]
    [leave] = s.become_presenter()
    assert leave.to == PRESENTERS and leave.frame == {"type": "presence", "op": "leave", "ch": "x"}
    outs = s.presenter_ready()
    assert [(o.to, o.frame["type"]) for o in outs] == [(ME, "room.students"), (ROOM, "presence.query")]
    assert s.presence_query() == [] and s.leaving() == []


def test_a_student_who_leaves_tells_the_presenters():
    assert student("s9").leaving()[0].frame == {"type": "presence", "op": "leave", "ch": "s9"}


# ---- nicknames ---------------------------------------------------------------------------------------

def test_nicknames_are_announced_when_they_change_and_limited_per_minute():
    s = student()
    outs = s.set_nickname("  Ana ", now=0)
    assert [(o.to, o.frame) for o in outs] == [
        (PRESENTERS, {"type": "presence", "op": "name", "ch": "s1", "name": "Ana", "sid": "s1"}),
        (ME, {"type": "room.nickname", "name": "Ana"})]
    assert frames(s.set_nickname("Ana", now=1)) == [{"type": "room.nickname", "name": "Ana"}]  # unchanged: no announcement
    [refused] = s.set_nickname("bad", now=2)
    assert refused.frame["frame"] == "nickname" and refused.frame["error"]["type"] == "invalid_request_error"
    assert s.nickname == "Ana"
    for i in range(rules.NICKNAME_CHANGES - 2):
        assert frames(s.set_nickname(f"N{i}", now=3), type="room.nickname")
    [limited] = s.set_nickname("Zed", now=4)
    assert limited.frame["error"]["type"] == "rate_limit_error" and limited.frame["frame"] == "nickname"
    assert frames(s.set_nickname(None, now=61.5), type="room.nickname") == [{"type": "room.nickname", "name": None}]  # a minute on
    assert s.announce("join").frame["name"] is None


def test_only_students_have_a_nickname():
    p = RoomSession("p1", "srcP", clean_nickname=clean)
    p.become_presenter()
    [err] = p.set_nickname("Teacher", now=0)
    assert err.frame["error"]["message"] == "Only students choose a nickname." and err.frame["frame"] == "nickname"


# ---- no framework ----------------------------------------------------------------------------------

def test_the_session_loads_no_web_framework():
    code = ("import sys\n"
            "import explainer.rooms.session\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('django', 'channels', 'daphne', 'redis')]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_a_held_token_tells_the_presenter_it_is_ready():
    """A test (or a presenter's screen) waits for this frame instead of sleeping until a token is computed."""
    p = presenter("s1", pace=300)
    outs = p.hold(token(3), now=1.0)
    assert [(o.to, o.frame) for o in outs] == [("me", {"type": "room.ready", "index": 3})]


# ---- the guess game: each student's result, rejoining, a countdown, the class score -------------------------

def _round(p: RoomSession, index: int, guesses: dict, drawn=" the"):
    """One round: the token ``drawn`` held at ``index``, a guess opened, ``guesses`` (sid -> text) in, revealed."""
    held(p, token(index, text=drawn))
    p.control("guess", {})
    for sid, text in guesses.items():
        assert p.guess_in(index, f"ch-{sid}", text, sid)
    outs = p.control("reveal", {})
    assert p.token_wait(0.0) == 0  # the revealed token goes: the gate is free for the next one
    return outs


def _presenter_with(*people) -> RoomSession:
    """A presenter with these (sid, nickname) students here and a paused run started."""
    p = RoomSession("p1", "srcP", clean_nickname=clean)
    p.become_presenter()
    for sid, name in people:
        p.presence("join", f"ch-{sid}", name, sid)
    p.start_run(Req(), 0, "pause", "run1")
    p.run_event({"type": "explainer.prompt", "input_tokens": 9, "model": {"served_by": "tiny-explainer-4l"}}, t=0.0)
    return p


def test_after_a_reveal_each_student_learns_their_own_guess_and_score():
    p = _presenter_with(("a", None), ("b", None), ("c", None))
    outs = _round(p, 0, {"a": "THE", "b": " a"})  # c does not answer
    results = {o.to: o.frame for o in outs if o.frame["type"] == "room.result"}
    assert results["ch-a"] == {"type": "room.result", "index": 0, "guess": "THE", "right": True,
                               "score": {"right": 1, "answered": 1, "rounds": 1}}
    assert results["ch-b"]["right"] is False and results["ch-b"]["score"] == {"right": 0, "answered": 1, "rounds": 1}
    assert results["ch-c"]["guess"] is None and results["ch-c"]["right"] is False
    assert not frames(outs, type="room.score")  # the class score is off unless the presenter turns it on
    outs = _round(p, 1, {"a": "a", "c": "the"})
    results = {o.to: o.frame for o in outs if o.frame["type"] == "room.result"}
    assert results["ch-a"]["score"] == {"right": 1, "answered": 2, "rounds": 2}
    assert results["ch-c"]["score"] == {"right": 1, "answered": 1, "rounds": 2}


def test_a_student_who_reconnects_rejoins_the_round_with_their_answer():
    p = _presenter_with(("sid-ana", "Ana"))
    held(p, token(0))
    p.control("guess", {})
    assert p.guess_in(0, "ch-sid-ana", "the", "sid-ana")
    p.presence("leave", "ch-sid-ana")  # the phone reloads: a new socket, the same student
    [catchup] = p.presence("join", "ch-new", "Ana", "sid-ana")
    assert catchup.to == "ch-new" and catchup.frame["mine"] == "the" and catchup.frame["guess"]["index"] == 0
    assert frames(p.answers(), type="room.answers")[0]["answered"] == 1  # still counted, once
    assert p.guess_in(0, "ch-new", " a", "sid-ana")  # a changed answer replaces the one before
    results = [o for o in p.control("reveal", {}) if o.frame["type"] == "room.result"]
    assert [(o.to, o.frame["guess"]) for o in results] == [("ch-new", " a")]
    assert RoomSession("ch-x", "src", clean_nickname=clean).sid == "ch-x"  # a socket naming no id is a student of its own


def test_a_countdown_is_optional_and_one_of_the_offered_lengths():
    p = presenter("s1", mode="pause")
    held(p, token(0))
    for bad in (7, True, "20", -10):
        with pytest.raises(APIError, match="seconds: a countdown of"):
            p.control("guess", {"seconds": bad})
    outs = p.control("guess", {"seconds": 20})
    assert frames(outs, type="room.guess")[0]["seconds"] == 20 and p.countdown == (0, 20)
    p.control("reveal", {})
    assert p.countdown is None and p.token_wait(0.0) == 0
    held(p, token(1))
    outs = p.control("guess", {})  # untimed, the default: no countdown at all
    assert "seconds" not in frames(outs, type="room.guess")[0] and p.countdown is None


def test_the_class_score_counts_accuracy_and_names_only_when_asked():
    p = _presenter_with(("a", "Ana"), ("b", "Bo"), ("c", None))
    [off] = p.control("score", {"on": False})
    assert off.to == ME and off.frame["on"] is False
    [on] = p.control("score", {"on": True})
    assert on.frame == {"type": "room.score", "on": True, "names": False, "rounds": 0, "right": 0, "answered": 0, "board": []}
    outs = _round(p, 0, {"a": "the", "b": "a", "c": "the"})
    [score] = frames(outs, to=ME, type="room.score")
    assert (score["rounds"], score["right"], score["answered"], score["board"]) == (1, 2, 3, [])  # no names unless asked
    [named] = p.control("score", {"on": True, "names": True})
    assert named.frame["board"] == [{"name": "Ana", "right": 1, "answered": 1}, {"name": "Bo", "right": 0, "answered": 1}]
    [names_off] = p.control("score", {"on": False, "names": True})
    assert names_off.frame["on"] is False and names_off.frame["names"] is False and names_off.frame["board"] == []
    with pytest.raises(APIError, match="on, names: true or false"):
        p.control("score", {"on": "yes"})



# ---- "Everyone asks" ---------------------------------------------------------------------------------

def _asking_class(*sids):
    p = presenter(*sids)
    p.label_prefix = "room:ABC234:srcP"
    p.open_ask()
    return p


def test_a_hidden_question_is_only_counted_from_then_on():
    p = _asking_class("s1", "s2")
    for ch, text in (("s1", "What is <b>a token</b>?"), ("s2", "Why 529?")):
        taken = p.ask_in(1, ch, ch, None, text)
        assert taken[0].to == ch and taken[0].frame["type"] == fr.ASK_TAKEN
    p.hide_question(1)
    later = [o.frame for o in p.take_questions() + p.send_ask() + p.take_questions()]
    assert all("token</b>" not in repr(f) for f in later)
    assert later[0]["hidden"] == 1 and [q["text"] for q in later[0]["questions"]] == ["Why 529?"]
    assert p.ask.names() == {1: "Q1", 2: "Q2"}


def test_one_question_per_student_and_a_round_s_size(monkeypatch):
    from explainer.rooms import asking
    monkeypatch.setattr(asking, "MAX_QUESTIONS", 2)
    p = _asking_class("s1", "s2", "s3")
    p.ask_in(1, "s1", "sid1", None, "one?")
    again = p.ask_in(1, "s1b", "sid1", None, "another?")  # the same student, from a new socket: their first question stands
    assert again[0].to == "s1b" and again[0].frame["text"] == "one?" and again[0].frame["qid"] == 1
    p.ask_in(1, "s2", "sid2", None, "two?")
    full = p.ask_in(1, "s3", "sid3", None, "three?")
    assert full[0].frame == {"type": fr.ASK_REFUSED, "round": 1, "message": "This round is full (2 questions): wait for the next one."}


def test_the_timeline_shows_the_class_s_rows_and_others_only_anonymously():
    p = _asking_class("s1", "s2")
    p.ask_in(1, "s1", "s1", "Ada", "q1?")
    p.ask_in(1, "s2", "s2", None, "q2?")
    p.send_ask()
    p.ask.t0 = 10.0

    def req(i, label):
        return {"id": i, "label": label, "prompt_tokens": 9, "kv_reserved": 100, "queued": 10.1, "admitted": 10.1,
                "first_step": 10.2, "left": None, "tokens": 3, "reason": None}
    record = {"max_batch": 32, "kv_budget_bytes": 1000, "kv_used_bytes": 0, "kv_peak_bytes": 0, "queued": 0, "n_steps": 9,
              "requests": [req(5, "room:ABC234:srcP:1:1"), req(6, "room:ABC234:srcP:1:2"), req(7, "someone's secret label"),
                           req(8, "room:ABC234:srcP:0:1"), req(9, "room:OTHER1:srcQ:1:1")],
              "steps": [{"index": 0, "start": 10.2, "end": 10.3, "rows": [5, 7], "kv_bytes": 300},
                        {"index": 1, "start": 10.3, "end": 10.4, "rows": [5, 6, 7], "kv_bytes": 300},
                        {"index": 2, "start": 10.4, "end": 10.5, "rows": [8, 9], "kv_bytes": 300}]}
    (out,) = p.timeline(record, done=False)
    t = out.frame
    assert t["highlight"] == [5, 6] and t["names"] == {"5": "Q1 · Ada", "6": "Q2"}
    assert [s["index"] for s in t["steps"]] == [0, 1]  # a step with none of the class's rows is not the class's story
    assert {r["id"] for r in t["requests"]} == {5, 6, 7} and all(r["label"] == "" for r in t["requests"])
    assert t["steps"][0]["start"] == pytest.approx(0.2) and "secret" not in repr(t)


def test_a_question_for_a_round_this_presenter_does_not_have_is_refused_with_a_reason():
    p = presenter("s1")  # a presenter page that reloaded: a new session, without the phones' open round
    p.label_prefix = "room:ABC234:srcP"
    assert p.ask_in(3, "s1", "s1", None, "still there?")[0].frame["message"] == "This round is over: wait for your teacher to open the next one."
    p.open_ask()
    p.ask_in(1, "s1", "s1", None, "one?")
    p.send_ask()
    late = p.ask_in(1, "s2", "s2", None, "late?")
    assert late[0].frame["message"] == "The questions of this round were already sent: wait for the next round."


def test_the_count_of_who_asked_follows_who_is_here():
    p = _asking_class("s1")
    p.ask_in(1, "s1", "s1", None, "one?")
    assert frames(p.take_questions(), type="room.questions")[0]["connected"] == 1
    p.presence("join", "s2")
    assert p.questions_unsent
    assert frames(p.take_questions(), type="room.questions")[0]["connected"] == 2
