""""Everyone asks" (issue 23, item 4) at the socket level, through the real ASGI application: the presenter opens a
round, each student asks one question, the presenter sends them all at once, each phone streams its own reply, and
the presenter's screen gets the questions (without the hidden ones) and the scheduler's record of the class's
requests sharing the model's decode steps."""
import json
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from explainer.lifecycle import frames as fr
from explainer.lifecycle.engine import Engine
from explainer.lifecycle.payload import parse_request
from explainer.lifecycle.scenario import Scenario
from explainer.llm import budget
from explainer.rooms import asking, rooms
from explainer.web.runner import get_engine
from tests.test_rooms import close, make_room, presenter, student, until

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = ["What does a tokenizer do?", "Why do models need a KV cache?", "How is a token sampled?",
             "What is a context window?"]


async def ask(s, text):
    """A student asks; returns the frame that answered (room.asked, or an error)."""
    await s.send_json_to({"type": "question", "text": text})
    while True:
        f = await s.receive_json_from(timeout=20)
        if f["type"] in ("room.asked", "error"):
            return f


async def questions_until(p, pred, timeout=20):
    """The presenter's room.questions frames up to the first that satisfies ``pred``; every frame seen, as text too."""
    seen = []
    while True:
        f = await p.receive_json_from(timeout=timeout)
        seen.append(f)
        if f["type"] == "room.questions" and pred(f):
            return seen


async def reply_of(s):
    """A student's frames from the round's "sent" to the end of their reply."""
    frames = await until(s, "room.ask")
    assert frames[-1]["phase"] == "sent"
    body = []
    while True:
        f = await s.receive_json_from(timeout=60)
        body.append(f)
        if f["type"] == "room.reply" and f["phase"] == "end":
            return body


def alone(text) -> list[str]:
    """The reply a question gets when it runs by itself (no batch), as the room runs it."""
    sc = Scenario(messages=[{"role": "user", "content": text}], max_tokens=asking.ASK_MAX_TOKENS)
    return [e["piece"] for e in Engine().stream(parse_request(sc.request_body()), seed=sc.seed) if e["type"] == fr.TOKEN]


async def timeline_done(p, timeout=60):
    frames = []
    while True:
        f = await p.receive_json_from(timeout=timeout)
        frames.append(f)
        if f["type"] == "room.timeline" and f["done"]:
            return frames


@pytest.mark.django_db(transaction=True)
async def test_each_phone_streams_its_own_reply_and_the_class_shares_the_batch():
    room, secret = await make_room()
    p = await presenter(room, secret)
    students = [(await student(room))[0] for _ in QUESTIONS]
    await p.send_json_to({"type": "ask", "op": "open"})
    for s in students:
        opened = (await until(s, "room.ask"))[-1]
        assert opened["phase"] == "open" and opened["max_chars"] == rooms.MAX_QUESTION_CHARS
    for s, q in zip(students, QUESTIONS, strict=True):
        f = await ask(s, q)
        assert f == {"type": "room.asked", "round": opened["round"], "text": q}
    listed = (await questions_until(p, lambda f: f["asked"] == len(QUESTIONS)))[-1]
    assert [q["text"] for q in listed["questions"]] == QUESTIONS and {q["status"] for q in listed["questions"]} == {"waiting"}

    await p.send_json_to({"type": "ask", "op": "send"})
    for s, q in zip(students, QUESTIONS, strict=True):
        body = await reply_of(s)
        replies = [f for f in body if f["type"] == "room.reply"]
        assert replies[0]["phase"] == "start" and replies[-1]["phase"] == "end" and "error" not in replies[-1]
        tokens = [f for f in replies if f["phase"] == "token"]
        assert [t["index"] for t in tokens] == list(range(len(tokens))) and len(tokens) == replies[-1]["output_tokens"]
        # its own reply, token for token the one its question gets alone: no other phone's tokens, whoever shared the batch
        assert [t["piece"] for t in tokens] == alone(q)
        assert not [f for f in body if f["type"] in ("room.token", "room.run")]

    seen = await timeline_done(p)
    final = seen[-1]
    ours = set(final["highlight"])
    assert len(ours) == len(QUESTIONS) and set(final["names"]) == {str(i) for i in ours}
    assert sorted(final["names"].values()) == [f"Q{i}" for i in range(1, len(QUESTIONS) + 1)]
    assert all(r["label"] == "" for r in final["requests"])  # nobody's label reaches a screen
    assert any(len(ours & set(st["rows"])) > 1 for st in final["steps"]), "the class's requests never shared a step"
    done = [f for f in seen if f["type"] == "room.questions"][-1]
    assert {q["status"] for q in done["questions"]} == {"done"} and done["answered"] == len(QUESTIONS)

    # the scheduler's own record: the class's requests, labelled with the room, are rows sharing decode steps
    record = get_engine().scheduler.record()
    mine = {r["id"] for r in record["requests"] if r["label"].startswith(f"room:{room.code}:")}
    assert len(mine) == len(QUESTIONS) and mine == ours
    assert any(len(mine & set(st["rows"])) > 1 for st in record["steps"])
    await close(p, *students)


@pytest.mark.django_db(transaction=True)
async def test_a_hidden_question_never_reaches_the_projector_again():
    room, secret = await make_room()
    p = await presenter(room, secret)
    (a, _), (b, _) = await student(room), await student(room)
    await b.send_json_to({"type": "nickname", "name": "Bea"})
    await until(b, "room.nickname")
    await p.send_json_to({"type": "ask", "op": "open"})
    await until(a, "room.ask")
    await until(b, "room.ask")
    hostile = "<img src=x onerror=alert(1)> what is a token?"
    assert (await ask(a, hostile))["type"] == "room.asked"
    assert (await ask(b, "What is a logit?"))["type"] == "room.asked"
    listed = (await questions_until(p, lambda f: f["asked"] == 2))[-1]
    qid = next(q["qid"] for q in listed["questions"] if q["text"] == hostile)
    assert next(q["name"] for q in listed["questions"] if q["qid"] != qid) == "Bea"
    await p.send_json_to({"type": "ask", "op": "hide", "qid": qid})
    hidden = (await questions_until(p, lambda f: f["hidden"] == 1))[-1]
    assert [q["text"] for q in hidden["questions"]] == ["What is a logit?"]

    await p.send_json_to({"type": "ask", "op": "send"})
    await reply_of(a)  # a hidden question is hidden from the projector only: its phone still gets its reply
    after = await timeline_done(p)
    assert all("onerror" not in json.dumps(f) for f in after)  # in no later frame to the presenter, in no form
    assert sorted(after[-1]["names"].values()) == ["Q1", "Q2 · Bea"]  # the timeline names a question by its number
    # hiding needs a question of this round
    for bad in (99, "1", None, True):
        await p.send_json_to({"type": "ask", "op": "hide", "qid": bad})
        assert (await until(p, "error"))[-1]["error"]["message"].startswith("qid:")
    await close(p, a, b)


@pytest.mark.django_db(transaction=True)
async def test_a_question_is_checked_as_a_nickname_is():
    room, secret = await make_room()
    p = await presenter(room, secret)
    s, _ = await student(room)
    # nothing is open yet
    assert (await ask(s, "Too early?"))["error"]["message"] == "No round of questions is open right now."
    await p.send_json_to({"type": "ask", "op": "open"})
    await until(s, "room.ask")
    refused = await ask(s, "why is this shit so slow?")
    assert refused["frame"] == "question" and refused["error"]["type"] == "invalid_request_error"
    # the nickname check's sentence, about a question
    assert refused["error"]["message"] == rooms.not_allowed("question")
    assert rooms.not_allowed("nickname") == "That nickname is not allowed in a classroom. Please choose another one."
    with pytest.raises(rooms.NicknameError, match=rooms.not_allowed("nickname")):
        rooms.clean_nickname("shit")
    for bad, why in (("x" * (rooms.MAX_QUESTION_CHARS + 1), f"at most {rooms.MAX_QUESTION_CHARS} characters"),
                     ("x" * 5000, f"at most {rooms.MAX_QUESTION_CHARS} characters"),
                     ("Why\u202e?", "U+202E"), ("   ", "Type a question first."), (42, "a text")):
        f = await ask(s, bad)
        assert f["frame"] == "question" and why in f["error"]["message"], (bad[:20] if isinstance(bad, str) else bad, f)
    # refusals do not use up the student's question; the first accepted one is their only one
    assert (await ask(s, "  What   is\ta token?  "))["text"] == "What is a token?"
    assert (await ask(s, "And another?"))["error"]["message"] == "One question per round: yours is already in."
    # only the presenter drives a round, only a student asks
    await s.send_json_to({"type": "ask", "op": "send"})
    assert (await until(s, "error"))[-1]["error"]["type"] == "permission_error"
    assert (await ask(p, "Me too?"))["error"]["message"] == "Only students ask questions."
    await close(p, s)


@pytest.mark.django_db(transaction=True)
async def test_a_round_has_a_size_and_takes_no_question_once_sent(monkeypatch):
    monkeypatch.setattr(asking, "MAX_QUESTIONS", 2)
    room, secret = await make_room()
    p = await presenter(room, secret)
    students = [(await student(room))[0] for _ in range(3)]
    await p.send_json_to({"type": "ask", "op": "send"})
    assert (await until(p, "error"))[-1]["error"]["message"].startswith("No round of questions is open")
    await p.send_json_to({"type": "ask", "op": "open"})
    await p.send_json_to({"type": "ask", "op": "send"})  # nothing asked yet: nothing to send
    assert (await until(p, "error"))[-1]["error"]["message"].startswith("No question has come in yet")
    for s in students:
        await until(s, "room.ask")
    assert (await ask(students[0], "One?"))["type"] == "room.asked"
    assert (await ask(students[1], "Two?"))["type"] == "room.asked"
    full = await ask(students[2], "Three?")
    assert full["frame"] == "question" and full["error"]["message"] == "This round is full (2 questions): wait for the next one."
    await p.send_json_to({"type": "ask", "op": "send"})
    for s in students:
        assert (await until(s, "room.ask"))[-1]["phase"] == "sent"
    late = await ask(students[2], "Now?")
    assert late["error"]["message"] == "No round of questions is open right now."
    await p.send_json_to({"type": "ask", "op": "close"})
    for s in students:
        assert (await until(s, "room.ask"))[-1]["phase"] == "closed"
    await close(p, *students)


@pytest.mark.django_db(transaction=True)
async def test_a_flood_of_questions_gets_the_room_s_usual_treatment(settings):
    settings.EXPLAINER_ROOM_STUDENT_FRAMES_PER_10S = 5
    room, _ = await make_room()
    s, _ = await student(room)
    for _ in range(11):
        await s.send_json_to({"type": "question", "text": "again?"})
    messages = [(await s.receive_json_from())["error"]["message"] for _ in range(11)]
    assert messages[-1].startswith("Too many frames; the socket is closed")
    assert (await s.receive_output(timeout=2)) == {"type": "websocket.close", "code": 4429}


@pytest.mark.django_db(transaction=True)
async def test_a_student_who_leaves_mid_reply_cancels_their_request(monkeypatch):
    # The model's decode steps are held at a gate after the first one, so the phone leaves mid-reply whatever the
    # machine's speed: the request must leave on its own (cancelled), not by finishing. A held step checks its
    # run's budget as the model's own work does (a request alone runs its steps in its own thread).
    model, gate, calls = get_engine().model, threading.Event(), []
    decode = model.decode

    def gated(*args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            while not gate.wait(0.02):
                budget.check()
        return decode(*args, **kwargs)
    monkeypatch.setattr(model, "decode", gated)
    try:
        room, secret = await make_room()
        p = await presenter(room, secret)
        s, _ = await student(room)
        await p.send_json_to({"type": "ask", "op": "open"})
        await until(s, "room.ask")
        await ask(s, "Tell me everything about the history of computers.")
        await p.send_json_to({"type": "ask", "op": "send"})
        while (await until(s, "room.reply"))[-1]["phase"] != "token":
            pass
        await s.disconnect()
        listed = await questions_until(p, lambda f: f["questions"] and f["questions"][0]["status"] not in ("waiting", "answering"))
        assert listed[-1]["questions"][0]["status"] == "left"
        final = (await timeline_done(p))[-1]
        (req,) = [r for r in final["requests"] if r["id"] in final["highlight"]]
        assert req["reason"] == "cancelled" and req["left"] is not None
        assert not gate.is_set()  # it left while its next step was still held: the phone's going stopped it
    finally:
        gate.set()
    await close(p)


@pytest.mark.django_db(transaction=True)
async def test_a_full_server_is_a_clear_sentence_on_the_phone(settings, own_services):
    settings.EXPLAINER_ENGINE_WORKERS = 0  # the bundled model's lane takes nothing: every request is its 529
    settings.EXPLAINER_ENGINE_QUEUE = 0
    own_services()
    room, secret = await make_room()
    p = await presenter(room, secret)
    s, _ = await student(room)
    await p.send_json_to({"type": "ask", "op": "open"})
    await until(s, "room.ask")
    await ask(s, "Are you there?")
    await p.send_json_to({"type": "ask", "op": "send"})
    end = (await reply_of(s))[-1]
    assert end["error"] == {"type": "overloaded_error", "message": asking.busy_sentence()}
    assert "529" in end["error"]["message"]
    listed = (await questions_until(p, lambda f: f["questions"] and f["questions"][0]["status"] not in ("waiting", "answering")))[-1]
    assert listed["questions"][0]["status"] == "busy"
    await close(p, s)


@pytest.mark.django_db(transaction=True)
async def test_a_student_who_reconnects_keeps_their_question():
    room, secret = await make_room()
    p = await presenter(room, secret)
    first, hello = await student(room)
    await p.send_json_to({"type": "ask", "op": "open"})
    await until(first, "room.ask")
    assert (await ask(first, "Is this kept?"))["type"] == "room.asked"
    await first.disconnect()
    from channels.testing import WebsocketCommunicator

    from explainer.asgi import application
    from tests.test_rooms import ORIGIN

    again = WebsocketCommunicator(application, f"/ws/rooms/{room.code}/?sid={hello['sid']}", headers=ORIGIN)
    assert (await again.connect())[0]
    seen = await until(again, "room.asked")  # the open round, then the question the room already has from them
    assert [f["type"] for f in seen if f["type"].startswith("room.ask")] == ["room.ask", "room.asked"]
    assert seen[-1]["text"] == "Is this kept?"
    assert (await ask(again, "A second one?"))["error"]["message"] == "One question per round: yours is already in."
    await p.send_json_to({"type": "ask", "op": "send"})
    end = (await reply_of(again))[-1]
    assert end["phase"] == "end" and "error" not in end
    assert fr.ROOM_REPLY == end["type"]
    await close(p, again)


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
async def test_sixteen_students_ask_at_once():
    """Issue 23's "done": sixteen phones each stream their own reply while the projector shows them sharing the model."""
    room, secret = await make_room()
    p = await presenter(room, secret)
    students = [(await student(room))[0] for _ in range(16)]
    await p.send_json_to({"type": "ask", "op": "open"})
    for s in students:
        await until(s, "room.ask")
    questions = [f"What is a {w}?" for w in ("token", "logit", "prompt", "cache", "batch", "model", "layer", "head",
                                              "vector", "tensor", "window", "sampler", "stream", "server", "request", "reply")]
    for s, q in zip(students, questions, strict=True):
        assert (await ask(s, q))["type"] == "room.asked"
    await p.send_json_to({"type": "ask", "op": "send"})
    for s, q in zip(students, questions, strict=True):
        tokens = [f["piece"] for f in await reply_of(s) if f["type"] == "room.reply" and f["phase"] == "token"]
        assert tokens == alone(q)
    final = (await timeline_done(p))[-1]
    ours = set(final["highlight"])
    assert len(ours) == 16
    assert max(len(ours & set(st["rows"])) for st in final["steps"]) > 2
    await close(p, *students)


@pytest.mark.skipif(not shutil.which("node"), reason="needs Node.js (scripts/test.sh installs it)")
def test_the_projector_s_sentence_says_what_the_timeline_shows(tmp_path):
    """static/js/rooms/ask-summary.js: the sentence under the timeline, on a frame as the server makes it: the class's requests, the
    steps they shared, and, with several server processes, the answered questions another process served."""
    step = {"kv_bytes": 0}
    frame = {"type": "room.timeline", "round": 1, "done": True, "max_batch": 32, "kv_budget_bytes": None,
             "steps": [{**step, "index": 0, "start": 0.1, "end": 0.2, "rows": [5]},
                       {**step, "index": 1, "start": 0.2, "end": 0.3, "rows": [5, 6, 7]},
                       {**step, "index": 2, "start": 0.3, "end": 0.6, "rows": [6]}],
             "requests": [{"id": i, "label": "", "prompt_tokens": 9, "kv_reserved": 1, "queued": 0, "admitted": 0,
                           "first_step": 0.1, "left": 0.6, "tokens": n, "reason": "end"} for i, n in ((5, 20), (6, 30), (7, 4))],
             "highlight": [5, 6], "names": {"5": "Q1", "6": "Q2"}}
    script = tmp_path / "summary.mjs"
    script.write_text(
        f"import {{ timelineSummary }} from {json.dumps((ROOT / 'static/js/rooms/ask-summary.js').as_uri())};\n"
        f"const t = {json.dumps(frame)};\n"
        "console.log(JSON.stringify([timelineSummary(t, 2), timelineSummary(t, 5), timelineSummary({...t, done: false}, 5)]));\n")
    alone, spread, live = json.loads(subprocess.run(["node", str(script)], capture_output=True, text=True, check=True).stdout)
    assert alone == ("2 requests in 3 decode steps, up to 2 of them in one step. 50 tokens in 500 ms: "
                     "100 tokens a second for the class together.")
    assert spread == alone + (" 3 more answered questions were served by another server process, which batches its own, "
                              "so they are not drawn here.")
    assert live.endswith("(so far).")
