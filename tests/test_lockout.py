"""Failure limits that cannot lock out the innocent, and cannot be raced (issue 25, item 4).

Someone else's wrong room codes, from the same address (a class behind one router), never refuse a
student who joined, nor the presenter; 100 concurrent wrong codes make at most the budget's worth of
lookups. The same for API keys is in tests/api/test_lockout.py; the limiter itself is checked here
with an injected clock.
"""
import asyncio
import re
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from channels.testing import WebsocketCommunicator
from django.test import Client

from explainer.asgi import application
from explainer.lifecycle.gateway import FailureLimiter
from explainer.rooms import rooms

ORIGIN = (b"origin", b"http://127.0.0.1:8000")
SCHOOL = "10.20.30.40"  # one router: the class, its presenter and a pupil typing codes at random


@pytest.fixture(autouse=True)
def _fresh_limits():
    rooms.attempts.reset()
    rooms.secret_attempts.reset()
    yield
    rooms.attempts.reset()
    rooms.secret_attempts.reset()


def wrong_codes(n, start=0):
    """``n`` well-formed codes that are no live room (Z is in the alphabet; no test room starts ZZ)."""
    digits = rooms.ALPHABET
    return [f"ZZ{digits[i // 961 % 31]}{digits[i // 31 % 31]}{digits[i % 31]}2" for i in range(start, start + n)]


# ---- the limiter, on a clock of our own ---------------------------------------------------------------

def test_wrong_attempts_are_slowed_to_the_promised_rate():
    lim = FailureLimiter(capacity=20, per_minute=10)
    answers = []
    for second in range(600):  # one wrong key a second for ten minutes
        t = lim.reserve("nat", "sk-exp-wrong", now=float(second))
        if t.allowed:
            lim.settle(t, ok=False, now=float(second))
        answers.append("401" if t.allowed else "429")
    assert answers[:20] == ["401"] * 20 and answers.count("401") <= 20 + 10 * 10  # the promised 10 a minute


def test_a_right_secret_gives_its_reservation_back():
    lim = FailureLimiter(capacity=2, per_minute=1)
    for _ in range(100):  # right every time: nothing is ever spent
        lim.settle(lim.reserve("nat", "code", now=0.0), ok=True, now=0.0)
    assert lim.reserve("nat", "code", now=0.0).allowed


def test_reserving_is_atomic_under_threads():
    lim = FailureLimiter(capacity=20, per_minute=10, total=(50, 10))
    start = threading.Barrier(16)
    checked = []

    def attack(i):
        start.wait()
        for j in range(25):
            t = lim.reserve(f"10.0.{i}.{j % 5}", f"code-{i}-{j}")  # 80 addresses, 400 distinct codes
            if t.allowed:
                checked.append(1)
                lim.settle(t, ok=False)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(attack, range(16)))
    assert len(checked) <= 50 + 1  # the total's burst (plus what refills while the threads run)


def test_a_failure_per_subject_is_counted_apart_from_the_address():
    lim = FailureLimiter(capacity=3, per_minute=1)
    for i in range(3):  # three addresses each try the same key prefix once
        lim.settle(lim.reserve(f"10.0.0.{i}", "sk-exp-AbCdE", now=0.0), ok=False, now=0.0)
    t = lim.reserve("10.0.0.9", "sk-exp-AbCdE", now=0.0)
    assert t.over_budget and t.limited_by == "subject" and not t.allowed  # no over-budget checks configured
    assert not lim.reserve("10.0.0.9", "sk-exp-other", now=0.0).over_budget  # that address is fine otherwise


def test_a_flood_of_new_names_pushes_out_only_names_not_used_lately():
    lim = FailureLimiter(capacity=2, per_minute=1, max_entries=100)
    for _ in range(2):
        lim.settle(lim.reserve("attacker", now=0.0), ok=False, now=0.0)
    for i in range(1000):  # ten times what the table holds: its memory stays bounded, the attacker's count stays
        lim.reserve(f"filler-{i}", now=0.0)
        if i % 10 == 0:
            assert not lim.reserve("attacker", now=0.0).allowed
    assert len(lim._addresses._table) == 100


# ---- pages and sockets of a room, under a pupil typing codes from the same address --------------------

def cookie_header(client: Client) -> tuple[bytes, bytes]:
    return b"cookie", "; ".join(f"{m.key}={m.coded_value}" for m in client.cookies.values()).encode()


async def until(comm, kind):
    while (frame := await comm.receive_json_from(timeout=20))["type"] != kind:
        pass
    return frame


async def socket(code, addr=SCHOOL, cookies=None):
    comm = WebsocketCommunicator(application, f"/ws/rooms/{code}/", headers=[ORIGIN] + ([cookies] if cookies else []))
    comm.scope["client"] = (addr, 40000)
    connected, _ = await comm.connect(timeout=20)
    assert connected
    return comm, await comm.receive_json_from(timeout=20)


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
async def test_wrong_codes_from_the_address_never_lock_out_a_joined_class_or_its_presenter():
    from asgiref.sync import sync_to_async

    teacher, pupil, prankster = (Client(REMOTE_ADDR=SCHOOL) for _ in range(3))
    get = sync_to_async(lambda c, *a, **k: c.get(*a, **k))
    started = await sync_to_async(teacher.post)("/rooms/new")
    code, secret = re.fullmatch(r"/rooms/(\w+)/present#k=([\w-]+)", started["Location"]).groups()
    assert (await get(pupil, "/join", {"code": code.lower()})).status_code == 302
    assert (await get(pupil, f"/r/{code}/")).status_code == 200

    refused = 0
    for i, wrong in enumerate(wrong_codes(200)):
        status = (await get(prankster, "/join", {"code": wrong})).status_code
        refused += status == 429
        if i % 20 == 0:  # meanwhile the class reloads, reconnects, and the presenter takes the room again
            assert (await get(pupil, f"/r/{code}/")).status_code == 200
            assert (await get(teacher, f"/rooms/{code}/present")).status_code == 200
            s, hello = await socket(code, cookies=cookie_header(pupil))
            assert hello["type"] == "room.hello" and hello["role"] == "student"
            p, hello = await socket(code, cookies=cookie_header(teacher))
            assert hello["type"] == "room.hello"
            await p.send_json_to({"type": "auth", "secret": secret})
            assert (await until(p, "room.hello"))["role"] == "presenter"
            await s.disconnect()
            await p.disconnect()
    assert refused >= 150  # the prankster is slowed: a burst of 20, then 10 a minute
    # ... and so is any new lookup from the address, even of the right code: that would be a guess
    newcomer = Client(REMOTE_ADDR=SCHOOL)
    limited = await get(newcomer, f"/r/{code}/")
    assert limited.status_code == 429 and int(limited["Retry-After"]) >= 1
    s, frame = await socket(code)
    assert frame["error"]["type"] == "rate_limit_error"
    # ... unless it comes by the room's own link (the QR code on the projector): signed, so not a guess
    presenter_page = (await get(teacher, f"/rooms/{code}/present")).content.decode()
    link = re.search(r'class="join-direct">or open <a href="[^"]*(/r/\w+/\?j=[\w-]+)"', presenter_page).group(1)
    scanned = await get(newcomer, link)
    assert scanned.status_code == 200
    s, hello = await socket(code, cookies=cookie_header(newcomer))  # and its socket, by the pass the page gave
    assert hello["type"] == "room.hello" and hello["role"] == "student"
    await s.disconnect()
    # a signature of another code, or a made-up one, is no way round the limit
    real = rooms.join_token(code)
    for forged in (rooms.join_token("ZZZZZ2"), "A" * rooms.JOIN_TOKEN_CHARS, real[:-1] + ("x" if real[-1] != "x" else "y"), ""):
        assert (await get(Client(REMOTE_ADDR=SCHOOL), f"/r/{code}/", {"j": forged})).status_code == 429
    # another address is not affected
    assert (await get(Client(REMOTE_ADDR="192.0.2.7"), f"/r/{code}/")).status_code == 200


@pytest.mark.django_db(transaction=True)
async def test_wrong_secrets_never_refuse_the_right_one(settings):
    from asgiref.sync import sync_to_async

    settings.EXPLAINER_ROOM_STUDENT_FRAMES_PER_10S = 1000
    teacher = Client(REMOTE_ADDR=SCHOOL)
    started = await sync_to_async(teacher.post)("/rooms/new")
    code, secret = re.fullmatch(r"/rooms/(\w+)/present#k=([\w-]+)", started["Location"]).groups()
    s, _ = await socket(code, cookies=cookie_header(teacher))
    kinds = []
    for i in range(40):  # a pupil's socket tries secrets
        await s.send_json_to({"type": "auth", "secret": f"guess-{i}"})
        kinds.append((await s.receive_json_from(timeout=20))["error"]["type"])
    assert kinds[:20] == ["authentication_error"] * 20 and kinds[-1] == "rate_limit_error"
    p, _ = await socket(code, cookies=cookie_header(teacher))
    await p.send_json_to({"type": "auth", "secret": secret})
    assert (await until(p, "room.hello"))["role"] == "presenter"
    await s.disconnect()
    await p.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_a_pass_is_for_its_own_room_only_and_cannot_be_forged(settings):
    from asgiref.sync import sync_to_async

    teacher = Client(REMOTE_ADDR=SCHOOL)
    started = await sync_to_async(teacher.post)("/rooms/new")
    code = re.fullmatch(r"/rooms/(\w+)/present#k=[\w-]+", started["Location"]).group(1)
    prankster = Client(REMOTE_ADDR=SCHOOL)
    for wrong in wrong_codes(25):
        await sync_to_async(prankster.get)("/join", {"code": wrong})
    # the teacher's pass, copied under another code's name, or a made-up one: limited like no pass at all
    value = teacher.cookies[rooms.pass_name(code)].value
    prankster.cookies[rooms.pass_name("ZZZZZ2")] = value
    prankster.cookies[rooms.pass_name(code)] = code
    assert (await sync_to_async(prankster.get)("/r/ZZZZZ2/")).status_code == 429
    assert (await sync_to_async(prankster.get)(f"/r/{code}/")).status_code == 429
    assert (await sync_to_async(teacher.get)(f"/r/{code}/")).status_code == 200


# ---- races ---------------------------------------------------------------------------------------------

def count_lookups(monkeypatch):
    seen = []
    real = rooms.live_room

    def counted(code):
        seen.append(code)
        return real(code)

    monkeypatch.setattr(rooms, "live_room", counted)
    return seen


@pytest.mark.django_db(transaction=True)
async def test_100_concurrent_wrong_codes_on_the_socket_make_at_most_the_budget_of_lookups(monkeypatch, settings):
    settings.EXPLAINER_ROOM_SOCKETS_PER_ADDRESS = 1000
    looked_up = count_lookups(monkeypatch)

    async def attempt(code):
        comm = WebsocketCommunicator(application, f"/ws/rooms/{code}/", headers=[ORIGIN])
        comm.scope["client"] = (SCHOOL, 40000)
        await comm.connect(timeout=30)
        frame = await comm.receive_json_from(timeout=30)
        await comm.disconnect()
        return frame["error"]["type"]

    answers = await asyncio.gather(*(attempt(c) for c in wrong_codes(100)))
    assert len(looked_up) <= 20, len(looked_up)
    assert answers.count("not_found_error") == len(looked_up) and answers.count("rate_limit_error") == 100 - len(looked_up)


@pytest.mark.django_db(transaction=True)
def test_100_concurrent_wrong_codes_on_the_pages_make_at_most_the_budget_of_lookups(monkeypatch):
    looked_up = count_lookups(monkeypatch)
    start = threading.Barrier(20)

    def attack(codes):
        client = Client(REMOTE_ADDR=SCHOOL)
        start.wait()
        return [client.get("/join", {"code": c}).status_code for c in codes]

    codes = wrong_codes(100)
    with ThreadPoolExecutor(20) as pool:
        statuses = [s for batch in pool.map(attack, [codes[i::20] for i in range(20)]) for s in batch]
    assert len(looked_up) <= 20, len(looked_up)
    assert statuses.count(404) == len(looked_up) and statuses.count(429) == 100 - len(looked_up)


def test_a_join_token_signed_before_a_key_rotation_still_counts(settings):
    settings.SECRET_KEY = "the-old-secret"
    before = rooms.join_token("ABC234")
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = "the-new-secret", ["the-old-secret"]
    assert rooms.join_token("ABC234") != before
    assert rooms.is_join_token(before, "ABC234") and rooms.is_join_token(rooms.join_token("ABC234"), "ABC234")
    assert not rooms.is_join_token(before, "ABC235") and not rooms.is_join_token(before[:-1], "ABC234")
    settings.SECRET_KEY_FALLBACKS = []
    assert not rooms.is_join_token(before, "ABC234")
