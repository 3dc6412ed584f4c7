"""Redis, the rooms' channel layer, goes away and comes back: every room socket is told
(``room.interrupted``) and closed with 4503 instead of going silent, a presenter's run stops, the
server logs a warning rather than tracebacks, and once Redis is back the same room works again (it
lives in the database, not in Redis).

Runs a private redis-server (``redis-server`` on the PATH, or /usr/bin/redis-server) on a free port,
and the app under Daphne pointed at it."""
from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from explainer.lifecycle.scenario import Scenario
from explainer.stages.runs import codec
from tests.live_server import daphne, free_port
from tests.room_client import connect_presenter, connect_student, start_room, until_closed, ws_url
from tests.waiting import until_true, wait_for_port, wait_until

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
CLOSE_INTERRUPTED = 4503
pytestmark = [pytest.mark.skipif(not Path(REDIS_SERVER).exists(), reason="needs redis-server"), pytest.mark.slow]


class Redis:
    """A throwaway redis-server on one port, which the test can kill and start again."""

    def __init__(self, port: int):
        self.port, self.proc = port, None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen([REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--daemonize", "no"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, self.proc, timeout=10, what="redis-server")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture(scope="module")
def redis():
    r = Redis(free_port())
    r.start()
    yield r
    r.kill()


@pytest.fixture(scope="module")
def server(tmp_path_factory, redis):
    with daphne(tmp_path_factory.mktemp("daphne-redis"), REDIS_URL=redis.url) as srv:
        yield srv


@pytest.fixture
def redis_up(redis):
    """Each test starts with Redis running (a failed test may have left it down)."""
    if redis.proc is None or redis.proc.poll() is not None:
        redis.start()
    return redis


def log_text(server) -> str:
    return Path(server["log"]).read_text()


def settled_log(server, before: str = "", timeout: float = 15.0) -> str:
    """The server's log once every socket opened since ``before`` has been closed and logged (Daphne
    logs WSCONNECT and WSDISCONNECT): what a closing socket logs is in it, with no fixed wait."""
    def settled() -> bool:
        log = log_text(server)[len(before):]
        return log.count("WSDISCONNECT ") >= log.count("WSCONNECT ")

    try:
        wait_until(settled, timeout)
    except AssertionError:
        pass  # the assertions on the log say what is wrong with it
    return log_text(server)[len(before):]


def assert_interrupted(frames: list[dict], code: int | None) -> dict:
    kinds = [f["type"] for f in frames]
    assert "room.interrupted" in kinds, kinds
    f = next(f for f in frames if f["type"] == "room.interrupted")
    assert f["message"] and isinstance(f["retry_after"], int) and f["retry_after"] > 0, f
    assert code == CLOSE_INTERRUPTED, (code, kinds)
    return f


async def join_when_back(base_url: str, code: str, timeout: float = 20.0):
    """Connect as a student until the server accepts again (it refuses with 4503 while Redis is down,
    until its probe reaches Redis again)."""
    import websockets

    async def joined():
        ws = await websockets.connect(ws_url(base_url, code), origin=base_url, open_timeout=30)
        first = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if first["type"] == "room.hello":
            return ws, first
        assert first["type"] == "room.interrupted", first
        frames, close = await until_closed(ws)
        assert close == CLOSE_INTERRUPTED
        return None

    return await until_true(joined, timeout, "the room did not come back after Redis did", every=0.2)


def test_redis_dies_mid_run(server, redis_up):
    redis = redis_up
    code, secret = start_room(server["url"])
    href = f"/learn/sampling/?s={codec().encode(Scenario().replace(max_tokens=40, temperature=0.9, seed=3))}"

    async def scenario():
        presenter = await connect_presenter(server["url"], code, secret)
        student = await connect_student(server["url"], code)
        await presenter.send(json.dumps({"type": "state", "href": href}))
        await student.read_until(lambda f: f["type"] == "room.state")
        await presenter.send(json.dumps({"type": "run", "pace_ms": 300}))
        await student.read_until(lambda f: f["type"] == "room.token", timeout=120)  # the run is going

        redis.kill()
        (p_frames, p_close), (s_frames, s_close) = await asyncio.gather(until_closed(presenter, 15), until_closed(student.ws, 15))
        assert_interrupted(p_frames, p_close)
        assert_interrupted(s_frames, s_close)
        # told mid-run (40 tokens at 300 ms a token), not once the run had ended
        assert not any(f["type"] == "room.run" and f.get("phase") == "end" for f in p_frames + s_frames), s_frames

        # a newcomer while Redis is down is told the same, at once
        import websockets
        ws = await websockets.connect(ws_url(server["url"], code), origin=server["url"])
        frames, close = await until_closed(ws)
        assert_interrupted(frames, close)

        redis.start()  # same port, empty: the room is in the database
        ws, hello = await join_when_back(server["url"], code)
        assert hello["role"] == "student" and hello["code"] == code
        assert hello["state"]["href"] == href  # the presenter's stage, from the database

        # the layer really works again: the presenter's next run reaches the student
        presenter = await connect_presenter(server["url"], code, secret)
        await presenter.send(json.dumps({"type": "run", "pace_ms": 0}))
        while True:
            f = json.loads(await asyncio.wait_for(ws.recv(), 120))
            if f["type"] == "room.run" and f["phase"] == "end":
                assert f.get("stop_reason") in ("end_turn", "max_tokens"), f
                break
        for w in (ws, presenter):
            await w.close()

    asyncio.run(scenario())
    log = settled_log(server)  # every socket closed and what it logs written
    assert "Traceback" not in log, log
    assert "Room channel layer unreachable" in log, log
    assert "Exception inside application" not in log, log


def test_redis_dies_while_the_room_is_idle(server, redis_up):
    """Nobody sends anything: the server's probe notices, and tells students who only listen."""
    redis = redis_up
    code, secret = start_room(server["url"])

    async def scenario():
        presenter = await connect_presenter(server["url"], code, secret)
        students = [await connect_student(server["url"], code) for _ in range(3)]
        redis.kill()  # nobody sends anything from here on: only the server's probe can notice
        results = await asyncio.gather(until_closed(presenter, 15), *(until_closed(s.ws, 15) for s in students))
        for frames, close in results:
            assert_interrupted(frames, close)
        redis.start()
        ws, hello = await join_when_back(server["url"], code)
        assert hello["role"] == "student"
        await ws.close()

    before = log_text(server)
    asyncio.run(scenario())
    log = settled_log(server, before)
    assert "Traceback" not in log, log
    assert log.count("Room channel layer unreachable") == 1, log  # one warning per outage, not one per socket



def test_redis_down_when_the_server_starts(tmp_path):
    """A server that has never reached Redis refuses room sockets politely, and takes them once Redis is up."""
    redis = Redis(free_port())  # not started yet
    try:
        with daphne(tmp_path, REDIS_URL=redis.url) as srv:
            code, _ = start_room(srv["url"])  # the room is in the database: no Redis needed

            async def scenario():
                import websockets
                for _ in range(2):
                    ws = await websockets.connect(ws_url(srv["url"], code), origin=srv["url"])
                    assert_interrupted(*await until_closed(ws))
                redis.start()
                ws, hello = await join_when_back(srv["url"], code)
                assert hello["role"] == "student"
                await ws.close()

            asyncio.run(scenario())
            log = settled_log(srv)
            assert "Traceback" not in log, log
            assert log.count("Room channel layer unreachable") == 1, log
    finally:
        redis.kill()

# ---- in-process: the same, with the in-memory layer made to fail ---------------------------------

@pytest.mark.django_db(transaction=True)
async def test_a_run_that_cannot_broadcast_stops_and_the_room_comes_back(monkeypatch):
    from channels.layers import get_channel_layer
    from redis.exceptions import ConnectionError as RedisConnectionError

    from explainer.rooms.layer import layer_health
    from tests.test_rooms import join, make_room, presenter, scenario_href, student, until

    layer = get_channel_layer()
    room, secret = await make_room()
    p = await presenter(room, secret)
    s, _ = await student(room)
    await p.send_json_to({"type": "state", "href": scenario_href(max_tokens=40)})
    await p.send_json_to({"type": "run", "pace_ms": 200})
    await until(s, "room.token")
    host = next(c for c in layer_health().sockets if getattr(c, "role", None) == "presenter")
    assert host.run_task and not host.run_task.done()

    async def unreachable(*args, **kwargs):
        raise RedisConnectionError("Connection closed by server.")
    monkeypatch.setattr(layer, "group_send", unreachable)
    for comm in (p, s):
        frames = await until(comm, "room.interrupted", timeout=5)
        assert frames[-1]["retry_after"] > 0 and "reconnecting" in frames[-1]["message"]
        assert await comm.receive_output(timeout=5) == {"type": "websocket.close", "code": CLOSE_INTERRUPTED}
    assert host.cancel.is_set()  # the engine was told to stop
    await asyncio.wait({host.run_task}, timeout=5)
    assert host.run_task.done()  # the run ended without another broadcast
    assert layer_health().down

    # while the layer is down, newcomers are told at once
    comm = await join(room.code)
    assert (await comm.receive_json_from(timeout=5))["type"] == "room.interrupted"
    assert await comm.receive_output(timeout=5) == {"type": "websocket.close", "code": CLOSE_INTERRUPTED}

    monkeypatch.undo()  # the layer answers again: the probe lets sockets in
    await until_true(lambda: not layer_health().down, 10, "the probe did not find the layer again")
    s2, hello = await student(room)
    assert hello["code"] == room.code
    for c in (p, s, comm, s2):
        await c.disconnect()



# ---- in the browser: the banner, and reconnecting by itself --------------------------------------

@pytest.mark.browser
def test_the_pages_say_so_and_reconnect_by_themselves(server, redis_up):
    """Last in this module: Playwright's sync API keeps an event loop while it is open."""
    import os

    from playwright.sync_api import expect, sync_playwright

    from tests.browser.conftest import CHROMIUM_FLAGS

    path = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium")
    if not path:
        pytest.skip("needs Chromium")
    redis = redis_up
    code, secret = start_room(server["url"])
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_FLAGS)
        try:
            host = browser.new_context(viewport={"width": 1280, "height": 720}).new_page()
            host.goto(f"{server['url']}/rooms/{code}/present#k={secret}")
            student = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True).new_page()
            errors: list[str] = []
            for pg in (host, student):
                pg.on("pageerror", lambda e: errors.append(str(e)))
            student.goto(f"{server['url']}/r/{code}/")
            expect(student.locator("#conn")).to_have_text("connected")
            expect(host.locator("#student-count")).to_have_text("1")
            expect(host.locator("#run")).to_be_enabled()
            banner = student.get_by_role("status").filter(has_text="Connection to the room lost")
            expect(banner).to_have_count(0)
            expect(student.locator("#room-banner")).to_be_hidden()

            redis.kill()
            for pg in (student, host):
                expect(pg.locator("#room-banner")).to_be_visible(timeout=10_000)
                expect(pg.locator("#room-banner")).to_have_text("Connection to the room lost — reconnecting…")
                assert pg.locator("#room-banner").get_attribute("role") == "status"
            expect(banner).to_have_count(1)

            redis.start()
            for pg in (student, host):
                expect(pg.locator("#room-banner")).to_be_hidden(timeout=30_000)
                expect(pg.locator("#conn")).to_have_text("connected")
            # the presenter authenticated again by itself, and sees the student who came back
            expect(host.locator("#run")).to_be_enabled(timeout=10_000)
            expect(host.locator("#student-count")).to_have_text("1", timeout=10_000)
            assert not errors, errors
        finally:
            browser.close()
