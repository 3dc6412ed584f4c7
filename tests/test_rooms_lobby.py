"""Classroom rooms, issue 11: students' optional nicknames (checked on the server, kept in the sockets'
memory only, listed to the presenter with the count) and the answer count while a guess is open."""
import re
from urllib.parse import unquote

import pytest

from explainer.rooms import rooms
from explainer.rooms import session as consumers  # the rules (and their limits) are session.py's
from explainer.rooms.models import Room
from tests.test_rooms import close, make_room, presenter, scenario_href, student, until


@pytest.fixture(autouse=True)
def _fresh_attempts():
    rooms.attempts.reset()
    rooms.secret_attempts.reset()
    yield
    rooms.attempts.reset()
    rooms.secret_attempts.reset()


# ---- the check itself ------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, shown", [
    ("Ana", "Ana"),
    ("  Ana \t  Lee\n ", "Ana Lee"),          # trimmed, runs of spaces (tabs, line breaks) collapsed
    ("Ana\u3000Lee", "Ana Lee"),              # an ideographic space is a space too
    ("x" * 20, "x" * 20),                     # exactly the limit
    ("  " + "x" * 20 + "  ", "x" * 20),       # the limit counts after trimming
    ("<b>x</b>", "<b>x</b>"),                 # kept as typed: the pages insert it as text, never as HTML
    ("José", "José"), ("Jose\u0301", "José"),  # one form of an accented letter (NFC)
    ("👩\u200d💻 dev", "👩\u200d💻 dev"),        # an emoji built with a zero-width joiner
    ("Scunthorpe", "Scunthorpe"),             # whole words only: a blocked word inside a name is fine
])
def test_a_nickname_is_trimmed_and_kept_as_typed(raw, shown):
    assert rooms.clean_nickname(raw) == shown


@pytest.mark.parametrize("raw", [None, "", "   ", "\n\t"])
def test_no_nickname_is_fine(raw):
    assert rooms.clean_nickname(raw) is None


@pytest.mark.parametrize("raw, message", [
    ("x" * 21, "at most 20 characters (this one has 21)"),
    ("x" * 5000, "at most 20 characters"),
    ("Ana\x00", "control characters"),
    ("Ana\x1b[31m", "control characters"),
    ("Ana\x1cLee", "control characters"),         # a separator that \\s would have taken for a space
    ("Ana\u202eeeL", "U+202E"),                   # a right-to-left override would flip what follows on the projector
    ("\u2066Ana\u2069", "U+2066"),                # bidi isolates
    ("A\u200bna", "U+200B"),                      # a zero-width space
    ("Ana\ud800", "U+D800"),                      # a lone surrogate (JSON can carry one)
    ("Ana\ue000", "U+E000"),                      # private use
    ("A" + "\u0301" * 5, "accents"),              # "Zalgo" text spills over the lines around it
    (42, "a text"), (["Ana"], "a text"),
])
def test_a_bad_nickname_is_refused_with_a_reason(raw, message):
    with pytest.raises(rooms.NicknameError, match=re.escape(message)):
        rooms.clean_nickname(raw)


@pytest.mark.parametrize("raw", ["shit", "SHIT", "big shit", "Shit!", "ｓｈｉｔ", "sh\u200dit", "bullshit"])
def test_a_blocked_word_is_refused_not_changed(raw):
    with pytest.raises(rooms.NicknameError, match="not allowed in a classroom"):
        rooms.clean_nickname(raw)


# ---- the join page ----------------------------------------------------------------------------------

@pytest.mark.django_db
def test_the_join_page_takes_an_optional_nickname(client):
    room, _ = rooms.create_room()
    r = client.get("/join", {"code": room.code})
    assert r.status_code == 302 and r["Location"] == f"/r/{room.code}/"  # skipping it works
    r = client.get("/join", {"code": room.code, "nickname": "  Ana   <b>x</b> "})
    assert r.status_code == 302
    path, _, fragment = r["Location"].partition("#")
    assert path == f"/r/{room.code}/" and unquote(fragment) == "nick=Ana <b>x</b>"  # in the fragment: never sent on
    r = client.get("/join", {"code": room.code, "nickname": "Shit"})
    html = r.content.decode()
    assert r.status_code == 400 and "not allowed in a classroom" in html and room.code in html
    assert 'aria-invalid="true"' in html
    r = client.get("/join", {"code": room.code, "nickname": "<script>" * 4})
    assert r.status_code == 400 and "<script>" not in r.content.decode() and "at most 20 characters" in r.content.decode()
    assert not [f.name for f in Room._meta.get_fields() if "nick" in f.name]  # nothing of it is stored


# ---- the socket -----------------------------------------------------------------------------------

async def counts_until(p, pred, timeout=5):
    while True:
        f = await p.receive_json_from(timeout=timeout)
        if f["type"] == "room.students" and pred(f):
            return f


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
async def test_the_presenter_sees_the_count_and_the_nicknames():
    room, secret = await make_room()
    p = await presenter(room, secret)
    a, _ = await student(room)
    b, _ = await student(room)
    await counts_until(p, lambda f: f["count"] == 2 and f["names"] == [] and f["more"] == 0)
    await a.send_json_to({"type": "nickname", "name": "  <b>x</b>  "})
    assert await a.receive_json_from() == {"type": "room.nickname", "name": "<b>x</b>"}
    f = await counts_until(p, lambda f: f["names"])
    # as typed (the page escapes it), and the other one counted as joined without a nickname
    assert f == {"type": "room.students", "count": 2, "names": ["<b>x</b>"], "more": 0, "unnamed": 1}
    # a refused nickname is said so to the student (beside the box: "frame"), and the presenter sees nothing of it
    await b.send_json_to({"type": "nickname", "name": "shit"})
    err = await b.receive_json_from()
    assert err["type"] == "error" and err["frame"] == "nickname" and err["error"]["type"] == "invalid_request_error"
    assert "not allowed" in err["error"]["message"]
    await b.send_json_to({"type": "nickname", "name": "Bea"})
    assert (await b.receive_json_from())["name"] == "Bea"
    f = await counts_until(p, lambda f: len(f["names"]) == 2)
    assert f["names"] == ["<b>x</b>", "Bea"]  # in the order they joined
    # an empty name takes it back; leaving takes it off the list
    await a.send_json_to({"type": "nickname", "name": ""})
    assert await a.receive_json_from() == {"type": "room.nickname", "name": None}
    await counts_until(p, lambda f: f["names"] == ["Bea"] and f["count"] == 2)
    await b.disconnect()
    await counts_until(p, lambda f: f["names"] == [] and f["count"] == 1)
    await close(p, a)


@pytest.mark.django_db(transaction=True)
async def test_a_presenter_who_reconnects_gets_the_names_again():
    room, secret = await make_room()
    s, _ = await student(room)
    await s.send_json_to({"type": "nickname", "name": "Ana"})
    await s.receive_json_from()
    p = await presenter(room, secret)
    await counts_until(p, lambda f: f["names"] == ["Ana"] and f["count"] == 1)
    await close(p, s)


@pytest.mark.django_db(transaction=True)
async def test_the_names_are_capped_with_a_count_of_the_rest(monkeypatch):
    monkeypatch.setattr(consumers, "SHOWN_NAMES", 3)
    room, secret = await make_room()
    p = await presenter(room, secret)
    students = []
    for i in range(5):
        s, _ = await student(room)
        await s.send_json_to({"type": "nickname", "name": f"S{i}"})
        await s.receive_json_from()
        students.append(s)
    anonymous, _ = await student(room)
    f = await counts_until(p, lambda f: f["count"] == 6 and f["more"] == 2)
    assert f["names"] == ["S0", "S1", "S2"]
    await close(p, anonymous, *students)


@pytest.mark.django_db(transaction=True)
async def test_nickname_changes_are_rate_limited_and_only_students_have_one(settings):
    room, secret = await make_room()
    p = await presenter(room, secret)
    await p.send_json_to({"type": "nickname", "name": "Teacher"})
    err = (await until(p, "error"))[-1]
    assert err["error"]["message"] == "Only students choose a nickname." and err["frame"] == "nickname"
    s, _ = await student(room)
    replies = []
    for i in range(consumers.NICKNAME_CHANGES + 1):
        await s.send_json_to({"type": "nickname", "name": f"Name {i}"})
        replies.append(await s.receive_json_from())
    assert [r["type"] for r in replies] == ["room.nickname"] * consumers.NICKNAME_CHANGES + ["error"]
    assert replies[-1]["error"]["type"] == "rate_limit_error" and replies[-1]["frame"] == "nickname"
    # refused changes count too, and the socket's frame limit still applies to every frame (nicknames included)
    settings.EXPLAINER_ROOM_STUDENT_FRAMES_PER_10S = 3
    other, _ = await student(room)
    kinds = []
    for _ in range(5):
        await other.send_json_to({"type": "nickname", "name": "x\x00"})
        kinds.append((await other.receive_json_from())["error"]["type"])
    assert kinds[:3] == ["invalid_request_error"] * 3 and kinds[3:] == ["rate_limit_error"] * 2
    await close(p, s, other)


@pytest.mark.django_db(transaction=True)
async def test_an_oversized_or_odd_nickname_frame_is_refused():
    room, _ = await make_room()
    s, _ = await student(room)
    for bad in ({"type": "nickname", "name": "x" * 300}, {"type": "nickname", "name": {"a": 1}},
                {"type": "nickname", "name": "\u202egnp.exe"}):
        await s.send_json_to(bad)
        err = await s.receive_json_from()
        assert err["type"] == "error" and err["error"]["type"] == "invalid_request_error", bad
    await s.send_json_to({"type": "nickname"})  # no name at all: no nickname
    assert await s.receive_json_from() == {"type": "room.nickname", "name": None}
    await close(s)


# ---- the answer count ---------------------------------------------------------------------------------

async def answers_until(p, pred, timeout=5):
    while True:
        f = await p.receive_json_from(timeout=timeout)
        if f["type"] == "room.answers" and pred(f):
            return f


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
async def test_the_presenter_sees_how_many_have_answered():
    room, secret = await make_room()
    p = await presenter(room, secret)
    s1, _ = await student(room)
    s2, _ = await student(room)
    s3, _ = await student(room)
    await counts_until(p, lambda f: f["count"] == 3)
    await p.send_json_to({"type": "state", "href": scenario_href(max_tokens=6)})
    await p.send_json_to({"type": "run", "pace_ms": 0, "mode": "pause"})
    await until(s1, "room.run")
    await until(p, "room.ready")  # the first token is held
    await p.send_json_to({"type": "guess"})
    f = await answers_until(p, lambda f: True)
    assert f == {"type": "room.answers", "index": 0, "answered": 0, "connected": 3}
    opened = (await until(s1, "room.guess"))[-1]
    await s1.send_json_to({"type": "guess", "text": opened["choices"][0]})
    f = await answers_until(p, lambda f: f["answered"] == 1)
    assert f["connected"] == 3
    await s1.send_json_to({"type": "guess", "text": "changed my mind"})  # a changed guess is still one answer
    await s2.send_json_to({"type": "guess", "text": "zebra"})
    await answers_until(p, lambda f: f["answered"] == 2 and f["connected"] == 3)
    await s3.disconnect()  # someone leaves while the class answers: "2 of 2"
    await answers_until(p, lambda f: f["answered"] == 2 and f["connected"] == 2)
    await s2.disconnect()  # a student who answered and left is not counted as a present answer
    await answers_until(p, lambda f: f["answered"] == 1 and f["connected"] == 1)
    # students never get the count (it is the presenter's), and the reveal says how many guessed the draw
    assert not any(fr["type"] == "room.answers" for fr in await until(s1, "room.guessed"))
    await p.send_json_to({"type": "reveal"})
    rv = (await until(s1, "room.reveal"))[-1]
    assert rv["total"] == 2 and 0 <= rv["right"] <= 2
    await p.send_json_to({"type": "stop"})
    await close(p, s1)
