"""Classroom rooms: codes, what a presenter may show, the pages, and ws/rooms/<code>/ at the
protocol level through the real ASGI application (in-memory channel layer)."""
import json
import re
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.utils import timezone

from explainer.asgi import application
from explainer.lifecycle.scenario import Scenario
from explainer.rooms import rooms
from explainer.rooms.models import Room
from explainer.rooms.session import tally
from explainer.stages.runs import codec

ORIGIN = [(b"origin", b"http://127.0.0.1:8000")]


@pytest.fixture(autouse=True)
def _fresh_attempts():
    rooms.attempts.reset()
    rooms.secret_attempts.reset()
    yield
    rooms.attempts.reset()
    rooms.secret_attempts.reset()


# ---- codes, secrets, states ------------------------------------------------------------------

def test_codes_are_six_unambiguous_characters_and_typing_is_forgiving():
    codes = {rooms.new_code() for _ in range(200)}
    assert len(codes) == 200
    assert all(len(c) == 6 and not set(c) & set("01OIL") for c in codes)
    assert rooms.normalize_code(" k7q-m3 ") is None  # 5 characters after cleaning
    assert rooms.normalize_code(" k7q-m3p ") == "K7QM3P"
    assert rooms.normalize_code("K7QM3O") is None  # O is not in the alphabet
    assert rooms.normalize_code("x" * 40) is None and rooms.normalize_code(None) is None


@pytest.mark.django_db
def test_the_secret_is_stored_hashed_and_checked():
    room, secret = rooms.create_room()
    assert secret not in room.secret_hash and len(secret) >= 40
    assert rooms.secret_ok(room, secret)
    assert not rooms.secret_ok(room, secret[:-1] + ("A" if secret[-1] != "A" else "B"))
    assert not rooms.secret_ok(room, None) and not rooms.secret_ok(room, 123)


@pytest.mark.django_db
def test_expired_rooms_are_not_live():
    room, _ = rooms.create_room()
    assert rooms.live_room(room.code) is not None
    Room.objects.filter(pk=room.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert rooms.live_room(room.code) is None


def test_stage_state_accepts_stage_pages_only():
    blob = codec().encode(Scenario().replace(temperature=0.5))
    st = rooms.stage_state(f"/learn/sampling/?s={blob}&embed=1&t=2")
    assert st.slug == "sampling" and "embed" not in st.href and f"s={blob}" in st.href and "t=2" in st.href
    assert rooms.stage_state("/learn/overview/").to_dict() == {"slug": "overview", "href": "/learn/overview/", "title": "Overview", "number": None}
    for bad in ("https://evil.example/learn/overview/", "//evil.example/learn/overview/", "/learn/nope/", "/traces/",
                "/learn/overview/../../admin/", "javascript:alert(1)", None, 5, "/learn/overview/?s=" + "A" * 9000,
                "/learn/overview/?s=tampered"):
        with pytest.raises(rooms.StateError):
            rooms.stage_state(bad)


def test_typed_guesses_count_for_the_candidate_they_match():
    cands = [{"text": " the", "token": 1}, {"text": " a", "token": 2}]
    bars, total = tally({"s1": "the", "s2": " THE ", "s3": "a", "s4": "zebra"}, cands)
    assert total == 4
    assert bars[0] == {"text": " the", "count": 2}
    assert {"text": " a", "count": 1} in bars and {"text": "zebra", "count": 1} in bars


def test_many_different_guesses_are_summed_as_other():
    guesses = {f"s{i}": f"word{i}" for i in range(20)}
    bars, total = tally(guesses, [])
    assert total == 20 and bars[-1] == {"text": None, "count": 8} and len(bars) == 13


# ---- pages -----------------------------------------------------------------------------------

@pytest.mark.django_db
def test_starting_a_room_gives_the_presenter_a_secret_link(client):
    assert client.get("/rooms/").status_code == 200
    r = client.post("/rooms/new")
    assert r.status_code == 303
    m = re.fullmatch(r"/rooms/([A-Z0-9]{6})/present#k=([\w-]+)", r["Location"])
    assert m
    code, secret = m.groups()
    room = Room.objects.get(code=code)
    assert rooms.secret_ok(room, secret)
    page = client.get(f"/rooms/{code}/present")
    html = page.content.decode()
    assert page.status_code == 200 and code in html and "<svg" in html and f"/r/{code}/" in html
    assert secret not in html  # the secret only ever travels in the link's fragment


def test_the_landing_page_says_how_long_a_room_lasts(client, settings):
    assert "A room lasts 6 hours after" in client.get("/rooms/").content.decode()
    settings.EXPLAINER_ROOM_TTL_HOURS = 1
    assert "A room lasts 1 hour after" in client.get("/rooms/").content.decode()


@pytest.mark.django_db
def test_starting_a_room_needs_a_post(client):
    assert client.get("/rooms/new").status_code == 405


@pytest.mark.django_db
def test_joining_by_code(client):
    room, _ = rooms.create_room()
    r = client.get("/join", {"code": room.code.lower()[:3] + "-" + room.code.lower()[3:]})
    assert r.status_code == 302 and r["Location"] == f"/r/{room.code}/"
    page = client.get(f"/r/{room.code}/")
    assert page.status_code == 200 and room.code in page.content.decode()
    assert client.get("/join").status_code == 200
    bad = client.get("/join", {"code": "<script>"})
    assert bad.status_code == 400 and "<script>" not in bad.content.decode()
    assert client.get("/join", {"code": "ZZZZZZ"}).status_code == 404
    assert client.get("/r/ZZZZZZ/").status_code == 404
    assert client.get("/rooms/ZZZZZZ/present").status_code == 404


@pytest.mark.django_db
def test_wrong_codes_are_limited_per_address(client):
    statuses = [client.get("/join", {"code": f"ZZZZ{c}{d}"}).status_code for c in "ABCDEF" for d in "2345"]
    assert statuses[:20] == [404] * 20
    assert statuses[-1] == 429
    room, _ = rooms.create_room()
    # even a right code, until the bucket refills, from a browser that has not been in the room (no pass)
    assert client.get(f"/r/{room.code}/").status_code == 429


@pytest.mark.django_db
def test_the_join_link_points_at_this_machine_on_the_network(client, settings, monkeypatch):
    room, _ = rooms.create_room()
    monkeypatch.setattr("explainer.network.lan_address", lambda: "10.1.2.3")
    monkeypatch.setattr("explainer.rooms.views.listens_on", lambda addr, port: (addr, port) == ("10.1.2.3", 8000))
    # the presenter browses at localhost: students get the network address, same port
    html = client.get(f"/rooms/{room.code}/present", HTTP_HOST="127.0.0.1:8000").content.decode()
    assert f"http://10.1.2.3:8000/r/{room.code}/" in html and "http://127.0.0.1:8000/r/" not in html
    # the presenter already uses a name students can reach: it is kept
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "teacher.local"]
    html = client.get(f"/rooms/{room.code}/present", HTTP_HOST="teacher.local:8000").content.decode()
    assert f"http://teacher.local:8000/r/{room.code}/" in html
    settings.EXPLAINER_LOCAL_ONLY = True
    html = client.get(f"/rooms/{room.code}/present", HTTP_HOST="127.0.0.1:8000").content.decode()
    assert "Phones cannot join yet" in html and "EXPLAINER_LOCAL_ONLY is set" in html and "<svg" not in html
    assert f"http://127.0.0.1:8000/r/{room.code}/" in html  # for this computer only, said so
    settings.EXPLAINER_PUBLIC_URL = "http://classroom.example:8000"
    html = client.get(f"/rooms/{room.code}/present").content.decode()
    assert f"http://classroom.example:8000/r/{room.code}/" in html and "Phones cannot join" not in html and "<svg" in html


@pytest.mark.django_db
def test_the_lobby_says_when_phones_cannot_reach_this_server(client, monkeypatch):
    """Issue 21, item 11: a server bound to 127.0.0.1 (daphne -b 127.0.0.1) while this computer has a network
    address. The address of the network would reach nobody: the lobby says so and how to fix it, with no QR code."""
    room, _ = rooms.create_room()
    monkeypatch.setattr("explainer.network.lan_address", lambda: "10.1.2.3")
    tried = []
    monkeypatch.setattr("explainer.rooms.views.listens_on", lambda addr, port: tried.append((addr, port)) and False)
    html = client.get(f"/rooms/{room.code}/present", HTTP_HOST="127.0.0.1:8000").content.decode()
    assert tried == [("10.1.2.3", 8000)]
    assert "Phones cannot join yet" in html and "listens on 127.0.0.1 only, so phones cannot reach it at 10.1.2.3" in html
    assert "daphne -b 0.0.0.0" in html and "Reload this page" in html
    assert "10.1.2.3:8000/r/" not in html and "<svg" not in html and 'id="qr-toggle"' not in html
    # no network at all
    monkeypatch.setattr("explainer.network.lan_address", lambda: None)
    html = client.get(f"/rooms/{room.code}/present", HTTP_HOST="localhost:8000").content.decode()
    assert "not on a network" in html and "Connect it to the Wi-Fi" in html and "<svg" not in html


def test_listens_on_tells_a_listening_port_from_a_closed_one():
    import socket

    from explainer.rooms.views import listens_on

    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = srv.getsockname()[1]
        assert listens_on("127.0.0.1", port)
    assert not listens_on("127.0.0.1", port)  # closed now: refused


# ---- the socket --------------------------------------------------------------------------------

async def make_room(**state):
    room, secret = await database_sync_to_async(rooms.create_room)()
    if state:
        await database_sync_to_async(Room.objects.filter(pk=room.pk).update)(state=state)
    return room, secret


async def join(code, origin=ORIGIN):
    comm = WebsocketCommunicator(application, f"/ws/rooms/{code}/", headers=origin)
    connected, _ = await comm.connect()
    assert connected
    return comm


async def until(comm, kind, timeout=20):
    """Frames up to and including the first of type ``kind``."""
    seen = []
    while True:
        f = await comm.receive_json_from(timeout=timeout)
        seen.append(f)
        if f["type"] == kind:
            return seen


async def presenter(room, secret):
    comm = await join(room.code)
    assert (await comm.receive_json_from())["type"] == "room.hello"
    await comm.send_json_to({"type": "auth", "secret": secret})
    hello = await comm.receive_json_from()
    assert hello == {**hello, "type": "room.hello", "role": "presenter"}
    return comm


async def student(room):
    comm = await join(room.code)
    hello = await comm.receive_json_from()
    assert hello["type"] == "room.hello" and hello["role"] == "student"
    return comm, hello


async def close(*comms):
    for c in comms:
        await c.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_a_student_sees_where_the_presenter_is():
    room, secret = await make_room()
    p = await presenter(room, secret)
    s, hello = await student(room)
    assert hello["state"] == {"slug": "overview", "href": "/learn/overview/", "title": "Overview", "number": None}
    blob = codec().encode(Scenario().replace(temperature=0.3))
    await p.send_json_to({"type": "state", "href": f"/learn/sampling/?s={blob}&embed=1"})
    f = (await until(s, "room.state"))[-1]
    assert f["state"]["slug"] == "sampling" and f["state"]["href"] == f"/learn/sampling/?s={blob}"
    # a student who joins later starts there too
    s2, hello2 = await student(room)
    assert hello2["state"]["slug"] == "sampling"
    await close(p, s, s2)


@pytest.mark.django_db(transaction=True)
async def test_student_sockets_cannot_drive_the_room():
    room, secret = await make_room()
    p = await presenter(room, secret)
    s, _ = await student(room)
    other, _ = await student(room)
    for cmd in ({"type": "state", "href": "/learn/tokenize/"}, {"type": "run"}, {"type": "pause"}, {"type": "step"},
                {"type": "reveal"}, {"type": "stop"}, {"type": "end"}, {"type": "pace", "pace_ms": 0}):
        await s.send_json_to(cmd)
        err = await s.receive_json_from()
        assert err["type"] == "error" and err["error"]["type"] == "permission_error", cmd
    # a wrong secret does not make a presenter either
    await s.send_json_to({"type": "auth", "secret": secret[:-2] + "xx"})
    assert (await s.receive_json_from())["error"]["type"] == "authentication_error"
    await s.send_json_to({"type": "end"})
    assert (await s.receive_json_from())["error"]["type"] == "permission_error"
    # nothing reached the other student (the first frame it gets is the presenter's next), and the room is still live
    await p.send_json_to({"type": "state", "href": "/learn/overview/"})
    got = await until(other, "room.state")
    assert len(got) == 1 and got[0]["state"]["href"] == "/learn/overview/", got
    assert await database_sync_to_async(rooms.live_room)(room.code) is not None
    await close(p, s, other)


@pytest.mark.django_db(transaction=True)
async def test_bad_frames_get_errors_and_keep_the_socket():
    room, secret = await make_room()
    s, _ = await student(room)
    for raw, kind in (("not json", "invalid_request_error"), ("[1,2]", "invalid_request_error"),
                      (json.dumps({"type": "nope"}), "invalid_request_error"), ("x" * 20000, "request_too_large"),
                      (json.dumps({"type": "guess", "text": "the"}), "invalid_request_error")):
        await s.send_to(text_data=raw)
        assert (await s.receive_json_from())["error"]["type"] == kind
    await s.send_to(bytes_data=b"\x00\x01")
    assert (await s.receive_json_from())["error"]["type"] == "invalid_request_error"
    p = await presenter(room, secret)
    for bad in ({"type": "state", "href": "https://evil.example/"}, {"type": "state"}, {"type": "run", "pace_ms": -1},
                {"type": "run", "pace_ms": "fast"}, {"type": "run", "mode": "fast"}, {"type": "step"}, {"type": "reveal"}):
        await p.send_json_to(bad)
        err = (await until(p, "error"))[-1]
        assert err["error"]["type"] == "invalid_request_error", bad
    await close(p, s)


@pytest.mark.django_db(transaction=True)
async def test_a_flooding_socket_is_told_then_closed(settings):
    settings.EXPLAINER_ROOM_STUDENT_FRAMES_PER_10S = 5
    room, _ = await make_room()
    s, _ = await student(room)
    errors = []
    for _ in range(11):
        await s.send_json_to({"type": "guess", "text": "x"})
    for _ in range(11):
        errors.append((await s.receive_json_from())["error"]["message"])
    assert errors[-1].startswith("Too many frames; the socket is closed")
    assert any(m.startswith("Too many frames: at most 5") for m in errors)
    out = await s.receive_output(timeout=2)
    assert out == {"type": "websocket.close", "code": 4429}


@pytest.mark.django_db(transaction=True)
async def test_unknown_and_expired_rooms_are_closed():
    s = await join("ZZZZZZ")
    f = await s.receive_json_from()
    assert f["error"]["type"] == "not_found_error"
    assert (await s.receive_output(timeout=2))["code"] == 4404
    room, _ = await make_room()
    await database_sync_to_async(Room.objects.filter(pk=room.pk).update)(expires_at=timezone.now() - timedelta(seconds=1))
    s = await join(room.code)
    assert (await s.receive_json_from())["error"]["type"] == "not_found_error"


async def test_other_origins_are_refused():
    comm = WebsocketCommunicator(application, "/ws/rooms/ABCDEF/", headers=[(b"origin", b"http://evil.example")])
    connected, _ = await comm.connect()
    assert not connected


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
async def test_the_presenter_sees_how_many_students_are_connected():
    room, secret = await make_room()
    s1, _ = await student(room)
    s2, _ = await student(room)
    p = await presenter(room, secret)

    async def count_becomes(n):
        while True:
            f = await p.receive_json_from(timeout=5)
            if f["type"] == "room.students" and f["count"] == n:
                return

    await count_becomes(2)
    s3, _ = await student(room)
    await count_becomes(3)
    await s1.disconnect()
    await count_becomes(2)
    await close(p, s2, s3)


def scenario_href(**changes) -> str:
    base = Scenario()
    sc = base.replace(max_tokens=changes.pop("max_tokens", 12), temperature=changes.pop("temperature", 0.8), **changes)
    return f"/learn/sampling/?s={codec().encode(sc)}"


@pytest.mark.django_db(transaction=True)
async def test_a_run_reaches_every_student_in_order():
    room, secret = await make_room()
    p = await presenter(room, secret)
    students = [(await student(room))[0] for _ in range(3)]
    await p.send_json_to({"type": "state", "href": scenario_href(max_tokens=10)})
    await p.send_json_to({"type": "run", "pace_ms": 0})
    runs = []
    for s in students:
        frames = await until(s, "room.run")
        start = frames[-1]
        assert start["phase"] == "start" and start["input_tokens"] > 0
        body = await until(s, "room.run")
        tokens = [f for f in body if f["type"] == "room.token"]
        assert body[-1]["phase"] == "end" and body[-1]["stop_reason"] in ("end_turn", "max_tokens")
        seqs = [f["seq"] for f in frames + body if "seq" in f]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # nothing lost, nothing reordered
        assert [t["index"] for t in tokens] == list(range(len(tokens))) and 0 < len(tokens) <= 10
        for t in tokens:
            assert t["candidates"] and abs(sum(c["p"] for c in t["candidates"])) <= 1.0001
        runs.append([t["token"] for t in tokens])
    assert runs[0] == runs[1] == runs[2]
    await close(p, *students)


@pytest.mark.django_db(transaction=True)
async def test_a_run_runs_the_stage_it_names_and_the_room_follows():
    """Issue 21, item 1: the presenter typed a new question into the stage and pressed Run. The run names the
    stage's address: every screen goes there, the room keeps it, and the class gets a run of the typed prompt."""
    room, secret = await make_room()  # on the overview, with the default prompt
    p = await presenter(room, secret)
    s, _ = await student(room)
    typed = "Why is the sky blue? (typed on the projector)"
    edited = codec().encode(Scenario(messages=[{"role": "user", "content": typed}], max_tokens=3))
    await p.send_json_to({"type": "run", "pace_ms": 0, "href": f"/learn/overview/?s={edited}&embed=1"})
    seen = await until(s, "room.run")
    assert [f["type"] for f in seen] == ["room.state", "room.run"]  # the stage first, then the run of its request
    assert seen[0]["state"]["href"] == f"/learn/overview/?s={edited}"
    assert seen[1]["phase"] == "start" and seen[1]["prompt"] == typed
    assert (await until(s, "room.run"))[-1]["phase"] == "end"
    stored = (await database_sync_to_async(rooms.live_room)(room.code)).state
    assert stored == {"slug": "overview", "href": f"/learn/overview/?s={edited}"}
    late, hello = await student(room)  # who joins now sees that stage
    assert hello["state"]["href"] == stored["href"]

    # a run without an address runs the room's stage as it is: the edited one
    await p.send_json_to({"type": "run", "pace_ms": 0})
    start = (await until(s, "room.run"))[-1]
    assert start["phase"] == "start" and start["prompt"] == typed
    assert (await until(s, "room.run"))[-1]["phase"] == "end"

    # an address that is not a stage, or a tampered scenario, is refused: no run, and the room stays where it was
    for bad in ("https://evil.example/learn/overview/", "/learn/overview/?s=tampered", 42):
        await p.send_json_to({"type": "run", "pace_ms": 0, "href": bad})
        err = (await until(p, "error"))[-1]["error"]
        assert err["type"] == "invalid_request_error" and err["message"].startswith("href:"), bad
    await p.send_json_to({"type": "state", "href": stored["href"]})  # the stage it is on: the next frame the class gets
    got = await until(s, "room.state")
    assert len(got) == 1 and got[0]["state"]["href"] == stored["href"], got  # no run reached the student before it
    assert (await database_sync_to_async(rooms.live_room)(room.code)).state == stored
    await close(p, s, late)


@pytest.mark.django_db(transaction=True)
async def test_a_run_uses_the_stage_s_local_model_and_says_so():
    from explainer.stages.runs import run_of, stamp
    from tests.conftest import LOCAL_MODEL

    room, secret = await make_room()
    p = await presenter(room, secret)
    s, _ = await student(room)
    local = stamp(Scenario(model=LOCAL_MODEL, max_tokens=8))
    await p.send_json_to({"type": "state", "href": f"/learn/sampling/?s={codec().encode(local)}"})
    await p.send_json_to({"type": "run", "pace_ms": 0})
    start = (await until(s, "room.run"))[-1]
    assert start["phase"] == "start" and start["model"] == LOCAL_MODEL
    body = await until(s, "room.run")
    expected = await database_sync_to_async(run_of)(local)
    assert [f["token"] for f in body if f["type"] == "room.token"] == [st["token"] for st in expected.steps]

    # a link made with other weights for that name is refused, never run on whatever answers the name here
    other = local.replace(weights="0" * len(local.weights))
    await p.send_json_to({"type": "state", "href": f"/learn/sampling/?s={codec().encode(other)}"})
    await p.send_json_to({"type": "run", "pace_ms": 0})
    err = (await until(p, "error"))[-1]["error"]
    assert err["type"] == "invalid_request_error" and "other weights for " + LOCAL_MODEL in err["message"]
    await close(p, s)


@pytest.mark.django_db(transaction=True)
async def test_guess_the_next_token():
    room, secret = await make_room()
    p = await presenter(room, secret)
    s1, _ = await student(room)
    s2, _ = await student(room)
    await p.send_json_to({"type": "state", "href": scenario_href(max_tokens=6)})
    await p.send_json_to({"type": "run", "pace_ms": 0, "mode": "pause"})
    await until(s1, "room.run")
    assert (await until(p, "room.ready"))[-1]["index"] == 0  # the first token is computed and held
    await p.send_json_to({"type": "guess"})
    got = await until(s1, "room.guess")
    assert "room.token" not in [f["type"] for f in got], got  # paused: no token was released before the guess
    opened = got[-1]
    assert 1 <= len(opened["choices"]) <= 8 and opened["index"] == 0
    await until(s2, "room.guess")
    pick = opened["choices"][0]
    await s1.send_json_to({"type": "guess", "text": pick})
    assert (await s1.receive_json_from())["type"] == "room.guessed"
    await s2.send_json_to({"type": "guess", "text": "  " + pick.strip().upper() + " "})
    await s2.receive_json_from()
    tallies = [f for f in await until(p, "room.tally") if f["type"] == "room.tally"]
    while tallies[-1]["total"] < 2:
        tallies.append((await until(p, "room.tally"))[-1])
    await p.send_json_to({"type": "reveal"})
    frames = await until(s1, "room.token")
    rv = next(f for f in frames if f["type"] == "room.reveal")
    assert rv["total"] == 2 and sum(b["count"] for b in rv["guesses"]) == 2
    model_texts = [m["text"] for m in rv["model"]]
    assert rv["drawn"]["text"] == frames[-1]["text"] and frames[-1]["index"] == 0
    assert rv["right"] == sum(b["count"] for b in rv["guesses"] if b["text"] == rv["drawn"]["text"])
    assert all(0 <= m["p"] <= 1 for m in rv["model"]) and pick in model_texts
    # students cannot guess once it is revealed
    await s2.send_json_to({"type": "guess", "text": "late"})
    errs = await until(s2, "error")
    assert errs[-1]["error"]["message"] == "No guess is open right now."
    # step releases one more token while paused
    await p.send_json_to({"type": "step"})
    nxt = (await until(s1, "room.token"))[-1]
    assert nxt["index"] == 1
    await p.send_json_to({"type": "stop"})
    end = (await until(s1, "room.run"))[-1]
    assert end["phase"] == "end"
    await close(p, s1, s2)


@pytest.mark.django_db(transaction=True)
async def test_ending_a_room_closes_it_for_everyone():
    room, secret = await make_room()
    p = await presenter(room, secret)
    s, _ = await student(room)
    await p.send_json_to({"type": "end"})
    assert (await until(s, "room.ended"))[-1]["type"] == "room.ended"
    assert (await s.receive_output(timeout=2))["code"] == 4410
    assert await database_sync_to_async(rooms.live_room)(room.code) is None


@pytest.mark.django_db(transaction=True)
async def test_a_student_who_joins_during_a_run_catches_up():
    room, secret = await make_room()
    p = await presenter(room, secret)
    early, _ = await student(room)
    await p.send_json_to({"type": "state", "href": scenario_href(max_tokens=8)})
    await p.send_json_to({"type": "run", "pace_ms": 0, "mode": "pause"})
    for i in range(2):
        assert (await until(p, "room.ready"))[-1]["index"] == i
        await p.send_json_to({"type": "step"})
        await until(early, "room.token")
    assert (await until(p, "room.ready"))[-1]["index"] == 2
    await p.send_json_to({"type": "guess"})
    await until(early, "room.guess")
    late, _ = await student(room)
    catchup = (await until(late, "room.catchup"))[-1]
    assert [t["index"] for t in catchup["tokens"]] == [0, 1] and catchup["last"]["index"] == 1
    assert catchup["run"]["phase"] == "start" and catchup["guess"]["index"] == 2 and catchup["end"] is None
    await late.send_json_to({"type": "guess", "text": "x"})  # the late student can guess too
    assert (await late.receive_json_from())["type"] == "room.guessed"
    await p.send_json_to({"type": "stop"})
    await close(p, early, late)
